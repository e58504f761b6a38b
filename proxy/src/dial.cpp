// Resolve, filter, connect (see dial.hpp). Opens the upstream socket; sends nothing on it.
#include "dial.hpp"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>

namespace egress::proxy {
namespace {

using tcp = asio::ip::tcp;

// Opens a non-blocking socket, connects it to `ep` and waits for the outcome: the
// readiness loop reports EPOLLOUT on success, EPOLLERR (SO_ERROR says why) on failure.
asio::awaitable<error_code> connect_upstream(connection& c, const tcp::endpoint& ep) {
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

}  // namespace

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
  std::string_view last = "connect_failed";
  auto t0 = steady::now();
  for (const auto& a : filtered.allowed) {
    tcp::endpoint ep(a, port);
    c->close_stream(c->upstream);
    c->arm(snap->cfg.proxy.limits.connect_timeout);
    rec->upstream = endpoint_text(ep);
    auto cec = co_await connect_upstream(*c, ep);
    if (!cec && !c->expired) {
      c->upstream_address = a;
      rec->connect_ms = ms_since(t0);
      ctx.stats().connect_latency(rec->connect_ms / 1000.0);
      co_return decision::allow();
    }
    last = c->expired ? "connect_timeout" : cec == asio::error::connection_refused ? "connect_refused" : "connect_failed";
  }
  rec->connect_ms = ms_since(t0);
  co_return decision::deny(last);
}

}  // namespace egress::proxy
