#include "egress/proxy/server.hpp"

#include "egress/proxy/acl.hpp"
#include "egress/proxy/client_hello.hpp"
#include "egress/proxy/http_framing.hpp"
#include "egress/proxy/http_syntax.hpp"
#include "egress/proxy/log.hpp"
#include "egress/proxy/request_head.hpp"
#include "egress/proxy/resolver.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/ip/v6_only.hpp>
#include <boost/asio/write.hpp>

#include <openssl/evp.h>

#include <fcntl.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <fstream>
#include <unordered_map>

namespace egress::proxy {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using asio::awaitable;
using steady = std::chrono::steady_clock;
using boost::system::error_code;

namespace {

constexpr auto nothrow = asio::as_tuple(asio::use_awaitable);

double ms_since(steady::time_point t) {
  return std::chrono::duration<double, std::milli>(steady::now() - t).count();
}

std::string endpoint_text(const tcp::endpoint& ep) {
  if (ep.address().is_v6()) return "[" + ep.address().to_string() + "]:" + std::to_string(ep.port());
  return ep.address().to_string() + ":" + std::to_string(ep.port());
}

/// A read buffer shared by every relay on this thread: relays read only when a socket is
/// readable and write straight through, so an idle tunnel holds no buffer of its own.
std::array<char, 64 * 1024>& relay_buffer() {
  thread_local std::array<char, 64 * 1024> buffer;
  return buffer;
}

/// SHA-256 of the config file as hex, so logs say exactly which config is live; "" if
/// the file cannot be read.
std::string file_sha256(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return {};
  std::string data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (EVP_Digest(data.data(), data.size(), md, &len, EVP_sha256(), nullptr) != 1) return {};
  static constexpr char hex[] = "0123456789abcdef";
  std::string out;
  for (unsigned int i = 0; i < len; ++i) {
    out += hex[md[i] >> 4];
    out += hex[md[i] & 0xf];
  }
  return out;
}

/// Pipes for splice(2), per thread. A tunnel direction takes one only while bytes are in
/// flight between its sockets and gives it back as soon as it is empty, so idle tunnels
/// hold none (a tunnel already costs two descriptors against the process's limit).
class pipe_pool {
public:
  static constexpr int capacity_bytes = 256 * 1024;
  pipe_pool() = default;
  pipe_pool(const pipe_pool&) = delete;
  pipe_pool& operator=(const pipe_pool&) = delete;
  ~pipe_pool() {
    for (auto p : free_) close_pipe(p);
  }
  /// A pipe, or {-1, -1} when none can be made (EMFILE): callers fall back to copying.
  std::array<int, 2> take() {
    if (!free_.empty()) {
      auto p = free_.back();
      free_.pop_back();
      return p;
    }
    std::array<int, 2> p{-1, -1};
    if (::pipe2(p.data(), O_NONBLOCK | O_CLOEXEC) != 0) return {-1, -1};
    ::fcntl(p[1], F_SETPIPE_SZ, capacity_bytes);  // best effort; 64 KiB otherwise
    return p;
  }
  /// Returns an empty pipe (a pipe with bytes left in it is closed instead).
  void give(std::array<int, 2> p, bool empty) {
    if (empty && free_.size() < 64) free_.push_back(p);
    else close_pipe(p);
  }

private:
  static void close_pipe(std::array<int, 2> p) {
    ::close(p[0]);
    ::close(p[1]);
  }
  std::vector<std::array<int, 2>> free_;
};

pipe_pool& pipes() {
  thread_local pipe_pool pool;
  return pool;
}

std::string_view reason_phrase(int status) {
  switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 408: return "Request Timeout";
    case 431: return "Request Header Fields Too Large";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return "Error";
  }
}

/// A refusal: status, the stable reason in X-Egress-Denied, a one-line body, and close.
std::string refusal(int status, std::string_view reason) {
  std::string body = "egress-proxy: ";
  body += reason;
  body += '\n';
  std::string out = "HTTP/1.1 " + std::to_string(status) + " " + std::string(reason_phrase(status)) + "\r\n";
  out += "X-Egress-Denied: ";
  out += reason;
  out += "\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: " + std::to_string(body.size()) +
         "\r\nConnection: close\r\n";
  if (status == 503) out += "Retry-After: 1\r\n";
  out += "\r\n" + body;
  return out;
}

/// An immutable config snapshot; sessions hold one for the request they serve.
struct snapshot {
  common::config cfg;
  common::upstream_policy policy;
  std::shared_ptr<resolver> dns;
};

/// One client connection: both sockets and the deadline watchdog's state.
///
/// Deadlines are lazy: `due` is the current phase's deadline (or, while relaying,
/// last_activity + idle), and the timer is only ever pulled earlier. When it fires before
/// `due` the watchdog re-arms it; a phase change therefore costs no timer operation
/// unless it brings the deadline forward.
struct connection {
  connection(asio::any_io_executor ex, tcp::socket s) : client(std::move(s)), upstream(ex), deadline(ex) {
    deadline.expires_at(steady::time_point::max());
  }

  tcp::socket client;
  tcp::socket upstream;
  asio::steady_timer deadline;
  steady::time_point due = steady::time_point::max();
  steady::time_point last_activity = steady::now();
  std::chrono::milliseconds idle{0};
  bool relaying = false;   ///< due = last_activity + idle
  bool expired = false;    ///< the current phase's deadline passed
  bool closed = false;
  bool between_requests = true;  ///< waiting for a request head: drain may close it
  std::uint64_t bytes_up = 0;
  std::uint64_t bytes_down = 0;

  // Tunnel state once the relay owns the connection (no coroutine frame is left then).
  std::uint64_t id = 0;
  decision_record rec;
  steady::time_point start;
  int open_directions = 0;
  std::vector<char> pending[2];  ///< [1] client->upstream, [0] upstream->client; only while a write waits
  std::array<int, 2> pipe[2] = {{-1, -1}, {-1, -1}};  ///< splice pipe per direction, only while bytes are in it
  std::size_t in_pipe[2] = {0, 0};                    ///< bytes spliced in and not yet out

