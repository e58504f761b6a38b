// egress::proxy::resolver against a real dnsmasq on 127.0.0.1 (tests/support/dnsmasq.hpp),
// plus a scripted UDP stub for answers dnsmasq will not give (duplicate records, chosen
// TTLs, SERVFAIL, one family silent). All traffic stays on loopback; no fixed ports.

#include "egress/proxy/resolver.hpp"
#include "support/dnsmasq.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/udp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <catch2/catch.hpp>

#include <array>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace {

namespace asio = boost::asio;
using namespace std::chrono_literals;
using egress::proxy::dns_error;
using egress::proxy::resolve_answer;
using egress::proxy::resolver;
using egress::proxy::resolver_options;
using lookup_result = boost::system::result<resolve_answer>;
using steady = std::chrono::steady_clock;

asio::ip::address ip(const char* text) { return asio::ip::make_address(text); }

std::vector<std::string> texts(const std::vector<asio::ip::address>& addresses) {
  std::vector<std::string> out;
  for (const auto& a : addresses) out.push_back(a.to_string());
  return out;
}

resolver_options options_for(std::vector<std::string> servers, std::chrono::milliseconds timeout = 2s) {
  resolver_options o;
  o.servers = std::move(servers);
  o.timeout = timeout;
  return o;
}

// The zone most cases use. local=/test/ and local=/wikidata.org/ make unknown names there
// NXDOMAIN; names elsewhere get REFUSED (no upstream).
std::vector<std::string> standard_zone(int local_ttl = 60) {
  return {
      "local=/test/",
      "local=/wikidata.org/",
      "local-ttl=" + std::to_string(local_ttl),
      "host-record=www.wikidata.org,127.0.0.1",
      "host-record=v6only.test,::1",
      "host-record=both.test,127.0.0.2,::2",
      "host-record=both.test,127.0.0.3",
      "address=/ten.test/10.0.0.1",
      "cname=alias.test,both.test",
      "txt-record=txtonly.test,hello",
  };
}

// Runs `ioc` until `done()`; fails the test after `limit`.
template <class Done>
void run_until(asio::io_context& ioc, Done done, std::chrono::milliseconds limit = 10s) {
  const auto give_up = steady::now() + limit;
  while (!done()) {
    if (steady::now() >= give_up) FAIL("io_context did not finish within " << limit.count() << " ms");
    if (ioc.stopped()) ioc.restart();
    ioc.run_one_for(10ms);
  }
}

// Runs `ioc` for `d` of wall time (lets the resolver make progress in the background).
void run_for(asio::io_context& ioc, std::chrono::milliseconds d) {
  const auto until = steady::now() + d;
  while (steady::now() < until) {
    if (ioc.stopped()) ioc.restart();
    ioc.run_one_until(until);
  }
}

// One spawned resolve() and what it returned.
struct pending {
  std::optional<lookup_result> result;
  steady::time_point started = steady::now();
  steady::time_point finished;
  std::chrono::milliseconds elapsed() const {
    return std::chrono::duration_cast<std::chrono::milliseconds>(finished - started);
  }
};

// Completion handler of a spawned lookup: records the result; an escaped exception
// propagates out of io_context::run into the test.
struct record_result {
  std::shared_ptr<pending> p;
  void operator()(std::exception_ptr e, lookup_result r) const {
    if (e) std::rethrow_exception(e);
    p->finished = steady::now();
    p->result.emplace(std::move(r));
  }
};

std::shared_ptr<pending> spawn_resolve(asio::io_context& ioc, resolver& r, std::string name) {
  auto p = std::make_shared<pending>();
  asio::co_spawn(ioc, r.resolve(std::move(name)), record_result{p});
  return p;
}

lookup_result resolve_now(asio::io_context& ioc, resolver& r, std::string name) {
  auto p = spawn_resolve(ioc, r, std::move(name));
  run_until(ioc, [&] { return p->result.has_value(); });
  return *p->result;
}

dns_error error_of(const lookup_result& r) {
  REQUIRE_FALSE(r.has_value());
  REQUIRE(&r.error().category() == &egress::proxy::dns_error_category());
  return static_cast<dns_error>(r.error().value());
}

// A UDP socket on loopback that nobody reads: queries to it vanish without ICMP errors.
struct silent_server {
  explicit silent_server(asio::io_context& ioc)
      : socket(ioc, asio::ip::udp::endpoint(asio::ip::make_address_v4("127.0.0.1"), 0)) {}
  std::string address() const { return "127.0.0.1:" + std::to_string(socket.local_endpoint().port()); }
  asio::ip::udp::socket socket;
};

// ---------------------------------------------------------------------------------------
// Scripted DNS stub: answers each query type as told.

