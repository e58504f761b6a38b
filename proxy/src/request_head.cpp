// Request-head parsing and checks, the head forwarded upstream for plain HTTP, and the
// proxy's own answers (Max-Forwards: 0). Text in, values out: no sockets, no I/O, no
// logging; the server decides what to do with the results.

#include "egress/proxy/request_head.hpp"

#include "egress/proxy/http_syntax.hpp"

#include <boost/throw_exception.hpp>

#include <algorithm>
#include <cassert>
#include <limits>
#include <stdexcept>

namespace egress::proxy {
namespace {

namespace reason = head_reason;

constexpr std::uint16_t http_default_port = 80;

using namespace http;

head_error bad(std::string_view why) noexcept { return {400, why}; }

// Calls `f(element)` for each non-empty element of a comma-separated list (RFC 9110
// §5.6.1: empty elements are ignored), OWS trimmed.
template <class F> void for_each_list_element(std::string_view list, F&& f) {
  while (true) {
    const std::size_t comma = list.find(',');
    const std::string_view element = trim_ows(list.substr(0, comma));
    if (!element.empty()) f(element);
    if (comma == std::string_view::npos) break;
    list.remove_prefix(comma + 1);
  }
}

// A port: 1-5 digits, 1..65535 (RFC 3986 §3.2.3 allows more digits and an empty port; we
// do not, so "080" is the longest odd form that gets through).
std::optional<std::uint16_t> parse_port(std::string_view s) noexcept {
  if (s.empty() || s.size() > 5) return std::nullopt;
  unsigned value = 0;
  for (char c : s) {
    if (!is_digit(c)) return std::nullopt;
    value = value * 10 + static_cast<unsigned>(c - '0');
  }
  if (value == 0 || value > 65535) return std::nullopt;
  return static_cast<std::uint16_t>(value);
}

// An authority split into host and port text (RFC 3986 §3.2.2-3.2.3), userinfo excluded.
struct authority_parts {
  std::string_view host;
  std::optional<std::string_view> port;  // the text after ':' (possibly empty)
};

// Splits "host[:port]". nullopt when something other than ":port" follows "[...]".
// Text with several ':' outside brackets is returned whole as the host, so that
// `normalize_host` names it (`host_unbracketed_ipv6` or `host_invalid_character`).
std::optional<authority_parts> split_authority(std::string_view a) noexcept {
  if (!a.empty() && a.front() == '[') {
    const std::size_t close = a.find(']');
    if (close == std::string_view::npos) return authority_parts{a, std::nullopt};
    std::string_view rest = a.substr(close + 1);
    if (rest.empty()) return authority_parts{a, std::nullopt};
    if (rest.front() != ':') return std::nullopt;
    return authority_parts{a.substr(0, close + 1), rest.substr(1)};
  }
  const std::size_t colon = a.find(':');
  if (colon == std::string_view::npos || a.find(':', colon + 1) != std::string_view::npos)
    return authority_parts{a, std::nullopt};
  return authority_parts{a.substr(0, colon), a.substr(colon + 1)};
}

boost::system::result<common::host, head_error> normalize_target_host(std::string_view text) {
  auto h = common::normalize_host(text, common::host_syntax::uri);
  if (!h) {
    const auto* cat = &h.error().category();
    // normalize_host only reports host_error; anything else would be a bug there.
    assert(cat == &common::host_error_category());
    (void)cat;
    return bad(common::host_error_reason(static_cast<common::host_error>(h.error().value())));
  }
  return std::move(*h);
}

// Every LF must follow a CR and every CR must precede an LF (RFC 9112 §2.2: bare CR is
// rejected; bare LF we reject too rather than accept, as the MAY there allows).
std::optional<head_error> check_line_endings(std::string_view head) noexcept {
  for (std::size_t i = 0; i < head.size(); ++i) {
    if (head[i] == '\n' && (i == 0 || head[i - 1] != '\r')) return bad(reason::bare_lf);
    if (head[i] == '\r' && (i + 1 == head.size() || head[i + 1] != '\n')) return bad(reason::bare_cr);
  }
  return std::nullopt;
}

// "HTTP/" DIGIT "." DIGIT (RFC 9112 §2.3), case-sensitive.
boost::system::result<int, head_error> parse_version(std::string_view v) noexcept {
  if (v.size() != 8 || !v.starts_with("HTTP/") || !is_digit(v[5]) || v[6] != '.' || !is_digit(v[7]))
    return bad(reason::bad_version);
  if (v[5] >= '2') return head_error{505, reason::version_not_supported};
  if (v[5] != '1' || v[7] > '1') return bad(reason::bad_version);
  return {boost::system::in_place_value, v[7] - '0'};
}

// CONNECT host:port (RFC 9112 §3.2.3, RFC 9110 §9.3.6).
std::optional<head_error> parse_connect_target(std::string_view target, request_head& r) {
  if (target.find('@') != std::string_view::npos) return bad(reason::userinfo_in_target);
  if (target.find_first_of("/?") != std::string_view::npos) return bad(reason::bad_connect_target);
  const auto parts = split_authority(target);
  if (!parts) return bad(reason::bad_connect_target);
  auto h = normalize_target_host(parts->host);
  if (!h) return h.error();
  if (!parts->port) return bad(reason::port_missing);
  const auto port = parse_port(*parts->port);
  if (!port) return bad(reason::bad_port);
  r.form = request_form::connect;
  r.host = std::move(*h);
  r.port = *port;
  return std::nullopt;
}

// http://host[:port][path][?query] (RFC 9112 §3.2.2, RFC 9110 §4.2.1). '#' is already out.
std::optional<head_error> parse_absolute_target(std::string_view target, request_head& r) {
  if (target.front() == '/') return bad(reason::origin_form);
  if (target == "*") return bad(reason::asterisk_form);
  const std::size_t scheme_end = target.find("://");
  if (scheme_end == std::string_view::npos) return bad(reason::bad_target);
  const std::string_view scheme = target.substr(0, scheme_end);
  if (iequals(scheme, "https")) return bad(reason::https_absolute_form);
  if (!iequals(scheme, "http")) return bad(reason::unsupported_scheme);

  const std::string_view rest = target.substr(scheme_end + 3);
  const std::size_t authority_end = std::min(rest.find_first_of("/?"), rest.size());
  const std::string_view authority = rest.substr(0, authority_end);
  const std::string_view path_and_query = rest.substr(authority_end);

  // Userinfo is deprecated in http URIs (RFC 9110 §4.2.4) and the classic way to make a
  // URL look like it names another host: refuse it rather than strip it.
  if (authority.find('@') != std::string_view::npos) return bad(reason::userinfo_in_target);
  const auto parts = split_authority(authority);
  if (!parts) return bad(reason::bad_target);
  auto h = normalize_target_host(parts->host);
  if (!h) return h.error();
  std::uint16_t port = http_default_port;
  if (parts->port) {
    const auto p = parse_port(*parts->port);
    if (!p) return bad(reason::bad_port);
    port = *p;
  }
  r.form = request_form::absolute;
  r.host = std::move(*h);
  r.port = port;
  // RFC 9112 §3.2.4: OPTIONS for the server as a whole (empty path, no query) is sent
  // upstream as "*"; otherwise (§3.2.1) an empty path is sent as "/".
  if (path_and_query.empty() && r.method == "OPTIONS") {
    r.path_and_query = "*";
    return std::nullopt;
  }
  if (path_and_query.empty() || path_and_query.front() == '?') r.path_and_query = "/";
  r.path_and_query.append(path_and_query);
  return std::nullopt;
}

// A Host field value (RFC 9110 §7.2): uri-host [":" port], no userinfo; the host
// normalised, the port as given (nullopt when absent). host_header_invalid otherwise.
struct host_field {
  common::host host;
  std::optional<std::uint16_t> port;
};
boost::system::result<host_field, head_error> parse_host_field(std::string_view value) {
  if (value.find('@') != std::string_view::npos) return bad(reason::host_header_invalid);
  const auto parts = split_authority(value);
  if (!parts) return bad(reason::host_header_invalid);
  auto h = common::normalize_host(parts->host, common::host_syntax::uri);
  if (!h) return bad(reason::host_header_invalid);
  host_field f{std::move(*h), std::nullopt};
  if (parts->port) {
    f.port = parse_port(*parts->port);
    if (!f.port) return bad(reason::host_header_invalid);
  }
  return f;
}

// A Host field value against the target (RFC 9110 §7.2, RFC 9112 §3.2): absolute form
// reads a missing port as 80, CONNECT as "any port".
std::optional<head_error> check_host_field(std::string_view value, const request_head& r) {
  auto f = parse_host_field(value);
  if (!f) return f.error();
  if (!f->port && r.form == request_form::absolute) f->port = http_default_port;
  if (f->host != r.host || (f->port && *f->port != r.port)) return bad(reason::host_mismatch);
  return std::nullopt;
}

// Origin form: the Host field value is the target (RFC 9112 §3.3); its port, 80 when
// absent, must be the listener's.
std::optional<head_error> take_host_field(std::string_view value, request_head& r) {
  auto f = parse_host_field(value);
  if (!f) return f.error();
  if (f->port.value_or(http_default_port) != r.port) return bad(reason::host_mismatch);
  r.host = std::move(f->host);
  return std::nullopt;
}

// 1*DIGIT as an unsigned 64-bit number; nullopt when empty or not digits. Past 2^64-1:
// nullopt, or 2^64-1 when `saturate`.
std::optional<std::uint64_t> parse_decimal(std::string_view s, bool saturate) noexcept {
  if (s.empty()) return std::nullopt;
  constexpr auto max = std::numeric_limits<std::uint64_t>::max();
  std::uint64_t value = 0;
  for (char c : s) {
    if (!is_digit(c)) return std::nullopt;
    const auto digit = static_cast<std::uint64_t>(c - '0');
    if (value > (max - digit) / 10) {
      if (!saturate) return std::nullopt;
      value = max;
    } else {
      value = value * 10 + digit;
    }
  }
  return value;
}

// Content-Length = 1*DIGIT (RFC 9110 §8.6), at most 2^64-1.
std::optional<std::uint64_t> parse_content_length(std::string_view s) noexcept { return parse_decimal(s, false); }

// Max-Forwards = 1*DIGIT (RFC 9110 §7.6.2); a value beyond 2^64-1 saturates (it still
// allows more hops than any chain has).
std::optional<std::uint64_t> parse_max_forwards(std::string_view s) noexcept { return parse_decimal(s, true); }

// Whether a field named `field` (Connection, Proxy-Connection) lists `option`.
bool connection_lists(const request_head& r, std::string_view option, std::string_view field = "connection") {
  bool found = false;
  for (const auto& f : r.fields) {
    if (!iequals(f.name, field)) continue;
    for_each_list_element(f.value, [&](std::string_view e) { found = found || iequals(e, option); });
  }
  return found;
}

}  // namespace

void throw_exception_from_error(const head_error& e, const boost::source_location& loc) {
  boost::throw_with_location(std::runtime_error("request head rejected: " + std::string(e.reason)), loc);
}

std::size_t find_head_end(std::string_view buffer, std::size_t searched) noexcept {
  // An end is "\n\n" or "\n\r\n"; one that straddles the old end starts at most 2 bytes
  // before it.
  std::size_t from = std::min(searched, buffer.size());
  from = from > 2 ? from - 2 : 0;
  while (true) {
    const std::size_t lf = buffer.find('\n', from);
    if (lf == std::string_view::npos) return 0;
    if (lf + 1 < buffer.size() && buffer[lf + 1] == '\n') return lf + 2;
    if (lf + 2 < buffer.size() && buffer[lf + 1] == '\r' && buffer[lf + 2] == '\n') return lf + 3;
    from = lf + 1;
  }
}

boost::system::result<request_head, head_error> parse_request_head(std::string_view head, const head_context& ctx) {
  const std::size_t end = find_head_end(head);
  if (end == 0) return bad(reason::incomplete_head);
  head = head.substr(0, end);
  if (auto e = check_line_endings(head)) return *e;
  // From here every line ends in CRLF and the head ends in CRLFCRLF.

  request_head r;
  r.head_bytes = end;

  // Request line: method SP request-target SP HTTP-version (RFC 9112 §3).
  std::size_t line_end = head.find("\r\n");
  const std::string_view line = head.substr(0, line_end);
  const std::size_t sp1 = line.find(' ');
  if (sp1 == std::string_view::npos) return bad(reason::bad_request_line);
  const std::size_t sp2 = line.find(' ', sp1 + 1);
  if (sp2 == std::string_view::npos) {
    // "GET /": an HTTP/0.9 simple request.
    if (sp1 == 0 || sp1 + 1 == line.size()) return bad(reason::bad_request_line);
    return bad(reason::version_missing);
  }
  r.method = line.substr(0, sp1);
  r.target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  const std::string_view version = line.substr(sp2 + 1);
  if (r.method.empty() || r.target.empty() || version.find(' ') != std::string_view::npos)
    return bad(reason::bad_request_line);
  if (!is_token(r.method)) return bad(reason::bad_method);
  const auto minor = parse_version(version);
  if (!minor) return minor.error();
  r.version_minor = *minor;

  // Control bytes and DEL anywhere in the target; bytes >= 0x80 are left to the host
  // normaliser (host_non_ascii) and refused in the path and query below.
  for (char c : r.target) {
    const auto u = static_cast<unsigned char>(c);
    if (u <= 0x20 || u == 0x7f) return bad(reason::bad_target);
  }
  if (r.target.find('#') != std::string_view::npos) return bad(reason::fragment_in_target);
  const bool is_connect = r.method == "CONNECT";
  if (ctx.transparent) {
    if (is_connect) return bad(reason::transparent_connect);
    if (r.target == "*") return bad(reason::asterisk_form);
    if (r.target.front() != '/') return bad(r.target.find("://") != std::string_view::npos ? reason::transparent_absolute_form
                                                                                        : reason::bad_target);
    r.form = request_form::origin;
    r.port = ctx.listener_port;
    r.path_and_query = std::string(r.target);
  } else if (auto e = is_connect ? parse_connect_target(r.target, r) : parse_absolute_target(r.target, r)) {
    return *e;
  }
  for (char c : r.path_and_query)
    if (static_cast<unsigned char>(c) >= 0x80) return bad(reason::bad_target);

  // Field lines (RFC 9112 §5), up to the empty line. Folding is looked for first, so a
  // folded field is reported as obs_fold rather than as whatever its first line lacks.
  std::size_t pos = line_end + 2;
  const std::string_view field_section = head.substr(line_end);  // starts with CRLF
  for (std::size_t fold = field_section.find("\r\n"); fold != std::string_view::npos;
       fold = field_section.find("\r\n", fold + 2)) {
    if (fold + 2 < field_section.size() && is_ows(field_section[fold + 2])) return bad(reason::obs_fold);
  }
  std::optional<std::string_view> host_value;
  std::optional<std::string_view> max_forwards_value;
  bool has_transfer_encoding = false;
  bool duplicate_max_forwards = false;
  while (true) {
    line_end = head.find("\r\n", pos);
    const std::string_view field_line = head.substr(pos, line_end - pos);
    pos = line_end + 2;
    if (field_line.empty()) break;
    if (r.fields.size() == max_fields) return head_error{431, reason::too_many_fields};
    const std::size_t colon = field_line.find(':');
    if (colon == std::string_view::npos) return bad(reason::bad_field_line);
    const std::string_view name = field_line.substr(0, colon);
    if (!name.empty() && is_ows(name.back())) return bad(reason::whitespace_before_colon);
    if (!is_token(name)) return bad(reason::bad_field_name);
    const std::string_view value = trim_ows(field_line.substr(colon + 1));
    for (char c : value)
      if (!is_field_value_byte(c)) return bad(reason::bad_field_value);
    r.fields.push_back({name, value});

    if (iequals(name, "host")) {
      if (host_value) return bad(reason::host_duplicate);
      host_value = value;
    } else if (iequals(name, "content-length")) {
      if (r.content_length || value.find(',') != std::string_view::npos)
        return bad(reason::duplicate_content_length);
      r.content_length = parse_content_length(value);
      if (!r.content_length) return bad(reason::bad_content_length);
    } else if (iequals(name, "transfer-encoding")) {
      if (has_transfer_encoding || !iequals(value, "chunked")) return bad(reason::bad_transfer_encoding);
      if (r.version_minor == 0) return bad(reason::transfer_encoding_http10);
      has_transfer_encoding = true;
    } else if (iequals(name, "connection") || iequals(name, "proxy-connection")) {
      if (!is_token_list(value)) return bad(reason::bad_connection);
    } else if (iequals(name, "max-forwards")) {
      if (max_forwards_value) duplicate_max_forwards = true;
      max_forwards_value = value;
    }
  }

  // Framing (RFC 9112 §6.1, §6.3; RFC 9110 §9.3.6).
  if (has_transfer_encoding && r.content_length) return bad(reason::cl_and_te);
  r.chunked = has_transfer_encoding;
  if (is_connect && (r.chunked || r.content_length.value_or(0) > 0)) return bad(reason::connect_with_body);
  const bool is_trace = r.method == "TRACE";
  if (is_trace && (r.chunked || r.content_length.value_or(0) > 0)) return bad(reason::trace_with_body);

  // Max-Forwards (RFC 9110 §7.6.2): TRACE and OPTIONS only.
  if ((is_trace || r.method == "OPTIONS") && max_forwards_value) {
    if (duplicate_max_forwards) return bad(reason::bad_max_forwards);
    r.max_forwards = parse_max_forwards(*max_forwards_value);
    if (!r.max_forwards) return bad(reason::bad_max_forwards);
    r.answer_locally = *r.max_forwards == 0;
  }

  // Host (RFC 9112 §3.2): required in HTTP/1.1 (absolute form; see the docstring for
  // CONNECT), and when present it must name the target.
  if (r.form == request_form::origin) {
    // The target is what Host names (RFC 9112 §3.2.1, §3.3): required, HTTP/1.0 too, since
    // nothing else says where the request goes.
    if (!host_value) return bad(reason::host_missing);
    if (auto e = take_host_field(*host_value, r)) return *e;
  } else if (!host_value) {
    if (!is_connect && r.version_minor == 1) return bad(reason::host_missing);
  } else if (auto e = check_host_field(*host_value, r)) {
    return *e;
  }

  // Persistence (RFC 9112 §9.3).
  if (connection_lists(r, "close") || connection_lists(r, "close", "proxy-connection")) r.keep_alive = false;
  else r.keep_alive = r.version_minor == 1 || connection_lists(r, "keep-alive");
  return r;
}

namespace {

// Lower case with '_' read as '-': the spelling servers that fold the two would see.
std::string folded_name(std::string_view name) {
  std::string out(name.size(), '\0');
  for (std::size_t i = 0; i < name.size(); ++i) out[i] = name[i] == '_' ? '-' : to_lower(name[i]);
  return out;
}

// Fields never forwarded upstream whatever their value (see the upstream_head docstring),
// lower case.
constexpr std::string_view never_forwarded[] = {
    "host", "connection", "keep-alive", "te", "trailer", "upgrade", "proxy",
    "forwarded", "x-forwarded-host", "x-forwarded-server", "x-host", "x-http-host-override"};

// Fields the proxy rewrites itself (framing, Max-Forwards), lower case.
constexpr std::string_view rewritten[] = {"content-length", "transfer-encoding", "max-forwards"};

bool never_forwarded_name(std::string_view folded) noexcept {
  for (std::string_view n : never_forwarded)
    if (folded == n) return true;
  return folded.starts_with("proxy-");
}

// A '_' spelling of a field the proxy interprets, rewrites or removes.
bool interpreted_alias(std::string_view name) {
  if (name.find('_') == std::string_view::npos) return false;
  const std::string folded = folded_name(name);
  if (never_forwarded_name(folded)) return true;
  for (std::string_view n : rewritten)
    if (folded == n) return true;
  return false;
}

// Likely to carry credentials: left out of a TRACE echo (RFC 9110 §9.3.8).
bool sensitive_name(std::string_view name) {
  const std::string folded = folded_name(name);
  static constexpr std::string_view parts[] = {"auth", "cookie", "token", "secret", "passw", "key", "session"};
  for (std::string_view p : parts)
    if (folded.find(p) != std::string::npos) return true;
  return false;
}

}  // namespace

std::string upstream_head(const request_head& r) {
  assert(r.form == request_form::absolute || r.form == request_form::origin);

  // Fields named in Connection are hop-by-hop (RFC 9110 §7.6.1), but never the ones that
  // name the target or frame the relayed body.
  std::vector<std::string_view> named;
  for (const auto& f : r.fields) {
    if (!iequals(f.name, "connection")) continue;
    for_each_list_element(f.value, [&](std::string_view e) {
      if (!iequals(e, "host") && !iequals(e, "content-length") && !iequals(e, "transfer-encoding"))
        named.push_back(e);
    });
  }
  const auto dropped = [&](std::string_view name) {
    if (interpreted_alias(name)) return true;
    for (std::string_view a : never_forwarded)
      if (iequals(name, a)) return true;
    if (istarts_with(name, "proxy-")) return true;
    for (std::string_view n : named)
      if (iequals(name, n)) return true;
    return false;
  };

  std::string out;
  out.reserve(r.head_bytes + 64);
  out.append(r.method).append(" ").append(r.path_and_query).append(" HTTP/1.1\r\nHost: ");
  if (r.host.kind == common::host_kind::ipv6) out.append("[").append(r.host.text).append("]");
  else out.append(r.host.text);
  if (r.port != http_default_port) out.append(":").append(std::to_string(r.port));
  out.append("\r\n");
  for (const auto& f : r.fields) {
    // The parser allowed one framing field at most, so each of these is written once.
    if (iequals(f.name, "transfer-encoding")) {
      out.append("Transfer-Encoding: chunked\r\n");
    } else if (iequals(f.name, "content-length")) {
      out.append("Content-Length: ").append(std::to_string(*r.content_length)).append("\r\n");
    } else if (dropped(f.name)) {
      continue;
    } else if (r.max_forwards && iequals(f.name, "max-forwards")) {
      const std::uint64_t left = *r.max_forwards == 0 ? 0 : *r.max_forwards - 1;
      out.append("Max-Forwards: ").append(std::to_string(left)).append("\r\n");
    } else {
      out.append(f.name).append(": ").append(f.value).append("\r\n");
    }
  }
  out.append("Connection: close\r\n\r\n");
  return out;
}

local_response local_answer(const request_head& r) {
  assert(r.answer_locally);
  local_response a;
  a.keep_alive = r.keep_alive && !r.chunked && r.content_length.value_or(0) == 0;
  std::string content;
  std::string& out = a.bytes;
  out = "HTTP/1.1 200 OK\r\n";
  if (r.method == "TRACE") {
    content.reserve(r.head_bytes);
    content.append(r.method).append(" ").append(r.target).append(r.version_minor == 0 ? " HTTP/1.0\r\n" : " HTTP/1.1\r\n");
    for (const auto& f : r.fields) {
      if (sensitive_name(f.name)) continue;
      content.append(f.name).append(": ").append(f.value).append("\r\n");
    }
    content.append("\r\n");
    out.append("Content-Type: message/http\r\n");
  }
  out.append("Content-Length: ").append(std::to_string(content.size())).append("\r\n");
  out.append("Cache-Control: no-store\r\n");
  out.append(a.keep_alive ? "Connection: keep-alive\r\n\r\n" : "Connection: close\r\n\r\n");
  out.append(content);
  return a;
}

}  // namespace egress::proxy
