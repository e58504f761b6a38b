// Unit tests for the incremental ClientHello parser. Real hellos come from OpenSSL 3 over
// a memory BIO pair (as Envoy's tls_utility tests make them); broken ones are built by hand
// so each case breaks exactly one rule.

#include "egress/proxy/client_hello.hpp"

#include <catch2/catch.hpp>

#include <openssl/bio.h>
#include <openssl/ssl.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

namespace {

using egress::proxy::client_hello_parser;
using egress::proxy::hello_result;
using egress::proxy::hello_state;
namespace reason = egress::proxy::hello_reason;
using bytes = std::vector<std::uint8_t>;

/// What feeding a stream ends with: the final result and how many bytes it consumed.
struct outcome {
  hello_result result;
  std::size_t bytes_fed = 0;
  friend bool operator==(const outcome&, const outcome&) = default;
};

std::string describe(const hello_result& r) {
  std::ostringstream out;
  switch (r.state) {
    case hello_state::need_more: out << "need_more"; break;
    case hello_state::complete: out << "complete"; break;
    case hello_state::invalid: out << "invalid"; break;
  }
  if (!r.reason.empty()) out << " reason=" << r.reason;
  if (r.server_name) out << " server_name=\"" << *r.server_name << '"';
  if (r.encrypted_client_hello) out << " ech";
  return out.str();
}

}  // namespace

namespace Catch {
template <> struct StringMaker<egress::proxy::hello_result> {
  static std::string convert(const egress::proxy::hello_result& r) { return describe(r); }
};
template <> struct StringMaker<outcome> {
  static std::string convert(const outcome& o) {
    return describe(o.result) + " bytes_fed=" + std::to_string(o.bytes_fed);
  }
};
}  // namespace Catch

