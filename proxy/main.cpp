// egress-proxy: a forward proxy (CONNECT and absolute-form HTTP/1.x) that lets requests
// out only to allowlisted host names, checks the ClientHello's SNI and the Host header,
// and never dials denied addresses.
// Exit status: 0 after a clean drain, 1 runtime failure, 2 usage or config errors.

#include "egress/common/config.hpp"
#include "egress/proxy/log.hpp"
#include "egress/proxy/server.hpp"

#include <boost/asio/io_context.hpp>

#include <chrono>
#include <csignal>
#include <iostream>
#include <string>
#include <string_view>
#include <vector>

namespace {

constexpr std::string_view usage_text =
    "usage: egress-proxy --config FILE [--listen ADDR:PORT] [--admin ADDR:PORT]\n"
    "       egress-proxy --check-config FILE\n"
    "\n"
    "  --config FILE     deployment config (config/*.yaml) or the rendered proxy.yaml\n"
    "  --listen ADDR:PORT  proxy listener (default from the config: 127.0.0.1:3128 for a sidecar);\n"
    "                    port 0 picks a free port, reported in the \"listening\" log line\n"
    "  --admin ADDR:PORT   admin listener with /healthz, /readyz, /metrics (default 0.0.0.0:9901)\n"
    "  --check-config [FILE]  validate FILE (or --config's), print every problem, exit 2 if any\n"
    "\n"
    "Signals: SIGTERM/SIGINT drain open tunnels then exit 0; SIGHUP reloads FILE (a broken\n"
    "file is reported and the running configuration kept).\n";

int usage(std::string_view why) {
  std::cerr << "egress-proxy: " << why << "\n" << usage_text;
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string_view> args(argv + 1, argv + argc);
  egress::proxy::server_options opts;
  bool check_only = false;
  for (std::size_t i = 0; i < args.size(); ++i) {
    auto a = args[i];
    if (a == "--help" || a == "-h") {
      std::cout << usage_text;
      return 0;
    }
    if (a == "--check-config") {
      check_only = true;
      // Also accept `--check-config FILE`, the form egress-gen uses.
      if (i + 1 < args.size() && !args[i + 1].starts_with("--") && opts.config_path.empty())
        opts.config_path = std::string(args[++i]);
    } else if (a == "--config" && i + 1 < args.size()) {
      opts.config_path = std::string(args[++i]);
    } else if ((a == "--listen" || a == "--admin") && i + 1 < args.size()) {
      auto ep = egress::proxy::parse_endpoint(args[++i]);
      if (!ep) return usage(std::string(a) + " wants ADDR:PORT or [V6]:PORT, got \"" + std::string(args[i]) + "\"");
      (a == "--listen" ? opts.listen : opts.admin) = *ep;
    } else if (a == "--config" || a == "--listen" || a == "--admin") {
      return usage(std::string(a) + (a == "--config" ? " needs a FILE" : " needs ADDR:PORT"));
    } else {
      return usage("unknown option \"" + std::string(a) + "\"");
    }
  }
  if (opts.config_path.empty()) return usage("--config FILE is required");

  egress::common::diagnostics diags;
  auto cfg = egress::common::load_config(opts.config_path, egress::common::accept_kind::deployment_or_proxy, diags);
  diags.print(std::cerr);
  if (cfg && !cfg->has_proxy) {
    std::cerr << opts.config_path << ": error: the config has no \"proxy\" section\n";
    cfg.reset();
  }
  if (!cfg) return 2;
  if (check_only) {
    std::cout << opts.config_path << ": ok\n";
    return 0;
  }
  // From here the log never blocks: a stalled stdout reader costs log lines (counted and
  // reported), not the proxy.
  egress::proxy::log_init(cfg->proxy.log.buffer_bytes);
  for (const auto& d : diags.items()) egress::proxy::log_event("warning", "config", egress::common::format(d));

  std::signal(SIGPIPE, SIG_IGN);
  int status = 0;
  try {
    boost::asio::io_context io(1);
    egress::proxy::log_attachment log_flusher(io);  // destroyed before io: last flush, detach
    egress::proxy::server srv(io, std::move(opts), std::move(*cfg));
    srv.start();
    io.run();
  } catch (const std::exception& e) {
    egress::proxy::log_event("error", "fatal", e.what());
    std::cerr << "egress-proxy: " << e.what() << '\n';
    status = 1;
  }
  egress::proxy::log_flush(std::chrono::seconds(1));
  return status;
}
