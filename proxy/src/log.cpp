#include "egress/proxy/log.hpp"

#include <cerrno>
#include <charconv>
#include <cstdio>
#include <ctime>

#include <unistd.h>

namespace egress::proxy {
namespace {

// The date and time to the second change once a second: formatted then, reused for every
// line in between (the log is written from the io_context's thread only).
void append_time(std::string& out, std::chrono::system_clock::time_point now) {
  auto secs = std::chrono::time_point_cast<std::chrono::seconds>(now);
  auto millis = std::chrono::duration_cast<std::chrono::milliseconds>(now - secs).count();
  thread_local std::chrono::time_point<std::chrono::system_clock, std::chrono::seconds> cached_second{};
  thread_local char cached[64] = {};
  if (secs != cached_second || cached[0] == 0) {
    std::time_t t = std::chrono::system_clock::to_time_t(secs);
    std::tm tm{};
    ::gmtime_r(&t, &tm);
    std::snprintf(cached, sizeof cached, "%04d-%02d-%02dT%02d:%02d:%02d.", tm.tm_year + 1900, tm.tm_mon + 1,
                  tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
    cached_second = secs;
  }
  const char ms[3] = {static_cast<char>('0' + millis / 100), static_cast<char>('0' + millis / 10 % 10),
                      static_cast<char>('0' + millis % 10)};
  out += '"';
  out += cached;
  out.append(ms, 3);
  out += "Z\"";
}

void key(std::string& out, std::string_view k) {
  out += ",\"";
  out += k;
  out += "\":";
}

void append_ms(std::string& out, double ms) {
  char buf[32];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, ms, std::chars_format::fixed, 3);
  if (ec != std::errc{}) out += "0.000";  // cannot happen with 32 bytes, but never write garbage
  else out.append(buf, end);
}

}  // namespace

void append_json_string(std::string& out, std::string_view s, std::size_t cap) {
  static constexpr char hex[] = "0123456789abcdef";
  out += '"';
  bool truncated = s.size() > cap;
  if (truncated) s = s.substr(0, cap);
  for (char ch : s) {
    auto c = static_cast<unsigned char>(ch);
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20 || c >= 0x7f) {
          out += "\\u00";
          out += hex[c >> 4];
          out += hex[c & 0xf];
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  if (truncated) out += "...";
  out += '"';
}

std::string format_decision(const decision_record& r, std::chrono::system_clock::time_point now) {
  std::string out;
  out.reserve(384);
  out += "{\"time\":";
  append_time(out, now);
  key(out, field::event);
  out += "\"decision\"";
  key(out, field::conn);
  out += std::to_string(r.conn);
  key(out, field::client);
  append_json_string(out, r.client);
  key(out, field::method);
  append_json_string(out, r.method, 32);
  key(out, field::host);
  append_json_string(out, r.host);
  key(out, field::port);
  out += std::to_string(r.port);
  if (!r.sni.empty()) {
    key(out, field::sni);
    append_json_string(out, r.sni);
  }
  key(out, field::verdict);
  out += r.allowed ? "\"allow\"" : "\"deny\"";
  key(out, field::reason);
  append_json_string(out, r.reason);
  key(out, field::status);
  out += std::to_string(r.status);
  if (!r.upstream.empty()) {
    key(out, field::upstream);
    append_json_string(out, r.upstream);
  }
  key(out, field::bytes_up);
  out += std::to_string(r.bytes_up);
  key(out, field::bytes_down);
  out += std::to_string(r.bytes_down);
  if (r.dns_ms >= 0) {
    key(out, field::dns_ms);
    append_ms(out, r.dns_ms);
  }
  if (r.connect_ms >= 0) {
    key(out, field::connect_ms);
    append_ms(out, r.connect_ms);
  }
  key(out, field::total_ms);
  append_ms(out, r.total_ms);
  if (!r.end.empty()) {
    key(out, field::end);
    append_json_string(out, r.end);
  }
  out += '}';
  return out;
}

std::string format_dns(const dns_record& r, std::chrono::system_clock::time_point now) {
  std::string out;
  out.reserve(256);
  out += "{\"time\":";
  append_time(out, now);
  key(out, field::event);
  out += "\"dns\"";
  key(out, field::client);
  append_json_string(out, r.client);
  key(out, field::transport);
  append_json_string(out, r.transport, 8);
  key(out, field::qname);
  append_json_string(out, r.qname);
  key(out, field::qtype);
  append_json_string(out, r.qtype, 16);
  key(out, field::verdict);
  out += r.allowed ? "\"allow\"" : "\"deny\"";
  key(out, field::reason);
  append_json_string(out, r.reason);
  key(out, field::rcode);
  append_json_string(out, r.rcode, 16);
  if (!r.detail.empty()) {
    key(out, field::detail);
    append_json_string(out, r.detail);
  }
  if (!r.upstream.empty()) {
    key(out, field::upstream);
    append_json_string(out, r.upstream);
  }
  if (r.truncated) {
    key(out, field::tc);
    out += "true";
  }
  key(out, field::total_ms);
  append_ms(out, r.total_ms);
  out += '}';
  return out;
}

void write_line(std::string_view line) {
  std::string buf;
  buf.reserve(line.size() + 1);
  buf.append(line);
  buf.push_back('\n');
  const char* p = buf.data();
  std::size_t left = buf.size();
  while (left > 0) {
    ssize_t n = ::write(STDOUT_FILENO, p, left);
    if (n < 0) {
      if (errno == EINTR) continue;
      return;  // stdout gone: logging must never take the proxy down
    }
    p += n;
    left -= static_cast<std::size_t>(n);
  }
}

std::string format_event_prefix(std::string_view level, std::string_view event) {
  std::string out = "{\"time\":";
  append_time(out, std::chrono::system_clock::now());
  key(out, field::event);
  append_json_string(out, event);
  key(out, "level");
  append_json_string(out, level);
  return out;
}

void log_event(std::string_view level, std::string_view event, std::string_view message) {
  std::string out = format_event_prefix(level, event);
  key(out, "message");
  append_json_string(out, message, 4096);
  out += '}';
  write_line(out);
}

}  // namespace egress::proxy
