// JSON-lines log: formatting of decision and event lines, and their way to stdout that
// never blocks the event loop (bounded buffer, whole lines dropped and reported). Touches
// fd 1 only; knows nothing of the server.

#include "egress/proxy/log.hpp"

#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <memory>
#include <optional>

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
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

namespace {

// Where log lines go once log_init ran, and what waits for stdout.
struct log_sink {
  bool initialised = false;
  bool is_socket = false;
  std::size_t capacity = 0;
  std::string pending;   // whole lines; its first `sent` bytes are already written
  std::size_t sent = 0;
  std::uint64_t dropped_total = 0;
  std::uint64_t unreported = 0;  // dropped since the last log_dropped line
  int restore_flags = -1;        // fcntl flags to put back at exit (shared description)

  boost::asio::io_context* io = nullptr;
  std::optional<boost::asio::posix::stream_descriptor> watch;  // a dup of fd 1
  std::optional<boost::asio::steady_timer> timer;
  bool watching = false, timing = false;
  std::uint64_t generation = 0;  // bumped on detach: stale completions do nothing

  std::size_t size() const noexcept { return pending.size() - sent; }

  ssize_t raw_write(const char* p, std::size_t n) const noexcept {
    for (;;) {
      const ssize_t w = is_socket ? ::send(STDOUT_FILENO, p, n, MSG_DONTWAIT | MSG_NOSIGNAL) : ::write(STDOUT_FILENO, p, n);
      if (w < 0 && errno == EINTR) continue;
      return w;
    }
  }

  static bool would_block() noexcept { return errno == EAGAIN || errno == EWOULDBLOCK; }

  void count_dropped(std::uint64_t lines) noexcept {
    dropped_total += lines;
    unreported += lines;
  }

  std::string report() const {
    std::string out = format_event_prefix("warning", "log_dropped");
    out += ",\"lines\":" + std::to_string(unreported);
    out += ",\"message\":\"stdout did not take these lines in time; they are lost\"}\n";
    return out;
  }

  // Appends one line (with its '\n') if the buffer has room for it and for the report of
  // earlier drops, which goes first; drops it otherwise.
  void enqueue(std::string_view line) {
    if (unreported > 0) {
      const std::string r = report();
      if (size() + r.size() + line.size() > capacity) return count_dropped(1);
      pending += r;
      unreported = 0;
    } else if (size() + line.size() > capacity) {
      return count_dropped(1);
    }
    pending.append(line);
  }

  // Lines (each with its '\n') of `text` from `from` on, each kept or dropped whole.
  void enqueue_lines(std::string_view text, std::size_t from) {
    while (from < text.size()) {
      const std::size_t nl = text.find('\n', from);
      enqueue(text.substr(from, nl + 1 - from));
      from = nl + 1;
    }
  }

  // Writes what it can; returns when stdout would block, on an error, or when empty.
  void flush_some() {
    while (true) {
      while (sent < pending.size()) {
        const ssize_t w = raw_write(pending.data() + sent, pending.size() - sent);
        if (w > 0) {
          sent += static_cast<std::size_t>(w);
          continue;
        }
        if (w < 0 && would_block()) break;
        // stdout failed: what waits is lost, the line half written included.
        count_dropped(static_cast<std::uint64_t>(std::count(pending.begin() + static_cast<std::ptrdiff_t>(sent), pending.end(), '\n')));
        pending.clear();
        sent = 0;
        return;
      }
      if (sent < pending.size()) {
        if (sent > (64u << 10) && sent * 2 > pending.size()) {
          pending.erase(0, sent);
          sent = 0;
        }
        return;
      }
      pending.clear();
      sent = 0;
      if (unreported == 0) return;
      pending = report();  // the drops are reported even when no other line follows
      unreported = 0;
    }
  }

  void arm() {
    if (!io || size() == 0) return;
    const std::uint64_t gen = generation;
    if (watch && !watching) {
      watching = true;
      watch->async_wait(boost::asio::posix::stream_descriptor::wait_write, [this, gen](const boost::system::error_code& ec) {
        if (gen != generation) return;
        watching = false;
        if (ec) {  // epoll cannot watch fd 1 after all: the timer alone
          watch.reset();
          return arm();
        }
        flush_some();
        arm();
      });
    }
    // A timer as well: the only wake-up where fd 1 cannot be watched, and a safety net
    // where it can.
    if (!timing) {
      timing = true;
      timer->expires_after(watch ? std::chrono::seconds(1) : std::chrono::milliseconds(50));
      timer->async_wait([this, gen](const boost::system::error_code& ec) {
        if (gen != generation) return;
        timing = false;
        if (ec) return;
        flush_some();
        arm();
      });
    }
  }