namespace {

// ---------------------------------------------------------------------------------------
// Byte building

void put_u8(bytes& out, std::size_t v) { out.push_back(static_cast<std::uint8_t>(v & 0xff)); }
void put_u16(bytes& out, std::size_t v) {
  put_u8(out, v >> 8);
  put_u8(out, v);
}
void put_u24(bytes& out, std::size_t v) {
  put_u8(out, v >> 16);
  put_u16(out, v & 0xffff);
}
void put(bytes& out, const bytes& b) { out.insert(out.end(), b.begin(), b.end()); }
void put(bytes& out, std::string_view s) { out.insert(out.end(), s.begin(), s.end()); }

bytes to_bytes(std::string_view s) { return bytes(s.begin(), s.end()); }

constexpr std::uint8_t content_handshake = 22;
constexpr std::uint16_t tls10_record = 0x0301;

/// One TLS record around `fragment`.
bytes record(const bytes& fragment, std::uint8_t type = content_handshake, std::uint16_t version = tls10_record,
             std::optional<std::size_t> declared_length = std::nullopt) {
  bytes out;
  put_u8(out, type);
  put_u16(out, version);
  put_u16(out, declared_length.value_or(fragment.size()));
  put(out, fragment);
  return out;
}

/// The handshake bytes a run of handshake records carries (record headers stripped).
bytes handshake_stream(const bytes& records) {
  bytes out;
  std::size_t pos = 0;
  while (pos < records.size()) {
    REQUIRE(records.size() - pos >= 5);
    REQUIRE(records[pos] == content_handshake);
    const std::size_t length = (std::size_t{records[pos + 3]} << 8) | records[pos + 4];
    REQUIRE(records.size() - pos - 5 >= length);
    const auto first = records.begin() + static_cast<std::ptrdiff_t>(pos + 5);
    out.insert(out.end(), first, first + static_cast<std::ptrdiff_t>(length));
    pos += 5 + length;
  }
  return out;
}

/// Re-frames a handshake stream as records, one cut per offset in `cuts` (increasing,
/// inside the stream), each record with its own header.
bytes reframe(const bytes& stream, const std::vector<std::size_t>& cuts, std::uint16_t version = tls10_record) {
  bytes out;
  std::size_t from = 0;
  auto emit = [&](std::size_t to) {
    REQUIRE(to > from);
    const auto first = stream.begin() + static_cast<std::ptrdiff_t>(from);
    put(out, record(bytes(first, stream.begin() + static_cast<std::ptrdiff_t>(to)), content_handshake, version));
    from = to;
  };
  for (const std::size_t cut : cuts) emit(cut);
  emit(stream.size());
  return out;
}

/// The same hello split across three records at thirds of its handshake message.
bytes in_three_records(const bytes& hello) {
  const bytes stream = handshake_stream(hello);
  return reframe(stream, {stream.size() / 3, 2 * stream.size() / 3});
}

/// The same hello with one handshake byte per record (5 bytes of header per byte).
bytes in_one_byte_records(const bytes& hello) {
  const bytes stream = handshake_stream(hello);
  std::vector<std::size_t> cuts;
  for (std::size_t i = 1; i < stream.size(); ++i) cuts.push_back(i);
  return reframe(stream, cuts);
}

bytes extension(std::uint16_t type, const bytes& data) {
  bytes out;
  put_u16(out, type);
  put_u16(out, data.size());
  put(out, data);
  return out;
}

struct name_entry {
  std::uint8_t name_type = 0;
  std::string name;
};

/// server_name extension_data: a list of (name_type, 2-byte length, name) entries.
bytes server_name_data(const std::vector<name_entry>& entries) {
  bytes list;
  for (const auto& e : entries) {
    put_u8(list, e.name_type);
    put_u16(list, e.name.size());
    put(list, e.name);
  }
  bytes out;
  put_u16(out, list.size());
  put(out, list);
  return out;
}

constexpr std::uint16_t ext_server_name = 0;
constexpr std::uint16_t ext_supported_versions = 43;
constexpr std::uint16_t ext_encrypted_client_hello = 0xfe0d;

bytes sni_extension(std::string_view host) {
  return extension(ext_server_name, server_name_data({{0, std::string{host}}}));
}

/// The fields of a hand-built ClientHello body; defaults make a valid TLS 1.3-style hello.
struct hello_fields {
  std::uint16_t legacy_version = 0x0303;
  bytes session_id = bytes(32, 0xab);
  bytes cipher_suites = {0x13, 0x01, 0xc0, 0x2f};
  bytes compression_methods = {0x00};
  /// The extensions block's contents; nullopt = no block at all (allowed before TLS 1.3).
  std::optional<bytes> extensions = bytes{};
  /// Overrides the extensions block's length field.
  std::optional<std::size_t> extensions_declared_length;
  /// Appended after the extensions block, inside the message.
  bytes trailing;
};

bytes client_hello_body(const hello_fields& f) {
  bytes body;
  put_u16(body, f.legacy_version);
  put(body, bytes(32, 0x42));  // random
  put_u8(body, f.session_id.size());
  put(body, f.session_id);
  put_u16(body, f.cipher_suites.size());
  put(body, f.cipher_suites);
  put_u8(body, f.compression_methods.size());
  put(body, f.compression_methods);
  if (f.extensions) {
    put_u16(body, f.extensions_declared_length.value_or(f.extensions->size()));
    put(body, *f.extensions);
  }
  put(body, f.trailing);
  return body;
}

bytes handshake_message(const bytes& body, std::uint8_t msg_type = 1) {
  bytes out;
  put_u8(out, msg_type);
  put_u24(out, body.size());
  put(out, body);
  return out;
}

/// A one-record ClientHello with the given extensions.
bytes hand_hello(const bytes& extensions) {
  hello_fields f;
  f.extensions = extensions;
  return record(handshake_message(client_hello_body(f)));
}

bytes hand_hello(const hello_fields& f) { return record(handshake_message(client_hello_body(f))); }

/// Default fields with the given extensions block (nullopt: none).
hello_fields fields_with(std::optional<bytes> extensions) {
  hello_fields f;
  f.extensions = std::move(extensions);
  return f;
}

bytes concat(std::initializer_list<bytes> parts) {
  bytes out;
  for (const auto& p : parts) put(out, p);
  return out;
}

// ---------------------------------------------------------------------------------------
// OpenSSL-made hellos

struct ssl_ctx_deleter {
  void operator()(SSL_CTX* p) const noexcept { SSL_CTX_free(p); }
};
struct ssl_deleter {
  void operator()(SSL* p) const noexcept { SSL_free(p); }
};
struct bio_deleter {
  void operator()(BIO* p) const noexcept { BIO_free(p); }
};

/// An extension type no registry assigns, used to pad hellos to post-quantum sizes.
constexpr unsigned padding_extension_type = 0x7e7e;

int add_padding_extension(SSL*, unsigned int, unsigned int, const unsigned char** out, std::size_t* out_len,
                          X509*, std::size_t, int*, void* arg) {
  const auto* padding = static_cast<const bytes*>(arg);
  *out = padding->data();
  *out_len = padding->size();
  return 1;
}

// SSL_set_tlsext_host_name is a macro with a C cast inside; keep the warning off only here.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wold-style-cast"
long set_host_name(SSL* ssl, const std::string& name) { return SSL_set_tlsext_host_name(ssl, name.c_str()); }
#pragma GCC diagnostic pop

struct openssl_hello_spec {
  std::string label;
  int max_version = TLS1_3_VERSION;
  std::optional<std::string> sni;
  /// Size of an extra extension's data: OpenSSL 3.0 has no ML-KEM key share, so a
  /// post-quantum-sized hello is made by padding.
  std::size_t padding_bytes = 0;
};

/// The first flight OpenSSL writes as a client: the ClientHello record(s).
bytes make_openssl_hello(const openssl_hello_spec& spec) {
  std::unique_ptr<SSL_CTX, ssl_ctx_deleter> ctx{SSL_CTX_new(TLS_client_method())};
  REQUIRE(ctx);
  REQUIRE(SSL_CTX_set_min_proto_version(ctx.get(), TLS1_2_VERSION) == 1);
  REQUIRE(SSL_CTX_set_max_proto_version(ctx.get(), spec.max_version) == 1);
  const bytes padding(spec.padding_bytes, 0x5a);
  if (spec.padding_bytes != 0) {
    REQUIRE(SSL_CTX_add_custom_ext(ctx.get(), padding_extension_type, SSL_EXT_CLIENT_HELLO, add_padding_extension,
                                   nullptr, const_cast<bytes*>(&padding), nullptr, nullptr) == 1);
  }
  std::unique_ptr<SSL, ssl_deleter> ssl{SSL_new(ctx.get())};
  REQUIRE(ssl);
  BIO* ssl_side = nullptr;
  BIO* network_side = nullptr;
  REQUIRE(BIO_new_bio_pair(&ssl_side, 0, &network_side, 0) == 1);
  std::unique_ptr<BIO, bio_deleter> network{network_side};
  SSL_set_bio(ssl.get(), ssl_side, ssl_side);  // the SSL owns its side
  if (spec.sni) {
    REQUIRE(set_host_name(ssl.get(), *spec.sni) == 1);
  }
  const int rc = SSL_connect(ssl.get());
  REQUIRE(rc == -1);
  REQUIRE(SSL_get_error(ssl.get(), rc) == SSL_ERROR_WANT_READ);  // waiting for ServerHello

  bytes out(BIO_ctrl_pending(network.get()));
  REQUIRE(!out.empty());
  REQUIRE(BIO_read(network.get(), out.data(), static_cast<int>(out.size())) == static_cast<int>(out.size()));
  return out;
}

/// A host name of exactly `length` bytes made of 63-byte labels.
std::string long_host_name(std::size_t length) {
  std::string name;
  while (name.size() < length) {
    if (!name.empty()) name += '.';
    name += std::string(std::min<std::size_t>(63, length - name.size()), 'a');
  }
  if (name.back() == '.') name.back() = 'b';
  REQUIRE(name.size() == length);
  return name;
}

std::vector<openssl_hello_spec> openssl_specs() {
  return {
      {"TLS 1.2 only, SNI", TLS1_2_VERSION, "api.example.org", 0},
      {"TLS 1.2 only, no SNI", TLS1_2_VERSION, std::nullopt, 0},
      {"TLS 1.3, SNI in mixed case", TLS1_3_VERSION, "Upstream.Example.ORG", 0},
      {"TLS 1.3, no SNI", TLS1_3_VERSION, std::nullopt, 0},
      {"TLS 1.3, 253-byte SNI", TLS1_3_VERSION, long_host_name(253), 0},
      {"TLS 1.2 only, 253-byte SNI plus trailing dot", TLS1_2_VERSION, long_host_name(253) + ".", 0},
      {"TLS 1.3, post-quantum-sized (2000-byte extension)", TLS1_3_VERSION, "pq.example.org", 2000},
  };
}

// ---------------------------------------------------------------------------------------
// Feeding

outcome feed_whole(const bytes& in, std::size_t max_bytes = client_hello_parser::default_max_bytes) {
  client_hello_parser parser{max_bytes};
  auto result = parser.feed(in);
  return {std::move(result), parser.bytes_fed()};
}

/// Feeds `in` one byte at a time; every result before the final one must be need_more.
outcome feed_byte_by_byte(const bytes& in, std::size_t max_bytes = client_hello_parser::default_max_bytes) {
  client_hello_parser parser{max_bytes};
  hello_result result;
  for (std::size_t i = 0; i < in.size(); ++i) {
    if (result.state != hello_state::need_more) break;
    result = parser.feed(std::span{in}.subspan(i, 1));
  }
  return {std::move(result), parser.bytes_fed()};
}

outcome feed_split(const bytes& in, std::size_t cut, std::size_t max_bytes = client_hello_parser::default_max_bytes) {
  client_hello_parser parser{max_bytes};
  const std::span all{in};
  parser.feed(all.first(cut));
  auto result = parser.feed(all.subspan(cut));
  return {std::move(result), parser.bytes_fed()};
}

/// Checks the result of `in` is the same however it is split: byte by byte and in two
/// pieces at every point.
void require_split_independent(const bytes& in, const outcome& expected) {
  CHECK(feed_byte_by_byte(in) == expected);
  for (std::size_t cut = 0; cut <= in.size(); ++cut) {
    const outcome got = feed_split(in, cut);
    if (!(got == expected)) {
      INFO("split at " << cut << " of " << in.size());
      REQUIRE(got == expected);
    }
  }
}

outcome completed(std::optional<std::string> server_name, std::size_t size, bool ech = false) {
  hello_result r;
  r.state = hello_state::complete;
  r.server_name = std::move(server_name);
  r.encrypted_client_hello = ech;
  return {std::move(r), size};
}

hello_result rejected(std::string_view why) {
  hello_result r;
  r.state = hello_state::invalid;
  r.reason = why;
  return r;
}

}  // namespace

