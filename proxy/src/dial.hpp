#pragma once
/// Dialling a judged target: resolution through the snapshot's resolver (unless the host
/// is an IP literal), the address filter, then Happy Eyeballs v2 over the addresses that
/// passed (RFC 8305 §5): non-blocking connects started `attempt_delay` (250 ms) apart, the
/// next one at once when an attempt fails, the families interleaved, every attempt under
/// one overall deadline (connect_timeout_ms for the whole dial, not per address). The first
/// attempt that connects becomes the connection's upstream socket; the others are closed.
///
/// Dial never decides whether a host or port is allowed (session does, through acl) and
/// never writes to a socket it opened; it only fills the decision record's timing and
/// upstream fields.

#include "connection.hpp"

#include "egress/common/host_name.hpp"
#include "egress/proxy/acl.hpp"

#include <boost/asio/awaitable.hpp>

#include <boost/asio/ip/address.hpp>

#include <chrono>
#include <cstdint>
#include <memory>
#include <vector>

namespace egress::proxy {

/// RFC 8305 §5 "Connection Attempt Delay": how long an attempt runs alone before the next
/// address is tried beside it.
inline constexpr std::chrono::milliseconds attempt_delay{250};

/// The order in which a dial tries `addresses` (RFC 8305 §4): the families interleaved,
/// starting with the family of the first address (the resolver lists IPv4 first: most
/// pod networks route IPv4, and an IPv6 attempt without a route fails at once anyway),
/// each family in its given order.
std::vector<boost::asio::ip::address> attempt_order(const std::vector<boost::asio::ip::address>& addresses);

/// Resolves `host`, filters the addresses by the snapshot's address policy and connects
/// `c->upstream` to the first allowed address that answers on `port`. On success the
/// upstream socket is open and registered; otherwise the refusal reason is returned:
/// the resolver's ("dns_not_found", "dns_timeout", "dns_failure", ...), the filter's
/// ("address_denied", "address_not_allowed"); "connect_timeout" when the overall deadline
/// passed; otherwise the last attempt's failure ("connect_refused", "connect_failed").
/// Sets rec->dns_ms, rec->connect_ms (the whole dial) and rec->upstream (the address that
/// connected, else the last one tried or the first refused).
boost::asio::awaitable<decision> dial(proxy_context& ctx, std::shared_ptr<connection> c,
                                      std::shared_ptr<const snapshot> snap, common::host host, std::uint16_t port,
                                      decision_record* rec);

}  // namespace egress::proxy
