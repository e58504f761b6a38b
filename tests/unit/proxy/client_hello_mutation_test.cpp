// Mutation-based differential test of the ClientHello parser, check_sni() and the
// handshake watch, with OpenSSL 3's server as the oracle. Real ClientHellos (OpenSSL
// clients: SNI spellings, ALPN, groups, TLS 1.2/1.3, padding, big extensions) are mutated
// (extension order, duplicates, extra/duplicate server_name entries, name types, names
// and their case, length fields off by +-1, record cuts, record versions, record lengths,
// trailing bytes, truncation, feed splits) and each mutant must keep the invariants:
//   A  our parser completes with server_name N  =>  an OpenSSL server fed the same bytes
//      rejects them, or its servername callback sees exactly N (case-insensitively;
//      none when N is none): we never accept a name other than the one the server reads.
//   B  parser + check_sni accept for the CONNECT host H  =>  the server rejects or sees H.
//   C  the watch, fed the mutant as the first hello, releases bytes  =>  parser + check
//      accepted, and a server fed exactly the released bytes rejects them or sees H.
//   D  the same with the mutant as a second hello after a canonical one (the HRR path).
// Seeded (EGRESS_MUTATION_SEED, else random; printed on failure), bounded
// (EGRESS_MUTATION_CASES, default 4000, and a 20 s cap), failing mutants shrunk to a
// minimal mutation list. Test code only.

#include "egress/proxy/acl.hpp"
#include "egress/proxy/client_hello.hpp"
#include "egress/proxy/handshake_watch.hpp"

#include "tls_lab.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <random>
#include <sstream>
#include <string>
#include <vector>

