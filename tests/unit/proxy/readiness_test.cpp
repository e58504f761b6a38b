// egress::proxy::readiness with real sockets (AF_UNIX socketpairs) on a real io_context:
// delivery to the right listener and tag, edge-triggered reports, removal inside a batch
// (another registration's and the listener's own), slot reuse, failed add(), and the loop
// destroyed while its wait is pending or from inside a delivery. Every loop run is bounded
// by a deadline, so a broken loop fails the test instead of hanging it.

#include "egress/proxy/readiness.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/system/error_code.hpp>

#include <catch2/catch.hpp>

#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

namespace {

namespace asio = boost::asio;
using namespace std::chrono_literals;
using egress::proxy::readiness;
using egress::proxy::ready_listener;
using steady = std::chrono::steady_clock;

constexpr std::uint32_t in_bit = static_cast<std::uint32_t>(EPOLLIN);
constexpr std::uint32_t out_bit = static_cast<std::uint32_t>(EPOLLOUT);

bool has(std::uint32_t events, std::uint32_t bit) { return (events & bit) != 0; }

// A connected non-blocking AF_UNIX stream pair: `a` is registered, `b` is the peer.
struct socket_pair {
  int a = -1;
  int b = -1;
  socket_pair() {
    std::array<int, 2> fds{-1, -1};
    REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds.data()) == 0);
    a = fds[0];
    b = fds[1];
  }
  socket_pair(const socket_pair&) = delete;
  socket_pair& operator=(const socket_pair&) = delete;
  ~socket_pair() {
    close_a();
    if (b >= 0) ::close(b);
  }
  void close_a() {
    if (a >= 0) ::close(a);
    a = -1;
  }
  // Makes `a` readable: `n` bytes from the peer.
  void feed(std::size_t n = 1) {
    std::vector<char> data(n, 'x');
    REQUIRE(::send(b, data.data(), n, MSG_NOSIGNAL) == static_cast<ssize_t>(n));
  }
  // Reads everything `a` holds; returns the byte count.
  std::size_t drain() {
    std::size_t total = 0;
    std::array<char, 4096> buf;
    for (;;) {
      ssize_t n = ::recv(a, buf.data(), buf.size(), 0);
      if (n <= 0) return total;
      total += static_cast<std::size_t>(n);
    }
  }
};

struct delivery {
  int tag;
  std::uint32_t events;
};

// Records every on_ready; `hook` (when set) runs after recording.
struct recorder final : ready_listener {
  std::vector<delivery> seen;
  std::function<void(int, std::uint32_t)> hook;
  void on_ready(int tag, std::uint32_t events) override {
    seen.push_back({tag, events});
    if (hook) hook(tag, events);
  }
  std::size_t count(int tag) const {
    std::size_t n = 0;
    for (const auto& d : seen) n += d.tag == tag ? 1u : 0u;
    return n;
  }
  std::size_t count(int tag, std::uint32_t bit) const {
    std::size_t n = 0;
    for (const auto& d : seen) n += d.tag == tag && has(d.events, bit) ? 1u : 0u;
    return n;
  }
};

// Runs handlers until `done()`; fails the test after `limit`.
template <class Done>
void run_until(asio::io_context& io, Done done, std::chrono::milliseconds limit = 2s) {
  const auto give_up = steady::now() + limit;
  while (!done()) {
    if (steady::now() >= give_up) FAIL("the readiness loop did not deliver within " << limit.count() << " ms");
    if (io.stopped()) io.restart();
    io.run_one_for(10ms);
  }
}

// Runs the io_context for `d` of wall time: whatever is going to be delivered is.
void settle(asio::io_context& io, std::chrono::milliseconds d = 100ms) {
  const auto until = steady::now() + d;
  while (steady::now() < until) {
    if (io.stopped()) io.restart();
    io.run_one_until(until);
  }
}

// True when the io_context has no outstanding work left (poll() stops it then).
bool no_work_left(asio::io_context& io) {
  io.restart();
  io.poll();
  return io.stopped();
}

