// bench-loadgen: the load generator and the upstream of bench/compare (issue 5).
//
// Every client connection runs in "SNI mode": CONNECT NAME:PORT through the proxy (or a
// plain dial with --direct), wait for the 200, then send a real TLS ClientHello that
// OpenSSL made over memory BIOs with SNI = NAME. The upstream does not speak TLS: it skips
// the ClientHello record(s) by their headers, answers with one ServerHello record (so a
// proxy that watches the handshake sees it end, as with a real server; the client waits for
// it), then serves test commands.
//
// Shape of a command (client -> upstream, after the ClientHello), 9 bytes:
//   op:1 | a:4 (big-endian) | b:4 (big-endian)
//   'E' exchange: the client sends `a` more bytes, the upstream answers `b` bytes, then waits
//       for the next command (rate transactions, idle pings).
//   'D' down: the upstream writes until the client goes away.
//   'U' up: the upstream discards what it reads and, every MiB, answers its running count
//       as 8 bytes (big-endian), until the client goes away.
//   'X' echo: the upstream writes back what it reads until the client goes away.
//
// Usage:
//   bench-loadgen upstream [--listen ADDR:PORT] [--seconds LIFETIME]
//   bench-loadgen bulk --tunnels N --seconds S [--direction down|up|both] TARGET
//   bench-loadgen rate --concurrency C --seconds S [--request BYTES] [--response BYTES] TARGET
//   bench-loadgen idle --tunnels K [--hold S] TARGET
//   TARGET = --target NAME:PORT (--proxy ADDR:PORT | --direct [--direct-address ADDR])
//            [--sni NAME] (default NAME of --target; another name checks the proxy refuses)
//   common: [--timeout-ms MS] [--max-transactions N] [--max-errors N] [--open-parallel P]
//
// Output: one JSON line with the result on stdout; idle first prints an "open" line once
// every tunnel is up, then holds them for --hold seconds (the caller samples the proxy's
// memory then), pings every one and reports how many answered. The upstream prints a
// "listening" line, a "stats" line on SIGUSR1 and a "stopped" line with the same counters
// when SIGTERM/SIGINT or its --seconds lifetime ends it.
// Units: bytes, MB = 10^6 bytes, latency in microseconds.
// Every run is bounded: by --seconds, --max-transactions, per-phase --timeout-ms and a hard
// cap of seconds + hold + 30 s after which it reports "hard_timeout". Errors are counted by
// phase and reason and reported, never dropped. Exit 0 without errors, 1 with, 2 on usage.

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <deque>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using asio::awaitable;
using namespace asio::experimental::awaitable_operators;
using steady = std::chrono::steady_clock;
using boost::system::error_code;

constexpr auto nothrow = asio::as_tuple(asio::use_awaitable);
constexpr std::size_t io_chunk = 256 * 1024;  ///< bulk read/write size, bytes
constexpr std::size_t command_bytes = 9;
constexpr std::uint32_t ping_bytes = 8;
constexpr std::uint32_t max_message_bytes = 16 * 1024 * 1024;
constexpr std::uint64_t report_bytes = 1024 * 1024;  ///< 'U': the upstream reports its count this often

/// Bulk payload and discard space shared by every connection of the process: the data is
/// never inspected, so concurrent reads into one buffer are harmless (one thread).
std::vector<char>& shared_buffer() {
  static std::vector<char> b(io_chunk, 'x');
  return b;
}

// ---------------------------------------------------------------- options and output

struct options {
  std::string mode;
  std::string target_host;
  std::uint16_t target_port = 0;
  std::string sni;  ///< the ClientHello's server name; the target host unless --sni
  std::optional<tcp::endpoint> proxy;
  bool direct = false;
  std::string direct_address = "127.0.0.1";
  std::string listen = "127.0.0.1:0";
  int tunnels = 1;
  int concurrency = 1;
  double seconds = 3;
  double hold = 1;
  std::string direction = "down";
  std::uint32_t request_bytes = 100;
  std::uint32_t response_bytes = 100;
  std::chrono::milliseconds timeout{5000};
  std::uint64_t max_transactions = 10'000'000;
  std::uint64_t max_errors = 10'000;
  int open_parallel = 64;
};

std::optional<tcp::endpoint> parse_endpoint(std::string_view text) {
  auto colon = text.rfind(':');
  if (colon == std::string_view::npos) return std::nullopt;
  std::string addr(text.substr(0, colon));
  if (addr.size() > 2 && addr.front() == '[' && addr.back() == ']') addr = addr.substr(1, addr.size() - 2);
  auto port = std::strtoul(std::string(text.substr(colon + 1)).c_str(), nullptr, 10);
  error_code ec;
  auto a = asio::ip::make_address(addr, ec);
  if (ec || port > 65535) return std::nullopt;
  return tcp::endpoint(a, static_cast<std::uint16_t>(port));
}

void append_json_string(std::string& out, std::string_view s) {
  out += '"';
  for (char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      char esc[8];
      std::snprintf(esc, sizeof esc, "\\u%04x", static_cast<unsigned>(static_cast<unsigned char>(c)));
      out += esc;
    } else {
      out += c;
    }
  }
  out += '"';
}

