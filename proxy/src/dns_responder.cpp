// The allowlisting DNS responder (see dns_responder.hpp): its sockets, the forwarding to
// the cluster DNS, its limits and its log lines. What a question gets is decided by
// acl.cpp (check_dns_question); every wire byte is read and written by dns_message.cpp.
// It never touches the proxy's data path (readiness loop, connections).
#include "dns_responder.hpp"

#include "connection.hpp"  // nothrow, log_exception

#include "egress/proxy/acl.hpp"
#include "egress/proxy/dns_message.hpp"
#include "egress/proxy/log.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/ip/v6_only.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/write.hpp>

#include <stdlib.h>  // arc4random_uniform (glibc >= 2.36)

#include <algorithm>
#include <array>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <tuple>
#include <unordered_map>
#include <utility>
#include <vector>

namespace egress::proxy {

using udp = asio::ip::udp;
using tcp = asio::ip::tcp;

namespace {

std::string text_of(const udp::endpoint& ep) { return endpoint_text(tcp::endpoint(ep.address(), ep.port())); }

// A proxy.dns.cluster_dns entry ("ADDR", "ADDR:PORT", "[V6]", "[V6]:PORT" or a bare IPv6
// address; the config loader validated it) as address and port (53 when absent).
std::optional<std::pair<asio::ip::address, std::uint16_t>> parse_server(std::string_view s) {
  std::string_view addr = s, port_text;
  if (s.starts_with('[')) {
    const auto close = s.find(']');
    if (close == std::string_view::npos) return std::nullopt;
    addr = s.substr(1, close - 1);
    if (close + 1 < s.size()) {
      if (s[close + 1] != ':') return std::nullopt;
      port_text = s.substr(close + 2);
    }
  } else if (std::count(s.begin(), s.end(), ':') == 1) {
    addr = s.substr(0, s.find(':'));
    port_text = s.substr(s.find(':') + 1);
  }
  unsigned port = 53;
  if (!port_text.empty()) {
    if (port_text.size() > 5) return std::nullopt;
    port = 0;
    for (char c : port_text) {
      if (c < '0' || c > '9') return std::nullopt;
      port = port * 10 + static_cast<unsigned>(c - '0');
    }
    if (port == 0 || port > 65535) return std::nullopt;
  }
  error_code ec;
  auto a = asio::ip::make_address(std::string(addr), ec);
  if (ec) return std::nullopt;
  return std::pair{a, static_cast<std::uint16_t>(port)};
}

// The reason word of a malformed or unsupported query's answer.
std::string_view reply_reason(dns::rcode rc) noexcept {
  switch (rc) {
    case dns::rcode::formerr: return "formerr";
    case dns::rcode::notimp: return "notimp";
    case dns::rcode::badvers: return "badvers";
    default: return "servfail";
  }
}

// A fresh query ID from the kernel's CSPRNG (glibc's arc4random reads getrandom(2)), so an
// off-path attacker cannot guess it (RFC 5452 §4.3); the source port is random too.
std::uint16_t random_id() { return static_cast<std::uint16_t>(arc4random_uniform(65536)); }

// The largest UDP answer we ask the cluster DNS for, whatever the client allows.
constexpr std::size_t max_forward_udp_payload = 4096;

// Closes `s` when `t` fires after `d` (re-arming replaces the previous deadline). The
// handler holds only a weak reference: a socket already gone is left alone.
template <class Socket>
void arm(asio::steady_timer& t, const std::shared_ptr<Socket>& s, steady::duration d) {
  t.expires_after(d);
  t.async_wait([weak = std::weak_ptr<Socket>(s)](const error_code& ec) {
    if (ec) return;
    if (auto p = weak.lock()) {
      error_code ignored;
      p->close(ignored);
    }
  });
}

// Each of `servers` servers' share of the forwarding budget (proxy.resolver.timeout_ms).
std::chrono::milliseconds budget_share(std::chrono::milliseconds budget, std::size_t servers) {
  return budget / static_cast<std::chrono::milliseconds::rep>(std::max<std::size_t>(1, servers));
}

bool expired(const asio::steady_timer& t) { return steady::now() >= t.expiry(); }

std::runtime_error bind_error(const asio::ip::address& a, std::uint16_t port, const char* transport,
                              const error_code& ec) {
  std::string msg = "cannot listen on " + endpoint_text(tcp::endpoint(a, port)) + " (dns responder, " + transport +
                    "): " + ec.message();
  if (ec == asio::error::access_denied)
    msg += "; a port below 1024 needs CAP_NET_BIND_SERVICE or the namespaced sysctl "
           "net.ipv4.ip_unprivileged_port_start=" + std::to_string(port) + " (or lower) in the pod's securityContext";
  msg += "; choose another proxy.dns.listen_address/port";
  return std::runtime_error(msg);
}

// What became of a message once parsed and judged.
enum class next_step { send, drop, forward };

}  // namespace

struct dns_responder::state : std::enable_shared_from_this<state> {
  /// One TCP client connection; `idle` while it waits for the next query.
  struct tcp_conn {
    std::shared_ptr<tcp::socket> sock;
    bool idle = true;
  };
  /// The cluster DNS connection of one TCP client connection.
  struct upstream_tcp {
    std::shared_ptr<tcp::socket> sock;
    std::size_t server = 0;  ///< index into proxy.dns.cluster_dns
  };

