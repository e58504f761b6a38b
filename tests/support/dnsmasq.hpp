#pragma once
/// A private dnsmasq for tests: started on 127.0.0.1 with a free port and its own config,
/// query log and temp dir; killed by the destructor. Header-only, no test framework
/// dependency: failures throw std::runtime_error (Catch2 reports the message), so a
/// dnsmasq that cannot start or has died fails the test at once instead of timing out.
///
/// Usage:
///   egress::test::dnsmasq dns({"local=/test/", "host-record=a.test,127.0.0.1"});
///   opts.servers = {dns.server()};            // "127.0.0.1:<port>"
///   ... dns.count_queries("A", "a.test") ...
///
/// The config always has: port, listen-address=127.0.0.1, bind-interfaces, no-resolv
/// (no upstream: names outside `local=` domains and host records get REFUSED), no-hosts,
/// log-queries into `log_path()`. Answers from config carry TTL 0 unless `local-ttl=N`.
/// Not thread-safe; one instance per test.

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

extern char** environ;

namespace egress::test {

class dnsmasq {
public:
  /// One logged query: record type as dnsmasq prints it ("A", "AAAA") and the name.
  struct query {
    std::string type;
    std::string name;
  };

  /// Starts dnsmasq with `config_lines` (dnsmasq.conf syntax, i.e. long options without
  /// "--", e.g. "host-record=www.wikidata.org,127.0.0.1") and waits until it logs
  /// "started" (at most `ready_timeout`). Retries with another port if the chosen one was
  /// taken meanwhile. Throws std::runtime_error with dnsmasq's output if it exits early.
  explicit dnsmasq(std::vector<std::string> config_lines,
                   std::chrono::milliseconds ready_timeout = std::chrono::seconds(10),
                   std::string binary = "/usr/sbin/dnsmasq")
      : config_(std::move(config_lines)), binary_(std::move(binary)) {
    char tmpl[] = "/tmp/egress-dnsmasq-XXXXXX";
    if (::mkdtemp(tmpl) == nullptr) throw std::runtime_error("dnsmasq: mkdtemp: " + std::string(std::strerror(errno)));
    dir_ = tmpl;
    try {
      for (int attempt = 0;; ++attempt) {
        port_ = free_port();
        spawn();
        if (wait_ready(ready_timeout)) return;
        // Exited. Only a lost race for the port is worth another try.
        const std::string out = log() + read_file(dir_ / "stderr.log");
        if (attempt < 5 && out.find("in use") != std::string::npos) continue;
        throw std::runtime_error("dnsmasq exited during startup (" + describe_status(status_) + "):\n" + out);
      }
    } catch (...) {
      stop();
      std::error_code ec;
      std::filesystem::remove_all(dir_, ec);
      throw;
    }
  }