/// Builds one JSON object line field by field.
class json_line {
public:
  json_line& str(std::string_view key, std::string_view v) {
    sep(key);
    append_json_string(out_, v);
    return *this;
  }
  json_line& num(std::string_view key, double v) {
    sep(key);
    char b[64];
    std::snprintf(b, sizeof b, "%.6g", v);
    out_ += b;
    return *this;
  }
  json_line& integer(std::string_view key, std::uint64_t v) {
    sep(key);
    out_ += std::to_string(v);
    return *this;
  }
  json_line& raw(std::string_view key, std::string_view v) {
    sep(key);
    out_ += v;
    return *this;
  }
  /// Writes the line to stdout with a newline and flushes (the caller reads it live).
  void print() {
    out_ += "}\n";
    std::fwrite(out_.data(), 1, out_.size(), stdout);
    std::fflush(stdout);
  }

private:
  void sep(std::string_view key) {
    out_ += out_.size() == 1 ? "" : ",";
    append_json_string(out_, key);
    out_ += ':';
  }
  std::string out_ = "{";
};

/// Errors by "phase: reason", all of them counted.
class error_log {
public:
  void add(std::string kind) {
    ++total_;
    ++kinds_[std::move(kind)];
  }
  std::uint64_t total() const { return total_; }
  std::string json() const {
    std::string out = "{";
    for (const auto& [k, n] : kinds_) {
      if (out.size() > 1) out += ',';
      append_json_string(out, k);
      out += ':' + std::to_string(n);
    }
    return out + "}";
  }

private:
  std::uint64_t total_ = 0;
  std::map<std::string, std::uint64_t> kinds_;
};

std::uint32_t get_u32(const char* p) {
  auto b = [p](int i) { return static_cast<std::uint32_t>(static_cast<unsigned char>(p[i])); };
  return b(0) << 24 | b(1) << 16 | b(2) << 8 | b(3);
}

void put_u32(char* p, std::uint32_t v) {
  for (int i = 3; i >= 0; --i, v >>= 8) p[i] = static_cast<char>(v & 0xff);
}

std::string command(char op, std::uint32_t a, std::uint32_t b) {
  std::string c(command_bytes, '\0');
  c[0] = op;
  put_u32(c.data() + 1, a);
  put_u32(c.data() + 5, b);
  return c;
}

/// A real TLS ClientHello with SNI `host`, made by an OpenSSL client over memory BIOs.
/// Errors: empty result when OpenSSL fails (reported by the caller).
std::string make_client_hello(const std::string& host) {
  std::string out;
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  if (!ctx) return out;
  SSL* ssl = SSL_new(ctx);
  if (ssl) {
    BIO* rbio = BIO_new(BIO_s_mem());
    BIO* wbio = BIO_new(BIO_s_mem());
    SSL_set_bio(ssl, rbio, wbio);  // ssl owns both
    SSL_set_connect_state(ssl);
    // SSL_set_tlsext_host_name is a macro with a C cast; this is what it expands to.
    if (SSL_ctrl(ssl, SSL_CTRL_SET_TLSEXT_HOSTNAME, TLSEXT_NAMETYPE_host_name, const_cast<char*>(host.c_str())) == 1) {
      (void)SSL_do_handshake(ssl);  // wants to read the ServerHello: the ClientHello is in wbio
      char* data = nullptr;
      long n = BIO_get_mem_data(wbio, &data);
      if (n > 0) out.assign(data, static_cast<std::size_t>(n));
    }
    SSL_free(ssl);
  }
  SSL_CTX_free(ctx);
  return out;
}

std::uint32_t micros(steady::duration d) {
  return static_cast<std::uint32_t>(std::min<std::int64_t>(
      std::chrono::duration_cast<std::chrono::microseconds>(d).count(), INT32_MAX));
}

double seconds_of(steady::duration d) { return std::chrono::duration<double>(d).count(); }

std::uint32_t percentile(std::vector<std::uint32_t>& v, double p) {
  if (v.empty()) return 0;
  auto k = static_cast<std::size_t>(p * static_cast<double>(v.size() - 1) + 0.5);
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(k), v.end());
  return v[k];
}

// ---------------------------------------------------------------- upstream

struct upstream_stats {
  std::uint64_t accepted = 0;
  std::uint64_t active = 0;
  std::uint64_t hellos = 0;
  std::uint64_t closed_before_hello = 0;  ///< e.g. a proxy that refused the SNI: not an error
  std::uint64_t exchanges = 0;
  error_log errors;  ///< protocol errors only; a client leaving mid-stream is normal
};

/// Buffered reads from one upstream socket: `need` makes bytes available, `skip` drops
/// them (streaming, so a 16 KiB ClientHello record needs no 16 KiB buffer).
class reader {
public:
  explicit reader(tcp::socket& s) : s_(s) {}

  std::size_t available() const { return hi_ - lo_; }
  const char* data() const { return buf_.data() + lo_; }
  void consume(std::size_t n) { lo_ += n; }

  awaitable<error_code> need(std::size_t n) {
    if (available() >= n) co_return error_code{};
    std::memmove(buf_.data(), buf_.data() + lo_, available());
    hi_ -= lo_;
    lo_ = 0;
    while (hi_ < n) {
      auto [ec, k] = co_await s_.async_read_some(asio::buffer(buf_.data() + hi_, buf_.size() - hi_), nothrow);
      if (ec) co_return ec;
      hi_ += k;
    }
    co_return error_code{};
  }

  awaitable<error_code> skip(std::uint64_t n) {
    for (;;) {
      auto take = static_cast<std::size_t>(std::min<std::uint64_t>(n, available()));
      lo_ += take;
      n -= take;
      if (n == 0) co_return error_code{};
      lo_ = hi_ = 0;
      auto [ec, k] = co_await s_.async_read_some(asio::buffer(buf_), nothrow);
      if (ec) co_return ec;
      hi_ = k;
    }
  }

private:
  tcp::socket& s_;
  std::array<char, 4096> buf_{};
  std::size_t lo_ = 0, hi_ = 0;
};