  state(proxy_context& c, dns_responder_limits l)
      : ctx(c), limits(l), udp_sock(c.io()), acceptor(c.io()), rx(std::size_t{64} * 1024) {}

  proxy_context& ctx;
  dns_responder_limits limits;
  udp::socket udp_sock;
  tcp::acceptor acceptor;
  udp::endpoint udp_ep;
  tcp::endpoint tcp_ep;
  std::vector<std::uint8_t> rx;  ///< every UDP datagram lands here (64 KiB: the largest)
  std::vector<std::uint8_t> tx;  ///< every direct UDP answer is built here
  std::size_t pending_forwards = 0;
  bool udp_reading = false;
  bool stopped = false;
  std::uint64_t next_conn = 1;
  std::unordered_map<std::uint64_t, std::weak_ptr<tcp_conn>> conns;
  std::string log_batch;
  bool flush_posted = false;

  void bind(const asio::ip::address& address, std::uint16_t port) {
    for (int attempt = 0;; ++attempt) {
      error_code ec;
      const udp::endpoint uep(address, port);
      udp_sock.open(uep.protocol(), ec);
      if (!ec && address.is_v6()) udp_sock.set_option(asio::ip::v6_only(false), ec);
      if (!ec) udp_sock.bind(uep, ec);
      if (ec) throw bind_error(address, port, "udp", ec);
      const std::uint16_t bound = udp_sock.local_endpoint().port();
      const tcp::endpoint tep(address, bound);
      acceptor.open(tep.protocol(), ec);
      if (!ec) acceptor.set_option(tcp::acceptor::reuse_address(true), ec);
      if (!ec && address.is_v6()) acceptor.set_option(asio::ip::v6_only(false), ec);
      if (!ec) acceptor.bind(tep, ec);
      if (!ec) acceptor.listen(asio::socket_base::max_listen_connections, ec);
      if (!ec) break;
      error_code ignored;
      udp_sock.close(ignored);
      acceptor.close(ignored);
      // Port 0: UDP's free port may be taken for TCP; another pick will do.
      if (port == 0 && ec == asio::error::address_in_use && attempt < 20) continue;
      throw bind_error(address, bound, "tcp", ec);
    }
    udp_sock.non_blocking(true);
    udp_ep = udp_sock.local_endpoint();
    tcp_ep = acceptor.local_endpoint();
  }

  void stop() {
    if (stopped) return;
    stopped = true;
    error_code ec;
    acceptor.close(ec);
    udp_sock.cancel(ec);
    for (auto& [id, weak] : conns)
      if (auto c = weak.lock(); c && c->idle) c->sock->close(ec);
    close_udp_when_done();
    flush();
  }

  void close_udp_when_done() {
    if (stopped && pending_forwards == 0 && !udp_reading) {
      error_code ec;
      udp_sock.close(ec);
    }
  }

  // Counts and logs one message. Lines of one event-loop turn leave in one write(2).
  void note(dns_record& rec, steady::time_point start) {
    rec.total_ms = ms_since(start);
    ctx.stats().dns_query(rec.allowed, rec.reason);
    if (!log_batch.empty()) log_batch += '\n';
    log_batch += format_dns(rec, std::chrono::system_clock::now());
    if (log_batch.size() >= 64 * 1024) return flush();
    if (!flush_posted) {
      flush_posted = true;
      asio::post(ctx.io(), [self = shared_from_this()] { self->flush(); });
    }
  }

