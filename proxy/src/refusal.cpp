// Refusal responses: their text and sending one (see refusal.hpp).
#include "refusal.hpp"

#include "egress/proxy/acl.hpp"

namespace egress::proxy {

std::string_view reason_phrase(int status) noexcept {
  switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 408: return "Request Timeout";
    case 431: return "Request Header Fields Too Large";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return "Error";
  }
}

std::string refusal(int status, std::string_view reason) {
  std::string body = "egress-proxy: ";
  body += reason;
  body += '\n';
  std::string out = "HTTP/1.1 " + std::to_string(status) + " " + std::string(reason_phrase(status)) + "\r\n";
  out += "X-Egress-Denied: ";
  out += reason;
  out += "\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: " + std::to_string(body.size()) +
         "\r\nConnection: close\r\n";
  if (status == 503) out += "Retry-After: 1\r\n";
  out += "\r\n" + body;
  return out;
}

asio::awaitable<void> refuse(proxy_context& ctx, std::shared_ptr<connection> c, decision_record& rec,
                             std::string_view reason, steady::time_point start, int status) {
  rec.allowed = false;
  rec.reason = reason;
  rec.status = status != 0 ? status : status_for(reason);
  std::string r = refusal(rec.status, reason);
  c->arm(std::chrono::seconds(5));
  co_await write_all(*c, c->client, r);
  ctx.decided(rec, start);
}

}  // namespace egress::proxy