  ~connection() {
    for (int i = 0; i < 2; ++i)
      if (pipe[i][0] >= 0) pipes().give(pipe[i], in_pipe[i] == 0);
  }

  void set_due(steady::time_point t) {
    due = t;
    expired = false;
    if (deadline.expiry() > t) deadline.expires_at(t);
  }
  void arm(std::chrono::milliseconds d) {
    relaying = false;
    set_due(steady::now() + d);
  }
  void arm_idle(std::chrono::milliseconds d) {
    relaying = true;
    idle = d;
    last_activity = steady::now();
    set_due(last_activity + d);
  }
  void cancel_io() {
    error_code ec;
    client.cancel(ec);
    upstream.cancel(ec);
  }
  void close() {
    closed = true;
    error_code ec;
    client.close(ec);
    upstream.close(ec);
    deadline.cancel();
  }
};

/// Fires when the phase deadline passes (or, while relaying, when nothing moved for
/// `idle`) and cancels the connection's I/O; the owner sees `expired` and reports. A
/// completion handler rather than a coroutine, so an idle tunnel keeps no frame for it.
void watch(std::shared_ptr<connection> c) {
  auto& timer = c->deadline;
  timer.async_wait([c = std::move(c)](const error_code&) {
    if (c->closed) return;
    auto now = steady::now();
    auto due = c->relaying ? c->last_activity + c->idle : c->due;
    if (now < due) {
      if (c->deadline.expiry() < due) c->deadline.expires_at(due);
    } else if (c->deadline.expiry() <= now) {
      c->expired = true;
      c->cancel_io();
      c->due = steady::time_point::max();
      c->deadline.expires_at(steady::time_point::max());
    }
    watch(c);
  });
}

/// Waits until `s` is readable, then reads what is there (at most `max` bytes) straight
/// into `out`. Waiting first matters: the next bytes (a ClientHello after the 200, a
/// response after the request) are rarely there yet, and a speculative read would cost a
/// wasted recv(2) (measured: +30 % latency at concurrency 1).
awaitable<error_code> read_into(tcp::socket& s, std::string& out, std::size_t max) {
  constexpr std::size_t chunk = 16 * 1024;
  for (;;) {
    auto [wait_ec] = co_await s.async_wait(tcp::socket::wait_read, nothrow);
    if (wait_ec) co_return wait_ec;
    const std::size_t old = out.size();
    const std::size_t want = std::min(max, chunk);
    out.resize(old + want);
    error_code ec;
    std::size_t n = s.read_some(asio::buffer(out.data() + old, want), ec);
    out.resize(old + (ec ? 0 : n));
    if (ec == asio::error::would_block || ec == asio::error::try_again) continue;
    co_return ec;
  }
}

/// Completion handler for co_spawn: an exception escaping a coroutine is a bug; log it
/// rather than lose it (a bare `detached` would terminate silently).
struct log_exception {
  const char* where;
  void operator()(std::exception_ptr e) const {
    if (!e) return;
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& ex) {
      log_event("error", "exception", std::string(where) + ": " + ex.what());
    }
  }
};

}  // namespace

std::optional<tcp::endpoint> parse_endpoint(std::string_view text) {
  std::string_view addr, port;
  if (text.starts_with('[')) {
    auto close = text.find("]:");
    if (close == std::string_view::npos) return std::nullopt;
    addr = text.substr(1, close - 1);
    port = text.substr(close + 2);
  } else {
    auto colon = text.rfind(':');
    if (colon == std::string_view::npos || text.find(':') != colon) return std::nullopt;
    addr = text.substr(0, colon);
    port = text.substr(colon + 1);
  }
  if (port.empty() || port.size() > 5) return std::nullopt;
  unsigned p = 0;
  for (char c : port) {
    if (c < '0' || c > '9') return std::nullopt;
    p = p * 10 + static_cast<unsigned>(c - '0');
  }
  if (p > 65535) return std::nullopt;
  error_code ec;
  auto a = asio::ip::make_address(std::string(addr), ec);
  if (ec) return std::nullopt;
  return tcp::endpoint(a, static_cast<unsigned short>(p));
}

class server_impl : public std::enable_shared_from_this<server_impl> {
public:
  server_impl(asio::io_context& io, server_options opts, common::config cfg)
      : io_(io), opts_(std::move(opts)), proxy_acceptor_(io), admin_acceptor_(io), signals_(io), drain_timer_(io) {
    snap_ = make_snapshot(std::move(cfg));
  }

  void start() {
    const auto& p = snap_->cfg.proxy;
    tcp::endpoint listen = opts_.listen.value_or(tcp::endpoint(asio::ip::make_address(p.listen_address), p.port));
    tcp::endpoint admin = opts_.admin.value_or(tcp::endpoint(asio::ip::make_address(p.admin_address), p.admin_port));
    open(proxy_acceptor_, listen, "proxy listener", "--listen");
    open(admin_acceptor_, admin, "admin listener", "--admin");
    signals_.add(SIGTERM);
    signals_.add(SIGINT);
    signals_.add(SIGHUP);
    wait_signal();
    auto self = shared_from_this();
    asio::co_spawn(io_, accept_loop(self), log_exception{"accept_loop"});
    asio::co_spawn(io_, admin_loop(self), log_exception{"admin_loop"});
    std::string line = format_event_prefix("info", "listening");
    line += ",\"proxy\":";
    append_json_string(line, endpoint_text(proxy_acceptor_.local_endpoint()));
    line += ",\"admin\":";
    append_json_string(line, endpoint_text(admin_acceptor_.local_endpoint()));
    line += ",\"mode\":";
    append_json_string(line, common::to_string(p.mode));
    line += ",\"allowlist_entries\":" + std::to_string(snap_->cfg.allowlist.size());
    line += ",\"version\":";
    append_json_string(line, EGRESS_VERSION);
    line += ",\"config\":";
    append_json_string(line, opts_.config_path);
    line += ",\"config_sha256\":";
    append_json_string(line, file_sha256(opts_.config_path));
    line += "}";
    write_line(line);
  }

