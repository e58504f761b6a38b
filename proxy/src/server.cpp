// egress-proxy's server: listeners and accept, the live-connection table, signals,
// reload (config snapshots) and drain. It owns the other rooms' lifetimes (connections,
// the readiness loop, metrics, the decision log) and nothing else: requests are served by
// session, tunnels by relay, plain HTTP by http_forward, /metrics by admin.
#include "egress/proxy/server.hpp"

#include "admin.hpp"
#include "connection.hpp"
#include "context.hpp"
#include "dns_responder.hpp"
#include "refusal.hpp"
#include "relay.hpp"
#include "session.hpp"

#include "egress/proxy/log.hpp"
#include "egress/proxy/readiness.hpp"
#include "egress/proxy/resolver.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/ip/v6_only.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>

#include <openssl/evp.h>

#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <algorithm>
#include <set>
#include <unordered_map>
#include <vector>

namespace egress::proxy {

using tcp = asio::ip::tcp;

namespace {

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

class server_impl final : public proxy_context, public std::enable_shared_from_this<server_impl>, public ready_listener {
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
    watch_listener(proxy_acceptor_, entry::proxy, "proxy listener");
    if (p.transparent_capture()) {
      open_transparent(p);
      dns_ = std::make_unique<dns_responder>(*this);
      dns_->start(asio::ip::make_address(p.dns.listen_address), p.dns.port);  // throws naming address and port
    }
    signals_.add(SIGTERM);
    signals_.add(SIGINT);
    signals_.add(SIGHUP);
    wait_signal();
    auto self = shared_from_this();
    asio::co_spawn(io_, admin_loop(self, admin_acceptor_), log_exception{"admin_loop"});
    std::string line = format_event_prefix("info", "listening");
    line += ",\"proxy\":";
    append_json_string(line, endpoint_text(listeners_[0].ep));
    line += ",\"capture\":";
    append_json_string(line, common::to_string(p.capture));
    if (listeners_.size() > 1) {
      line += ",\"transparent\":[";
      for (std::size_t i = 1; i < listeners_.size(); ++i) {
        if (i > 1) line += ',';
        append_json_string(line, endpoint_text(listeners_[i].ep) + (listeners_[i].kind == entry::tls ? " tls" : " http"));
      }
      line += ']';
    }
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

  tcp::endpoint proxy_endpoint() const { return listeners_[0].ep; }

  ~server_impl() {
    live_.clear();  // connections leave loop_ first
    for (auto& l : listeners_)
      if (l.fd >= 0) ::close(l.fd);
  }
  tcp::endpoint admin_endpoint() const { return admin_acceptor_.local_endpoint(); }

  // proxy_context
  std::shared_ptr<proxy_context> share() override { return shared_from_this(); }
  asio::io_context& io() noexcept override { return io_; }
  readiness& loop() noexcept override { return loop_; }
  metrics& stats() noexcept override { return metrics_; }
  std::shared_ptr<const snapshot> current() const noexcept override { return snap_; }
  bool draining() const noexcept override { return draining_; }
  void end_connection(const std::shared_ptr<connection>& c) override {
    c->close();
    if (live_.erase(c->id) > 0) metrics_.connection_closed();
    finish_if_drained(false);
  }

private:
  /// What a data-path listener takes: the proxy protocol (CONNECT, absolute-form) or,
  /// with capture dns/both, TLS routed by SNI or plain HTTP routed by Host.
  enum class entry { proxy, tls, http };
  struct listener {
    int fd = -1;
    std::uint64_t key = 0;  ///< on loop_, tag -1 - index
    tcp::endpoint ep;
    entry kind = entry::proxy;
  };