constexpr std::uint16_t type_a = 1;
constexpr std::uint16_t type_aaaa = 28;

struct stub_record {
  std::uint32_t ttl;
  const char* address;
};

struct stub_reply {
  bool drop = false;      // never answer
  std::uint8_t rcode = 0;  // 0 NOERROR, 2 SERVFAIL, 3 NXDOMAIN, 5 REFUSED
  std::vector<stub_record> records;
};

struct dns_stub {
  explicit dns_stub(asio::io_context& ioc)
      : socket(ioc, asio::ip::udp::endpoint(asio::ip::make_address_v4("127.0.0.1"), 0)) {}
  std::string address() const { return "127.0.0.1:" + std::to_string(socket.local_endpoint().port()); }
  asio::ip::udp::socket socket;
  std::map<std::uint16_t, stub_reply> replies;  // by query type; missing: REFUSED
  std::vector<std::uint16_t> seen;               // query types received
};

void put16(std::vector<unsigned char>& out, std::uint32_t v) {
  out.push_back(static_cast<unsigned char>((v >> 8) & 0xff));
  out.push_back(static_cast<unsigned char>(v & 0xff));
}

// RFC 1035 §4.1: header, the question copied, then answers named by a pointer to it.
std::vector<unsigned char> stub_answer(const unsigned char* query, std::size_t question_end, std::uint16_t qtype,
                                       const stub_reply& reply) {
  std::vector<unsigned char> out(query, query + question_end);
  out[2] = static_cast<unsigned char>(0x80 | (query[2] & 0x01));  // QR, RD copied
  out[3] = static_cast<unsigned char>(0x80 | reply.rcode);        // RA, RCODE
  std::size_t count = 0;
  std::vector<unsigned char> answers;
  for (const auto& rec : reply.records) {
    const auto a = ip(rec.address);
    if ((qtype == type_a) != a.is_v4()) continue;
    put16(answers, 0xc00c);
    put16(answers, qtype);
    put16(answers, 1);
    put16(answers, rec.ttl >> 16);
    put16(answers, rec.ttl & 0xffff);
    if (a.is_v4()) {
      auto b = a.to_v4().to_bytes();
      put16(answers, static_cast<std::uint32_t>(b.size()));
      answers.insert(answers.end(), b.begin(), b.end());
    } else {
      auto b = a.to_v6().to_bytes();
      put16(answers, static_cast<std::uint32_t>(b.size()));
      answers.insert(answers.end(), b.begin(), b.end());
    }
    ++count;
  }
  out[6] = 0;
  out[7] = static_cast<unsigned char>(count);
  out[8] = out[9] = out[10] = out[11] = 0;
  out.insert(out.end(), answers.begin(), answers.end());
  return out;
}

asio::awaitable<void> serve_stub(std::shared_ptr<dns_stub> stub) {
  std::array<unsigned char, 512> buf{};
  for (;;) {
    asio::ip::udp::endpoint from;
    auto [ec, n] = co_await stub->socket.async_receive_from(asio::buffer(buf), from,
                                                             asio::as_tuple(asio::use_awaitable));
    if (ec) co_return;
    std::size_t pos = 12;
    while (pos < n && buf[pos] != 0) pos += 1u + buf[pos];
    if (pos + 5 > n) continue;
    const auto qtype = static_cast<std::uint16_t>((buf[pos + 1] << 8) | buf[pos + 2]);
    stub->seen.push_back(qtype);
    stub_reply reply;
    reply.rcode = 5;
    if (auto it = stub->replies.find(qtype); it != stub->replies.end()) reply = it->second;
    if (reply.drop) continue;
    auto out = stub_answer(buf.data(), pos + 5, qtype, reply);
    co_await stub->socket.async_send_to(asio::buffer(out), from, asio::as_tuple(asio::use_awaitable));
  }
}

std::shared_ptr<dns_stub> start_stub(asio::io_context& ioc, std::map<std::uint16_t, stub_reply> replies) {
  auto stub = std::make_shared<dns_stub>(ioc);
  stub->replies = std::move(replies);
  asio::co_spawn(ioc, serve_stub(stub), [](std::exception_ptr e) {
    if (e) std::rethrow_exception(e);
  });
  return stub;
}

// Sets environment variables for its lifetime (c-ares reads them at channel init).
struct scoped_env {
  explicit scoped_env(std::vector<std::pair<std::string, std::string>> vars) {
    for (auto& [k, v] : vars) {
      const char* old = std::getenv(k.c_str());
      saved.emplace_back(k, old ? std::optional<std::string>(old) : std::nullopt);
      ::setenv(k.c_str(), v.c_str(), 1);
    }
  }
  ~scoped_env() {
    for (auto& [k, v] : saved) {
      if (v)
        ::setenv(k.c_str(), v->c_str(), 1);
      else
        ::unsetenv(k.c_str());
    }
  }
  std::vector<std::pair<std::string, std::optional<std::string>>> saved;
};

