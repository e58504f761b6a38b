#pragma once
/// CIDR blocks, sets of them, and the upstream address policy (denied ranges, overrides,
/// embedded IPv4 in IPv6) shared by egress-gen and egress-proxy.

#include <boost/asio/ip/address.hpp>
#include <boost/system/result.hpp>

#include <array>
#include <compare>
#include <iosfwd>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace egress::common {

/// An IP network: family, network address and prefix length. Always canonical (host
/// bits zero); `parse_cidr` rejects anything else.
class cidr {
public:
  /// 16 bytes, network order; IPv4 uses the first 4.
  using bytes_type = std::array<std::uint8_t, 16>;

  cidr() = default;
  /// Builds a block from an address and prefix; host bits are cleared.
  /// `prefix` must be <= 32 for IPv4 and <= 128 for IPv6 (asserted).
  cidr(const boost::asio::ip::address& network, unsigned prefix);

  bool is_v4() const noexcept { return v4_; }
  unsigned prefix() const noexcept { return prefix_; }
  /// 32 or 128.
  unsigned max_prefix() const noexcept { return v4_ ? 32u : 128u; }
  boost::asio::ip::address network() const;
  /// The highest address in the block.
  boost::asio::ip::address last() const;

  /// True when `a` is inside (same family only; callers unwrap IPv4-mapped first).
  bool contains(const boost::asio::ip::address& a) const noexcept;
  /// True when `other` is inside this block (same family, prefix >= ours).
  bool contains(const cidr& other) const noexcept;

  /// "10.0.0.0/8", "fc00::/7" (RFC 5952 address text).
  std::string to_string() const;

  /// Order: IPv4 before IPv6, then by network address, then shorter prefix first.
  friend std::strong_ordering operator<=>(const cidr&, const cidr&) noexcept;
  friend bool operator==(const cidr&, const cidr&) noexcept = default;

  /// Network bytes (host bits zero).
  const bytes_type& bytes() const noexcept { return bytes_; }

private:
  bytes_type bytes_{};
  std::uint8_t prefix_ = 0;
  bool v4_ = true;
};

/// Writes `c.to_string()` (for logs and test failure messages).
std::ostream& operator<<(std::ostream& os, const cidr& c);

/// Why `parse_cidr` refused its input.
enum class cidr_error {
  syntax = 1,     ///< not "address/prefix" or a bare address
  prefix_range,   ///< prefix above 32 (IPv4) or 128 (IPv6), or not decimal
  host_bits_set,  ///< address has bits set beyond the prefix ("10.0.0.1/8")
};

/// Parses "a.b.c.d/n", "x::y/n" or a bare address (as /32 or /128).
/// Errors: `cidr_error`; host bits set is an error (not silently masked) so a typo
/// never widens a rule. The canonical form is available as `cidr::to_string()`.
boost::system::result<cidr> parse_cidr(std::string_view text);
/// A one-line English message for a `cidr_error`, naming the canonical form where one
/// exists ("host bits set; did you mean 10.0.0.0/8?").
std::string describe_cidr_error(std::string_view text, cidr_error e);

/// A set of addresses held as a sorted, minimal list of disjoint CIDR blocks. Union and
/// difference are exact; `blocks()` is the canonical minimal cover (deterministic).
class cidr_set {
public:
  cidr_set() = default;
  explicit cidr_set(const std::vector<cidr>& blocks);

  void add(const cidr& c);
  void add(const cidr_set& other);
  /// Removes every address of `c`, splitting blocks as needed.
  void remove(const cidr& c);
  void remove(const cidr_set& other);

  bool contains(const boost::asio::ip::address& a) const noexcept;
  /// The most specific block of this set containing `a`, if any.
  std::optional<cidr> find(const boost::asio::ip::address& a) const noexcept;
  /// True when every address of `c` is in the set.
  bool covers(const cidr& c) const noexcept;
  /// True when some address of `c` is in the set.
  bool intersects(const cidr& c) const noexcept;
  /// Blocks of this set inside `c` (clipped to `c`).
  std::vector<cidr> within(const cidr& c) const;

