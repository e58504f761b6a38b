// Unit tests of the DNS wire format (proxy/include/egress/proxy/dns_message.hpp) and the
// responder's policy (check_dns_question in acl.hpp): messages are built byte by byte
// here, independently of the code under test, so each test states the wire it means.
// No sockets.

#include "egress/proxy/acl.hpp"
#include "egress/proxy/dns_message.hpp"

#include <catch2/catch.hpp>

#include <cstdint>
#include <functional>
#include <random>
#include <string>
#include <vector>

using namespace egress;
namespace dns = egress::proxy::dns;
using bytes = std::vector<std::uint8_t>;

namespace {

constexpr std::uint16_t RD = 0x0100;

void put16(bytes& b, unsigned v) {
  b.push_back(static_cast<std::uint8_t>(v >> 8));
  b.push_back(static_cast<std::uint8_t>(v & 0xff));
}
void put32(bytes& b, std::uint32_t v) {
  put16(b, v >> 16);
  put16(b, v & 0xffff);
}
unsigned get16(const bytes& b, std::size_t at) { return (unsigned{b.at(at)} << 8) | b.at(at + 1); }
std::uint32_t get32(const bytes& b, std::size_t at) { return (std::uint32_t{get16(b, at)} << 16) | get16(b, at + 2); }

bytes header(unsigned id, unsigned flags, unsigned qd, unsigned an = 0, unsigned ns = 0, unsigned ar = 0) {
  bytes b;
  for (unsigned v : {id, flags, qd, an, ns, ar}) put16(b, v);
  return b;
}

// Dotted text to wire labels, written here (not through dns::encode_name) so the tests
// do not trust the code they test. "" is the root.
bytes wire_name(const std::string& dotted) {
  bytes b;
  std::size_t at = 0;
  while (at < dotted.size()) {
    auto dot = dotted.find('.', at);
    if (dot == std::string::npos) dot = dotted.size();
    b.push_back(static_cast<std::uint8_t>(dot - at));
    b.insert(b.end(), dotted.begin() + static_cast<std::ptrdiff_t>(at), dotted.begin() + static_cast<std::ptrdiff_t>(dot));
    at = dot + 1;
  }
  b.push_back(0);
  return b;
}

void append(bytes& b, const bytes& more) { b.insert(b.end(), more.begin(), more.end()); }

bytes opt_record(unsigned payload, unsigned version = 0, bool dnssec_ok = false, const bytes& options = {}) {
  bytes b{0};  // root owner
  put16(b, dns::type_opt);
  put16(b, payload);
  put32(b, (std::uint32_t{version} << 16) | (dnssec_ok ? 0x8000u : 0u));
  put16(b, static_cast<unsigned>(options.size()));
  append(b, options);
  return b;
}

// A standard query for `name`/`type`, RD set, with an OPT record when `payload` > 0.
bytes query(const std::string& name, unsigned type = dns::type_a, unsigned payload = 0, unsigned id = 0xbeef,
            unsigned flags = RD) {
  bytes b = header(id, flags, 1, 0, 0, payload ? 1 : 0);
  append(b, wire_name(name));
  put16(b, type);
  put16(b, dns::class_in);
  if (payload) append(b, opt_record(payload));
  return b;
}

dns::parse_result parse(const bytes& b) { return dns::parse_query(b); }

std::string wire_str(const std::string& dotted) {
  const bytes b = wire_name(dotted);
  return std::string(b.begin(), b.end());
}

// A name of exactly `total` wire bytes (length octets and root included), labels of 63.
std::string name_of_wire_length(std::size_t total) {
  std::string dotted;
  std::size_t left = total - 1;  // the root label
  while (left > 0) {
    const std::size_t label = std::min<std::size_t>(63, left - 1);
    if (!dotted.empty()) dotted += '.';
    dotted += std::string(label, 'a');
    left -= label + 1;
  }
  return dotted;
}

struct response_view {
  unsigned id, flags, qd, an, ns, ar;
  unsigned rcode() const { return flags & 0xf; }
  bool qr() const { return flags & 0x8000; }
  bool aa() const { return flags & 0x0400; }
  bool tc() const { return flags & 0x0200; }
  bool rd() const { return flags & 0x0100; }
  bool ra() const { return flags & 0x0080; }
  unsigned opcode() const { return (flags >> 11) & 0xf; }
};

response_view view(const bytes& b) {
  REQUIRE(b.size() >= 12);
  return {get16(b, 0), get16(b, 2), get16(b, 4), get16(b, 6), get16(b, 8), get16(b, 10)};
}

bytes respond(const dns::query& q, dns::rcode rc, std::vector<boost::asio::ip::address> answers = {},
              std::size_t limit = 65535) {
  bytes out;
  dns::build_response(out, q, rc, answers, std::chrono::seconds(5), limit);
  return out;
}

common::allow_entry entry(const char* pattern, std::vector<std::uint16_t> ports = {443}) {
  common::allow_entry e;
  e.pattern = *common::parse_host_pattern(pattern);
  e.ports = std::move(ports);
  return e;
}

common::config responder_config() {
  common::config c;
  c.has_proxy = true;
  c.proxy.capture = common::capture_mode::dns;
  c.proxy.dns.answer_ipv4 = boost::asio::ip::make_address("127.0.0.1");
  c.proxy.dns.cluster_domains = {"cluster.local"};
  c.proxy.dns.cluster_dns = {"10.96.0.10"};
  c.allowlist = {entry("www.wikidata.org"), entry("*.wikimedia.org", {8443}), entry("185.15.59.224")};
  return c;
}

dns::question Q(const std::string& dotted, std::uint16_t type = dns::type_a, std::uint16_t klass = dns::class_in) {
  return {wire_str(dotted), type, klass};
}

}  // namespace