  void flush() {
    flush_posted = false;
    if (log_batch.empty()) return;
    write_line(log_batch);
    log_batch.clear();
  }

  // Parses nothing itself: turns a parse result and the policy's decision into the answer
  // bytes in `out` (or says to drop or forward), filling `rec`.
  next_step answer(const dns::parse_result& pr, const snapshot& snap, std::size_t limit, std::vector<std::uint8_t>& out,
                   dns_record& rec) {
    if (pr.status == dns::parse_status::drop) {
      rec.reason = "dropped";
      rec.detail = pr.reason;
      return next_step::drop;
    }
    const dns::query& m = pr.msg;
    if (m.q) {
      rec.qname = dns::name_presentation(m.q->name);
      rec.qtype = dns::type_name(m.q->type);
    }
    if (pr.status == dns::parse_status::reply) {
      rec.reason = reply_reason(pr.error);
      rec.detail = pr.reason;
      rec.rcode = dns::rcode_name(static_cast<std::uint16_t>(pr.error));
      rec.truncated = dns::build_response(out, m, pr.error, {}, {}, limit);
      return next_step::send;
    }
    const auto d = check_dns_question(snap.cfg, *m.q);
    rec.allowed = d.allowed;
    rec.reason = d.reason;
    const auto& cfg = snap.cfg.proxy.dns;
    dns::rcode rc = dns::rcode::noerror;
    std::array<asio::ip::address, 1> address;
    std::span<const asio::ip::address> answers;
    switch (d.action) {
      case dns_action::forward: return next_step::forward;
      case dns_action::answer:
        address[0] = m.q->type == dns::type_a ? *cfg.answer_ipv4 : *cfg.answer_ipv6;
        answers = address;
        break;
      case dns_action::nodata: break;
      case dns_action::nxdomain: rc = dns::rcode::nxdomain; break;
      case dns_action::refused: rc = dns::rcode::refused; break;
    }
    rec.rcode = dns::rcode_name(static_cast<std::uint16_t>(rc));
    rec.truncated = dns::build_response(out, m, rc, answers, cfg.ttl, limit);
    return next_step::send;
  }

  // ---- UDP ----

  asio::awaitable<void> udp_loop(std::shared_ptr<proxy_context> keep) {
    auto self = shared_from_this();
    udp_reading = true;
    while (!stopped && udp_sock.is_open()) {
      auto [ec] = co_await udp_sock.async_wait(udp::socket::wait_read, nothrow);
      if (stopped || !udp_sock.is_open() || ec == asio::error::operation_aborted) break;
      std::size_t handled = 0;
      for (; handled < limits.max_udp_per_turn; ++handled) {
        udp::endpoint peer;
        error_code rec_ec;
        const std::size_t n = udp_sock.receive_from(asio::buffer(rx), peer, 0, rec_ec);
        if (rec_ec == asio::error::would_block || rec_ec == asio::error::try_again) break;
        if (rec_ec) continue;  // an ICMP error of an earlier send: reported once, nothing to read
        on_datagram(keep, std::span<const std::uint8_t>(rx.data(), n), peer);
      }
      if (handled == limits.max_udp_per_turn)  // more may be queued: let the other handlers run first
        co_await asio::post(co_await asio::this_coro::executor, asio::use_awaitable);
    }
    udp_reading = false;
    close_udp_when_done();
  }

  void send_udp(const std::vector<std::uint8_t>& bytes, const udp::endpoint& peer) {
    if (!udp_sock.is_open()) return;
    error_code ec;  // non-blocking: a full send buffer drops the answer, as UDP may
    udp_sock.send_to(asio::buffer(bytes), peer, 0, ec);
  }