/// Skips one ClientHello: TLS records (type 22) until the handshake message whose 4-byte
/// header opens the first record is complete. Shape: record = type:1 version:2 length:2;
/// handshake = type:1 (1 = client_hello) length:3 (RFC 8446 §5.1, §4).
awaitable<std::string_view> skip_client_hello(reader& in) {
  std::uint64_t hs_left = 0;
  bool first = true;
  for (;;) {
    if (co_await in.need(5)) co_return first && in.available() == 0 ? "closed_before_hello" : "eof_in_client_hello";
    const char* h = in.data();
    if (h[0] != 22) co_return "not_a_tls_handshake_record";
    std::size_t record = static_cast<std::size_t>(static_cast<unsigned char>(h[3])) << 8 |
                         static_cast<unsigned char>(h[4]);
    in.consume(5);
    if (first) {
      if (record < 4) co_return "short_first_record";
      if (co_await in.need(4)) co_return "eof_in_client_hello";
      if (in.data()[0] != 1) co_return "not_a_client_hello";
      hs_left = 4 + (get_u32(in.data()) & 0xffffff);
      first = false;
    }
    auto take = std::min<std::uint64_t>(hs_left, record);
    if (take < record) co_return "record_longer_than_client_hello";
    if (co_await in.skip(take)) co_return "eof_in_client_hello";
    hs_left -= take;
    if (hs_left == 0) co_return std::string_view{};
  }
}

/// The upstream's answer to a ClientHello: one TLS record holding a minimal ServerHello
/// (legacy_version 0x0303, a random that is not the HelloRetryRequest value, empty session
/// id, TLS_AES_128_GCM_SHA256, no compression, no extensions; RFC 8446 §4.1.3). It is not a
/// handshake anyone could finish; it is what a proxy that watches the handshake (every
/// ClientHello is checked until the server's real ServerHello, issue #10) needs to see
/// before the client's next bytes are passed on, and the client waits for it as a TLS
/// client waits for the server's first flight: the round trip a real handshake costs.
constexpr std::array<unsigned char, 49> server_hello_record = [] {
  std::array<unsigned char, 49> r{};
  const unsigned char head[] = {22, 3, 3, 0, 44, 2, 0, 0, 40, 3, 3};
  for (std::size_t i = 0; i < sizeof head; ++i) r[i] = head[i];
  for (std::size_t i = 0; i < 32; ++i) r[11 + i] = static_cast<unsigned char>(0x5a ^ i);  // the random
  // [43] session id length 0, [44..45] cipher suite, [46] compression 0, [47..48] no extensions
  r[44] = 0x13;
  r[45] = 0x01;
  return r;
}();

awaitable<void> upstream_session(tcp::socket s, upstream_stats& st) {
  ++st.accepted;
  ++st.active;
  error_code ec;
  s.set_option(tcp::no_delay(true), ec);
  reader in(s);
  if (auto bad = co_await skip_client_hello(in); !bad.empty()) {
    if (bad == "closed_before_hello") ++st.closed_before_hello;
    else st.errors.add(std::string("client_hello: ") + std::string(bad));
    --st.active;
    co_return;
  }
  ++st.hellos;
  if (auto [wec, wn] = co_await asio::async_write(s, asio::buffer(server_hello_record), nothrow); wec) {
    --st.active;
    co_return;
  }
  for (;;) {
    if (co_await in.need(command_bytes)) break;  // the client closed between commands
    char op = in.data()[0];
    std::uint32_t a = get_u32(in.data() + 1), b = get_u32(in.data() + 5);
    in.consume(command_bytes);
    if (op == 'E') {
      if (a > max_message_bytes || b > max_message_bytes) {
        st.errors.add("command: message too large");
        break;
      }
      if (co_await in.skip(a)) {
        st.errors.add("exchange: eof in request");
        break;
      }
      std::uint32_t left = b;
      bool ok = true;
      while (left > 0 && ok) {
        auto n = std::min<std::size_t>(left, io_chunk);
        auto [wec, w] = co_await asio::async_write(s, asio::buffer(shared_buffer().data(), n), nothrow);
        ok = !wec;
        left -= static_cast<std::uint32_t>(n);
      }
      if (!ok) {
        st.errors.add("exchange: response write failed");
        break;
      }
      ++st.exchanges;
    } else if (op == 'D') {
      for (;;) {
        auto [wec, w] = co_await asio::async_write(s, asio::buffer(shared_buffer()), nothrow);
        if (wec) break;  // the client went away: the normal end of a down run
      }
      break;
    } else if (op == 'U') {
      // Reports the running count (8 bytes, big-endian) every report_bytes received; a
      // client leaving is the normal end.
      std::uint64_t count = in.available(), reported = 0;
      in.consume(in.available());
      for (;;) {
        auto [rec, n] = co_await s.async_read_some(asio::buffer(shared_buffer()), nothrow);
        if (rec) break;
        count += n;
        if (count - reported >= report_bytes) {
          std::array<char, 8> c{};
          put_u32(c.data(), static_cast<std::uint32_t>(count >> 32));
          put_u32(c.data() + 4, static_cast<std::uint32_t>(count));
          auto [wec, w] = co_await asio::async_write(s, asio::buffer(c), nothrow);
          if (wec) break;
          reported = count;
        }
      }
      break;
    } else if (op == 'X') {
      std::vector<char> buf(64 * 1024);
      std::size_t n = in.available();
      std::memcpy(buf.data(), in.data(), n);
      in.consume(n);
      for (;;) {
        if (n > 0) {
          auto [wec, w] = co_await asio::async_write(s, asio::buffer(buf.data(), n), nothrow);
          if (wec) break;
        }
        auto [rec, k] = co_await s.async_read_some(asio::buffer(buf), nothrow);
        if (rec) {
          if (rec == asio::error::eof) s.shutdown(tcp::socket::shutdown_send, ec);
          break;
        }
        n = k;
      }
      break;
    } else {
      st.errors.add("command: unknown op");
      break;
    }
  }
  --st.active;
}

