// egress-gen scale benchmark: a synthetic deployment with N allowlist entries and W
// workloads (defaults 5,000 and 200, the target), loaded from YAML text and
// rendered R times; prints the median and best wall time of load and render.
// Usage: bench-gen [--entries N] [--workloads W] [--repeat R]

#include "egress/common/config.hpp"
#include "egress/gen/render.hpp"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

namespace {

std::string synthetic_config(int entries, int workloads) {
  std::string y = "version: 1\nnamespace: bench\nworkloads:\n";
  for (int w = 0; w < workloads; ++w) {
    std::string name = "w" + std::to_string(w);
    y += "  - name: " + name + "\n    selector:\n      app: " + name + "\n";
    y += "    ports:\n      - port: " + std::to_string(8000 + w) + "\n        from:\n";
    y += "          - workload: w" + std::to_string((w + 1) % workloads) + "\n";
    if (w % 4 == 0) y += "    egress: none\n";
    else
      y += "    egress:\n      class: proxy\n      peers:\n        - workload: w" + std::to_string((w + workloads - 1) % workloads) + "\n";
  }
  y += "proxy:\n  mode: sidecar\nallowlist:\n";
  for (int i = 0; i < entries; ++i) {
    if (i % 10 == 0) y += "  - host: \"*.s" + std::to_string(i) + ".example.org\"\n    ports: [443, 8443]\n";
    else y += "  - host: h" + std::to_string(i) + ".example.org\n";
  }
  return y;
}

}  // namespace

int main(int argc, char** argv) {
  int entries = 5000, workloads = 200, repeat = 7;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string a = argv[i];
    int v = std::atoi(argv[i + 1]);
    if (a == "--entries") entries = v;
    else if (a == "--workloads") workloads = v;
    else if (a == "--repeat") repeat = v;
    else {
      std::cerr << "usage: bench-gen [--entries N] [--workloads W] [--repeat R]\n";
      return 2;
    }
  }
  std::string text = synthetic_config(entries, workloads);
  std::vector<double> load_ms, render_ms, total_ms;
  std::size_t bytes = 0;
  for (int r = 0; r < repeat; ++r) {
    auto t0 = std::chrono::steady_clock::now();
    egress::common::diagnostics diags;
    auto cfg = egress::common::load_config_text(text, "bench.yaml", egress::common::accept_kind::deployment_only, diags);
    if (!cfg) {
      diags.print(std::cerr);
      return 1;
    }
    auto t1 = std::chrono::steady_clock::now();
    egress::gen::render_options opts;
    opts.source = "bench.yaml";
    auto files = egress::gen::render(*cfg, opts);
    auto t2 = std::chrono::steady_clock::now();
    bytes = 0;
    for (const auto& f : files) bytes += f.content.size();
    load_ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
    render_ms.push_back(std::chrono::duration<double, std::milli>(t2 - t1).count());
    total_ms.push_back(std::chrono::duration<double, std::milli>(t2 - t0).count());
  }
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  };
  auto best = [](const std::vector<double>& v) { return *std::min_element(v.begin(), v.end()); };
  std::cout << "egress-gen scale: " << entries << " allowlist entries, " << workloads << " workloads, "
            << text.size() << " bytes of YAML in, " << bytes << " bytes out, " << repeat << " runs\n"
            << "  load+validate  median " << median(load_ms) << " ms  best " << best(load_ms) << " ms\n"
            << "  render         median " << median(render_ms) << " ms  best " << best(render_ms) << " ms\n"
            << "  total          median " << median(total_ms) << " ms  best " << best(total_ms) << " ms\n";
  return 0;
}