namespace {

using egress::proxy::client_hello_parser;
using egress::proxy::handshake_watch;
using egress::proxy::hello_result;
using egress::proxy::hello_state;
using tls_lab::bytes;

const std::string connect_name = "allowed.example.org";

egress::common::host connect_host() { return *egress::common::normalize_host(connect_name); }

// ---------------------------------------------------------------------------------------
// Mutations

enum class kind {
  swap_extensions,
  duplicate_extension,
  remove_extension,
  add_ech,
  add_server_name_extension,
  sni_add_entry,
  sni_duplicate_entry,
  sni_set_type,
  sni_set_name,
  sni_case,
  message_trailing,
  length_delta,
  record_cut,
  record_version,
  record_length_delta,
  stream_trailing,
  truncate,
  feed_cut,
};
constexpr int kind_count = 18;

const char* kind_name(kind k) {
  switch (k) {
    case kind::swap_extensions: return "swap_extensions";
    case kind::duplicate_extension: return "duplicate_extension";
    case kind::remove_extension: return "remove_extension";
    case kind::add_ech: return "add_ech";
    case kind::add_server_name_extension: return "add_server_name_extension";
    case kind::sni_add_entry: return "sni_add_entry";
    case kind::sni_duplicate_entry: return "sni_duplicate_entry";
    case kind::sni_set_type: return "sni_set_type";
    case kind::sni_set_name: return "sni_set_name";
    case kind::sni_case: return "sni_case";
    case kind::message_trailing: return "message_trailing";
    case kind::length_delta: return "length_delta";
    case kind::record_cut: return "record_cut";
    case kind::record_version: return "record_version";
    case kind::record_length_delta: return "record_length_delta";
    case kind::stream_trailing: return "stream_trailing";
    case kind::truncate: return "truncate";
    case kind::feed_cut: return "feed_cut";
  }
  return "?";
}

struct mutation {
  kind what = kind::swap_extensions;
  std::uint32_t a = 0;
  std::uint32_t b = 0;
};

const std::vector<std::string>& name_pool() {
  static const std::vector<std::string> names{
      connect_name,
      "ALLOWED.EXAMPLE.ORG",
      "evil.example.net",
      connect_name + ".",
      std::string("allowed.example.org\0.evil.net", 29),
      connect_name + ".evil.net",
      "",
      ".",
      "allowed..example.org",
      "allowed.example.or",
      "192.0.2.1",
      "allowed_example.org",
      "evil.example.net\0",
  };
  return names;
}

constexpr std::uint16_t record_versions[] = {0x0301, 0x0302, 0x0303, 0x0304, 0x0300, 0x0305, 0x0201, 0x0103};
constexpr std::uint8_t name_types[] = {0, 1, 2, 255};

/// A mutant: the bytes on the wire and where reads split them.
struct mutant {
  bytes wire;
  std::vector<std::size_t> feed_cuts;
};

void with_server_name(tls_lab::hello_parts& p, const std::function<void(std::vector<tls_lab::name_entry>&)>& change) {
  const auto i = tls_lab::find_extension(p, tls_lab::ext_server_name);
  if (!i) return;
  auto entries = tls_lab::parse_server_name_data((*p.extensions)[*i].data);
  if (!entries) return;
  change(*entries);
  (*p.extensions)[*i].data = tls_lab::server_name_data(*entries);
}

void add_to_number(bytes& b, std::size_t offset, std::size_t width, int delta) {
  std::size_t v = 0;
  for (std::size_t i = 0; i < width; ++i) v = (v << 8) | b[offset + i];
  const std::size_t modulus = std::size_t{1} << (8 * width);
  v = (v + modulus + static_cast<std::size_t>(delta + static_cast<int>(modulus))) % modulus;
  for (std::size_t i = width; i-- > 0;) {
    b[offset + i] = static_cast<std::uint8_t>(v & 0xff);
    v >>= 8;
  }
}

mutant build(const tls_lab::hello_parts& base, const std::vector<mutation>& ms) {
  tls_lab::hello_parts p = base;
  if (!p.extensions) p.extensions.emplace();
  auto& ext = *p.extensions;
  const auto& names = name_pool();

  // 1. Structure.
  for (const mutation& m : ms) {
    const std::size_t n = ext.size();
    switch (m.what) {
      case kind::swap_extensions:
        if (n >= 2) std::swap(ext[m.a % n], ext[m.b % n]);
        break;
      case kind::duplicate_extension:
        if (n >= 1) {
          const tls_lab::extension copy = ext[m.a % n];
          ext.insert(ext.begin() + static_cast<std::ptrdiff_t>(m.b % (n + 1)), copy);
        }
        break;
      case kind::remove_extension:
        if (n >= 1) ext.erase(ext.begin() + static_cast<std::ptrdiff_t>(m.a % n));
        break;
      case kind::add_ech:
        ext.insert(ext.begin() + static_cast<std::ptrdiff_t>(m.b % (n + 1)),
                   {tls_lab::ext_encrypted_client_hello, bytes(m.a % 64, 0x07)});
        break;
      case kind::add_server_name_extension:
        ext.insert(ext.begin() + static_cast<std::ptrdiff_t>(m.b % (n + 1)),
                   {tls_lab::ext_server_name,
                    tls_lab::server_name_data({{0, tls_lab::to_bytes(names[m.a % names.size()])}})});
        break;
      case kind::sni_add_entry:
        with_server_name(p, [&](std::vector<tls_lab::name_entry>& e) {
          const tls_lab::name_entry extra{name_types[m.a % 4], tls_lab::to_bytes(names[(m.a / 4) % names.size()])};
          e.insert(e.begin() + static_cast<std::ptrdiff_t>(m.b % (e.size() + 1)), extra);
        });
        break;
      case kind::sni_duplicate_entry:
        with_server_name(p, [&](std::vector<tls_lab::name_entry>& e) {
          const tls_lab::name_entry copy = e[m.a % e.size()];
          e.insert(e.begin() + static_cast<std::ptrdiff_t>(m.b % (e.size() + 1)), copy);
        });
        break;
      case kind::sni_set_type:
        with_server_name(p, [&](std::vector<tls_lab::name_entry>& e) { e[m.a % e.size()].type = name_types[m.b % 4]; });
        break;
      case kind::sni_set_name:
        with_server_name(p, [&](std::vector<tls_lab::name_entry>& e) {
          e[m.a % e.size()].name = tls_lab::to_bytes(names[m.b % names.size()]);
        });
        break;
      case kind::sni_case:
        with_server_name(p, [&](std::vector<tls_lab::name_entry>& e) {
          auto& name = e[m.a % e.size()].name;
          for (std::size_t i = 0; i < name.size(); ++i) {
            if (((m.b >> (i % 32)) & 1) == 0) continue;
            const auto c = static_cast<unsigned char>(name[i]);
            name[i] = static_cast<std::uint8_t>(std::isupper(c) ? std::tolower(c) : std::toupper(c));
          }
        });
        break;
      case kind::message_trailing:
        p.trailing.insert(p.trailing.end(), 1 + m.a % 4, static_cast<std::uint8_t>(m.b));
        break;
      default:
        break;
    }
  }

  // 2. Length fields of the message.
  std::vector<tls_lab::length_field> fields;
  bytes message = tls_lab::join_message(p, &fields);
  for (const mutation& m : ms) {
    if (m.what != kind::length_delta) continue;
    const auto& f = fields[m.a % fields.size()];
    add_to_number(message, f.offset, f.width, (m.b & 1) ? 1 : -1);
  }

  // 3. Records.
  std::vector<std::size_t> cuts;
  std::uint16_t version = p.record_version;
  for (const mutation& m : ms) {
    if (m.what == kind::record_cut) cuts.push_back(m.a % (message.size() + 1));
    if (m.what == kind::record_version) version = record_versions[m.a % std::size(record_versions)];
  }
  mutant out;
  out.wire = tls_lab::frame(message, cuts, version);
  std::vector<std::size_t> headers;
  for (std::size_t pos = 0; pos < out.wire.size();) {
    headers.push_back(pos);
    pos += 5 + ((std::size_t{out.wire[pos + 3]} << 8) | out.wire[pos + 4]);
  }
  for (const mutation& m : ms) {
    if (m.what == kind::record_length_delta) {
      add_to_number(out.wire, headers[m.a % headers.size()] + 3, 2, (m.b & 1) ? 1 : -1);
    }
  }

  // 4. The stream.
  for (const mutation& m : ms) {
    if (m.what == kind::stream_trailing) out.wire.insert(out.wire.end(), 1 + m.a % 8, static_cast<std::uint8_t>(m.b));
  }
  for (const mutation& m : ms) {
    if (m.what == kind::truncate && !out.wire.empty()) out.wire.resize(m.a % out.wire.size());
  }
  for (const mutation& m : ms) {
    if (m.what == kind::feed_cut) out.feed_cuts.push_back(m.a % (out.wire.size() + 1));
  }
  std::sort(out.feed_cuts.begin(), out.feed_cuts.end());
  return out;
}

std::string describe(const std::vector<mutation>& ms) {
  std::ostringstream out;
  out << "[";
  for (std::size_t i = 0; i < ms.size(); ++i) {
    out << (i ? ", " : "") << kind_name(ms[i].what) << "(" << ms[i].a << "," << ms[i].b << ")";
  }
  out << "]";
  return out.str();
}

// ---------------------------------------------------------------------------------------
// Running one mutant

/// The parser under test: bytes (fed in the given pieces) -> result.
using parser_fn = std::function<hello_result(const mutant&)>;

hello_result parse_with_ours(const mutant& m) {
  client_hello_parser parser;
  std::size_t from = 0;
  hello_result r;
  std::vector<std::size_t> points = m.feed_cuts;
  points.push_back(m.wire.size());
  for (const std::size_t to : points) {
    r = parser.feed(std::span{m.wire}.subspan(from, to - from));
    from = to;
  }
  return r;
}

/// Bytes the watch releases when fed `prefix` whole and then the mutant in its pieces;
/// counts only the mutant's bytes.
std::size_t watch_releases(const bytes& prefix, const mutant& m) {
  handshake_watch w{connect_host(), false, false};
  if (!prefix.empty()) REQUIRE(w.feed_client(prefix).forward == prefix.size());
  std::size_t released = 0;
  std::size_t from = 0;
  std::vector<std::size_t> points = m.feed_cuts;
  points.push_back(m.wire.size());
  for (const std::size_t to : points) {
    released += w.feed_client(std::span{m.wire}.subspan(from, to - from)).forward;
    from = to;
  }
  return released;
}

bool same_name(const std::optional<std::string>& a, const std::optional<std::string>& b) {
  if (!a || !b) return !a && !b;
  return a->size() == b->size() && std::equal(a->begin(), a->end(), b->begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) == std::tolower(static_cast<unsigned char>(y));
         });
}

