// The admin listener's request handling (see admin.hpp). Reads state, changes none.
#include "admin.hpp"

#include "connection.hpp"
#include "refusal.hpp"

#include "egress/proxy/request_head.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>

#include <array>

namespace egress::proxy {
namespace {

using tcp = asio::ip::tcp;

// One admin request (Asio sockets: this is not the data path), 5 s at most.
asio::awaitable<void> admin_session(std::shared_ptr<proxy_context> self, std::shared_ptr<tcp::socket> shared) {
  tcp::socket& sock = *shared;
  asio::steady_timer deadline(self->io(), std::chrono::seconds(5));
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
    status = self->draining() ? 503 : 200;
    body = self->draining() ? "draining\n" : "ready\n";
  } else if (line == "GET /metrics HTTP/1.1" || line == "GET /metrics HTTP/1.0") {
    status = 200;
    body = self->stats().render();
    type = "text/plain; version=0.0.4; charset=utf-8";
  }
  std::string out = "HTTP/1.1 " + std::to_string(status) + " " + std::string(reason_phrase(status == 503 ? 503 : status)) +
                    "\r\nContent-Type: " + type + "\r\nContent-Length: " + std::to_string(body.size()) +
                    "\r\nConnection: close\r\n\r\n" + body;
  co_await asio::async_write(sock, asio::buffer(out), nothrow);
}

}  // namespace

asio::awaitable<void> admin_loop(std::shared_ptr<proxy_context> self, tcp::acceptor& acceptor) {
  for (;;) {
    auto [ec, sock] = co_await acceptor.async_accept(nothrow);
    if (!acceptor.is_open() || ec == asio::error::operation_aborted) co_return;
    if (ec) {
      asio::steady_timer t(self->io(), std::chrono::milliseconds(100));
      co_await t.async_wait(nothrow);
      continue;
    }
    auto shared = std::make_shared<tcp::socket>(std::move(sock));
    asio::co_spawn(self->io(), admin_session(self, shared), log_exception{"admin_session"});
  }
}

}  // namespace egress::proxy
