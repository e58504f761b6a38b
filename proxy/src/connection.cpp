// One connection's sockets: recv/send primitives, readiness delivery to waiting
// coroutines or to the relay, the deadline watchdog. Moves bytes only when told to by a
// session or the relay; decides nothing (see connection.hpp).
#include "connection.hpp"

#include "relay.hpp"

#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

namespace egress::proxy {

std::array<char, 64 * 1024>& relay_buffer() {
  thread_local std::array<char, 64 * 1024> buffer;
  return buffer;
}

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

connection::~connection() {
  for (stream* s : {&client, &upstream}) {
    for (auto& w : s->waiter) w = nullptr;  // nothing may run for a connection that is gone
    close_stream(*s);
  }
  release_tunnel_pipes(pump);
}

bool connection::attach(stream& s, int fd, error_code& ec) {
  s.reset(fd);
  s.key = loop.add(fd, *this, &s == &client ? 0 : 1, ec);
  if (s.key != 0) return true;
  ::close(fd);
  s.fd = -1;
  return false;
}

void connection::cancel_waits(stream& s) {
  for (auto& w : s.waiter)
    if (w) {
      asio::post(ex, [h = std::move(w)]() mutable { std::move(h)(asio::error::operation_aborted); });
      w = nullptr;
    }
}

void connection::close_stream(stream& s) {
  cancel_waits(s);
  if (s.fd < 0) return;
  loop.remove(s.key);
  ::close(s.fd);
  s.reset(-1);
}

void connection::on_ready(int tag, std::uint32_t events) {
  stream& s = tag == 0 ? client : upstream;
  if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) s.readable = true;
  if (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) s.hup = true;
  if (events & (EPOLLOUT | EPOLLHUP | EPOLLERR)) s.writable = true;
  auto keep = shared_from_this();  // a completion may end the connection
  if (tunnel) return relay_ready(owner, keep);
  for (int dir = 0; dir < 2 && s.fd >= 0; ++dir) {
    if (!(dir == 0 ? s.readable : s.writable) || !s.waiter[dir]) continue;
    asio::any_completion_handler<void(error_code)> h;
    h.swap(s.waiter[dir]);
    std::move(h)(error_code{});
  }
}

void watch(std::shared_ptr<connection> c) {
  auto& timer = c->deadline;
  timer.async_wait([c = std::move(c)](const error_code&) {
    if (c->closed) return;
    auto now = steady::now();
    auto due = c->relaying ? std::min(c->last_activity + c->idle, c->lifetime_due) : c->due;
    if (now < due) {
      if (c->deadline.expiry() < due) c->deadline.expires_at(due);
    } else if (c->deadline.expiry() <= now) {
      c->due = steady::time_point::max();
      c->deadline.expires_at(steady::time_point::max());
      if (c->tunnel && now >= c->lifetime_due) {
        c->end_cause = "max_lifetime";
      } else {
        c->expired = true;
      }
      if (c->tunnel) relay_end(c->owner, c);
      else c->cancel_io();
    }
    if (!c->closed) watch(c);
  });
}

asio::awaitable<error_code> read_into(connection& c, stream& s, std::string& out, std::size_t max) {
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

asio::awaitable<error_code> write_all(connection& c, stream& s, std::string_view data) {
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

void log_exception::operator()(std::exception_ptr e) const {
  if (!e) return;
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& ex) {
    log_event("error", "exception", std::string(where) + ": " + ex.what());
  }
}

}  // namespace egress::proxy