bool names_connect_host(const std::optional<std::string>& name) {
  if (!name) return false;
  const auto h = egress::common::normalize_host(*name, egress::common::host_syntax::bare);
  return h && h->text == connect_host().text;
}

std::string show(const std::vector<std::optional<std::string>>& names) {
  std::string out = "{";
  for (const auto& n : names) out += (n ? "\"" + *n + "\"" : std::string{"none"}) + " ";
  return out + "}";
}

struct tally {
  std::size_t cases = 0;
  std::size_t ours_complete = 0;
  std::size_t ours_accepted = 0;
  std::size_t openssl_accepted_when_we_accepted = 0;
  std::size_t watch_first_released = 0;
  std::size_t watch_second_released = 0;
};

/// The invariants for one mutant; empty when they hold, else what broke.
std::string check_mutant(SSL_CTX* server_ctx, const parser_fn& parse, const bytes& canonical, const mutant& m,
                         bool with_watch, tally* t) {
  if (t) ++t->cases;
  const hello_result ours = parse(m);
  tls_lab::server_verdict full;
  bool full_known = false;
  const auto oracle = [&]() -> const tls_lab::server_verdict& {
    if (!full_known) full = tls_lab::offer_to_openssl_server(server_ctx, m.wire);
    full_known = true;
    return full;
  };

  // A: the name we read is the name the server reads.
  if (ours.state == hello_state::complete) {
    if (t) ++t->ours_complete;
    const auto& v = oracle();
    if (v.callback_called && !v.rejected) {
      for (const auto& n : v.names) {
        if (!same_name(n, ours.server_name)) {
          return "A: parser read " + show({ours.server_name}) + ", OpenSSL's servername callback saw " + show(v.names);
        }
      }
    }
  }
  // B: accepted for the CONNECT host -> the server reads the CONNECT host.
  const bool accepted = egress::proxy::check_sni(ours, connect_host(), false, false).allowed;
  if (accepted) {
    if (t) ++t->ours_accepted;
    const auto& v = oracle();
    if (t && v.accepted) ++t->openssl_accepted_when_we_accepted;
    if (v.callback_called && !v.rejected) {
      for (const auto& n : v.names) {
        if (!names_connect_host(n)) return "B: accepted, OpenSSL's servername callback saw " + show(v.names);
      }
    }
  }
  if (!with_watch) return {};

  // C and D: what the watch releases, offered alone to a fresh server.
  const auto judge_release = [&](std::size_t released, const char* which) -> std::string {
    if (released == 0) return {};
    if (!accepted) return std::string(which) + ": the watch released " + std::to_string(released) +
                          " bytes of a hello parser + check refused";
    const bytes part(m.wire.begin(), m.wire.begin() + static_cast<std::ptrdiff_t>(released));
    const auto v = released == m.wire.size() ? oracle() : tls_lab::offer_to_openssl_server(server_ctx, part);
    if (v.callback_called && !v.rejected) {
      for (const auto& n : v.names) {
        if (!names_connect_host(n)) return std::string(which) + ": released bytes made OpenSSL see " + show(v.names);
      }
    }
    return {};
  };
  const std::size_t first = watch_releases({}, m);
  if (t && first) ++t->watch_first_released;
  if (auto why = judge_release(first, "C"); !why.empty()) return why;
  const std::size_t second = watch_releases(canonical, m);
  if (t && second) ++t->watch_second_released;
  return judge_release(second, "D");
}