  void on_datagram(const std::shared_ptr<proxy_context>& keep, std::span<const std::uint8_t> msg,
                   const udp::endpoint& peer) {
    const auto start = steady::now();
    auto snap = ctx.current();
    const auto pr = dns::parse_query(msg);
    dns_record rec;
    rec.client = text_of(peer);
    rec.transport = "udp";
    const std::size_t limit = dns::udp_limit(pr.msg);
    switch (answer(pr, *snap, limit, tx, rec)) {
      case next_step::drop: break;
      case next_step::send: send_udp(tx, peer); break;
      case next_step::forward:
        if (pending_forwards >= limits.max_pending_forwards) {
          rec.allowed = false;
          rec.reason = "forward_limit";
          rec.rcode = "SERVFAIL";
          dns::build_response(tx, pr.msg, dns::rcode::servfail, {}, {}, limit);
          send_udp(tx, peer);
          break;
        }
        ++pending_forwards;
        asio::co_spawn(ctx.io(), forward_udp(keep, pr.msg, peer, std::move(snap), std::move(rec), start),
                       log_exception{"dns_forward_udp"});
        return;
    }
    note(rec, start);
  }

  // One UDP query to the cluster DNS servers in turn, each with its share of the
  // resolver budget, from a fresh socket (random source port) with a random ID; answers
  // that do not match (ID, question) are ignored. The client gets the answer with its ID
  // restored, TC=1 in its place when larger than the client allows, or SERVFAIL.
  asio::awaitable<void> forward_udp(std::shared_ptr<proxy_context> keep, dns::query q, udp::endpoint client,
                                    std::shared_ptr<const snapshot> snap, dns_record rec, steady::time_point start) {
    auto self = shared_from_this();
    struct done_guard {
      state& s;
      ~done_guard() {
        --s.pending_forwards;
        s.close_udp_when_done();
      }
    } guard{*this};
    const auto& servers = snap->cfg.proxy.dns.cluster_dns;
    const std::size_t limit = dns::udp_limit(q);
    const std::size_t payload = q.opt ? std::min(limit, max_forward_udp_payload) : dns::classic_udp_payload;
    const std::uint16_t id = random_id();
    std::vector<std::uint8_t> out;
    dns::build_forward_query(out, q, id, static_cast<std::uint16_t>(payload));
    const auto share = budget_share(snap->cfg.proxy.resolver.timeout, servers.size());
    std::vector<std::uint8_t> buf(payload + 1);  // one byte more: an oversized answer shows
    std::size_t got = 0;
    bool timed_out = false;
    for (const auto& text : servers) {
      const auto server = parse_server(text);
      if (!server) continue;
      const udp::endpoint ep(server->first, server->second);
      rec.upstream = text_of(ep);
      auto sock = std::make_shared<udp::socket>(ctx.io());
      error_code ec;
      sock->open(ep.protocol(), ec);
      if (!ec) sock->connect(ep, ec);  // connected: ICMP unreachable ends the wait, others' datagrams never arrive
      if (!ec) sock->send(asio::buffer(out), 0, ec);
      if (ec) continue;
      asio::steady_timer t(ctx.io());
      arm(t, sock, share);
      for (;;) {
        auto [rec_ec, n] = co_await sock->async_receive(asio::buffer(buf), nothrow);
        if (rec_ec) {
          timed_out = expired(t);
          break;
        }
        if (!dns::is_response_to(std::span<const std::uint8_t>(buf.data(), n), id, *q.q)) continue;
        got = n;
        break;
      }
      t.cancel();
      sock->close(ec);
      if (got > 0) break;
    }
    if (got > limit) {
      const auto rc = static_cast<dns::rcode>(buf[3] & 0xf);
      dns::build_truncated(out, q, rc);
      rec.rcode = dns::rcode_name(static_cast<std::uint16_t>(buf[3] & 0xf));
      rec.truncated = true;
    } else if (got > 0) {
      out.assign(buf.begin(), buf.begin() + static_cast<std::ptrdiff_t>(got));
      dns::set_id(out, q.id);
      rec.rcode = dns::rcode_name(static_cast<std::uint16_t>(out[3] & 0xf));
    } else {
      dns::build_response(out, q, dns::rcode::servfail, {}, {}, limit);
      rec.allowed = false;
      rec.reason = timed_out ? "forward_timeout" : "forward_failed";
      rec.rcode = "SERVFAIL";
    }
    send_udp(out, client);
    note(rec, start);
    (void)keep;
  }

  // ---- TCP ----

