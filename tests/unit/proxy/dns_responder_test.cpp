// The DNS responder room (proxy/src/dns_responder.hpp) on real sockets: it runs on its
// own io_context thread with a standalone proxy_context (tests/support/), is queried over
// UDP and TCP by blocking POSIX sockets from the test thread, and forwards cluster names
// to a real dnsmasq (tests/support/dnsmasq.hpp) or to scripted UDP stubs for upstream
// misbehaviour dnsmasq will not show (wrong IDs, oversized answers, silence). Its stdout
// (the `dns` lines) is captured into a file for the assertions. Loopback only; no fixed ports.

#include "dns_responder.hpp"

#include "support/dnsmasq.hpp"
#include "support/standalone_context.hpp"

#include "egress/proxy/dns_message.hpp"

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/post.hpp>

#include <catch2/catch.hpp>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <future>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace {

namespace asio = boost::asio;
namespace dns = egress::proxy::dns;
using namespace std::chrono_literals;
using egress::proxy::dns_responder;
using egress::proxy::dns_responder_limits;
using bytes = std::vector<std::uint8_t>;
using steady = std::chrono::steady_clock;

// ---- messages ----

bytes make_query(const std::string& name, std::uint16_t type, std::uint16_t id, unsigned payload = 0) {
  bytes b{static_cast<std::uint8_t>(id >> 8), static_cast<std::uint8_t>(id), 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0,
          static_cast<std::uint8_t>(payload ? 1 : 0)};
  const auto wire = dns::encode_name(name);
  REQUIRE(wire);
  b.insert(b.end(), wire->begin(), wire->end());
  b.insert(b.end(), {static_cast<std::uint8_t>(type >> 8), static_cast<std::uint8_t>(type), 0, 1});
  if (payload)
    b.insert(b.end(), {0, 0, 41, static_cast<std::uint8_t>(payload >> 8), static_cast<std::uint8_t>(payload), 0, 0, 0, 0,
                       0, 0});
  return b;
}

// A response read back: header, and the A/AAAA answers as text with their TTLs.
struct reply {
  unsigned id = 0, flags = 0, qd = 0, an = 0, ns = 0, ar = 0;
  std::vector<std::string> addresses;
  std::vector<std::uint32_t> ttls;
  unsigned rcode() const { return flags & 0xf; }
  bool tc() const { return flags & 0x0200; }
  bool aa() const { return flags & 0x0400; }
  bool ra() const { return flags & 0x0080; }
};

std::size_t skip_name(const bytes& b, std::size_t at) {
  while (at < b.size()) {
    if ((b[at] & 0xc0) == 0xc0) return at + 2;
    if (b[at] == 0) return at + 1;
    at += std::size_t{b[at]} + 1;
  }
  FAIL("name runs past the message");
  return at;
}

reply read_reply(const bytes& b) {
  REQUIRE(b.size() >= 12);
  const auto u16 = [&](std::size_t at) { return (unsigned{b.at(at)} << 8) | b.at(at + 1); };
  reply r{u16(0), u16(2), u16(4), u16(6), u16(8), u16(10), {}, {}};
  std::size_t at = 12;
  for (unsigned i = 0; i < r.qd; ++i) at = skip_name(b, at) + 4;
  for (unsigned i = 0; i < r.an; ++i) {
    at = skip_name(b, at);
    const unsigned type = u16(at), rdlen = u16(at + 8);
    r.ttls.push_back((std::uint32_t{u16(at + 4)} << 16) | u16(at + 6));
    at += 10;
    REQUIRE(at + rdlen <= b.size());
    char text[INET6_ADDRSTRLEN] = {};
    if (type == 1 && rdlen == 4) r.addresses.push_back(inet_ntop(AF_INET, b.data() + at, text, sizeof text));
    if (type == 28 && rdlen == 16) r.addresses.push_back(inet_ntop(AF_INET6, b.data() + at, text, sizeof text));
    at += rdlen;
  }
  return r;
}

// ---- blocking clients ----

sockaddr_in loopback(std::uint16_t port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return a;
}

void set_timeout(int fd, std::chrono::milliseconds t) {
  timeval tv{static_cast<time_t>(t.count() / 1000), static_cast<suseconds_t>((t.count() % 1000) * 1000)};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
}

