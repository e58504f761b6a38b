#pragma once
/// Prometheus metrics of the proxy: decisions by verdict and reason, DNS responder
/// queries by verdict and reason, live connections and tunnels, bytes relayed, DNS and
/// connect latency histograms, and the log's dropped lines and backlog (kept by log.hpp,
/// read when rendering).
/// Concurrency: used from the proxy's single io_context thread only.
/// Source: Prometheus text exposition format 0.0.4.

#include <array>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <utility>

namespace egress::proxy {

/// A fixed-bucket latency histogram in seconds.
class histogram {
public:
  /// Bucket upper bounds, seconds.
  static constexpr std::array<double, 12> bounds{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                                 0.05,   0.1,   0.25,   0.5,   1.0,  5.0};
  void observe(double seconds) noexcept;
  /// Appends the `_bucket`, `_sum` and `_count` series of `name`.
  void render(std::string& out, std::string_view name, std::string_view help) const;

private:
  std::array<std::uint64_t, bounds.size()> buckets_{};
  std::uint64_t count_ = 0;
  double sum_ = 0;
};

/// All proxy metrics.
class metrics {
public:
  /// One decision (a line in the log): counted by verdict and reason. `reason` must have
  /// static storage (every reason word in the proxy is a constant), so counting allocates
  /// nothing.
  void decision(bool allowed, std::string_view reason);
  /// One message of the DNS responder (a `dns` line): counted by verdict and reason in
  /// `egress_proxy_dns_queries_total`. `reason` must have static storage.
  void dns_query(bool allowed, std::string_view reason);
  void connection_opened() noexcept { ++connections_; ++connections_total_; }
  void connection_closed() noexcept { --connections_; }
  void tunnel_opened() noexcept { ++tunnels_; }
  void tunnel_closed() noexcept { --tunnels_; }
  void bytes(std::uint64_t up, std::uint64_t down) noexcept { bytes_up_ += up; bytes_down_ += down; }
  void dns_latency(double seconds) noexcept { dns_.observe(seconds); }
  void connect_latency(double seconds) noexcept { connect_.observe(seconds); }
  void reload(bool ok) noexcept { ++(ok ? reloads_ok_ : reloads_failed_); }
  /// A tunnel the proxy itself closed: `cause` "revoked" (a reload no longer allows it)
  /// or "max_lifetime" (max_tunnel_lifetime_ms passed). Static storage, like reasons.
  void tunnel_ended_by(std::string_view cause) { ++tunnels_ended_by_[cause]; }

  std::int64_t connections() const noexcept { return connections_; }
  std::int64_t tunnels() const noexcept { return tunnels_; }

  /// The exposition text for GET /metrics.
  std::string render() const;

private:
  std::map<std::pair<bool, std::string_view>, std::uint64_t> decisions_;
  std::map<std::pair<bool, std::string_view>, std::uint64_t> dns_queries_;
  std::int64_t connections_ = 0;
  std::uint64_t connections_total_ = 0;
  std::int64_t tunnels_ = 0;
  std::uint64_t bytes_up_ = 0;
  std::uint64_t bytes_down_ = 0;
  std::uint64_t reloads_ok_ = 0;
  std::uint64_t reloads_failed_ = 0;
  std::map<std::string_view, std::uint64_t> tunnels_ended_by_{{"revoked", 0}, {"max_lifetime", 0}, {"refused", 0}};
  histogram dns_;
  histogram connect_;
};

}  // namespace egress::proxy