TEST_CASE("dns: a standard query parses; header fields and the question as sent", "[unit][proxy][dns]") {
  const auto r = parse(query("www.wikidata.org", dns::type_aaaa, 0, 0x1234));
  REQUIRE(r.status == dns::parse_status::ok);
  CHECK(r.reason == "ok");
  CHECK(r.msg.id == 0x1234);
  CHECK(r.msg.rd);
  CHECK_FALSE(r.msg.cd);
  REQUIRE(r.msg.q);
  CHECK(r.msg.q->name == wire_str("www.wikidata.org"));
  CHECK(r.msg.q->type == dns::type_aaaa);
  CHECK(r.msg.q->klass == dns::class_in);
  CHECK_FALSE(r.msg.opt);
  CHECK(dns::udp_limit(r.msg) == 512);
}

TEST_CASE("dns: names compare case-insensitively and the question is echoed with its case", "[unit][proxy][dns]") {
  const auto r = parse(query("wWw.WikiData.ORG"));
  REQUIRE(r.status == dns::parse_status::ok);
  CHECK(dns::names_equal(r.msg.q->name, wire_str("www.wikidata.org")));
  CHECK_FALSE(dns::names_equal(r.msg.q->name, wire_str("www.wikidata.org.evil")));
  CHECK(dns::name_presentation(r.msg.q->name) == "www.wikidata.org");
  const auto cfg = responder_config();
  CHECK(proxy::check_dns_question(cfg, *r.msg.q) == proxy::dns_decision{proxy::dns_action::answer, true, "allowlisted"});
  const bytes out = respond(r.msg, dns::rcode::noerror, {boost::asio::ip::make_address("127.0.0.1")});
  const bytes sent_name = wire_name("wWw.WikiData.ORG");
  CHECK(bytes(out.begin() + 12, out.begin() + 12 + static_cast<std::ptrdiff_t>(sent_name.size())) == sent_name);
}

TEST_CASE("dns: the root label is the trailing dot; the root itself is no host", "[unit][proxy][dns]") {
  CHECK(dns::encode_name("www.wikidata.org.") == dns::encode_name("www.wikidata.org"));
  CHECK(dns::encode_name("www.wikidata.org") == wire_str("www.wikidata.org"));
  CHECK_FALSE(dns::encode_name("www..org"));
  CHECK_FALSE(dns::encode_name("www.org.."));
  CHECK(dns::name_dotted(wire_str("www.wikidata.org")) == "www.wikidata.org");
  const auto root = parse(query(""));
  REQUIRE(root.status == dns::parse_status::ok);
  CHECK(root.msg.q->name == std::string(1, '\0'));
  CHECK(dns::name_presentation(root.msg.q->name) == ".");
  CHECK(dns::name_dotted(root.msg.q->name) == "");
  const auto cfg = responder_config();
  CHECK(proxy::check_dns_question(cfg, *root.msg.q).action == proxy::dns_action::nodata);  // above every name
}

TEST_CASE("dns: QDCOUNT 0 and 2 get FORMERR without a question", "[unit][proxy][dns]") {
  for (unsigned qd : {0u, 2u}) {
    CAPTURE(qd);
    bytes b = header(0x4242, RD, qd);
    if (qd == 2) {
      for (int i = 0; i < 2; ++i) {
        append(b, wire_name("www.wikidata.org"));
        put16(b, 1);
        put16(b, 1);
      }
    }
    const auto r = parse(b);
    REQUIRE(r.status == dns::parse_status::reply);
    CHECK(r.error == dns::rcode::formerr);
    CHECK(r.reason == "qdcount_not_one");
    CHECK_FALSE(r.msg.q);
    const auto v = view(respond(r.msg, r.error));
    CHECK(v.id == 0x4242);
    CHECK(v.qr());
    CHECK(v.rd());
    CHECK_FALSE(v.ra());
    CHECK_FALSE(v.aa());
    CHECK(v.rcode() == 1);
    CHECK(v.qd == 0);
    CHECK(v.an == 0);
  }
}

