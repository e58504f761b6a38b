#pragma once
/// Host names and IP literals: the one normaliser shared by the config loader and the
/// proxy, so an allowlist entry and a request target are compared in the same form.

#include <boost/asio/ip/address.hpp>
#include <boost/system/error_code.hpp>
#include <boost/system/result.hpp>

#include <iosfwd>
#include <string>
#include <string_view>

namespace egress::common {

/// Why a host string was rejected. Each value has a stable snake_case reason name
/// (`host_error_reason`) used in diagnostics, logs, metrics and the proxy's
/// `X-Egress-Denied` header.
enum class host_error {
  empty = 1,             ///< "" or only a dot
  too_long,              ///< more than 253 octets after folding the trailing dot (RFC 1035 §2.3.4)
  empty_label,           ///< "a..b", ".a", "a.." (two trailing dots)
  label_too_long,        ///< a label longer than 63 octets (RFC 1035 §2.3.4)
  non_ascii,             ///< a byte >= 0x80: names must be given as A-labels (RFC 5890 §2.3.2.1)
  invalid_character,     ///< not a letter, digit or hyphen (LDH, RFC 1123 §2.1), or a control byte
  hyphen_at_label_edge,  ///< label starts or ends with '-' (RFC 1035 §2.3.1)
  invalid_a_label,       ///< "xx--" in positions 3-4 but not "xn--", or "xn--" with nothing after
  non_canonical_ipv4,    ///< looks like an IPv4 address but is not dotted-quad decimal
                         ///< ("127.1", "2130706433", "0x7f.0.0.1", "010.0.0.1"): WHATWG URL
                         ///< "ends in a number" rule; such text must never reach a resolver
  invalid_ipv6,          ///< bracketed text that is not an IPv6 address, or carries a zone id
  unbracketed_ipv6,      ///< an IPv6 address without brackets where brackets are required
  invalid_wildcard,      ///< '*' other than as the whole leftmost label of a pattern
};

/// The error category of `host_error`, so it composes with `boost::system::error_code`.
const boost::system::error_category& host_error_category() noexcept;
/// Makes `host_error` usable as a `boost::system::error_code`.
boost::system::error_code make_error_code(host_error e) noexcept;
/// The stable reason word of a `host_error`, e.g. `host_non_ascii`.
std::string_view host_error_reason(host_error e) noexcept;

/// What a normalised host is.
enum class host_kind { name, ipv4, ipv6 };

/// A normalised host: a lower-case A-label name without trailing dot, or an IP literal.
struct host {
  host_kind kind = host_kind::name;
  /// Names: lower case, no trailing dot. Addresses: canonical text (RFC 5952 for IPv6),
  /// without brackets.
  std::string text;
  /// Set for `ipv4` and `ipv6`; unspecified for names.
  boost::asio::ip::address address;

  bool is_ip() const noexcept { return kind != host_kind::name; }
  friend bool operator==(const host&, const host&) = default;
};

/// Writes `h.text` (for logs and test failure messages).
std::ostream& operator<<(std::ostream& os, const host& h);

/// Where a host string comes from; decides the accepted IPv6 spelling.
enum class host_syntax {
  /// The host of a URI authority or CONNECT target (RFC 3986 §3.2.2): IPv6 only in
  /// brackets, no zone ids.
  uri,
  /// A config value or a TLS SNI: IPv6 with or without brackets; SNI callers reject IP
  /// results themselves (RFC 6066 §3 forbids literals in SNI).
  bare,
};

/// Normalises a host name or IP literal.
///
/// Names: ASCII letters folded to lower case, one trailing dot folded ("a.org." ==
/// "a.org"), labels of letters, digits and hyphens (no leading/trailing hyphen), each at
/// most 63 octets, the whole at most 253; internationalised names only as A-labels
/// ("xn--..."; the punycode itself is not decoded). Text that ends in a numeric label
/// (decimal, or "0x" hex) is treated as an IPv4 attempt and accepted only in canonical
/// dotted-quad form (four decimal octets 0-255 without leading zeros).
///
/// Errors: the `host_error` named by each rule above.
/// Source: RFC 1035 §2.3.1/§2.3.4, RFC 1123 §2.1, RFC 5890 §2.3.2.1, RFC 3986 §3.2.2,
/// WHATWG URL Standard "IPv4 parser" (the "ends in a number" checker).
boost::system::result<host> normalize_host(std::string_view text, host_syntax syntax = host_syntax::uri);

/// An allowlist pattern: an exact host, or `*.suffix` matching one or more labels below
/// `suffix` (never `suffix` itself).
struct host_pattern {
  /// The exact host, or the suffix of a wildcard (without "*.").
  host base;
  bool wildcard = false;

  /// True when `h` (already normalised) is matched: exact equality, or for a wildcard,
  /// `h` ends with "." + suffix (a label boundary, so "evilwikidata.org" does not match
  /// "*.wikidata.org"). IP literals match only an equal IP pattern.
  bool matches(const host& h) const noexcept;
  /// The pattern as written in canonical form: "*.example.org", "example.org", "10.0.0.1".
  std::string to_string() const;
  friend bool operator==(const host_pattern&, const host_pattern&) = default;
};

/// Writes `p.to_string()`.
std::ostream& operator<<(std::ostream& os, const host_pattern& p);

/// Parses an allowlist pattern: `*.` only as the whole leftmost label, applied to a name
/// (never to an IP literal); the rest through `normalize_host(text, host_syntax::bare)`.
/// Errors: `host_error::invalid_wildcard` and the errors of `normalize_host`.
boost::system::result<host_pattern> parse_host_pattern(std::string_view text);

}  // namespace egress::common

namespace boost::system {
template <> struct is_error_code_enum<egress::common::host_error> : std::true_type {};
}  // namespace boost::system