/// Removes mutations while the failure persists; returns the minimal list.
std::vector<mutation> shrink(std::vector<mutation> ms, const std::function<bool(const std::vector<mutation>&)>& fails) {
  bool changed = true;
  while (changed) {
    changed = false;
    for (std::size_t i = 0; i < ms.size(); ++i) {
      std::vector<mutation> fewer = ms;
      fewer.erase(fewer.begin() + static_cast<std::ptrdiff_t>(i));
      if (fails(fewer)) {
        ms = std::move(fewer);
        changed = true;
        break;
      }
    }
  }
  return ms;
}

struct base_hello {
  std::string label;
  bytes wire;
  tls_lab::hello_parts parts;
};

std::vector<base_hello> base_hellos() {
  struct spec {
    std::string label;
    tls_lab::client_options options;
    std::string sni;
  };
  const std::vector<spec> specs{
      {"TLS 1.3", {}, connect_name},
      {"TLS 1.2 only, ALPN h2 + http/1.1", {TLS1_2_VERSION, TLS1_2_VERSION, "X25519:P-256", {"h2", "http/1.1"}, false, 0},
       connect_name},
      {"TLS 1.3, P-256 first, padding, mixed-case SNI", {TLS1_2_VERSION, TLS1_3_VERSION, "P-256:X25519", {}, true, 0},
       "Allowed.Example.ORG"},
      {"TLS 1.3, ALPN, SNI with trailing dot", {TLS1_2_VERSION, TLS1_3_VERSION, "X25519", {"http/1.1"}, false, 0},
       connect_name + "."},
      {"TLS 1.3, 1500-byte extension", {TLS1_2_VERSION, TLS1_3_VERSION, "X25519:P-256", {}, false, 1500}, connect_name},
      {"TLS 1.2 only, padding", {TLS1_2_VERSION, TLS1_2_VERSION, "P-256", {}, true, 0}, connect_name},
  };
  std::vector<base_hello> out;
  for (const auto& s : specs) {
    base_hello b;
    b.label = s.label;
    b.wire = tls_lab::openssl_client_hello(s.options, s.sni);
    auto parts = tls_lab::split_hello(b.wire);
    REQUIRE(parts);
    b.parts = std::move(*parts);
    REQUIRE(tls_lab::join_hello(b.parts) == b.wire);  // the surgery round-trips
    out.push_back(std::move(b));
  }
  return out;
}

