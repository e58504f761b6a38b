#pragma once
/// A session: one client connection of the proxy listener from its first byte to a
/// verdict. It reads the request head (size and time bounded), parses it, runs the
/// decision pipeline (`admit`: allowlist, then resolve, filter and dial) and then either
/// refuses, forwards a plain-HTTP request (http_forward), or answers a CONNECT with 200,
/// checks the tunnel's ClientHello against the CONNECT host and hands the connection to
/// the relay.
///
/// A session never touches a socket's descriptor directly (connection's primitives do)
/// and keeps no state past its connection; it never parses bytes after the ClientHello.

#include "connection.hpp"

#include "egress/common/host_name.hpp"
#include "egress/proxy/acl.hpp"
#include "egress/proxy/request_head.hpp"

#include <boost/asio/awaitable.hpp>

#include <cstdint>
#include <memory>
#include <string>

namespace egress::proxy {

/// The decision pipeline every entry path shares, after the request's target is known:
/// the allowlist (check_target: host, then port), then dial (resolution, address filter,
/// connect). On `allowed` the connection's upstream socket is connected to a checked
/// address; otherwise the reason to refuse with. Fills `rec`'s dns/connect/upstream fields.
boost::asio::awaitable<decision> admit(proxy_context& ctx, const std::shared_ptr<connection>& c,
                                       const std::shared_ptr<const snapshot>& snap, const common::host& host,
                                       std::uint16_t port, decision_record& rec);

/// Judges established tunnel `c` again under `snap` (after a reload): its CONNECT host
/// and port against the allowlist (check_target), the address it dialled against the
/// address policy (filter_addresses). The reasons are theirs.
decision rejudge_tunnel(const snapshot& snap, const connection& c);

/// Serves client connection `c` (`id` for the log, `client` its "ADDR:PORT"): requests
/// one after another while the client keeps the connection alive. `where`: the proxy
/// listener (CONNECT and absolute-form) or a transparent HTTP listener (origin-form,
/// routed by Host, on `where.listener_port`). Returns true when an established tunnel was
/// handed to the relay, which then owns the connection; false when the caller ends it.
boost::asio::awaitable<bool> session(std::shared_ptr<proxy_context> ctx, std::shared_ptr<connection> c, std::uint64_t id,
                                     std::string client, head_context where = {});

/// Serves a connection of a transparent TLS listener on `port` (capture dns/both: the
/// client resolved an allowlisted name to the proxy and speaks TLS to it as to the
/// origin). The first bytes must be a ClientHello; its SNI is the target: the same hello
/// checks as in a CONNECT tunnel (ECH, one host_name), then `admit` (allowlist for
/// SNI:port, resolution, address filter, dial), the hello upstream and the relay. No SNI,
/// not TLS, or not allowed: closed before a byte goes upstream, with a decision line
/// (method "TLS", no HTTP status). Returns as `session` does.
boost::asio::awaitable<bool> sni_session(std::shared_ptr<proxy_context> ctx, std::shared_ptr<connection> c,
                                         std::uint64_t id, std::string client, std::uint16_t port);

}  // namespace egress::proxy