std::uint64_t add_ok(readiness& r, int fd, ready_listener& l, int tag) {
  boost::system::error_code ec;
  std::uint64_t key = r.add(fd, l, tag, ec);
  INFO("add(" << fd << ") failed: " << ec.message());
  REQUIRE_FALSE(ec);
  REQUIRE(key != 0);
  return key;
}

TEST_CASE("readiness: a readable socket is reported with EPOLLIN to its listener and tag", "[unit][readiness]") {
  asio::io_context io;
  readiness loop(io);
  socket_pair p1, p2;
  recorder l1, l2;
  add_ok(loop, p1.a, l1, 7);
  add_ok(loop, p2.a, l2, 9);
  CHECK(loop.size() == 2);

  // Fresh sockets are writable: the first report comes at once, EPOLLOUT without EPOLLIN.
  run_until(io, [&] { return !l1.seen.empty() && !l2.seen.empty(); });
  settle(io, 50ms);
  REQUIRE(l1.seen.size() == 1);
  REQUIRE(l2.seen.size() == 1);
  CHECK(l1.seen[0].tag == 7);
  CHECK(l2.seen[0].tag == 9);
  CHECK(has(l1.seen[0].events, out_bit));
  CHECK_FALSE(has(l1.seen[0].events, in_bit));
  l1.seen.clear();
  l2.seen.clear();

  p1.feed();
  run_until(io, [&] { return !l1.seen.empty(); });
  settle(io, 50ms);
  REQUIRE(l1.seen.size() == 1);
  CHECK(l1.seen[0].tag == 7);
  CHECK(has(l1.seen[0].events, in_bit));
  CHECK(l2.seen.empty());  // the other registration saw nothing

  p2.feed();
  run_until(io, [&] { return !l2.seen.empty(); });
  settle(io, 50ms);
  REQUIRE(l2.seen.size() == 1);
  CHECK(l2.seen[0].tag == 9);
  CHECK(has(l2.seen[0].events, in_bit));
  CHECK(l1.seen.size() == 1);
}

TEST_CASE("readiness: a socket already readable when added is reported on the first turn", "[unit][readiness]") {
  asio::io_context io;
  readiness loop(io);
  socket_pair p;
  p.feed(5);
  recorder l;
  add_ok(loop, p.a, l, 3);
  // One handler of the io_context: the loop's wait completes and delivers.
  CHECK(io.run_one_for(2s) == 1);
  REQUIRE(l.seen.size() == 1);
  CHECK(l.seen[0].tag == 3);
  CHECK(has(l.seen[0].events, in_bit));
  CHECK(has(l.seen[0].events, out_bit));
  CHECK(p.drain() == 5);
}

TEST_CASE("readiness: edge-triggered, no new report without new data, a new write brings one", "[unit][readiness]") {
  asio::io_context io;
  readiness loop(io);
  socket_pair p;
  recorder l;
  p.feed();
  add_ok(loop, p.a, l, 1);
  run_until(io, [&] { return l.count(1, in_bit) == 1; });

  // The byte stays unread: level-triggered would report it again on every turn.
  settle(io, 150ms);
  CHECK(l.seen.size() == 1);

  p.feed();
  run_until(io, [&] { return l.count(1, in_bit) == 2; });
  settle(io, 50ms);
  CHECK(l.seen.size() == 2);

  // Reading makes no new edge either; the next write does.
  CHECK(p.drain() == 2);
  settle(io, 100ms);
  CHECK(l.seen.size() == 2);
  p.feed();
  run_until(io, [&] { return l.count(1, in_bit) == 3; });
  CHECK(l.seen.size() == 3);
}

