// dial's Happy Eyeballs attempt order (RFC 8305 §4): families interleaved, starting with
// the first address's family, each family in the resolver's order. The racing itself is
// tested end to end (tests/integration/connect_test.py: stalled addresses, one deadline).

#include "dial.hpp"

#include <catch2/catch.hpp>

#include <string>
#include <vector>

namespace {

using boost::asio::ip::make_address;
using egress::proxy::attempt_order;

std::vector<std::string> order_of(std::initializer_list<const char*> in) {
  std::vector<boost::asio::ip::address> a;
  for (const char* s : in) a.push_back(make_address(s));
  std::vector<std::string> out;
  for (const auto& x : attempt_order(a)) out.push_back(x.to_string());
  return out;
}

}  // namespace

TEST_CASE("dial: attempt order interleaves the families, first address's family first", "[unit][dial]") {
  using v = std::vector<std::string>;
  CHECK(order_of({}).empty());
  CHECK(order_of({"192.0.2.1"}) == v{"192.0.2.1"});
  CHECK(order_of({"192.0.2.1", "192.0.2.2", "2001:db8::1", "2001:db8::2"}) ==
        v{"192.0.2.1", "2001:db8::1", "192.0.2.2", "2001:db8::2"});
  CHECK(order_of({"2001:db8::1", "192.0.2.1", "192.0.2.2", "192.0.2.3"}) ==
        v{"2001:db8::1", "192.0.2.1", "192.0.2.2", "192.0.2.3"});
  CHECK(order_of({"192.0.2.1", "192.0.2.2", "192.0.2.3", "2001:db8::1"}) ==
        v{"192.0.2.1", "2001:db8::1", "192.0.2.2", "192.0.2.3"});
  CHECK(order_of({"2001:db8::1", "2001:db8::2"}) == v{"2001:db8::1", "2001:db8::2"});
}
