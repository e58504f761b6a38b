// One client connection from first byte to verdict (see session.hpp): head, decision
// pipeline, refusal / plain-HTTP forward / CONNECT and ClientHello check, hand-over to
// the relay.
#include "session.hpp"

#include "dial.hpp"
#include "http_forward.hpp"
#include "refusal.hpp"
#include "relay.hpp"

#include "egress/proxy/client_hello.hpp"
#include "egress/proxy/request_head.hpp"

#include <span>

namespace egress::proxy {
namespace {

// Reads into `buf` until it holds a complete request head; returns its length, or 0
// with `reason` set (empty reason: the client went away quietly).
asio::awaitable<std::size_t> read_head(proxy_context& ctx, const std::shared_ptr<connection>& c, std::string& buf,
                                       std::string_view& reason, bool first) {
  auto snap = ctx.current();
  const auto& limits = snap->cfg.proxy.limits;
  c->arm(limits.header_timeout);
  c->between_requests = buf.empty();
  for (;;) {
    if (std::size_t n = find_head_end(buf)) {
      c->between_requests = false;
      co_return n;
    }
    if (buf.size() >= limits.max_header_bytes) {
      reason = "headers_too_large";
      co_return 0;
    }
    // Judge a request line without an HTTP/1.x version (HTTP/0.9, HTTP/2 preface) as
    // soon as it is complete, instead of waiting for a header block that never comes.
    if (auto eol = buf.find("\r\n"); eol != std::string::npos) {
      std::string_view line(buf.data(), eol);
      if (!line.ends_with(" HTTP/1.1") && !line.ends_with(" HTTP/1.0")) {
        auto verdict = parse_request_head(std::string(line) + "\r\n\r\n");
        reason = verdict ? std::string_view("bad_request_line") : verdict.error().reason;
        co_return 0;
      }
    }
    auto ec = co_await read_into(*c, c->client, buf, limits.max_header_bytes - buf.size());
    if (ec) {
      // A keep-alive connection that simply goes quiet is closed without a response.
      if (c->expired && (first || !buf.empty())) reason = "header_timeout";
      co_return 0;
    }
    c->between_requests = false;
  }
}

// Reads until `hello` (which may already hold bytes) holds a complete or invalid
// ClientHello; nullopt when the client went away or the phase deadline passed first.
asio::awaitable<std::optional<hello_result>> read_client_hello(const std::shared_ptr<connection>& c, std::string& hello,
                                                                std::uint32_t max_bytes) {
  client_hello_parser parser(max_bytes);
  auto result = parser.feed(std::span(reinterpret_cast<const std::uint8_t*>(hello.data()), hello.size()));
  while (result.state == hello_state::need_more) {
    std::size_t before = hello.size();
    auto ec = co_await read_into(*c, c->client, hello, relay_buffer().size());
    if (ec) co_return std::nullopt;
    result = parser.feed(std::span(reinterpret_cast<const std::uint8_t*>(hello.data() + before), hello.size() - before));
  }
  co_return result;
}

// The checked ClientHello goes upstream and the connection becomes a tunnel (the relay
// owns it from here: true), or the write fails and the decision is logged (false). The
// handshake watch starts here, fed from the client's first byte: it re-checks the first
// hello (so it knows where that hello ends inside its record), holds whatever follows it
// that is not yet checked, and the relay keeps it until no other ClientHello can come
// (after a HelloRetryRequest the client sends a second one, RFC 8446 §4.1.4).
asio::awaitable<bool> open_tunnel(proxy_context& ctx, const std::shared_ptr<connection>& c, const snapshot& snap,
                                  common::host host, bool allow_missing_sni, const std::string& hello,
                                  decision_record& rec, steady::time_point start) {
  const auto& p = snap.cfg.proxy;
  auto watched = std::make_unique<watched_handshake>(
      watched_handshake{handshake_watch(host, allow_missing_sni, p.allow_ech, p.limits.max_client_hello_bytes), {}});
  auto step = watched->watch.feed_client(std::span(reinterpret_cast<const std::uint8_t*>(hello.data()), hello.size()));
  if (!step.refusal.empty()) {  // e.g. junk after the hello inside its record
    rec.reason = step.refusal;
    ctx.decided(rec, start);
    co_return false;
  }
  watched->held.assign(hello, step.forward, std::string::npos);
  rec.allowed = true;
  rec.reason = "allowed";
  if (auto fec = co_await write_all(*c, c->upstream, std::string_view(hello.data(), step.forward))) {
    rec.end = "error";
    ctx.decided(rec, start);
    co_return false;
  }
  c->pump.hello = std::move(watched);
  c->bytes_up = hello.size();
  c->rec = std::move(rec);
  c->start = start;
  c->target = std::move(host);
  relay_begin(ctx, c, p.limits.idle_timeout, p.limits.max_tunnel_lifetime);
  co_return true;
}

// The CONNECT path after the target was admitted: 200, the ClientHello (bytes sent with
// the CONNECT head come first), the SNI check, then the hello upstream and the relay.
asio::awaitable<bool> tunnel(proxy_context& ctx, std::shared_ptr<connection> c, std::shared_ptr<const snapshot> snap,
                             common::host host, std::string hello, decision_record& rec, steady::time_point start) {
  const auto& p = snap->cfg.proxy;
  static constexpr std::string_view established = "HTTP/1.1 200 Connection established\r\n\r\n";
  c->arm(p.limits.client_hello_timeout);
  if (auto wec = co_await write_all(*c, c->client, established)) {
    rec.reason = "client_closed";
    ctx.decided(rec, start);
    co_return false;
  }
  rec.status = 200;
  auto result = co_await read_client_hello(c, hello, p.limits.max_client_hello_bytes);
  if (!result) {
    rec.reason = c->expired ? "client_hello_timeout" : "client_hello_incomplete";
    ctx.decided(rec, start);
    co_return false;
  }
  if (result->server_name) rec.sni = *result->server_name;
  if (auto d = check_sni(*result, host, p.allow_missing_sni, p.allow_ech); !d.allowed) {
    rec.reason = d.reason;  // closed before one byte went upstream
    ctx.decided(rec, start);
    co_return false;
  }
  co_return co_await open_tunnel(ctx, c, *snap, std::move(host), p.allow_missing_sni, hello, rec, start);
}

}  // namespace

asio::awaitable<decision> admit(proxy_context& ctx, const std::shared_ptr<connection>& c,
                                const std::shared_ptr<const snapshot>& snap, const common::host& host,
                                std::uint16_t port, decision_record& rec) {
  if (auto d = check_target(snap->cfg.allowlist, host, port); !d.allowed) co_return d;
  co_return co_await dial(ctx, c, snap, host, port, &rec);
}

asio::awaitable<bool> sni_session(std::shared_ptr<proxy_context> self, std::shared_ptr<connection> c, std::uint64_t id,
                                  std::string client, std::uint16_t port) {
  proxy_context& ctx = *self;
  decision_record rec;
  rec.conn = id;
  rec.client = std::move(client);
  rec.method = "TLS";
  rec.port = port;
  {
    auto snap = ctx.current();
    c->arm(snap->cfg.proxy.limits.client_hello_timeout);
  }
  c->between_requests = true;  // like a connection waiting for its head: drain closes it
  std::string hello;
  auto result = co_await read_client_hello(c, hello, ctx.current()->cfg.proxy.limits.max_client_hello_bytes);
  c->between_requests = false;
  auto start = steady::now();
  if (!result) {
    if (hello.empty() && !c->expired) co_return false;  // connected and left: nothing to judge
    rec.reason = c->expired ? "client_hello_timeout" : "client_hello_incomplete";
    ctx.decided(rec, start);
    co_return false;
  }
  // Judged by the config current when the hello is complete.
  auto snap = ctx.current();
  const auto& p = snap->cfg.proxy;
  if (result->server_name) rec.sni = *result->server_name;
  // The SNI is the target: no SNI, an invalid one or an IP literal cannot be routed.
  // check_sni then applies every check of a CONNECT tunnel's hello (ECH, one name).
  common::host host;
  std::string_view refused;
  if (result->state != hello_state::complete || !result->server_name) {
    refused = check_sni(*result, host, false, p.allow_ech).reason;
  } else if (auto h = common::normalize_host(*result->server_name, common::host_syntax::bare); !h) {
    refused = "sni_invalid";
  } else if (h->is_ip()) {
    refused = "sni_ip_literal";
  } else {
    host = std::move(*h);
    rec.host = host.text;
    refused = check_sni(*result, host, false, p.allow_ech).reason;
    if (refused == "allowed") refused = {};
  }
  if (!refused.empty()) {
    rec.reason = refused;  // closed before one byte went upstream
    ctx.decided(rec, start);
    co_return false;
  }
  if (ctx.draining()) {
    rec.reason = "draining";
    ctx.decided(rec, start);
    co_return false;
  }
  if (auto d = co_await admit(ctx, c, snap, host, port, rec); !d.allowed) {
    rec.reason = d.reason;
    ctx.decided(rec, start);
    co_return false;
  }
  co_return co_await open_tunnel(ctx, c, *snap, std::move(host), false, hello, rec, start);
}

decision rejudge_tunnel(const snapshot& snap, const connection& c) {
  if (auto d = check_target(snap.cfg.allowlist, c.target, c.rec.port); !d.allowed) return d;
  auto filtered = filter_addresses(snap.policy, {c.upstream_address});
  if (filtered.allowed.empty()) return decision::deny(filtered.first_reason);
  return decision::allow();
}

asio::awaitable<bool> session(std::shared_ptr<proxy_context> self, std::shared_ptr<connection> c, std::uint64_t id,
                              std::string client, head_context where) {
  proxy_context& ctx = *self;
  std::string buf;
  for (bool first = true;; first = false) {
    decision_record rec;
    rec.conn = id;
    rec.client = client;
    std::string_view reason;
    std::size_t head_len = co_await read_head(ctx, c, buf, reason, first);
    auto start = steady::now();
    // The request is judged by the config current when its head is complete (not when
    // the connection opened or the previous request on it was served).
    auto snap = ctx.current();
    if (head_len == 0) {
      if (!reason.empty()) {
        rec.host = "";
        co_await refuse(ctx, c, rec, reason, start);
      }
      co_return false;
    }
    auto parsed = parse_request_head(std::string_view(buf.data(), head_len), where);
    if (!parsed) {
      rec.method = "";
      co_await refuse(ctx, c, rec, parsed.error().reason, start, parsed.error().status);
      co_return false;
    }
    request_head& req = *parsed;
    rec.method = std::string(req.method);
    rec.host = req.host.text;
    rec.port = req.port;
    if (ctx.draining()) {
      co_await refuse(ctx, c, rec, "draining", start);
      co_return false;
    }
    if (req.answer_locally) {
      // TRACE/OPTIONS with Max-Forwards: 0 (RFC 9110 §7.6.2): this hop is the final
      // recipient. Only for a target the allowlist allows; nothing is dialled.
      if (auto a = check_target(snap->cfg.allowlist, req.host, req.port); !a.allowed) {
        co_await refuse(ctx, c, rec, a.reason, start);
        co_return false;
      }
      auto answer = local_answer(req);
      rec.allowed = true;
      rec.reason = answered_locally;
      rec.status = answer.status;
      rec.end = "complete";
      c->arm(snap->cfg.proxy.limits.idle_timeout);
      bool written = !co_await write_all(*c, c->client, answer.bytes);
      ctx.decided(rec, start);
      if (!written || !answer.keep_alive || ctx.draining()) co_return false;
      buf.erase(0, head_len);
      continue;
    }
    auto d = co_await admit(ctx, c, snap, req.host, req.port, rec);
    if (!d.allowed) {
      co_await refuse(ctx, c, rec, d.reason, start);
      co_return false;
    }
    if (req.form == request_form::connect) {
      buf.erase(0, head_len);
      req.fields = {};  // nothing of the head is needed any more
      co_return co_await tunnel(ctx, c, snap, req.host, std::move(buf), rec, start);
    }
    std::string upstream_request = upstream_head(req);
    bool keep = co_await forward_http(ctx, c, snap, req, std::move(upstream_request), buf, head_len, rec, start);
    if (!keep || ctx.draining()) co_return false;
    c->close_stream(c->upstream);
  }
}

}  // namespace egress::proxy