  tcp::endpoint proxy_endpoint() const { return proxy_acceptor_.local_endpoint(); }
  tcp::endpoint admin_endpoint() const { return admin_acceptor_.local_endpoint(); }

private:
  static void open(tcp::acceptor& a, const tcp::endpoint& ep, const char* what, const char* flag) {
    error_code ec;
    a.open(ep.protocol(), ec);
    if (!ec) a.set_option(tcp::acceptor::reuse_address(true), ec);
    if (!ec && ep.address().is_v6()) a.set_option(asio::ip::v6_only(false), ec);
    if (!ec) a.bind(ep, ec);
    if (!ec) a.listen(asio::socket_base::max_listen_connections, ec);
    if (ec)
      throw std::runtime_error("cannot listen on " + endpoint_text(ep) + " (" + what + "): " + ec.message() +
                               "; choose another address with " + flag + " ADDR:PORT");
  }

  // A new snapshot; the previous one's resolver (and its cache) is kept when the resolver
  // settings did not change, with the static hosts replaced.
  std::shared_ptr<const snapshot> make_snapshot(common::config cfg, const snapshot* previous = nullptr) {
    auto s = std::make_shared<snapshot>();
    s->policy = cfg.address_policy();
    if (previous) {
      const auto& a = previous->cfg.proxy.resolver;
      const auto& b = cfg.proxy.resolver;
      if (a.servers == b.servers && a.timeout == b.timeout && a.min_ttl == b.min_ttl && a.max_ttl == b.max_ttl) {
        previous->dns->set_hosts(cfg.proxy.hosts);
        s->dns = previous->dns;
        s->cfg = std::move(cfg);
        return s;
      }
    }
    resolver_options ro;
    ro.servers = cfg.proxy.resolver.servers;
    ro.timeout = cfg.proxy.resolver.timeout;
    ro.min_ttl = cfg.proxy.resolver.min_ttl;
    ro.max_ttl = cfg.proxy.resolver.max_ttl;
    ro.hosts = cfg.proxy.hosts;
    s->dns = std::make_shared<resolver>(io_.get_executor(), std::move(ro));
    s->cfg = std::move(cfg);
    return s;
  }

  void wait_signal() {
    signals_.async_wait([self = shared_from_this()](const error_code& ec, int sig) {
      if (ec) return;
      if (sig == SIGHUP) self->reload();
      else self->begin_drain();
      self->wait_signal();
    });
  }

  void reload() {
    common::diagnostics diags;
    auto cfg = common::load_config(opts_.config_path, common::accept_kind::deployment_or_proxy, diags);
    for (const auto& d : diags.items())
      log_event(d.level == common::severity::error ? "error" : "warning", "config", common::format(d));
    if (!cfg || !cfg->has_proxy) {
      metrics_.reload(false);
      log_event("error", "reload_failed", opts_.config_path + ": kept the running configuration");
      return;
    }
    try {
      snap_ = make_snapshot(std::move(*cfg), snap_.get());
    } catch (const std::exception& e) {
      metrics_.reload(false);
      log_event("error", "reload_failed", std::string(e.what()) + "; kept the running configuration");
      return;
    }
    metrics_.reload(true);
    log_event("info", "reloaded", opts_.config_path + " sha256 " + file_sha256(opts_.config_path) + ": " +
                                      std::to_string(snap_->cfg.allowlist.size()) +
                                      " allowlist entries (listen addresses apply at restart)");
  }

  void begin_drain() {
    if (draining_) return;
    draining_ = true;
    error_code ec;
    proxy_acceptor_.close(ec);
    log_event("info", "draining",
              std::to_string(live_.size()) + " connections open; grace " +
                  std::to_string(snap_->cfg.proxy.limits.drain_timeout.count()) + " ms");
    for (auto& [id, weak] : live_)
      if (auto c = weak.lock(); c && c->between_requests) c->close();
    drain_timer_.expires_after(snap_->cfg.proxy.limits.drain_timeout);
    drain_timer_.async_wait([self = shared_from_this()](const error_code& e) {
      if (e) return;
      // Grace period over: close what is left and let each session write its decision
      // line (end "drain"); stop when they are gone, or after one more second at most.
      self->drain_forced_ = true;
      for (auto& [id, weak] : self->live_)
        if (auto c = weak.lock()) c->close();
      self->drain_timer_.expires_after(std::chrono::seconds(1));
      self->drain_timer_.async_wait([self](const error_code& e2) {
        if (!e2) self->finish_if_drained(true);
      });
      self->finish_if_drained(false);
    });
    finish_if_drained(false);
  }

  void finish_if_drained(bool forced) {
    if (!draining_ || (!live_.empty() && !forced)) return;
    flush_log();
    log_event("info", "stopped", forced ? "sessions did not finish after the grace period"
                                 : drain_forced_ ? "drain grace period over; open connections closed"
                                                 : "all connections finished");
    error_code ec;
    admin_acceptor_.close(ec);
    drain_timer_.cancel();
    signals_.cancel();
    io_.stop();
  }

  // Counts and logs one decision. Lines are batched: everything decided in one turn of
  // the event loop goes out in one write(2), flushed before the loop waits again.
  void decided(decision_record& rec, steady::time_point start) {
    rec.total_ms = ms_since(start);
    metrics_.decision(rec.allowed, rec.reason);
    if (!log_batch_.empty()) log_batch_ += '\n';
    log_batch_ += format_decision(rec, std::chrono::system_clock::now());
    if (log_batch_.size() >= 64 * 1024) return flush_log();
    if (!log_flush_posted_) {
      log_flush_posted_ = true;
      asio::post(io_, [self = shared_from_this()] { self->flush_log(); });
    }
  }