// =======================================================================================
// OpenSSL-made hellos

TEST_CASE("OpenSSL ClientHello fed whole: complete with the SNI exactly as sent", "[unit][client_hello]") {
  const auto spec = GENERATE(from_range(openssl_specs()));
  INFO(spec.label);
  const bytes hello = make_openssl_hello(spec);

  const outcome got = feed_whole(hello);
  CHECK(got == completed(spec.sni, hello.size()));
  CHECK_FALSE(got.result.encrypted_client_hello);
  CHECK(got.result.reason.empty());
}

TEST_CASE("OpenSSL ClientHello fed one byte at a time: need_more until its last byte, then complete",
          "[unit][client_hello]") {
  const auto spec = GENERATE(from_range(openssl_specs()));
  INFO(spec.label);
  const bytes hello = make_openssl_hello(spec);

  client_hello_parser parser;
  for (std::size_t i = 0; i + 1 < hello.size(); ++i) {
    const auto r = parser.feed(std::span{hello}.subspan(i, 1));
    if (r.state != hello_state::need_more || parser.bytes_fed() != i + 1) {
      INFO("after byte " << i);
      REQUIRE(r.state == hello_state::need_more);
      REQUIRE(parser.bytes_fed() == i + 1);
    }
  }
  const auto last = parser.feed(std::span{hello}.last(1));
  CHECK(outcome{last, parser.bytes_fed()} == completed(spec.sni, hello.size()));
}

TEST_CASE("OpenSSL ClientHello split in two at every point: same result and bytes_fed as whole",
          "[unit][client_hello]") {
  const auto spec = GENERATE(from_range(openssl_specs()));
  INFO(spec.label);
  const bytes hello = make_openssl_hello(spec);
  require_split_independent(hello, completed(spec.sni, hello.size()));
}

