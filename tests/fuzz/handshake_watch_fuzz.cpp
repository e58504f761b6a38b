// libFuzzer target for egress::proxy::handshake_watch.
//
// Input: one flags byte, then chunks, each a direction byte (bit 0: 0 = client->upstream,
// 1 = upstream->client), a 2-byte big-endian length and that many bytes (fewer at the end
// of the input). The chunks are fed in order, as a relay would read them. Each input is
// run twice: chunks fed whole, and every chunk fed one byte at a time. The two runs must
// agree (released bytes, verdict, done, hellos checked, early-data count): the watch
// depends on the streams and their interleaving, never on read sizes. Both must keep the
// documented invariants:
//   - forward never exceeds what was fed and not yet released; held() = fed - released;
//   - held() <= max(max_hello_bytes, 5);
//   - done() implies a real ServerHello was seen, a hello checked, nothing held; final;
//   - a refusal is final and one of the documented reason words;
//   - the first ClientHello is judged exactly as client_hello_parser + check_sni() judge
//     it: if the watch released any client byte, the parser completed the client stream's
//     first hello and check_sni() allowed it; if they refuse it, the watch never releases.
// Any violation aborts (libFuzzer reports a crash).
//
// Build: make build-fuzz. Run: scripts/run-fuzzers build-fuzz 60, or
//   build-fuzz/tests/fuzz/fuzz_handshake_watch -max_len=20000 work/ tests/data/handshake_watch/

#include "egress/proxy/acl.hpp"
#include "egress/proxy/client_hello.hpp"
#include "egress/proxy/handshake_watch.hpp"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <span>
#include <string_view>
#include <vector>

namespace {

using egress::proxy::client_hello_parser;
using egress::proxy::client_step;
using egress::proxy::handshake_watch;
using egress::proxy::hello_state;

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "handshake_watch_fuzz: %s\n", what);
  std::abort();
}

void require(bool ok, const char* what) {
  if (!ok) fail(what);
}

struct chunk {
  bool upstream = false;
  std::span<const std::uint8_t> data;
};

struct outcome {
  std::size_t released = 0;
  std::string_view refusal;
  bool done = false;
  std::size_t hellos = 0;
  std::size_t early = 0;
  std::size_t server_bytes = 0;
  bool operator==(const outcome&) const = default;
};

bool is_reason(std::string_view r) {
  static constexpr std::string_view words[] = {
      "not_tls", "client_hello_too_large", "client_hello_malformed", "sni_invalid", "sni_list_invalid",
      "ech_present", "sni_missing", "sni_ip_literal", "sni_mismatch", "upstream_not_tls",
      "upstream_handshake_malformed", "handshake_too_long"};
  return std::find(std::begin(words), std::end(words), r) != std::end(words);
}