  void flush_log() {
    log_flush_posted_ = false;
    if (log_batch_.empty()) return;
    write_line(log_batch_);
    log_batch_.clear();
  }

  static awaitable<void> accept_loop(std::shared_ptr<server_impl> self) {
    asio::steady_timer backoff(self->io_);
    for (;;) {
      tcp::endpoint peer;
      auto [ec, sock] = co_await self->proxy_acceptor_.async_accept(peer, nothrow);
      if (!self->proxy_acceptor_.is_open() || ec == asio::error::operation_aborted) co_return;
      if (ec) {
        // EMFILE/ENFILE/ENOBUFS: back off instead of spinning on a listener that stays readable.
        log_event("warning", "accept_failed", ec.message());
        backoff.expires_after(std::chrono::milliseconds(100));
        co_await backoff.async_wait(nothrow);
        continue;
      }
      std::uint64_t id = self->next_id_++;
      if (static_cast<std::uint64_t>(self->metrics_.connections()) >= self->snap_->cfg.proxy.limits.max_connections) {
        decision_record rec;
        rec.conn = id;
        error_code e;
        rec.client = endpoint_text(peer);
        rec.reason = "too_many_connections";
        rec.status = 503;
        std::string r = refusal(503, rec.reason);
        sock.non_blocking(true, e);
        sock.write_some(asio::buffer(r), e);  // best effort: never wait on a client we cannot serve
        sock.close(e);
        self->decided(rec, steady::now());
        continue;
      }
      auto c = std::make_shared<connection>(self->io_.get_executor(), std::move(sock));
      self->live_.emplace(id, c);
      self->metrics_.connection_opened();
      c->id = id;
      watch(c);
      asio::co_spawn(self->io_, session(self, c, id, endpoint_text(peer)), [self, c](std::exception_ptr e, bool handed_to_relay) {
        log_exception{"session"}(e);
        if (handed_to_relay && !e) return;  // the relay ends the connection
        self->end_connection(c);
      });
    }
  }

  // Reads into `buf` until it holds a complete request head; returns its length, or 0
  // with `reason` set (empty reason: the client went away quietly).
  static awaitable<std::size_t> read_head(std::shared_ptr<server_impl> self, std::shared_ptr<connection> c,
                                          std::string& buf, std::string_view& reason, bool first) {
    const auto& limits = self->snap_->cfg.proxy.limits;
    c->arm(limits.header_timeout);
    c->between_requests = buf.empty();
    for (;;) {
      if (std::size_t n = find_head_end(buf)) {
        c->between_requests = false;
        co_return n;
      }
      if (buf.size() >= limits.max_header_bytes) {
        reason = "headers_too_large";
        co_return 0;
      }
      // Judge a request line without an HTTP/1.x version (HTTP/0.9, HTTP/2 preface) as
      // soon as it is complete, instead of waiting for a header block that never comes.
      if (auto eol = buf.find("\r\n"); eol != std::string::npos) {
        std::string_view line(buf.data(), eol);
        if (!line.ends_with(" HTTP/1.1") && !line.ends_with(" HTTP/1.0")) {
          auto verdict = parse_request_head(std::string(line) + "\r\n\r\n");
          reason = verdict ? std::string_view("bad_request_line") : verdict.error().reason;
          co_return 0;
        }
      }
      auto ec = co_await read_into(c->client, buf, limits.max_header_bytes - buf.size());
      if (ec) {
        // A keep-alive connection that simply goes quiet is closed without a response.
        if (c->expired && (first || !buf.empty())) reason = "header_timeout";
        co_return 0;
      }
      c->between_requests = false;
    }
  }

  // Resolves (unless the host is a literal), filters and connects. On success the
  // connection's upstream socket is open; otherwise the refusal reason is returned.
  static awaitable<decision> dial(std::shared_ptr<server_impl> self, std::shared_ptr<connection> c,
                                  std::shared_ptr<const snapshot> snap, common::host host, std::uint16_t port,
                                  decision_record* rec) {
    std::vector<asio::ip::address> addresses;
    if (host.is_ip()) {
      addresses.push_back(host.address);
    } else {
      auto t0 = steady::now();
      auto answer = co_await snap->dns->resolve(host.text);
      rec->dns_ms = ms_since(t0);
      self->metrics_.dns_latency(rec->dns_ms / 1000.0);
      if (!answer) {
        auto ec = answer.error();
        co_return decision::deny(ec.category() == dns_error_category() ? dns_error_reason(static_cast<dns_error>(ec.value()))
                                                                        : std::string_view("dns_failure"));
      }
      addresses = std::move(answer->addresses);
    }
    auto filtered = filter_addresses(snap->policy, addresses);
    if (filtered.allowed.empty()) {
      if (!filtered.first_reason.empty()) rec->upstream = endpoint_text(tcp::endpoint(filtered.first_refused, port));
      co_return decision::deny(filtered.first_reason.empty() ? "dns_not_found" : filtered.first_reason);
    }
    std::string_view last = "connect_failed";
    auto t0 = steady::now();
    for (const auto& a : filtered.allowed) {
      tcp::endpoint ep(a, port);
      error_code ec;
      c->upstream.close(ec);
      c->arm(snap->cfg.proxy.limits.connect_timeout);
      auto [cec] = co_await c->upstream.async_connect(ep, nothrow);
      if (!cec && !c->expired) {
        rec->connect_ms = ms_since(t0);
        self->metrics_.connect_latency(rec->connect_ms / 1000.0);
        rec->upstream = endpoint_text(ep);
        c->upstream.set_option(tcp::no_delay(true), ec);
        c->upstream.non_blocking(true, ec);
        co_return decision::allow();
      }
      last = c->expired ? "connect_timeout" : cec == asio::error::connection_refused ? "connect_refused" : "connect_failed";
      rec->upstream = endpoint_text(ep);
    }
    rec->connect_ms = ms_since(t0);
    co_return decision::deny(last);
  }