TEST_CASE("OpenSSL ClientHello re-framed into three TLS records: same SNI whole, byte by byte, at every split",
          "[unit][client_hello]") {
  const auto spec = GENERATE(from_range(openssl_specs()));
  INFO(spec.label);
  const bytes hello = make_openssl_hello(spec);
  const bytes three = in_three_records(hello);
  REQUIRE(three.size() == hello.size() + 10);

  CHECK(feed_whole(three) == completed(spec.sni, three.size()));
  require_split_independent(three, completed(spec.sni, three.size()));
}

TEST_CASE("OpenSSL ClientHello with its handshake header split over 1- and 2-byte records: reassembled",
          "[unit][client_hello]") {
  const auto spec = GENERATE(from_range(openssl_specs()));
  INFO(spec.label);
  const bytes stream = handshake_stream(make_openssl_hello(spec));

  const bytes framed = reframe(stream, {1, 3, 4, 5});
  CHECK(feed_whole(framed) == completed(spec.sni, framed.size()));
  CHECK(feed_byte_by_byte(framed) == completed(spec.sni, framed.size()));
}

TEST_CASE("OpenSSL ClientHello in one-byte records: reassembled while the record headers fit max_bytes",
          "[unit][client_hello]") {
  const auto spec = GENERATE(from_range(openssl_specs()));
  INFO(spec.label);
  const bytes hello = make_openssl_hello(spec);
  const bytes tiny = in_one_byte_records(hello);
  REQUIRE(tiny.size() == 6 * (hello.size() - 5));

  CHECK(feed_whole(tiny, tiny.size()) == completed(spec.sni, tiny.size()));
  CHECK(feed_byte_by_byte(tiny, tiny.size()) == completed(spec.sni, tiny.size()));

  const outcome capped = feed_whole(tiny, tiny.size() - 1);
  CHECK(capped.result == rejected(reason::too_large));
  CHECK(capped.bytes_fed <= tiny.size() - 1);
  CHECK(feed_byte_by_byte(tiny, tiny.size() - 1) == capped);
}

TEST_CASE("OpenSSL ClientHello truncated at every length: need_more, never complete", "[unit][client_hello]") {
  const auto spec = GENERATE(from_range(openssl_specs()));
  INFO(spec.label);
  const bytes hello = make_openssl_hello(spec);
  const bytes three = in_three_records(hello);

  for (const bytes* stream : {&hello, &three}) {
    for (std::size_t length = 0; length < stream->size(); ++length) {
      const bytes prefix(stream->begin(), stream->begin() + static_cast<std::ptrdiff_t>(length));
      const outcome got = feed_whole(prefix);
      if (got.result.state != hello_state::need_more || got.bytes_fed != length) {
        INFO("truncated to " << length << " of " << stream->size());
        REQUIRE(got.result == hello_result{});
        REQUIRE(got.bytes_fed == length);
      }
    }
  }
}

TEST_CASE("OpenSSL ClientHello over max_bytes: client_hello_too_large, at exactly max_bytes: complete",
          "[unit][client_hello]") {
  const auto spec = GENERATE(from_range(openssl_specs()));
  INFO(spec.label);
  const bytes hello = make_openssl_hello(spec);
  const bytes three = in_three_records(hello);

  for (const bytes* stream : {&hello, &three}) {
    CHECK(feed_whole(*stream, stream->size()) == completed(spec.sni, stream->size()));
    const outcome over = feed_whole(*stream, stream->size() - 1);
    CHECK(over.result == rejected(reason::too_large));
    CHECK(over.bytes_fed <= stream->size() - 1);
    CHECK(feed_byte_by_byte(*stream, stream->size() - 1) == over);
  }
  // One record: known to be too large from the handshake length, before the body arrives.
  CHECK(feed_whole(hello, hello.size() - 1).bytes_fed == 9);
}

TEST_CASE("post-quantum-sized ClientHello (> 1.5 KB) fits the default cap and is refused by a 1.5 KB cap",
          "[unit][client_hello]") {
  const bytes hello = make_openssl_hello({"pq", TLS1_3_VERSION, "pq.example.org", 2000});
  REQUIRE(hello.size() > 1536);
  REQUIRE(hello.size() < client_hello_parser::default_max_bytes);

  CHECK(feed_whole(hello) == completed("pq.example.org", hello.size()));
  CHECK(feed_whole(hello, 1536) == outcome{rejected(reason::too_large), 9});
}

TEST_CASE("bytes after the first ClientHello are neither examined nor counted", "[unit][client_hello]") {
  const bytes hello = make_openssl_hello({"tls13", TLS1_3_VERSION, "api.example.org", 0});
  const outcome expected = completed("api.example.org", hello.size());

  SECTION("HTTP text after it") {
    const bytes in = concat({hello, to_bytes("GET / HTTP/1.1\r\n\r\n")});
    CHECK(feed_whole(in) == expected);
    CHECK(feed_byte_by_byte(in) == expected);
  }
  SECTION("a ChangeCipherSpec and an application_data record after it") {
    const bytes in = concat({hello, record({0x01}, 20, 0x0303), record(bytes(100, 0x17), 23, 0x0303)});
    CHECK(feed_whole(in) == expected);
  }
  SECTION("garbage in the same record after the message") {
    bytes stream = handshake_stream(hello);
    put(stream, bytes(7, 0xff));
    const bytes in = record(stream);
    CHECK(feed_whole(in) == expected);
  }
  SECTION("a second hello that would be too large and invalid") {
    const bytes in = concat({hello, record(handshake_message(bytes(9000, 0)))});
    CHECK(feed_whole(in, hello.size()) == expected);
  }
}

