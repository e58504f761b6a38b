// Plain-HTTP message framing: the chunked-body scanner with its trailer check, the
// upstream response head parser and the head the client gets. Text in, values out: no
// sockets, no I/O; the relay in server.cpp decides what to write.

#include "egress/proxy/http_framing.hpp"

#include "egress/proxy/http_syntax.hpp"

#include <algorithm>
#include <charconv>

namespace egress::proxy {
namespace {

int hex_value(char c) noexcept {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

using http::iequals;
using http::is_tchar;
constexpr auto trim = http::trim_ows;

// `name` or one of its '_' spellings is `canonical` (lower case).
bool names(std::string_view name, std::string_view canonical) noexcept {
  return iequals(name, canonical) || http::is_underscore_alias(name, canonical);
}

// Hop-by-hop fields and fields meant for a proxy (RFC 9110 §7.6.1), any spelling.
bool hop_by_hop_name(std::string_view name) noexcept {
  static constexpr std::string_view hop[] = {"connection", "keep-alive", "te", "trailer", "upgrade", "proxy"};
  for (std::string_view h : hop)
    if (names(name, h)) return true;
  return http::istarts_with_alias(name, "proxy-");
}

// Framing and routing fields, any spelling: refused in a trailer section.
bool framing_name(std::string_view name) noexcept {
  return names(name, "host") || names(name, "content-length") || names(name, "transfer-encoding");
}

// chunk-ext = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] ),
// chunk-ext-name = token, chunk-ext-val = token / quoted-string (RFC 9112 §7.1.1, §5.6.4).
bool valid_chunk_ext(std::string_view e) noexcept {
  std::size_t i = 0;
  const auto bws = [&] {
    const std::size_t from = i;
    while (i < e.size() && http::is_ows(e[i])) ++i;
    return i > from;
  };
  const auto token = [&] {
    const std::size_t from = i;
    while (i < e.size() && is_tchar(e[i])) ++i;
    return i > from;
  };
  const auto quoted_string = [&] {
    if (i >= e.size() || e[i] != '"') return false;
    for (++i; i < e.size(); ++i) {
      const auto u = static_cast<unsigned char>(e[i]);
      if (u == '"') {
        ++i;
        return true;
      }
      if (u == '\\') {
        if (++i == e.size() || !http::is_field_value_byte(e[i])) return false;
      } else if (!http::is_field_value_byte(e[i])) {
        return false;
      }
    }
    return false;  // no closing quote
  };
  while (i < e.size()) {
    bws();
    if (i == e.size() || e[i] != ';') return false;  // trailing BWS, or junk
    ++i;
    bws();
    if (!token()) return false;
    const bool space = bws();
    if (i == e.size()) return !space;
    if (e[i] == ';') continue;
    if (e[i] != '=') return false;
    ++i;
    bws();
    if (!token() && !quoted_string()) return false;
  }
  return true;
}

}  // namespace

void chunked_scanner::end_trailer_line() {
  const std::string_view line = line_;
  const std::size_t colon = line.find(':');
  if (colon == std::string_view::npos) {
    status_ = state::error;  // not a field line (a request line, "x", ...)
    return;
  }
  const std::string_view name = line.substr(0, colon);
  const std::string_view value = trim(line.substr(colon + 1));
  // A name that is not a token also covers obs-fold (leading SP/HTAB) and whitespace
  // before the colon.
  if (!http::is_token(name) || !std::all_of(value.begin(), value.end(), http::is_field_value_byte)) {
    status_ = state::error;
    return;
  }
  if (framing_name(name)) {
    status_ = state::error;
    return;
  }
  if (hop_by_hop_name(name)) {
    if (drop_is_error_) status_ = state::error;
    else ++dropped_;
    return;
  }
  if (++trailer_fields_ > max_trailer_fields) {
    status_ = state::error;
    return;
  }
  trailer_out_.append(name).append(": ").append(value).append("\r\n");
}

std::size_t chunked_scanner::feed(std::string_view bytes) {
  drop_is_error_ = true;
  return step(bytes).consumed;
}

chunked_step chunked_scanner::step(std::string_view bytes) {
  const bool in_trailer_at_start = phase_ >= phase::trailer_start;
  std::optional<std::size_t> trailer_from;
  std::size_t i = 0;
  while (i < bytes.size() && status_ == state::body) {
    char c = bytes[i];
    switch (phase_) {
      case phase::size: {
        int h = hex_value(c);
        if (h >= 0) {
          if (++size_digits_ > 16) {
            status_ = state::error;
            break;
          }
          remaining_ = (remaining_ << 4) | static_cast<std::uint64_t>(h);
          ++i;
        } else if (size_digits_ == 0) {
          status_ = state::error;
        } else if (c == ';' || c == ' ' || c == '\t') {
          phase_ = phase::ext;
          line_.clear();
        } else if (c == '\r') {
          phase_ = phase::size_lf;
          ++i;
        } else {
          status_ = state::error;
        }
        break;
      }
      case phase::ext:
        // chunk-ext is not interpreted, but relayed as received: it must have the RFC's
        // shape (checked at its end), so no recipient reads it, or the line, otherwise.
        if (c == '\r') {
          if (!valid_chunk_ext(line_)) {
            status_ = state::error;
            break;
          }
          phase_ = phase::size_lf;
        } else if (c == '\n' || line_.size() >= max_line_bytes) {
          status_ = state::error;
          break;
        } else {
          line_.push_back(c);
        }
        ++i;
        break;
      case phase::size_lf:
        if (c != '\n') {
          status_ = state::error;
          break;
        }
        ++i;
        if (remaining_ == 0) {
          phase_ = phase::trailer_start;
          trailer_from = i;
        } else {
          phase_ = phase::data;
        }
        size_digits_ = 0;
        break;
      case phase::data: {
        std::size_t take = static_cast<std::size_t>(std::min<std::uint64_t>(remaining_, bytes.size() - i));
        remaining_ -= take;
        i += take;
        if (remaining_ == 0) phase_ = phase::data_cr;
        break;
      }
      case phase::data_cr:
        if (c != '\r') {
          status_ = state::error;
          break;
        }
        phase_ = phase::data_lf;
        ++i;
        break;
      case phase::data_lf:
        if (c != '\n') {
          status_ = state::error;
          break;
        }
        phase_ = phase::size;
        ++i;
        break;
      case phase::trailer_start:
      case phase::trailer:
        if (++trailer_bytes_ > max_trailer_bytes) {
          status_ = state::error;
          break;
        }
        if (c == '\r') {
          phase_ = phase_ == phase::trailer_start ? phase::final_lf : phase::trailer_lf;
        } else if (c == '\n' || line_.size() >= max_line_bytes) {
          status_ = state::error;
          break;
        } else {
          if (phase_ == phase::trailer_start) line_.clear();
          phase_ = phase::trailer;
          line_.push_back(c);
        }
        ++i;
        break;
      case phase::trailer_lf:
        if (c != '\n') {
          status_ = state::error;
          break;
        }
        ++i;
        ++trailer_bytes_;
        end_trailer_line();
        phase_ = phase::trailer_start;
        break;
      case phase::final_lf:
        if (c != '\n') {
          status_ = state::error;
          break;
        }
        ++i;
        trailer_out_.append("\r\n");
        status_ = state::done;
        break;
    }
  }
  chunked_step out;
  out.consumed = i;
  out.verbatim = in_trailer_at_start ? 0 : trailer_from.value_or(i);
  return out;
}

std::optional<response_head> parse_response_head(std::string_view head, bool request_was_head) {
  response_head r;
  r.head_bytes = head.size();
  auto eol = head.find("\r\n");
  if (eol == std::string_view::npos) return std::nullopt;
  std::string_view line = head.substr(0, eol);
  // status-line = HTTP-version SP status-code SP [ reason-phrase ]
  if (line.size() < 12 || !line.starts_with("HTTP/1.") || line[8] != ' ') return std::nullopt;
  if (line[7] != '0' && line[7] != '1') return std::nullopt;
  if (line.size() > 12 && line[12] != ' ') return std::nullopt;
  r.version_minor = line[7] - '0';
  int status = 0;
  auto [p, ec] = std::from_chars(line.data() + 9, line.data() + 12, status);
  if (ec != std::errc{} || p != line.data() + 12 || status < 100 || status > 999) return std::nullopt;
  r.status = status;
  if (line.size() > 13) r.reason_phrase = std::string(line.substr(13));
  for (char c : r.reason_phrase)
    if ((static_cast<unsigned char>(c) < 0x20 && c != '\t') || c == 0x7f) return std::nullopt;

  std::size_t pos = eol + 2;
  std::optional<std::uint64_t> length;
  bool chunked = false, has_te = false;
  while (pos < head.size()) {
    auto end = head.find("\r\n", pos);
    if (end == std::string_view::npos) return std::nullopt;
    std::string_view field = head.substr(pos, end - pos);
    pos = end + 2;
    if (field.empty()) break;
    if (field.front() == ' ' || field.front() == '\t') return std::nullopt;  // obs-fold
    auto colon = field.find(':');
    if (colon == std::string_view::npos || colon == 0) return std::nullopt;
    std::string_view name = field.substr(0, colon);
    if (!std::all_of(name.begin(), name.end(), is_tchar)) return std::nullopt;
    std::string_view value = trim(field.substr(colon + 1));
    if (!std::all_of(value.begin(), value.end(), http::is_field_value_byte)) return std::nullopt;
    if (iequals(name, "content-length")) {
      std::uint64_t v = 0;
      auto [q, e] = std::from_chars(value.data(), value.data() + value.size(), v);
      if (value.empty() || e != std::errc{} || q != value.data() + value.size()) return std::nullopt;
      if (length && *length != v) return std::nullopt;
      length = v;
    } else if (iequals(name, "transfer-encoding")) {
      if (has_te || !iequals(value, "chunked")) return std::nullopt;
      has_te = chunked = true;
    } else if ((iequals(name, "connection") || iequals(name, "proxy-connection")) && !http::is_token_list(value)) {
      return std::nullopt;
    }
    r.fields.emplace_back(std::string(name), std::string(value));
  }
  if (length && has_te) return std::nullopt;
  r.declared_length = length;
  if (request_was_head || (r.status >= 100 && r.status < 200) || r.status == 204 || r.status == 304) {
    r.body = body_kind::none;
  } else if (chunked) {
    r.body = body_kind::chunked;
  } else if (length) {
    r.body = *length == 0 ? body_kind::none : body_kind::length;
    r.content_length = *length;
  } else {
    r.body = body_kind::until_close;
  }
  return r;
}

std::string client_response_head(const response_head& r, bool keep_alive) {
  std::vector<std::string> connection_named;
  for (const auto& [name, value] : r.fields) {
    if (!iequals(name, "connection")) continue;
    std::string_view v = value;
    while (!v.empty()) {
      auto comma = v.find(',');
      std::string_view token = trim(v.substr(0, comma));
      if (!token.empty()) connection_named.emplace_back(token);
      if (comma == std::string_view::npos) break;
      v.remove_prefix(comma + 1);
    }
  }
  const auto dropped = [&](std::string_view name) {
    if (hop_by_hop_name(name) || names(name, "proxy-authenticate")) return true;
    // '_' spellings of the framing fields (the real ones are rewritten below).
    if (http::is_underscore_alias(name, "content-length") || http::is_underscore_alias(name, "transfer-encoding"))
      return true;
    return std::any_of(connection_named.begin(), connection_named.end(), [&](const std::string& h) {
      return iequals(name, h) && !iequals(name, "content-length") && !iequals(name, "transfer-encoding");
    });
  };
  std::string out = "HTTP/1.1 " + std::to_string(r.status) + " " + r.reason_phrase + "\r\n";
  bool length_written = false;
  for (const auto& [name, value] : r.fields) {
    if (iequals(name, "transfer-encoding")) {
      out += "Transfer-Encoding: chunked\r\n";  // the parser accepts no other value
      continue;
    }
    if (iequals(name, "content-length")) {
      if (!length_written && r.declared_length) out += "Content-Length: " + std::to_string(*r.declared_length) + "\r\n";
      length_written = true;
      continue;
    }
    if (dropped(name)) continue;
    out += name;
    out += ": ";
    out += value;
    out += "\r\n";
  }
  out += keep_alive ? "Connection: keep-alive\r\n\r\n" : "Connection: close\r\n\r\n";
  return out;
}

}  // namespace egress::proxy
