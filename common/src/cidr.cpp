#include "egress/common/cidr.hpp"

#include <algorithm>
#include <cassert>
#include <charconv>
#include <ostream>

namespace egress::common {
namespace {

__extension__ typedef unsigned __int128 u128;

namespace ip = boost::asio::ip;

u128 to_u128(const cidr::bytes_type& b, bool v4) noexcept {
  u128 v = 0;
  std::size_t n = v4 ? 4 : 16;
  for (std::size_t i = 0; i < n; ++i) v = (v << 8) | b[i];
  return v;
}

cidr::bytes_type from_u128(u128 v, bool v4) noexcept {
  cidr::bytes_type b{};
  std::size_t n = v4 ? 4 : 16;
  for (std::size_t i = n; i-- > 0;) {
    b[i] = static_cast<std::uint8_t>(v & 0xff);
    v >>= 8;
  }
  return b;
}

u128 address_value(const ip::address& a, bool& v4) noexcept {
  cidr::bytes_type b{};
  if (a.is_v4()) {
    auto x = a.to_v4().to_bytes();
    std::copy(x.begin(), x.end(), b.begin());
    v4 = true;
  } else {
    auto x = a.to_v6().to_bytes();
    std::copy(x.begin(), x.end(), b.begin());
    v4 = false;
  }
  return to_u128(b, v4);
}

// Mask of the host part for a prefix in a family of `bits` width.
u128 host_mask(unsigned prefix, unsigned bits) noexcept {
  unsigned host_bits = bits - prefix;
  if (host_bits == 0) return 0;
  if (host_bits >= 128) return ~u128{0};
  return (u128{1} << host_bits) - 1;
}

struct interval {
  bool v4;
  u128 first;
  u128 last;
};

interval to_interval(const cidr& c) noexcept {
  u128 start = to_u128(c.bytes(), c.is_v4());
  return {c.is_v4(), start, start | host_mask(c.prefix(), c.max_prefix())};
}

// The minimal list of CIDR blocks covering exactly [first, last].
void cover(bool v4, u128 first, u128 last, std::vector<cidr>& out) {
  const unsigned bits = v4 ? 32 : 128;
  const u128 family_max = v4 ? u128{0xffffffffu} : ~u128{0};
  while (true) {
    // Largest block aligned at `first` that does not pass `last`.
    unsigned prefix = bits;
    while (prefix > 0) {
      u128 mask = host_mask(prefix - 1, bits);
      if ((first & mask) != 0) break;
      if ((first | mask) > last) break;
      --prefix;
    }
    u128 block_last = first | host_mask(prefix, bits);
    out.emplace_back(v4 ? ip::address(ip::address_v4(
                              [&] {
                                auto b = from_u128(first, true);
                                return ip::address_v4::bytes_type{b[0], b[1], b[2], b[3]};
                              }()))
                        : ip::address(ip::address_v6(from_u128(first, false))),
                     prefix);
    if (block_last >= last || block_last == family_max) break;
    first = block_last + 1;
  }
}

std::vector<interval> merged_intervals(const std::vector<cidr>& blocks) {
  std::vector<interval> iv;
  iv.reserve(blocks.size());
  for (const auto& c : blocks) iv.push_back(to_interval(c));
  std::sort(iv.begin(), iv.end(), [](const interval& a, const interval& b) {
    if (a.v4 != b.v4) return a.v4;
    return a.first < b.first;
  });
  std::vector<interval> out;
  for (const auto& i : iv) {
    if (!out.empty() && out.back().v4 == i.v4 &&
        (i.first <= out.back().last || (out.back().last != ~u128{0} && i.first == out.back().last + 1))) {
      out.back().last = std::max(out.back().last, i.last);
    } else {
      out.push_back(i);
    }
  }
  return out;
}

std::vector<cidr> to_blocks(const std::vector<interval>& iv) {
  std::vector<cidr> out;
  for (const auto& i : iv) cover(i.v4, i.first, i.last, out);
  return out;
}

}  // namespace

cidr::cidr(const ip::address& network, unsigned prefix) {
  bool v4 = false;
  u128 v = address_value(network, v4);
  assert(prefix <= (v4 ? 32u : 128u));
  v4_ = v4;
  prefix_ = static_cast<std::uint8_t>(prefix);
  v &= ~host_mask(prefix, max_prefix());
  bytes_ = from_u128(v, v4);
}

ip::address cidr::network() const {
  if (v4_) return ip::address_v4(ip::address_v4::bytes_type{bytes_[0], bytes_[1], bytes_[2], bytes_[3]});
  return ip::address_v6(bytes_);
}

ip::address cidr::last() const {
  u128 v = to_u128(bytes_, v4_) | host_mask(prefix_, max_prefix());
  auto b = from_u128(v, v4_);
  if (v4_) return ip::address_v4(ip::address_v4::bytes_type{b[0], b[1], b[2], b[3]});
  return ip::address_v6(b);
}

bool cidr::contains(const ip::address& a) const noexcept {
  if (a.is_v4() != v4_) return false;
  bool v4 = false;
  u128 v = address_value(a, v4);
  return (v & ~host_mask(prefix_, max_prefix())) == to_u128(bytes_, v4_);
}

bool cidr::contains(const cidr& other) const noexcept {
  if (other.v4_ != v4_ || other.prefix_ < prefix_) return false;
  return (to_u128(other.bytes_, v4_) & ~host_mask(prefix_, max_prefix())) == to_u128(bytes_, v4_);
}

std::string cidr::to_string() const { return network().to_string() + "/" + std::to_string(prefix_); }

std::ostream& operator<<(std::ostream& os, const cidr& c) { return os << c.to_string(); }

std::strong_ordering operator<=>(const cidr& a, const cidr& b) noexcept {
  if (a.v4_ != b.v4_) return a.v4_ ? std::strong_ordering::less : std::strong_ordering::greater;
  if (auto c = a.bytes_ <=> b.bytes_; c != 0) return c;
  return a.prefix_ <=> b.prefix_;
}

namespace {
class cidr_error_category_impl final : public boost::system::error_category {
public:
  const char* name() const noexcept override { return "egress.cidr"; }
  std::string message(int ev) const override {
    switch (static_cast<cidr_error>(ev)) {
      case cidr_error::syntax: return "not an IP address or CIDR block";
      case cidr_error::prefix_range: return "prefix length out of range";
      case cidr_error::host_bits_set: return "address has host bits set beyond the prefix";
    }
    return "bad CIDR";
  }
};
const boost::system::error_category& cidr_category() noexcept {
  static const cidr_error_category_impl instance;
  return instance;
}
boost::system::error_code make_cidr_error(cidr_error e) noexcept { return {static_cast<int>(e), cidr_category()}; }
}  // namespace

boost::system::result<cidr> parse_cidr(std::string_view text) {
  std::string_view addr_text = text;
  std::optional<unsigned> prefix;
  if (auto slash = text.find('/'); slash != std::string_view::npos) {
    addr_text = text.substr(0, slash);
    std::string_view p = text.substr(slash + 1);
    unsigned value = 0;
    if (p.empty() || p.size() > 3 || (p.size() > 1 && p[0] == '0')) return make_cidr_error(cidr_error::prefix_range);
    auto [ptr, ec] = std::from_chars(p.data(), p.data() + p.size(), value);
    if (ec != std::errc{} || ptr != p.data() + p.size()) return make_cidr_error(cidr_error::prefix_range);
    prefix = value;
  }
  if (addr_text.empty() || addr_text.find('%') != std::string_view::npos) return make_cidr_error(cidr_error::syntax);
  for (char c : addr_text) {
    bool ok = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F') || c == ':' || c == '.';
    if (!ok) return make_cidr_error(cidr_error::syntax);
  }
  boost::system::error_code ec;
  ip::address a;
  if (addr_text.find(':') == std::string_view::npos) {
    // Only canonical dotted quads: inet_pton already refuses "127.1" and "0x7f.0.0.1",
    // and we refuse leading zeros ("010.0.0.1") too, as the host normaliser does.
    std::size_t start = 0;
    int parts = 0;
    while (start <= addr_text.size()) {
      std::size_t end = addr_text.find('.', start);
      if (end == std::string_view::npos) end = addr_text.size();
      std::string_view part = addr_text.substr(start, end - start);
      if (part.empty() || (part.size() > 1 && part[0] == '0')) return make_cidr_error(cidr_error::syntax);
      ++parts;
      if (end == addr_text.size()) break;
      start = end + 1;
    }
    if (parts != 4) return make_cidr_error(cidr_error::syntax);
    a = ip::make_address_v4(std::string(addr_text), ec);
  } else {
    a = ip::make_address_v6(std::string(addr_text), ec);
  }
  if (ec) return make_cidr_error(cidr_error::syntax);
  unsigned bits = a.is_v4() ? 32 : 128;
  unsigned p = prefix.value_or(bits);
  if (p > bits) return make_cidr_error(cidr_error::prefix_range);
  cidr c(a, p);
  if (c.network() != a) return make_cidr_error(cidr_error::host_bits_set);
  return c;
}

std::string describe_cidr_error(std::string_view text, cidr_error e) {
  switch (e) {
    case cidr_error::syntax:
      return "\"" + std::string(text) + "\" is not an IP address or CIDR block (IPv4 must be canonical dotted-quad)";
    case cidr_error::prefix_range:
      return "\"" + std::string(text) + "\" has a prefix length out of range (0-32 for IPv4, 0-128 for IPv6)";
    case cidr_error::host_bits_set: {
      std::string_view addr = text.substr(0, text.find('/'));
      unsigned prefix = 0;
      std::string_view p = text.substr(text.find('/') + 1);
      std::from_chars(p.data(), p.data() + p.size(), prefix);
      boost::system::error_code ec;
      auto a = ip::make_address(std::string(addr), ec);
      std::string fix = ec ? std::string() : cidr(a, prefix).to_string();
      return "\"" + std::string(text) + "\" has host bits set" + (fix.empty() ? "" : "; did you mean " + fix + "?");
    }
  }
  return "bad CIDR";
}

cidr_set::cidr_set(const std::vector<cidr>& blocks) : blocks_(blocks) { normalize(); }

void cidr_set::normalize() { blocks_ = to_blocks(merged_intervals(blocks_)); }

void cidr_set::add(const cidr& c) {
  blocks_.push_back(c);
  normalize();
}

void cidr_set::add(const cidr_set& other) {
  blocks_.insert(blocks_.end(), other.blocks_.begin(), other.blocks_.end());
  normalize();
}

void cidr_set::remove(const cidr& c) { remove(cidr_set({c})); }

void cidr_set::remove(const cidr_set& other) {
  auto mine = merged_intervals(blocks_);
  auto cut = merged_intervals(other.blocks_);
  std::vector<interval> out;
  for (auto i : mine) {
    bool alive = true;
    for (const auto& r : cut) {
      if (r.v4 != i.v4 || r.last < i.first || r.first > i.last) continue;
      if (r.first > i.first) out.push_back({i.v4, i.first, r.first - 1});
      if (r.last >= i.last) {
        alive = false;
        break;
      }
      i.first = r.last + 1;
    }
    if (alive) out.push_back(i);
  }
  blocks_ = to_blocks(out);
}

std::optional<cidr> cidr_set::find(const ip::address& a) const noexcept {
  // Blocks are disjoint and sorted: the only candidate is the last block starting at or
  // before `a`.
  cidr probe(a, a.is_v4() ? 32 : 128);
  auto it = std::upper_bound(blocks_.begin(), blocks_.end(), probe);
  if (it == blocks_.begin()) return std::nullopt;
  --it;
  if (it->contains(a)) return *it;
  return std::nullopt;
}

bool cidr_set::contains(const ip::address& a) const noexcept { return find(a).has_value(); }

bool cidr_set::covers(const cidr& c) const noexcept {
  cidr_set rest({c});
  rest.remove(*this);
  return rest.empty();
}

bool cidr_set::intersects(const cidr& c) const noexcept { return !within(c).empty(); }

std::vector<cidr> cidr_set::within(const cidr& c) const {
  cidr_set clip({c});
  cidr_set outside = clip;
  outside.remove(*this);
  clip.remove(outside);
  return clip.blocks_;
}

const std::vector<denied_range>& default_denied_ranges() {
  static const std::vector<denied_range> ranges = {
      {"0.0.0.0/8", "\"this network\" (RFC 791)"},
      {"10.0.0.0/8", "private-use (RFC 1918)"},
      {"100.64.0.0/10", "shared address space, CGN (RFC 6598); holds Alibaba metadata 100.100.100.200"},
      {"127.0.0.0/8", "loopback (RFC 1122)"},
      {"169.254.0.0/16", "link local (RFC 3927); holds cloud metadata 169.254.169.254"},
      {"172.16.0.0/12", "private-use (RFC 1918)"},
      {"192.0.0.0/24", "IETF protocol assignments (RFC 6890)"},
      {"192.0.2.0/24", "documentation TEST-NET-1 (RFC 5737)"},
      {"192.88.99.0/24", "deprecated 6to4 relay anycast (RFC 7526)"},
      {"192.168.0.0/16", "private-use (RFC 1918)"},
      {"198.18.0.0/15", "benchmarking (RFC 2544)"},
      {"198.51.100.0/24", "documentation TEST-NET-2 (RFC 5737)"},
      {"203.0.113.0/24", "documentation TEST-NET-3 (RFC 5737)"},
      {"224.0.0.0/4", "multicast (RFC 5771)"},
      {"240.0.0.0/4", "reserved and limited broadcast (RFC 1112, RFC 919)"},
      {"168.63.129.16/32", "Azure platform metadata and DNS"},
      {"::/96", "unspecified, loopback and deprecated IPv4-compatible (RFC 4291)"},
      {"::ffff:0:0/96", "IPv4-mapped (RFC 4291)"},
      {"64:ff9b:1::/48", "local-use IPv4/IPv6 translation (RFC 8215)"},
      {"100::/64", "discard-only (RFC 6666)"},
      {"100:0:0:1::/64", "dummy IPv6 prefix (RFC 9780)"},
      {"2001::/23", "IETF protocol assignments incl. Teredo (RFC 2928, RFC 4380)"},
      {"2001:db8::/32", "documentation (RFC 3849)"},
      {"3fff::/20", "documentation (RFC 9637)"},
      {"5f00::/16", "segment routing SIDs (RFC 9602)"},
      {"fc00::/7", "unique local (RFC 4193); holds AWS metadata fd00:ec2::254"},
      {"fe80::/10", "link-local unicast (RFC 4291)"},
      {"ff00::/8", "multicast (RFC 4291)"},
  };
  return ranges;
}

std::optional<ip::address_v4> embedded_ipv4(const ip::address_v6& a) noexcept {
  auto b = a.to_bytes();
  auto v4_at = [&](std::size_t off, bool invert) {
    ip::address_v4::bytes_type x{b[off], b[off + 1], b[off + 2], b[off + 3]};
    if (invert)
      for (auto& o : x) o = static_cast<unsigned char>(~o);
    return ip::address_v4(x);
  };
  auto zero = [&](std::size_t from, std::size_t to) {
    for (std::size_t i = from; i < to; ++i)
      if (b[i] != 0) return false;
    return true;
  };
  // ::ffff:a.b.c.d
  if (zero(0, 10) && b[10] == 0xff && b[11] == 0xff) return v4_at(12, false);
  // ::a.b.c.d (not :: or ::1)
  if (zero(0, 12) && !(zero(12, 15) && b[15] <= 1)) return v4_at(12, false);
  // 64:ff9b::/96 and 64:ff9b:1::/48 (RFC 6052 /96 layout: IPv4 in the last 32 bits)
  if (b[0] == 0x00 && b[1] == 0x64 && b[2] == 0xff && b[3] == 0x9b) {
    if (zero(4, 12)) return v4_at(12, false);
    if (b[4] == 0x00 && b[5] == 0x01) return v4_at(12, false);
  }
  // 2002:AABB:CCDD::/48 6to4
  if (b[0] == 0x20 && b[1] == 0x02) return v4_at(2, false);
  // 2001:0000::/32 Teredo: client IPv4 in the last 32 bits, bit-inverted
  if (b[0] == 0x20 && b[1] == 0x01 && b[2] == 0x00 && b[3] == 0x00) return v4_at(12, true);
  return std::nullopt;
}

std::vector<cidr> embedded_ipv6_forms(const cidr& v4) {
  assert(v4.is_v4());
  std::vector<cidr> out;
  const auto& n = v4.bytes();
  ip::address_v6::bytes_type nat64{0x00, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0, n[0], n[1], n[2], n[3]};
  out.emplace_back(ip::address_v6(nat64), 96 + v4.prefix());
  ip::address_v6::bytes_type six_to_four{0x20, 0x02, n[0], n[1], n[2], n[3], 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
  out.emplace_back(ip::address_v6(six_to_four), 16 + v4.prefix());
  return out;
}

address_verdict upstream_policy::check(const ip::address& a) const {
  auto judge = [&](const ip::address& x) -> address_verdict {
    if (!upstream.contains(x)) {
      return {false, "address_not_allowed", std::nullopt};
    }
    if (auto d = denied.find(x); d && !allow.contains(x)) return {false, "address_denied", d};
    return {true, {}, std::nullopt};
  };
  auto v = judge(a);
  if (!v.allowed) return v;
  if (a.is_v6()) {
    if (auto inner = embedded_ipv4(a.to_v6())) {
      // Only the denied ranges apply to the IPv4 inside: `upstream` restricts what the
      // client may reach directly, and an IPv6-only upstream list says nothing of IPv4.
      if (auto d = denied.find(*inner); d && !allow.contains(*inner)) return {false, "address_denied", d};
    }
  }
  return v;
}

cidr_set upstream_policy::effective_denied() const {
  cidr_set d = denied;
  d.remove(allow);
  return d;
}

cidr_set upstream_policy::ip_level_denied() const {
  cidr_set d = effective_denied();
  cidr_set embedded;
  for (const auto& b : d.blocks())
    if (b.is_v4())
      for (const auto& e : embedded_ipv6_forms(b)) embedded.add(e);
  embedded.remove(allow);
  d.add(embedded);
  return d;
}

cidr_set upstream_policy::reachable_upstream() const {
  cidr_set r = upstream;
  r.remove(ip_level_denied());
  return r;
}

}  // namespace egress::common
