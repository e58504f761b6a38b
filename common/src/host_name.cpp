#include "egress/common/host_name.hpp"

#include <boost/asio/ip/address_v4.hpp>
#include <boost/asio/ip/address_v6.hpp>

#include <array>
#include <optional>
#include <ostream>
#include <cstdint>

namespace egress::common {
namespace {

class host_error_category_impl final : public boost::system::error_category {
public:
  const char* name() const noexcept override { return "egress.host"; }
  std::string message(int ev) const override {
    switch (static_cast<host_error>(ev)) {
      case host_error::empty: return "host is empty";
      case host_error::too_long: return "host name is longer than 253 octets";
      case host_error::empty_label: return "host name has an empty label";
      case host_error::label_too_long: return "a label is longer than 63 octets";
      case host_error::non_ascii: return "host name is not ASCII; give it as an A-label (punycode, \"xn--...\")";
      case host_error::invalid_character: return "host name has a character other than a letter, digit, hyphen or dot";
      case host_error::hyphen_at_label_edge: return "a label starts or ends with a hyphen";
      case host_error::invalid_a_label: return "a label has \"--\" in positions 3-4 but is not a valid \"xn--\" A-label";
      case host_error::non_canonical_ipv4: return "IPv4 address not in canonical dotted-quad form";
      case host_error::invalid_ipv6: return "not a valid IPv6 address (zone ids are not allowed)";
      case host_error::unbracketed_ipv6: return "an IPv6 address must be enclosed in brackets";
      case host_error::invalid_wildcard: return "\"*\" is allowed only as the whole leftmost label (\"*.example.org\")";
    }
    return "unknown host error";
  }
};

constexpr bool is_digit(char c) noexcept { return c >= '0' && c <= '9'; }
constexpr bool is_alpha(char c) noexcept { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
constexpr bool is_hex(char c) noexcept {
  return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}
constexpr char to_lower(char c) noexcept {
  return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
}

// WHATWG URL "ends in a number": the last label is all decimal digits, or "0x"/"0X"
// followed by hex digits (possibly none). Such a host is an IPv4 attempt.
bool is_numeric_label(std::string_view label) noexcept {
  if (label.empty()) return false;
  if (label.size() >= 2 && label[0] == '0' && (label[1] == 'x' || label[1] == 'X')) {
    for (char c : label.substr(2))
      if (!is_hex(c)) return false;
    return true;
  }
  for (char c : label)
    if (!is_digit(c)) return false;
  return true;
}

// Canonical dotted quad: exactly four decimal labels, 0-255, no leading zeros.
std::optional<boost::asio::ip::address_v4> parse_canonical_ipv4(std::string_view s) noexcept {
  std::array<unsigned char, 4> octets{};
  std::size_t i = 0;
  for (int part = 0; part < 4; ++part) {
    if (part > 0) {
      if (i >= s.size() || s[i] != '.') return std::nullopt;
      ++i;
    }
    std::size_t start = i;
    unsigned value = 0;
    while (i < s.size() && is_digit(s[i]) && i - start < 4) {
      value = value * 10 + static_cast<unsigned>(s[i] - '0');
      ++i;
    }
    std::size_t len = i - start;
    if (len == 0 || len > 3 || value > 255 || (len > 1 && s[start] == '0')) return std::nullopt;
    octets[static_cast<std::size_t>(part)] = static_cast<unsigned char>(value);
  }
  if (i != s.size()) return std::nullopt;
  return boost::asio::ip::address_v4(octets);
}

boost::system::result<host> parse_ipv6(std::string_view s) {
  if (s.empty() || s.find('%') != std::string_view::npos) return host_error::invalid_ipv6;
  for (char c : s)
    if (!(is_hex(c) || c == ':' || c == '.')) return host_error::invalid_ipv6;
  boost::system::error_code ec;
  auto a = boost::asio::ip::make_address_v6(std::string(s), ec);
  if (ec || a.scope_id() != 0) return host_error::invalid_ipv6;
  host h;
  h.kind = host_kind::ipv6;
  h.address = a;
  h.text = a.to_string();
  return h;
}

}  // namespace

const boost::system::error_category& host_error_category() noexcept {
  static const host_error_category_impl instance;
  return instance;
}

boost::system::error_code make_error_code(host_error e) noexcept {
  return {static_cast<int>(e), host_error_category()};
}

std::string_view host_error_reason(host_error e) noexcept {
  switch (e) {
    case host_error::empty: return "host_empty";
    case host_error::too_long: return "host_too_long";
    case host_error::empty_label: return "host_empty_label";
    case host_error::label_too_long: return "host_label_too_long";
    case host_error::non_ascii: return "host_non_ascii";
    case host_error::invalid_character: return "host_invalid_character";
    case host_error::hyphen_at_label_edge: return "host_hyphen_at_label_edge";
    case host_error::invalid_a_label: return "host_invalid_a_label";
    case host_error::non_canonical_ipv4: return "host_non_canonical_ipv4";
    case host_error::invalid_ipv6: return "host_invalid_ipv6";
    case host_error::unbracketed_ipv6: return "host_unbracketed_ipv6";
    case host_error::invalid_wildcard: return "host_invalid_wildcard";
  }
  return "host_invalid";
}

boost::system::result<host> normalize_host(std::string_view text, host_syntax syntax) {
  if (text.empty()) return host_error::empty;

  // IP-literal = "[" IPv6address "]" (RFC 3986 §3.2.2); IPvFuture is not accepted.
  if (text.front() == '[') {
    if (text.size() < 2 || text.back() != ']') return host_error::invalid_ipv6;
    return parse_ipv6(text.substr(1, text.size() - 2));
  }
  if (text.find(':') != std::string_view::npos) {
    if (syntax == host_syntax::bare) return parse_ipv6(text);
    // A colon outside brackets: an unbracketed IPv6 if it parses as one, else junk.
    return parse_ipv6(text) ? boost::system::result<host>(host_error::unbracketed_ipv6)
                            : boost::system::result<host>(host_error::invalid_character);
  }

  // Fold exactly one trailing dot (the root label); a second one leaves an empty label.
  if (text.back() == '.') text.remove_suffix(1);
  if (text.empty()) return host_error::empty;

  // Check every byte first, so a non-ASCII name gets that reason whatever else is wrong.
  for (char c : text) {
    auto u = static_cast<unsigned char>(c);
    if (u >= 0x80) return host_error::non_ascii;
  }
  for (char c : text)
    if (!(is_alpha(c) || is_digit(c) || c == '-' || c == '.')) return host_error::invalid_character;

  // IPv4 attempt: the last label is numeric. Only canonical dotted-quad passes.
  std::size_t last_dot = text.rfind('.');
  std::string_view last_label = last_dot == std::string_view::npos ? text : text.substr(last_dot + 1);
  if (is_numeric_label(last_label)) {
    auto v4 = parse_canonical_ipv4(text);
    if (!v4) return host_error::non_canonical_ipv4;
    host h;
    h.kind = host_kind::ipv4;
    h.address = *v4;
    h.text = v4->to_string();
    return h;
  }

  if (text.size() > 253) return host_error::too_long;
  host h;
  h.kind = host_kind::name;
  h.text.reserve(text.size());
  std::size_t start = 0;
  while (start <= text.size()) {
    std::size_t end = text.find('.', start);
    if (end == std::string_view::npos) end = text.size();
    std::string_view label = text.substr(start, end - start);
    if (label.empty()) return host_error::empty_label;
    if (label.size() > 63) return host_error::label_too_long;
    if (label.front() == '-' || label.back() == '-') return host_error::hyphen_at_label_edge;
    // RFC 5890 §2.3.1: "--" in positions 3-4 is reserved for A-labels ("xn--").
    if (label.size() >= 4 && label[2] == '-' && label[3] == '-') {
      bool xn = to_lower(label[0]) == 'x' && to_lower(label[1]) == 'n';
      if (!xn || label.size() == 4) return host_error::invalid_a_label;
    }
    for (char c : label) h.text.push_back(to_lower(c));
    if (end == text.size()) break;
    h.text.push_back('.');
    start = end + 1;
  }
  return h;
}

std::ostream& operator<<(std::ostream& os, const host& h) { return os << h.text; }

std::ostream& operator<<(std::ostream& os, const host_pattern& p) { return os << p.to_string(); }

bool host_pattern::matches(const host& h) const noexcept {
  if (!wildcard) return h.kind == base.kind && h.text == base.text;
  if (h.kind != host_kind::name) return false;
  const std::string& s = base.text;
  return h.text.size() > s.size() + 1 && h.text.ends_with(s) &&
         h.text[h.text.size() - s.size() - 1] == '.';
}

std::string host_pattern::to_string() const {
  if (wildcard) return "*." + base.text;
  if (base.kind == host_kind::ipv6) return base.text;
  return base.text;
}

boost::system::result<host_pattern> parse_host_pattern(std::string_view text) {
  host_pattern p;
  if (text.starts_with("*.")) {
    text.remove_prefix(2);
    p.wildcard = true;
  }
  if (text.find('*') != std::string_view::npos) return host_error::invalid_wildcard;
  auto h = normalize_host(text, host_syntax::bare);
  if (!h) return h.error();
  if (p.wildcard && h->is_ip()) return host_error::invalid_wildcard;
  p.base = std::move(*h);
  return p;
}

}  // namespace egress::common