  asio::awaitable<void> accept_loop(std::shared_ptr<proxy_context> keep) {
    auto self = shared_from_this();
    for (;;) {
      auto [ec, sock] = co_await acceptor.async_accept(nothrow);
      if (stopped || !acceptor.is_open() || ec == asio::error::operation_aborted) co_return;
      if (ec) {  // EMFILE and friends: back off instead of spinning
        asio::steady_timer t(ctx.io(), std::chrono::milliseconds(100));
        co_await t.async_wait(nothrow);
        continue;
      }
      error_code pe;
      const auto peer = sock.remote_endpoint(pe);
      if (conns.size() >= limits.max_tcp_connections) {
        dns_record rec;
        rec.client = pe ? std::string() : endpoint_text(peer);
        rec.transport = "tcp";
        rec.reason = "too_many_connections";
        sock.close(pe);
        note(rec, steady::now());
        continue;
      }
      auto c = std::make_shared<tcp_conn>();
      c->sock = std::make_shared<tcp::socket>(std::move(sock));
      const std::uint64_t id = next_conn++;
      conns.emplace(id, c);
      asio::co_spawn(ctx.io(), tcp_session(keep, c, id, pe ? std::string() : endpoint_text(peer)),
                     log_exception{"dns_tcp_session"});
    }
  }

  // One TCP client connection (RFC 7766): two-byte length, message; queries answered one
  // after another, in order.
  asio::awaitable<void> tcp_session(std::shared_ptr<proxy_context> keep, std::shared_ptr<tcp_conn> c,
                                    std::uint64_t id, std::string client) {
    auto self = shared_from_this();
    struct done_guard {
      state& s;
      std::uint64_t id;
      ~done_guard() { s.conns.erase(id); }
    } guard{*this, id};
    tcp::socket& sock = *c->sock;
    asio::steady_timer t(ctx.io());
    upstream_tcp up;
    std::vector<std::uint8_t> msg, out;
    for (std::uint32_t served = 0; served < limits.max_queries_per_connection && !stopped; ++served) {
      c->idle = true;
      arm(t, c->sock, limits.tcp_idle_timeout);
      std::array<std::uint8_t, 2> len{};
      if (auto [ec, n] = co_await asio::async_read(sock, asio::buffer(len), nothrow); ec) break;
      c->idle = false;
      const auto start = steady::now();
      const std::size_t size = (std::size_t{len[0]} << 8) | len[1];
      dns_record rec;
      rec.client = client;
      rec.transport = "tcp";
      if (size > limits.max_tcp_query_bytes) {
        rec.reason = "query_too_large";
        note(rec, start);
        break;
      }
      msg.resize(size);
      if (auto [ec, n] = co_await asio::async_read(sock, asio::buffer(msg), nothrow); ec) break;
      auto snap = ctx.current();
      const auto pr = dns::parse_query(msg);
      const auto step = answer(pr, *snap, 65535, out, rec);
      if (step == next_step::drop) {
        note(rec, start);
        continue;
      }
      if (step == next_step::forward) co_await forward_tcp(up, pr.msg, *snap, out, rec);
      note(rec, start);
      arm(t, c->sock, limits.tcp_idle_timeout);
      const std::array<std::uint8_t, 2> frame{static_cast<std::uint8_t>(out.size() >> 8),
                                              static_cast<std::uint8_t>(out.size() & 0xff)};
      const std::array<asio::const_buffer, 2> bufs{asio::buffer(frame), asio::buffer(out)};
      if (auto [ec, n] = co_await asio::async_write(sock, bufs, nothrow); ec) break;
    }
    t.cancel();
    error_code ignored;
    sock.close(ignored);
    if (up.sock) up.sock->close(ignored);
    (void)keep;
  }

