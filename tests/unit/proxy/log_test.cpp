// Unit tests for the log's way to stdout: a forked child logs into a real pipe on its fd 1
// that the parent stops reading, so the child's write_line must neither block nor cut a
// line; the parent then reads everything back and checks whole lines, the drop count and
// the log_dropped report. Touches only the child's fd 1 (the test process's own stdout,
// where Catch reports, is never redirected).

#include "egress/proxy/log.hpp"

#include <catch2/catch.hpp>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include <fcntl.h>
#include <poll.h>
#include <sys/wait.h>
#include <unistd.h>

namespace {

struct child_report {
  std::uint64_t written = 0;   // lines the child wrote
  std::uint64_t dropped = 0;   // log_lines_dropped() at the end
  int shared_flags = 0;        // F_GETFL of the description the child inherited
  double write_seconds = 0;    // how long writing took with nobody reading
  bool flushed = false;        // log_flush emptied the buffer once the parent read
};

// Reads from `fd` until EOF or `timeout_ms` of silence.
std::string read_all(int fd, int timeout_ms) {
  std::string out;
  char buf[65536];
  for (;;) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, timeout_ms) <= 0) break;
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n <= 0) break;
    out.append(buf, static_cast<std::size_t>(n));
  }
  return out;
}

// Forks a child whose fd 1 is a pipe with `pipe_bytes` of room; the child runs
// log_init(buffer), writes `batches` batches of `per_batch` lines (as the server does:
// one write_line per batch, lines joined by '\n'), tells the parent, then flushes and
// writes one "last" line. The parent reads nothing until the child says it is done.
std::pair<child_report, std::string> run_child(std::size_t buffer, int pipe_bytes, int batches, int per_batch) {
  int out[2], sync[2];
  REQUIRE(::pipe(out) == 0);
  REQUIRE(::pipe(sync) == 0);
  REQUIRE(::fcntl(out[1], F_SETPIPE_SZ, pipe_bytes) >= pipe_bytes);
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    ::close(out[0]);
    ::close(sync[0]);
    const int inherited = ::dup(out[1]);  // shares the description fd 1 starts with
    ::dup2(out[1], STDOUT_FILENO);
    ::close(out[1]);
    child_report r;
    egress::proxy::log_init(buffer);
    const auto t0 = std::chrono::steady_clock::now();
    for (int b = 0; b < batches; ++b) {
      std::string batch;
      for (int i = 0; i < per_batch; ++i) {
        if (!batch.empty()) batch += '\n';
        batch += "{\"event\":\"decision\",\"n\":" + std::to_string(b * per_batch + i) + ",\"pad\":\"" +
                 std::string(static_cast<std::size_t>(80 + (b * 7 + i) % 50), 'x') + "\"}";
      }
      egress::proxy::write_line(batch);
      r.written += static_cast<std::uint64_t>(per_batch);
    }
    r.write_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    r.shared_flags = ::fcntl(inherited, F_GETFL);
    (void)!::write(sync[1], "w", 1);  // done writing: the parent starts reading
    r.flushed = egress::proxy::log_flush(std::chrono::seconds(10));
    egress::proxy::write_line("{\"event\":\"last\"}");
    r.flushed = r.flushed && egress::proxy::log_flush(std::chrono::seconds(10));
    r.dropped = egress::proxy::log_lines_dropped();
    (void)!::write(sync[1], &r, sizeof r);
    ::_exit(0);
  }
  ::close(out[1]);
  ::close(sync[1]);
  char w = 0;
  pollfd p{sync[0], POLLIN, 0};
  const bool wrote = ::poll(&p, 1, 10000) == 1 && ::read(sync[0], &w, 1) == 1;
  std::string text;
  child_report r;
  if (wrote) {
    text = read_all(out[0], 10000);
    REQUIRE(::read(sync[0], &r, sizeof r) == static_cast<ssize_t>(sizeof r));
  }
  ::kill(pid, SIGKILL);  // when it blocked (the old write loop), it is still stuck
  int status = 0;
  ::waitpid(pid, &status, 0);
  ::close(out[0]);
  ::close(sync[0]);
  REQUIRE(wrote);  // the child finished writing while nobody read its stdout
  return {r, text};
}

struct parsed_log {
  std::vector<std::string> lines;
  std::uint64_t decisions = 0, reported = 0, reports = 0;
  bool last = false, bad = false;
};

parsed_log parse(const std::string& text) {
  parsed_log p;
  std::size_t from = 0;
  while (from < text.size()) {
    const std::size_t nl = text.find('\n', from);
    if (nl == std::string::npos) {
      p.bad = true;  // a cut line at the end
      break;
    }
    const std::string line = text.substr(from, nl - from);
    from = nl + 1;
    p.lines.push_back(line);
    if (line.starts_with("{\"event\":\"decision\",\"n\":") && line.ends_with("\"}")) {
      const std::size_t pad = line.find(",\"pad\":\"");
      const std::size_t xs = line.size() - 2 - (pad + 8);
      if (pad == std::string::npos || line.find_first_not_of('x', pad + 8) != line.size() - 2 || xs < 80 || xs >= 130)
        p.bad = true;
      ++p.decisions;
    } else if (line == "{\"event\":\"last\"}") {
      p.last = true;
    } else if (line.find("\"event\":\"log_dropped\"") != std::string::npos && line.ends_with("}")) {
      const std::size_t at = line.find("\"lines\":");
      if (at == std::string::npos) p.bad = true;
      else p.reported += std::stoull(line.substr(at + 8));
      ++p.reports;
    } else {
      p.bad = true;
    }
  }
  return p;
}

}  // namespace

TEST_CASE("a stalled stdout pipe costs whole lines, counted and reported, never a blocked write or a cut line",
          "[unit][proxy][log]") {
  // 4 KiB pipe, 8 KiB buffer, 100 batches of 40 lines of ~110-160 bytes (~540 KiB): far
  // more than fits; batches larger than PIPE_BUF make the kernel take part of a batch.
  const auto [r, text] = run_child(8192, 4096, 100, 40);
  const auto p = parse(text);
  INFO("written " << r.written << ", dropped " << r.dropped << ", received " << p.decisions << " decision lines, "
                  << p.reports << " reports");
  CHECK_FALSE(p.bad);
  CHECK(r.write_seconds < 2.0);
  CHECK(r.flushed);
  CHECK(p.last);
  CHECK(r.dropped > 0);
  CHECK(p.reports >= 1);
  CHECK(p.reported == r.dropped);
  CHECK(p.decisions + r.dropped == r.written);
  // The child's O_NONBLOCK is on a description of its own: the one it inherited (shared
  // with whoever else holds the pipe) is still blocking.
  CHECK((r.shared_flags & O_NONBLOCK) == 0);
}

TEST_CASE("a reader that keeps up loses nothing and sees no report", "[unit][proxy][log]") {
  // 1 MiB of pipe takes all 60 KiB at once.
  const auto [r, text] = run_child(8192, 1 << 20, 40, 10);
  const auto p = parse(text);
  CHECK_FALSE(p.bad);
  CHECK(r.dropped == 0);
  CHECK(p.reports == 0);
  CHECK(p.decisions == r.written);
  CHECK(p.last);
}
