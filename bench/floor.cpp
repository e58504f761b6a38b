// bench-floor: the least a CONNECT tunnel can cost on this machine, as a baseline for
// egress-proxy's CPU per transaction. NOT A PROXY: it checks nothing (no parsing beyond
// the end of the head, no allowlist, no DNS, no ClientHello, no address filter, no
// timeouts, no log) and always dials the one upstream it was given.
//
// It makes the same system calls a CONNECT transaction needs in egress-proxy (accept4,
// epoll_ctl ADD x2, socket, TCP_NODELAY, connect, recv/send of the head, the 200, the
// ClientHello and the payloads, shutdown, close x2) from one flat edge-triggered epoll
// loop, so `bench-loadgen rate` against it measures the kernel's share of a transaction
// (loopback TCP, wakeups) with next to no user space.
//
// Usage: bench-floor --upstream 127.0.0.1:PORT [--listen 127.0.0.1:0] [--seconds N]
// Prints {"floor":"127.0.0.1:PORT"} once listening; exits after N seconds (default 600).

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

namespace {

struct tunnel;

/// One socket of a tunnel; epoll's data.ptr points here.
struct end {
  tunnel* t;
  int fd = -1;
  bool eof = false;  ///< read 0 and passed the half-close on
};

struct tunnel {
  end client{this};
  end upstream{this};
  bool connecting = false;
  bool relaying = false;
  bool dead = false;  ///< closed; deleted after the current batch (events may still name it)
  std::string head;
};

sockaddr_in parse(const char* text) {
  std::string_view t(text);
  auto colon = t.rfind(':');
  if (colon == std::string_view::npos) {
    std::fprintf(stderr, "bench-floor: want ADDR:PORT, got %s\n", text);
    std::exit(2);
  }
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<std::uint16_t>(std::atoi(std::string(t.substr(colon + 1)).c_str())));
  if (::inet_pton(AF_INET, std::string(t.substr(0, colon)).c_str(), &a.sin_addr) != 1) {
    std::fprintf(stderr, "bench-floor: bad address %s\n", text);
    std::exit(2);
  }
  return a;
}

int ep = -1;
sockaddr_in upstream_addr{};
char buf[64 * 1024];

void add(end& e) {
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
  ev.data.ptr = &e;
  ::epoll_ctl(ep, EPOLL_CTL_ADD, e.fd, &ev);
}

std::vector<tunnel*> graveyard;

void finish(tunnel* t) {
  ::close(t->client.fd);
  if (t->upstream.fd >= 0) ::close(t->upstream.fd);
  t->dead = true;
  graveyard.push_back(t);
}

// Moves what `from` has to the other side; returns false when the tunnel is gone.
bool pump(tunnel* t, end& from) {
  end& to = &from == &t->client ? t->upstream : t->client;
  for (;;) {
    ssize_t n = ::recv(from.fd, buf, sizeof buf, 0);
    if (n < 0) {
      if (errno == EAGAIN) return true;
      finish(t);
      return false;
    }
    if (n == 0) {
      from.eof = true;
      if (to.eof) {
        finish(t);
        return false;
      }
      ::shutdown(to.fd, SHUT_WR);
      return true;
    }
    // Small payloads: the peer takes them at once (a short write would need a queue;
    // the benchmark's transactions never produce one).
    if (::send(to.fd, buf, static_cast<std::size_t>(n), MSG_NOSIGNAL) != n) {
      finish(t);
      return false;
    }
    if (static_cast<std::size_t>(n) < sizeof buf) return true;
  }
}

void on_event(end& e, std::uint32_t events) {
  tunnel* t = e.t;
  if (t->dead) return;
  if (t->relaying) {
    if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) pump(t, e);
    return;
  }
  if (&e == &t->client && !t->connecting) {
    ssize_t n = ::recv(e.fd, buf, sizeof buf, 0);
    if (n < 0 && errno == EAGAIN) return;
    if (n <= 0) return finish(t);
    t->head.append(buf, static_cast<std::size_t>(n));
    auto end_of_head = t->head.find("\r\n\r\n");
    if (end_of_head == std::string::npos) return;
    t->head.erase(0, end_of_head + 4);  // bytes after the head go upstream once connected
    t->upstream.fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    ::setsockopt(t->upstream.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (::connect(t->upstream.fd, reinterpret_cast<sockaddr*>(&upstream_addr), sizeof upstream_addr) != 0 &&
        errno != EINPROGRESS)
      return finish(t);
    t->connecting = true;
    add(t->upstream);
    return;
  }
  if (&e == &t->upstream && t->connecting && (events & EPOLLOUT)) {
    if (events & (EPOLLERR | EPOLLHUP)) return finish(t);
    static constexpr std::string_view ok = "HTTP/1.1 200 Connection established\r\n\r\n";
    ::send(t->client.fd, ok.data(), ok.size(), MSG_NOSIGNAL);
    if (!t->head.empty()) ::send(t->upstream.fd, t->head.data(), t->head.size(), MSG_NOSIGNAL);
    t->relaying = true;
    pump(t, t->client);  // a ClientHello that came with the head
  }
}

}  // namespace

int main(int argc, char** argv) {
  const char* listen_at = "127.0.0.1:0";
  const char* upstream = nullptr;
  int seconds = 600;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string_view a(argv[i]);
    if (a == "--listen") listen_at = argv[i + 1];
    else if (a == "--upstream") upstream = argv[i + 1];
    else if (a == "--seconds") seconds = std::atoi(argv[i + 1]);
  }
  if (!upstream) {
    std::fprintf(stderr, "usage: bench-floor --upstream ADDR:PORT [--listen ADDR:PORT] [--seconds N]\n");
    return 2;
  }
  upstream_addr = parse(upstream);
  sockaddr_in la = parse(listen_at);
  int l = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  int one = 1;
  ::setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  ::setsockopt(l, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);  // inherited by accepted sockets
  if (::bind(l, reinterpret_cast<sockaddr*>(&la), sizeof la) != 0 || ::listen(l, 4096) != 0) {
    std::perror("bench-floor: listen");
    return 1;
  }
  socklen_t len = sizeof la;
  ::getsockname(l, reinterpret_cast<sockaddr*>(&la), &len);
  char addr[INET_ADDRSTRLEN];
  ::inet_ntop(AF_INET, &la.sin_addr, addr, sizeof addr);
  std::printf("{\"floor\":\"%s:%u\"}\n", addr, ntohs(la.sin_port));
  std::fflush(stdout);

  ep = ::epoll_create1(EPOLL_CLOEXEC);
  epoll_event lev{};
  lev.events = EPOLLIN | EPOLLET;
  lev.data.ptr = nullptr;  // the listener
  ::epoll_ctl(ep, EPOLL_CTL_ADD, l, &lev);
  const auto stop = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
  epoll_event events[256];
  while (std::chrono::steady_clock::now() < stop) {
    int n = ::epoll_wait(ep, events, 256, 1000);
    for (int i = 0; i < n; ++i) {
      if (events[i].data.ptr == nullptr) {
        for (;;) {
          int fd = ::accept4(l, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
          if (fd < 0) break;
          auto* t = new tunnel;
          t->client.fd = fd;
          add(t->client);
        }
        continue;
      }
      on_event(*static_cast<end*>(events[i].data.ptr), events[i].events);
    }
    for (tunnel* t : graveyard) delete t;
    graveyard.clear();
  }
  return 0;
}