struct fd_guard {
  int fd;
  explicit fd_guard(int f) : fd(f) { REQUIRE(fd >= 0); }
  ~fd_guard() { ::close(fd); }
};

// One UDP socket of the test; send() and recv() with a timeout.
struct udp_client {
  fd_guard s{::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0)};
  std::uint16_t port;
  explicit udp_client(std::uint16_t p) : port(p) {}
  void send(const bytes& b) {
    const auto a = loopback(port);
    REQUIRE(::sendto(s.fd, b.data(), b.size(), 0, reinterpret_cast<const sockaddr*>(&a), sizeof a) ==
            static_cast<ssize_t>(b.size()));
  }
  std::optional<bytes> recv(std::chrono::milliseconds t = 3s) {
    set_timeout(s.fd, t);
    bytes buf(65536);
    const ssize_t n = ::recv(s.fd, buf.data(), buf.size(), 0);
    if (n < 0) return std::nullopt;
    buf.resize(static_cast<std::size_t>(n));
    return buf;
  }
  bytes ask(const bytes& q) {
    send(q);
    auto r = recv();
    REQUIRE(r);
    return *r;
  }
};

// One TCP connection of the test, RFC 7766 framing.
struct tcp_client {
  fd_guard s{::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)};
  explicit tcp_client(std::uint16_t port) {
    const auto a = loopback(port);
    REQUIRE(::connect(s.fd, reinterpret_cast<const sockaddr*>(&a), sizeof a) == 0);
  }
  void send_raw(const bytes& b) { REQUIRE(::send(s.fd, b.data(), b.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(b.size())); }
  static bytes framed(const bytes& q) {
    bytes out{static_cast<std::uint8_t>(q.size() >> 8), static_cast<std::uint8_t>(q.size())};
    out.insert(out.end(), q.begin(), q.end());
    return out;
  }
  void send(const bytes& q) { send_raw(framed(q)); }
  // Reads exactly n bytes; false on EOF, error or timeout.
  bool read_exact(std::uint8_t* p, std::size_t n, std::chrono::milliseconds t) {
    set_timeout(s.fd, t);
    while (n > 0) {
      const ssize_t got = ::recv(s.fd, p, n, 0);
      if (got <= 0) return false;
      p += got;
      n -= static_cast<std::size_t>(got);
    }
    return true;
  }
  std::optional<bytes> recv(std::chrono::milliseconds t = 3s) {
    std::uint8_t len[2];
    if (!read_exact(len, 2, t)) return std::nullopt;
    bytes b((std::size_t{len[0]} << 8) | len[1]);
    if (!read_exact(b.data(), b.size(), t)) return std::nullopt;
    return b;
  }
  bytes ask(const bytes& q) {
    send(q);
    auto r = recv();
    REQUIRE(r);
    return *r;
  }
  // True when the responder closed the connection within `t` (EOF or reset).
  bool closed_within(std::chrono::milliseconds t) {
    set_timeout(s.fd, t);
    std::uint8_t b;
    const ssize_t n = ::recv(s.fd, &b, 1, 0);
    return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK);
  }
};

