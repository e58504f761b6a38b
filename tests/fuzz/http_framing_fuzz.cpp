// libFuzzer target for the plain-HTTP framing: the chunked scanner (fed whole and in two
// pieces at an input-chosen split) and the upstream response head parser with the head the
// client gets. Seeds: tests/data/http_framing/ (first byte: 'c' chunked body, 'r'
// response head; the rest is the input). Touches nothing but memory.
//
// Invariants checked (abort on failure):
// - scanner: the state and the consumed count do not depend on how the input is split;
//   verbatim <= consumed; once done, the relayed bytes (verbatim prefix + trailer_section)
//   scan again to done, consuming exactly them, with the same trailer section; the trailer
//   section has no Host, Content-Length, Transfer-Encoding, Connection, TE, Trailer,
//   Upgrade or Proxy-* field and ends with CRLF; feed() never completes where step() fails.
// - response head: the client head parses again to the same status and framing, has at
//   most one Content-Length and one Transfer-Encoding, the latter exactly "chunked".

#include "egress/proxy/http_framing.hpp"

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

bool istarts(std::string_view s, std::string_view prefix) {
  if (s.size() < prefix.size()) return false;
  for (std::size_t i = 0; i < prefix.size(); ++i) {
    char c = s[i];
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    if (c == '_') c = '-';
    if (c != prefix[i]) return false;
  }
  return true;
}

void check_chunked(std::string_view in, std::size_t split) {
  chunked_scanner whole;
  const auto w = whole.step(in);
  require(w.verbatim <= w.consumed && w.consumed <= in.size(), "step counts out of range");

  chunked_scanner parts;
  split = std::min(split, in.size());
  auto a = parts.step(in.substr(0, split));
  std::size_t consumed = a.consumed;
  std::string relayed(in.substr(0, a.verbatim));
  if (parts.status() == chunked_scanner::state::body) {
    require(a.consumed == split, "body state but bytes left over");
    const auto b = parts.step(in.substr(split));
    consumed += b.consumed;
    relayed.append(in.substr(split, b.verbatim));
  }
  require(parts.status() == whole.status(), "state depends on the split");
  if (whole.status() != chunked_scanner::state::error) require(consumed == w.consumed, "consumed depends on the split");

  chunked_scanner legacy;
  legacy.feed(in);
  if (whole.status() == chunked_scanner::state::error) require(legacy.status() == chunked_scanner::state::error, "feed accepts what step refuses");
  if (whole.status() != chunked_scanner::state::done) return;

  const std::string_view trailer = whole.trailer_section();
  require(parts.trailer_section() == trailer, "trailer depends on the split");
  require(trailer.ends_with("\r\n"), "trailer section without the final CRLF");
  for (std::size_t pos = 0; pos + 2 < trailer.size();) {
    const std::size_t eol = trailer.find("\r\n", pos);
    const std::string_view line = trailer.substr(pos, eol - pos);
    for (std::string_view f : {"host:", "content-length:", "transfer-encoding:", "connection:", "te:", "trailer:",
                               "upgrade:", "keep-alive:", "proxy-", "proxy:"})
      require(!istarts(line, f), "a framing or hop-by-hop field in the relayed trailer");
    pos = eol + 2;
  }
  relayed.append(trailer);
  chunked_scanner again;
  const auto g = again.step(relayed);
  require(again.status() == chunked_scanner::state::done && g.consumed == relayed.size(), "relayed body does not scan");
  require(again.trailer_section() == trailer, "relayed trailer is not a fixed point");
}

void check_response(std::string_view in) {
  const auto r = parse_response_head(in, false);
  if (!r) return;
  for (bool keep : {true, false}) {
    const std::string out = client_response_head(*r, keep);
    const auto back = parse_response_head(out, false);
    require(back.has_value(), "client head does not parse");
    require(back->status == r->status && back->body == r->body && back->content_length == r->content_length,
            "client head has other framing");
    int lengths = 0, encodings = 0;
    for (const auto& [name, value] : back->fields) {
      if (istarts(name, "content-length") && name.size() == 14) ++lengths;
      if (istarts(name, "transfer-encoding") && name.size() == 17) {
        ++encodings;
        require(value == "chunked", "Transfer-Encoding not canonical");
      }
    }
    require(lengths <= 1 && encodings <= 1, "two framing fields in the client head");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 2) return 0;
  const std::string_view in(reinterpret_cast<const char*>(data) + 2, size - 2);
  if (data[0] == 'r') check_response(in);
  else check_chunked(in, data[1]);
  return 0;
}