// A coroutine that owns its resolver, to destroy both with the io_context.
asio::awaitable<void> resolve_with_own_resolver(asio::any_io_executor ex, resolver_options o, std::string name,
                                                std::shared_ptr<bool> started) {
  resolver r(ex, std::move(o));
  *started = true;
  auto result = co_await r.resolve(std::move(name));
  (void)result;
}

// resolve() raced against a timer with the experimental awaitable operators; the loser is
// cancelled through its slot. (`r` by reference: the test keeps it alive.)
asio::awaitable<lookup_result> resolve_within(resolver& r, std::string name, std::chrono::milliseconds limit) {
  using namespace asio::experimental::awaitable_operators;
  asio::steady_timer timer(co_await asio::this_coro::executor, limit);
  auto first = co_await (r.resolve(std::move(name)) || timer.async_wait(asio::use_awaitable));
  if (first.index() == 0) co_return std::get<0>(std::move(first));
  co_return egress::proxy::make_error_code(dns_error::timeout);
}

}  // namespace

// ---------------------------------------------------------------------------------------

TEST_CASE("dns_error: stable reason words and error_code integration", "[unit][resolver]") {
  struct row {
    dns_error e;
    const char* reason;
  };
  const row rows[] = {
      {dns_error::not_found, "dns_not_found"}, {dns_error::timeout, "dns_timeout"},
      {dns_error::server_failure, "dns_failure"}, {dns_error::refused, "dns_refused"},
      {dns_error::bad_name, "dns_bad_name"},     {dns_error::cancelled, "dns_cancelled"},
      {dns_error::internal, "dns_internal"},
  };
  for (const auto& r : rows) {
    DYNAMIC_SECTION(r.reason) {
      CHECK(egress::proxy::dns_error_reason(r.e) == r.reason);
      boost::system::error_code ec = r.e;  // is_error_code_enum
      CHECK(ec.category().name() == std::string("egress.dns"));
      CHECK_FALSE(ec.message().empty());
      CHECK(ec == r.e);
    }
  }
  boost::system::error_code timeout = dns_error::timeout;
  CHECK(timeout == boost::system::errc::timed_out);
  boost::system::error_code cancelled = dns_error::cancelled;
  CHECK(cancelled == boost::system::errc::operation_canceled);
}

TEST_CASE("Server list syntax is checked at construction", "[unit][resolver]") {
  asio::io_context ioc;
  for (const char* good : {"127.0.0.1", "127.0.0.1:5353", "[::1]:53", "[::1]", "::1"}) {
    DYNAMIC_SECTION("accepted: " << good) { CHECK_NOTHROW(resolver(ioc.get_executor(), options_for({good}))); }
  }
  for (const char* bad : {"", "localhost", "127.0.0.1:0", "127.0.0.1:65536", "127.0.0.1:53x", "127.0.0.1:",
                          "[::1", "[::1]53", "[127.0.0.1]:53", "300.0.0.1", "[fe80::1%lo]:53"}) {
    DYNAMIC_SECTION("rejected: '" << bad << "'") {
      CHECK_THROWS_AS(resolver(ioc.get_executor(), options_for({bad})), std::runtime_error);
    }
  }
  SECTION("empty list: system resolv.conf") { CHECK_NOTHROW(resolver(ioc.get_executor(), resolver_options{})); }
  SECTION("bad budgets") {
    auto o = options_for({"127.0.0.1"});
    o.timeout = 0ms;
    CHECK_THROWS_AS(resolver(ioc.get_executor(), o), std::runtime_error);
    o = options_for({"127.0.0.1"});
    o.min_ttl = 10s;
    o.max_ttl = 5s;
    CHECK_THROWS_AS(resolver(ioc.get_executor(), o), std::runtime_error);
    o = options_for({"127.0.0.1"});
    o.max_cache_entries = 0;
    CHECK_THROWS_AS(resolver(ioc.get_executor(), o), std::runtime_error);
  }
}

