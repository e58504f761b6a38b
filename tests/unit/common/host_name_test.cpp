#include "egress/common/host_name.hpp"

#include <catch2/catch.hpp>

using egress::common::host_error;
using egress::common::host_kind;
using egress::common::host_syntax;
using egress::common::normalize_host;
using egress::common::parse_host_pattern;

namespace {
struct ok_case {
  const char* input;
  const char* text;
  host_kind kind;
};
struct bad_case {
  const char* input;
  host_error error;
};
}  // namespace

TEST_CASE("normalize_host folds case and one trailing dot", "[unit][common][host]") {
  auto c = GENERATE(values<ok_case>({
      {"www.wikidata.org", "www.wikidata.org", host_kind::name},
      {"WWW.WikiData.ORG", "www.wikidata.org", host_kind::name},
      {"www.wikidata.org.", "www.wikidata.org", host_kind::name},
      {"xn--bcher-kva.example", "xn--bcher-kva.example", host_kind::name},
      {"a-b.c1", "a-b.c1", host_kind::name},
      {"localhost", "localhost", host_kind::name},
      {"1.2.3.4", "1.2.3.4", host_kind::ipv4},
      {"255.255.255.255", "255.255.255.255", host_kind::ipv4},
      {"0.0.0.0", "0.0.0.0", host_kind::ipv4},
      {"[::1]", "::1", host_kind::ipv6},
      {"[::FFFF:7F00:1]", "::ffff:127.0.0.1", host_kind::ipv6},
      {"[2001:DB8:0:0::1]", "2001:db8::1", host_kind::ipv6},
      {"9gag.com", "9gag.com", host_kind::name},
  }));
  DYNAMIC_SECTION(c.input) {
    auto h = normalize_host(c.input);
    REQUIRE(h);
    CHECK(h->text == c.text);
    CHECK(h->kind == c.kind);
  }
}

TEST_CASE("normalize_host rejects malformed and odd forms with a reason", "[unit][common][host]") {
  auto c = GENERATE(values<bad_case>({
      {"", host_error::empty},
      {".", host_error::empty},
      {"a..b", host_error::empty_label},
      {".a", host_error::empty_label},
      {"a.b..", host_error::empty_label},
      {"b\xc3\xbc" "cher.example", host_error::non_ascii},
      {"a_b.example", host_error::invalid_character},
      {"a b.example", host_error::invalid_character},
      {"-a.example", host_error::hyphen_at_label_edge},
      {"a-.example", host_error::hyphen_at_label_edge},
      {"ab--c.example", host_error::invalid_a_label},
      {"xn--.example", host_error::hyphen_at_label_edge},
      {"127.1", host_error::non_canonical_ipv4},
      {"2130706433", host_error::non_canonical_ipv4},
      {"0x7f.0.0.1", host_error::non_canonical_ipv4},
      {"0x7f000001", host_error::non_canonical_ipv4},
      {"010.0.0.1", host_error::non_canonical_ipv4},
      {"1.2.3.256", host_error::non_canonical_ipv4},
      {"1.2.3.4.5", host_error::non_canonical_ipv4},
      {"example.0x", host_error::non_canonical_ipv4},
      {"[::1%eth0]", host_error::invalid_ipv6},
      {"[fe80::1%25lo]", host_error::invalid_ipv6},
      {"[not-v6]", host_error::invalid_ipv6},
      {"[::1", host_error::invalid_ipv6},
      {"::1", host_error::unbracketed_ipv6},
      {"*.example.org", host_error::invalid_character},
  }));
  std::string input = c.input;
  DYNAMIC_SECTION(input) {
    auto h = normalize_host(input);
    REQUIRE_FALSE(h);
    CHECK(h.error() == c.error);
  }
}

TEST_CASE("normalize_host rejects NUL and control bytes", "[unit][common][host]") {
  CHECK(normalize_host(std::string_view("a\0b.org", 7)).error() == host_error::invalid_character);
  CHECK(normalize_host("a\r\nb.org").error() == host_error::invalid_character);
}

TEST_CASE("normalize_host enforces the 63 and 253 octet limits", "[unit][common][host]") {
  std::string l63(63, 'a'), l64(64, 'a');
  CHECK(normalize_host(l63 + ".org"));
  CHECK(normalize_host(l64 + ".org").error() == host_error::label_too_long);
  std::string name;
  while (name.size() < 253) name += (name.empty() ? "" : ".") + std::string(std::min<std::size_t>(63, 253 - name.size() - (name.empty() ? 0 : 1)), 'b');
  REQUIRE(name.size() == 253);
  CHECK(normalize_host(name));
  CHECK(normalize_host(name + "."));  // the trailing dot does not count
  CHECK(normalize_host("c" + name).error() == host_error::too_long);
}

TEST_CASE("bare syntax accepts unbracketed IPv6 (config values)", "[unit][common][host]") {
  auto h = normalize_host("fd00:ec2::254", host_syntax::bare);
  REQUIRE(h);
  CHECK(h->kind == host_kind::ipv6);
  CHECK(h->text == "fd00:ec2::254");
}

TEST_CASE("host patterns match on label boundaries only", "[unit][common][host]") {
  auto wild = parse_host_pattern("*.wikidata.org");
  auto exact = parse_host_pattern("WikiData.org.");
  REQUIRE(wild);
  REQUIRE(exact);
  CHECK(exact->to_string() == "wikidata.org");
  auto h = [](const char* s) { return *normalize_host(s); };
  CHECK(wild->matches(h("www.wikidata.org")));
  CHECK(wild->matches(h("a.b.wikidata.org")));
  CHECK_FALSE(wild->matches(h("wikidata.org")));
  CHECK_FALSE(wild->matches(h("evilwikidata.org")));
  CHECK_FALSE(wild->matches(h("wikidata.org.evil.example")));
  CHECK(exact->matches(h("WIKIDATA.ORG.")));
  CHECK_FALSE(exact->matches(h("www.wikidata.org")));
  CHECK_FALSE(exact->matches(h("evilwikidata.org")));
  CHECK_FALSE(exact->matches(h("wikidata.org.evil.example")));
}

TEST_CASE("host patterns reject misplaced wildcards", "[unit][common][host]") {
  for (const char* bad : {"*", "*.", "**.example.org", "a.*.example.org", "*example.org", "*.*.example.org", "*.10.0.0.1"}) {
    DYNAMIC_SECTION(bad) {
      auto p = parse_host_pattern(bad);
      REQUIRE_FALSE(p);
    }
  }
  auto ip = parse_host_pattern("10.0.0.1");
  REQUIRE(ip);
  CHECK(ip->matches(*normalize_host("10.0.0.1")));
  CHECK_FALSE(ip->matches(*normalize_host("10.0.0.2")));
}