awaitable<void> upstream_accept(tcp::acceptor& acceptor, upstream_stats& st) {
  asio::steady_timer backoff(acceptor.get_executor());
  for (;;) {
    auto [ec, s] = co_await acceptor.async_accept(nothrow);
    if (!acceptor.is_open()) co_return;
    if (ec) {
      st.errors.add("accept: " + ec.message());
      backoff.expires_after(std::chrono::milliseconds(50));
      co_await backoff.async_wait(nothrow);
      continue;
    }
    asio::co_spawn(acceptor.get_executor(), upstream_session(std::move(s), st), [&st](std::exception_ptr e) {
      if (e) st.errors.add("exception in session");
    });
  }
}

int run_upstream(const options& opt) {
  auto ep = parse_endpoint(opt.listen);
  if (!ep) {
    std::fprintf(stderr, "bench-loadgen: --listen wants ADDR:PORT\n");
    return 2;
  }
  asio::io_context io(1);
  tcp::acceptor acceptor(io);
  acceptor.open(ep->protocol());
  acceptor.set_option(tcp::acceptor::reuse_address(true));
  acceptor.bind(*ep);
  acceptor.listen(asio::socket_base::max_listen_connections);
  upstream_stats st;
  auto print_stats = [&st](std::string_view event) {
    json_line()
        .str("event", event)
        .integer("accepted", st.accepted)
        .integer("active", st.active)
        .integer("client_hellos", st.hellos)
        .integer("closed_before_hello", st.closed_before_hello)
        .integer("exchanges", st.exchanges)
        .integer("errors", st.errors.total())
        .raw("error_kinds", st.errors.json())
        .print();
  };
  // SIGUSR1 prints the counters and goes on; SIGTERM/SIGINT print them and stop.
  asio::signal_set signals(io, SIGINT, SIGTERM, SIGUSR1);
  std::function<void(const error_code&, int)> on_signal = [&](const error_code& ec, int sig) {
    if (ec) return;
    if (sig != SIGUSR1) return io.stop();
    print_stats("stats");
    signals.async_wait(on_signal);
  };
  signals.async_wait(on_signal);
  asio::steady_timer lifetime(io, std::chrono::duration_cast<steady::duration>(std::chrono::duration<double>(opt.seconds)));
  lifetime.async_wait([&](const error_code& ec) {
    if (!ec) io.stop();
  });
  asio::co_spawn(io, upstream_accept(acceptor, st), [&st](std::exception_ptr e) {
    if (e) st.errors.add("exception in accept loop");
  });
  auto local = acceptor.local_endpoint();
  json_line()
      .str("event", "listening")
      .str("upstream", local.address().to_string() + ":" + std::to_string(local.port()))
      .print();
  io.run();
  print_stats("stopped");
  return st.errors.total() ? 1 : 0;
}

// ---------------------------------------------------------------- client side

/// One client connection and its deadline; the sweeper cancels I/O past `due`.
struct slot {
  explicit slot(asio::any_io_executor ex) : sock(std::move(ex)) {}
  tcp::socket sock;
  steady::time_point due = steady::time_point::max();
  bool timed_out = false;

  void arm(std::chrono::milliseconds d) { arm_at(steady::now() + d); }
  void arm_at(steady::time_point t) {
    due = t;
    timed_out = false;
  }
  void close() {
    error_code ec;
    sock.close(ec);
    due = steady::time_point::max();
  }
};

/// Counts down to zero, then wakes every waiter (Asio 1.26 has no parallel_group we want).
class latch {
public:
  latch(asio::any_io_executor ex, std::size_t n) : timer_(std::move(ex)), left_(n) {
    timer_.expires_at(steady::time_point::max());
  }
  void count_down() {
    if (left_ > 0 && --left_ == 0) timer_.cancel();
  }
  awaitable<void> wait() {
    while (left_ > 0) co_await timer_.async_wait(nothrow);
  }

private:
  asio::steady_timer timer_;
  std::size_t left_;
};

struct client_run {
  client_run(asio::io_context& i, const options& o) : io(i), opt(o) {}
  asio::io_context& io;
  const options& opt;
  std::string hello;
  tcp::endpoint dial;
  std::string connect_request;
  std::deque<slot> slots;
  error_log errors;
  bool stopping = false;  ///< too many errors: workers stop starting new work
  bool finished = false;  ///< the mode's main coroutine printed its result

  slot& new_slot() { return slots.emplace_back(io.get_executor()); }

  void fail(slot& s, std::string_view phase, const error_code& ec) {
    std::string kind(phase);
    kind += s.timed_out ? ": timeout" : ": " + ec.message();
    fail(s, std::move(kind));
  }
  void fail(slot& s, std::string kind) {
    errors.add(std::move(kind));
    s.close();
    if (errors.total() >= opt.max_errors) stopping = true;
  }
};

/// Cancels the I/O of every slot whose deadline passed; polls every 50 ms until `done`.
awaitable<void> sweeper(client_run& r, const bool& done) {
  asio::steady_timer t(r.io);
  while (!done) {
    t.expires_after(std::chrono::milliseconds(50));
    co_await t.async_wait(nothrow);
    auto now = steady::now();
    for (auto& s : r.slots) {
      if (s.due < now) {
        s.timed_out = true;
        s.due = steady::time_point::max();
        error_code ec;
        s.sock.cancel(ec);
      }
    }
  }
}