TEST_CASE("A answers come first in answer order, then AAAA", "[unit][resolver]") {
  asio::io_context ioc;
  egress::test::dnsmasq dns(standard_zone());
  resolver r(ioc.get_executor(), options_for({dns.server()}));

  SECTION("name with two A and one AAAA record") {
    auto got = resolve_now(ioc, r, "both.test");
    REQUIRE(got.has_value());
    auto expected = dns.logged_answer("A", "both.test");
    REQUIRE(expected.size() == 2);
    expected.push_back("::2");
    CHECK(texts(got->addresses) == expected);
    CHECK(got->ttl == 60s);
    CHECK_FALSE(got->from_cache);
    CHECK_FALSE(got->from_hosts);
  }
  SECTION("A only (AAAA is NODATA)") {
    auto got = resolve_now(ioc, r, "www.wikidata.org");
    REQUIRE(got.has_value());
    CHECK(got->addresses == std::vector{ip("127.0.0.1")});
  }
  SECTION("A only (AAAA is NXDOMAIN, as dnsmasq answers for --address)") {
    auto got = resolve_now(ioc, r, "ten.test");
    REQUIRE(got.has_value());
    CHECK(got->addresses == std::vector{ip("10.0.0.1")});
  }
  SECTION("AAAA only") {
    auto got = resolve_now(ioc, r, "v6only.test");
    REQUIRE(got.has_value());
    CHECK(got->addresses == std::vector{ip("::1")});
  }
  SECTION("through a CNAME") {
    auto got = resolve_now(ioc, r, "alias.test");
    REQUIRE(got.has_value());
    REQUIRE(got->addresses.size() == 3);
    CHECK(got->addresses[0].is_v4());
    CHECK(got->addresses[1].is_v4());
    CHECK(got->addresses[2] == ip("::2"));
  }
  dns.require_running();
}

TEST_CASE("Duplicate records are dropped, order kept, smallest TTL wins", "[unit][resolver]") {
  asio::io_context ioc;
  auto stub = start_stub(ioc, {
                                  {type_a, {false, 0, {{300, "10.0.0.2"}, {40, "10.0.0.1"}, {90, "10.0.0.2"}}}},
                                  {type_aaaa, {false, 0, {{200, "2001:db8::2"}, {30, "2001:db8::1"}, {200, "2001:db8::2"}}}},
                              });
  resolver r(ioc.get_executor(), options_for({stub->address()}));
  auto got = resolve_now(ioc, r, "dup.test");
  REQUIRE(got.has_value());
  CHECK(texts(got->addresses) == std::vector<std::string>{"10.0.0.2", "10.0.0.1", "2001:db8::2", "2001:db8::1"});
  CHECK(got->ttl == 30s);
}

TEST_CASE("Server errors map to dns_error", "[unit][resolver]") {
  asio::io_context ioc;
  SECTION("SERVFAIL for both families: dns_failure, not cached") {
    auto stub = start_stub(ioc, {{type_a, {false, 2, {}}}, {type_aaaa, {false, 2, {}}}});
    resolver r(ioc.get_executor(), options_for({stub->address()}));
    CHECK(error_of(resolve_now(ioc, r, "broken.test")) == dns_error::server_failure);
    CHECK(r.cache_size() == 0);
  }
  SECTION("REFUSED: dns_refused") {
    auto stub = start_stub(ioc, {{type_a, {false, 5, {}}}, {type_aaaa, {false, 5, {}}}});
    resolver r(ioc.get_executor(), options_for({stub->address()}));
    CHECK(error_of(resolve_now(ioc, r, "refused.test")) == dns_error::refused);
  }
  SECTION("AAAA fails but A answers: success with A") {
    auto stub = start_stub(ioc, {{type_a, {false, 0, {{60, "10.0.0.9"}}}}, {type_aaaa, {false, 2, {}}}});
    resolver r(ioc.get_executor(), options_for({stub->address()}));
    auto got = resolve_now(ioc, r, "half.test");
    REQUIRE(got.has_value());
    CHECK(got->addresses == std::vector{ip("10.0.0.9")});
  }
  SECTION("dnsmasq REFUSED for a name it has no authority for") {
    egress::test::dnsmasq dns(standard_zone());
    resolver r(ioc.get_executor(), options_for({dns.server()}));
    CHECK(error_of(resolve_now(ioc, r, "example.com")) == dns_error::refused);
  }
}

TEST_CASE("NXDOMAIN and no data: dns_not_found, cached negatively for min_ttl", "[unit][resolver]") {
  asio::io_context ioc;
  egress::test::dnsmasq dns(standard_zone());
  resolver r(ioc.get_executor(), options_for({dns.server()}));

  SECTION("NXDOMAIN") {
    CHECK(error_of(resolve_now(ioc, r, "nx.test")) == dns_error::not_found);
    CHECK(r.cache_size() == 1);
    CHECK(error_of(resolve_now(ioc, r, "nx.test")) == dns_error::not_found);
    CHECK(dns.count_queries("A", "nx.test") == 1);
    dns.stop();
    CHECK(error_of(resolve_now(ioc, r, "nx.test")) == dns_error::not_found);
  }
  SECTION("name exists without A or AAAA records") {
    CHECK(error_of(resolve_now(ioc, r, "txtonly.test")) == dns_error::not_found);
    CHECK(error_of(resolve_now(ioc, r, "txtonly.test")) == dns_error::not_found);
    CHECK(dns.count_queries("AAAA", "txtonly.test") == 1);
  }
}