// A scripted UDP upstream on loopback, answering on its own thread with `script(query)`
// (zero or more datagrams per query).
struct udp_stub {
  fd_guard s{::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0)};
  std::uint16_t port = 0;
  std::atomic<int> queries{0};
  std::atomic<bool> stop{false};
  std::function<std::vector<bytes>(const bytes&)> script;
  std::thread thread;
  explicit udp_stub(std::function<std::vector<bytes>(const bytes&)> f) : script(std::move(f)) {
    auto a = loopback(0);
    REQUIRE(::bind(s.fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    socklen_t len = sizeof a;
    ::getsockname(s.fd, reinterpret_cast<sockaddr*>(&a), &len);
    port = ntohs(a.sin_port);
    set_timeout(s.fd, 50ms);
    thread = std::thread([this] {
      while (!stop) {
        bytes buf(4096);
        sockaddr_in from{};
        socklen_t fl = sizeof from;
        const ssize_t n = ::recvfrom(s.fd, buf.data(), buf.size(), 0, reinterpret_cast<sockaddr*>(&from), &fl);
        if (n <= 0) continue;
        buf.resize(static_cast<std::size_t>(n));
        ++queries;
        for (const auto& out : script(buf))
          ::sendto(s.fd, out.data(), out.size(), 0, reinterpret_cast<sockaddr*>(&from), fl);
      }
    });
  }
  ~udp_stub() {
    stop = true;
    thread.join();
  }
  std::string server() const { return "127.0.0.1:" + std::to_string(port); }
};

// The answer to `q` (as the stub received it) with `id`, QR set, one A record, padded with
// `pad` bytes of an unknown additional record (to make it large).
bytes stub_answer(const bytes& q, std::uint16_t id, std::size_t pad = 0) {
  bytes out(q.begin(), q.begin() + static_cast<std::ptrdiff_t>(skip_name(q, 12) + 4));
  out[0] = static_cast<std::uint8_t>(id >> 8);
  out[1] = static_cast<std::uint8_t>(id);
  out[2] = 0x81;
  out[3] = 0x80;
  out[7] = 1;  // ANCOUNT 1
  out[11] = pad ? 1 : 0;
  out.insert(out.end(), {0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 30, 0, 4, 10, 1, 2, 3});
  if (pad) {
    out.insert(out.end(), {0, 0, 99, 0, 1, 0, 0, 0, 0, static_cast<std::uint8_t>(pad >> 8), static_cast<std::uint8_t>(pad)});
    out.insert(out.end(), pad, 'x');
  }
  return out;
}

// A UDP port that is bound but never answers.
struct silent_udp {
  fd_guard s{::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0)};
  std::uint16_t port = 0;
  silent_udp() {
    auto a = loopback(0);
    REQUIRE(::bind(s.fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    socklen_t len = sizeof a;
    ::getsockname(s.fd, reinterpret_cast<sockaddr*>(&a), &len);
    port = ntohs(a.sin_port);
  }
  std::string server() const { return "127.0.0.1:" + std::to_string(port); }
};

// ---- stdout capture ----

// Sends fd 1 to a temp file while alive; on destruction restores it and copies back the
// lines that are not JSON log lines (e.g. test-framework output flushed meanwhile).
class stdout_capture {
public:
  stdout_capture() {
    std::fflush(stdout);
    char tmpl[] = "/tmp/egress-dns-test-XXXXXX";
    fd_ = ::mkstemp(tmpl);
    REQUIRE(fd_ >= 0);
    path_ = tmpl;
    saved_ = ::dup(1);
    ::dup2(fd_, 1);
  }
  ~stdout_capture() {
    std::fflush(stdout);
    ::dup2(saved_, 1);
    ::close(saved_);
    ::close(fd_);
    std::istringstream in(text());
    for (std::string line; std::getline(in, line);)
      if (!line.starts_with("{\"time\"")) std::printf("%s\n", line.c_str());
    ::unlink(path_.c_str());
  }
  std::string text() const {
    std::ifstream in(path_);
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
  }

private:
  int fd_ = -1, saved_ = -1;
  std::string path_;
};

// ---- the responder under test ----

egress::common::allow_entry entry(const char* pattern, std::vector<std::uint16_t> ports = {443}) {
  egress::common::allow_entry e;
  e.pattern = *egress::common::parse_host_pattern(pattern);
  e.ports = std::move(ports);
  return e;
}

egress::common::config responder_config(std::vector<std::string> cluster_dns, std::chrono::milliseconds timeout = 1s) {
  egress::common::config c;
  c.has_proxy = true;
  c.proxy.capture = egress::common::capture_mode::dns;
  c.proxy.dns.answer_ipv4 = asio::ip::make_address("127.0.0.1");
  c.proxy.dns.ttl = std::chrono::seconds(7);
  c.proxy.dns.cluster_domains = {"cluster.local"};
  c.proxy.dns.cluster_dns = std::move(cluster_dns);
  c.proxy.resolver.timeout = timeout;
  c.allowlist = {entry("www.wikidata.org"), entry("*.wikimedia.org", {8443})};
  return c;
}

class running_responder {
public:
  explicit running_responder(egress::common::config cfg, dns_responder_limits limits = {})
      : ctx_(std::make_shared<egress::test::standalone_context>(io_, std::move(cfg))),
        responder_(std::make_unique<dns_responder>(*ctx_, limits)) {
    responder_->start(asio::ip::make_address("127.0.0.1"), 0);
    port_ = responder_->udp_endpoint().port();
    REQUIRE(responder_->tcp_endpoint().port() == port_);
    thread_ = std::thread([this] { io_.run(); });
  }
  ~running_responder() {
    on_io([this] { responder_.reset(); });
    // Let the coroutines finish (they hold the context), then stop the loop.
    const auto give_up = steady::now() + 5s;
    while (on_io([this] { return ctx_.use_count(); }) > 1 && steady::now() < give_up) std::this_thread::sleep_for(5ms);
    io_.stop();
    thread_.join();
  }

  std::uint16_t port() const { return port_; }

  template <class F>
  auto on_io(F f) -> decltype(f()) {
    std::packaged_task<decltype(f())()> task(std::move(f));
    auto fut = task.get_future();
    asio::post(io_, [&task] { task(); });
    return fut.get();
  }
  // Every log line of what happened before is written (the flush is posted first).
  void sync() {
    std::promise<void> done;
    asio::post(io_, [this, &done] { asio::post(io_, [&done] { done.set_value(); }); });
    done.get_future().get();
  }
  std::string metrics() {
    return on_io([this] { return ctx_->stats().render(); });
  }
  void set_config(egress::common::config cfg) {
    on_io([&] { ctx_->set_config(std::move(cfg)); });
  }
  void stop() {
    on_io([this] { responder_->stop(); });
  }
  // The dns lines logged so far.
  std::vector<std::string> lines() {
    sync();
    std::vector<std::string> out;
    std::istringstream in(capture_.text());
    for (std::string line; std::getline(in, line);)
      if (line.find("\"event\":\"dns\"") != std::string::npos) out.push_back(line);
    return out;
  }
  // The dns lines that contain every one of `parts`.
  std::vector<std::string> lines_with(std::initializer_list<std::string> parts) {
    std::vector<std::string> out;
    for (auto& l : lines())
      if (std::all_of(parts.begin(), parts.end(), [&](const std::string& p) { return l.find(p) != std::string::npos; }))
        out.push_back(l);
    return out;
  }

private:
  stdout_capture capture_;  // first: it outlives every line written
  asio::io_context io_;
  asio::executor_work_guard<asio::io_context::executor_type> work_{io_.get_executor()};
  std::shared_ptr<egress::test::standalone_context> ctx_;
  std::unique_ptr<dns_responder> responder_;
  std::uint16_t port_ = 0;
  std::thread thread_;
};

std::vector<std::string> cluster_zone() {
  return {"local=/cluster.local/", "host-record=kube-dns.kube-system.svc.cluster.local,10.96.0.10",
          "host-record=web.default.svc.cluster.local,10.96.1.1"};
}

std::string counter(const std::string& verdict, const std::string& reason) {
  return "egress_proxy_dns_queries_total{verdict=\"" + verdict + "\",reason=\"" + reason + "\"}";
}

// The value of counter line `series` in `text`, 0 when absent.
long metric(const std::string& text, const std::string& series) {
  const auto at = text.find(series + " ");
  return at == std::string::npos ? 0 : std::stol(text.substr(at + series.size() + 1));
}

}  // namespace

TEST_CASE("dns responder: allowlisted names answered, others NXDOMAIN with nothing forwarded", "[unit][proxy][dns_responder]") {
  egress::test::dnsmasq cluster(cluster_zone());
  running_responder r(responder_config({cluster.server()}));
  udp_client udp(r.port());

  const auto a = read_reply(udp.ask(make_query("www.wikidata.org", dns::type_a, 0x0101)));
  CHECK(a.id == 0x0101);
  CHECK(a.rcode() == 0);
  CHECK((a.aa() && !a.ra() && !a.tc()));
  CHECK(a.addresses == std::vector<std::string>{"127.0.0.1"});
  CHECK(a.ttls == std::vector<std::uint32_t>{7});

  const auto mixed = read_reply(udp.ask(make_query("UPLOAD.WikiMedia.org.", dns::type_a, 0x0102)));
  CHECK(mixed.addresses == std::vector<std::string>{"127.0.0.1"});

  const auto aaaa = read_reply(udp.ask(make_query("www.wikidata.org", dns::type_aaaa, 0x0103)));
  CHECK((aaaa.rcode() == 0 && aaaa.an == 0 && aaaa.aa()));  // NODATA: no answer_ipv6

  for (std::uint16_t type : {dns::type_https, dns::type_svcb}) {
    const auto h = read_reply(udp.ask(make_query("www.wikidata.org", type, 0x0104)));
    CHECK((h.rcode() == 0 && h.an == 0));
  }

  const auto nx = read_reply(udp.ask(make_query("example.org", dns::type_a, 0x0105)));
  CHECK(nx.rcode() == 3);
  CHECK(nx.an == 0);
  const auto nx_search = read_reply(udp.ask(make_query("www.wikidata.org.evil.example", dns::type_a, 0x0106)));
  CHECK(nx_search.rcode() == 3);

  tcp_client tcp(r.port());
  const auto ta = read_reply(tcp.ask(make_query("www.wikidata.org", dns::type_a, 0x0201)));
  CHECK(ta.addresses == std::vector<std::string>{"127.0.0.1"});
  const auto tnx = read_reply(tcp.ask(make_query("exfil-data-here.attacker.example", 16, 0x0202)));
  CHECK(tnx.rcode() == 3);

  cluster.require_running();
  CHECK(cluster.queries().empty());  // not one query left the responder for these names

  const auto m = r.metrics();
  CHECK(metric(m, counter("allow", "allowlisted")) == 3);
  CHECK(metric(m, counter("allow", "allowlisted_nodata")) == 1);
  CHECK(metric(m, counter("deny", "https_record_withheld")) == 2);
  CHECK(metric(m, counter("deny", "name_not_allowed")) == 3);
  CHECK(r.lines().size() == 9);
  CHECK(r.lines_with({"\"client\":\"127.0.0.1:", "\"transport\":\"udp\"", "\"qname\":\"example.org\"", "\"qtype\":\"A\"",
                      "\"verdict\":\"deny\"", "\"reason\":\"name_not_allowed\"", "\"rcode\":\"NXDOMAIN\""})
            .size() == 1);
  CHECK(r.lines_with({"\"transport\":\"tcp\"", "\"qname\":\"www.wikidata.org\"", "\"verdict\":\"allow\"",
                      "\"reason\":\"allowlisted\"", "\"rcode\":\"NOERROR\""})
            .size() == 1);
  CHECK(r.lines_with({"\"qtype\":\"HTTPS\"", "\"reason\":\"https_record_withheld\""}).size() == 1);
}

TEST_CASE("dns responder: cluster names forwarded over the client's transport, answered as the cluster DNS answers",
          "[unit][proxy][dns_responder]") {
  egress::test::dnsmasq cluster(cluster_zone());
  running_responder r(responder_config({cluster.server()}));

  udp_client udp(r.port());
  const auto u = read_reply(udp.ask(make_query("kube-dns.kube-system.svc.cluster.local", dns::type_a, 0x3131)));
  CHECK(u.id == 0x3131);  // the client's ID restored
  CHECK(u.rcode() == 0);
  CHECK(u.addresses == std::vector<std::string>{"10.96.0.10"});
  CHECK(u.ra());  // dnsmasq's flags, relayed as they came
  CHECK(cluster.count_queries("A", "kube-dns.kube-system.svc.cluster.local") == 1);

  const auto missing = read_reply(udp.ask(make_query("nope.default.svc.cluster.local", dns::type_a, 0x3132, 1232)));
  CHECK(missing.rcode() == 3);
  CHECK(missing.id == 0x3132);
  CHECK(cluster.count_queries("A", "nope.default.svc.cluster.local") == 1);

  // a search-list expansion of an allowlisted name is the cluster DNS's to answer
  const auto expansion = read_reply(udp.ask(make_query("www.wikidata.org.default.svc.cluster.local", dns::type_a, 0x3133)));
  CHECK(expansion.rcode() == 3);
  CHECK(cluster.count_queries("A", "www.wikidata.org.default.svc.cluster.local") == 1);

  // TCP: several queries on one connection, two of them sent in one write (pipelined)
  tcp_client tcp(r.port());
  tcp.send_raw([] {
    bytes both = tcp_client::framed(make_query("web.default.svc.cluster.local", dns::type_a, 0x4141));
    const bytes second = tcp_client::framed(make_query("www.wikidata.org", dns::type_a, 0x4142));
    both.insert(both.end(), second.begin(), second.end());
    return both;
  }());
  auto first = tcp.recv();
  auto second = tcp.recv();
  REQUIRE((first && second));
  const auto t1 = read_reply(*first), t2 = read_reply(*second);
  CHECK((t1.id == 0x4141 && t1.addresses == std::vector<std::string>{"10.96.1.1"}));
  CHECK((t2.id == 0x4142 && t2.addresses == std::vector<std::string>{"127.0.0.1"}));
  const auto t3 = read_reply(tcp.ask(make_query("kube-dns.kube-system.svc.cluster.local", dns::type_a, 0x4143)));
  CHECK((t3.id == 0x4143 && t3.addresses == std::vector<std::string>{"10.96.0.10"}));
  CHECK(cluster.count_queries("A", "web.default.svc.cluster.local") == 1);
  CHECK(cluster.count_queries("A", "kube-dns.kube-system.svc.cluster.local") == 2);

  const auto m = r.metrics();
  CHECK(metric(m, counter("allow", "cluster_forward")) == 5);
  CHECK(r.lines_with({"\"transport\":\"udp\"", "\"reason\":\"cluster_forward\"", "\"upstream\":\"" + cluster.server() + "\""})
            .size() == 3);
  CHECK(r.lines_with({"\"transport\":\"tcp\"", "\"reason\":\"cluster_forward\"", "\"rcode\":\"NOERROR\""}).size() == 2);
}

TEST_CASE("dns responder: a silent or absent cluster DNS gives SERVFAIL within the resolver budget",
          "[unit][proxy][dns_responder]") {
  silent_udp silent;
  running_responder r(responder_config({silent.server()}, 300ms));
  udp_client udp(r.port());
  const auto start = steady::now();
  const auto u = read_reply(udp.ask(make_query("kube-dns.kube-system.svc.cluster.local", dns::type_a, 0x5151)));
  const auto took = steady::now() - start;
  CHECK((u.id == 0x5151 && u.rcode() == 2));
  CHECK(took >= 250ms);
  CHECK(took < 2s);
  // TCP to a port nobody listens on (the silent UDP port has no TCP listener): refused at once
  tcp_client tcp(r.port());
  const auto t = read_reply(tcp.ask(make_query("kube-dns.kube-system.svc.cluster.local", dns::type_a, 0x5152)));
  CHECK((t.id == 0x5152 && t.rcode() == 2));
  const auto m = r.metrics();
  CHECK(metric(m, counter("deny", "forward_timeout")) == 1);
  CHECK(metric(m, counter("deny", "forward_failed")) == 1);
}

TEST_CASE("dns responder: forwarding tries the next server; answers with another ID or question are ignored",
          "[unit][proxy][dns_responder]") {
  udp_stub stub([](const bytes& q) {
    const std::uint16_t id = static_cast<std::uint16_t>((q[0] << 8) | q[1]);
    bytes other_question = stub_answer(q, id);
    other_question[13] ^= 0x01;  // first letter of the name changed
    return std::vector<bytes>{stub_answer(q, static_cast<std::uint16_t>(id + 1)), other_question, stub_answer(q, id)};
  });
  silent_udp silent;
  running_responder r(responder_config({silent.server(), stub.server()}, 400ms));
  udp_client udp(r.port());
  const auto u = read_reply(udp.ask(make_query("web.default.svc.cluster.local", dns::type_a, 0x6161)));
  CHECK(u.id == 0x6161);
  CHECK(u.rcode() == 0);
  CHECK(u.addresses == std::vector<std::string>{"10.1.2.3"});
  CHECK_FALSE(udp.recv(300ms));  // exactly one answer
  CHECK(stub.queries == 1);
  CHECK(r.lines_with({"\"reason\":\"cluster_forward\"", "\"upstream\":\"" + stub.server() + "\""}).size() == 1);
}

TEST_CASE("dns responder: a relayed answer larger than the client's UDP limit becomes TC=1", "[unit][proxy][dns_responder]") {
  udp_stub stub([](const bytes& q) {
    return std::vector<bytes>{stub_answer(q, static_cast<std::uint16_t>((q[0] << 8) | q[1]), 1400)};
  });
  running_responder r(responder_config({stub.server()}));
  udp_client udp(r.port());
  const auto raw = udp.ask(make_query("big.default.svc.cluster.local", dns::type_a, 0x7171));
  CHECK(raw.size() <= 512);
  const auto u = read_reply(raw);
  CHECK((u.id == 0x7171 && u.tc() && u.an == 0 && u.rcode() == 0));
  const auto ok = read_reply(udp.ask(make_query("big.default.svc.cluster.local", dns::type_a, 0x7172, 4096)));
  CHECK((ok.id == 0x7172 && !ok.tc() && ok.addresses == std::vector<std::string>{"10.1.2.3"}));
  CHECK(r.lines_with({"\"tc\":true", "\"reason\":\"cluster_forward\""}).size() == 1);
}

TEST_CASE("dns responder: malformed and unsupported messages", "[unit][proxy][dns_responder]") {
  running_responder r(responder_config({"127.0.0.1:9"}));
  udp_client udp(r.port());
  bytes two = make_query("www.wikidata.org", dns::type_a, 0x8181);
  two[5] = 2;
  const auto f = read_reply(udp.ask(two));
  CHECK((f.id == 0x8181 && f.rcode() == 1 && f.qd == 0));
  bytes notify = make_query("www.wikidata.org", dns::type_soa, 0x8182);
  notify[2] = 0x20;  // OPCODE 4
  CHECK(read_reply(udp.ask(notify)).rcode() == 4);
  bytes response = make_query("www.wikidata.org", dns::type_a, 0x8183);
  response[2] |= 0x80;
  udp.send(response);
  udp.send(bytes{1, 2, 3});
  CHECK_FALSE(udp.recv(300ms));  // responses and scraps are never answered
  const auto m = r.metrics();
  CHECK(metric(m, counter("deny", "formerr")) == 1);
  CHECK(metric(m, counter("deny", "notimp")) == 1);
  CHECK(metric(m, counter("deny", "dropped")) == 2);
  CHECK(r.lines_with({"\"reason\":\"formerr\"", "\"detail\":\"qdcount_not_one\"", "\"rcode\":\"FORMERR\""}).size() == 1);
  CHECK(r.lines_with({"\"reason\":\"dropped\"", "\"detail\":\"response\"", "\"rcode\":\"\""}).size() == 1);
}

TEST_CASE("dns responder: TCP connection, size, idle and per-connection limits", "[unit][proxy][dns_responder]") {
  dns_responder_limits limits;
  limits.max_tcp_connections = 2;
  limits.tcp_idle_timeout = 300ms;
  limits.max_queries_per_connection = 3;
  limits.max_tcp_query_bytes = 512;
  running_responder r(responder_config({"127.0.0.1:9"}), limits);
  {
    tcp_client a(r.port()), b(r.port());
    CHECK(read_reply(a.ask(make_query("www.wikidata.org", dns::type_a, 1))).an == 1);
    CHECK(read_reply(b.ask(make_query("www.wikidata.org", dns::type_a, 2))).an == 1);
    tcp_client c(r.port());
    CHECK(c.closed_within(2s));  // a third connection is closed at once
    CHECK(r.lines_with({"\"reason\":\"too_many_connections\""}).size() == 1);
  }
  {
    tcp_client idle(r.port());
    const auto start = steady::now();
    CHECK(idle.closed_within(3s));
    CHECK(steady::now() - start >= 250ms);
  }
  {
    tcp_client big(r.port());
    big.send_raw({0x13, 0x88});  // announces 5000 bytes
    CHECK(big.closed_within(2s));
    CHECK(r.lines_with({"\"reason\":\"query_too_large\""}).size() == 1);
  }
  {
    tcp_client many(r.port());
    for (std::uint16_t i = 0; i < 3; ++i) CHECK(read_reply(many.ask(make_query("www.wikidata.org", 1, i))).id == i);
    many.send(make_query("www.wikidata.org", 1, 4));
    CHECK_FALSE(many.recv(1s));  // closed after three queries
  }
  {
    // a slow client: the length prefix, then the message a byte at a time within the idle timeout
    tcp_client slow(r.port());
    const bytes q = tcp_client::framed(make_query("www.wikidata.org", 1, 9));
    for (std::size_t i = 0; i < q.size(); i += 8) {
      slow.send_raw(bytes(q.begin() + static_cast<std::ptrdiff_t>(i),
                          q.begin() + static_cast<std::ptrdiff_t>(std::min(q.size(), i + 8))));
      std::this_thread::sleep_for(20ms);
    }
    CHECK(read_reply(*slow.recv()).id == 9);
  }
}

TEST_CASE("dns responder: a flood is bounded: pending forwards capped, every datagram answered or counted",
          "[unit][proxy][dns_responder]") {
  silent_udp silent;
  dns_responder_limits limits;
  limits.max_pending_forwards = 4;
  running_responder r(responder_config({silent.server()}, 800ms), limits);
  udp_client udp(r.port());
  for (std::uint16_t i = 0; i < 10; ++i) udp.send(make_query("kube-dns.kube-system.svc.cluster.local", 1, i));
  int limited = 0, timed_out = 0;
  const auto start = steady::now();
  for (int i = 0; i < 10; ++i) {
    auto got = udp.recv(3s);
    REQUIRE(got);
    REQUIRE(read_reply(*got).rcode() == 2);
    (steady::now() - start < 500ms ? limited : timed_out)++;
  }
  CHECK(limited == 6);
  CHECK(timed_out == 4);
  const auto m = r.metrics();
  CHECK(metric(m, counter("deny", "forward_limit")) == 6);
  CHECK(metric(m, counter("deny", "forward_timeout")) == 4);

  // 3000 datagrams of garbage and queries in bursts: every one the kernel delivered is
  // counted once, the process keeps answering, and nothing piles up.
  std::mt19937 rng(12345);
  int sent = 0, answered = 0;
  for (int burst = 0; burst < 30; ++burst) {
    for (int i = 0; i < 100; ++i, ++sent) {
      bytes b = make_query("n" + std::to_string(sent) + ".example", 1, static_cast<std::uint16_t>(sent));
      if (i % 2) b.resize(12 + rng() % (b.size() - 12));  // truncated: FORMERR
      udp.send(b);
    }
    while (udp.recv(200ms)) ++answered;
  }
  CHECK(answered > 2500);  // loopback may drop a few under a burst; the responder never stops
  const auto after = r.metrics();
  CHECK(metric(after, counter("deny", "name_not_allowed")) + metric(after, counter("deny", "formerr")) == answered);
  CHECK(read_reply(udp.ask(make_query("www.wikidata.org", 1, 0xffff))).an == 1);
}

TEST_CASE("dns responder: each query is judged by the config current when it arrives", "[unit][proxy][dns_responder]") {
  running_responder r(responder_config({"127.0.0.1:9"}));
  udp_client udp(r.port());
  CHECK(read_reply(udp.ask(make_query("api.example.net", 1, 1))).rcode() == 3);
  auto cfg = responder_config({"127.0.0.1:9"});
  cfg.allowlist.push_back(entry("api.example.net"));
  cfg.proxy.dns.answer_ipv4 = asio::ip::make_address("10.0.0.53");
  r.set_config(cfg);
  const auto now = read_reply(udp.ask(make_query("api.example.net", 1, 2)));
  CHECK(now.addresses == std::vector<std::string>{"10.0.0.53"});
}

TEST_CASE("dns responder: stop closes both listeners; a bind failure names the address and the responder",
          "[unit][proxy][dns_responder]") {
  {
    running_responder r(responder_config({"127.0.0.1:9"}));
    udp_client udp(r.port());
    CHECK(read_reply(udp.ask(make_query("www.wikidata.org", 1, 1))).an == 1);
    tcp_client idle(r.port());
    r.stop();
    CHECK(idle.closed_within(2s));
    udp.send(make_query("www.wikidata.org", 1, 2));
    CHECK_FALSE(udp.recv(300ms));
    fd_guard s(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    const auto a = loopback(r.port());
    CHECK(::connect(s.fd, reinterpret_cast<const sockaddr*>(&a), sizeof a) != 0);
  }
  silent_udp taken;
  asio::io_context io;
  auto ctx = std::make_shared<egress::test::standalone_context>(io, responder_config({"127.0.0.1:9"}));
  dns_responder d(*ctx);
  try {
    d.start(asio::ip::make_address("127.0.0.1"), taken.port);
    FAIL("start() did not throw on a port in use");
  } catch (const std::runtime_error& e) {
    const std::string what = e.what();
    CHECK_THAT(what, Catch::Contains("dns responder") && Catch::Contains("127.0.0.1:" + std::to_string(taken.port)) &&
                         Catch::Contains("udp"));
  }
}