TEST_CASE("dns: a response (QR=1) and a message shorter than a header are dropped", "[unit][proxy][dns]") {
  const auto r = parse(query("www.wikidata.org", 1, 0, 7, 0x8000 | RD));
  CHECK(r.status == dns::parse_status::drop);
  CHECK(r.reason == "response");
  for (std::size_t n = 0; n < 12; ++n) {
    CAPTURE(n);
    const auto s = parse(bytes(n, 0));
    CHECK(s.status == dns::parse_status::drop);
    CHECK(s.reason == "short_header");
  }
}

TEST_CASE("dns: an opcode other than QUERY gets NOTIMP with the opcode echoed", "[unit][proxy][dns]") {
  for (unsigned opcode : {1u, 2u, 4u, 5u, 15u}) {
    CAPTURE(opcode);
    const auto r = parse(query("www.wikidata.org", 1, 0, 9, (opcode << 11) | RD));
    REQUIRE(r.status == dns::parse_status::reply);
    CHECK(r.error == dns::rcode::notimp);
    CHECK(r.reason == "opcode_not_query");
    const auto v = view(respond(r.msg, r.error));
    CHECK(v.opcode() == opcode);
    CHECK(v.rcode() == 4);
    CHECK(v.qd == 0);
  }
}

TEST_CASE("dns: every truncation of a valid query is refused, never read past", "[unit][proxy][dns]") {
  const bytes full = query("api.www.wikidata.org", dns::type_https, 1232);
  REQUIRE(parse(full).status == dns::parse_status::ok);
  for (std::size_t n = 0; n < full.size(); ++n) {
    CAPTURE(n);
    const bytes cut(full.begin(), full.begin() + static_cast<std::ptrdiff_t>(n));
    const auto r = parse(cut);
    if (n < 12) {
      CHECK(r.status == dns::parse_status::drop);
    } else {
      REQUIRE(r.status == dns::parse_status::reply);
      CHECK(r.error == dns::rcode::formerr);
      CHECK((r.reason == "name_truncated" || r.reason == "question_truncated" || r.reason == "record_truncated"));
    }
  }
  bytes longer = full;
  longer.push_back(0);
  const auto t = parse(longer);
  CHECK(t.status == dns::parse_status::reply);
  CHECK(t.reason == "trailing_bytes");
  CHECK(t.msg.q);  // what parsed is echoed with the FORMERR
}

TEST_CASE("dns: compression pointers must point backwards, never loop, never into the header", "[unit][proxy][dns]") {
  SECTION("the question pointing at itself") {
    bytes b = header(1, RD, 1);
    b.insert(b.end(), {0xc0, 0x0c, 0, 1, 0, 1});
    CHECK(parse(b).reason == "pointer_not_backwards");
  }
  SECTION("a forward pointer") {
    bytes b = header(1, RD, 1);
    b.insert(b.end(), {0xc0, 0x12, 0, 1, 0, 1, 3, 'o', 'r', 'g', 0});
    CHECK(parse(b).reason == "pointer_not_backwards");
  }
  SECTION("a pointer into the header") {
    bytes b = header(1, RD, 1);
    b.insert(b.end(), {1, 'a', 0xc0, 0x04, 0, 1, 0, 1});
    CHECK(parse(b).reason == "pointer_into_header");
  }
  SECTION("a pointer back to the start of its own name (a loop)") {
    bytes b = query("www.wikidata.org", 1, 0, 1);
    b[11] = 1;  // ARCOUNT 1
    const std::size_t owner = b.size();
    b.insert(b.end(), {1, 'x', 0xc0, static_cast<std::uint8_t>(owner)});
    b.insert(b.end(), {0, 16, 0, 1, 0, 0, 0, 0, 0, 0});
    CHECK(parse(b).reason == "pointer_not_backwards");
  }
  SECTION("two names pointing at each other (a loop through a forward hop)") {
    bytes b = query("www.wikidata.org", 1, 0, 1);
    b[11] = 2;
    const std::size_t first = b.size();
    const std::size_t second = first + 4 + 10;
    b.insert(b.end(), {1, 'x', 0xc0, static_cast<std::uint8_t>(second)});
    b.insert(b.end(), {0, 16, 0, 1, 0, 0, 0, 0, 0, 0});
    b.insert(b.end(), {1, 'y', 0xc0, static_cast<std::uint8_t>(first)});
    b.insert(b.end(), {0, 16, 0, 1, 0, 0, 0, 0, 0, 0});
    CHECK(parse(b).reason == "pointer_not_backwards");
  }
  SECTION("a chain of backward pointers is fine") {
    bytes b = query("www.wikidata.org", 1, 0, 1);
    b[11] = 2;
    const std::size_t first = b.size();
    b.insert(b.end(), {1, 'x', 0xc0, 0x0c});  // x.www.wikidata.org
    b.insert(b.end(), {0, 16, 0, 1, 0, 0, 0, 0, 0, 0});
    b.insert(b.end(), {1, 'y', 0xc0, static_cast<std::uint8_t>(first)});  // y.x.www.wikidata.org
    b.insert(b.end(), {0, 16, 0, 1, 0, 0, 0, 0, 0, 0});
    CHECK(parse(b).status == dns::parse_status::ok);
  }
  SECTION("a pointer whose expansion passes 255 bytes") {
    const std::string long_name = name_of_wire_length(250);
    bytes b = query(long_name, 1, 0, 1);
    b[11] = 1;
    b.insert(b.end(), {5, 'a', 'b', 'c', 'd', 'e', 0xc0, 0x0c});  // 6 + 250 = 256
    b.insert(b.end(), {0, 16, 0, 1, 0, 0, 0, 0, 0, 0});
    CHECK(parse(b).reason == "name_too_long");
  }
}