TEST_CASE("Silent server: dns_timeout within the budget", "[unit][resolver]") {
  asio::io_context ioc;
  silent_server silent(ioc);
  resolver r(ioc.get_executor(), options_for({silent.address()}, 300ms));
  auto p = spawn_resolve(ioc, r, "www.wikidata.org");
  run_until(ioc, [&] { return p->result.has_value(); });
  CHECK(error_of(*p->result) == dns_error::timeout);
  CHECK(p->elapsed() >= 250ms);
  CHECK(p->elapsed() <= 300ms + 400ms);  // slack for ASan on a shared machine
  CHECK(r.in_flight() == 0);
  CHECK(r.cache_size() == 0);  // timeouts are not cached
}

TEST_CASE("Nothing listening on the server port: dns_failure, quickly", "[unit][resolver]") {
  asio::io_context ioc;
  std::string closed;
  {
    silent_server gone(ioc);  // take a free port, then close it: ICMP port unreachable
    closed = gone.address();
  }
  resolver r(ioc.get_executor(), options_for({closed}, 2s));
  auto p = spawn_resolve(ioc, r, "www.wikidata.org");
  run_until(ioc, [&] { return p->result.has_value(); });
  CHECK(error_of(*p->result) == dns_error::server_failure);
  CHECK(p->elapsed() < 1s);
}

TEST_CASE("First server silent: the second answers within the budget", "[unit][resolver]") {
  asio::io_context ioc;
  silent_server silent(ioc);
  egress::test::dnsmasq dns(standard_zone());
  resolver r(ioc.get_executor(), options_for({silent.address(), dns.server()}, 1200ms));
  auto p = spawn_resolve(ioc, r, "www.wikidata.org");
  run_until(ioc, [&] { return p->result.has_value(); });
  REQUIRE(p->result->has_value());
  CHECK((*p->result)->addresses == std::vector{ip("127.0.0.1")});
  CHECK(p->elapsed() < 1200ms);
}

TEST_CASE("One family answers, the other never: its addresses at the deadline", "[unit][resolver]") {
  asio::io_context ioc;
  auto stub = start_stub(ioc, {{type_a, {false, 0, {{60, "10.0.0.7"}}}}, {type_aaaa, {true, 0, {}}}});
  resolver r(ioc.get_executor(), options_for({stub->address()}, 300ms));
  auto p = spawn_resolve(ioc, r, "slow6.test");
  run_until(ioc, [&] { return p->result.has_value(); });
  REQUIRE(p->result->has_value());
  CHECK((*p->result)->addresses == std::vector{ip("10.0.0.7")});
  CHECK(p->elapsed() >= 250ms);
  CHECK(p->elapsed() <= 700ms);
}

TEST_CASE("Cache: a second lookup is served from cache, even with dnsmasq gone", "[unit][resolver]") {
  asio::io_context ioc;
  egress::test::dnsmasq dns(standard_zone());
  resolver r(ioc.get_executor(), options_for({dns.server()}, 500ms));

  auto first = resolve_now(ioc, r, "both.test");
  REQUIRE(first.has_value());
  CHECK_FALSE(first->from_cache);
  CHECK(r.cache_size() == 1);

  auto second = resolve_now(ioc, r, "both.test");
  REQUIRE(second.has_value());
  CHECK(second->from_cache);
  CHECK(second->addresses == first->addresses);
  CHECK(second->ttl <= first->ttl);
  CHECK(second->ttl > 0s);
  CHECK(dns.count_queries("A", "both.test") == 1);

  CHECK(dns.stop() == 0);  // clean exit on SIGTERM
  auto third = resolve_now(ioc, r, "both.test");
  REQUIRE(third.has_value());
  CHECK(third->from_cache);
  CHECK(third->addresses == first->addresses);

  // An uncached name now fails: the answers above really came from the cache.
  CHECK_FALSE(resolve_now(ioc, r, "ten.test").has_value());
}