TEST_CASE("after a final result, further feeds consume nothing and return it unchanged", "[unit][client_hello]") {
  SECTION("complete") {
    const bytes hello = make_openssl_hello({"tls12", TLS1_2_VERSION, "api.example.org", 0});
    client_hello_parser parser;
    const auto first = parser.feed(hello);
    REQUIRE(first.state == hello_state::complete);
    CHECK(parser.feed(hello) == first);
    CHECK(parser.feed(to_bytes("junk")) == first);
    CHECK(parser.feed({}) == first);
    CHECK(parser.result() == first);
    CHECK(parser.bytes_fed() == hello.size());
  }
  SECTION("invalid") {
    client_hello_parser parser;
    const auto first = parser.feed(to_bytes("GET / HTTP/1.1\r\n"));
    REQUIRE(first == rejected(reason::not_tls));
    CHECK(parser.feed(make_openssl_hello({"tls13", TLS1_3_VERSION, "api.example.org", 0})) == first);
    CHECK(parser.bytes_fed() == 1);
  }
}

TEST_CASE("while need_more, bytes_fed counts every byte fed and an empty feed changes nothing",
          "[unit][client_hello]") {
  const bytes hello = make_openssl_hello({"tls13", TLS1_3_VERSION, "api.example.org", 0});
  client_hello_parser parser{1000};
  CHECK(parser.max_bytes() == 1000);
  CHECK(parser.feed({}) == hello_result{});
  CHECK(parser.bytes_fed() == 0);
  CHECK(parser.feed(std::span{hello}.first(7)) == hello_result{});
  CHECK(parser.bytes_fed() == 7);
  CHECK(parser.feed({}) == hello_result{});
  CHECK(parser.bytes_fed() == 7);
}

// =======================================================================================
// Not TLS

TEST_CASE("bytes that are not a TLS handshake record: not_tls, judged on the first wrong byte",
          "[unit][client_hello]") {
  struct not_tls_case {
    std::string label;
    bytes input;
    std::size_t bytes_fed;
  };
  const auto c = GENERATE(values<not_tls_case>({
      {"HTTP GET", to_bytes("GET / HTTP/1.1\r\nHost: example.org\r\n\r\n"), 1},
      {"HTTP CONNECT", to_bytes("CONNECT example.org:443 HTTP/1.1\r\n\r\n"), 1},
      {"SSLv2-compatible hello", {0x80, 0x2e, 0x01, 0x03, 0x01, 0x00, 0x15, 0x00, 0x00, 0x00, 0x10}, 1},
      {"TLS alert record", {0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28}, 1},
      {"TLS application_data record", {0x17, 0x03, 0x03, 0x00, 0x01, 0x00}, 1},
      {"NUL bytes", {0x00, 0x00, 0x00, 0x00}, 1},
      {"record version major 2", {0x16, 0x02, 0x00, 0x00, 0x30}, 2},
      {"SSL 3.0 record", {0x16, 0x03, 0x00, 0x00, 0x30}, 3},
      {"record version 3.5", {0x16, 0x03, 0x05, 0x00, 0x30}, 3},
  }));
  INFO(c.label);
  const outcome expected{rejected(reason::not_tls), c.bytes_fed};
  CHECK(feed_whole(c.input) == expected);
  require_split_independent(c.input, expected);
}

// =======================================================================================
// Structure

