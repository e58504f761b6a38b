// libFuzzer target for the request-head parser: find_head_end, parse_request_head and, on
// a valid absolute-form head, upstream_head (or local_answer for Max-Forwards: 0).
// Seeds: tests/data/request_head/.
//
// Invariants checked (abort on failure):
// - find_head_end: 0 or an offset just past an empty line; resuming after any earlier
//   incomplete search gives the same answer.
// - errors: status 400, 431 or 505; a non-empty snake_case reason; no head means
//   incomplete_head.
// - successes: the head ends at find_head_end; views lie inside the input; at most
//   max_fields fields; port != 0; never both Content-Length and chunked; CONNECT has no
//   path and no body; absolute form has a path starting with "/" (or "*" for OPTIONS);
//   TRACE has no body; answer_locally only for TRACE/OPTIONS with Max-Forwards 0.
// - local_answer: one complete 200 response whose Content-Length is its content's size.
// - upstream_head: one complete head, CRLF only, one Host, no Proxy-* field, ends with
//   "Connection: close"; Transfer-Encoding only as "chunked", no '_' spelling of a
//   framing field; turned back into absolute form it parses again to the same host,
//   port, path and framing (unless the extra Host/Connection lines exceed max_fields).

#include "egress/proxy/request_head.hpp"

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

namespace {

using namespace egress::proxy;

void require(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "invariant broken: %s\n", what);
    std::abort();
  }
}

bool inside(std::string_view part, std::string_view whole) {
  if (part.empty()) return true;
  return part.data() >= whole.data() && part.data() + part.size() <= whole.data() + whole.size();
}

bool snake_case(std::string_view s) {
  return !s.empty() && s.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789_") == std::string_view::npos;
}

bool iequals_prefix(std::string_view s, std::string_view prefix) {
  if (s.size() < prefix.size()) return false;
  for (std::size_t i = 0; i < prefix.size(); ++i) {
    char c = s[i];
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    if (c != prefix[i]) return false;
  }
  return true;
}

void check_find_head_end(std::string_view in, std::size_t end) {
  require(end == 0 || (end >= 2 && end <= in.size() && in[end - 1] == '\n'), "find_head_end points past an LF");
  // Resume from a few earlier sizes whose search found nothing.
  for (std::size_t searched : {std::size_t{1}, std::size_t{2}, std::size_t{3}, in.size() / 2, in.size() - 1}) {
    if (searched > in.size() || (end != 0 && searched >= end)) continue;
    if (find_head_end(in.substr(0, searched)) != 0) continue;
    require(find_head_end(in, searched) == end, "resumed find_head_end differs");
  }
}

void check_upstream(const request_head& r) {
  const std::string up = upstream_head(r);
  require(find_head_end(up) == up.size(), "upstream head is not exactly one head");
  require(up.ends_with("\r\nConnection: close\r\n\r\n"), "upstream head does not end with Connection: close");
  std::size_t hosts = 0;
  for (std::size_t pos = up.find("\r\n") + 2; pos < up.size();) {
    const std::size_t eol = up.find("\r\n", pos);
    require(eol != std::string::npos, "upstream line without CRLF");
    const std::string_view line = std::string_view(up).substr(pos, eol - pos);
    if (iequals_prefix(line, "host:")) ++hosts;
    require(!iequals_prefix(line, "proxy-"), "a Proxy-* field reached upstream");
    if (iequals_prefix(line, "transfer-encoding:")) require(line == "Transfer-Encoding: chunked", "Transfer-Encoding not canonical");
    require(!iequals_prefix(line, "transfer_encoding:") && !iequals_prefix(line, "content_length:"),
            "an '_' spelling of a framing field reached upstream");
    pos = eol + 2;
  }
  require(hosts == 1, "upstream head has not exactly one Host");
  for (std::size_t i = 0; i < up.size(); ++i) {
    if (up[i] == '\n') require(i > 0 && up[i - 1] == '\r', "bare LF upstream");
    if (up[i] == '\r') require(i + 1 < up.size() && up[i + 1] == '\n', "bare CR upstream");
  }

  // Back to absolute form: "METHOD http://<Host value><path> HTTP/1.1".
  const std::size_t host_at = up.find("\r\nHost: ") + 8;
  const std::string host_value = up.substr(host_at, up.find("\r\n", host_at) - host_at);
  std::string again = std::string(r.method) + " http://" + host_value + (r.path_and_query == "*" ? "" : r.path_and_query);
  again += up.substr(up.find(" HTTP/1.1\r\n"));
  const auto back = parse_request_head(again);
  if (!back) {
    require(back.error().reason == head_reason::too_many_fields, "upstream head does not parse back");
    return;
  }
  require(back->host == r.host && back->port == r.port, "upstream head names another target");
  require(back->path_and_query == r.path_and_query, "upstream head has another path");
  require(back->content_length == r.content_length && back->chunked == r.chunked, "upstream framing differs");
  require(!back->keep_alive, "upstream head is persistent");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  const std::size_t end = find_head_end(in);
  check_find_head_end(in, end);

  const auto r = parse_request_head(in);
  if (!r) {
    const head_error& e = r.error();
    require(e.status == 400 || e.status == 431 || e.status == 505, "unexpected status");
    require(snake_case(e.reason), "reason is not a snake_case word");
    require(end != 0 || e.reason == head_reason::incomplete_head, "no head but not incomplete_head");
    return 0;
  }
  require(end != 0 && r->head_bytes == end, "head_bytes differs from find_head_end");
  const std::string_view head = in.substr(0, end);
  require(inside(r->method, head) && inside(r->target, head), "request line views outside the head");
  for (const auto& f : r->fields) require(inside(f.name, head) && inside(f.value, head), "field views outside the head");
  require(r->fields.size() <= max_fields, "too many fields accepted");
  require(r->port != 0, "port 0 accepted");
  require(!(r->content_length && r->chunked), "both Content-Length and chunked");
  require(r->version_minor == 0 || r->version_minor == 1, "version not 1.0 or 1.1");
  require(!r->host.text.empty(), "empty host accepted");
  if (r->form == request_form::connect) {
    require(r->method == "CONNECT", "connect form without CONNECT");
    require(r->path_and_query.empty(), "CONNECT with a path");
    require(!r->chunked && r->content_length.value_or(0) == 0, "CONNECT with a body");
  } else {
    require(r->method != "CONNECT", "CONNECT in absolute form");
    require(r->path_and_query.starts_with("/") || (r->method == "OPTIONS" && r->path_and_query == "*"),
            "path does not start with /");
    if (r->method == "TRACE") require(!r->chunked && r->content_length.value_or(0) == 0, "TRACE with a body");
    require(!r->answer_locally || (r->max_forwards == 0u && (r->method == "TRACE" || r->method == "OPTIONS")),
            "answer_locally without Max-Forwards: 0");
    if (r->answer_locally) {
      const auto a = local_answer(*r);
      const std::size_t head_end = find_head_end(a.bytes);
      require(a.bytes.starts_with("HTTP/1.1 200 OK\r\n") && head_end != 0, "local answer is not a 200 head");
      const std::size_t cl = a.bytes.find("\r\nContent-Length: ") + 18;
      require(std::to_string(a.bytes.size() - head_end) == a.bytes.substr(cl, a.bytes.find("\r\n", cl) - cl),
              "local answer's Content-Length is not its content's size");
    } else {
      check_upstream(*r);
    }
  }
  return 0;
}