TEST_CASE("dns: names of 255 bytes and labels of 63 pass; 256 bytes and 64-byte labels do not", "[unit][proxy][dns]") {
  const std::string n255 = name_of_wire_length(255);
  REQUIRE(wire_name(n255).size() == 255);
  const auto ok = parse(query(n255));
  REQUIRE(ok.status == dns::parse_status::ok);
  CHECK(dns::name_dotted(ok.msg.q->name)->size() == 253);
  CHECK(dns::encode_name(n255));

  const std::string n256 = name_of_wire_length(256);
  REQUIRE(wire_name(n256).size() == 256);
  CHECK(parse(query(n256)).reason == "name_too_long");
  CHECK_FALSE(dns::encode_name(n256));

  CHECK(parse(query(std::string(63, 'b') + ".org")).status == dns::parse_status::ok);
  // A 64-byte label cannot be written: its length octet 0x40 is the extended label type
  // (RFC 6891 §5), 0x80 is reserved.
  CHECK(parse(query(std::string(64, 'b') + ".org")).reason == "label_type");
  bytes reserved = header(1, RD, 1);
  reserved.insert(reserved.end(), {0x80, 'a', 0, 0, 1, 0, 1});
  CHECK(parse(reserved).reason == "label_type");
  CHECK_FALSE(dns::encode_name(std::string(64, 'b') + ".org"));
}