  // Sends a refusal and logs the decision. The connection is closed by the caller.
  static awaitable<void> refuse(std::shared_ptr<server_impl> self, std::shared_ptr<connection> c,
                                decision_record& rec, std::string_view reason, steady::time_point start,
                                int status = 0) {
    rec.allowed = false;
    rec.reason = reason;
    rec.status = status != 0 ? status : status_for(reason);
    std::string r = refusal(rec.status, reason);
    c->arm(std::chrono::seconds(5));
    co_await asio::async_write(c->client, asio::buffer(r), nothrow);
    self->decided(rec, start);
  }

  void end_connection(const std::shared_ptr<connection>& c) {
    c->close();
    if (live_.erase(c->id) > 0) metrics_.connection_closed();
    finish_if_drained(false);
  }

  // Serves one client connection. Returns true when an established tunnel was handed to
  // the relay, which then owns the connection.
  static awaitable<bool> session(std::shared_ptr<server_impl> self, std::shared_ptr<connection> c, std::uint64_t id,
                                 std::string client) {
    error_code ec;
    c->client.set_option(tcp::no_delay(true), ec);
    c->client.non_blocking(true, ec);
    std::string buf;
    for (bool first = true;; first = false) {
      auto snap = self->snap_;  // each request sees the config current when it arrived
      decision_record rec;
      rec.conn = id;
      rec.client = client;
      std::string_view reason;
      std::size_t head_len = co_await read_head(self, c, buf, reason, first);
      auto start = steady::now();
      if (head_len == 0) {
        if (!reason.empty()) {
          rec.host = "";
          co_await refuse(self, c, rec, reason, start);
        }
        co_return false;
      }
      auto parsed = parse_request_head(std::string_view(buf.data(), head_len));
      if (!parsed) {
        rec.method = "";
        co_await refuse(self, c, rec, parsed.error().reason, start, parsed.error().status);
        co_return false;
      }
      request_head& req = *parsed;
      rec.method = std::string(req.method);
      rec.host = req.host.text;
      rec.port = req.port;
      if (self->draining_) {
        co_await refuse(self, c, rec, "draining", start);
        co_return false;
      }
      if (auto d = check_target(snap->cfg.allowlist, req.host, req.port); !d.allowed) {
        co_await refuse(self, c, rec, d.reason, start);
        co_return false;
      }
      auto d = co_await dial(self, c, snap, req.host, req.port, &rec);
      if (!d.allowed) {
        co_await refuse(self, c, rec, d.reason, start);
        co_return false;
      }
      if (req.form == request_form::connect) {
        buf.erase(0, head_len);
        req.fields = {};  // nothing of the head is needed any more
        co_return co_await tunnel(self, c, snap, req.host, std::move(buf), rec, start);
      }
      std::string upstream_request = upstream_head(req);
      bool keep = co_await forward_http(self, c, snap, req, std::move(upstream_request), buf, head_len, rec, start);
      if (!keep || self->draining_) co_return false;
      c->upstream.close(ec);
    }
  }

  static awaitable<bool> tunnel(std::shared_ptr<server_impl> self, std::shared_ptr<connection> c,
                                std::shared_ptr<const snapshot> snap, common::host host, std::string hello,
                                decision_record& rec, steady::time_point start) {
    const auto& p = snap->cfg.proxy;
    static constexpr std::string_view established = "HTTP/1.1 200 Connection established\r\n\r\n";
    c->arm(p.limits.client_hello_timeout);
    auto [wec, wn] = co_await asio::async_write(c->client, asio::buffer(established), nothrow);
    if (wec) {
      rec.reason = "client_closed";
      self->decided(rec, start);
      co_return false;
    }
    // The ClientHello: bytes sent together with the CONNECT head come first.
    client_hello_parser parser(p.limits.max_client_hello_bytes);
    auto result = parser.feed(std::span(reinterpret_cast<const std::uint8_t*>(hello.data()), hello.size()));
    while (result.state == hello_state::need_more) {
      std::size_t before = hello.size();
      auto ec = co_await read_into(c->client, hello, relay_buffer().size());
      if (ec) {
        rec.reason = c->expired ? "client_hello_timeout" : "client_hello_incomplete";
        rec.status = 200;
        self->decided(rec, start);
        co_return false;
      }
      result = parser.feed(std::span(reinterpret_cast<const std::uint8_t*>(hello.data() + before), hello.size() - before));
    }
    if (result.server_name) rec.sni = *result.server_name;
    rec.status = 200;
    if (auto d = check_sni(result, host, p.allow_missing_sni, p.allow_ech); !d.allowed) {
      rec.reason = d.reason;  // closed before one byte went upstream
      self->decided(rec, start);
      co_return false;
    }
    auto [fec, fn] = co_await asio::async_write(c->upstream, asio::buffer(hello), nothrow);
    if (fec) {
      rec.allowed = true;
      rec.reason = "allowed";
      rec.end = "error";
      self->decided(rec, start);
      co_return false;
    }
    c->bytes_up = hello.size();
    rec.allowed = true;
    rec.reason = "allowed";
    c->rec = std::move(rec);
    c->start = start;
    self->metrics_.tunnel_opened();
    c->arm_idle(p.limits.idle_timeout);
    c->open_directions = 2;
    relay_wait(self, c, true);
    relay_wait(self, c, false);
    co_return true;
  }