/// Connect, CONNECT + 200 (unless direct), ClientHello. False on error (counted, closed).
awaitable<bool> open_tunnel(client_run& r, slot& s) {
  s.close();
  s.arm(r.opt.timeout);
  auto [cec] = co_await s.sock.async_connect(r.dial, nothrow);
  if (cec) {
    r.fail(s, "connect", cec);
    co_return false;
  }
  error_code ec;
  s.sock.set_option(tcp::no_delay(true), ec);
  if (!r.opt.direct) {
    auto [wec, wn] = co_await asio::async_write(s.sock, asio::buffer(r.connect_request), nothrow);
    if (wec) {
      r.fail(s, "connect_request", wec);
      co_return false;
    }
    std::array<char, 1024> head;
    std::size_t have = 0;
    for (;;) {
      auto [rec, n] = co_await s.sock.async_read_some(asio::buffer(head.data() + have, head.size() - have), nothrow);
      if (rec) {
        r.fail(s, "proxy_response", rec);
        co_return false;
      }
      have += n;
      std::string_view v(head.data(), have);
      auto end = v.find("\r\n\r\n");
      if (end == std::string_view::npos) {
        if (have == head.size()) {
          r.fail(s, "proxy_response: head over 1024 bytes");
          co_return false;
        }
        continue;
      }
      if (v.size() < 12 || !v.starts_with("HTTP/1.") || v.substr(8, 4) != " 200") {
        r.fail(s, "proxy_status: " + std::string(v.substr(0, std::min<std::size_t>(v.find("\r\n"), 40))));
        co_return false;
      }
      if (end + 4 != have) {
        r.fail(s, "proxy_response: bytes after the 200 head");
        co_return false;
      }
      break;
    }
  }
  auto [hec, hn] = co_await asio::async_write(s.sock, asio::buffer(r.hello), nothrow);
  if (hec) {
    r.fail(s, "client_hello", hec);
    co_return false;
  }
  // The upstream's ServerHello record comes before any command goes out.
  std::array<unsigned char, server_hello_record.size()> answer;
  auto [sec, sn] = co_await asio::async_read(s.sock, asio::buffer(answer), nothrow);
  if (sec) {
    r.fail(s, "server_hello", sec);
    co_return false;
  }
  if (answer != server_hello_record) {
    r.fail(s, "server_hello: not the upstream's record");
    co_return false;
  }
  co_return true;
}

/// Error-handling completion for spawned client coroutines.
struct record_exception {
  client_run* r;
  void operator()(std::exception_ptr e) const {
    if (!e) return;
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& ex) {
      r->errors.add(std::string("exception: ") + ex.what());
    }
  }
};

// ------------------------------------------------ bulk

struct bulk_state {
  bulk_state(asio::any_io_executor ex, std::size_t n) : opened_gate(ex, n), done(ex, n) {}
  latch opened_gate;  ///< every tunnel opened (or failed): the window starts
  latch done;
  std::size_t opened = 0;
  steady::time_point start, end;
  std::uint64_t bytes = 0;        ///< bytes the receiving side counted
  double rate_sum = 0;            ///< up: sum over tunnels of bytes/s up to the last report
};

awaitable<void> bulk_down(client_run& r, bulk_state& st, slot& s) {
  auto cmd = command('D', 0, 0);
  auto [wec, wn] = co_await asio::async_write(s.sock, asio::buffer(cmd), nothrow);
  if (wec) co_return r.fail(s, "bulk_command", wec);
  auto& buf = shared_buffer();
  for (;;) {
    auto [rec, n] = co_await s.sock.async_read_some(asio::buffer(buf), nothrow);
    if (rec) co_return r.fail(s, "bulk_read", rec);
    auto now = steady::now();
    if (now >= st.end) break;
    st.bytes += n;
  }
  s.close();
}

/// Ends both halves of a two-way bulk tunnel: whichever stops first cancels the other's
/// pending operation (a writer blocked on a full path, a reader waiting for data).
void halt(slot& s, bool& stop) {
  stop = true;
  error_code ec;
  s.sock.cancel(ec);
}

/// Writes until the window closes. No half-close at the end: squid and tinyproxy turn it
/// into a full close.
awaitable<void> bulk_writer(client_run& r, bulk_state& st, slot& s, bool& stop) {
  while (steady::now() < st.end && !stop) {
    auto [ec, n] = co_await asio::async_write(s.sock, asio::buffer(shared_buffer()), nothrow);
    if (ec) {
      if (!stop) r.fail(s, "bulk_write", ec);
      break;
    }
  }
  halt(s, stop);
}

/// up: the upstream reports its running count every report_bytes; the last report inside
/// the window is what arrived there, so no half-close is needed to learn the total.
awaitable<void> up_reader(client_run& r, bulk_state& st, slot& s, bool& stop) {
  std::uint64_t count = 0;
  steady::time_point at = st.start;
  while (!stop) {
    std::array<char, 8> c{};
    auto [ec, n] = co_await asio::async_read(s.sock, asio::buffer(c), nothrow);
    if (ec) {
      if (!stop) r.fail(s, "bulk_count", ec);
      break;
    }
    auto now = steady::now();
    if (now > st.end) break;
    count = static_cast<std::uint64_t>(get_u32(c.data())) << 32 | get_u32(c.data() + 4);
    at = now;
  }
  halt(s, stop);
  if (at > st.start) {
    st.bytes += count;
    st.rate_sum += static_cast<double>(count) / seconds_of(at - st.start);
  }
}