  // Moves an open, listening acceptor onto the readiness loop. Accepted sockets inherit
  // TCP_NODELAY from it (Linux copies the option at accept), one setsockopt fewer each.
  void watch_listener(tcp::acceptor& a, entry kind, const char* what) {
    error_code ec;
    a.set_option(tcp::no_delay(true), ec);
    listener l;
    l.ep = a.local_endpoint();
    l.kind = kind;
    l.fd = a.release();
    const int tag = -1 - static_cast<int>(listeners_.size());
    if (::fcntl(l.fd, F_SETFL, ::fcntl(l.fd, F_GETFL) | O_NONBLOCK) != 0 || (l.key = loop_.add(l.fd, *this, tag, ec)) == 0) {
      std::string why = ec ? ec.message() : error_code(errno, boost::system::system_category()).message();
      ::close(l.fd);
      throw std::runtime_error(std::string("cannot watch the ") + what + ": " + why);
    }
    listeners_.push_back(l);
  }

  // capture dns/both: a listener on every allowlisted port of the config at start-up
  // (a reload does not add or remove listeners): http_ports take plain HTTP, the others TLS.
  void open_transparent(const common::proxy_settings& p) {
    std::set<std::uint16_t> ports;
    for (const auto& e : snap_->cfg.allowlist) ports.insert(e.ports.begin(), e.ports.end());
    const auto address = asio::ip::make_address(p.transparent.listen_address);
    for (auto port : ports) {
      const bool http = std::find(p.transparent.http_ports.begin(), p.transparent.http_ports.end(), port) !=
                        p.transparent.http_ports.end();
      tcp::acceptor a(io_);
      tcp::endpoint ep(address, port);
      if (auto ec = bind_and_listen(a, ep)) {
        std::string hint = port < 1024 && ec == asio::error::access_denied
                               ? "; ports below 1024 need the pod sysctl net.ipv4.ip_unprivileged_port_start=0 "
                                 "(or CAP_NET_BIND_SERVICE)"
                               : "";
        throw std::runtime_error("cannot listen on " + endpoint_text(ep) + " (transparent " + (http ? "HTTP" : "TLS") +
                                 " listener for allowlisted port " + std::to_string(port) + "): " + ec.message() + hint +
                                 "; set proxy.transparent.listen_address or capture: env");
      }
      watch_listener(a, http ? entry::http : entry::tls, "transparent listener");
    }
  }

  // Opens `a` on `ep` (SO_REUSEADDR; an IPv6 address takes IPv4 too) and listens.
  static error_code bind_and_listen(tcp::acceptor& a, const tcp::endpoint& ep) {
    error_code ec;
    a.open(ep.protocol(), ec);
    if (!ec) a.set_option(tcp::acceptor::reuse_address(true), ec);
    if (!ec && ep.address().is_v6()) a.set_option(asio::ip::v6_only(false), ec);
    if (!ec) a.bind(ep, ec);
    if (!ec) a.listen(asio::socket_base::max_listen_connections, ec);
    return ec;
  }

  static void open(tcp::acceptor& a, const tcp::endpoint& ep, const char* what, const char* flag) {
    if (auto ec = bind_and_listen(a, ep))
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
    log_init(snap_->cfg.proxy.log.buffer_bytes);  // a new buffer size applies now
    revoke_tunnels();
    log_event("info", "reloaded", opts_.config_path + " sha256 " + file_sha256(opts_.config_path) + ": " +
                                      std::to_string(snap_->cfg.allowlist.size()) +
                                      " allowlist entries (listen addresses apply at restart)");
  }

  // After a successful reload: established tunnels the new config no longer allows
  // (host, port or dialled address) are closed, end "revoked"; the others keep running.
  void revoke_tunnels() {
    std::vector<std::shared_ptr<connection>> revoked;
    for (auto& [id, c] : live_)
      if (c->tunnel && !c->pump.ended && !rejudge_tunnel(*snap_, *c).allowed) revoked.push_back(c);
    for (auto& c : revoked) {
      c->end_cause = "revoked";
      relay_end(*this, c);
    }
    if (!revoked.empty())
      log_event("info", "tunnels_revoked",
                std::to_string(revoked.size()) + " established tunnel(s) no longer allowed by the new configuration closed");
  }