  // The relay: completion handlers, not coroutines, so an idle tunnel is the connection
  // object and two pending waits. Each direction waits for readability, then moves what
  // is there through the thread's shared buffer until the socket would block (bounded);
  // only a write the peer cannot take at once keeps its remainder in `pending`.
  static void relay_wait(std::shared_ptr<server_impl> self, std::shared_ptr<connection> c, bool up) {
    tcp::socket& from = up ? c->client : c->upstream;
    from.async_wait(tcp::socket::wait_read, [self = std::move(self), c = std::move(c), up](const error_code& ec) mutable {
      if (ec) return relay_direction_done(self, c);
      relay_readable(std::move(self), std::move(c), up);
    });
  }

  // Readable: move the bytes with splice(2) through a pooled pipe (no copy through user
  // space), until the socket would block (bounded, so one busy tunnel cannot starve the
  // others). Without a pipe (descriptor limit), copy instead.
  static void relay_readable(std::shared_ptr<server_impl> self, std::shared_ptr<connection> c, bool up) {
    const int d = up ? 1 : 0;
    if (c->pipe[d][0] < 0) c->pipe[d] = pipes().take();
    if (c->pipe[d][0] < 0) return relay_copy(std::move(self), std::move(c), up);
    tcp::socket& from = up ? c->client : c->upstream;
    tcp::socket& to = up ? c->upstream : c->client;
    std::uint64_t& count = up ? c->bytes_up : c->bytes_down;
    constexpr int max_splices_per_wakeup = 16;
    for (int i = 0; i < max_splices_per_wakeup; ++i) {
      ssize_t n = ::splice(from.native_handle(), nullptr, c->pipe[d][1], nullptr, pipe_pool::capacity_bytes,
                           SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        release_pipe(*c, d);
        if (n == 0) {
          // Half-close: the other direction goes on. When it is already done, the close
          // that follows says the same.
          error_code ignored;
          if (c->open_directions > 1) to.shutdown(tcp::socket::shutdown_send, ignored);
        } else {
          c->cancel_io();
        }
        return relay_direction_done(self, c);
      }
      count += static_cast<std::uint64_t>(n);
      c->in_pipe[d] += static_cast<std::size_t>(n);
      c->last_activity = steady::now();
      if (!flush_pipe(*c, d, to)) {
        c->cancel_io();
        release_pipe(*c, d);
        return relay_direction_done(self, c);
      }
      if (c->in_pipe[d] > 0) {
        // The peer is slower: keep the pipe (it holds the bytes) until it can take them.
        return relay_wait_writable(std::move(self), std::move(c), up);
      }
      if (n < pipe_pool::capacity_bytes) break;  // a short read: the socket is most likely empty now
    }
    release_pipe(*c, d);
    relay_wait(std::move(self), std::move(c), up);
  }

  // Bytes wait in the pipe: flush them when `to` is writable, then read again.
  static void relay_wait_writable(std::shared_ptr<server_impl> self, std::shared_ptr<connection> c, bool up) {
    const int d = up ? 1 : 0;
    tcp::socket& to = up ? c->upstream : c->client;
    to.async_wait(tcp::socket::wait_write, [self = std::move(self), c, up, d](const error_code& ec) mutable {
      tcp::socket& out = up ? c->upstream : c->client;
      if (ec || !flush_pipe(*c, d, out)) {
        c->cancel_io();
        release_pipe(*c, d);
        return relay_direction_done(self, c);
      }
      if (c->in_pipe[d] > 0) return relay_wait_writable(std::move(self), std::move(c), up);
      release_pipe(*c, d);
      relay_wait(std::move(self), std::move(c), up);
    });
  }

  // Splices what the pipe holds into `to` until empty or the socket would block.
  // Returns false on a write error.
  static bool flush_pipe(connection& c, int d, tcp::socket& to) {
    while (c.in_pipe[d] > 0) {
      ssize_t w = ::splice(c.pipe[d][0], nullptr, to.native_handle(), nullptr, c.in_pipe[d],
                           SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
      if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return true;
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) return false;
      c.in_pipe[d] -= static_cast<std::size_t>(w);
    }
    return true;
  }

  static void release_pipe(connection& c, int d) {
    if (c.pipe[d][0] < 0) return;
    pipes().give(c.pipe[d], c.in_pipe[d] == 0);
    c.pipe[d] = {-1, -1};
    c.in_pipe[d] = 0;
  }

  static void relay_copy(std::shared_ptr<server_impl> self, std::shared_ptr<connection> c, bool up) {
    tcp::socket& from = up ? c->client : c->upstream;
    tcp::socket& to = up ? c->upstream : c->client;
    std::uint64_t& count = up ? c->bytes_up : c->bytes_down;
    constexpr int max_reads_per_wakeup = 16;  // one busy tunnel must not starve the others
    for (int i = 0; i < max_reads_per_wakeup; ++i) {
      auto& buf = relay_buffer();
      error_code ec;
      std::size_t n = from.read_some(asio::buffer(buf), ec);
      if (ec == asio::error::would_block || ec == asio::error::try_again) break;
      if (ec == asio::error::eof) {
        error_code ignored;
        if (c->open_directions > 1) to.shutdown(tcp::socket::shutdown_send, ignored);  // half-close
        return relay_direction_done(self, c);
      }
      if (ec) {
        c->cancel_io();
        return relay_direction_done(self, c);
      }
      count += n;
      c->last_activity = steady::now();
      std::size_t written = to.write_some(asio::buffer(buf.data(), n), ec);
      if (ec == asio::error::would_block || ec == asio::error::try_again) {
        written = 0;
        ec = {};
      }
      if (ec) {
        c->cancel_io();
        return relay_direction_done(self, c);
      }
      if (written < n) {
        auto& pending = c->pending[up ? 1 : 0];
        pending.assign(buf.data() + written, buf.data() + n);
        asio::async_write(to, asio::buffer(pending),
                          [self = std::move(self), c, up](const error_code& wec, std::size_t) mutable {
                            std::vector<char>().swap(c->pending[up ? 1 : 0]);
                            if (wec) {
                              c->cancel_io();
                              return relay_direction_done(self, c);
                            }
                            c->last_activity = steady::now();
                            relay_wait(std::move(self), std::move(c), up);
                          });
        return;
      }
      if (n < buf.size()) break;  // a short read: the socket is most likely empty now
    }
    relay_wait(std::move(self), std::move(c), up);
  }