/// both: the upstream echoes; bytes back inside the window count twice (up, then down).
awaitable<void> echo_reader(client_run& r, bulk_state& st, slot& s, bool& stop) {
  std::vector<char> buf(io_chunk);
  while (!stop) {
    auto [ec, n] = co_await s.sock.async_read_some(asio::buffer(buf), nothrow);
    if (ec) {
      if (!stop) r.fail(s, "bulk_read", ec);
      break;
    }
    if (steady::now() >= st.end) break;
    st.bytes += 2 * n;
  }
  halt(s, stop);
}

awaitable<void> bulk_two_way(client_run& r, bulk_state& st, slot& s, bool up) {
  auto cmd = command(up ? 'U' : 'X', 0, 0);
  auto [wec, wn] = co_await asio::async_write(s.sock, asio::buffer(cmd), nothrow);
  if (wec) co_return r.fail(s, "bulk_command", wec);
  bool stop = false;
  if (up) co_await (bulk_writer(r, st, s, stop) && up_reader(r, st, s, stop));
  else co_await (bulk_writer(r, st, s, stop) && echo_reader(r, st, s, stop));
  s.close();
}

/// The measurement window opens when the last tunnel is up; whoever resumes first sets it.
void begin_window(const client_run& r, bulk_state& st) {
  if (st.start != steady::time_point::max()) return;
  st.start = steady::now();
  st.end = st.start + std::chrono::duration_cast<steady::duration>(std::chrono::duration<double>(r.opt.seconds));
}

awaitable<void> bulk_worker(client_run& r, bulk_state& st, slot& s) {
  bool ok = co_await open_tunnel(r, s);
  if (ok) ++st.opened;
  st.opened_gate.count_down();
  co_await st.opened_gate.wait();
  begin_window(r, st);
  if (ok && !r.stopping) {
    s.arm_at(st.end + r.opt.timeout);
    if (r.opt.direction == "down") co_await bulk_down(r, st, s);
    else co_await bulk_two_way(r, st, s, r.opt.direction == "up");
  }
  st.done.count_down();
}

awaitable<void> bulk_main(client_run& r) {
  auto n = static_cast<std::size_t>(r.opt.tunnels);
  bulk_state st(r.io.get_executor(), n);
  bool sweep_done = false;
  asio::co_spawn(r.io, sweeper(r, sweep_done), record_exception{&r});
  auto t_open = steady::now();
  st.start = st.end = steady::time_point::max();
  for (std::size_t i = 0; i < n; ++i) asio::co_spawn(r.io, bulk_worker(r, st, r.new_slot()), record_exception{&r});
  co_await st.opened_gate.wait();
  begin_window(r, st);
  auto open_s = seconds_of(st.start - t_open);
  co_await st.done.wait();
  sweep_done = true;
  double secs = seconds_of(st.end - st.start);
  double rate = r.opt.direction == "up" ? st.rate_sum : static_cast<double>(st.bytes) / secs;
  json_line()
      .str("mode", "bulk")
      .str("via", r.opt.direct ? "direct" : "proxy")
      .str("direction", r.opt.direction)
      .integer("tunnels", n)
      .integer("opened", st.opened)
      .num("open_s", open_s)
      .num("seconds", secs)
      .integer("bytes", st.bytes)
      .num("mb_per_s", rate / 1e6)
      .integer("errors", r.errors.total())
      .raw("error_kinds", r.errors.json())
      .print();
  r.finished = true;
}

// ------------------------------------------------ rate

struct rate_state {
  rate_state(asio::any_io_executor ex, std::size_t n) : done(ex, n) {}
  latch done;
  steady::time_point start, end;
  std::string request;  ///< command + request bytes, one write
  std::vector<char> response;
  std::vector<std::uint32_t> latency_us;
  std::uint64_t completed = 0;  ///< every finished transaction, also after the window
  std::uint64_t in_window = 0;
};

awaitable<void> rate_worker(client_run& r, rate_state& st, slot& s) {
  asio::steady_timer pause(r.io);
  while (!r.stopping && steady::now() < st.end && st.completed < r.opt.max_transactions) {
    auto t0 = steady::now();
    bool ok = co_await open_tunnel(r, s);
    if (ok) {
      s.arm(r.opt.timeout);
      auto [wec, wn] = co_await asio::async_write(s.sock, asio::buffer(st.request), nothrow);
      if (wec) {
        r.fail(s, "request", wec);
        ok = false;
      }
    }
    if (ok) {
      auto [rec, rn] = co_await asio::async_read(s.sock, asio::buffer(st.response), nothrow);
      if (rec) {
        r.fail(s, "response", rec);
        ok = false;
      }
    }
    if (!ok) {  // do not spin on a failing proxy
      pause.expires_after(std::chrono::milliseconds(10));
      co_await pause.async_wait(nothrow);
      continue;
    }
    s.close();
    auto t1 = steady::now();
    ++st.completed;
    if (t1 <= st.end) {
      ++st.in_window;
      st.latency_us.push_back(micros(t1 - t0));
    }
  }
  st.done.count_down();
}