TEST_CASE("TTL is clamped between min_ttl and max_ttl", "[unit][resolver]") {
  asio::io_context ioc;
  egress::test::dnsmasq dns(standard_zone(100));
  struct row {
    const char* name;
    std::chrono::seconds min, max, expected;
  };
  const row rows[] = {
      {"within the clamp: the record's TTL", 5s, 300s, 100s},
      {"raised to min_ttl", 200s, 300s, 200s},
      {"lowered to max_ttl", 1s, 50s, 50s},
  };
  for (const auto& row : rows) {
    DYNAMIC_SECTION(row.name) {
      auto o = options_for({dns.server()});
      o.min_ttl = row.min;
      o.max_ttl = row.max;
      resolver r(ioc.get_executor(), o);
      auto got = resolve_now(ioc, r, "www.wikidata.org");
      REQUIRE(got.has_value());
      CHECK(got->ttl == row.expected);
      auto cached = resolve_now(ioc, r, "www.wikidata.org");
      REQUIRE(cached.has_value());
      CHECK(cached->from_cache);
      CHECK(cached->ttl <= row.expected);
      CHECK(cached->ttl >= row.expected - 1s);
    }
  }
}

TEST_CASE("A cache entry expires after its clamped TTL", "[unit][resolver]") {
  asio::io_context ioc;
  egress::test::dnsmasq dns(standard_zone(0));
  auto o = options_for({dns.server()});
  o.min_ttl = 1s;
  o.max_ttl = 1s;
  resolver r(ioc.get_executor(), o);
  auto first = resolve_now(ioc, r, "www.wikidata.org");
  REQUIRE(first.has_value());
  CHECK(first->ttl == 1s);  // TTL 0 raised to min_ttl
  CHECK(resolve_now(ioc, r, "www.wikidata.org")->from_cache);
  run_for(ioc, 1100ms);
  auto later = resolve_now(ioc, r, "www.wikidata.org");
  REQUIRE(later.has_value());
  CHECK_FALSE(later->from_cache);
  CHECK(dns.count_queries("A", "www.wikidata.org") == 2);
}

TEST_CASE("The cache is bounded by max_cache_entries", "[unit][resolver]") {
  asio::io_context ioc;
  egress::test::dnsmasq dns(standard_zone());
  auto o = options_for({dns.server()});
  o.max_cache_entries = 2;
  resolver r(ioc.get_executor(), o);
  for (const char* name : {"both.test", "ten.test", "v6only.test", "nx.test"}) (void)resolve_now(ioc, r, name);
  CHECK(r.cache_size() == 2);
}

TEST_CASE("Static hosts answer without DNS and never expire", "[unit][resolver]") {
  asio::io_context ioc;
  egress::test::dnsmasq dns(standard_zone());
  auto o = options_for({dns.server()});
  o.hosts = {
      {"Static.Test.", {ip("::9"), ip("10.9.9.9"), ip("10.9.9.9")}},  // normalised: lower case, no dot
      {"blocked.test", {}},
  };
  resolver r(ioc.get_executor(), o);

  auto got = resolve_now(ioc, r, "static.test");
  REQUIRE(got.has_value());
  CHECK(texts(got->addresses) == std::vector<std::string>{"10.9.9.9", "::9"});
  CHECK(got->from_hosts);
  CHECK_FALSE(got->from_cache);
  CHECK(got->ttl == o.max_ttl);
  CHECK(error_of(resolve_now(ioc, r, "blocked.test")) == dns_error::not_found);
  CHECK(dns.count_queries("A", "static.test") == 0);
  CHECK(dns.count_queries("A", "blocked.test") == 0);
  CHECK(r.cache_size() == 0);

  SECTION("set_hosts replaces them; hosts shadow cached answers") {
    REQUIRE(resolve_now(ioc, r, "www.wikidata.org").has_value());  // cached from DNS
    r.set_hosts({{"www.wikidata.org", {ip("10.1.1.1")}}});
    auto shadowed = resolve_now(ioc, r, "www.wikidata.org");
    REQUIRE(shadowed.has_value());
    CHECK(shadowed->addresses == std::vector{ip("10.1.1.1")});
    CHECK(shadowed->from_hosts);
    auto gone = resolve_now(ioc, r, "static.test");  // no longer static: asks DNS
    CHECK(error_of(gone) == dns_error::not_found);
    CHECK(dns.count_queries("A", "static.test") == 1);
  }
  SECTION("no DNS server needed at all") {
    silent_server silent(ioc);
    resolver offline(ioc.get_executor(), [&] {
      auto x = options_for({silent.address()}, 5s);
      x.hosts = o.hosts;
      return x;
    }());
    auto p = spawn_resolve(ioc, offline, "static.test");
    run_until(ioc, [&] { return p->result.has_value(); });
    REQUIRE(p->result->has_value());
    CHECK(p->elapsed() < 100ms);
  }
}