std::uint64_t seed_from_env() {
  if (const char* s = std::getenv("EGRESS_MUTATION_SEED")) return std::strtoull(s, nullptr, 0);
  return (std::uint64_t{std::random_device{}()} << 32) | std::random_device{}();
}

std::size_t cases_from_env(std::size_t fallback) {
  if (const char* s = std::getenv("EGRESS_MUTATION_CASES")) return std::strtoull(s, nullptr, 0);
  return fallback;
}

std::vector<mutation> random_mutations(std::mt19937_64& rng) {
  std::vector<mutation> ms(1 + rng() % 4);
  for (auto& m : ms) {
    m.what = static_cast<kind>(rng() % kind_count);
    m.a = static_cast<std::uint32_t>(rng());
    m.b = static_cast<std::uint32_t>(rng());
  }
  return ms;
}

struct failure {
  std::string report;
  std::vector<mutation> minimal;
  /// Every mutation of `minimal` is needed: without any one of them the case passes.
  bool one_minimal = false;
};

/// Runs the differential for `parse` on `cases` mutants (at most 20 s); returns the first
/// failure, shrunk, or nullopt. `t` gets the figures.
std::optional<failure> run_differential(const parser_fn& parse, bool with_watch, std::uint64_t seed,
                                        std::size_t cases, tally& t) {
  const auto server_ctx = tls_lab::make_server_ctx();
  const auto bases = base_hellos();
  std::mt19937_64 rng{seed};
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  for (std::size_t i = 0; i < cases && std::chrono::steady_clock::now() < deadline; ++i) {
    const base_hello& base = bases[rng() % bases.size()];
    const std::vector<mutation> ms = random_mutations(rng);
    const auto fails = [&](const std::vector<mutation>& list) {
      return !check_mutant(server_ctx.get(), parse, base.wire, build(base.parts, list), with_watch, nullptr).empty();
    };
    const std::string why = check_mutant(server_ctx.get(), parse, base.wire, build(base.parts, ms), with_watch, &t);
    if (why.empty()) continue;
    const std::vector<mutation> minimal = shrink(ms, fails);
    const mutant m = build(base.parts, minimal);
    std::ostringstream report;
    report << "seed " << seed << " (EGRESS_MUTATION_SEED=" << seed << "), case " << i << ", base \"" << base.label
           << "\"\n  mutations " << describe(ms) << "\n  shrunk to " << describe(minimal) << "\n  "
           << check_mutant(server_ctx.get(), parse, base.wire, m, with_watch, nullptr) << "\n  wire "
           << tls_lab::hex(m.wire, 600);
    bool one_minimal = true;
    for (std::size_t k = 0; k < minimal.size(); ++k) {
      std::vector<mutation> fewer = minimal;
      fewer.erase(fewer.begin() + static_cast<std::ptrdiff_t>(k));
      if (fails(fewer)) one_minimal = false;
    }
    return failure{report.str(), minimal, one_minimal};
  }
  return std::nullopt;
}