awaitable<void> rate_main(client_run& r) {
  auto c = static_cast<std::size_t>(r.opt.concurrency);
  rate_state st(r.io.get_executor(), c);
  st.request = command('E', r.opt.request_bytes, r.opt.response_bytes) + std::string(r.opt.request_bytes, 'q');
  st.response.resize(r.opt.response_bytes);
  st.latency_us.reserve(1 << 20);
  bool sweep_done = false;
  asio::co_spawn(r.io, sweeper(r, sweep_done), record_exception{&r});
  st.start = steady::now();
  st.end = st.start + std::chrono::duration_cast<steady::duration>(std::chrono::duration<double>(r.opt.seconds));
  for (std::size_t i = 0; i < c; ++i) asio::co_spawn(r.io, rate_worker(r, st, r.new_slot()), record_exception{&r});
  co_await st.done.wait();
  sweep_done = true;
  double secs = seconds_of(st.end - st.start);
  auto& lat = st.latency_us;
  auto p50 = percentile(lat, 0.50), p99 = percentile(lat, 0.99), p999 = percentile(lat, 0.999);
  auto mx = lat.empty() ? 0u : *std::max_element(lat.begin(), lat.end());
  json_line()
      .str("mode", "rate")
      .str("via", r.opt.direct ? "direct" : "proxy")
      .integer("concurrency", c)
      .num("seconds", secs)
      .integer("transactions", st.in_window)
      .integer("completed", st.completed)
      .num("tx_per_s", static_cast<double>(st.in_window) / secs)
      .integer("p50_us", p50)
      .integer("p99_us", p99)
      .integer("p999_us", p999)
      .integer("max_us", mx)
      .integer("errors", r.errors.total())
      .raw("error_kinds", r.errors.json())
      .print();
  r.finished = true;
}

// ------------------------------------------------ idle

struct idle_state {
  idle_state(asio::any_io_executor ex, std::size_t openers, std::size_t n) : opened_all(ex, openers), pinged(ex, n) {}
  latch opened_all;
  latch pinged;
  std::size_t next = 0;
  std::uint64_t opened = 0;
  std::uint64_t answered = 0;
  std::vector<std::uint32_t> ping_us;
};

awaitable<void> idle_opener(client_run& r, idle_state& st) {
  while (st.next < r.slots.size() && !r.stopping) {
    slot& s = r.slots[st.next++];
    if (co_await open_tunnel(r, s)) {
      ++st.opened;
      s.due = steady::time_point::max();  // held open, no deadline while idle
    }
  }
  st.opened_all.count_down();
}

awaitable<void> idle_ping(client_run& r, idle_state& st, slot& s, const std::string& ping) {
  if (s.sock.is_open()) {
    auto t0 = steady::now();
    s.arm(r.opt.timeout);
    auto [wec, wn] = co_await asio::async_write(s.sock, asio::buffer(ping), nothrow);
    if (wec) {
      r.fail(s, "ping_write", wec);
    } else {
      std::array<char, ping_bytes> pong;
      auto [rec, rn] = co_await asio::async_read(s.sock, asio::buffer(pong), nothrow);
      if (rec) {
        r.fail(s, "ping_read", rec);
      } else {
        ++st.answered;
        st.ping_us.push_back(micros(steady::now() - t0));
        s.due = steady::time_point::max();
      }
    }
  }
  st.pinged.count_down();
}

awaitable<void> idle_main(client_run& r) {
  auto k = static_cast<std::size_t>(r.opt.tunnels);
  auto openers = std::min<std::size_t>(k, static_cast<std::size_t>(std::max(1, r.opt.open_parallel)));
  for (std::size_t i = 0; i < k; ++i) r.new_slot();
  idle_state st(r.io.get_executor(), openers, k);
  st.ping_us.reserve(k);
  bool sweep_done = false;
  asio::co_spawn(r.io, sweeper(r, sweep_done), record_exception{&r});
  auto t0 = steady::now();
  for (std::size_t i = 0; i < openers; ++i) asio::co_spawn(r.io, idle_opener(r, st), record_exception{&r});
  co_await st.opened_all.wait();
  double open_s = seconds_of(steady::now() - t0);
  json_line()
      .str("event", "open")
      .integer("tunnels", k)
      .integer("opened", st.opened)
      .num("open_s", open_s)
      .integer("errors", r.errors.total())
      .print();
  asio::steady_timer hold(r.io, std::chrono::duration_cast<steady::duration>(std::chrono::duration<double>(r.opt.hold)));
  co_await hold.async_wait(nothrow);
  // Ping every tunnel at once; they stay open until the last answer so all K are live together.
  std::string ping = command('E', ping_bytes, ping_bytes) + std::string(ping_bytes, 'p');
  auto t1 = steady::now();
  for (auto& s : r.slots) asio::co_spawn(r.io, idle_ping(r, st, s, ping), record_exception{&r});
  co_await st.pinged.wait();
  double ping_s = seconds_of(steady::now() - t1);
  sweep_done = true;
  for (auto& s : r.slots) s.close();
  json_line()
      .str("mode", "idle")
      .str("via", r.opt.direct ? "direct" : "proxy")
      .integer("tunnels", k)
      .integer("opened", st.opened)
      .integer("answered", st.answered)
      .num("open_s", open_s)
      .num("ping_s", ping_s)
      .integer("ping_p50_us", percentile(st.ping_us, 0.5))
      .integer("ping_p99_us", percentile(st.ping_us, 0.99))
      .integer("errors", r.errors.total())
      .raw("error_kinds", r.errors.json())
      .print();
  r.finished = true;
}

