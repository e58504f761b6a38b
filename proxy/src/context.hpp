#pragma once
/// What the rooms of egress-proxy (session, dial, http_forward, relay, admin) need from
/// the server that owns them: the io_context and readiness loop they run on, the metrics,
/// the current config snapshot, the decision log and the live-connection table's exit.
///
/// This header declares only; server.cpp implements `proxy_context`. It may not grow
/// policy: what a request may do is decided in acl, client_hello and session.

#include "egress/common/config.hpp"
#include "egress/proxy/log.hpp"
#include "egress/proxy/metrics.hpp"
#include "egress/proxy/readiness.hpp"
#include "egress/proxy/resolver.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>

#include <chrono>
#include <memory>
#include <string>

namespace egress::proxy {

using steady = std::chrono::steady_clock;

struct connection;

/// An immutable config snapshot; a request is judged by the one current when its head
/// was complete, and keeps it (shared) until its decision line is written.
struct snapshot {
  common::config cfg;
  common::upstream_policy policy;
  std::shared_ptr<resolver> dns;
};

/// The server as the rooms see it. Every call runs on the io_context's one thread.
class proxy_context {
public:
  virtual ~proxy_context() = default;

  /// A reference that keeps the server (and the readiness loop its connections leave)
  /// alive: handlers posted for later hold one.
  virtual std::shared_ptr<proxy_context> share() = 0;

  /// The io_context everything runs on (timers, posts, coroutines).
  virtual boost::asio::io_context& io() noexcept = 0;
  /// The edge-triggered epoll set the data path's sockets are registered with.
  virtual readiness& loop() noexcept = 0;
  /// Counters and histograms served on /metrics.
  virtual metrics& stats() noexcept = 0;
  /// The config snapshot current now (replaced by a successful SIGHUP reload).
  virtual std::shared_ptr<const snapshot> current() const noexcept = 0;
  /// True once SIGTERM/SIGINT started the drain: no new requests are served.
  virtual bool draining() const noexcept = 0;
  /// Counts one decision in the metrics and queues its log line (sets `rec.total_ms`
  /// from `start`). Lines decided in one event-loop turn leave in one write(2).
  virtual void decided(decision_record& rec, steady::time_point start) = 0;
  /// Closes `c` and drops it from the live-connection table (idempotent); finishes a
  /// drain when it was the last one.
  virtual void end_connection(const std::shared_ptr<connection>& c) = 0;
};

/// Milliseconds from `t` to now.
inline double ms_since(steady::time_point t) {
  return std::chrono::duration<double, std::milli>(steady::now() - t).count();
}

/// "ADDR:PORT", or "[V6]:PORT" for IPv6, as logged.
inline std::string endpoint_text(const boost::asio::ip::tcp::endpoint& ep) {
  if (ep.address().is_v6()) return "[" + ep.address().to_string() + "]:" + std::to_string(ep.port());
  return ep.address().to_string() + ":" + std::to_string(ep.port());
}

}  // namespace egress::proxy