TEST_CASE("readiness: remove() inside another registration's on_ready drops its fetched event", "[unit][readiness]") {
  asio::io_context io;
  readiness loop(io);
  socket_pair p1, p2;
  p1.feed();
  p2.feed();  // both ready before the loop runs: one epoll_wait fetches both events
  recorder l;
  std::uint64_t keys[3] = {0, 0, 0};
  socket_pair* pairs[3] = {nullptr, &p1, &p2};
  int first = 0;
  l.hook = [&](int tag, std::uint32_t) {
    if (first != 0) return;
    first = tag;
    const int other = tag == 1 ? 2 : 1;
    loop.remove(keys[other]);  // right before close(2), as the proxy does
    pairs[other]->close_a();
  };
  keys[1] = add_ok(loop, p1.a, l, 1);
  keys[2] = add_ok(loop, p2.a, l, 2);

  run_until(io, [&] { return first != 0; });
  settle(io, 150ms);
  REQUIRE(first != 0);
  const int other = first == 1 ? 2 : 1;
  CHECK(l.count(first) == 1);
  CHECK(l.count(other) == 0);  // the removed registration's event never arrived
  CHECK(l.seen.size() == 1);
  CHECK(loop.size() == 1);
}

TEST_CASE("readiness: a registration reusing a slot removed in the same batch gets no stale event",
          "[unit][readiness]") {
  asio::io_context io;
  readiness loop(io);
  socket_pair p1, p2, p3;
  p1.feed();
  p2.feed();
  p3.feed();
  recorder l;
  std::uint64_t keys[3] = {0, 0, 0};
  socket_pair* pairs[3] = {nullptr, &p1, &p2};
  int first = 0;
  std::uint64_t reused = 0;
  l.hook = [&](int tag, std::uint32_t) {
    if (first != 0) return;
    first = tag;
    const int other = tag == 1 ? 2 : 1;
    loop.remove(keys[other]);
    pairs[other]->close_a();
    reused = add_ok(loop, p3.a, l, 3);  // takes the slot just freed
  };
  keys[1] = add_ok(loop, p1.a, l, 1);
  keys[2] = add_ok(loop, p2.a, l, 2);

  run_until(io, [&] { return l.count(3) >= 1; });
  settle(io, 150ms);
  const int other = first == 1 ? 2 : 1;
  CHECK(reused != keys[other]);
  CHECK(l.count(other) == 0);
  // p3 was readable when added: exactly one report, its own, on a later turn. The stale
  // event of the removed registration in the same slot would be a second one.
  CHECK(l.count(3) == 1);
  CHECK(loop.size() == 2);
}

TEST_CASE("readiness: a listener may remove and close its own registration, and be destroyed, inside on_ready",
          "[unit][readiness]") {
  asio::io_context io;
  readiness loop(io);

  // Owns two sockets, like a proxy connection (client and upstream); on its first event it
  // removes and closes both and destroys itself. The second socket's event, fetched in the
  // same batch, must not reach the destroyed object (ASan reports a use after free).
  struct self_removing final : ready_listener {
    readiness& loop;
    socket_pair& p1;
    socket_pair& p2;
    std::uint64_t k1 = 0, k2 = 0;
    int& calls;
    std::unique_ptr<self_removing>& owner;
    self_removing(readiness& r, socket_pair& a, socket_pair& b, int& c, std::unique_ptr<self_removing>& o)
        : loop(r), p1(a), p2(b), calls(c), owner(o) {}
    void on_ready(int, std::uint32_t) override {
      ++calls;
      loop.remove(k1);
      p1.close_a();
      loop.remove(k2);
      p2.close_a();
      owner.reset();  // destroys *this
    }
  };

  socket_pair p1, p2;
  p1.feed();
  p2.feed();
  int calls = 0;
  std::unique_ptr<self_removing> conn;
  conn = std::make_unique<self_removing>(loop, p1, p2, calls, conn);
  conn->k1 = add_ok(loop, p1.a, *conn, 1);
  conn->k2 = add_ok(loop, p2.a, *conn, 2);
  REQUIRE(loop.size() == 2);

  run_until(io, [&] { return calls > 0; });
  settle(io, 100ms);
  CHECK(calls == 1);
  CHECK(conn == nullptr);
  CHECK(loop.size() == 0);

  // The loop goes on for others.
  socket_pair p3;
  recorder l;
  add_ok(loop, p3.a, l, 5);
  p3.feed();
  run_until(io, [&] { return l.count(5, in_bit) >= 1; });
  CHECK(calls == 1);
}

