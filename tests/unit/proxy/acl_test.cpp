#include "egress/proxy/acl.hpp"

#include <catch2/catch.hpp>

using namespace egress;
using proxy::check_target;

namespace {

common::allow_entry entry(const char* pattern, std::vector<std::uint16_t> ports = {443}) {
  common::allow_entry e;
  e.pattern = *common::parse_host_pattern(pattern);
  e.ports = std::move(ports);
  return e;
}

common::host H(const char* s) { return *common::normalize_host(s); }

proxy::hello_result hello(std::optional<std::string> sni, bool ech = false) {
  proxy::hello_result r;
  r.state = proxy::hello_state::complete;
  r.server_name = std::move(sni);
  r.encrypted_client_hello = ech;
  return r;
}

}  // namespace

TEST_CASE("allowlist matches by label, case-insensitively, trailing dot folded", "[unit][proxy][acl]") {
  std::vector<common::allow_entry> list{entry("wikidata.org"), entry("www.wikidata.org"), entry("*.wikimedia.org", {443, 8443})};
  CHECK(check_target(list, H("www.wikidata.org"), 443).allowed);
  CHECK(check_target(list, H("WWW.WIKIDATA.ORG."), 443).allowed);
  CHECK(check_target(list, H("upload.wikimedia.org"), 8443).allowed);
  CHECK(check_target(list, H("evilwikidata.org"), 443).reason == "host_not_allowed");
  CHECK(check_target(list, H("wikidata.org.evil.example"), 443).reason == "host_not_allowed");
  CHECK(check_target(list, H("wikimedia.org"), 443).reason == "host_not_allowed");  // wildcard is not the apex
  CHECK(check_target(list, H("www.wikidata.org"), 80).reason == "port_not_allowed");
  CHECK(check_target(list, H("www.wikidata.org"), 22).reason == "port_not_allowed");
  CHECK(check_target(list, H("[::ffff:7f00:1]"), 443).reason == "ip_literal_not_allowed");
  CHECK(check_target(list, H("127.0.0.1"), 443).reason == "ip_literal_not_allowed");
}

TEST_CASE("an IP literal passes only when the allowlist names that address", "[unit][proxy][acl]") {
  std::vector<common::allow_entry> list{entry("185.15.59.224")};
  CHECK(check_target(list, H("185.15.59.224"), 443).allowed);
  CHECK_FALSE(check_target(list, H("185.15.59.225"), 443).allowed);
}

TEST_CASE("status codes: 400 malformed, 403 policy, 502/504 upstream, 503 draining", "[unit][proxy][acl]") {
  CHECK(proxy::status_for("host_not_allowed") == 403);
  CHECK(proxy::status_for("address_denied") == 403);
  CHECK(proxy::status_for("host_non_canonical_ipv4") == 400);
  CHECK(proxy::status_for("userinfo_in_target") == 400);
  CHECK(proxy::status_for("host_mismatch") == 400);
  CHECK(proxy::status_for("headers_too_large") == 431);
  CHECK(proxy::status_for("dns_not_found") == 502);
  CHECK(proxy::status_for("connect_refused") == 502);
  CHECK(proxy::status_for("connect_timeout") == 504);
  CHECK(proxy::status_for("dns_timeout") == 504);
  CHECK(proxy::status_for("draining") == 503);
  CHECK(proxy::status_for("something_new") == 403);  // fail closed
}

TEST_CASE("address filter keeps order and drops denied forms", "[unit][proxy][acl]") {
  common::upstream_policy p;
  p.upstream = common::cidr_set({*common::parse_cidr("0.0.0.0/0"), *common::parse_cidr("::/0")});
  for (const auto& d : common::default_denied_ranges()) p.denied.add(*common::parse_cidr(d.cidr));
  namespace ip = boost::asio::ip;
  auto r = proxy::filter_addresses(p, {ip::make_address("10.0.0.1"), ip::make_address("185.15.59.224"),
                                       ip::make_address("::ffff:a00:1"), ip::make_address("2620:0:861:ed1a::1")});
  REQUIRE(r.allowed.size() == 2);
  CHECK(r.allowed[0].to_string() == "185.15.59.224");
  CHECK(r.allowed[1].to_string() == "2620:0:861:ed1a::1");
  CHECK(r.first_reason == "address_denied");
  CHECK(r.first_refused.to_string() == "10.0.0.1");
}

TEST_CASE("SNI must equal the CONNECT host after normalisation", "[unit][proxy][acl][sni]") {
  auto host = H("www.wikidata.org");
  CHECK(proxy::check_sni(hello("www.wikidata.org"), host, false, false).allowed);
  CHECK(proxy::check_sni(hello("WWW.WikiData.ORG"), host, false, false).allowed);
  CHECK(proxy::check_sni(hello("www.wikidata.org."), host, false, false).allowed);
  CHECK(proxy::check_sni(hello("en.wikipedia.org"), host, false, false).reason == "sni_mismatch");
  CHECK(proxy::check_sni(hello("wikidata.org"), host, false, false).reason == "sni_mismatch");
  CHECK(proxy::check_sni(hello(std::nullopt), host, false, false).reason == "sni_missing");
  CHECK(proxy::check_sni(hello(std::nullopt), host, true, false).allowed);
  CHECK(proxy::check_sni(hello("www.wikidata.org", true), host, false, false).reason == "ech_present");
  CHECK(proxy::check_sni(hello("www.wikidata.org", true), host, false, true).allowed);
  CHECK(proxy::check_sni(hello("127.0.0.1"), host, false, false).reason == "sni_ip_literal");
  proxy::hello_result bad;
  bad.state = proxy::hello_state::invalid;
  bad.reason = "not_tls";
  CHECK(proxy::check_sni(bad, host, true, true).reason == "not_tls");
}
