#include "egress/common/cidr.hpp"

#include <catch2/catch.hpp>

using namespace egress::common;
namespace ip = boost::asio::ip;

namespace {
cidr C(const char* s) {
  auto c = parse_cidr(s);
  REQUIRE(c);
  return *c;
}
std::vector<std::string> texts(const cidr_set& s) {
  std::vector<std::string> out;
  for (const auto& b : s.blocks()) out.push_back(b.to_string());
  return out;
}
}  // namespace

TEST_CASE("parse_cidr accepts canonical blocks and rejects host bits", "[unit][common][cidr]") {
  CHECK(C("10.0.0.0/8").to_string() == "10.0.0.0/8");
  CHECK(C("10.1.2.3").to_string() == "10.1.2.3/32");
  CHECK(C("FD00:EC2::254").to_string() == "fd00:ec2::254/128");
  CHECK(C("::/0").to_string() == "::/0");
  CHECK(parse_cidr("10.0.0.1/8").error().value() == static_cast<int>(cidr_error::host_bits_set));
  CHECK(parse_cidr("10.0.0.0/33").error().value() == static_cast<int>(cidr_error::prefix_range));
  CHECK(parse_cidr("10.0.0.0/08").error().value() == static_cast<int>(cidr_error::prefix_range));
  CHECK(parse_cidr("10.0.0/8").error().value() == static_cast<int>(cidr_error::syntax));
  CHECK(parse_cidr("010.0.0.0/8").error().value() == static_cast<int>(cidr_error::syntax));
  CHECK(parse_cidr("fe80::1%eth0").error().value() == static_cast<int>(cidr_error::syntax));
  CHECK(parse_cidr("example.org").error().value() == static_cast<int>(cidr_error::syntax));
  CHECK(describe_cidr_error("10.0.0.1/8", cidr_error::host_bits_set) ==
        "\"10.0.0.1/8\" has host bits set; did you mean 10.0.0.0/8?");
}

TEST_CASE("cidr_set merges, subtracts and finds exactly", "[unit][common][cidr]") {
  cidr_set s({C("10.0.0.0/9"), C("10.128.0.0/9"), C("192.168.1.0/24"), C("192.168.0.0/24")});
  CHECK(texts(s) == std::vector<std::string>{"10.0.0.0/8", "192.168.0.0/23"});
  s.remove(C("10.0.0.0/24"));
  CHECK(texts(s) == std::vector<std::string>{"10.0.1.0/24", "10.0.2.0/23", "10.0.4.0/22", "10.0.8.0/21",
                                             "10.0.16.0/20", "10.0.32.0/19", "10.0.64.0/18", "10.0.128.0/17",
                                             "10.1.0.0/16", "10.2.0.0/15", "10.4.0.0/14", "10.8.0.0/13",
                                             "10.16.0.0/12", "10.32.0.0/11", "10.64.0.0/10", "10.128.0.0/9",
                                             "192.168.0.0/23"});
  CHECK_FALSE(s.contains(ip::make_address("10.0.0.7")));
  CHECK(s.contains(ip::make_address("10.0.1.7")));
  CHECK(s.find(ip::make_address("192.168.1.1"))->to_string() == "192.168.0.0/23");
  cidr_set all({C("0.0.0.0/0"), C("::/0")});
  CHECK(all.covers(C("8.8.8.0/24")));
  all.remove(cidr_set({C("0.0.0.0/0")}));
  CHECK(texts(all) == std::vector<std::string>{"::/0"});
  CHECK(cidr_set({C("10.0.0.0/8")}).within(C("0.0.0.0/0")) == std::vector<cidr>{C("10.0.0.0/8")});
  CHECK(cidr_set({C("10.0.0.0/8")}).within(C("10.1.0.0/16")) == std::vector<cidr>{C("10.1.0.0/16")});
}

TEST_CASE("embedded IPv4 is found in every translated IPv6 form", "[unit][common][cidr]") {
  auto e = [](const char* s) { return embedded_ipv4(ip::make_address_v6(s)); };
  CHECK(e("::ffff:10.1.2.3")->to_string() == "10.1.2.3");
  CHECK(e("::10.1.2.3")->to_string() == "10.1.2.3");
  CHECK(e("64:ff9b::a01:203")->to_string() == "10.1.2.3");
  CHECK(e("64:ff9b:1::a01:203")->to_string() == "10.1.2.3");
  CHECK(e("2002:a01:203::1")->to_string() == "10.1.2.3");
  CHECK(e("2001:0:4136:e378:8000:63bf:f5fe:fdfc")->to_string() == "10.1.2.3");
  CHECK_FALSE(e("::1"));
  CHECK_FALSE(e("::"));
  CHECK_FALSE(e("2606:4700::1"));
}

TEST_CASE("upstream_policy denies special-purpose and metadata addresses in every form", "[unit][common][cidr]") {
  upstream_policy p;
  p.upstream = cidr_set({C("0.0.0.0/0"), C("::/0")});
  for (const auto& d : default_denied_ranges()) p.denied.add(C(std::string(d.cidr).c_str()));
  for (const char* bad : {"10.0.0.1", "127.0.0.1", "169.254.169.254", "168.63.129.16", "100.100.100.200",
                          "172.16.5.4", "192.168.1.1", "100.64.0.1", "0.0.0.0", "255.255.255.255", "224.0.0.1",
                          "::1", "::", "fd00:ec2::254", "fe80::1", "::ffff:10.0.0.1", "::ffff:127.0.0.1",
                          "64:ff9b::a00:1", "64:ff9b::a9fe:a9fe", "2002:a00:1::", "2001:db8::1", "ff02::1"}) {
    DYNAMIC_SECTION(bad) {
      auto v = p.check(ip::make_address(bad));
      CHECK_FALSE(v.allowed);
      CHECK(v.reason == "address_denied");
    }
  }
  for (const char* good : {"8.8.8.8", "185.15.59.224", "2620:0:861:ed1a::1", "64:ff9b::808:808", "2002:808:808::1"}) {
    DYNAMIC_SECTION(good) { CHECK(p.check(ip::make_address(good)).allowed); }
  }
  p.allow.add(C("127.0.0.0/8"));
  CHECK(p.check(ip::make_address("127.0.0.1")).allowed);
  CHECK(p.check(ip::make_address("::ffff:127.0.0.1")).allowed == false);  // ::ffff:0:0/96 itself is denied
  p.upstream = cidr_set({C("185.15.56.0/22")});
  CHECK(p.check(ip::make_address("8.8.8.8")).reason == "address_not_allowed");
  CHECK(p.check(ip::make_address("185.15.59.224")).allowed);
}
