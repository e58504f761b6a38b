#pragma once
/// The relay: an established tunnel's byte pump between client and upstream, after the
/// session has allowed it. No coroutine and no pending operation, so an idle tunnel is
/// the connection object alone (plus its registrations). Every readiness change of either
/// socket pumps both directions; a direction moves bytes while its source is readable and
/// its sink takes them. Small reads are copied through the thread's buffer (a short
/// recv(2) also says the socket is empty); once a read fills the buffer the direction
/// switches to splice(2) through a pooled pipe, which it holds only while bytes are in it.
/// Backpressure: bytes wait in the direction's pending buffer or pipe until EPOLLOUT.
/// Half-close is passed on (shutdown(SHUT_WR)); the tunnel ends when both directions have
/// read EOF, on an error, an idle timeout or a forced drain, with one decision line.
///
/// The relay never judges what it moves and never opens a socket.

#include "connection.hpp"

#include <memory>

namespace egress::proxy {

/// Hands `c` (client and upstream connected, the decision record filled in `c->rec`,
/// `c->start` set) to the relay: counts the tunnel, arms the idle deadline `idle` and the
/// lifetime limit `lifetime` (0: none) and pumps once (bytes may already wait on either
/// socket). From here the relay ends the connection.
void relay_begin(proxy_context& ctx, const std::shared_ptr<connection>& c, std::chrono::milliseconds idle,
                 std::chrono::milliseconds lifetime);

/// A readiness change of either socket of tunnel `c`: pumps both directions.
void relay_ready(proxy_context& ctx, const std::shared_ptr<connection>& c);

/// Ends tunnel `c` once: both sockets closed, bytes counted, the decision line written
/// with `end` = c->end_cause when the server set one ("revoked", "max_lifetime"),
/// idle_timeout (c->expired), drain (c->closed), error (`failed`: a read or write error,
/// a reset peer) or eof; then the connection leaves the live table.
void relay_end(proxy_context& ctx, const std::shared_ptr<connection>& c, bool failed = false);

/// Gives the tunnel's splice pipes back to the thread's pool (a pipe with bytes left in it
/// is closed instead). Called when a connection is destroyed.
void release_tunnel_pipes(tunnel_state& t) noexcept;

}  // namespace egress::proxy
