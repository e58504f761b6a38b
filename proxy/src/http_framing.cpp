#include "egress/proxy/http_framing.hpp"

#include "egress/proxy/http_syntax.hpp"

#include <algorithm>
#include <charconv>

namespace egress::proxy {
namespace {

constexpr std::size_t max_line = 4096;

int hex_value(char c) noexcept {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

using http::iequals;
using http::is_tchar;
constexpr auto trim = http::trim_ows;

}  // namespace

std::size_t chunked_scanner::feed(std::string_view bytes) noexcept {
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
          line_bytes_ = 0;
        } else if (c == '\r') {
          phase_ = phase::size_lf;
          ++i;
        } else {
          status_ = state::error;
        }
        break;
      }
      case phase::ext:
        // chunk-ext is not interpreted; bounded and free of control bytes.
        if (c == '\r') phase_ = phase::size_lf;
        else if (c == '\n' || c == '\0' || ++line_bytes_ > max_line) status_ = state::error;
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
        if (c != '\r') status_ = state::error;
        else phase_ = phase::data_lf;
        ++i;
        break;
      case phase::data_lf:
        if (c != '\n') status_ = state::error;
        else phase_ = phase::size;
        ++i;
        break;
      case phase::trailer_start:
        if (c == '\r') phase_ = phase::final_lf;
        else if (c == '\n') status_ = state::error;
        else {
          phase_ = phase::trailer;
          line_bytes_ = 1;
        }
        ++i;
        break;
      case phase::trailer:
        if (c == '\r') phase_ = phase::trailer_lf;
        else if (c == '\n' || c == '\0' || ++line_bytes_ > max_line) status_ = state::error;
        ++i;
        break;
      case phase::trailer_lf:
        if (c != '\n') status_ = state::error;
        else phase_ = phase::trailer_start;
        ++i;
        break;
      case phase::final_lf:
        if (c != '\n') status_ = state::error;
        else status_ = state::done;
        ++i;
        break;
    }
  }
  return i;
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
    for (char c : value)
      if (c == '\0' || c == '\r' || c == '\n') return std::nullopt;
    if (iequals(name, "content-length")) {
      std::uint64_t v = 0;
      auto [q, e] = std::from_chars(value.data(), value.data() + value.size(), v);
      if (value.empty() || e != std::errc{} || q != value.data() + value.size()) return std::nullopt;
      if (length && *length != v) return std::nullopt;
      length = v;
    } else if (iequals(name, "transfer-encoding")) {
      if (has_te || !iequals(value, "chunked")) return std::nullopt;
      has_te = chunked = true;
    }
    r.fields.emplace_back(std::string(name), std::string(value));
  }
  if (length && has_te) return std::nullopt;
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
  static constexpr std::string_view hop_by_hop[] = {"connection", "keep-alive", "proxy-connection", "te",
                                                    "trailer",    "upgrade",    "proxy-authenticate"};
  std::string out = "HTTP/1.1 " + std::to_string(r.status) + " " + r.reason_phrase + "\r\n";
  for (const auto& [name, value] : r.fields) {
    bool drop = std::any_of(std::begin(hop_by_hop), std::end(hop_by_hop), [&](std::string_view h) { return iequals(name, h); }) ||
                std::any_of(connection_named.begin(), connection_named.end(), [&](const std::string& h) {
                  return iequals(name, h) && !iequals(name, "content-length") && !iequals(name, "transfer-encoding");
                });
    if (drop) continue;
    out += name;
    out += ": ";
    out += value;
    out += "\r\n";
  }
  out += keep_alive ? "Connection: keep-alive\r\n\r\n" : "Connection: close\r\n\r\n";
  return out;
}

}  // namespace egress::proxy