TEST_CASE("Names are sent as absolute names: no search list, no ndots", "[unit][resolver]") {
  // A Kubernetes pod in namespace "org": search "org.svc.cluster.local svc.cluster.local
  // cluster.local", ndots:5. A stub applying them would ask for the decoy names first.
  asio::io_context ioc;
  auto zone = standard_zone();
  zone.push_back("host-record=wikidata.org.org.svc.cluster.local,10.6.6.6");
  zone.push_back("host-record=wikidata.cluster.local,10.6.6.7");
  zone.push_back("host-record=org.svc.cluster.local,10.6.6.8");
  zone.push_back("host-record=wikidata.org,127.0.0.7");
  egress::test::dnsmasq dns(zone);
  std::optional<resolver> r;
  {
    scoped_env env({{"LOCALDOMAIN", "org.svc.cluster.local svc.cluster.local cluster.local"},
                    {"RES_OPTIONS", "ndots:5"}});
    r.emplace(ioc.get_executor(), options_for({dns.server()}));
  }

  auto got = resolve_now(ioc, *r, "wikidata.org");
  REQUIRE(got.has_value());
  CHECK(got->addresses == std::vector{ip("127.0.0.7")});

  // Single labels go out as they are; dnsmasq has no authority for them: REFUSED.
  CHECK(error_of(resolve_now(ioc, *r, "wikidata")) == dns_error::refused);
  CHECK(error_of(resolve_now(ioc, *r, "org")) == dns_error::refused);

  std::vector<std::string> names;
  for (const auto& q : dns.queries()) names.push_back(q.type + " " + q.name);
  CHECK(names == std::vector<std::string>{"A wikidata.org", "AAAA wikidata.org", "A wikidata", "AAAA wikidata",
                                          "A org", "AAAA org"});
}

TEST_CASE("Concurrent lookups of one name share one query", "[unit][resolver]") {
  asio::io_context ioc;
  egress::test::dnsmasq dns(standard_zone());
  resolver r(ioc.get_executor(), options_for({dns.server()}));
  auto a = spawn_resolve(ioc, r, "both.test");
  auto b = spawn_resolve(ioc, r, "both.test");
  auto c = spawn_resolve(ioc, r, "ten.test");
  run_until(ioc, [&] { return a->result && b->result && c->result; });
  REQUIRE(a->result->has_value());
  REQUIRE(b->result->has_value());
  CHECK((*a->result)->addresses == (*b->result)->addresses);
  CHECK_FALSE((*b->result)->from_cache);
  CHECK(dns.count_queries("A", "both.test") == 1);
  CHECK(dns.count_queries("AAAA", "both.test") == 1);
  CHECK(r.in_flight() == 0);
  CHECK(r.cache_size() == 2);
}

TEST_CASE("Malformed names: dns_bad_name before any query", "[unit][resolver]") {
  asio::io_context ioc;
  egress::test::dnsmasq dns(standard_zone());
  resolver r(ioc.get_executor(), options_for({dns.server()}));
  const std::string long_label(64, 'a');
  std::string long_name;
  while (long_name.size() < 254) long_name += "abcdefghi.";
  long_name += "test";
  for (const std::string& bad : {std::string(), std::string("."), std::string("a..test"), std::string(".a.test"),
                                 std::string("a.test."), std::string("UPPER.test"), std::string("sp ace.test"),
                                 std::string("back\\.slash"), std::string("nul\0.test", 9), long_label + ".test",
                                 long_name}) {
    DYNAMIC_SECTION("'" << bad << "'") { CHECK(error_of(resolve_now(ioc, r, bad)) == dns_error::bad_name); }
  }
  CHECK(dns.queries().empty());
  CHECK(resolve_now(ioc, r, std::string(63, 'a') + ".test").error() == dns_error::not_found);
}

TEST_CASE("A truncated UDP answer is retried over TCP", "[unit][resolver]") {
  asio::io_context ioc;
  auto zone = standard_zone();
  for (int i = 1; i <= 40; ++i) zone.push_back("host-record=big.test,10.1.0." + std::to_string(i));
  egress::test::dnsmasq dns(zone);
  resolver r(ioc.get_executor(), options_for({dns.server()}));
  auto p = spawn_resolve(ioc, r, "big.test");
  run_until(ioc, [&] { return p->result.has_value(); });
  REQUIRE(p->result->has_value());
  CHECK(texts((*p->result)->addresses) == dns.logged_answer("A", "big.test"));
  CHECK((*p->result)->addresses.size() == 40);
  CHECK(dns.count_queries("A", "big.test") == 2);  // UDP (TC set), then TCP
  CHECK(p->elapsed() < 1s);  // not stalled until a retransmission
}

