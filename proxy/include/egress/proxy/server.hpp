#pragma once
/// egress-proxy's server: the proxy listener (CONNECT and absolute-form HTTP/1.x), the
/// admin listener (/healthz, /readyz, /metrics), signals (SIGTERM drain, SIGHUP reload)
/// and the per-connection sessions.
///
/// Concurrency: everything runs on one io_context thread. The data path's sockets (the
/// proxy listener, every client and upstream connection) live on `readiness`, an
/// edge-triggered epoll set nested in the io_context: registered once, never re-armed,
/// accepted with accept4(SOCK_NONBLOCK), so a CONNECT transaction costs 19 system calls
/// where Asio's sockets cost 32 (strace -c under bench-loadgen rate). A session is a coroutine per client
/// connection up to the SNI check, holding a shared_ptr to the config snapshot of its
/// request, so a reload never changes a request in flight. An established tunnel is then
/// relayed without a coroutine or a pending operation: readiness events drive both
/// directions (small reads copied through a per-thread buffer, bulk through splice(2) and
/// a per-thread pipe pool), so an idle tunnel holds no frame, buffer or pipe: about 2 KiB.
/// The admin listener, timers, signals and c-ares stay on plain Asio.
///
/// Where each concern lives (proxy/src/): server.cpp (listeners, accept, the
/// live-connection table, signals, reload, drain), connection (sockets and waits),
/// session (a request from head to verdict), dial, relay (tunnels), http_forward (plain
/// HTTP), refusal, admin. This header is the only one main.cpp needs.

#include "egress/common/config.hpp"
#include "egress/proxy/metrics.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>

#include <memory>
#include <optional>
#include <string>

namespace egress::proxy {

/// Command-line overrides of the config's listen addresses.
struct server_options {
  std::string config_path;
  std::optional<boost::asio::ip::tcp::endpoint> listen;  ///< --listen ADDR:PORT (port 0: any free port)
  std::optional<boost::asio::ip::tcp::endpoint> admin;   ///< --admin ADDR:PORT
};

/// Parses "ADDR:PORT" or "[V6]:PORT" into an endpoint; nullopt when malformed.
std::optional<boost::asio::ip::tcp::endpoint> parse_endpoint(std::string_view text);

class server_impl;

/// The running proxy. Construct, `start()`, then run the io_context; `run()` returns when
/// a SIGTERM/SIGINT drain has finished.
class server {
public:
  /// Takes an already validated config. Throws boost::system::system_error when a
  /// listener cannot be bound (startup only).
  server(boost::asio::io_context& io, server_options opts, common::config cfg);
  ~server();
  server(const server&) = delete;
  server& operator=(const server&) = delete;

  /// Binds both listeners, logs a "listening" event naming the bound addresses (port 0
  /// resolved), installs signal handlers and starts accepting.
  void start();
  boost::asio::ip::tcp::endpoint proxy_endpoint() const;
  boost::asio::ip::tcp::endpoint admin_endpoint() const;

private:
  std::shared_ptr<server_impl> impl_;
};

}  // namespace egress::proxy
