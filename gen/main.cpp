// egress-gen: validates a deployment config and renders NetworkPolicy, Calico and proxy
// configuration from it. Exit status: 0 ok, 1 stale output (--check) or I/O failure,
// 2 usage or config errors, 3 the renderer refused to write a policy that would allow
// more than the config says (a bug: the loader should have refused the config).

#include "egress/common/config.hpp"
#include "egress/gen/render.hpp"

#include <cstring>
#include <filesystem>
#include <iostream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace {

constexpr std::string_view usage_text =
    "usage: egress-gen --check-config FILE\n"
    "       egress-gen render --config FILE --out DIR [--check] [--quiet]\n"
    "       egress-gen chart --config FILE --chart DIR [--check]\n"
    "\n"
    "  --check-config FILE  validate FILE, print every problem, exit 2 if any\n"
    "  render               write networkpolicies.yaml, calico.yaml and proxy.yaml into DIR\n"
    "    --check            write nothing; exit 1 naming the files in DIR that are stale\n"
    "    --quiet            do not print the summary\n"
    "  chart                write the Helm-templated policies into DIR/templates and DIR/files\n";

int usage(std::string_view why) {
  std::cerr << "egress-gen: " << why << "\n" << usage_text;
  return 2;
}

std::optional<egress::common::config> load(const std::string& path) {
  egress::common::diagnostics diags;
  auto cfg = egress::common::load_config(path, egress::common::accept_kind::deployment_only, diags);
  diags.print(std::cerr);
  if (!cfg) {
    std::size_t errors = 0;
    for (const auto& d : diags.items()) errors += d.level == egress::common::severity::error;
    std::cerr << path << ": " << errors << (errors == 1 ? " error" : " errors") << ", nothing written\n";
  }
  return cfg;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string_view> args(argv + 1, argv + argc);
  if (args.empty()) return usage("no command");
  if (args[0] == "--help" || args[0] == "-h") {
    std::cout << usage_text;
    return 0;
  }
  if (args[0] == "--check-config") {
    if (args.size() != 2) return usage("--check-config takes one FILE");
    auto cfg = load(std::string(args[1]));
    if (!cfg) return 2;
    std::cout << args[1] << ": ok\n";
    return 0;
  }
  if (args[0] != "render" && args[0] != "chart") return usage("unknown command \"" + std::string(args[0]) + "\"");
  const bool chart = args[0] == "chart";

  std::string config_path, out_dir;
  bool check = false, quiet = false;
  for (std::size_t i = 1; i < args.size(); ++i) {
    if (args[i] == "--config" && i + 1 < args.size()) config_path = args[++i];
    else if (args[i] == (chart ? "--chart" : "--out") && i + 1 < args.size()) out_dir = args[++i];
    else if (args[i] == "--check") check = true;
    else if (args[i] == "--quiet") quiet = true;
    else return usage("unknown or incomplete option \"" + std::string(args[i]) + "\"");
  }
  if (config_path.empty() || out_dir.empty())
    return usage(chart ? "chart needs --config FILE and --chart DIR" : "render needs --config FILE and --out DIR");

  auto cfg = load(config_path);
  if (!cfg) return 2;
  egress::gen::render_options opts;
  opts.source = config_path;
  std::vector<egress::gen::rendered_file> files;
  try {
    files = chart ? egress::gen::render_chart(*cfg, opts) : egress::gen::render(*cfg, opts);
  } catch (const egress::gen::chart_error& e) {
    std::cerr << e.what() << '\n' << config_path << ": 1 error, nothing written\n";
    return 2;
  } catch (const std::logic_error& e) {
    std::cerr << "egress-gen: internal error: " << e.what() << "; nothing written\n";
    return 3;
  }
  if (check) {
    auto stale = egress::gen::stale_files(out_dir, files);
    for (const auto& f : stale)
      std::cerr << f << (std::filesystem::exists(f) ? ": out of date" : ": missing") << "; re-render with `egress-gen "
                << (chart ? "chart --config " : "render --config ") << config_path << (chart ? " --chart " : " --out ")
                << out_dir << "` (or `make policies`)\n";
    return stale.empty() ? 0 : 1;
  }
  try {
    egress::gen::write_files(out_dir, files);
  } catch (const std::exception& e) {
    std::cerr << "egress-gen: " << e.what() << '\n';
    return 1;
  }
  if (!quiet && !chart) {
    std::cout << egress::gen::summary(*cfg);
    for (const auto& f : files) std::cout << "  wrote " << out_dir << (out_dir.ends_with('/') ? "" : "/") << f.name << '\n';
  }
  return 0;
}
