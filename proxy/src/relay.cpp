// The established-tunnel pump: copy vs splice, the per-thread pipe pool, backpressure,
// half-close and end-of-tunnel accounting (see relay.hpp). Never parses, never dials.
#include "relay.hpp"

#include <boost/asio/post.hpp>

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <optional>
#include <span>

namespace egress::proxy {
namespace {

/// Pipes for splice(2), per thread. A tunnel direction takes one only while bytes are in
/// flight between its sockets and gives it back as soon as it is empty, so idle tunnels
/// hold none (a tunnel already costs two descriptors against the process's limit).
class pipe_pool {
public:
  static constexpr int capacity_bytes = 256 * 1024;
  pipe_pool() = default;
  pipe_pool(const pipe_pool&) = delete;
  pipe_pool& operator=(const pipe_pool&) = delete;
  ~pipe_pool() {
    for (auto p : free_) close_pipe(p);
  }
  /// A pipe, or {-1, -1} when none can be made (EMFILE): callers fall back to copying.
  std::array<int, 2> take() {
    if (!free_.empty()) {
      auto p = free_.back();
      free_.pop_back();
      return p;
    }
    std::array<int, 2> p{-1, -1};
    if (::pipe2(p.data(), O_NONBLOCK | O_CLOEXEC) != 0) return {-1, -1};
    ::fcntl(p[1], F_SETPIPE_SZ, capacity_bytes);  // best effort; 64 KiB otherwise
    return p;
  }
  /// Returns an empty pipe (a pipe with bytes left in it is closed instead).
  void give(std::array<int, 2> p, bool empty) {
    if (empty && free_.size() < 64) free_.push_back(p);
    else close_pipe(p);
  }

private:
  static void close_pipe(std::array<int, 2> p) {
    ::close(p[0]);
    ::close(p[1]);
  }
  std::vector<std::array<int, 2>> free_;
};

pipe_pool& pipes() {
  thread_local pipe_pool pool;
  return pool;
}

enum class flushed { empty, blocked, failed };

// Writes what direction d still holds (copied bytes, then the pipe) to its sink.
flushed flush(connection& c, int d) {
  stream& to = d ? c.upstream : c.client;
  auto& t = c.pump;
  auto& pending = t.pending[d];
  if (pending.empty() && t.in_pipe[d] == 0) return flushed::empty;
  if (!to.writable) return flushed::blocked;  // its EPOLLOUT brings the relay back
  if (!pending.empty()) {
    error_code ec;
    std::size_t w = send_some(to, pending.data(), pending.size(), ec);
    if (ec && ec != asio::error::would_block) return flushed::failed;
    pending.erase(pending.begin(), pending.begin() + static_cast<std::ptrdiff_t>(w));
    if (!pending.empty()) return flushed::blocked;
    std::vector<char>().swap(pending);
  }
  while (t.in_pipe[d] > 0) {
    ssize_t w = ::splice(t.pipe[d][0], nullptr, to.fd, nullptr, t.in_pipe[d], SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      to.writable = false;
      return flushed::blocked;
    }
    if (w <= 0) return flushed::failed;
    t.in_pipe[d] -= static_cast<std::size_t>(w);
  }
  return flushed::empty;
}

void release_pipe(tunnel_state& t, int d) noexcept {
  if (t.pipe[d][0] < 0) return;
  pipes().give(t.pipe[d], t.in_pipe[d] == 0);
  t.pipe[d] = {-1, -1};
  t.in_pipe[d] = 0;
}

// Direction d read EOF: pass the half-close on; the other direction goes on. When it is
// already done, the tunnel ends.
void relay_eof(proxy_context& ctx, const std::shared_ptr<connection>& c, int d) {
  c->pump.done[d] = true;
  release_pipe(c->pump, d);
  if (c->pump.done[1 - d]) return relay_end(ctx, c);
  stream& to = d ? c->upstream : c->client;
  ::shutdown(to.fd, SHUT_WR);
}

// The handshake watch refused a byte stream: nothing more moves either way; the decision
// line says deny with the watch's reason (end "refused").
void refuse(proxy_context& ctx, const std::shared_ptr<connection>& c, std::string_view reason) {
  c->rec.allowed = false;
  c->rec.reason = reason;
  c->end_cause = "refused";
  relay_end(ctx, c);
}

// Direction d read `n` bytes into `buf` while the handshake is watched: the watch sees
// them first; returns how many bytes of `out` (which is `buf` itself upstream->client, the
// held bytes client->upstream) may go on now, or nullopt when the tunnel was refused.
std::optional<std::string_view> watched(proxy_context& ctx, const std::shared_ptr<connection>& c, int d, const char* buf,
                                        std::size_t n) {
  auto& h = *c->pump.hello;
  auto bytes = std::span(reinterpret_cast<const std::uint8_t*>(buf), n);
  if (d == 0) {
    if (auto why = h.watch.feed_server(bytes); !why.empty()) {
      refuse(ctx, c, why);
      return std::nullopt;
    }
    return std::string_view(buf, n);
  }
  auto step = h.watch.feed_client(bytes);
  if (!step.refusal.empty()) {
    refuse(ctx, c, step.refusal);
    return std::nullopt;
  }
  h.held.append(buf, n);
  return std::string_view(h.held.data(), step.forward);
}

void relay_pump(proxy_context& ctx, const std::shared_ptr<connection>& c, int d) {
  auto& t = c->pump;
  if (t.ended || t.done[d]) return;
  stream& from = d ? c->client : c->upstream;
  stream& to = d ? c->upstream : c->client;
  std::uint64_t& count = d ? c->bytes_up : c->bytes_down;
  constexpr int max_reads_per_wakeup = 16;  // one busy tunnel must not starve the others
  for (int i = 0; i < max_reads_per_wakeup; ++i) {
    switch (flush(*c, d)) {
      case flushed::failed: return relay_end(ctx, c, true);
      case flushed::blocked: return;
      case flushed::empty: break;
    }
    if (!from.readable) return release_pipe(t, d);
    std::size_t n = 0;
    if (t.hello) t.bulk[d] = false;  // a watched handshake is copied: the watch sees every byte
    if (t.bulk[d] && t.pipe[d][0] < 0) t.pipe[d] = pipes().take();
    if (t.bulk[d] && t.pipe[d][0] >= 0) {
      ssize_t r = ::splice(from.fd, nullptr, t.pipe[d][1], nullptr, pipe_pool::capacity_bytes,
                           SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
      if (r < 0 && errno == EINTR) continue;
      if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        from.readable = false;
        return release_pipe(t, d);
      }
      if (r < 0) return relay_end(ctx, c, true);
      if (r == 0) return relay_eof(ctx, c, d);
      n = static_cast<std::size_t>(r);
      t.in_pipe[d] += n;
    } else {
      // Copy (small reads, or no pipe to be had: descriptor limit).
      auto& buf = relay_buffer();
      error_code ec;
      n = recv_some(from, buf.data(), buf.size(), ec);
      if (ec == asio::error::would_block) return;
      if (ec == asio::error::eof) return relay_eof(ctx, c, d);
      if (ec) return relay_end(ctx, c, true);
      if (n == buf.size()) t.bulk[d] = true;
      std::string_view out(buf.data(), n);
      if (t.hello) {
        auto go = watched(ctx, c, d, buf.data(), n);
        if (!go) return;
        out = *go;
      }
      std::size_t w = 0;
      if (to.writable && !out.empty()) {
        w = send_some(to, out.data(), out.size(), ec);
        if (ec && ec != asio::error::would_block) return relay_end(ctx, c, true);
      }
      if (w < out.size()) t.pending[d].assign(out.data() + w, out.data() + out.size());
      if (t.hello) {
        if (d == 1) t.hello->held.erase(0, out.size());
        if (t.hello->watch.done()) t.hello.reset();  // from here both directions may splice
      }
    }
    count += n;
    c->last_activity = steady::now();
  }
  // The bound was reached: go on after the other handlers had their turn (bytes already
  // there bring no new edge).
  asio::post(ctx.io(), [keep = ctx.share(), c, d] { relay_pump(*keep, c, d); });
}

}  // namespace

void relay_begin(proxy_context& ctx, const std::shared_ptr<connection>& c, std::chrono::milliseconds idle,
                 std::chrono::milliseconds lifetime) {
  ctx.stats().tunnel_opened();
  if (lifetime.count() > 0) c->lifetime_due = c->start + lifetime;
  c->arm_idle(idle);
  c->tunnel = true;
  // Bytes may already wait on either socket (no new edge will say so): pump once.
  asio::post(ctx.io(), [keep = ctx.share(), c] { relay_ready(*keep, c); });
}

void relay_ready(proxy_context& ctx, const std::shared_ptr<connection>& c) {
  relay_pump(ctx, c, 1);
  relay_pump(ctx, c, 0);
}

void relay_end(proxy_context& ctx, const std::shared_ptr<connection>& c, bool failed) {
  if (c->pump.ended) return;
  c->pump.ended = true;
  ctx.stats().tunnel_closed();
  auto& rec = c->rec;
  rec.bytes_up = c->bytes_up;
  rec.bytes_down = c->bytes_down;
  rec.end = !c->end_cause.empty() ? c->end_cause
            : c->expired           ? "idle_timeout"
            : c->closed            ? "drain"
            : failed               ? "error"
                                   : "eof";
  if (!c->end_cause.empty()) ctx.stats().tunnel_ended_by(c->end_cause);
  ctx.stats().bytes(c->bytes_up, c->bytes_down);
  ctx.decided(rec, c->start);
  ctx.end_connection(c);
}

void release_tunnel_pipes(tunnel_state& t) noexcept {
  for (int d = 0; d < 2; ++d) release_pipe(t, d);
}

}  // namespace egress::proxy
