#pragma once
/// A `proxy_context` (proxy/src/context.hpp) for running one room of egress-proxy without
/// its server: the DNS responder's tests and its test harness executable. It has what the
/// server gives a room (an io_context, a readiness loop, metrics, a config snapshot that
/// can be replaced as a SIGHUP reload replaces it, the decision log) and no policy of its
/// own. `decided` writes the decision line at once (no batching); `end_connection` closes.
/// Header-only; single-threaded like the server (call it on the io_context's thread).

#include "connection.hpp"
#include "context.hpp"

#include "egress/common/config.hpp"
#include "egress/proxy/log.hpp"

#include <boost/asio/io_context.hpp>

#include <chrono>
#include <memory>
#include <utility>

namespace egress::test {

class standalone_context final : public proxy::proxy_context,
                                 public std::enable_shared_from_this<standalone_context> {
public:
  standalone_context(boost::asio::io_context& io, common::config cfg) : io_(io), loop_(io) { set_config(std::move(cfg)); }

  /// Replaces the current snapshot (what a successful reload does). The resolver is left
  /// out: the rooms run here do not resolve.
  void set_config(common::config cfg) {
    auto s = std::make_shared<proxy::snapshot>();
    s->policy = cfg.address_policy();
    s->cfg = std::move(cfg);
    snap_ = std::move(s);
  }
  void set_draining(bool d) { draining_ = d; }

  std::shared_ptr<proxy::proxy_context> share() override { return shared_from_this(); }
  boost::asio::io_context& io() noexcept override { return io_; }
  proxy::readiness& loop() noexcept override { return loop_; }
  proxy::metrics& stats() noexcept override { return metrics_; }
  std::shared_ptr<const proxy::snapshot> current() const noexcept override { return snap_; }
  bool draining() const noexcept override { return draining_; }
  void decided(proxy::decision_record& rec, proxy::steady::time_point start) override {
    rec.total_ms = proxy::ms_since(start);
    metrics_.decision(rec.allowed, rec.reason);
    proxy::write_line(proxy::format_decision(rec, std::chrono::system_clock::now()));
  }
  void end_connection(const std::shared_ptr<proxy::connection>& c) override { c->close(); }

private:
  boost::asio::io_context& io_;
  proxy::readiness loop_;
  proxy::metrics metrics_;
  std::shared_ptr<const proxy::snapshot> snap_;
  bool draining_ = false;
};

}  // namespace egress::test