namespace {

struct invalid_case {
  std::string label;
  bytes input;
  std::string_view why;
};

std::vector<invalid_case> malformed_cases() {
  const bytes good_stream = handshake_message(client_hello_body(fields_with(sni_extension("a.org"))));
  const auto with = [](auto change) {
    hello_fields f;
    f.extensions = sni_extension("example.org");
    change(f);
    return hand_hello(f);
  };
  const auto extensions_hello = [](const bytes& block) { return hand_hello(block); };
  const auto half = static_cast<std::ptrdiff_t>(good_stream.size() / 2);
  const bytes first_half(good_stream.begin(), good_stream.begin() + half);
  const bytes second_half(good_stream.begin() + half, good_stream.end());

  return {
      {"record length 0", record({}), reason::malformed},
      {"record length 16385", record(bytes(16385, 0x01)), reason::malformed},
      {"handshake msg_type 2 (ServerHello)", record(handshake_message(client_hello_body({}), 2)), reason::malformed},
      {"handshake length below a minimal ClientHello", record(handshake_message(bytes(40, 0x03))),
       reason::malformed},
      {"an alert record interleaved inside the ClientHello",
       concat({record(first_half), record({0x02, 0x28}, 21, 0x0303), record(second_half)}), reason::malformed},
      {"a continuation record with version 2.0",
       concat({record(first_half), record(second_half, content_handshake, 0x0200)}), reason::malformed},
      {"a continuation record of length 0", concat({record(first_half), record({}), record(second_half)}),
       reason::malformed},
      {"legacy_version major 2", with([](hello_fields& f) { f.legacy_version = 0x0200; }), reason::malformed},
      {"session_id of 33 bytes", with([](hello_fields& f) { f.session_id = bytes(33, 0x01); }), reason::malformed},
      {"odd cipher_suites length", with([](hello_fields& f) { f.cipher_suites = {0x13, 0x01, 0x13}; }),
       reason::malformed},
      {"empty cipher_suites", with([](hello_fields& f) { f.cipher_suites = {}; }), reason::malformed},
      {"no compression method", with([](hello_fields& f) { f.compression_methods = {}; }), reason::malformed},
      {"one stray byte where the extensions block would start",
       with([](hello_fields& f) {
         f.extensions.reset();
         f.trailing = {0x00};
       }),
       reason::malformed},
      {"extensions block longer than the message",
       with([](hello_fields& f) { f.extensions_declared_length = f.extensions->size() + 1; }), reason::malformed},
      {"extensions block ends before the message",
       with([](hello_fields& f) { f.trailing = {0x00, 0x00, 0x00, 0x00}; }), reason::malformed},
      {"extension length overruns the extensions block",
       extensions_hello(concat({sni_extension("example.org"), {0x00, 0x2b, 0x00, 0x64, 0x02, 0x03, 0x04}})),
       reason::malformed},
      {"extension header cut short by the block's end",
       extensions_hello(concat({sni_extension("example.org"), {0x00, 0x2b, 0x00}})), reason::malformed},
      {"duplicate extension type",
       extensions_hello(concat({extension(ext_supported_versions, {0x02, 0x03, 0x04}), sni_extension("a.org"),
                                extension(ext_supported_versions, {0x02, 0x03, 0x03})})),
       reason::malformed},
      {"two server_name extensions naming different hosts",
       extensions_hello(concat({sni_extension("allowed.example.org"), sni_extension("evil.example.net")})),
       reason::malformed},
      {"two encrypted_client_hello extensions",
       extensions_hello(
           concat({extension(ext_encrypted_client_hello, {0x00}), extension(ext_encrypted_client_hello, {0x00})})),
       reason::malformed},
      {"server_name extension with no data", extensions_hello(extension(ext_server_name, {})), reason::malformed},
      {"empty server_name_list", extensions_hello(extension(ext_server_name, {0x00, 0x00})), reason::malformed},
      {"server_name_list longer than the extension",
       extensions_hello(extension(ext_server_name, {0x00, 0x09, 0x00, 0x00, 0x01, 'a'})), reason::malformed},
      {"server_name_list shorter than the extension",
       extensions_hello(extension(ext_server_name, {0x00, 0x04, 0x00, 0x00, 0x01, 'a', 0x00})), reason::malformed},
      {"host_name length overruns the list",
       extensions_hello(extension(ext_server_name, {0x00, 0x05, 0x00, 0x00, 0x07, 'a', '.'})), reason::malformed},
      {"unknown name_type whose length overruns the list",
       extensions_hello(extension(ext_server_name, {0x00, 0x04, 0x01, 0x00, 0x09, 'a'})), reason::malformed},
  };
}

std::vector<invalid_case> sni_invalid_cases() {
  const auto one_name = [](std::string name) { return hand_hello(sni_extension(name)); };
  return {
      {"empty host_name", one_name(""), reason::sni_invalid},
      {"host_name of a single dot", one_name("."), reason::sni_invalid},
      {"NUL inside host_name", one_name(std::string("allowed.example.org\0.evil.net", 29)), reason::sni_invalid},
      {"NUL at the end of host_name", one_name(std::string("allowed.example.org\0", 20)), reason::sni_invalid},
      {"underscore", one_name("under_score.example.org"), reason::sni_invalid},
      {"space", one_name("a b.example.org"), reason::sni_invalid},
      {"wildcard star", one_name("*.example.org"), reason::sni_invalid},
      {"UTF-8 bytes (not an A-label)", one_name("b\xc3\xbc"
                                                "cher.example"),
       reason::sni_invalid},
      {"percent-encoding", one_name("evil%2eexample.org"), reason::sni_invalid},
      {"IPv6 literal with colons", one_name("[::1]"), reason::sni_invalid},
      {"254 bytes without a trailing dot", one_name(long_host_name(254)), reason::sni_invalid},
      {"255 bytes ending in a dot (254 before it)", one_name(long_host_name(254) + "."), reason::sni_invalid},
      {"253 bytes followed by two dots", one_name(long_host_name(253) + ".."), reason::sni_invalid},
  };
}

/// RFC 6066 §3: a server_name list holds one name per type and host_name is the only
/// type, so anything but exactly one host_name entry is refused.
std::vector<invalid_case> sni_list_invalid_cases() {
  const auto list = [](const std::vector<name_entry>& entries) {
    return hand_hello(extension(ext_server_name, server_name_data(entries)));
  };
  return {
      {"two host_names in one list", list({{0, "allowed.example.org"}, {0, "evil.example.net"}}),
       reason::sni_list_invalid},
      {"two identical host_names", list({{0, "a.example.org"}, {0, "a.example.org"}}), reason::sni_list_invalid},
      {"unknown name_type before a host_name (first-entry readers see no name)",
       list({{7, "opaque"}, {0, "api.example.org"}}), reason::sni_list_invalid},
      {"unknown name_type after a host_name (first-host_name readers ignore it)",
       list({{0, "api.example.org"}, {1, "evil.example.net"}}), reason::sni_list_invalid},
      {"only an unknown name_type", list({{1, "x"}}), reason::sni_list_invalid},
      {"only name_type 255 carrying a host name", list({{255, "evil.example.net"}}), reason::sni_list_invalid},
      {"three host_names", list({{0, "a.org"}, {0, "b.org"}, {0, "c.org"}}), reason::sni_list_invalid},
      {"a host_name and an empty unknown entry", list({{0, "a.org"}, {2, ""}}), reason::sni_list_invalid},
      {"two host_names where the second is unacceptable: the list rule wins",
       list({{0, "a.org"}, {0, "bad name"}}), reason::sni_list_invalid},
  };
}

}  // namespace