outcome run(const std::vector<chunk>& chunks, bool bytewise, const egress::common::host& host, bool allow_missing,
            bool allow_ech, std::size_t max_hello, std::size_t max_watch) {
  handshake_watch w{host, allow_missing, allow_ech, max_hello, max_watch};
  std::size_t fed = 0;
  std::size_t released = 0;
  bool was_done = false;
  std::string_view was_refused;
  const auto step = [&](const chunk& c, std::span<const std::uint8_t> piece) {
    if (c.upstream) {
      const std::string_view r = w.feed_server(piece);
      require(r == w.refusal(), "feed_server's result differs from refusal()");
    } else {
      const client_step s = w.feed_client(piece);
      fed += piece.size();
      require(s.refusal == w.refusal(), "feed_client's refusal differs from refusal()");
      require(s.forward <= fed - released, "released more than was fed and held");
      require(s.refusal.empty() || s.forward == 0, "released bytes with a refusal");
      released += s.forward;
      if (w.refusal().empty()) require(w.held() == fed - released, "held() is not fed - released");
    }
    if (!w.refusal().empty()) {
      require(is_reason(w.refusal()), "unknown refusal word");
      require(was_refused.empty() || was_refused == w.refusal(), "a refusal changed");
      was_refused = w.refusal();
      require(!w.done(), "done and refused");
    } else {
      require(w.held() <= std::max<std::size_t>(max_hello, 5), "held more than max_hello_bytes");
    }
    require(!was_done || w.done(), "done() went back");
    if (w.done()) {
      require(w.server_hello_seen() && w.held() == 0 && w.hellos_checked() >= 1,
              "done without a ServerHello, without a checked hello, or with bytes held");
      was_done = true;
    }
  };
  for (const chunk& c : chunks) {
    if (!bytewise) {
      step(c, c.data);
      continue;
    }
    for (std::size_t i = 0; i < c.data.size(); ++i) step(c, c.data.subspan(i, 1));
  }
  return {released, w.refusal(), w.done(), w.hellos_checked(), w.early_data_bytes(), w.server_bytes()};
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::uint8_t flags = data[0];
  std::vector<chunk> chunks;
  std::vector<std::uint8_t> client_stream;
  for (std::size_t pos = 1; pos + 3 <= size;) {
    chunk c;
    c.upstream = (data[pos] & 1) != 0;
    const std::size_t length = (std::size_t{data[pos + 1]} << 8) | data[pos + 2];
    pos += 3;
    const std::size_t n = std::min(length, size - pos);
    c.data = {data + pos, n};
    pos += n;
    if (!c.upstream) client_stream.insert(client_stream.end(), c.data.begin(), c.data.end());
    chunks.push_back(c);
  }
  const bool allow_missing = (flags & 1) != 0;
  const bool allow_ech = (flags & 2) != 0;
  const std::size_t max_hello = (flags & 4) ? 600 : client_hello_parser::default_max_bytes;
  const std::size_t max_watch = (flags & 8) ? 4096 : handshake_watch::default_max_watch_bytes(max_hello);

  // The first hello as the relay judges it today, and a CONNECT host that lets it pass
  // when its name is acceptable (so acceptance is reachable).
  client_hello_parser parser{max_hello};
  const auto first = parser.feed(client_stream);
  egress::common::host host = *egress::common::normalize_host("example.org");
  if (first.state == hello_state::complete && first.server_name && !(flags & 16)) {
    if (auto h = egress::common::normalize_host(*first.server_name, egress::common::host_syntax::bare); h && !h->is_ip()) {
      host = *h;
    }
  }
  const bool first_allowed = egress::proxy::check_sni(first, host, allow_missing, allow_ech).allowed;

  const outcome whole = run(chunks, false, host, allow_missing, allow_ech, max_hello, max_watch);
  const outcome bytewise = run(chunks, true, host, allow_missing, allow_ech, max_hello, max_watch);
  // Whole chunks and single bytes agree, except that a refusal discards what its own
  // feed would have released, so the released counts may differ only then.
  require(whole.refusal == bytewise.refusal, "the verdict depends on read sizes");
  require(whole.done == bytewise.done && whole.hellos == bytewise.hellos, "done/hellos depend on read sizes");
  require(whole.server_bytes == bytewise.server_bytes, "upstream bytes inspected depend on read sizes");
  if (whole.refusal.empty()) {
    require(whole == bytewise, "the releases depend on read sizes");
  } else {
    require(whole.released <= bytewise.released, "a whole feed released more than byte-wise feeds");
  }

  for (const outcome* o : {&whole, &bytewise}) {
    if (o->released > 0) {
      require(first.state == hello_state::complete && first_allowed,
              "the watch released bytes of a first hello the parser + check_sni refused");
      require(o->released >= parser.bytes_fed(), "released part of the first hello only");
      require(o->hellos >= 1, "released without a checked hello");
    }
    if (first.state == hello_state::invalid || (first.state == hello_state::complete && !first_allowed)) {
      require(o->released == 0, "released bytes although the first hello is refused");
      require(!o->done, "done although the first hello is refused");
    }
  }
  return 0;
}
