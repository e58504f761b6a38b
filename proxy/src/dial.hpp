#pragma once
/// Dialling a judged target: resolution through the snapshot's resolver (unless the host
/// is an IP literal), the address filter, then non-blocking connects to the addresses that
/// passed, in order, each under the connect timeout. The first that connects becomes the
/// connection's upstream socket.
///
/// Dial never decides whether a host or port is allowed (session does, through acl) and
/// never writes to a socket it opened; it only fills the decision record's timing and
/// upstream fields.

#include "connection.hpp"

#include "egress/common/host_name.hpp"
#include "egress/proxy/acl.hpp"

#include <boost/asio/awaitable.hpp>

#include <cstdint>
#include <memory>

namespace egress::proxy {

/// Resolves `host`, filters the addresses by the snapshot's address policy and connects
/// `c->upstream` to the first allowed address that answers on `port`. On success the
/// upstream socket is open and registered; otherwise the refusal reason is returned:
/// the resolver's ("dns_not_found", "dns_timeout", "dns_failure", ...), the filter's
/// ("address_denied", "address_not_allowed"), or the last connect failure
/// ("connect_timeout", "connect_refused", "connect_failed"). Sets rec->dns_ms,
/// rec->connect_ms and rec->upstream (the address dialled or first refused).
boost::asio::awaitable<decision> dial(proxy_context& ctx, std::shared_ptr<connection> c,
                                      std::shared_ptr<const snapshot> snap, common::host host, std::uint16_t port,
                                      decision_record* rec);

}  // namespace egress::proxy
