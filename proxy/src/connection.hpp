#pragma once
/// One client connection of the data path: its two non-blocking sockets (client and
/// upstream) registered with the readiness loop, what the kernel last reported about each,
/// the recv/send primitives and the coroutine waits built on them, and the lazy deadline
/// watchdog.
///
/// No policy lives here: this file never parses a byte it moves and never decides what
/// may be sent. The relay's per-tunnel state is stored here (`tunnel_state`) but only
/// relay.cpp reads or writes it.

#include "context.hpp"

#include "egress/common/host_name.hpp"
#include "egress/proxy/handshake_watch.hpp"
#include "egress/proxy/log.hpp"
#include "egress/proxy/readiness.hpp"

#include <boost/asio/any_completion_handler.hpp>
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/system/error_code.hpp>

#include <algorithm>
#include <array>
#include <cstdint>
#include <exception>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace egress::proxy {

namespace asio = boost::asio;
using boost::system::error_code;

/// `co_await op(nothrow)` yields a tuple with the error code instead of throwing.
inline constexpr auto nothrow = asio::as_tuple(asio::use_awaitable);

/// A read buffer shared by every connection on this thread: reads land here only when a
/// socket is readable and are written straight through, so an idle tunnel holds no buffer
/// of its own. 64 KiB.
std::array<char, 64 * 1024>& relay_buffer();

/// One non-blocking TCP socket of a connection, registered with the readiness loop, and
/// what the kernel last reported about it. Edge-triggered: a flag stays set until a read
/// or write says EAGAIN (or a read comes back short, which means the socket is empty).
struct stream {
  int fd = -1;
  std::uint64_t key = 0;  ///< readiness registration
  bool readable = false;
  bool writable = false;
  bool hup = false;  ///< EPOLLRDHUP/EPOLLHUP/EPOLLERR seen: read on until recv(2) says 0 or fails (a
                     ///< failed connect says why in SO_ERROR)
  /// A session coroutine waiting for [0] readable or [1] writable. (Boost 1.81's
  /// any_completion_handler move-assignment is broken: only swap, construct and `= nullptr`.)
  asio::any_completion_handler<void(error_code)> waiter[2];

  /// Forgets everything but keeps the waiters' storage (empty by then).
  void reset(int new_fd) {
    fd = new_fd;
    key = 0;
    readable = writable = hup = false;
  }
};

/// recv(2) into [p, p + len). Sets `ec` to would_block (and clears `readable`), eof, or
/// the errno; a short read also clears `readable` unless the peer already half-closed.
std::size_t recv_some(stream& s, char* p, std::size_t len, error_code& ec);

/// send(2) of [p, p + len) without SIGPIPE. Sets `ec` to would_block (and clears
/// `writable`) or the errno; a partial write also clears `writable` (the buffer is full).
std::size_t send_some(stream& s, const char* p, std::size_t len, error_code& ec);

/// Completes when `s` is readable (`dir` 0) or writable (1), with operation_aborted when
/// the connection's I/O is cancelled or the socket closed. Costs no system call: the
/// readiness loop reports the change (connection::on_ready).
template <typename Token>
auto async_ready(const asio::any_io_executor& ex, stream& s, int dir, Token&& token) {
  return asio::async_initiate<Token, void(error_code)>(
      [&s, dir, ex](auto handler) {
        if (s.fd < 0 || (dir == 0 ? s.readable : s.writable)) {
          error_code ec = s.fd < 0 ? error_code(asio::error::operation_aborted) : error_code();
          asio::post(ex, [h = std::move(handler), ec]() mutable { std::move(h)(ec); });
          return;
        }
        asio::any_completion_handler<void(error_code)>(std::move(handler)).swap(s.waiter[dir]);
      },
      token);
}

/// A tunnel's TLS handshake while it is still watched (handshake_watch): the watch and
/// the client bytes it holds (fed, not yet released: a ClientHello in progress).
struct watched_handshake {
  handshake_watch watch;
  std::string held;
};

/// The relay's state of an established tunnel. Index d: 1 = client -> upstream,
/// 0 = upstream -> client. Read and written by relay.cpp only (the session creates
/// `hello` when it opens the tunnel).
struct tunnel_state {
  /// Set from the tunnel's opening until the handshake can carry no other ClientHello:
  /// both directions are copied (never spliced) and inspected meanwhile. Freed then, so an
  /// idle tunnel holds none of it.
  std::unique_ptr<watched_handshake> hello;
  bool ended = false;
  bool done[2] = {false, false};      ///< EOF read and passed on
  bool bulk[2] = {false, false};      ///< a read filled the whole buffer: splice from now on
  std::vector<char> pending[2];       ///< copied bytes the sink did not take yet
  std::array<int, 2> pipe[2] = {{-1, -1}, {-1, -1}};  ///< splice pipe per direction, only while bytes are in it
  std::size_t in_pipe[2] = {0, 0};                    ///< bytes spliced in and not yet out
};