TEST_CASE("readiness: a listener removing only itself keeps getting nothing, the loop keeps working",
          "[unit][readiness]") {
  asio::io_context io;
  readiness loop(io);
  socket_pair p;
  recorder l;
  std::uint64_t key = 0;
  l.hook = [&](int, std::uint32_t) {
    loop.remove(key);
    loop.remove(key);  // twice: the second is a stale key
    p.close_a();
  };
  p.feed();
  key = add_ok(loop, p.a, l, 4);
  run_until(io, [&] { return !l.seen.empty(); });
  CHECK(loop.size() == 0);
  // The peer's writes now fail; nothing more is delivered for the closed socket.
  char byte = 'y';
  CHECK(::send(p.b, &byte, 1, MSG_NOSIGNAL) == -1);
  settle(io, 100ms);
  CHECK(l.seen.size() == 1);

  socket_pair q;
  recorder m;
  add_ok(loop, q.a, m, 6);
  q.feed();
  run_until(io, [&] { return m.count(6, in_bit) >= 1; });
  CHECK(l.seen.size() == 1);
}

TEST_CASE("readiness: slot reuse gives a new key and a stale key's removal is a no-op", "[unit][readiness]") {
  asio::io_context io;
  readiness loop(io);
  socket_pair p1, p2;
  recorder l;
  const std::uint64_t k1 = add_ok(loop, p1.a, l, 1);
  REQUIRE(loop.size() == 1);
  loop.remove(k1);
  p1.close_a();
  CHECK(loop.size() == 0);

  const std::uint64_t k2 = add_ok(loop, p2.a, l, 2);
  CHECK(k2 != k1);
  CHECK(loop.size() == 1);

  loop.remove(k1);  // stale: must not end k2, which lives in the same slot
  CHECK(loop.size() == 1);
  loop.remove(0);
  loop.remove(0x0000000700000063ull);  // a slot that does not exist
  loop.remove(k2 + (std::uint64_t{1} << 32));  // right slot, wrong (future) generation
  CHECK(loop.size() == 1);

  run_until(io, [&] { return l.count(2) >= 1; });
  l.seen.clear();
  p2.feed();
  run_until(io, [&] { return l.count(2, in_bit) >= 1; });
  CHECK(l.count(1) == 0);

  loop.remove(k2);
  CHECK(loop.size() == 0);
  loop.remove(k2);
  CHECK(loop.size() == 0);
}

TEST_CASE("readiness: add() of a bad descriptor returns 0 with the errno, and changes nothing", "[unit][readiness]") {
  asio::io_context io;
  readiness loop(io);
  recorder l;
  boost::system::error_code ec;

  CHECK(loop.add(-1, l, 1, ec) == 0);
  CHECK(ec == boost::system::error_code(EBADF, boost::system::system_category()));
  CHECK(loop.size() == 0);

  // A regular file cannot be polled: EPERM.
  int file = ::open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
  REQUIRE(file >= 0);
  ec.clear();
  CHECK(loop.add(file, l, 2, ec) == 0);
  CHECK(ec == boost::system::error_code(EPERM, boost::system::system_category()));
  ::close(file);
  CHECK(loop.size() == 0);

  // The same socket twice: EEXIST, and the first registration is untouched.
  socket_pair p;
  const std::uint64_t key = add_ok(loop, p.a, l, 3);
  ec.clear();
  CHECK(loop.add(p.a, l, 4, ec) == 0);
  CHECK(ec == boost::system::error_code(EEXIST, boost::system::system_category()));
  CHECK(loop.size() == 1);

  run_until(io, [&] { return l.count(3) >= 1; });
  p.feed();
  run_until(io, [&] { return l.count(3, in_bit) >= 1; });
  CHECK(l.count(1) == 0);
  CHECK(l.count(2) == 0);
  CHECK(l.count(4) == 0);

  // A later add() works, and removing the first leaves exactly one.
  socket_pair q;
  const std::uint64_t key2 = add_ok(loop, q.a, l, 5);
  CHECK(key2 != key);
  CHECK(loop.size() == 2);
  loop.remove(key);
  CHECK(loop.size() == 1);
}