  ~dnsmasq() {
    stop();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  dnsmasq(const dnsmasq&) = delete;
  dnsmasq& operator=(const dnsmasq&) = delete;

  /// The UDP and TCP port dnsmasq listens on, on 127.0.0.1.
  std::uint16_t port() const noexcept { return port_; }

  /// "127.0.0.1:<port>", the form resolver_options::servers takes.
  std::string server() const { return "127.0.0.1:" + std::to_string(port_); }

  /// The query log (log-facility).
  std::filesystem::path log_path() const { return dir_ / "dnsmasq.log"; }

  /// The whole log so far.
  std::string log() const { return read_file(log_path()); }

  /// True while the process has not exited.
  bool running() {
    reap(false);
    return pid_ > 0;
  }

  /// Throws if dnsmasq has exited (crash or config error after startup).
  void require_running() {
    if (!running())
      throw std::runtime_error("dnsmasq is not running (" + describe_status(status_) + "):\n" + log());
  }

  /// SIGTERM, wait up to 5 s, then SIGKILL. Idempotent. Returns the wait status
  /// (`WIFEXITED(status) && WEXITSTATUS(status) == 0` after a clean TERM).
  int stop() {
    if (pid_ > 0) {
      ::kill(pid_, SIGTERM);
      const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(5);
      while (pid_ > 0 && std::chrono::steady_clock::now() < give_up) {
        reap(false);
        if (pid_ > 0) std::this_thread::sleep_for(std::chrono::milliseconds(5));
      }
      if (pid_ > 0) {
        ::kill(pid_, SIGKILL);
        reap(true);
      }
    }
    return status_;
  }

  /// Queries dnsmasq logged ("query[A] name from 127.0.0.1"), in order.
  std::vector<query> queries() const {
    std::vector<query> out;
    std::istringstream in(log());
    for (std::string line; std::getline(in, line);) {
      auto q = line.find("]: query[");
      if (q == std::string::npos) continue;
      auto type_begin = q + 9;
      auto type_end = line.find(']', type_begin);
      auto from = line.find(" from ", type_end);
      if (type_end == std::string::npos || from == std::string::npos) continue;
      out.push_back({line.substr(type_begin, type_end - type_begin), line.substr(type_end + 2, from - type_end - 2)});
    }
    return out;
  }

  /// How many times dnsmasq saw a query of `type` for exactly `name`.
  std::size_t count_queries(std::string_view type, std::string_view name) const {
    std::size_t n = 0;
    for (const auto& q : queries())
      if (q.type == type && q.name == name) ++n;
    return n;
  }

  /// The addresses dnsmasq logged as its answer to the LAST query of `type` for `name`
  /// ("config name is X" lines up to the next query), i.e. the answer order on the wire.
  std::vector<std::string> logged_answer(std::string_view type, std::string_view name) const {
    std::vector<std::string> out;
    std::istringstream in(log());
    const std::string start = "]: query[" + std::string(type) + "] " + std::string(name) + " from ";
    const std::string subject = " " + std::string(name) + " is ";
    bool inside = false;
    for (std::string line; std::getline(in, line);) {
      if (line.find(start) != std::string::npos) {
        inside = true;
        out.clear();
        continue;
      }
      if (line.find("]: query[") != std::string::npos) inside = false;
      auto is = line.find(subject);
      if (!inside || is == std::string::npos) continue;
      std::string value = line.substr(is + subject.size());
      if (value.empty() || value.front() == '<' || value.rfind("NXDOMAIN", 0) == 0 || value.rfind("NODATA", 0) == 0)
        continue;  // <CNAME>, NXDOMAIN, NODATA-IPv6: not addresses
      out.push_back(value);
    }
    return out;
  }

private:
  static std::string read_file(const std::filesystem::path& p) {
    std::ifstream in(p, std::ios::binary);
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
  }

  static std::string describe_status(int status) {
    if (WIFEXITED(status)) return "exit status " + std::to_string(WEXITSTATUS(status));
    if (WIFSIGNALED(status)) return "signal " + std::to_string(WTERMSIG(status));
    return "status " + std::to_string(status);
  }

  // A port free for both UDP and TCP on 127.0.0.1 right now (dnsmasq needs both).
  static std::uint16_t free_port() {
    for (int attempt = 0; attempt < 50; ++attempt) {
      int udp = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
      int tcp = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      sockaddr_in a{};
      a.sin_family = AF_INET;
      a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      socklen_t len = sizeof a;
      std::uint16_t port = 0;
      if (udp >= 0 && tcp >= 0 && ::bind(udp, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
          ::getsockname(udp, reinterpret_cast<sockaddr*>(&a), &len) == 0 &&
          ::bind(tcp, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0)
        port = ntohs(a.sin_port);
      if (udp >= 0) ::close(udp);
      if (tcp >= 0) ::close(tcp);
      if (port != 0) return port;
    }
    throw std::runtime_error("dnsmasq: no free loopback port");
  }

  void spawn() {
    {
      std::ofstream conf(dir_ / "dnsmasq.conf", std::ios::trunc);
      conf << "port=" << port_ << "\n"
           << "listen-address=127.0.0.1\n"
           << "bind-interfaces\n"
           << "no-resolv\n"
           << "no-hosts\n"
           << "no-poll\n"
           << "pid-file=" << (dir_ / "dnsmasq.pid").string() << "\n"
           << "log-facility=" << log_path().string() << "\n"
           << "log-queries\n";
      if (::geteuid() == 0) conf << "user=root\n";  // else it drops to "nobody" and loses the log
      for (const auto& line : config_) conf << line << "\n";
      if (!conf) throw std::runtime_error("dnsmasq: cannot write config in " + dir_.string());
    }
    std::filesystem::remove(log_path());
    const std::string out = (dir_ / "stderr.log").string();
    const std::string conf_arg = "--conf-file=" + (dir_ / "dnsmasq.conf").string();
    std::vector<std::string> args{binary_, "--keep-in-foreground", conf_arg};
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);

    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&actions, 1, out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_adddup2(&actions, 1, 2);
    posix_spawn_file_actions_addclosefrom_np(&actions, 3);  // no test sockets leak into it
    pid_t pid = 0;
    const int rc = ::posix_spawn(&pid, binary_.c_str(), &actions, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    if (rc != 0) throw std::runtime_error("dnsmasq: posix_spawn " + binary_ + ": " + std::strerror(rc));
    pid_ = pid;
    status_ = 0;
  }

  // True once "started" is logged; false if the process exited first.
  bool wait_ready(std::chrono::milliseconds timeout) {
    const auto give_up = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < give_up) {
      if (log().find("started, version") != std::string::npos) return true;
      reap(false);
      if (pid_ <= 0) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    stop();
    throw std::runtime_error("dnsmasq not ready after " + std::to_string(timeout.count()) + " ms:\n" + log());
  }

  void reap(bool block) {
    if (pid_ <= 0) return;
    int status = 0;
    pid_t r = ::waitpid(pid_, &status, block ? 0 : WNOHANG);
    if (r == pid_ || (r < 0 && errno == ECHILD)) {
      status_ = status;
      pid_ = -1;
    }
  }

  std::vector<std::string> config_;
  std::string binary_;
  std::filesystem::path dir_;
  std::uint16_t port_ = 0;
  pid_t pid_ = -1;
  int status_ = 0;
};

}  // namespace egress::test