/// A shortcut some proxies take: parse only the first record (or first read) and treat a
/// hello whose server_name is not in it as having none.
hello_result first_record_reader(const mutant& m) {
  hello_result r;
  const bytes& w = m.wire;
  if (w.size() < 5 + 4 + 38 || w[0] != 22) return r;
  const std::size_t record_end = std::min(w.size(), 5 + ((std::size_t{w[3]} << 8) | w[4]));
  std::size_t pos = 5 + 4 + 2 + 32;
  const auto skip = [&](std::size_t width) {
    if (pos + width > record_end) return false;
    std::size_t n = 0;
    for (std::size_t i = 0; i < width; ++i) n = (n << 8) | w[pos + i];
    pos += width + n;
    return pos <= record_end;
  };
  r.state = hello_state::complete;  // whatever follows, it "has no SNI" unless found below
  if (!skip(1) || !skip(2) || !skip(1) || pos + 2 > record_end) return r;
  pos += 2;
  while (pos + 4 <= record_end) {
    const std::size_t type = (std::size_t{w[pos]} << 8) | w[pos + 1];
    const std::size_t len = (std::size_t{w[pos + 2]} << 8) | w[pos + 3];
    pos += 4;
    if (type == 0 && pos + len <= record_end && len >= 5) {
      const std::size_t name_len = (std::size_t{w[pos + 3]} << 8) | w[pos + 4];
      if (pos + 5 + name_len <= record_end) {
        r.server_name = std::string(w.begin() + static_cast<std::ptrdiff_t>(pos + 5),
                                    w.begin() + static_cast<std::ptrdiff_t>(pos + 5 + name_len));
      }
      return r;
    }
    pos += len;
  }
  return r;
}

}  // namespace

TEST_CASE("canonical OpenSSL hellos: parser, check, watch and OpenSSL agree on the name", "[unit][mutation]") {
  const auto server_ctx = tls_lab::make_server_ctx();
  for (const auto& base : base_hellos()) {
    INFO(base.label);
    const mutant m{base.wire, {}};
    const hello_result ours = parse_with_ours(m);
    REQUIRE(ours.state == hello_state::complete);
    CHECK(egress::proxy::check_sni(ours, connect_host(), false, false).allowed);
    const auto v = tls_lab::offer_to_openssl_server(server_ctx.get(), base.wire);
    CHECK(v.accepted);
    REQUIRE(v.names.size() == 1);
    CHECK(same_name(v.names[0], ours.server_name));
    CHECK(watch_releases({}, m) == base.wire.size());
    CHECK(watch_releases(base.wire, m) == base.wire.size());
    CHECK(check_mutant(server_ctx.get(), parse_with_ours, base.wire, m, true, nullptr).empty());
  }
}

TEST_CASE("mutated ClientHellos: our parser, check_sni and the watch never pass a name OpenSSL's server would not "
          "read as the CONNECT host",
          "[unit][mutation]") {
  const std::uint64_t seed = seed_from_env();
  const std::size_t cases = cases_from_env(4000);
  tally t;
  const auto failed = run_differential(parse_with_ours, true, seed, cases, t);
  INFO("seed " << seed << ": " << t.cases << " mutants, parser complete " << t.ours_complete << ", accepted "
               << t.ours_accepted << " (OpenSSL accepted " << t.openssl_accepted_when_we_accepted
               << "), watch released as first hello " << t.watch_first_released << ", as second "
               << t.watch_second_released);
  std::printf("mutation differential: seed %llu, %zu mutants, parser complete %zu, parser+check accepted %zu "
              "(OpenSSL accepted %zu of them), watch released as first hello %zu, as second hello %zu\n",
              static_cast<unsigned long long>(seed), t.cases, t.ours_complete, t.ours_accepted,
              t.openssl_accepted_when_we_accepted, t.watch_first_released, t.watch_second_released);
  if (failed) FAIL(failed->report);
  // The mutations must reach both sides of the line, or the test proves nothing.
  CHECK(t.cases >= std::min<std::size_t>(cases, 200));
  CHECK(t.ours_accepted > t.cases / 20);
  CHECK(t.ours_accepted < t.cases);
  CHECK(t.watch_second_released > 0);
}

TEST_CASE("the differential catches a first-record-only SNI reader and shrinks the case to a record cut",
          "[unit][mutation]") {
  // A fixed seed unless one is given: this case checks the test machinery itself.
  const std::uint64_t seed = std::getenv("EGRESS_MUTATION_SEED") ? seed_from_env() : 1;
  tally t;
  const auto failed = run_differential(first_record_reader, false, seed, 3000, t);
  INFO("seed " << seed);
  REQUIRE(failed);
  INFO(failed->report);
  CHECK(failed->report.find("A: parser read {none }") != std::string::npos);
  CHECK(failed->one_minimal);
  CHECK(failed->minimal.size() < 4);
  CHECK(std::any_of(failed->minimal.begin(), failed->minimal.end(),
                    [](const mutation& m) { return m.what == kind::record_cut; }));
}