  static void relay_direction_done(const std::shared_ptr<server_impl>& self, const std::shared_ptr<connection>& c) {
    if (--c->open_directions > 0) return;
    self->metrics_.tunnel_closed();
    auto& rec = c->rec;
    rec.bytes_up = c->bytes_up;
    rec.bytes_down = c->bytes_down;
    rec.end = c->expired ? "idle_timeout" : c->closed ? "drain" : "eof";
    self->metrics_.bytes(c->bytes_up, c->bytes_down);
    self->decided(rec, c->start);
    self->end_connection(c);
  }

  // Copies exactly `n` body bytes from `from` to `to`, taking first from `pending`
  // (bytes already read); leftover pending bytes stay for the next message.
  static awaitable<bool> relay_length(std::shared_ptr<connection> c, tcp::socket& from, tcp::socket& to,
                                      std::uint64_t n, std::string& pending, std::uint64_t& count) {
    std::size_t first = static_cast<std::size_t>(std::min<std::uint64_t>(n, pending.size()));
    if (first > 0) {
      auto [ec, w] = co_await asio::async_write(to, asio::buffer(pending.data(), first), nothrow);
      if (ec) co_return false;
      pending.erase(0, first);
      n -= first;
      count += first;
    }
    std::string chunk;
    while (n > 0) {
      chunk.clear();
      auto ec = co_await read_into(from, chunk, static_cast<std::size_t>(std::min<std::uint64_t>(n, relay_buffer().size())));
      if (ec) co_return false;
      c->last_activity = steady::now();
      auto [wec, w] = co_await asio::async_write(to, asio::buffer(chunk), nothrow);
      if (wec) co_return false;
      n -= chunk.size();
      count += chunk.size();
    }
    co_return true;
  }

  // Copies a chunked body until its last chunk and trailer; bytes after it stay in `pending`.
  static awaitable<bool> relay_chunked(std::shared_ptr<connection> c, tcp::socket& from, tcp::socket& to,
                                       std::string& pending, std::uint64_t& count) {
    chunked_scanner scan;
    std::size_t k = scan.feed(pending);
    if (scan.status() == chunked_scanner::state::error) co_return false;
    if (k > 0) {
      auto [ec, w] = co_await asio::async_write(to, asio::buffer(pending.data(), k), nothrow);
      if (ec) co_return false;
      pending.erase(0, k);
      count += k;
    }
    std::string chunk;
    while (scan.status() == chunked_scanner::state::body) {
      chunk.clear();
      auto ec = co_await read_into(from, chunk, relay_buffer().size());
      if (ec) co_return false;
      c->last_activity = steady::now();
      std::size_t used = scan.feed(chunk);
      if (scan.status() == chunked_scanner::state::error) co_return false;
      pending.append(chunk, used, std::string::npos);  // the next pipelined message
      chunk.resize(used);
      auto [wec, w] = co_await asio::async_write(to, asio::buffer(chunk), nothrow);
      if (wec) co_return false;
      count += used;
    }
    co_return true;
  }

