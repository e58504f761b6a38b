#include "egress/proxy/server.hpp"

#include "egress/proxy/acl.hpp"
#include "egress/proxy/client_hello.hpp"
#include "egress/proxy/http_framing.hpp"
#include "egress/proxy/http_syntax.hpp"
#include "egress/proxy/log.hpp"
#include "egress/proxy/readiness.hpp"
#include "egress/proxy/request_head.hpp"
#include "egress/proxy/resolver.hpp"

#include <boost/asio/any_completion_handler.hpp>
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
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>
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

/// One non-blocking TCP socket of a connection, registered with the readiness loop, and
/// what the kernel last reported about it. Edge-triggered: a flag stays set until a read
/// or write says EAGAIN (or a read comes back short, which means the socket is empty).
struct stream {
  int fd = -1;
  std::uint64_t key = 0;  ///< readiness registration
  bool readable = false;
  bool writable = false;
  bool hup = false;  ///< EPOLLRDHUP/EPOLLHUP/EPOLLERR seen: read on until recv(2) says 0 or fails (a
                     ///< failed connect says why in SO_ERROR)
  /// A session coroutine waiting for [0] readable or [1] writable. (Boost 1.81's
  /// any_completion_handler move-assignment is broken: only swap, construct and `= nullptr`.)
  asio::any_completion_handler<void(error_code)> waiter[2];

  /// Forgets everything but keeps the waiters' storage (empty by then).
  void reset(int new_fd) {
    fd = new_fd;
    key = 0;
    readable = writable = hup = false;
  }
};

/// recv(2) into [p, p + len). Sets `ec` to would_block (and clears `readable`), eof, or
/// the errno; a short read also clears `readable` unless the peer already half-closed.
std::size_t recv_some(stream& s, char* p, std::size_t len, error_code& ec) {
  for (;;) {
    ssize_t n = ::recv(s.fd, p, len, 0);
    if (n > 0) {
      ec.clear();
      if (static_cast<std::size_t>(n) < len && !s.hup) s.readable = false;
      return static_cast<std::size_t>(n);
    }
    if (n == 0) {
      ec = asio::error::eof;
      return 0;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      s.readable = false;
      ec = asio::error::would_block;
    } else {
      ec.assign(errno, boost::system::system_category());
    }
    return 0;
  }
}

/// send(2) of [p, p + len) without SIGPIPE. Sets `ec` to would_block (and clears
/// `writable`) or the errno; a partial write also clears `writable` (the buffer is full).
std::size_t send_some(stream& s, const char* p, std::size_t len, error_code& ec) {
  for (;;) {
    ssize_t n = ::send(s.fd, p, len, MSG_NOSIGNAL);
    if (n >= 0) {
      ec.clear();
      if (static_cast<std::size_t>(n) < len) s.writable = false;
      return static_cast<std::size_t>(n);
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      s.writable = false;
      ec = asio::error::would_block;
    } else {
      ec.assign(errno, boost::system::system_category());
    }
    return 0;
  }
}

/// Completes when `s` is readable (`dir` 0) or writable (1), with operation_aborted when
/// the connection's I/O is cancelled or the socket closed. Costs no system call: the
/// readiness loop reports the change (connection::on_ready).
template <typename Token>
auto async_ready(const asio::any_io_executor& ex, stream& s, int dir, Token&& token) {
  return asio::async_initiate<Token, void(error_code)>(
      [&s, dir, ex](auto handler) {
        if (s.fd < 0 || (dir == 0 ? s.readable : s.writable)) {
          error_code ec = s.fd < 0 ? error_code(asio::error::operation_aborted) : error_code();
          asio::post(ex, [h = std::move(handler), ec]() mutable { std::move(h)(ec); });
          return;
        }
        asio::any_completion_handler<void(error_code)>(std::move(handler)).swap(s.waiter[dir]);
      },
      token);
}

