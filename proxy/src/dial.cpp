// Resolve, filter, Happy Eyeballs connect (see dial.hpp). Opens the upstream socket; sends
// nothing on it.
#include "dial.hpp"

#include <boost/asio/steady_timer.hpp>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <sys/epoll.h>

#include <algorithm>
#include <cerrno>

namespace egress::proxy {
namespace {

using tcp = asio::ip::tcp;

std::string_view failure_reason(const error_code& ec) {
  return ec == asio::error::connection_refused ? "connect_refused" : "connect_failed";
}

/// The connection attempts of one dial (RFC 8305 §5), each a connecting non-blocking
/// socket registered with the readiness loop under this object (tag = attempt index).
/// The dial coroutine parks in the connection's `upstream.waiter[1]`, so the connection's
/// watchdog (the overall connect deadline) and close() (a forced drain) abort it as they
/// abort any other wait; an attempt's report or the stagger timer wakes it.
///
/// Lifetime: the dial coroutine owns the race (shared, so a report in flight keeps it);
/// the connection may be gone before the race is (a wake-up resumes the coroutine inline,
/// which may finish the whole connection), so the destructor touches only the loop.
class race final : public ready_listener, public std::enable_shared_from_this<race> {
public:
  struct attempt {
    int fd = -1;
    std::uint64_t key = 0;
    tcp::endpoint ep;
    bool reported = false;  ///< EPOLLOUT, EPOLLERR or EPOLLHUP: connected or failed
    bool hup = false;       ///< failed, or closed by the peer at once: SO_ERROR tells
    bool readable = false;  ///< bytes (or EOF) already waiting: the connection must know
  };

  explicit race(connection& c) : c_(c), loop_(c.loop), timer_(c.ex) {}
  race(const race&) = delete;
  race& operator=(const race&) = delete;
  ~race() {
    for (auto& a : attempts_) drop(a);
  }