TEST_CASE("Cancelling a caller: dns_cancelled at once, the lookup goes on", "[unit][resolver]") {
  asio::io_context ioc;
  auto stub = start_stub(ioc, {{type_a, {true, 0, {}}}, {type_aaaa, {true, 0, {}}}});
  resolver r(ioc.get_executor(), options_for({stub->address()}, 5s));

  SECTION("through a bound cancellation slot") {
    asio::cancellation_signal signal;
    auto p = std::make_shared<pending>();
    asio::co_spawn(ioc, r.resolve("slow.test"), asio::bind_cancellation_slot(signal.slot(), record_result{p}));
    auto other = spawn_resolve(ioc, r, "slow.test");
    run_for(ioc, 50ms);
    REQUIRE_FALSE(p->result);
    signal.emit(asio::cancellation_type::terminal);
    run_until(ioc, [&] { return p->result.has_value(); }, 1s);
    CHECK(error_of(*p->result) == dns_error::cancelled);
    CHECK(r.in_flight() == 1);
    CHECK_FALSE(other->result);  // the joined caller still waits
  }
  SECTION("through awaitable operator ||") {
    auto p = std::make_shared<pending>();
    asio::co_spawn(ioc, resolve_within(r, "slow.test", 100ms), record_result{p});
    run_until(ioc, [&] { return p->result.has_value(); }, 2s);
    CHECK(error_of(*p->result) == dns_error::timeout);  // the timer won
    CHECK(p->elapsed() < 1s);
    CHECK(r.in_flight() == 1);
  }
}

TEST_CASE("Destroying the resolver or the io_context with a lookup in flight", "[unit][resolver]") {
  SECTION("resolver destroyed: the caller gets dns_cancelled") {
    asio::io_context ioc;
    silent_server silent(ioc);
    auto r = std::make_unique<resolver>(ioc.get_executor(), options_for({silent.address()}, 5s));
    auto p = spawn_resolve(ioc, *r, "slow.test");
    auto q = spawn_resolve(ioc, *r, "other.test");
    run_for(ioc, 50ms);
    REQUIRE(r->in_flight() == 2);
    r.reset();
    run_until(ioc, [&] { return p->result && q->result; }, 1s);
    CHECK(error_of(*p->result) == dns_error::cancelled);
    CHECK(error_of(*q->result) == dns_error::cancelled);
  }
  SECTION("awaitable created, resolver destroyed, then awaited: dns_cancelled") {
    asio::io_context ioc;
    egress::test::dnsmasq dns(standard_zone());
    auto r = std::make_unique<resolver>(ioc.get_executor(), options_for({dns.server()}));
    auto lookup = r->resolve("both.test");
    r.reset();
    auto p = std::make_shared<pending>();
    asio::co_spawn(ioc, std::move(lookup), record_result{p});
    run_until(ioc, [&] { return p->result.has_value(); }, 1s);
    CHECK(error_of(*p->result) == dns_error::cancelled);
    CHECK(dns.queries().empty());
  }
  SECTION("resolver destroyed, then the io_context without running again") {
    auto p = std::make_shared<pending>();
    {
      asio::io_context ioc;
      silent_server silent(ioc);
      auto r = std::make_unique<resolver>(ioc.get_executor(), options_for({silent.address()}, 5s));
      p = spawn_resolve(ioc, *r, "slow.test");
      run_for(ioc, 50ms);
      r.reset();
    }
    CHECK_FALSE(p->result);  // its frame was destroyed, not resumed; LSan checks for leaks
  }
  SECTION("io_context destroyed while the resolver lives in the suspended coroutine") {
    auto started = std::make_shared<bool>(false);
    {
      asio::io_context ioc;
      silent_server silent(ioc);
      asio::co_spawn(ioc, resolve_with_own_resolver(ioc.get_executor(), options_for({silent.address()}, 5s),
                                                    "slow.test", started),
                     [](std::exception_ptr e) {
                       if (e) std::rethrow_exception(e);
                     });
      run_for(ioc, 50ms);
    }
    CHECK(*started);
  }
  SECTION("resolver destroyed while a c-ares answer is being delivered") {
    asio::io_context ioc;
    egress::test::dnsmasq dns(standard_zone());
    auto r = std::make_unique<resolver>(ioc.get_executor(), options_for({dns.server()}));
    auto p = spawn_resolve(ioc, *r, "both.test");
    // Step the loop one handler at a time until the answer has been read, then destroy.
    run_until(ioc, [&] { return r->in_flight() == 1; });
    while (r->in_flight() == 1 && !p->result) ioc.run_one_for(10ms);
    r.reset();
    run_until(ioc, [&] { return p->result.has_value(); }, 1s);
    // Either the answer arrived first or the destruction did; both are fine, neither leaks.
    if (!p->result->has_value()) CHECK(error_of(*p->result) == dns_error::cancelled);
  }
}