/// One client connection: both sockets, the session's or the relay's state, and the
/// deadline watchdog's.
///
/// Deadlines are lazy: `due` is the current phase's deadline (or, while relaying,
/// last_activity + idle), and the timer is only ever pulled earlier. When it fires before
/// `due` the watchdog re-arms it; a phase change therefore costs no timer operation
/// unless it brings the deadline forward.
struct connection final : ready_listener, std::enable_shared_from_this<connection> {
  connection(server_impl& o, readiness& l, asio::any_io_executor e) : owner(o), loop(l), ex(e), deadline(e) {
    deadline.expires_at(steady::time_point::max());
  }
  connection(const connection&) = delete;
  connection& operator=(const connection&) = delete;

  server_impl& owner;
  readiness& loop;
  asio::any_io_executor ex;
  stream client;    ///< readiness tag 0
  stream upstream;  ///< readiness tag 1
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
  // Index d: 1 = client -> upstream, 0 = upstream -> client.
  bool tunnel = false;     ///< the relay owns both sockets
  bool tunnel_ended = false;
  std::uint64_t id = 0;
  decision_record rec;
  steady::time_point start;
  bool done[2] = {false, false};      ///< EOF read and passed on
  bool bulk[2] = {false, false};      ///< a read filled the whole buffer: splice from now on
  std::vector<char> pending[2];       ///< copied bytes the sink did not take yet
  std::array<int, 2> pipe[2] = {{-1, -1}, {-1, -1}};  ///< splice pipe per direction, only while bytes are in it
  std::size_t in_pipe[2] = {0, 0};                    ///< bytes spliced in and not yet out

  ~connection() {
    for (stream* s : {&client, &upstream}) {
      for (auto& w : s->waiter) w = nullptr;  // nothing may run for a connection that is gone
      close_stream(*s);
    }
    for (int i = 0; i < 2; ++i)
      if (pipe[i][0] >= 0) pipes().give(pipe[i], in_pipe[i] == 0);
  }

  /// Adopts a connected or connecting non-blocking socket as `s` (tag 0 client, 1 upstream).
  bool attach(stream& s, int fd, error_code& ec) {
    s.reset(fd);
    s.key = loop.add(fd, *this, &s == &client ? 0 : 1, ec);
    if (s.key != 0) return true;
    ::close(fd);
    s.fd = -1;
    return false;
  }

  void on_ready(int tag, std::uint32_t events) override;

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
  /// Completes the session's pending waits with operation_aborted.
  void cancel_io() {
    cancel_waits(client);
    cancel_waits(upstream);
  }
  void cancel_waits(stream& s) {
    for (auto& w : s.waiter)
      if (w) {
        asio::post(ex, [h = std::move(w)]() mutable { std::move(h)(asio::error::operation_aborted); });
        w = nullptr;
      }
  }
  void close_stream(stream& s) {
    cancel_waits(s);
    if (s.fd < 0) return;
    loop.remove(s.key);
    ::close(s.fd);
    s.reset(-1);
  }
  void close() {
    closed = true;
    close_stream(client);
    close_stream(upstream);
    deadline.cancel();
  }
};

/// Reads what `s` has (at most `max` bytes, waiting until it is readable) and appends it
/// to `out`. The bytes land in the thread's relay buffer first (no suspension between the
/// recv and the append), so `out` grows by what arrived, not by a zero-filled chunk.
awaitable<error_code> read_into(connection& c, stream& s, std::string& out, std::size_t max) {
  for (;;) {
    if (!s.readable) {
      auto [wait_ec] = co_await async_ready(c.ex, s, 0, nothrow);
      if (wait_ec) co_return wait_ec;
    }
    auto& scratch = relay_buffer();
    error_code ec;
    std::size_t n = recv_some(s, scratch.data(), std::min(max, scratch.size()), ec);
    out.append(scratch.data(), n);
    if (ec == asio::error::would_block) continue;
    co_return ec;
  }
}

