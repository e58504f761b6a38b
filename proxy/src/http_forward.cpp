// Plain-HTTP request/response relay with framing and keep-alive (see http_forward.hpp).
#include "http_forward.hpp"

#include "refusal.hpp"

#include "egress/proxy/http_framing.hpp"
#include "egress/proxy/http_syntax.hpp"

#include <algorithm>
#include <optional>

namespace egress::proxy {
namespace {

// Copies exactly `n` body bytes from `from` to `to`, taking first from `pending`
// (bytes already read); leftover pending bytes stay for the next message.
asio::awaitable<bool> relay_length(std::shared_ptr<connection> c, stream& from, stream& to,
                                    std::uint64_t n, std::string& pending, std::uint64_t& count) {
  std::size_t first = static_cast<std::size_t>(std::min<std::uint64_t>(n, pending.size()));
  if (first > 0) {
    if (co_await write_all(*c, to, std::string_view(pending.data(), first))) co_return false;
    pending.erase(0, first);
    n -= first;
    count += first;
  }
  std::string chunk;
  while (n > 0) {
    chunk.clear();
    auto ec = co_await read_into(*c, from, chunk, static_cast<std::size_t>(std::min<std::uint64_t>(n, relay_buffer().size())));
    if (ec) co_return false;
    c->last_activity = steady::now();
    if (co_await write_all(*c, to, chunk)) co_return false;
    n -= chunk.size();
    count += chunk.size();
  }
  co_return true;
}

// Feeds `piece` to the scanner and writes what it lets through: the chunks as received,
// and once the body is complete the trailer section the scanner rebuilt (fields that
// frame or route a message refused, hop-by-hop ones dropped: never relayed raw). Returns
// the bytes of `piece` that belonged to the body, or nullopt when the body is refused or
// the write failed.
asio::awaitable<std::optional<std::size_t>> chunked_piece(connection& c, stream& to, chunked_scanner& scan,
                                                          std::string_view piece, std::uint64_t& count) {
  auto st = scan.step(piece);
  if (scan.status() == chunked_scanner::state::error) co_return std::nullopt;  // nothing of it goes on
  if (st.verbatim > 0 && co_await write_all(c, to, piece.substr(0, st.verbatim))) co_return std::nullopt;
  count += st.verbatim;
  if (scan.status() == chunked_scanner::state::done) {
    auto trailer = scan.trailer_section();
    if (co_await write_all(c, to, trailer)) co_return std::nullopt;
    count += trailer.size();
  }
  co_return st.consumed;
}

// Copies a chunked body until its last chunk and trailer; bytes after it stay in `pending`.
asio::awaitable<bool> relay_chunked(std::shared_ptr<connection> c, stream& from, stream& to,
                                     std::string& pending, std::uint64_t& count) {
  chunked_scanner scan;
  auto used = co_await chunked_piece(*c, to, scan, pending, count);
  if (!used) co_return false;
  pending.erase(0, *used);
  std::string chunk;
  while (scan.status() == chunked_scanner::state::body) {
    chunk.clear();
    auto ec = co_await read_into(*c, from, chunk, relay_buffer().size());
    if (ec) co_return false;
    c->last_activity = steady::now();
    used = co_await chunked_piece(*c, to, scan, chunk, count);
    if (!used) co_return false;
    pending.append(chunk, *used, std::string::npos);  // the next pipelined message
  }
  co_return true;
}

}  // namespace

// GCC 12 false positive: it inlines Asio's awaitable_frame_base::operator new (which ends
// in aligned_alloc) into this coroutine's ramp but not the matching operator delete (which
// ends in std::free through aligned_delete), and reports the pair as mismatched. The pair
// is Asio's own and matches (boost/asio/detail/memory.hpp, thread_info_base.hpp).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
asio::awaitable<bool> forward_http(proxy_context& ctx, std::shared_ptr<connection> c,
                                    std::shared_ptr<const snapshot> snap, const request_head& req,
                                    std::string upstream_request, std::string& buf, std::size_t head_len,
                                    decision_record& rec, steady::time_point start) {
  const auto& limits = snap->cfg.proxy.limits;
  rec.allowed = true;
  rec.reason = "allowed";
  c->bytes_up = c->bytes_down = 0;
  // Everything needed from the head's views is taken before the head leaves `buf`.
  const bool head_request = req.method == "HEAD";
  bool expect_continue = false;
  for (const auto& f : req.fields)
    if (http::iequals(f.name, "expect") && http::iequals(f.value, "100-continue")) expect_continue = true;
  const bool chunked = req.chunked;
  const std::optional<std::uint64_t> content_length = req.content_length;
  const bool client_keep_alive = req.keep_alive;
  buf.erase(0, head_len);
  c->arm_idle(limits.idle_timeout);
  auto fail = [&](std::string_view end) {
    rec.end = end;
    rec.bytes_up = c->bytes_up;
    rec.bytes_down = c->bytes_down;
    ctx.stats().bytes(c->bytes_up, c->bytes_down);
    ctx.decided(rec, start);
    return false;
  };
  if (co_await write_all(*c, c->upstream, upstream_request)) co_return fail("error");
  if (expect_continue) {
    static constexpr std::string_view cont = "HTTP/1.1 100 Continue\r\n\r\n";
    co_await write_all(*c, c->client, cont);
  }
  bool ok = true;
  if (chunked) ok = co_await relay_chunked(c, c->client, c->upstream, buf, c->bytes_up);
  else if (content_length && *content_length > 0)
    ok = co_await relay_length(c, c->client, c->upstream, *content_length, buf, c->bytes_up);
  if (!ok) co_return fail(c->expired ? "idle_timeout" : "error");

  // Response head (interim 1xx responses other than 101 are skipped).
  std::string rbuf;
  std::optional<response_head> resp;
  for (;;) {
    std::size_t n = find_head_end(rbuf);
    if (n == 0) {
      if (rbuf.size() >= limits.max_header_bytes) break;
      auto rec_ec = co_await read_into(*c, c->upstream, rbuf, limits.max_header_bytes - rbuf.size());
      if (rec_ec) break;
      c->last_activity = steady::now();
      continue;
    }
    resp = parse_response_head(std::string_view(rbuf.data(), n), head_request);
    if (resp && resp->status >= 100 && resp->status < 200 && resp->status != 101) {
      rbuf.erase(0, n);
      resp.reset();
      continue;
    }
    rbuf.erase(0, n);
    break;
  }
  if (!resp || resp->status == 101) {
    rec.allowed = false;
    co_await refuse(ctx, c, rec, c->expired ? "upstream_timeout" : "bad_upstream_response", start);
    co_return false;
  }
  bool keep = client_keep_alive && resp->body != body_kind::until_close && !ctx.draining();
  std::string head = client_response_head(*resp, keep);
  if (co_await write_all(*c, c->client, head)) co_return fail("error");
  rec.status = resp->status;
  switch (resp->body) {
    case body_kind::none: break;
    case body_kind::length:
      ok = co_await relay_length(c, c->upstream, c->client, resp->content_length, rbuf, c->bytes_down);
      break;
    case body_kind::chunked: ok = co_await relay_chunked(c, c->upstream, c->client, rbuf, c->bytes_down); break;
    case body_kind::until_close: {
      if (!rbuf.empty()) {
        if (co_await write_all(*c, c->client, rbuf)) ok = false;
        c->bytes_down += rbuf.size();
      }
      std::string chunk;
      while (ok) {
        chunk.clear();
        auto e3 = co_await read_into(*c, c->upstream, chunk, relay_buffer().size());
        if (e3 == asio::error::eof) break;
        if (e3) {
          ok = false;
          break;
        }
        c->last_activity = steady::now();
        if (co_await write_all(*c, c->client, chunk)) ok = false;
        c->bytes_down += chunk.size();
      }
      break;
    }
  }
  rec.end = ok ? "complete" : c->expired ? "idle_timeout" : "error";
  rec.bytes_up = c->bytes_up;
  rec.bytes_down = c->bytes_down;
  ctx.stats().bytes(c->bytes_up, c->bytes_down);
  ctx.decided(rec, start);
  co_return ok && keep;
}
#pragma GCC diagnostic pop

}  // namespace egress::proxy
