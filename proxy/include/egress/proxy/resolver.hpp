#pragma once
/// Asynchronous DNS resolution for the proxy: c-ares 1.18 driven by the Asio event loop
/// (no threads, no getaddrinfo), with a TTL-clamped cache, static host answers and
/// coalescing of concurrent lookups of one name.

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/system/error_code.hpp>
#include <boost/system/result.hpp>

#include <chrono>
#include <cstddef>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

namespace egress::proxy {

/// Why a lookup produced no address. Each value has a stable snake_case reason word
/// (`dns_error_reason`) shared by logs, metrics and the proxy's responses.
enum class dns_error {
  /// NXDOMAIN for the name, or NOERROR without A or AAAA records for both families
  /// ("no data"), or a static hosts entry with no addresses (RFC 1034 §4.3.2, RFC 2308).
  not_found = 1,
  /// No usable answer within `resolver_options::timeout`.
  timeout,
  /// SERVFAIL, FORMERR, NOTIMP, a malformed answer, or every server unreachable
  /// (ICMP port unreachable, broken TCP connection).
  server_failure,
  /// The server answered REFUSED (reported as such only when one server is configured;
  /// with several, c-ares moves on to the next server and the end result is
  /// `server_failure`).
  refused,
  /// The name is not a normalised host name: empty, longer than 253 octets, an empty or
  /// over-long (> 63 octets) label, a trailing dot, or a byte other than
  /// `a-z 0-9 - _` (RFC 1035 §2.3.4).
  bad_name,
  /// The lookup was cancelled: the resolver was destroyed, or the awaiting coroutine's
  /// cancellation slot was emitted (e.g. by `||` in experimental awaitable operators).
  cancelled,
  /// c-ares failed locally (out of memory, unexpected status).
  internal,
};

/// The error category of `dns_error` (name "egress.dns"), so it composes with
/// `boost::system::error_code` and Asio's codes. `timeout` is equivalent to
/// `errc::timed_out` and `cancelled` to `errc::operation_canceled`.
const boost::system::error_category& dns_error_category() noexcept;

/// Makes `dns_error` usable as a `boost::system::error_code` (found by ADL).
boost::system::error_code make_error_code(dns_error e) noexcept;

/// The stable reason word of a `dns_error`: `dns_not_found`, `dns_timeout`,
/// `dns_failure`, `dns_refused`, `dns_bad_name`, `dns_cancelled`, `dns_internal`.
/// Out-of-range values give `dns_internal`.
std::string_view dns_error_reason(dns_error e) noexcept;

/// Construction parameters of a `resolver`. Validated by the constructor.
struct resolver_options {
  /// Name servers as IPv4 `a.b.c.d`, `a.b.c.d:port`, bracketed IPv6 `[::1]` or `[::1]:port`,
  /// or bare IPv6 `::1` (port 53). Tried in order; empty means the `nameserver` lines of
  /// the system resolv.conf (only those: its `search`, `domain` and `ndots` never apply).
  std::vector<std::string> servers;
  /// Budget of one whole lookup (A and AAAA together, all retries), > 0. c-ares's per-try
  /// timeout and tries are derived from it, and an Asio timer enforces it.
  std::chrono::milliseconds timeout{2000};
  /// Cache lifetime clamp for positive answers: the records' minimum TTL is raised to
  /// `min_ttl` and lowered to `max_ttl`. Negative answers (`not_found`) are cached for
  /// `min_ttl`. Requires `min_ttl <= max_ttl`; `min_ttl == 0` with a zero TTL answer
  /// means "do not cache".
  std::chrono::seconds min_ttl{5};
  std::chrono::seconds max_ttl{300};
  /// Static answers by normalised (lower-case, no trailing dot) name. They never expire,
  /// never go to DNS and take precedence over the cache. An empty address list answers
  /// `dns_error::not_found`. Addresses are reordered IPv4 first and de-duplicated.
  std::map<std::string, std::vector<boost::asio::ip::address>> hosts;
  /// Upper bound on cached names (positive and negative), > 0. When full, expired
  /// entries are dropped first, then the entry closest to expiry.
  std::size_t max_cache_entries{10000};
};

/// A successful lookup.
struct resolve_answer {
  /// IPv4 addresses in answer order, then IPv6 in answer order; no duplicates; never
  /// empty. Not filtered: callers must still apply their address policy (an answer may
  /// hold loopback, private or IPv4-mapped addresses).
  std::vector<boost::asio::ip::address> addresses;
  /// Fresh answer: the minimum TTL of the records used (CNAME chain included, as c-ares
  /// reports it), clamped to [min_ttl, max_ttl]. Cached answer: the remaining lifetime,
  /// rounded up to whole seconds. Static hosts: `max_ttl`.
  std::chrono::seconds ttl{0};
  /// True when served from the cache without a query.
  bool from_cache = false;
  /// True when served from `resolver_options::hosts` (then `from_cache` is false).
  bool from_hosts = false;
};

namespace detail {
struct resolver_core;
}

/// An asynchronous stub resolver for A and AAAA records over c-ares 1.18, driven by
/// Asio: each socket c-ares opens is watched with a `posix::stream_descriptor` (never
/// closed by us: c-ares owns it) and c-ares's retransmission clock with a `steady_timer`.
///
/// Concurrency: single-threaded. Construct, call, await and destroy it only on the
/// thread running its executor's io_context (one io_context thread, as the proxy runs).
/// Any number of `resolve` calls may be in flight at once.
///
/// Lifetime: destroying the resolver with lookups in flight completes them with
/// `dns_error::cancelled` (delivered when the io_context next runs) and releases
/// everything; destroying the io_context instead destroys the suspended coroutines
/// without leaks. The resolver must not outlive its io_context (Asio's rule for I/O
/// objects).
///
/// Source: RFC 1034 §4.3 (stub resolver), RFC 1035 §2.3.4 (size limits), RFC 2308
/// (negative caching); c-ares 1.18 man pages ares_init_options(3), ares_query(3),
/// ares_process_fd(3), ares_timeout(3), ares_parse_a_reply(3), ares_set_servers_ports_csv(3).
class resolver {
public:
  /// Creates the c-ares channel on `ex` (an executor of a single-threaded io_context).
  /// Errors: throws `std::runtime_error` naming the problem if a server entry is not
  /// valid syntax, `timeout <= 0`, `min_ttl > max_ttl`, a negative TTL,
  /// `max_cache_entries == 0`, or c-ares fails to initialise (startup only).
  resolver(boost::asio::any_io_executor ex, resolver_options opts);