  // Forwards one absolute-form request and its response. Returns whether the client
  // connection stays open for another request.
  static awaitable<bool> forward_http(std::shared_ptr<server_impl> self, std::shared_ptr<connection> c,
                                      std::shared_ptr<const snapshot> snap, const request_head& req,
                                      std::string upstream_request, std::string& buf, std::size_t head_len,
                                      decision_record& rec, steady::time_point start) {
    const auto& limits = snap->cfg.proxy.limits;
    rec.allowed = true;
    rec.reason = "allowed";
    c->bytes_up = c->bytes_down = 0;
    // Everything needed from the head's views is taken before the head leaves `buf`.
    const bool head_request = req.method == "HEAD";
    bool expect_continue = false;
    for (const auto& f : req.fields)
      if (http::iequals(f.name, "expect") && http::iequals(f.value, "100-continue")) expect_continue = true;
    const bool chunked = req.chunked;
    const std::optional<std::uint64_t> content_length = req.content_length;
    const bool client_keep_alive = req.keep_alive;
    buf.erase(0, head_len);
    c->arm_idle(limits.idle_timeout);
    auto fail = [&](std::string_view end) {
      rec.end = end;
      rec.bytes_up = c->bytes_up;
      rec.bytes_down = c->bytes_down;
      self->metrics_.bytes(c->bytes_up, c->bytes_down);
      self->decided(rec, start);
      return false;
    };
    auto [ec, w] = co_await asio::async_write(c->upstream, asio::buffer(upstream_request), nothrow);
    if (ec) co_return fail("error");
    if (expect_continue) {
      static constexpr std::string_view cont = "HTTP/1.1 100 Continue\r\n\r\n";
      co_await asio::async_write(c->client, asio::buffer(cont), nothrow);
    }
    bool ok = true;
    if (chunked) ok = co_await relay_chunked(c, c->client, c->upstream, buf, c->bytes_up);
    else if (content_length && *content_length > 0)
      ok = co_await relay_length(c, c->client, c->upstream, *content_length, buf, c->bytes_up);
    if (!ok) co_return fail(c->expired ? "idle_timeout" : "error");

    // Response head (interim 1xx responses other than 101 are skipped).
    std::string rbuf;
    std::optional<response_head> resp;
    for (;;) {
      std::size_t n = find_head_end(rbuf);
      if (n == 0) {
        if (rbuf.size() >= limits.max_header_bytes) break;
        auto rec_ec = co_await read_into(c->upstream, rbuf, limits.max_header_bytes - rbuf.size());
        if (rec_ec) break;
        c->last_activity = steady::now();
        continue;
      }
      resp = parse_response_head(std::string_view(rbuf.data(), n), head_request);
      if (resp && resp->status >= 100 && resp->status < 200 && resp->status != 101) {
        rbuf.erase(0, n);
        resp.reset();
        continue;
      }
      rbuf.erase(0, n);
      break;
    }
    if (!resp || resp->status == 101) {
      rec.allowed = false;
      co_await refuse(self, c, rec, c->expired ? "upstream_timeout" : "bad_upstream_response", start);
      co_return false;
    }
    bool keep = client_keep_alive && resp->body != body_kind::until_close && !self->draining_;
    std::string head = client_response_head(*resp, keep);
    auto [hec, hw] = co_await asio::async_write(c->client, asio::buffer(head), nothrow);
    if (hec) co_return fail("error");
    rec.status = resp->status;
    switch (resp->body) {
      case body_kind::none: break;
      case body_kind::length:
        ok = co_await relay_length(c, c->upstream, c->client, resp->content_length, rbuf, c->bytes_down);
        break;
      case body_kind::chunked: ok = co_await relay_chunked(c, c->upstream, c->client, rbuf, c->bytes_down); break;
      case body_kind::until_close: {
        if (!rbuf.empty()) {
          auto [e2, w2] = co_await asio::async_write(c->client, asio::buffer(rbuf), nothrow);
          if (e2) ok = false;
          c->bytes_down += rbuf.size();
        }
        std::string chunk;
        while (ok) {
          chunk.clear();
          auto e3 = co_await read_into(c->upstream, chunk, relay_buffer().size());
          if (e3 == asio::error::eof) break;
          if (e3) {
            ok = false;
            break;
          }
          c->last_activity = steady::now();
          auto [e4, w4] = co_await asio::async_write(c->client, asio::buffer(chunk), nothrow);
          if (e4) ok = false;
          c->bytes_down += chunk.size();
        }
        break;
      }
    }
    rec.end = ok ? "complete" : c->expired ? "idle_timeout" : "error";
    rec.bytes_up = c->bytes_up;
    rec.bytes_down = c->bytes_down;
    self->metrics_.bytes(c->bytes_up, c->bytes_down);
    self->decided(rec, start);
    co_return ok && keep;
  }

  static awaitable<void> admin_loop(std::shared_ptr<server_impl> self) {
    for (;;) {
      auto [ec, sock] = co_await self->admin_acceptor_.async_accept(nothrow);
      if (!self->admin_acceptor_.is_open() || ec == asio::error::operation_aborted) co_return;
      if (ec) {
        asio::steady_timer t(self->io_, std::chrono::milliseconds(100));
        co_await t.async_wait(nothrow);
        continue;
      }
      auto c = std::make_shared<connection>(self->io_.get_executor(), std::move(sock));
      watch(c);
      asio::co_spawn(self->io_, admin_session(self, c), [c](std::exception_ptr e) {
        log_exception{"admin_session"}(e);
        c->close();
      });
    }
  }

  static awaitable<void> admin_session(std::shared_ptr<server_impl> self, std::shared_ptr<connection> c) {
    c->arm(std::chrono::seconds(5));
    std::string buf;
    while (find_head_end(buf) == 0 && buf.size() < 8192) {
      std::array<char, 1024> tmp;
      auto [ec, n] = co_await c->client.async_read_some(asio::buffer(tmp), nothrow);
      if (ec) co_return;
      buf.append(tmp.data(), n);
    }
    std::string_view line(buf.data(), std::min(buf.find("\r\n"), buf.size()));
    int status = 404;
    std::string body = "not found\n", type = "text/plain; charset=utf-8";
    if (line == "GET /healthz HTTP/1.1" || line == "GET /healthz HTTP/1.0") {
      status = 200;
      body = "ok\n";
    } else if (line == "GET /readyz HTTP/1.1" || line == "GET /readyz HTTP/1.0") {
      status = self->draining_ ? 503 : 200;
      body = self->draining_ ? "draining\n" : "ready\n";
    } else if (line == "GET /metrics HTTP/1.1" || line == "GET /metrics HTTP/1.0") {
      status = 200;
      body = self->metrics_.render();
      type = "text/plain; version=0.0.4; charset=utf-8";
    }
    std::string out = "HTTP/1.1 " + std::to_string(status) + " " + std::string(reason_phrase(status == 503 ? 503 : status)) +
                      "\r\nContent-Type: " + type + "\r\nContent-Length: " + std::to_string(body.size()) +
                      "\r\nConnection: close\r\n\r\n" + body;
    co_await asio::async_write(c->client, asio::buffer(out), nothrow);
  }

  asio::io_context& io_;
  server_options opts_;
  std::shared_ptr<const snapshot> snap_;
  tcp::acceptor proxy_acceptor_;
  tcp::acceptor admin_acceptor_;
  asio::signal_set signals_;
  asio::steady_timer drain_timer_;
  metrics metrics_;
  bool draining_ = false;
  bool drain_forced_ = false;
  std::string log_batch_;
  bool log_flush_posted_ = false;
  std::uint64_t next_id_ = 1;
  std::unordered_map<std::uint64_t, std::weak_ptr<connection>> live_;
};

server::server(asio::io_context& io, server_options opts, common::config cfg)
    : impl_(std::make_shared<server_impl>(io, std::move(opts), std::move(cfg))) {}

server::~server() = default;

void server::start() { impl_->start(); }
tcp::endpoint server::proxy_endpoint() const { return impl_->proxy_endpoint(); }
tcp::endpoint server::admin_endpoint() const { return impl_->admin_endpoint(); }

}  // namespace egress::proxy