  // One TCP query to the cluster DNS: on this client connection's upstream connection
  // when there is one (a stale one is replaced once), else a new one to each server in
  // turn, each attempt within its share of the resolver budget. Fills `out` with the
  // answer (client's ID restored) or SERVFAIL.
  asio::awaitable<void> forward_tcp(upstream_tcp& up, const dns::query& q, const snapshot& snap,
                                    std::vector<std::uint8_t>& out, dns_record& rec) {
    const auto& servers = snap.cfg.proxy.dns.cluster_dns;
    const auto share = budget_share(snap.cfg.proxy.resolver.timeout, servers.size());
    const std::uint16_t id = random_id();
    std::vector<std::uint8_t> query;
    dns::build_forward_query(query, q, id, q.opt ? q.opt->udp_payload : dns::advertised_udp_payload);
    const std::array<std::uint8_t, 2> frame{static_cast<std::uint8_t>(query.size() >> 8),
                                            static_cast<std::uint8_t>(query.size() & 0xff)};
    std::vector<std::uint8_t> resp;
    bool done = false, timed_out = false;
    error_code ignored;
    for (std::size_t attempt = 0; attempt < servers.size() && !done; ++attempt) {
      const std::size_t index = (up.server + attempt) % servers.size();
      const auto server = parse_server(servers[index]);
      if (!server) continue;
      const tcp::endpoint ep(server->first, server->second);
      rec.upstream = endpoint_text(ep);
      const bool reuse = up.sock && up.sock->is_open() && up.server == index;
      asio::steady_timer t(ctx.io());
      for (int tries = 0; tries < (reuse ? 2 : 1) && !done; ++tries) {
        if (!up.sock || !up.sock->is_open() || up.server != index) {
          if (up.sock) up.sock->close(ignored);
          up.sock = std::make_shared<tcp::socket>(ctx.io());
          up.server = index;
          arm(t, up.sock, share);
          if (auto [ec] = co_await up.sock->async_connect(ep, nothrow); ec) {
            timed_out = expired(t);
            up.sock->close(ignored);
            break;
          }
        } else {
          arm(t, up.sock, share);
        }
        const std::array<asio::const_buffer, 2> bufs{asio::buffer(frame), asio::buffer(query)};
        std::array<std::uint8_t, 2> len{};
        error_code ec;
        std::tie(ec, std::ignore) = co_await asio::async_write(*up.sock, bufs, nothrow);
        if (!ec) std::tie(ec, std::ignore) = co_await asio::async_read(*up.sock, asio::buffer(len), nothrow);
        if (!ec) {
          resp.resize((std::size_t{len[0]} << 8) | len[1]);
          std::tie(ec, std::ignore) = co_await asio::async_read(*up.sock, asio::buffer(resp), nothrow);
        }
        if (ec) {
          up.sock->close(ignored);
          timed_out = expired(t);
          if (timed_out) break;
          continue;  // a reused connection the server had closed: once more on a new one
        }
        if (!dns::is_response_to(resp, id, *q.q)) {  // out of step: never reuse it
          up.sock->close(ignored);
          break;
        }
        done = true;
      }
      t.cancel();
    }
    if (done) {
      out = std::move(resp);
      dns::set_id(out, q.id);
      rec.rcode = dns::rcode_name(static_cast<std::uint16_t>(out[3] & 0xf));
    } else {
      dns::build_response(out, q, dns::rcode::servfail);
      rec.allowed = false;
      rec.reason = timed_out ? "forward_timeout" : "forward_failed";
      rec.rcode = "SERVFAIL";
    }
  }
};

dns_responder::dns_responder(proxy_context& ctx, dns_responder_limits limits)
    : state_(std::make_shared<state>(ctx, limits)) {}

dns_responder::~dns_responder() {
  state_->stop();
  error_code ec;
  state_->udp_sock.close(ec);  // forwards still in flight answer nobody
}

void dns_responder::start(const asio::ip::address& address, std::uint16_t port) {
  state_->bind(address, port);
  auto keep = state_->ctx.share();
  asio::co_spawn(state_->ctx.io(), state_->udp_loop(keep), log_exception{"dns_udp_loop"});
  asio::co_spawn(state_->ctx.io(), state_->accept_loop(keep), log_exception{"dns_accept_loop"});
  std::string line = format_event_prefix("info", "dns_listening");
  line += ",\"udp\":";
  append_json_string(line, text_of(state_->udp_ep));
  line += ",\"tcp\":";
  append_json_string(line, endpoint_text(state_->tcp_ep));
  line += "}";
  write_line(line);
}

void dns_responder::stop() { state_->stop(); }

udp::endpoint dns_responder::udp_endpoint() const { return state_->udp_ep; }
tcp::endpoint dns_responder::tcp_endpoint() const { return state_->tcp_ep; }

}  // namespace egress::proxy
