#pragma once
/// Edge-triggered socket readiness for the proxy's data path, nested in an io_context.
///
/// Asio's reactor re-arms a descriptor with epoll_ctl(EPOLL_CTL_MOD) on every async_wait,
/// and sets O_NONBLOCK with ioctl(FIONBIO) on descriptors it did not open: measured, 9
/// epoll_ctl and 3 ioctl of the 32 system calls one CONNECT transaction cost the proxy
/// (strace -c under bench-loadgen rate), on a machine where a system call costs about 1 µs. `readiness`
/// owns one epoll(7) instance of its own in edge-triggered mode: a socket is added once
/// (EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET) and never re-armed; its owner remembers what
/// the kernel reported until a read or write says EAGAIN, so waiting costs nothing. The
/// epoll descriptor itself is watched by the io_context's reactor, so timers, signals,
/// c-ares and the admin listener keep running on the same thread, unchanged: each turn
/// costs one epoll_ctl plus one epoll_wait(2) for however many events it delivers.
///
/// Linux only (epoll). Single-threaded: every call on the io_context's thread.

#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/system/error_code.hpp>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

namespace egress::proxy {

/// What a `readiness` loop delivers events to.
class ready_listener {
public:
  /// `events` is the epoll(7) mask the kernel reported for the descriptor registered with
  /// `tag` (EPOLLIN, EPOLLOUT, EPOLLRDHUP, EPOLLERR, EPOLLHUP). Runs on the io_context's
  /// thread inside the loop's handler; it may add or remove any registration, its own
  /// included (events already fetched for a removed registration are then dropped).
  virtual void on_ready(int tag, std::uint32_t events) = 0;

protected:
  ~ready_listener() = default;
};

/// One edge-triggered epoll set whose events are delivered on an io_context.
class readiness {
public:
  /// Opens the epoll instance and starts watching it. Throws boost::system::system_error
  /// when epoll_create1(2) fails (EMFILE, ENOMEM).
  explicit readiness(boost::asio::io_context& io);
  ~readiness();
  readiness(const readiness&) = delete;
  readiness& operator=(const readiness&) = delete;

  /// Adds non-blocking descriptor `fd` (EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET): from now
  /// on `listener.on_ready(tag, events)` runs whenever its state changes, the first time
  /// at once if it is already readable or writable. Returns the registration's key
  /// (never 0), or 0 with `ec` set from epoll_ctl(2) (ENOMEM, ENOSPC: max_user_watches).
  /// The listener must outlive the registration.
  std::uint64_t add(int fd, ready_listener& listener, int tag, boost::system::error_code& ec);

  /// Delivers the events of registration `key` to `listener` with `tag` from now on,
  /// without a system call: hands a registered descriptor to a new owner (a dial's winning
  /// connection attempt to its connection). Returns false for 0 or a stale key.
  bool rebind(std::uint64_t key, ready_listener& listener, int tag) noexcept;

  /// Ends the registration `key` (0 and stale keys are ignored); call it right before
  /// close(2) on the descriptor, which takes it out of the epoll set (the proxy never
  /// duplicates these descriptors, so no copy keeps it there).
  void remove(std::uint64_t key) noexcept;

  /// Number of live registrations.
  std::size_t size() const noexcept { return live_; }

private:
  struct slot {
    ready_listener* listener = nullptr;
    int tag = 0;
    std::uint32_t generation = 1;  ///< bumped on remove(), so stale events miss
  };
  void arm();
  void deliver();

  boost::asio::posix::stream_descriptor epoll_;
  std::vector<slot> slots_;
  std::vector<std::uint32_t> free_;
  std::size_t live_ = 0;
  bool added_ = false;  ///< add() ran during this round of deliver()
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace egress::proxy