int run_client(const options& opt) {
  asio::io_context io(1);
  client_run r(io, opt);
  r.hello = make_client_hello(opt.sni.empty() ? opt.target_host : opt.sni);
  if (r.hello.empty()) {
    std::fprintf(stderr, "bench-loadgen: OpenSSL did not produce a ClientHello\n");
    ERR_print_errors_fp(stderr);
    return 1;
  }
  std::string target = opt.target_host + ":" + std::to_string(opt.target_port);
  r.connect_request = "CONNECT " + target + " HTTP/1.1\r\nHost: " + target + "\r\n\r\n";
  if (opt.direct) {
    error_code ec;
    auto a = asio::ip::make_address(opt.direct_address, ec);
    if (ec) {
      std::fprintf(stderr, "bench-loadgen: bad --direct-address\n");
      return 2;
    }
    r.dial = tcp::endpoint(a, opt.target_port);
  } else {
    r.dial = *opt.proxy;
  }
  auto body = opt.mode == "bulk" ? bulk_main(r) : opt.mode == "rate" ? rate_main(r) : idle_main(r);
  asio::co_spawn(io, std::move(body), record_exception{&r});
  double hard = opt.seconds + opt.hold + 30;
  io.run_for(std::chrono::duration_cast<steady::duration>(std::chrono::duration<double>(hard)));
  if (!r.finished) {
    r.errors.add("hard_timeout");
    json_line()
        .str("mode", opt.mode)
        .str("via", opt.direct ? "direct" : "proxy")
        .integer("errors", r.errors.total())
        .raw("error_kinds", r.errors.json())
        .print();
    std::fflush(stdout);
    std::_Exit(1);  // coroutines are still suspended on sockets; do not unwind them
  }
  return r.errors.total() ? 1 : 0;
}

int usage(const char* why) {
  std::fprintf(stderr,
               "bench-loadgen: %s\n"
               "usage: bench-loadgen upstream [--listen ADDR:PORT] [--seconds LIFETIME]\n"
               "       bench-loadgen bulk --tunnels N --seconds S [--direction down|up|both] TARGET\n"
               "       bench-loadgen rate --concurrency C --seconds S [--request B] [--response B] TARGET\n"
               "       bench-loadgen idle --tunnels K [--hold S] TARGET\n"
               "TARGET: --target NAME:PORT (--proxy ADDR:PORT | --direct [--direct-address ADDR]) [--sni NAME]\n"
               "common: [--timeout-ms MS] [--max-transactions N] [--max-errors N] [--open-parallel P]\n",
               why);
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  std::signal(SIGPIPE, SIG_IGN);
  if (argc < 2) return usage("a mode is required");
  options opt;
  opt.mode = argv[1];
  if (opt.mode != "upstream" && opt.mode != "bulk" && opt.mode != "rate" && opt.mode != "idle")
    return usage("unknown mode");
  if (opt.mode == "upstream") opt.seconds = 1800;
  std::optional<std::string> target;
  for (int i = 2; i < argc; ++i) {
    std::string_view a = argv[i];
    bool has_value = i + 1 < argc;
    auto value = [&]() -> std::string_view { return argv[++i]; };
    auto number = [&](double lo, double hi, double& out) {
      char* end = nullptr;
      std::string v(value());
      out = std::strtod(v.c_str(), &end);
      return end != v.c_str() && *end == '\0' && out >= lo && out <= hi;
    };
    double d = 0;
    if (a == "--direct") {
      opt.direct = true;
    } else if (!has_value) {
      return usage("option without a value");
    } else if (a == "--target") {
      target = std::string(value());
    } else if (a == "--sni") {
      opt.sni = std::string(value());
    } else if (a == "--proxy") {
      opt.proxy = parse_endpoint(value());
      if (!opt.proxy) return usage("--proxy wants ADDR:PORT");
    } else if (a == "--direct-address") {
      opt.direct_address = std::string(value());
    } else if (a == "--listen") {
      opt.listen = std::string(value());
    } else if (a == "--direction") {
      opt.direction = std::string(value());
      if (opt.direction != "down" && opt.direction != "up" && opt.direction != "both")
        return usage("--direction is down, up or both");
    } else if (a == "--tunnels") {
      if (!number(1, 100000, d)) return usage("--tunnels wants 1..100000");
      opt.tunnels = static_cast<int>(d);
    } else if (a == "--concurrency") {
      if (!number(1, 10000, d)) return usage("--concurrency wants 1..10000");
      opt.concurrency = static_cast<int>(d);
    } else if (a == "--seconds") {
      if (!number(0.01, 86400, d)) return usage("--seconds wants a positive number");
      opt.seconds = d;
    } else if (a == "--hold") {
      if (!number(0, 3600, d)) return usage("--hold wants 0..3600");
      opt.hold = d;
    } else if (a == "--request" || a == "--response") {
      if (!number(0, max_message_bytes, d)) return usage("--request/--response want 0..16777216 bytes");
      (a == "--request" ? opt.request_bytes : opt.response_bytes) = static_cast<std::uint32_t>(d);
    } else if (a == "--timeout-ms") {
      if (!number(1, 3600000, d)) return usage("--timeout-ms wants 1..3600000");
      opt.timeout = std::chrono::milliseconds(static_cast<long>(d));
    } else if (a == "--max-transactions" || a == "--max-errors") {
      if (!number(1, 1e12, d)) return usage("--max-transactions/--max-errors want a positive count");
      (a == "--max-transactions" ? opt.max_transactions : opt.max_errors) = static_cast<std::uint64_t>(d);
    } else if (a == "--open-parallel") {
      if (!number(1, 10000, d)) return usage("--open-parallel wants 1..10000");
      opt.open_parallel = static_cast<int>(d);
    } else {
      return usage("unknown option");
    }
  }
  if (opt.mode == "upstream") return run_upstream(opt);
  if (!target) return usage("--target NAME:PORT is required");
  auto colon = target->rfind(':');
  if (colon == std::string::npos || colon == 0) return usage("--target wants NAME:PORT");
  opt.target_host = target->substr(0, colon);
  auto port = std::strtoul(target->c_str() + colon + 1, nullptr, 10);
  if (port == 0 || port > 65535) return usage("--target port wants 1..65535");
  opt.target_port = static_cast<std::uint16_t>(port);
  if (opt.direct == opt.proxy.has_value()) return usage("give exactly one of --proxy ADDR:PORT and --direct");
  return run_client(opt);
}