  void write(std::string_view line) {
    std::string text;
    text.reserve(line.size() + 1);
    text.append(line).push_back('\n');
    if (size() > 0) flush_some();  // the reader may be back
    if (size() > 0 || unreported > 0) {
      enqueue_lines(text, 0);
      flush_some();
    } else {
      ssize_t w = raw_write(text.data(), text.size());
      if (w == static_cast<ssize_t>(text.size())) return;
      if (w < 0) {
        if (!would_block()) return count_dropped(static_cast<std::uint64_t>(std::count(text.begin(), text.end(), '\n')));
        w = 0;
      }
      auto from = static_cast<std::size_t>(w);
      if (from > 0 && text[from - 1] != '\n') {
        // A short write stopped inside a line: the rest of it is always kept, so the
        // line is never cut (it may exceed the bound by this one line).
        const std::size_t nl = text.find('\n', from);
        pending.append(text, from, nl + 1 - from);
        from = nl + 1;
      }
      enqueue_lines(text, from);
    }
    arm();
  }

  void detach() {
    ++generation;
    watching = timing = false;
    watch.reset();
    timer.reset();
    io = nullptr;
  }
};

log_sink& sink() {
  static log_sink s;
  return s;
}

void restore_stdout_flags() {
  if (sink().restore_flags >= 0) ::fcntl(STDOUT_FILENO, F_SETFL, sink().restore_flags);
}

}  // namespace

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
  if (sink().initialised) return sink().write(line);
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

void log_init(std::size_t buffer_bytes) {
  log_sink& s = sink();
  s.capacity = buffer_bytes;
  if (s.initialised) return;
  s.initialised = true;
  struct stat st {};
  if (::fstat(STDOUT_FILENO, &st) != 0) return;  // no stdout: every write fails and is counted
  if (S_ISSOCK(st.st_mode)) {
    s.is_socket = true;
    return;
  }
  const bool may_block = S_ISFIFO(st.st_mode) || (S_ISCHR(st.st_mode) && ::isatty(STDOUT_FILENO));
  if (!may_block) return;  // a regular file or /dev/null: writes never wait for a reader
  const int own = ::open("/proc/self/fd/1", O_WRONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
  if (own >= 0) {
    struct stat again {};
    // Only if it is the same pipe or terminal (dup2 clears O_CLOEXEC on fd 1).
    if (::fstat(own, &again) == 0 && again.st_dev == st.st_dev && again.st_ino == st.st_ino &&
        ::dup2(own, STDOUT_FILENO) == STDOUT_FILENO) {
      ::close(own);
      return;
    }
    ::close(own);
  }
  const int flags = ::fcntl(STDOUT_FILENO, F_GETFL);
  if (flags < 0 || (flags & O_NONBLOCK)) return;
  if (::fcntl(STDOUT_FILENO, F_SETFL, flags | O_NONBLOCK) == 0) {
    s.restore_flags = flags;
    std::atexit(restore_stdout_flags);
  }
}

log_attachment::log_attachment(boost::asio::io_context& io) {
  log_sink& s = sink();
  s.detach();
  s.io = &io;
  s.timer.emplace(io);
  // Asio makes a watched descriptor non-blocking (FIONBIO): harmless on the pipe or
  // terminal log_init reopened (our own file description), not on a socket another
  // process shares; a socket gets the timer alone.
  if (s.initialised && !s.is_socket) {
    const int fd = ::fcntl(STDOUT_FILENO, F_DUPFD_CLOEXEC, 3);
    if (fd >= 0) {
      boost::system::error_code ec;
      s.watch.emplace(io);
      s.watch->assign(fd, ec);
      if (ec) {
        ::close(fd);
        s.watch.reset();
      }
    }
  }
  s.arm();
}

log_attachment::~log_attachment() {
  log_flush(std::chrono::seconds(1));
  sink().detach();
}

bool log_flush(std::chrono::milliseconds timeout) {
  log_sink& s = sink();
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    s.flush_some();
    if (s.size() == 0) return true;
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return false;
    pollfd p{STDOUT_FILENO, POLLOUT, 0};
    if (::poll(&p, 1, static_cast<int>(left.count())) < 0 && errno != EINTR) return false;
  }
}

std::uint64_t log_lines_dropped() noexcept { return sink().dropped_total; }

std::size_t log_buffered_bytes() noexcept { return sink().size(); }

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