  /// Opens a socket and starts connecting it to `ep`; an error when that fails at once
  /// (ENETUNREACH, EMFILE, ...).
  error_code start(const tcp::endpoint& ep) {
    int fd = ::socket(ep.protocol().family(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return error_code(errno, boost::system::system_category());
    int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (::connect(fd, ep.data(), static_cast<socklen_t>(ep.size())) != 0 && errno != EINPROGRESS) {
      error_code ec(errno, boost::system::system_category());
      ::close(fd);
      return ec;
    }
    // Registered only now: a socket that is not connecting yet polls as EPOLLHUP.
    attempt a;
    a.fd = fd;
    a.ep = ep;
    error_code ec;
    a.key = loop_.add(fd, *this, static_cast<int>(attempts_.size()), ec);
    if (a.key == 0) {
      ::close(fd);
      return ec;
    }
    attempts_.push_back(a);
    ++in_flight_;
    return {};
  }

  /// Arms the stagger timer: `due()` turns true after `d` (and the dial is woken).
  void stagger(std::chrono::milliseconds d) {
    due_ = false;
    timer_.expires_after(d);
    timer_.async_wait([weak = weak_from_this()](const error_code& ec) {
      if (ec) return;
      if (auto self = weak.lock()) {
        self->due_ = true;
        self->wake();
      }
    });
  }
  bool due() const noexcept { return due_; }
  std::size_t in_flight() const noexcept { return in_flight_; }

  /// Looks at every attempt that reported: the index of one that connected, or -1; a
  /// failed attempt is closed and its error stored in `last`.
  int settle(error_code& last) {
    for (std::size_t i = 0; i < attempts_.size(); ++i) {
      auto& a = attempts_[i];
      if (a.fd < 0 || !a.reported) continue;
      int err = 0;
      if (a.hup) {
        socklen_t len = sizeof err;
        if (::getsockopt(a.fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
      }
      if (err == 0) return static_cast<int>(i);
      last.assign(err, boost::system::system_category());
      drop(a);
    }
    return -1;
  }

  /// Hands attempt `i`'s socket (connected) to the connection as its upstream stream,
  /// with what the kernel reported so far; no system call.
  void hand_over(int i) {
    auto& a = attempts_[static_cast<std::size_t>(i)];
    stream& s = c_.upstream;
    s.reset(a.fd);
    s.key = a.key;
    s.writable = true;
    s.readable = a.readable;
    s.hup = a.hup;
    loop_.rebind(a.key, c_, 1);
    a.fd = -1;
    a.key = 0;
    --in_flight_;
  }

  const tcp::endpoint& endpoint(int i) const { return attempts_[static_cast<std::size_t>(i)].ep; }

  /// Completes when an attempt reported or the stagger timer fired since the last wait
  /// (at once if that happened already); operation_aborted when the connection's deadline
  /// passed or it was closed.
  template <typename Token>
  auto wait(Token&& token) {
    return asio::async_initiate<Token, void(error_code)>(
        [this](auto handler) {
          if (c_.closed || woken_) {
            error_code ec = c_.closed ? error_code(asio::error::operation_aborted) : error_code();
            woken_ = false;
            asio::post(c_.ex, [h = std::move(handler), ec]() mutable { std::move(h)(ec); });
            return;
          }
          asio::any_completion_handler<void(error_code)>(std::move(handler)).swap(c_.upstream.waiter[1]);
        },
        token);
  }

  void on_ready(int tag, std::uint32_t events) override {
    auto& a = attempts_[static_cast<std::size_t>(tag)];
    if (events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) a.reported = true;
    if (events & (EPOLLERR | EPOLLHUP | EPOLLRDHUP)) a.hup = true;
    if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) a.readable = true;
    auto keep = shared_from_this();  // the dial may finish (and drop this race) inside wake()
    wake();
  }  // ~race may run here, after the connection: it uses loop_ only

private:
  void wake() {
    woken_ = true;
    auto& w = c_.upstream.waiter[1];
    if (!w) return;
    woken_ = false;
    asio::any_completion_handler<void(error_code)> h;
    h.swap(w);
    std::move(h)(error_code{});
  }

  void drop(attempt& a) noexcept {
    if (a.fd < 0) return;
    loop_.remove(a.key);
    ::close(a.fd);
    a.fd = -1;
    a.key = 0;
    --in_flight_;
  }

  connection& c_;    ///< only while the dial coroutine runs (see the class comment)
  readiness& loop_;  ///< outlives every connection and race
  asio::steady_timer timer_;
  std::vector<attempt> attempts_;
  std::size_t in_flight_ = 0;
  bool due_ = false;
  bool woken_ = false;
};

}  // namespace

std::vector<asio::ip::address> attempt_order(const std::vector<asio::ip::address>& addresses) {
  if (addresses.empty()) return {};
  std::vector<asio::ip::address> first, second, out;
  const bool v6_first = addresses.front().is_v6();
  for (const auto& a : addresses) (a.is_v6() == v6_first ? first : second).push_back(a);
  out.reserve(addresses.size());
  for (std::size_t i = 0; i < std::max(first.size(), second.size()); ++i) {
    if (i < first.size()) out.push_back(first[i]);
    if (i < second.size()) out.push_back(second[i]);
  }
  return out;
}

asio::awaitable<decision> dial(proxy_context& ctx, std::shared_ptr<connection> c, std::shared_ptr<const snapshot> snap,
                               common::host host, std::uint16_t port, decision_record* rec) {
  std::vector<asio::ip::address> addresses;
  if (host.is_ip()) {
    addresses.push_back(host.address);
  } else {
    auto t0 = steady::now();
    auto answer = co_await snap->dns->resolve(host.text);
    rec->dns_ms = ms_since(t0);
    ctx.stats().dns_latency(rec->dns_ms / 1000.0);
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
  const auto order = attempt_order(filtered.allowed);
  auto t0 = steady::now();
  c->close_stream(c->upstream);
  c->arm(snap->cfg.proxy.limits.connect_timeout);  // one deadline for every attempt together
  auto r = std::make_shared<race>(*c);
  error_code last = asio::error::connection_refused;
  std::size_t next = 0;
  bool timed_out = false;
  for (;;) {
    // Start the next attempt when none is running, or when the running ones had their
    // Connection Attempt Delay.
    while (next < order.size() && (r->in_flight() == 0 || r->due())) {
      tcp::endpoint ep(order[next++], port);
      rec->upstream = endpoint_text(ep);
      if (auto ec = r->start(ep)) {
        last = ec;
        continue;
      }
      if (next < order.size()) r->stagger(attempt_delay);
      break;
    }
    if (int won = r->settle(last); won >= 0) {
      r->hand_over(won);
      c->upstream_address = r->endpoint(won).address();
      rec->upstream = endpoint_text(r->endpoint(won));
      rec->connect_ms = ms_since(t0);
      ctx.stats().connect_latency(rec->connect_ms / 1000.0);
      co_return decision::allow();
    }
    if (r->in_flight() == 0) {
      if (next < order.size()) continue;  // a failure starts the next attempt at once
      break;
    }
    auto [wait_ec] = co_await r->wait(nothrow);
    if (wait_ec) {
      timed_out = c->expired;
      break;
    }
  }
  rec->connect_ms = ms_since(t0);
  co_return decision::deny(timed_out ? std::string_view("connect_timeout") : failure_reason(last));
}

}  // namespace egress::proxy