TEST_CASE("server_name list with anything but exactly one host_name entry: sni_list_invalid, whatever the split",
          "[unit][client_hello]") {
  const auto c = GENERATE(from_range(sni_list_invalid_cases()));
  INFO(c.label);
  const outcome expected{rejected(c.why), c.input.size()};
  CHECK(feed_whole(c.input) == expected);
  require_split_independent(c.input, expected);
}

TEST_CASE("structurally broken ClientHello: client_hello_malformed, whatever the split", "[unit][client_hello]") {
  const auto c = GENERATE(from_range(malformed_cases()));
  INFO(c.label);
  const outcome whole = feed_whole(c.input);
  CHECK(whole.result == rejected(c.why));
  require_split_independent(c.input, whole);
}

TEST_CASE("unacceptable host_name in a well-framed server_name: sni_invalid, never passed on",
          "[unit][client_hello]") {
  const auto c = GENERATE(from_range(sni_invalid_cases()));
  INFO(c.label);
  const outcome expected{rejected(c.why), c.input.size()};
  CHECK(feed_whole(c.input) == expected);
  require_split_independent(c.input, expected);
}

TEST_CASE("structural errors win over host_name errors in the same extension", "[unit][client_hello]") {
  // An empty host_name followed by a broken entry: the list is framed first.
  const bytes in = hand_hello(extension(ext_server_name, {0x00, 0x06, 0x00, 0x00, 0x00, 0x00, 0x00, 0x09}));
  CHECK(feed_whole(in).result == rejected(reason::malformed));
}

TEST_CASE("hand-built valid ClientHellos: complete with the expected SNI and ECH flag", "[unit][client_hello]") {
  struct valid_case {
    std::string label;
    bytes input;
    std::optional<std::string> server_name;
    bool ech = false;
  };
  const auto c = GENERATE(values<valid_case>({
      {"ECH extension (0xfe0d) beside the public name",
       hand_hello(concat({sni_extension("public.example.org"), extension(ext_encrypted_client_hello, bytes(90, 0x07))})),
       "public.example.org", true},
      {"ECH extension without a server_name", hand_hello(extension(ext_encrypted_client_hello, {0x01})), std::nullopt,
       true},
      {"TLS 1.2 hello with no extensions block", hand_hello(fields_with(std::nullopt)), std::nullopt},
      {"empty extensions block", hand_hello(bytes{}), std::nullopt},
      {"empty session_id, one cipher suite: the smallest hello",
       [] {
         hello_fields f = fields_with(std::nullopt);
         f.session_id = {};
         f.cipher_suites = {0x00, 0x2f};
         return hand_hello(f);
       }(),
       std::nullopt},
      {"extension with empty data beside the SNI",
       hand_hello(concat({extension(0x0017, {}), sni_extension("a.example.org")})), "a.example.org"},
      {"host_name with digits, hyphens and upper case kept as sent", hand_hello(sni_extension("Api-2.Example.ORG")),
       "Api-2.Example.ORG"},
      {"IPv4-looking host_name (left to the host normaliser)", hand_hello(sni_extension("192.0.2.1")), "192.0.2.1"},
      {"253-byte host_name", hand_hello(sni_extension(long_host_name(253))), long_host_name(253)},
      {"253-byte host_name plus trailing dot", hand_hello(sni_extension(long_host_name(253) + ".")),
       long_host_name(253) + "."},
      {"two records with record version 0x0304",
       reframe(handshake_message(client_hello_body(fields_with(sni_extension("a.org")))), {10}, 0x0304),
       "a.org"},
  }));
  INFO(c.label);
  const outcome expected = completed(c.server_name, c.input.size(), c.ech);
  CHECK(feed_whole(c.input) == expected);
  require_split_independent(c.input, expected);
}

// =======================================================================================
// Caps

TEST_CASE("declared handshake length beyond max_bytes: too large as soon as the length is read",
          "[unit][client_hello]") {
  bytes in = record(bytes{0x01, 0xff, 0xff, 0xff}, content_handshake, tls10_record, 16384);
  put(in, bytes(100, 0x00));
  const outcome expected{rejected(reason::too_large), 9};
  CHECK(feed_whole(in) == expected);
  require_split_independent(in, expected);
}

TEST_CASE("handshake length that fits only without its record header: too large", "[unit][client_hello]") {
  const bytes hello = hand_hello(sni_extension("a.org"));
  const std::size_t message = hello.size() - 5;
  CHECK(feed_whole(hello, message).result == rejected(reason::too_large));
  CHECK(feed_whole(hello, message + 5).result.state == hello_state::complete);
}

TEST_CASE("tiny max_bytes: never consumes past the cap", "[unit][client_hello]") {
  const bytes hello = hand_hello(sni_extension("a.org"));
  for (std::size_t cap = 0; cap < 12; ++cap) {
    INFO("max_bytes " << cap);
    const outcome got = feed_whole(hello, cap);
    CHECK(got.result == rejected(reason::too_large));
    CHECK(got.bytes_fed <= cap);
    CHECK(feed_byte_by_byte(hello, cap) == got);
  }
  // Handshake header spread over 1-byte records: the cap is met before its length is known.
  const bytes tiny = in_one_byte_records(hello);
  const outcome got = feed_whole(tiny, 14);
  CHECK(got == outcome{rejected(reason::too_large), 14});
}