TEST_CASE("dns: EDNS payload size, DO bit, BADVERS, one OPT with a root owner", "[unit][proxy][dns]") {
  SECTION("payload size as requested, 512 at least") {
    const auto big = parse(query("www.wikidata.org", 1, 4096));
    REQUIRE(big.msg.opt);
    CHECK(big.msg.opt->udp_payload == 4096);
    CHECK(dns::udp_limit(big.msg) == 4096);
    CHECK(dns::udp_limit(parse(query("www.wikidata.org", 1, 100)).msg) == 512);
  }
  SECTION("the response echoes an OPT with our payload size and the DO bit") {
    bytes b = header(5, RD, 1, 0, 0, 1);
    append(b, wire_name("www.wikidata.org"));
    put16(b, 1);
    put16(b, 1);
    append(b, opt_record(1400, 0, true, {0, 10, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8}));  // a client cookie
    const auto r = parse(b);
    REQUIRE(r.status == dns::parse_status::ok);
    CHECK(r.msg.opt == dns::edns{1400, 0, true});
    const bytes out = respond(r.msg, dns::rcode::noerror);
    const auto v = view(out);
    CHECK(v.ar == 1);
    const bytes opt(out.end() - 11, out.end());
    CHECK(opt[0] == 0);
    CHECK(get16(opt, 1) == dns::type_opt);
    CHECK(get16(opt, 3) == dns::advertised_udp_payload);
    CHECK(get32(opt, 5) == 0x8000);  // ext-rcode 0, version 0, DO
    CHECK(get16(opt, 9) == 0);
  }
  SECTION("version 1 gets BADVERS: 0 in the header, 1 in the OPT's extended RCODE") {
    bytes b = header(6, RD, 1, 0, 0, 1);
    append(b, wire_name("www.wikidata.org"));
    put16(b, 1);
    put16(b, 1);
    append(b, opt_record(1232, 1));
    const auto r = parse(b);
    REQUIRE(r.status == dns::parse_status::reply);
    CHECK(r.error == dns::rcode::badvers);
    CHECK(r.reason == "edns_version");
    const bytes out = respond(r.msg, r.error);
    const auto v = view(out);
    CHECK(v.rcode() == 0);
    CHECK(v.qd == 1);
    CHECK(v.ar == 1);
    CHECK(get32(bytes(out.end() - 11, out.end()), 5) == 0x01000000);  // ext-rcode 1 (16 >> 4), version 0
  }
  SECTION("two OPT records: FORMERR") {
    bytes b = query("www.wikidata.org", 1, 1232);
    b[11] = 2;
    append(b, opt_record(1232));
    const auto r = parse(b);
    CHECK(r.reason == "opt_duplicate");
    CHECK_FALSE(r.msg.opt);
  }
  SECTION("an OPT owned by another name: FORMERR") {
    bytes b = header(7, RD, 1, 0, 0, 1);
    append(b, wire_name("www.wikidata.org"));
    put16(b, 1);
    put16(b, 1);
    b.insert(b.end(), {0xc0, 0x0c});
    const bytes rest = opt_record(1232);
    b.insert(b.end(), rest.begin() + 1, rest.end());
    CHECK(parse(b).reason == "opt_not_root");
  }
  SECTION("options that do not fill the OPT's RDATA: FORMERR") {
    bytes b = header(8, RD, 1, 0, 0, 1);
    append(b, wire_name("www.wikidata.org"));
    put16(b, 1);
    put16(b, 1);
    append(b, opt_record(1232, 0, false, {0, 10, 0, 8, 1, 2, 3}));
    CHECK(parse(b).reason == "opt_options_malformed");
  }
}

TEST_CASE("dns: answer or authority records in a query: FORMERR", "[unit][proxy][dns]") {
  bytes b = query("www.wikidata.org");
  b[7] = 1;  // ANCOUNT
  CHECK(parse(b).reason == "records_in_query");
  b[7] = 0;
  b[9] = 1;  // NSCOUNT
  CHECK(parse(b).reason == "records_in_query");
}

TEST_CASE("dns: A and AAAA answers, flags AA=1 RA=0, ID and RD copied", "[unit][proxy][dns]") {
  const auto r = parse(query("www.wikidata.org", dns::type_a, 0, 0xabcd));
  const bytes out = respond(r.msg, dns::rcode::noerror,
                            {boost::asio::ip::make_address("127.0.0.1"), boost::asio::ip::make_address("fd00::1")});
  const auto v = view(out);
  CHECK(v.id == 0xabcd);
  CHECK(v.qr());
  CHECK(v.aa());
  CHECK(v.rd());
  CHECK_FALSE(v.ra());
  CHECK_FALSE(v.tc());
  CHECK(v.rcode() == 0);
  CHECK((v.qd == 1 && v.an == 2 && v.ns == 0 && v.ar == 0));
  std::size_t at = 12 + wire_name("www.wikidata.org").size() + 4;
  CHECK(get16(out, at) == 0xc00c);
  CHECK(get16(out, at + 2) == dns::type_a);
  CHECK(get16(out, at + 4) == dns::class_in);
  CHECK(get32(out, at + 6) == 5);
  CHECK(get16(out, at + 10) == 4);
  CHECK(bytes(out.begin() + static_cast<std::ptrdiff_t>(at + 12), out.begin() + static_cast<std::ptrdiff_t>(at + 16)) ==
        bytes{127, 0, 0, 1});
  at += 16;
  CHECK(get16(out, at + 2) == dns::type_aaaa);
  CHECK(get16(out, at + 10) == 16);
  CHECK(out.size() == at + 28);
  CHECK(dns::is_response_to(out, 0xabcd, *r.msg.q));
}

TEST_CASE("dns: NXDOMAIN and NODATA carry no authority section (no SOA)", "[unit][proxy][dns]") {
  const auto r = parse(query("example.org"));
  const auto nx = view(respond(r.msg, dns::rcode::nxdomain));
  CHECK((nx.rcode() == 3 && nx.aa() && nx.an == 0 && nx.ns == 0 && nx.qd == 1));
  const auto nodata = view(respond(r.msg, dns::rcode::noerror));
  CHECK((nodata.rcode() == 0 && nodata.aa() && nodata.an == 0 && nodata.ns == 0));
  const auto refused = view(respond(r.msg, dns::rcode::refused));
  CHECK((refused.rcode() == 5 && !refused.aa()));
  const auto servfail = view(respond(r.msg, dns::rcode::servfail));
  CHECK((servfail.rcode() == 2 && !servfail.aa() && !servfail.ra()));
}