  void begin_drain() {
    if (draining_) return;
    draining_ = true;
    stop_listening();
    if (dns_) dns_->stop();
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
          relay_end(*self, c);
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

  void on_ready(int tag, std::uint32_t) override { accept_ready(static_cast<std::size_t>(-1 - tag)); }  // listeners

  void stop_listening() {
    for (auto& l : listeners_) {
      if (l.fd < 0) continue;
      loop_.remove(l.key);
      ::close(l.fd);
      l.fd = -1;
    }
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
  void decided(decision_record& rec, steady::time_point start) override {
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
  void accept_ready(std::size_t index) {
    constexpr int max_accepts_per_turn = 64;
    for (int i = 0; i < max_accepts_per_turn; ++i) {
      const listener& l = listeners_[index];
      if (l.fd < 0) return;
      sockaddr_storage peer{};
      socklen_t len = sizeof peer;
      int fd = ::accept4(l.fd, reinterpret_cast<sockaddr*>(&peer), &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK) return;
        if (errno == EINTR || errno == ECONNABORTED || errno == EPROTO) continue;
        // EMFILE/ENFILE/ENOBUFS/ENOMEM: back off instead of spinning on a listener that
        // stays readable; the timer retries (queued connections bring no new edge).
        log_event("warning", "accept_failed", error_code(errno, boost::system::system_category()).message());
        accept_backoff_.expires_after(std::chrono::milliseconds(100));
        accept_backoff_.async_wait([self = shared_from_this()](const error_code& ec) {
          if (ec) return;
          for (std::size_t k = 0; k < self->listeners_.size(); ++k) self->accept_ready(k);
        });
        return;
      }
      accepted(fd, peer, len, l);
    }
    asio::post(io_, [self = shared_from_this(), index] { self->accept_ready(index); });
  }

  void accepted(int fd, const sockaddr_storage& sa, socklen_t len, const listener& from) {
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
      if (from.kind != entry::tls) {  // a TLS client would read an HTTP answer as garbage
        std::string r = refusal(503, rec.reason);
        // Best effort: never wait on a client we cannot serve.
        [[maybe_unused]] ssize_t n = ::send(fd, r.data(), r.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
      }
      ::close(fd);
      decided(rec, steady::now());
      return;
    }
    auto c = std::make_shared<connection>(*this, io_.get_executor());
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
    auto done = [self, c](std::exception_ptr e, bool handed_to_relay) {
      log_exception{"session"}(e);
      if (handed_to_relay && !e) return;  // the relay ends the connection
      self->end_connection(c);
    };
    switch (from.kind) {
      case entry::proxy: asio::co_spawn(io_, session(self, c, id, endpoint_text(peer)), std::move(done)); break;
      case entry::tls: asio::co_spawn(io_, sni_session(self, c, id, endpoint_text(peer), from.ep.port()), std::move(done)); break;
      case entry::http:
        asio::co_spawn(io_, session(self, c, id, endpoint_text(peer), head_context{true, from.ep.port()}), std::move(done));
        break;
    }
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
  std::vector<listener> listeners_;  ///< [0] the proxy listener, then the transparent ones
  metrics metrics_;
  std::unique_ptr<dns_responder> dns_;  ///< capture dns/both: the allowlisting DNS responder
  bool draining_ = false;
  bool drain_forced_ = false;
  bool stopped_ = false;
  std::string log_batch_;
  bool log_flush_posted_ = false;
  std::uint64_t next_id_ = 1;
  std::unordered_map<std::uint64_t, std::shared_ptr<connection>> live_;
};

server::server(asio::io_context& io, server_options opts, common::config cfg)
    : impl_(std::make_shared<server_impl>(io, std::move(opts), std::move(cfg))) {}

server::~server() = default;

void server::start() { impl_->start(); }
tcp::endpoint server::proxy_endpoint() const { return impl_->proxy_endpoint(); }
tcp::endpoint server::admin_endpoint() const { return impl_->admin_endpoint(); }

}  // namespace egress::proxy