TEST_CASE("reason words are the stable snake_case names used by logs and metrics", "[unit][client_hello]") {
  CHECK(reason::not_tls == "not_tls");
  CHECK(reason::too_large == "client_hello_too_large");
  CHECK(reason::malformed == "client_hello_malformed");
  CHECK(reason::sni_invalid == "sni_invalid");
  CHECK(reason::sni_list_invalid == "sni_list_invalid");
}

// =======================================================================================
// Seed corpus for tests/fuzz/client_hello_fuzz.cpp

namespace {

struct seed {
  std::string file;
  std::optional<std::string> server_name;
  bool ech = false;
};

const std::vector<seed>& seeds() {
  static const std::vector<seed> all{
      {"tls12_sni.bin", "tls12.example.org"},
      {"tls13_sni.bin", "tls13.example.org"},
      {"tls13_no_sni.bin", std::nullopt},
      {"tls13_sni_3_records.bin", "split.example.org"},
      {"tls13_ech.bin", "public.example.org", true},
      {"tls13_pq_padded.bin", "pq.example.org"},
  };
  return all;
}

bytes make_seed(const seed& s) {
  if (s.file == "tls12_sni.bin") return make_openssl_hello({s.file, TLS1_2_VERSION, s.server_name, 0});
  if (s.file == "tls13_sni_3_records.bin") {
    return in_three_records(make_openssl_hello({s.file, TLS1_3_VERSION, s.server_name, 0}));
  }
  if (s.file == "tls13_ech.bin") {
    return hand_hello(concat({sni_extension(*s.server_name), extension(ext_supported_versions, {0x02, 0x03, 0x04}),
                              extension(ext_encrypted_client_hello, bytes(120, 0x07))}));
  }
  if (s.file == "tls13_pq_padded.bin") return make_openssl_hello({s.file, TLS1_3_VERSION, s.server_name, 2000});
  return make_openssl_hello({s.file, TLS1_3_VERSION, s.server_name, 0});
}

}  // namespace

#ifdef EGRESS_TEST_DATA
TEST_CASE("seed corpus hellos in tests/data/client_hello parse to their recorded SNI", "[unit][client_hello]") {
  for (const auto& s : seeds()) {
    INFO(s.file);
    std::ifstream file{std::filesystem::path{EGRESS_TEST_DATA} / "client_hello" / s.file, std::ios::binary};
    REQUIRE(file);
    const bytes in{std::istreambuf_iterator<char>{file}, std::istreambuf_iterator<char>{}};
    CHECK(feed_whole(in) == completed(s.server_name, in.size(), s.ech));
  }
}
#endif

// Run by hand: EGRESS_CLIENT_HELLO_SEED_DIR=tests/data/client_hello ./egress_unit_proxy "[generate_seeds]"
TEST_CASE("write the ClientHello fuzzer's seed corpus", "[.][generate_seeds]") {
  const char* dir = std::getenv("EGRESS_CLIENT_HELLO_SEED_DIR");
  REQUIRE(dir != nullptr);
  std::filesystem::create_directories(dir);
  for (const auto& s : seeds()) {
    const bytes data = make_seed(s);
    REQUIRE(feed_whole(data) == completed(s.server_name, data.size(), s.ech));
    std::ofstream out{std::filesystem::path{dir} / s.file, std::ios::binary | std::ios::trunc};
    out.write(reinterpret_cast<const char*>(data.data()), static_cast<std::streamsize>(data.size()));
    REQUIRE(out);
  }
}

// =======================================================================================
// The handshake-message layer on its own (shared with handshake_watch)

TEST_CASE("client_hello_message: one ClientHello from the handshake stream, never past its last byte",
          "[unit][client_hello]") {
  using egress::proxy::client_hello_message;
  const bytes stream = handshake_stream(make_openssl_hello({"tls13", TLS1_3_VERSION, "api.example.org", 0}));
  const bytes with_more = concat({stream, bytes{0x01, 0x00}});

  SECTION("whole, with bytes after it: complete, those bytes not consumed") {
    client_hello_message m;
    std::size_t used = 0;
    const auto r = m.feed(with_more, 100000, used);
    CHECK(r == completed("api.example.org", 0).result);
    CHECK(used == stream.size());
    CHECK(m.length() == stream.size());
    CHECK(m.size() == stream.size());
    CHECK(m.feed(with_more, 100000, used) == r);
    CHECK(used == 0);
  }
  SECTION("one byte at a time: need_more, length known after the 4th byte") {
    client_hello_message m;
    for (std::size_t i = 0; i + 1 < stream.size(); ++i) {
      std::size_t used = 0;
      REQUIRE(m.feed(std::span{stream}.subspan(i, 1), 100000, used).state == hello_state::need_more);
      REQUIRE(used == 1);
      REQUIRE(m.length() == (i >= 3 ? stream.size() : 0));
    }
    std::size_t used = 0;
    CHECK(m.feed(std::span{stream}.last(1), 100000, used).state == hello_state::complete);
  }
  SECTION("room below the declared length: too large on the 4th byte") {
    client_hello_message m;
    std::size_t used = 0;
    CHECK(m.feed(stream, stream.size() - 1, used) == rejected(reason::too_large));
    CHECK(used == 4);
    client_hello_message exact;
    CHECK(exact.feed(stream, stream.size(), used).state == hello_state::complete);
  }
  SECTION("not a ClientHello: malformed on the 4th byte") {
    client_hello_message m;
    std::size_t used = 0;
    CHECK(m.feed(bytes{20, 0, 0, 12, 1, 2, 3}, 100000, used) == rejected(reason::malformed));
    CHECK(used == 4);
  }
}