TEST_CASE("dns: an answer larger than the client's UDP limit gets TC=1 and no records", "[unit][proxy][dns]") {
  std::vector<boost::asio::ip::address> many;
  for (int i = 1; i <= 40; ++i) many.push_back(boost::asio::ip::make_address("fd00::" + std::to_string(i)));
  SECTION("without EDNS: 512") {
    const auto r = parse(query("www.wikidata.org", dns::type_aaaa));
    bytes out;
    CHECK(dns::build_response(out, r.msg, dns::rcode::noerror, many, std::chrono::seconds(5), dns::udp_limit(r.msg)));
    const auto v = view(out);
    CHECK(v.tc());
    CHECK((v.an == 0 && v.qd == 1 && v.ar == 0));
    CHECK(out.size() <= 512);
    CHECK(dns::is_response_to(out, r.msg.id, *r.msg.q));
  }
  SECTION("with EDNS 4096: it fits") {
    const auto r = parse(query("www.wikidata.org", dns::type_aaaa, 4096));
    bytes out;
    CHECK_FALSE(dns::build_response(out, r.msg, dns::rcode::noerror, many, std::chrono::seconds(5), dns::udp_limit(r.msg)));
    CHECK(view(out).an == 40);
    CHECK(out.size() > 512);
  }
  SECTION("with EDNS 600: truncated, the OPT kept (RFC 6891 §7)") {
    const auto r = parse(query("www.wikidata.org", dns::type_aaaa, 600));
    bytes out;
    CHECK(dns::build_response(out, r.msg, dns::rcode::noerror, many, std::chrono::seconds(5), dns::udp_limit(r.msg)));
    const auto v = view(out);
    CHECK((v.tc() && v.an == 0 && v.ar == 1));
  }
  SECTION("build_truncated: the stand-in for a relayed answer") {
    const auto r = parse(query("svc.cluster.local", dns::type_a, 1232));
    bytes out;
    dns::build_truncated(out, r.msg, dns::rcode::nxdomain);
    const auto v = view(out);
    CHECK((v.tc() && v.an == 0 && v.qd == 1 && v.ar == 1 && v.rcode() == 3));
  }
}

TEST_CASE("dns: forwarded query and the answer check (ID, QR, question, any case)", "[unit][proxy][dns]") {
  bytes b = header(0x1111, RD | 0x0010, 1, 0, 0, 1);  // RD and CD
  append(b, wire_name("Kube-DNS.kube-system.svc.cluster.local"));
  put16(b, dns::type_a);
  put16(b, dns::class_in);
  append(b, opt_record(4096, 0, true, {0, 8, 0, 4, 0, 1, 24, 0}));  // ECS: not passed on
  const auto r = parse(b);
  REQUIRE(r.status == dns::parse_status::ok);
  bytes fwd;
  dns::build_forward_query(fwd, r.msg, 0x2222, 1232);
  const auto f = parse(fwd);
  REQUIRE(f.status == dns::parse_status::ok);
  CHECK(f.msg.id == 0x2222);
  CHECK((f.msg.rd && f.msg.cd));
  CHECK(f.msg.q == r.msg.q);
  CHECK(f.msg.opt == dns::edns{1232, 0, true});
  CHECK(fwd.size() == 12 + r.msg.q->name.size() + 4 + 11);  // no option of the client's

  bytes answer = header(0x2222, 0x8000 | RD | 0x0080, 1);
  append(answer, wire_name("kube-dns.KUBE-SYSTEM.svc.cluster.local"));
  put16(answer, dns::type_a);
  put16(answer, dns::class_in);
  CHECK(dns::is_response_to(answer, 0x2222, *r.msg.q));
  CHECK_FALSE(dns::is_response_to(answer, 0x2223, *r.msg.q));
  bytes not_response = answer;
  not_response[2] &= 0x7f;
  CHECK_FALSE(dns::is_response_to(not_response, 0x2222, *r.msg.q));
  bytes other_type = answer;
  other_type[other_type.size() - 3] = dns::type_aaaa;
  CHECK_FALSE(dns::is_response_to(other_type, 0x2222, *r.msg.q));
  CHECK_FALSE(dns::is_response_to(bytes(answer.begin(), answer.end() - 1), 0x2222, *r.msg.q));
  dns::set_id(answer, 0x1111);
  CHECK(get16(answer, 0) == 0x1111);
}

