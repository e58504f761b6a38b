#pragma once
/// The allowlisting DNS responder (proxy.capture dns or both, issue #11): a room of the
/// server with its own UDP socket and TCP listener on proxy.dns.listen_address:port. Plain
/// Asio sockets: this is not the byte-relay data path.
///
/// Per query, under the config snapshot current when it arrived (`proxy_context::current`),
/// `check_dns_question` decides and this room carries it out:
///   - allowlisted name, A/AAAA: the proxy's own address (proxy.dns.answer_ipv4 /
///     answer_ipv6), TTL proxy.dns.ttl_s; NODATA when that family has no address; HTTPS
///     and SVCB: NODATA (no ECH configs); any other type: NODATA;
///   - a name at or under proxy.dns.cluster_domains: forwarded to proxy.dns.cluster_dns
///     over the client's transport (UDP: a fresh socket per query, random ID and source
///     port, the client's ID restored; TCP: one upstream connection per client
///     connection, RFC 7766 framing) within proxy.resolver.timeout_ms (split evenly
///     between the servers, tried in order) and relayed as it came; SERVFAIL when none
///     answers;
///   - every other name: NXDOMAIN, and no packet leaves the responder. NXDOMAIN rather than
///     REFUSED: it is the truthful answer in this view of the namespace (the name does
///     not exist for this client) and it is final, while after REFUSED glibc moves on to
///     the next server and reports a temporary failure (EAI_AGAIN, which clients retry)
///     and musl ignores the answer and waits out its timeout: clients would retry or
///     hang instead of failing fast with "not found".
/// Answers carry AA=1 and RA=0: the responder never recurses, it answers from
/// configuration (see dns::build_response for why AA must then be set), and no SOA in
/// negative answers (nothing to be authoritative for; caches then do not keep them, so
/// a reload that adds a name is seen at once). Every message received gives one `dns`
/// log line (log.hpp) and one count in egress_proxy_dns_queries_total{verdict,reason}.
///
/// Bounds: one 64 KiB receive buffer for all UDP datagrams, at most
/// `max_udp_per_turn` handled per event-loop turn; at most `max_pending_forwards` UDP
/// forwards in flight (more get SERVFAIL, reason "forward_limit"); at most
/// `max_tcp_connections` TCP connections (more are closed at once, reason
/// "too_many_connections"), each holding one query (<= `max_tcp_query_bytes`) and one
/// answer (<= 65535 bytes) at a time, closed after `tcp_idle_timeout` without a complete
/// query or `max_queries_per_connection` queries.
///
/// This room decides nothing itself (acl.hpp does) and parses no wire bytes itself
/// (dns_message.hpp does). Concurrency: the io_context's one thread.

#include "context.hpp"

#include <boost/asio/ip/address.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ip/udp.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>

namespace egress::proxy {

/// Resource bounds of the responder (not in the config file: they bound memory, not policy).
struct dns_responder_limits {
  std::size_t max_tcp_connections = 128;
  /// A TCP connection is closed when no complete query arrived (or its answer could not
  /// be written) for this long (RFC 7766 §6.2.3: servers pick a timeout of seconds).
  std::chrono::milliseconds tcp_idle_timeout{10'000};
  std::uint32_t max_queries_per_connection = 1000;
  /// A TCP query message longer than this closes the connection (reason "query_too_large").
  std::size_t max_tcp_query_bytes = 4096;
  std::size_t max_pending_forwards = 256;
  std::size_t max_udp_per_turn = 64;
};

/// The responder. Construct, `start`, and `stop` when the server drains; destroying it
/// stops it too. Its coroutines share its state (and hold `ctx.share()`), so handlers that
/// run after the destructor find closed sockets, never freed memory. The
/// `proxy_context` must outlive the io_context's handlers, as for every room.
class dns_responder {
public:
  explicit dns_responder(proxy_context& ctx, dns_responder_limits limits = {});
  ~dns_responder();
  dns_responder(const dns_responder&) = delete;
  dns_responder& operator=(const dns_responder&) = delete;

  /// Binds the UDP socket and the TCP listener on `address`:`port` (port 0: one free port
  /// for both), logs a "dns_listening" event and starts serving. Throws
  /// std::runtime_error naming the address, port, transport and "dns responder" when a
  /// bind fails (for EACCES also how to allow ports below 1024 without privileges).
  void start(const boost::asio::ip::address& address, std::uint16_t port);

  /// Stops taking queries: the UDP socket stops reading (and closes once forwards in
  /// flight have answered), the TCP listener closes, idle TCP connections close and busy
  /// ones close after their current answer. Idempotent.
  void stop();

  /// The bound endpoints (valid after `start`).
  boost::asio::ip::udp::endpoint udp_endpoint() const;
  boost::asio::ip::tcp::endpoint tcp_endpoint() const;

  struct state;

private:
  std::shared_ptr<state> state_;
};

}  // namespace egress::proxy