  /// Cancels lookups in flight (their awaiters receive `dns_error::cancelled`), destroys
  /// the c-ares channel and releases its sockets.
  ~resolver();

  resolver(const resolver&) = delete;
  resolver& operator=(const resolver&) = delete;
  resolver(resolver&&) = delete;
  resolver& operator=(resolver&&) = delete;

  /// Resolves the normalised host name `name` (lower case, no trailing dot) to its IPv4
  /// and IPv6 addresses.
  ///
  /// Order: static hosts, then the cache, then DNS. DNS queries "name." for A and AAAA
  /// concurrently as an absolute name: no search list, no ndots, no /etc/hosts, no
  /// special-casing of IP literals (callers handle literals before resolving).
  /// Concurrent calls for one name share one pair of queries.
  ///
  /// Units: the whole call is bounded by `resolver_options::timeout` (a call that joins
  /// a lookup in flight gets that lookup's remaining budget).
  ///
  /// Errors (`dns_error`, in the result): `bad_name` before any query; `not_found`
  /// (cached for `min_ttl`); `timeout`; `server_failure`; `refused`; `cancelled`;
  /// `internal`. Success if either family has addresses; when the budget runs out after
  /// one family answered, the addresses so far are returned (and cached).
  ///
  /// Concurrency: await it from a coroutine running on the resolver's executor; the
  /// returned awaitable holds a share of the resolver's state, so it stays valid if the
  /// resolver object is destroyed first (it then yields `cancelled`). Supports per-op
  /// cancellation through the awaiting coroutine's cancellation slot (terminal, which
  /// Asio coroutines pass by default; `||` of the experimental awaitable operators and
  /// `bind_cancellation_slot` on co_spawn emit it): the call returns `cancelled` at once
  /// while the shared lookup continues for other callers and for the cache.
  boost::asio::awaitable<boost::system::result<resolve_answer>> resolve(std::string name);

  /// Replaces the static host answers (config reload); same rules as
  /// `resolver_options::hosts`. Lookups already in flight are unaffected; cached answers
  /// for names now in `hosts` are shadowed by them.
  /// Concurrency: call on the resolver's executor.
  void set_hosts(std::map<std::string, std::vector<boost::asio::ip::address>> hosts);

  /// Number of cached names, positive and negative (expired entries are dropped lazily,
  /// on lookup and when the cache is full).
  std::size_t cache_size() const noexcept;

  /// Number of distinct names with DNS queries in flight (coalesced calls count once).
  std::size_t in_flight() const noexcept;

private:
  std::shared_ptr<detail::resolver_core> core_;
};

}  // namespace egress::proxy

template <>
struct boost::system::is_error_code_enum<egress::proxy::dns_error> : std::true_type {};