TEST_CASE("dns: at-or-under compares whole labels, any case", "[unit][proxy][dns]") {
  CHECK(dns::name_at_or_under(wire_str("cluster.local"), "cluster.local"));
  CHECK(dns::name_at_or_under(wire_str("a.svc.CLUSTER.Local"), "cluster.local"));
  CHECK_FALSE(dns::name_at_or_under(wire_str("evilcluster.local"), "cluster.local"));
  CHECK_FALSE(dns::name_at_or_under(wire_str("local"), "cluster.local"));
  CHECK_FALSE(dns::name_at_or_under(wire_str("cluster.local.evil.org"), "cluster.local"));
  // one label "cluster.local" (a '.' byte inside a label) is not two labels
  std::string one_label = std::string(1, '\x0d') + "cluster.local" + std::string(1, '\0');
  CHECK_FALSE(dns::name_at_or_under(one_label, "cluster.local"));
  CHECK_FALSE(dns::name_dotted(one_label));
  CHECK(dns::name_presentation(one_label) == "cluster\\.local");
  CHECK(dns::name_presentation(std::string("\x03" "a\x01\\\x00", 5)) == "a\\001\\\\");
}

TEST_CASE("dns policy: allowlisted names, cluster names, HTTPS withheld, everything else NXDOMAIN", "[unit][proxy][dns]") {
  using proxy::dns_action;
  using proxy::dns_decision;
  auto cfg = responder_config();
  const auto check = [&](const dns::question& q) { return proxy::check_dns_question(cfg, q); };
  CHECK(check(Q("www.wikidata.org")) == dns_decision{dns_action::answer, true, "allowlisted"});
  CHECK(check(Q("WWW.WIKIDATA.ORG")) == dns_decision{dns_action::answer, true, "allowlisted"});
  CHECK(check(Q("upload.wikimedia.org")) == dns_decision{dns_action::answer, true, "allowlisted"});  // any port
  CHECK(check(Q("a.b.wikimedia.org")) == dns_decision{dns_action::answer, true, "allowlisted"});
  CHECK(check(Q("www.wikidata.org", dns::type_aaaa)) == dns_decision{dns_action::nodata, true, "allowlisted_nodata"});
  cfg.proxy.dns.answer_ipv6 = boost::asio::ip::make_address("::1");
  CHECK(check(Q("www.wikidata.org", dns::type_aaaa)) == dns_decision{dns_action::answer, true, "allowlisted"});
  cfg.proxy.dns.answer_ipv4.reset();
  CHECK(check(Q("www.wikidata.org", dns::type_a)) == dns_decision{dns_action::nodata, true, "allowlisted_nodata"});
  CHECK(check(Q("www.wikidata.org", dns::type_https)) == dns_decision{dns_action::nodata, false, "https_record_withheld"});
  CHECK(check(Q("www.wikidata.org", dns::type_svcb)) == dns_decision{dns_action::nodata, false, "https_record_withheld"});
  CHECK(check(Q("www.wikidata.org", 16)) == dns_decision{dns_action::nodata, true, "allowlisted_nodata"});  // TXT
  CHECK(check(Q("www.wikidata.org", dns::type_any)) == dns_decision{dns_action::nodata, true, "allowlisted_nodata"});

  CHECK(check(Q("kube-dns.kube-system.svc.cluster.local")) == dns_decision{dns_action::forward, true, "cluster_forward"});
  CHECK(check(Q("_http._tcp.web.default.svc.Cluster.Local", 33)) ==
        dns_decision{dns_action::forward, true, "cluster_forward"});
  // a search-list expansion of an allowlisted name goes to the cluster DNS
  CHECK(check(Q("www.wikidata.org.default.svc.cluster.local")) ==
        dns_decision{dns_action::forward, true, "cluster_forward"});

  const dns_decision nx{dns_action::nxdomain, false, "name_not_allowed"};
  CHECK(check(Q("example.org")) == nx);
  CHECK(check(Q("evilwikidata.org")) == nx);
  CHECK(check(Q("www.wikidata.org.evil.example")) == nx);
  CHECK(check(Q("evilcluster.local")) == nx);
  CHECK(check(Q("185.15.59.224")) == nx);  // an IP-literal entry is no name
  CHECK(check(Q("127.1")) == nx);
  CHECK(check(Q("under_score.wikidata.org")) == nx);
  CHECK(check(Q("x.www.wikidata.org")) == nx);  // exact entries match no name below
  // above an allowlisted name or a cluster domain: it exists (an empty non-terminal)
  const dns_decision ent{dns_action::nodata, false, "name_not_allowed"};
  CHECK(check(Q("wikidata.org")) == ent);
  CHECK(check(Q("wikimedia.org")) == ent);  // the apex of a wildcard entry
  CHECK(check(Q("org")) == ent);
  CHECK(check(Q("local")) == ent);

  CHECK(check(Q("www.wikidata.org", dns::type_a, 3)) == dns_decision{dns_action::refused, false, "class_not_in"});
  CHECK(check(Q("cluster.local", dns::type_axfr)) == dns_decision{dns_action::refused, false, "zone_transfer_refused"});
  CHECK(check(Q("www.wikidata.org", dns::type_ixfr)) == dns_decision{dns_action::refused, false, "zone_transfer_refused"});
  cfg.proxy.dns.cluster_domains.clear();
  CHECK(check(Q("kube-dns.kube-system.svc.cluster.local")) == nx);  // no cluster domains: nothing forwarded
}