TEST_CASE("readiness: more ready sockets than one batch are all delivered, each once", "[unit][readiness]") {
  asio::io_context io;
  readiness loop(io);
  constexpr int n = 300;  // the loop fetches 256 events per turn
  std::vector<std::unique_ptr<socket_pair>> pairs;
  recorder l;
  for (int i = 0; i < n; ++i) {
    pairs.push_back(std::make_unique<socket_pair>());
    pairs.back()->feed();
    add_ok(loop, pairs.back()->a, l, i);
  }
  run_until(io, [&] { return l.seen.size() >= static_cast<std::size_t>(n); });
  settle(io, 100ms);
  CHECK(l.seen.size() == static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i) {
    INFO("tag " << i);
    CHECK(l.count(i, in_bit) == 1);
  }
}

TEST_CASE("readiness: destroyed while its wait is pending in the io_context", "[unit][readiness]") {
  asio::io_context io;
  socket_pair p;
  recorder l;
  {
    readiness loop(io);
    add_ok(loop, p.a, l, 1);
    run_until(io, [&] { return !l.seen.empty(); });  // the wait is armed again after this
    l.seen.clear();
    settle(io, 20ms);
  }  // loop destroyed with its async_wait outstanding
  p.feed();
  // The aborted wait completes now; it must not touch the destroyed loop (ASan).
  settle(io, 100ms);
  CHECK(l.seen.empty());
  CHECK(no_work_left(io));  // nothing of the loop is left in the io_context
}

TEST_CASE("readiness: destroyed after the reactor saw its descriptor ready, before the wait completed",
          "[unit][readiness]") {
  asio::io_context io;
  socket_pair p;
  recorder l;
  auto loop = std::make_unique<readiness>(io);
  add_ok(*loop, p.a, l, 1);
  p.feed();
  // The io_context's queue is [reactor task, this handler]: the reactor task finds the
  // epoll descriptor readable and queues it behind this handler, which destroys the loop
  // first. The wait then completes (aborted) for a loop that is gone and must notice
  // (ASan reports a use after scope or free otherwise); nothing is delivered.
  bool destroyed = false;
  asio::post(io, [&] {
    loop.reset();
    destroyed = true;
  });
  settle(io, 100ms);
  CHECK(destroyed);
  CHECK(l.seen.empty());
  p.feed();
  settle(io, 100ms);
  CHECK(l.seen.empty());
  CHECK(no_work_left(io));
}

TEST_CASE("readiness: a listener destroying the loop inside on_ready stops the batch", "[unit][readiness]") {
  asio::io_context io;
  auto loop = std::make_unique<readiness>(io);
  socket_pair p1, p2;
  p1.feed();
  p2.feed();
  recorder l;
  l.hook = [&](int, std::uint32_t) { loop.reset(); };
  add_ok(*loop, p1.a, l, 1);
  add_ok(*loop, p2.a, l, 2);
  run_until(io, [&] { return !l.seen.empty(); });
  settle(io, 100ms);
  CHECK(loop == nullptr);
  CHECK(l.seen.size() == 1);  // the second fetched event died with the loop
  CHECK(no_work_left(io));  // and the loop did not arm its wait again
}

}  // namespace

TEST_CASE("readiness: rebind() hands a registration to another listener and tag without a new add", "[unit][readiness]") {
  asio::io_context io;
  readiness loop(io);
  socket_pair p;
  recorder first, second;
  std::uint64_t key = add_ok(loop, p.a, first, 1);
  run_until(io, [&] { return !first.seen.empty(); });  // the initial EPOLLOUT
  REQUIRE(loop.rebind(key, second, 2));
  CHECK(loop.size() == 1);
  p.feed();
  run_until(io, [&] { return second.count(2, in_bit) == 1; });
  settle(io, 50ms);
  CHECK(first.count(1, in_bit) == 0);
  CHECK(second.seen.size() == 1);
  // A stale key (removed) or 0 is refused and changes nothing.
  loop.remove(key);
  CHECK_FALSE(loop.rebind(key, first, 1));
  CHECK_FALSE(loop.rebind(0, first, 1));
  CHECK(loop.size() == 0);
}
