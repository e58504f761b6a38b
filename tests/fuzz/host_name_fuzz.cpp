// libFuzzer target for the host normaliser: normalize_host in both syntaxes and
// parse_host_pattern. Seeds: tests/data/host_name/.
//
// Invariants checked (abort on failure):
// - a successful result re-normalises to itself (IPv6 given back in brackets for the
//   uri syntax), and its text is lower case, without trailing dot, at most 253 octets;
// - uri and bare syntax agree on text without ':';
// - errors are host_error codes with a "host_" reason word;
// - a pattern's canonical text parses back to the same pattern; an exact pattern matches
//   its own host, a wildcard never matches its apex but matches one label below it.

#include "egress/common/host_name.hpp"

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

namespace {

using namespace egress::common;

void require(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "invariant broken: %s\n", what);
    std::abort();
  }
}

void check_error(const boost::system::error_code& ec) {
  require(ec.category() == host_error_category(), "error from another category");
  const std::string_view reason = host_error_reason(static_cast<host_error>(ec.value()));
  require(reason.starts_with("host_") && reason != "host_invalid", "error without a reason word");
}

void check_host(const host& h, host_syntax syntax) {
  require(!h.text.empty(), "empty host text");
  if (h.kind == host_kind::name) {
    require(h.text.size() <= 253 && h.text.back() != '.', "name too long or with trailing dot");
    for (char c : h.text) require(!(c >= 'A' && c <= 'Z'), "upper case in a name");
  } else {
    require(h.address.to_string() == h.text, "address text is not canonical");
    require(h.address.is_v4() == (h.kind == host_kind::ipv4), "kind and address disagree");
  }
  const std::string again = h.kind == host_kind::ipv6 && syntax == host_syntax::uri ? "[" + h.text + "]" : h.text;
  const auto r = normalize_host(again, syntax);
  require(r && *r == h, "normalised host does not re-normalise to itself");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view in(reinterpret_cast<const char*>(data), size);

  const auto uri = normalize_host(in, host_syntax::uri);
  const auto bare = normalize_host(in, host_syntax::bare);
  if (uri) check_host(*uri, host_syntax::uri);
  else check_error(uri.error());
  if (bare) check_host(*bare, host_syntax::bare);
  else check_error(bare.error());
  if (in.find(':') == std::string_view::npos)
    require(uri.has_value() == bare.has_value() && (!uri || *uri == *bare) && (uri || uri.error() == bare.error()),
            "uri and bare syntax disagree without ':'");

  const auto p = parse_host_pattern(in);
  if (!p) {
    check_error(p.error());
    return 0;
  }
  check_host(p->base, host_syntax::bare);
  const auto back = parse_host_pattern(p->to_string());
  require(back && *back == *p, "pattern text does not parse back to the pattern");
  if (!p->wildcard) {
    require(p->matches(p->base), "exact pattern does not match its host");
  } else {
    require(p->base.kind == host_kind::name, "wildcard over an IP literal");
    require(!p->matches(p->base), "wildcard matches its apex");
    const auto below = normalize_host("x." + p->base.text);
    if (below) require(p->matches(*below), "wildcard does not match one label below");
  }
  return 0;
}