/// One client connection: both sockets, the session's or the relay's state, and the
/// deadline watchdog's.
///
/// Deadlines are lazy: `due` is the current phase's deadline (or, while relaying,
/// last_activity + idle), and the timer is only ever pulled earlier. When it fires before
/// `due` the watchdog re-arms it; a phase change therefore costs no timer operation
/// unless it brings the deadline forward.
struct connection final : ready_listener, std::enable_shared_from_this<connection> {
  connection(proxy_context& o, asio::any_io_executor e) : owner(o), loop(o.loop()), ex(e), deadline(e) {
    deadline.expires_at(steady::time_point::max());
  }
  connection(const connection&) = delete;
  connection& operator=(const connection&) = delete;
  ~connection();

  proxy_context& owner;
  readiness& loop;
  asio::any_io_executor ex;
  stream client;    ///< readiness tag 0
  stream upstream;  ///< readiness tag 1
  asio::steady_timer deadline;
  steady::time_point due = steady::time_point::max();
  steady::time_point last_activity = steady::now();
  std::chrono::milliseconds idle{0};
  bool relaying = false;   ///< due = last_activity + idle
  bool expired = false;    ///< the current phase's deadline passed
  bool closed = false;
  bool between_requests = true;  ///< waiting for a request head: drain may close it
  std::uint64_t bytes_up = 0;
  std::uint64_t bytes_down = 0;

  std::uint64_t id = 0;      ///< the live-connection table's key, the log's `conn`
  bool tunnel = false;       ///< the relay owns both sockets (no coroutine frame is left then)
  decision_record rec;       ///< the tunnel's decision line, written when it ends
  steady::time_point start;  ///< when the tunnel's request head was complete
  /// While relaying: the tunnel ends at this time whatever moves (max_tunnel_lifetime_ms).
  steady::time_point lifetime_due = steady::time_point::max();
  /// Why the server ended the tunnel ("revoked", "max_lifetime"), when it did; the
  /// decision line's `end` then says so.
  std::string_view end_cause;
  /// What the tunnel was allowed for, so a reload can judge it again: the CONNECT host
  /// and port and the address dialled.
  common::host target;
  boost::asio::ip::address upstream_address;
  tunnel_state pump;  ///< the relay's state once `tunnel` is set

  /// Adopts a connected or connecting non-blocking socket as `s` (tag 0 client, 1
  /// upstream). On failure (epoll_ctl: ENOMEM, ENOSPC) the descriptor is closed.
  bool attach(stream& s, int fd, error_code& ec);

  void on_ready(int tag, std::uint32_t events) override;

  /// Sets the phase deadline to `t` (pulls the timer earlier if needed).
  void set_due(steady::time_point t) {
    due = t;
    expired = false;
    if (deadline.expiry() > t) deadline.expires_at(t);
  }
  /// A phase deadline `d` from now (reading a head, dialling, waiting for a ClientHello).
  void arm(std::chrono::milliseconds d) {
    relaying = false;
    set_due(steady::now() + d);
  }
  /// An idle deadline: expires when nothing moved for `d`.
  void arm_idle(std::chrono::milliseconds d) {
    relaying = true;
    idle = d;
    last_activity = steady::now();
    set_due(std::min(last_activity + d, lifetime_due));
  }
  /// Completes the session's pending waits with operation_aborted.
  void cancel_io() {
    cancel_waits(client);
    cancel_waits(upstream);
  }
  void cancel_waits(stream& s);
  /// Cancels the waits on `s`, leaves the readiness loop and closes its descriptor.
  void close_stream(stream& s);
  /// Closes both sockets and the watchdog; the session sees its waits aborted.
  void close() {
    closed = true;
    close_stream(client);
    close_stream(upstream);
    deadline.cancel();
  }
};

/// Starts the deadline watchdog of `c`: when the phase deadline passes (or, while
/// relaying, nothing moved for `idle`) a session sees its wait aborted and `expired` set;
/// a tunnel ends (relay_end). A completion handler rather than a coroutine, so an idle
/// tunnel keeps no frame for it.
void watch(std::shared_ptr<connection> c);

/// Reads what `s` has (at most `max` bytes, waiting until it is readable) and appends it
/// to `out`. The bytes land in the thread's relay buffer first (no suspension between the
/// recv and the append), so `out` grows by what arrived, not by a zero-filled chunk.
asio::awaitable<error_code> read_into(connection& c, stream& s, std::string& out, std::size_t max);

/// Writes all of `data` to `s`, waiting whenever its send buffer is full.
asio::awaitable<error_code> write_all(connection& c, stream& s, std::string_view data);

/// Completion handler for co_spawn: an exception escaping a coroutine is a bug; log it
/// rather than lose it (a bare `detached` would terminate silently).
struct log_exception {
  const char* where;
  void operator()(std::exception_ptr e) const;
};

}  // namespace egress::proxy
