// libFuzzer target for egress::proxy::client_hello_parser.
//
// The parser's contract is that its result depends only on the byte stream, never on how
// reads split it. So each input is fed whole, in two pieces at a data-derived point, and
// one byte at a time, under the default cap and a data-derived small one, and all three
// must agree (state, reason, server name, ECH flag, bytes_fed). The results must also obey
// the documented invariants. Any disagreement aborts, which libFuzzer reports as a crash.
//
// Build: clang++ -std=c++20 -fsanitize=fuzzer,address,undefined -Iproxy/include
//        proxy/src/client_hello.cpp tests/fuzz/client_hello_fuzz.cpp
// Run:   ./client_hello_fuzz -max_len=20000 corpus-work/ tests/data/client_hello/

#include "egress/proxy/client_hello.hpp"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <span>
#include <string_view>

namespace {

using egress::proxy::client_hello_parser;
using egress::proxy::hello_result;
using egress::proxy::hello_state;
namespace reason = egress::proxy::hello_reason;

struct outcome {
  hello_result result;
  std::size_t bytes_fed = 0;
  friend bool operator==(const outcome&, const outcome&) = default;
};

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "client_hello_fuzz: %s\n", what);
  std::abort();
}

void require(bool ok, const char* what) {
  if (!ok) fail(what);
}

/// FNV-1a: a cheap, deterministic function of the input to pick split points and caps.
std::uint64_t fnv1a(std::span<const std::uint8_t> data) {
  std::uint64_t h = 0xcbf29ce484222325ULL;
  for (const std::uint8_t b : data) {
    h ^= b;
    h *= 0x100000001b3ULL;
  }
  return h;
}

/// Feeds `data` in pieces ending at each offset in `cuts` (non-decreasing), then the rest.
/// Checks the result is final-stable: another feed returns it again and consumes nothing.
outcome feed_pieces(std::span<const std::uint8_t> data, std::size_t max_bytes, std::span<const std::size_t> cuts) {
  client_hello_parser parser{max_bytes};
  std::size_t from = 0;
  hello_result result;
  for (const std::size_t cut : cuts) {
    result = parser.feed(data.subspan(from, cut - from));
    from = cut;
    if (result.state == hello_state::need_more) {
      require(parser.bytes_fed() == from, "need_more but not every byte fed was consumed");
    }
  }
  result = parser.feed(data.subspan(from));
  require(parser.result() == result, "result() differs from what feed returned");

  const std::size_t fed = parser.bytes_fed();
  if (result.state != hello_state::need_more) {
    require(parser.feed(data) == result, "a final result changed on a later feed");
    require(parser.bytes_fed() == fed, "a later feed after a final result consumed bytes");
  }
  return {result, fed};
}

outcome feed_byte_by_byte(std::span<const std::uint8_t> data, std::size_t max_bytes) {
  client_hello_parser parser{max_bytes};
  hello_result result;
  for (std::size_t i = 0; i < data.size(); ++i) {
    result = parser.feed(data.subspan(i, 1));
    if (result.state != hello_state::need_more) break;
  }
  return {result, parser.bytes_fed()};
}

bool is_reason(std::string_view r) {
  return r == reason::not_tls || r == reason::too_large || r == reason::malformed || r == reason::sni_invalid ||
         r == reason::sni_list_invalid;
}

bool is_acceptable_host_name(std::string_view name) {
  std::size_t significant = name.size();
  if (significant != 0 && name.back() == '.') --significant;
  if (significant == 0 || significant > 253) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '.';
  });
}

void check_invariants(const outcome& o, std::size_t size, std::size_t max_bytes) {
  require(o.bytes_fed <= size, "bytes_fed beyond the input");
  require(o.bytes_fed <= max_bytes, "bytes_fed beyond max_bytes");
  const hello_result& r = o.result;
  switch (r.state) {
    case hello_state::need_more:
      require(r.reason.empty() && !r.server_name && !r.encrypted_client_hello, "need_more carries data");
      require(o.bytes_fed == size, "need_more without consuming the whole input");
      break;
    case hello_state::invalid:
      require(is_reason(r.reason), "invalid with an unknown reason");
      require(!r.server_name && !r.encrypted_client_hello, "invalid carries data");
      require(o.bytes_fed > 0 || max_bytes == 0, "invalid before any byte");
      break;
    case hello_state::complete:
      require(r.reason.empty(), "complete with a reason");
      require(!r.server_name || is_acceptable_host_name(*r.server_name), "complete with an unacceptable name");
      require(o.bytes_fed >= 5 + 4 + 41, "complete with fewer bytes than the smallest hello");
      break;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::span<const std::uint8_t> in{data, size};
  const std::uint64_t h = fnv1a(in);
  const std::size_t cut = static_cast<std::size_t>(h % (size + 1));
  // A cap somewhere in 0..size+15, so too_large is reached at every kind of position.
  const std::size_t small_cap = static_cast<std::size_t>((h >> 32) % (size + 16));

  for (const std::size_t max_bytes : {client_hello_parser::default_max_bytes, small_cap}) {
    const outcome whole = feed_pieces(in, max_bytes, {});
    check_invariants(whole, size, max_bytes);

    const std::size_t one_cut[] = {cut};
    require(feed_pieces(in, max_bytes, one_cut) == whole, "split feed disagrees with whole feed");
    require(feed_byte_by_byte(in, max_bytes) == whole, "byte-by-byte feed disagrees with whole feed");
  }
  return 0;
}
