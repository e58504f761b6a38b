#pragma once
/// The proxy's own HTTP responses to a client it refuses: status line, the stable reason
/// in `X-Egress-Denied`, a one-line body, `Connection: close`; and sending one with its
/// decision line. This file decides no reason (session, dial and acl do) and closes no
/// connection (the caller does).

#include "connection.hpp"

#include <boost/asio/awaitable.hpp>

#include <memory>
#include <string>
#include <string_view>

namespace egress::proxy {

/// The reason phrase egress-proxy sends for `status` (RFC 9110 §15); "Error" for codes it
/// never sends.
std::string_view reason_phrase(int status) noexcept;

/// A complete refusal response for `status` and stable `reason` ("host_not_allowed"):
/// X-Egress-Denied, text/plain body "egress-proxy: <reason>\n", Connection: close, and
/// Retry-After: 1 on 503.
std::string refusal(int status, std::string_view reason);

/// Refuses the request of `rec`: sets rec.allowed = false, rec.reason = `reason` and
/// rec.status (`status`, or status_for(reason) when 0), writes the refusal to the client
/// (5 s at most) and logs the decision. The connection is closed by the caller.
boost::asio::awaitable<void> refuse(proxy_context& ctx, std::shared_ptr<connection> c, decision_record& rec,
                                    std::string_view reason, steady::time_point start, int status = 0);

}  // namespace egress::proxy
