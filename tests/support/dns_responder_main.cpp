// egress-dns-responder-harness: the proxy's DNS responder room (proxy/src/dns_responder)
// run on its own, from a proxy config, so tests/integration/transparent_dns_test.py can
// test it apart from the rest of the proxy (egress-proxy runs the same room with capture
// dns/both; the suite checks both). Not installed; not a product.
//
// usage: egress-dns-responder-harness --config FILE [--listen ADDR:PORT]
//   --listen  where to answer (default proxy.dns.listen_address and proxy.dns.port);
//             port 0 picks one free port for UDP and TCP, reported in "dns_listening".
// Signals: SIGHUP reloads FILE (kept when broken: reload_failed), SIGTERM/SIGINT stop
// and exit 0. Output: the responder's JSON lines on stdout, diagnostics on stderr.
// Exit status: 0 after a signal, 1 when it cannot listen, 2 for usage or config errors.

#include "dns_responder.hpp"

#include "support/standalone_context.hpp"

#include "egress/common/config.hpp"
#include "egress/proxy/log.hpp"
#include "egress/proxy/server.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>

#include <chrono>
#include <csignal>
#include <functional>
#include <iostream>
#include <optional>
#include <string>
#include <string_view>

namespace {

std::optional<egress::common::config> load(const std::string& path) {
  egress::common::diagnostics diags;
  auto cfg = egress::common::load_config(path, egress::common::accept_kind::deployment_or_proxy, diags);
  diags.print(std::cerr);
  if (cfg && !cfg->has_proxy) {
    std::cerr << path << ": error: the config has no \"proxy\" section\n";
    cfg.reset();
  }
  return cfg;
}

}  // namespace

int main(int argc, char** argv) {
  std::string config_path;
  std::optional<boost::asio::ip::tcp::endpoint> listen;
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    if (a == "--config" && i + 1 < argc) {
      config_path = argv[++i];
    } else if (a == "--listen" && i + 1 < argc) {
      listen = egress::proxy::parse_endpoint(argv[++i]);
      if (!listen) {
        std::cerr << "egress-dns-responder-harness: --listen wants ADDR:PORT\n";
        return 2;
      }
    } else {
      std::cerr << "usage: egress-dns-responder-harness --config FILE [--listen ADDR:PORT]\n";
      return 2;
    }
  }
  if (config_path.empty()) {
    std::cerr << "usage: egress-dns-responder-harness --config FILE [--listen ADDR:PORT]\n";
    return 2;
  }
  auto cfg = load(config_path);
  if (!cfg) return 2;
  const auto& d = cfg->proxy.dns;
  const auto address = listen ? listen->address() : boost::asio::ip::make_address(d.listen_address);
  const std::uint16_t port = listen ? listen->port() : d.port;

  boost::asio::io_context io;
  auto ctx = std::make_shared<egress::test::standalone_context>(io, std::move(*cfg));
  std::optional<egress::proxy::dns_responder> responder;
  responder.emplace(*ctx);
  // Before start(): it logs dns_listening, after which a test may signal at once.
  boost::asio::signal_set signals(io, SIGTERM, SIGINT, SIGHUP);
  try {
    responder->start(address, port);
  } catch (const std::exception& e) {
    std::cerr << "egress-dns-responder-harness: " << e.what() << "\n";
    return 1;
  }
  // Stops the loop once the responder's coroutines (which hold the context) are done, or
  // at `give_up`; the readiness loop's wait never ends by itself.
  boost::asio::steady_timer poll(io);
  std::function<void(std::chrono::steady_clock::time_point)> finish = [&](std::chrono::steady_clock::time_point give_up) {
    if (ctx.use_count() == 1 || std::chrono::steady_clock::now() >= give_up) return io.stop();
    poll.expires_after(std::chrono::milliseconds(10));
    poll.async_wait([&, give_up](const boost::system::error_code&) { finish(give_up); });
  };
  std::function<void()> wait = [&] {
    signals.async_wait([&](const boost::system::error_code& ec, int sig) {
      if (ec) return;
      if (sig == SIGHUP) {
        if (auto next = load(config_path)) {
          ctx->set_config(std::move(*next));
          egress::proxy::log_event("info", "reloaded", config_path);
        } else {
          egress::proxy::log_event("error", "reload_failed", config_path + ": kept the running configuration");
        }
        wait();
        return;
      }
      responder->stop();
      responder.reset();
      egress::proxy::log_event("info", "stopped", "signal");
      finish(std::chrono::steady_clock::now() + std::chrono::seconds(2));
    });
  };
  wait();
  io.run();
  return 0;
}
