#pragma once
/// The plain-HTTP forwarder: one allowed absolute-form request (head already rewritten by
/// upstream_head) and its body to the dialled upstream, then the response head (checked
/// by parse_response_head, interim 1xx skipped) and body back to the client, framed by
/// Content-Length, chunked coding or close (RFC 9112 §6). Keep-alive with the client; a
/// fresh upstream connection per request.
///
/// The forwarder judges no target (session did) and opens no socket (dial did); it only
/// refuses a response it cannot frame.

#include "connection.hpp"

#include "egress/proxy/request_head.hpp"

#include <boost/asio/awaitable.hpp>

#include <memory>
#include <string>

namespace egress::proxy {

/// Forwards request `req` (whose head is the first `head_len` bytes of `buf`; the bytes
/// after it are the start of its body and of any pipelined request) as
/// `upstream_request`, relays the response, and logs the decision `rec` (end "complete",
/// "idle_timeout" or "error"; a response that cannot be framed is refused 502/504 as
/// "bad_upstream_response"/"upstream_timeout"). On return `buf` holds the bytes after this
/// request. Returns whether the client connection stays open for another request.
boost::asio::awaitable<bool> forward_http(proxy_context& ctx, std::shared_ptr<connection> c,
                                          std::shared_ptr<const snapshot> snap, const request_head& req,
                                          std::string upstream_request, std::string& buf, std::size_t head_len,
                                          decision_record& rec, steady::time_point start);

}  // namespace egress::proxy