  const std::vector<cidr>& blocks() const noexcept { return blocks_; }
  bool empty() const noexcept { return blocks_.empty(); }
  friend bool operator==(const cidr_set&, const cidr_set&) = default;

private:
  void normalize();
  std::vector<cidr> blocks_;  // sorted, disjoint, merged
};

/// One entry of the built-in denied list with the registry it comes from.
struct denied_range {
  std::string_view cidr;
  std::string_view why;  ///< short name, e.g. "RFC 1918 private-use"
};

/// The built-in denied ranges: every range of the IANA IPv4 and IPv6 Special-Purpose
/// Address Registries whose "Globally Reachable" is False or N/A (whole blocks, even where
/// a few more-specific entries are reachable), IPv4 multicast, and cloud metadata
/// addresses (169.254.169.254, 168.63.129.16, 100.100.100.200, fd00:ec2::254).
/// IPv6 forms that embed an IPv4 address (NAT64 64:ff9b::/96, 6to4 2002::/16) are not in
/// the list: they are judged by the IPv4 inside (`upstream_policy`).
/// Source: IANA iana-ipv4-special-registry and iana-ipv6-special-registry (RFC 6890).
const std::vector<denied_range>& default_denied_ranges();

/// If `a` is an IPv6 address that embeds an IPv4 address, returns that IPv4:
/// IPv4-mapped ::ffff:0:0/96 (RFC 4291 §2.5.5.2), IPv4-compatible ::/96 except :: and ::1
/// (RFC 4291 §2.5.5.1), NAT64 64:ff9b::/96 (RFC 6052) and 64:ff9b:1::/48 (RFC 8215, /96
/// layout), 6to4 2002::/16 (RFC 3056 §2), Teredo 2001::/32 client address (bits 96-127,
/// inverted; RFC 4380 §4).
std::optional<boost::asio::ip::address_v4> embedded_ipv4(const boost::asio::ip::address_v6& a) noexcept;

/// The IPv6 blocks by which an IPv4 block can be reached through NAT64 (64:ff9b::/96) and
/// 6to4 (2002::/16). Used by egress-gen to deny embedded forms of denied IPv4 ranges at
/// the IP level, where the proxy's unwrapping is not available.
std::vector<cidr> embedded_ipv6_forms(const cidr& v4);

/// The verdict of `upstream_policy::check`.
struct address_verdict {
  bool allowed = false;
  /// Stable reason when refused: "address_denied" (in a denied range) or
  /// "address_not_allowed" (outside the upstream ranges).
  std::string_view reason;
  /// The denied or missing range that decided, for logs.
  std::optional<cidr> matched;
};

/// The address policy applied to every resolved or literal upstream address:
/// allowed iff inside `upstream` and (not inside `denied` or inside `allow`), judged for
/// the address itself and, for IPv6 forms that embed an IPv4, for that IPv4 too.
struct upstream_policy {
  cidr_set upstream;  ///< where upstreams may be at all (default 0.0.0.0/0 and ::/0)
  cidr_set denied;    ///< denied ranges (default `default_denied_ranges()`)
  cidr_set allow;     ///< overrides punched into `denied` (e.g. 127.0.0.0/8 in tests)

  /// Decides one address. Pure; cost is a few binary searches.
  address_verdict check(const boost::asio::ip::address& a) const;
  /// `denied` minus `allow`: what is effectively denied (used for rendering).
  cidr_set effective_denied() const;
  /// What IP-level policy (NetworkPolicy ipBlocks, Calico nets), which cannot unwrap an
  /// embedded IPv4 the way `check` does, must deny: `effective_denied()` plus the NAT64
  /// (64:ff9b::/96) and 6to4 (2002::/16) forms of its IPv4 blocks (`embedded_ipv6_forms`),
  /// minus `allow`.
  cidr_set ip_level_denied() const;
  /// `upstream` minus `ip_level_denied()`: every address an upstream may have. Empty means
  /// the policy allows no upstream at all (no address passes `check` either).
  cidr_set reachable_upstream() const;
};

}  // namespace egress::common