TEST_CASE("dns: a label with a '.' byte never matches a two-label allowlist entry", "[unit][proxy][dns]") {
  const auto cfg = responder_config();
  dns::question q{std::string(1, '\x03') + "www" + std::string(1, '\x0c') + "wikidata.org" + std::string(1, '\0'),
                  dns::type_a, dns::class_in};
  CHECK(proxy::check_dns_question(cfg, q).action == proxy::dns_action::nxdomain);
}

// Generated queries: random names (labels of 1..63 random LDH bytes, up to 255 bytes in
// all), types, IDs, flags and EDNS; each must parse back to what was written, and its
// response must answer it. Seeded (printed on failure), 2000 cases; a failing name is
// shrunk (labels dropped, then shortened) before it is reported.
TEST_CASE("dns: generated queries round-trip through parse and respond", "[unit][proxy][dns]") {
  const std::uint32_t seed = std::random_device{}();
  INFO("seed " << seed << " (rerun: replace the seed with it)");
  std::mt19937 rng(seed);
  static constexpr char ldh[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-";
  const auto fails = [](const std::vector<std::string>& labels, unsigned type, unsigned payload) -> std::string {
    std::string dotted;
    for (const auto& l : labels) dotted += (dotted.empty() ? "" : ".") + l;
    const bytes b = query(dotted, type, payload, 0x5151);
    const auto r = parse(b);
    if (r.status != dns::parse_status::ok) return "parse: " + std::string(r.reason);
    if (r.msg.q->name != wire_str(dotted) || r.msg.q->type != type) return "question differs";
    if (payload && (!r.msg.opt || r.msg.opt->udp_payload != payload)) return "edns differs";
    if (dns::name_dotted(r.msg.q->name) != dotted) return "dotted form differs";
    bytes out;
    dns::build_response(out, r.msg, dns::rcode::noerror, std::vector{boost::asio::ip::make_address("127.0.0.1")},
                        std::chrono::seconds(5), dns::udp_limit(r.msg));
    if (!dns::is_response_to(out, 0x5151, *r.msg.q)) return "response does not answer it";
    if (out.size() > dns::udp_limit(r.msg)) return "response over the limit";
    return {};
  };
  for (int i = 0; i < 2000; ++i) {
    std::vector<std::string> labels;
    std::size_t total = 1;
    const std::size_t want = std::uniform_int_distribution<std::size_t>(1, 255)(rng);
    while (true) {
      const std::size_t len = std::uniform_int_distribution<std::size_t>(1, 63)(rng);
      if (total + len + 1 > want) break;
      std::string l;
      for (std::size_t k = 0; k < len; ++k) l += ldh[std::uniform_int_distribution<std::size_t>(0, sizeof ldh - 2)(rng)];
      labels.push_back(l);
      total += len + 1;
    }
    const unsigned type = std::uniform_int_distribution<unsigned>(1, 65535)(rng);
    const unsigned payload = rng() % 2 ? std::uniform_int_distribution<unsigned>(1, 65535)(rng) : 0;
    std::string why = fails(labels, type, payload);
    if (why.empty()) continue;
    // shrink: drop labels, then shorten them, while it still fails
    for (bool progress = true; progress;) {
      progress = false;
      for (std::size_t k = 0; k < labels.size() && !progress; ++k) {
        auto fewer = labels;
        fewer.erase(fewer.begin() + static_cast<std::ptrdiff_t>(k));
        if (!fails(fewer, type, payload).empty()) labels = fewer, progress = true;
      }
      for (std::size_t k = 0; k < labels.size() && !progress; ++k)
        if (labels[k].size() > 1) {
          auto shorter = labels;
          shorter[k].pop_back();
          if (!fails(shorter, type, payload).empty()) labels = shorter, progress = true;
        }
    }
    std::string dotted;
    for (const auto& l : labels) dotted += (dotted.empty() ? "" : ".") + l;
    FAIL("case " << i << ": " << fails(labels, type, payload) << " for name \"" << dotted << "\" type " << type
                 << " payload " << payload);
  }
}
