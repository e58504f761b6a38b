#pragma once
/// Character classes and small comparisons of HTTP/1.1 syntax, shared by the request-head
/// parser and the response framing. Source: RFC 9110 §5.5 (field values), §5.6.2 (tokens),
/// §5.6.3 (whitespace).

#include <string_view>

namespace egress::proxy::http {

constexpr bool is_digit(char c) noexcept { return c >= '0' && c <= '9'; }
constexpr bool is_alpha(char c) noexcept { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
/// OWS: SP or HTAB.
constexpr bool is_ows(char c) noexcept { return c == ' ' || c == '\t'; }
constexpr char to_lower(char c) noexcept { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

/// tchar (RFC 9110 §5.6.2).
constexpr bool is_tchar(char c) noexcept {
  if (is_digit(c) || is_alpha(c)) return true;
  switch (c) {
    case '!': case '#': case '$': case '%': case '&': case '\'': case '*': case '+':
    case '-': case '.': case '^': case '_': case '`': case '|': case '~':
      return true;
    default:
      return false;
  }
}

/// token = 1*tchar.
constexpr bool is_token(std::string_view s) noexcept {
  if (s.empty()) return false;
  for (char c : s)
    if (!is_tchar(c)) return false;
  return true;
}

/// field-value bytes (RFC 9110 §5.5): HTAB, SP, VCHAR, obs-text; never NUL, CR, LF or DEL.
constexpr bool is_field_value_byte(char c) noexcept {
  const auto u = static_cast<unsigned char>(c);
  return u == '\t' || (u >= 0x20 && u != 0x7f);
}

/// ASCII case-insensitive equality (field names, tokens).
constexpr bool iequals(std::string_view a, std::string_view b) noexcept {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (to_lower(a[i]) != to_lower(b[i])) return false;
  return true;
}

constexpr bool istarts_with(std::string_view s, std::string_view prefix) noexcept {
  return s.size() >= prefix.size() && iequals(s.substr(0, prefix.size()), prefix);
}

/// Whether field-name `name` is `canonical` spelled with '_' for one or more of its '-'
/// ("Content_Length", "transfer_encoding" for "content-length", "transfer-encoding"),
/// compared case-insensitively; false for `canonical` itself and for any other name.
/// Some servers (CGI-style gateways turn both into HTTP_CONTENT_LENGTH) fold such a name
/// into the real field, so the proxy treats the alias of a field it interprets as a field
/// it must not forward. `canonical` is lower case.
constexpr bool is_underscore_alias(std::string_view name, std::string_view canonical) noexcept {
  if (name.size() != canonical.size()) return false;
  bool underscore = false;
  for (std::size_t i = 0; i < name.size(); ++i) {
    if (name[i] == '_' && canonical[i] == '-') underscore = true;
    else if (to_lower(name[i]) != canonical[i]) return false;
  }
  return underscore;
}

/// Whether `name` starts with `prefix` (lower case), where '_' in `name` also matches '-'
/// in `prefix`: "Proxy-Authorization" and "Proxy_Authorization" both start with "proxy-".
constexpr bool istarts_with_alias(std::string_view name, std::string_view prefix) noexcept {
  if (name.size() < prefix.size()) return false;
  for (std::size_t i = 0; i < prefix.size(); ++i) {
    if (name[i] == '_' && prefix[i] == '-') continue;
    if (to_lower(name[i]) != prefix[i]) return false;
  }
  return true;
}

/// Whether `s` is a comma-separated list of tokens (RFC 9110 §5.6.1 `#token`): elements
/// split by ',' with OWS around them; empty elements allowed (", a,,b"). The shape of
/// Connection (§7.6.1), Proxy-Connection (read as Connection by some implementations) and
/// Transfer-Encoding without parameters.
constexpr bool is_token_list(std::string_view s) noexcept {
  while (true) {
    const std::size_t comma = s.find(',');
    std::string_view element = s.substr(0, comma);
    while (!element.empty() && is_ows(element.front())) element.remove_prefix(1);
    while (!element.empty() && is_ows(element.back())) element.remove_suffix(1);
    if (!element.empty() && !is_token(element)) return false;
    if (comma == std::string_view::npos) return true;
    s.remove_prefix(comma + 1);
  }
}

/// `s` without leading and trailing OWS.
constexpr std::string_view trim_ows(std::string_view s) noexcept {
  while (!s.empty() && is_ows(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_ows(s.back())) s.remove_suffix(1);
  return s;
}

}  // namespace egress::proxy::http
