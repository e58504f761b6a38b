#pragma once
/// The admin endpoints on their own listener: GET /healthz (200 while the process serves),
/// GET /readyz (200, or 503 once draining), GET /metrics (Prometheus text format 0.0.4);
/// 404 for anything else. Plain Asio sockets: this is not the data path. One request per
/// connection, 8 KiB head and 5 s at most.
///
/// Admin reads the server's state (draining, metrics) and changes nothing.

#include "context.hpp"

#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>

#include <memory>

namespace egress::proxy {

/// Accepts admin connections on `acceptor` (open and listening, owned by the server that
/// `ctx` keeps alive) until it is closed; each is served by its own coroutine.
boost::asio::awaitable<void> admin_loop(std::shared_ptr<proxy_context> ctx, boost::asio::ip::tcp::acceptor& acceptor);

}  // namespace egress::proxy
