#include "egress/proxy/readiness.hpp"

#include <boost/asio/error.hpp>
#include <boost/system/system_error.hpp>

#include <sys/epoll.h>
#include <unistd.h>

#include <array>
#include <cerrno>

namespace egress::proxy {

namespace {

int open_epoll() {
  int fd = ::epoll_create1(EPOLL_CLOEXEC);
  if (fd < 0)
    throw boost::system::system_error(boost::system::error_code(errno, boost::system::system_category()),
                                      "epoll_create1");
  return fd;
}

constexpr std::uint64_t make_key(std::size_t index, std::uint32_t generation) {
  return (static_cast<std::uint64_t>(generation) << 32) | static_cast<std::uint64_t>(index + 1);
}

}  // namespace

readiness::readiness(boost::asio::io_context& io) : epoll_(io, open_epoll()) { arm(); }

readiness::~readiness() { *alive_ = false; }

std::uint64_t readiness::add(int fd, ready_listener& listener, int tag, boost::system::error_code& ec) {
  std::size_t index;
  if (!free_.empty()) {
    index = free_.back();
    free_.pop_back();
  } else {
    index = slots_.size();
    slots_.emplace_back();
  }
  slot& s = slots_[index];
  const std::uint64_t key = make_key(index, s.generation);
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
  ev.data.u64 = key;
  if (::epoll_ctl(epoll_.native_handle(), EPOLL_CTL_ADD, fd, &ev) != 0) {
    ec.assign(errno, boost::system::system_category());
    free_.push_back(static_cast<std::uint32_t>(index));
    return 0;
  }
  s.listener = &listener;
  s.tag = tag;
  ++live_;
  added_ = true;
  ec.clear();
  return key;
}

bool readiness::rebind(std::uint64_t key, ready_listener& listener, int tag) noexcept {
  const std::uint64_t low = key & 0xffffffffu;
  if (low == 0 || low > slots_.size()) return false;
  slot& s = slots_[static_cast<std::size_t>(low - 1)];
  if (s.generation != static_cast<std::uint32_t>(key >> 32) || s.listener == nullptr) return false;
  s.listener = &listener;
  s.tag = tag;
  return true;
}

void readiness::remove(std::uint64_t key) noexcept {
  const std::uint64_t low = key & 0xffffffffu;
  if (low == 0 || low > slots_.size()) return;
  const std::size_t index = static_cast<std::size_t>(low - 1);
  slot& s = slots_[index];
  if (s.generation != static_cast<std::uint32_t>(key >> 32) || s.listener == nullptr) return;
  s.listener = nullptr;
  if (++s.generation == 0) s.generation = 1;  // keys are never 0
  free_.push_back(static_cast<std::uint32_t>(index));
  --live_;
}

void readiness::arm() {
  epoll_.async_wait(boost::asio::posix::stream_descriptor::wait_read,
                    [this, alive = std::weak_ptr<bool>(alive_)](const boost::system::error_code& ec) {
                      auto guard = alive.lock();
                      if (!guard || !*guard || ec == boost::asio::error::operation_aborted) return;
                      deliver();
                    });
}

void readiness::deliver() {
  // A turn takes what the kernel has ready. Registrations made while delivering (an
  // accepted client, a connecting upstream) are often ready at once: the next
  // epoll_wait(2) then takes their events in the same turn, instead of a round trip
  // through the io_context's reactor (re-arm plus its own epoll_wait). Bounded, so that
  // timers and DNS answers get their turn; a full batch leaves the rest for the next turn
  // (the re-arm below sees the epoll descriptor still readable).
  constexpr int max_rounds = 4;
  std::array<epoll_event, 256> events;
  auto alive = alive_;  // a listener may destroy this loop's owner; stop if it did
  for (int round = 0; round < max_rounds && *alive; ++round) {
    added_ = false;
    int n;
    do {
      n = ::epoll_wait(epoll_.native_handle(), events.data(), static_cast<int>(events.size()), 0);
    } while (n < 0 && errno == EINTR);
    for (int i = 0; i < n && *alive; ++i) {
      const std::uint64_t key = events[static_cast<std::size_t>(i)].data.u64;
      const std::size_t index = static_cast<std::size_t>((key & 0xffffffffu) - 1);
      if (index >= slots_.size()) continue;
      const slot s = slots_[index];
      if (s.listener == nullptr || s.generation != static_cast<std::uint32_t>(key >> 32)) continue;  // removed
      s.listener->on_ready(s.tag, events[static_cast<std::size_t>(i)].events);
    }
    if (n <= 0 || !*alive || !added_) break;
  }
  if (*alive) arm();
}

}  // namespace egress::proxy