/// Writes all of `data` to `s`, waiting whenever its send buffer is full.
awaitable<error_code> write_all(connection& c, stream& s, std::string_view data) {
  while (!data.empty()) {
    if (s.fd < 0) co_return asio::error::operation_aborted;
    error_code ec;
    std::size_t n = send_some(s, data.data(), data.size(), ec);
    if (ec && ec != asio::error::would_block) co_return ec;
    data.remove_prefix(n);
    if (!data.empty() && !s.writable) {
      auto [wait_ec] = co_await async_ready(c.ex, s, 1, nothrow);
      if (wait_ec) co_return wait_ec;
    }
  }
  co_return error_code{};
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

class server_impl final : public std::enable_shared_from_this<server_impl>, public ready_listener {
public:
  server_impl(asio::io_context& io, server_options opts, common::config cfg)
      : io_(io), opts_(std::move(opts)), loop_(io), proxy_acceptor_(io), admin_acceptor_(io), signals_(io),
        drain_timer_(io), accept_backoff_(io) {
    snap_ = make_snapshot(std::move(cfg));
  }

  void start() {
    const auto& p = snap_->cfg.proxy;
    tcp::endpoint listen = opts_.listen.value_or(tcp::endpoint(asio::ip::make_address(p.listen_address), p.port));
    tcp::endpoint admin = opts_.admin.value_or(tcp::endpoint(asio::ip::make_address(p.admin_address), p.admin_port));
    open(proxy_acceptor_, listen, "proxy listener", "--listen");
    open(admin_acceptor_, admin, "admin listener", "--admin");
    // The proxy listener leaves Asio for the readiness loop. Accepted sockets inherit
    // TCP_NODELAY from it (Linux copies the option at accept), one setsockopt fewer each.
    error_code ec;
    proxy_acceptor_.set_option(tcp::no_delay(true), ec);
    listen_ep_ = proxy_acceptor_.local_endpoint();
    listen_fd_ = proxy_acceptor_.release();
    if (::fcntl(listen_fd_, F_SETFL, ::fcntl(listen_fd_, F_GETFL) | O_NONBLOCK) != 0 ||
        (listen_key_ = loop_.add(listen_fd_, *this, -1, ec)) == 0)
      throw std::runtime_error("cannot watch the proxy listener: " +
                               (ec ? ec.message() : error_code(errno, boost::system::system_category()).message()));
    signals_.add(SIGTERM);
    signals_.add(SIGINT);
    signals_.add(SIGHUP);
    wait_signal();
    auto self = shared_from_this();
    asio::co_spawn(io_, admin_loop(self), log_exception{"admin_loop"});
    std::string line = format_event_prefix("info", "listening");
    line += ",\"proxy\":";
    append_json_string(line, endpoint_text(listen_ep_));
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

  tcp::endpoint proxy_endpoint() const { return listen_ep_; }

  ~server_impl() {
    live_.clear();  // connections leave loop_ first
    if (listen_fd_ >= 0) ::close(listen_fd_);
  }
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
    stop_listening();
    log_event("info", "draining",
              std::to_string(live_.size()) + " connections open; grace " +
                  std::to_string(snap_->cfg.proxy.limits.drain_timeout.count()) + " ms");
    for (auto& [id, c] : live_)
      if (c->between_requests) c->close();  // the session sees its wait aborted and ends
    drain_timer_.expires_after(snap_->cfg.proxy.limits.drain_timeout);
    drain_timer_.async_wait([self = shared_from_this()](const error_code& e) {
      if (e) return;
      // Grace period over: close what is left and let each session write its decision
      // line (end "drain"); stop when they are gone, or after one more second at most.
      self->drain_forced_ = true;
      std::vector<std::shared_ptr<connection>> open;
      for (auto& [id, c] : self->live_) open.push_back(c);
      for (auto& c : open) {
        if (c->tunnel) {
          c->closed = true;
          self->relay_end(c);
        } else {
          c->close();
        }
      }
      if (self->stopped_) return;
      self->drain_timer_.expires_after(std::chrono::seconds(1));
      self->drain_timer_.async_wait([self](const error_code& e2) {
        if (!e2) self->finish_if_drained(true);
      });
      self->finish_if_drained(false);
    });
    finish_if_drained(false);
  }

  void on_ready(int, std::uint32_t) override { accept_ready(); }  // the proxy listener (tag -1)

  void stop_listening() {
    if (listen_fd_ < 0) return;
    loop_.remove(listen_key_);
    ::close(listen_fd_);
    listen_fd_ = -1;
    accept_backoff_.cancel();
  }

  void finish_if_drained(bool forced) {
    if (stopped_ || !draining_ || (!live_.empty() && !forced)) return;
    stopped_ = true;
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

  // The listener is readable: accept what is queued, at most a bounded number per turn
  // so that the other handlers run (edge-triggered: a new connection brings a new event,
  // the ones already queued do not, hence the post).
  void accept_ready() {
    constexpr int max_accepts_per_turn = 64;
    for (int i = 0; i < max_accepts_per_turn; ++i) {
      if (listen_fd_ < 0) return;
      sockaddr_storage peer{};
      socklen_t len = sizeof peer;
      int fd = ::accept4(listen_fd_, reinterpret_cast<sockaddr*>(&peer), &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK) return;
        if (errno == EINTR || errno == ECONNABORTED || errno == EPROTO) continue;
        // EMFILE/ENFILE/ENOBUFS/ENOMEM: back off instead of spinning on a listener that
        // stays readable; the timer retries (queued connections bring no new edge).
        log_event("warning", "accept_failed", error_code(errno, boost::system::system_category()).message());
        accept_backoff_.expires_after(std::chrono::milliseconds(100));
        accept_backoff_.async_wait([self = shared_from_this()](const error_code& ec) {
          if (!ec) self->accept_ready();
        });
        return;
      }
      accepted(fd, peer, len);
    }
    asio::post(io_, [self = shared_from_this()] { self->accept_ready(); });
  }

  void accepted(int fd, const sockaddr_storage& sa, socklen_t len) {
    tcp::endpoint peer;
    if (len <= peer.capacity()) {
      std::memcpy(peer.data(), &sa, len);
      peer.resize(len);
    }
    std::uint64_t id = next_id_++;
    if (static_cast<std::uint64_t>(metrics_.connections()) >= snap_->cfg.proxy.limits.max_connections) {
      decision_record rec;
      rec.conn = id;
      rec.client = endpoint_text(peer);
      rec.reason = "too_many_connections";
      rec.status = 503;
      std::string r = refusal(503, rec.reason);
      // Best effort: never wait on a client we cannot serve.
      [[maybe_unused]] ssize_t n = ::send(fd, r.data(), r.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
      ::close(fd);
      decided(rec, steady::now());
      return;
    }
    auto c = std::make_shared<connection>(*this, loop_, io_.get_executor());
    error_code ec;
    if (!c->attach(c->client, fd, ec)) {
      log_event("warning", "accept_failed", "epoll_ctl: " + ec.message());
      return;
    }
    c->id = id;
    live_.emplace(id, c);
    metrics_.connection_opened();
    watch(c);
    auto self = shared_from_this();
    asio::co_spawn(io_, session(self, c, id, endpoint_text(peer)), [self, c](std::exception_ptr e, bool handed_to_relay) {
      log_exception{"session"}(e);
      if (handed_to_relay && !e) return;  // the relay ends the connection
      self->end_connection(c);
    });
  }

  /// Fires when the phase deadline passes (or, while relaying, when nothing moved for
  /// `idle`): a session sees its wait aborted and `expired` set; a tunnel ends. A
  /// completion handler rather than a coroutine, so an idle tunnel keeps no frame for it.
  static void watch(std::shared_ptr<connection> c) {
    auto& timer = c->deadline;
    timer.async_wait([c = std::move(c)](const error_code&) {
      if (c->closed) return;
      auto now = steady::now();
      auto due = c->relaying ? c->last_activity + c->idle : c->due;
      if (now < due) {
        if (c->deadline.expiry() < due) c->deadline.expires_at(due);
      } else if (c->deadline.expiry() <= now) {
        c->expired = true;
        c->due = steady::time_point::max();
        c->deadline.expires_at(steady::time_point::max());
        if (c->tunnel) c->owner.relay_end(c);
        else c->cancel_io();
      }
      if (!c->closed) watch(c);
    });
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
      auto ec = co_await read_into(*c, c->client, buf, limits.max_header_bytes - buf.size());
      if (ec) {
        // A keep-alive connection that simply goes quiet is closed without a response.
        if (c->expired && (first || !buf.empty())) reason = "header_timeout";
        co_return 0;
      }
      c->between_requests = false;
    }
  }

  // Opens a non-blocking socket, connects it to `ep` and waits for the outcome: the
  // readiness loop reports EPOLLOUT on success, EPOLLERR (SO_ERROR says why) on failure.
  static awaitable<error_code> connect_upstream(connection& c, const tcp::endpoint& ep) {
    int fd = ::socket(ep.protocol().family(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) co_return error_code(errno, boost::system::system_category());
    int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (::connect(fd, ep.data(), static_cast<socklen_t>(ep.size())) != 0 && errno != EINPROGRESS) {
      error_code ec(errno, boost::system::system_category());
      ::close(fd);
      co_return ec;
    }
    // Registered only now: a socket that is not connecting yet polls as EPOLLHUP.
    error_code ec;
    if (!c.attach(c.upstream, fd, ec)) co_return ec;
    if (!c.upstream.writable) {
      auto [wait_ec] = co_await async_ready(c.ex, c.upstream, 1, nothrow);
      if (wait_ec) co_return wait_ec;
    }
    if (c.upstream.hup) {
      int err = 0;
      socklen_t len = sizeof err;
      if (::getsockopt(c.upstream.fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
      if (err != 0) co_return error_code(err, boost::system::system_category());
    }
    co_return error_code{};
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
      c->close_stream(c->upstream);
      c->arm(snap->cfg.proxy.limits.connect_timeout);
      rec->upstream = endpoint_text(ep);
      auto cec = co_await connect_upstream(*c, ep);
      if (!cec && !c->expired) {
        rec->connect_ms = ms_since(t0);
        self->metrics_.connect_latency(rec->connect_ms / 1000.0);
        co_return decision::allow();
      }
      last = c->expired ? "connect_timeout" : cec == asio::error::connection_refused ? "connect_refused" : "connect_failed";
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
    co_await write_all(*c, c->client, r);
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
      c->close_stream(c->upstream);
    }
  }

  static awaitable<bool> tunnel(std::shared_ptr<server_impl> self, std::shared_ptr<connection> c,
                                std::shared_ptr<const snapshot> snap, common::host host, std::string hello,
                                decision_record& rec, steady::time_point start) {
    const auto& p = snap->cfg.proxy;
    static constexpr std::string_view established = "HTTP/1.1 200 Connection established\r\n\r\n";
    c->arm(p.limits.client_hello_timeout);
    if (auto wec = co_await write_all(*c, c->client, established)) {
      rec.reason = "client_closed";
      self->decided(rec, start);
      co_return false;
    }
    // The ClientHello: bytes sent together with the CONNECT head come first.
    client_hello_parser parser(p.limits.max_client_hello_bytes);
    auto result = parser.feed(std::span(reinterpret_cast<const std::uint8_t*>(hello.data()), hello.size()));
    while (result.state == hello_state::need_more) {
      std::size_t before = hello.size();
      auto ec = co_await read_into(*c, c->client, hello, relay_buffer().size());
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
    if (auto fec = co_await write_all(*c, c->upstream, hello)) {
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
    c->tunnel = true;
    // Bytes may already wait on either socket (no new edge will say so): pump once.
    asio::post(self->io_, [self, c] { self->relay_ready(c); });
    co_return true;
  }

public:
  // The relay: no coroutine and no pending operation, so an idle tunnel is the connection
  // object alone (plus its registrations). Every readiness change of either socket pumps
  // both directions; a direction moves bytes while its source is readable and its sink
  // takes them. Small reads are copied through the thread's buffer (a short recv(2) also
  // says the socket is empty); once a read fills the buffer the direction switches to
  // splice(2) through a pooled pipe, which it holds only while bytes are in it.
  void relay_ready(const std::shared_ptr<connection>& c) {
    relay_pump(c, 1);
    relay_pump(c, 0);
  }

private:
  enum class flushed { empty, blocked, failed };

  // Writes what direction d still holds (copied bytes, then the pipe) to its sink.
  static flushed flush(connection& c, int d) {
    stream& to = d ? c.upstream : c.client;
    auto& pending = c.pending[d];
    if (pending.empty() && c.in_pipe[d] == 0) return flushed::empty;
    if (!to.writable) return flushed::blocked;  // its EPOLLOUT brings the relay back
    if (!pending.empty()) {
      error_code ec;
      std::size_t w = send_some(to, pending.data(), pending.size(), ec);
      if (ec && ec != asio::error::would_block) return flushed::failed;
      pending.erase(pending.begin(), pending.begin() + static_cast<std::ptrdiff_t>(w));
      if (!pending.empty()) return flushed::blocked;
      std::vector<char>().swap(pending);
    }
    while (c.in_pipe[d] > 0) {
      ssize_t w = ::splice(c.pipe[d][0], nullptr, to.fd, nullptr, c.in_pipe[d], SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
      if (w < 0 && errno == EINTR) continue;
      if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        to.writable = false;
        return flushed::blocked;
      }
      if (w <= 0) return flushed::failed;
      c.in_pipe[d] -= static_cast<std::size_t>(w);
    }
    return flushed::empty;
  }

  static void release_pipe(connection& c, int d) {
    if (c.pipe[d][0] < 0) return;
    pipes().give(c.pipe[d], c.in_pipe[d] == 0);
    c.pipe[d] = {-1, -1};
    c.in_pipe[d] = 0;
  }

  void relay_pump(const std::shared_ptr<connection>& c, int d) {
    if (c->tunnel_ended || c->done[d]) return;
    stream& from = d ? c->client : c->upstream;
    stream& to = d ? c->upstream : c->client;
    std::uint64_t& count = d ? c->bytes_up : c->bytes_down;
    constexpr int max_reads_per_wakeup = 16;  // one busy tunnel must not starve the others
    for (int i = 0; i < max_reads_per_wakeup; ++i) {
      switch (flush(*c, d)) {
        case flushed::failed: return relay_end(c, true);
        case flushed::blocked: return;
        case flushed::empty: break;
      }
      if (!from.readable) return release_pipe(*c, d);
      std::size_t n = 0;
      if (c->bulk[d] && c->pipe[d][0] < 0) c->pipe[d] = pipes().take();
      if (c->bulk[d] && c->pipe[d][0] >= 0) {
        ssize_t r = ::splice(from.fd, nullptr, c->pipe[d][1], nullptr, pipe_pool::capacity_bytes,
                             SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
          from.readable = false;
          return release_pipe(*c, d);
        }
        if (r < 0) return relay_end(c, true);
        if (r == 0) return relay_eof(c, d);
        n = static_cast<std::size_t>(r);
        c->in_pipe[d] += n;
      } else {
        // Copy (small reads, or no pipe to be had: descriptor limit).
        auto& buf = relay_buffer();
        error_code ec;
        n = recv_some(from, buf.data(), buf.size(), ec);
        if (ec == asio::error::would_block) return;
        if (ec == asio::error::eof) return relay_eof(c, d);
        if (ec) return relay_end(c, true);
        if (n == buf.size()) c->bulk[d] = true;
        std::size_t w = 0;
        if (to.writable) {
          w = send_some(to, buf.data(), n, ec);
          if (ec && ec != asio::error::would_block) return relay_end(c, true);
        }
        if (w < n) c->pending[d].assign(buf.data() + w, buf.data() + n);
      }
      count += n;
      c->last_activity = steady::now();
    }
    // The bound was reached: go on after the other handlers had their turn (bytes already
    // there bring no new edge).
    asio::post(io_, [self = shared_from_this(), c, d] { self->relay_pump(c, d); });
  }

  // Direction d read EOF: pass the half-close on; the other direction goes on. When it is
  // already done, the tunnel ends.
  void relay_eof(const std::shared_ptr<connection>& c, int d) {
    c->done[d] = true;
    release_pipe(*c, d);
    if (c->done[1 - d]) return relay_end(c);
    stream& to = d ? c->upstream : c->client;
    ::shutdown(to.fd, SHUT_WR);
  }

  // Ends the tunnel once: both sockets closed, the decision line written. `failed`: a
  // read or write error (a reset peer) rather than EOF both ways.
  void relay_end(const std::shared_ptr<connection>& c, bool failed = false) {
    if (c->tunnel_ended) return;
    c->tunnel_ended = true;
    metrics_.tunnel_closed();
    auto& rec = c->rec;
    rec.bytes_up = c->bytes_up;
    rec.bytes_down = c->bytes_down;
    rec.end = c->expired ? "idle_timeout" : c->closed ? "drain" : failed ? "error" : "eof";
    metrics_.bytes(c->bytes_up, c->bytes_down);
    decided(rec, c->start);
    end_connection(c);
  }

  // Copies exactly `n` body bytes from `from` to `to`, taking first from `pending`
  // (bytes already read); leftover pending bytes stay for the next message.
  static awaitable<bool> relay_length(std::shared_ptr<connection> c, stream& from, stream& to,
                                      std::uint64_t n, std::string& pending, std::uint64_t& count) {
    std::size_t first = static_cast<std::size_t>(std::min<std::uint64_t>(n, pending.size()));
    if (first > 0) {
      if (co_await write_all(*c, to, std::string_view(pending.data(), first))) co_return false;
      pending.erase(0, first);
      n -= first;
      count += first;
    }
    std::string chunk;
    while (n > 0) {
      chunk.clear();
      auto ec = co_await read_into(*c, from, chunk, static_cast<std::size_t>(std::min<std::uint64_t>(n, relay_buffer().size())));
      if (ec) co_return false;
      c->last_activity = steady::now();
      if (co_await write_all(*c, to, chunk)) co_return false;
      n -= chunk.size();
      count += chunk.size();
    }
    co_return true;
  }

  // Copies a chunked body until its last chunk and trailer; bytes after it stay in `pending`.
  static awaitable<bool> relay_chunked(std::shared_ptr<connection> c, stream& from, stream& to,
                                       std::string& pending, std::uint64_t& count) {
    chunked_scanner scan;
    std::size_t k = scan.feed(pending);
    if (scan.status() == chunked_scanner::state::error) co_return false;
    if (k > 0) {
      if (co_await write_all(*c, to, std::string_view(pending.data(), k))) co_return false;
      pending.erase(0, k);
      count += k;
    }
    std::string chunk;
    while (scan.status() == chunked_scanner::state::body) {
      chunk.clear();
      auto ec = co_await read_into(*c, from, chunk, relay_buffer().size());
      if (ec) co_return false;
      c->last_activity = steady::now();
      std::size_t used = scan.feed(chunk);
      if (scan.status() == chunked_scanner::state::error) co_return false;
      pending.append(chunk, used, std::string::npos);  // the next pipelined message
      chunk.resize(used);
      if (co_await write_all(*c, to, chunk)) co_return false;
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
    if (co_await write_all(*c, c->upstream, upstream_request)) co_return fail("error");
    if (expect_continue) {
      static constexpr std::string_view cont = "HTTP/1.1 100 Continue\r\n\r\n";
      co_await write_all(*c, c->client, cont);
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
        auto rec_ec = co_await read_into(*c, c->upstream, rbuf, limits.max_header_bytes - rbuf.size());
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
    if (co_await write_all(*c, c->client, head)) co_return fail("error");
    rec.status = resp->status;
    switch (resp->body) {
      case body_kind::none: break;
      case body_kind::length:
        ok = co_await relay_length(c, c->upstream, c->client, resp->content_length, rbuf, c->bytes_down);
        break;
      case body_kind::chunked: ok = co_await relay_chunked(c, c->upstream, c->client, rbuf, c->bytes_down); break;
      case body_kind::until_close: {
        if (!rbuf.empty()) {
          if (co_await write_all(*c, c->client, rbuf)) ok = false;
          c->bytes_down += rbuf.size();
        }
        std::string chunk;
        while (ok) {
          chunk.clear();
          auto e3 = co_await read_into(*c, c->upstream, chunk, relay_buffer().size());
          if (e3 == asio::error::eof) break;
          if (e3) {
            ok = false;
            break;
          }
          c->last_activity = steady::now();
          if (co_await write_all(*c, c->client, chunk)) ok = false;
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
      auto shared = std::make_shared<tcp::socket>(std::move(sock));
      asio::co_spawn(self->io_, admin_session(self, shared), log_exception{"admin_session"});
    }
  }

  // One admin request (Asio sockets: this is not the data path), 5 s at most.
  static awaitable<void> admin_session(std::shared_ptr<server_impl> self, std::shared_ptr<tcp::socket> shared) {
    tcp::socket& sock = *shared;
    asio::steady_timer deadline(self->io_, std::chrono::seconds(5));
    deadline.async_wait([weak = std::weak_ptr<tcp::socket>(shared)](const error_code& ec) {
      error_code ignored;
      if (auto s = weak.lock(); s && !ec) s->close(ignored);
    });
    std::string buf;
    while (find_head_end(buf) == 0 && buf.size() < 8192) {
      std::array<char, 1024> tmp;
      auto [ec, n] = co_await sock.async_read_some(asio::buffer(tmp), nothrow);
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
    co_await asio::async_write(sock, asio::buffer(out), nothrow);
  }

  asio::io_context& io_;
  server_options opts_;
  std::shared_ptr<const snapshot> snap_;
  readiness loop_;  // before live_: connections leave it when they are destroyed
  tcp::acceptor proxy_acceptor_;
  tcp::acceptor admin_acceptor_;
  asio::signal_set signals_;
  asio::steady_timer drain_timer_;
  asio::steady_timer accept_backoff_;
  tcp::endpoint listen_ep_;
  int listen_fd_ = -1;            ///< the proxy listener, on loop_ (tag -1)
  std::uint64_t listen_key_ = 0;
  metrics metrics_;
  bool draining_ = false;
  bool drain_forced_ = false;
  bool stopped_ = false;
  std::string log_batch_;
  bool log_flush_posted_ = false;
  std::uint64_t next_id_ = 1;
  std::unordered_map<std::uint64_t, std::shared_ptr<connection>> live_;
};

void connection::on_ready(int tag, std::uint32_t events) {
  stream& s = tag == 0 ? client : upstream;
  if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) s.readable = true;
  if (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) s.hup = true;
  if (events & (EPOLLOUT | EPOLLHUP | EPOLLERR)) s.writable = true;
  auto keep = shared_from_this();  // a completion may end the connection
  if (tunnel) return owner.relay_ready(keep);
  for (int dir = 0; dir < 2 && s.fd >= 0; ++dir) {
    if (!(dir == 0 ? s.readable : s.writable) || !s.waiter[dir]) continue;
    asio::any_completion_handler<void(error_code)> h;
    h.swap(s.waiter[dir]);
    std::move(h)(error_code{});
  }
}

server::server(asio::io_context& io, server_options opts, common::config cfg)
    : impl_(std::make_shared<server_impl>(io, std::move(opts), std::move(cfg))) {}

server::~server() = default;

void server::start() { impl_->start(); }
tcp::endpoint server::proxy_endpoint() const { return impl_->proxy_endpoint(); }
tcp::endpoint server::admin_endpoint() const { return impl_->admin_endpoint(); }

}  // namespace egress::proxy
