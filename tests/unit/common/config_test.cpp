#include "egress/common/config.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace fs = std::filesystem;
using namespace egress::common;

namespace {

std::string read(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Diagnostics as printed, without the "FILE:" prefix, one per line.
std::string printed(const diagnostics& d, const std::string& file) {
  std::string out;
  for (const auto& item : d.items()) {
    std::string line = format(item);
    if (line.rfind(file + ":", 0) == 0) line = line.substr(file.size() + 1);
    out += line + "\n";
  }
  return out;
}

const char* minimal = R"(version: 1
namespace: ns
workloads:
  - name: app
    selector: {app: app}
    egress: proxy
proxy:
  mode: sidecar
allowlist:
  - host: example.org
)";

}  // namespace

TEST_CASE("every bad config reports exactly its expected diagnostics and nothing loads", "[unit][common][config]") {
  fs::path dir = fs::path(EGRESS_TEST_DATA) / "config" / "bad";
  std::vector<fs::path> files;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().extension() == ".yaml") files.push_back(e.path());
  std::sort(files.begin(), files.end());
  REQUIRE(files.size() >= 25);
  for (const auto& f : files) {
    DYNAMIC_SECTION(f.filename().string()) {
      diagnostics d;
      auto cfg = load_config(f.string(), accept_kind::deployment_only, d);
      CHECK_FALSE(cfg);
      CHECK(d.has_errors());
      fs::path expected = f;
      expected.replace_extension(".expected");
      REQUIRE(fs::exists(expected));
      CHECK(printed(d, f.string()) == read(expected));
    }
  }
}

TEST_CASE("every problem in a file is reported at once, in file order", "[unit][common][config]") {
  const char* text = R"(version: 1
namespace: Bad_NS
workloads:
  - name: app
    selector: {app: app}
    egress: proxy
    colour: blue
proxy:
  mode: sidecar
  port: 99999
allowlist:
  - host: "*.*.example.org"
  - host: ok.example.org
    ports: [0]
)";
  diagnostics d;
  auto cfg = load_config_text(text, "x.yaml", accept_kind::deployment_only, d);
  CHECK_FALSE(cfg);
  CHECK(printed(d, "x.yaml") ==
        "2:12: error: namespace: \"Bad_NS\" is not a valid namespace (DNS-1123 label: lower case letters, digits and "
        "'-', at most 63)\n"
        "7:5: error: workloads[0].colour: unknown key \"colour\"\n"
        "10:9: error: proxy.port: integer 99999 is out of range (1-65535)\n"
        "12:11: error: allowlist[0].host: \"*.*.example.org\": \"*\" is allowed only as the whole leftmost label "
        "(\"*.example.org\"); did you mean \"*.example.org\"?\n"
        "14:13: error: allowlist[1].ports[0]: integer 0 is out of range (1-65535)\n");
}

TEST_CASE("defaults: sidecar listens on loopback, 443 only, built-in denied ranges", "[unit][common][config]") {
  diagnostics d;
  auto cfg = load_config_text(minimal, "m.yaml", accept_kind::deployment_only, d);
  REQUIRE(cfg);
  CHECK(d.items().empty());
  CHECK(cfg->proxy.listen_address == "127.0.0.1");
  CHECK(cfg->proxy.port == 3128);
  REQUIRE(cfg->allowlist.size() == 1);
  CHECK(cfg->allowlist[0].ports == std::vector<std::uint16_t>{443});
  CHECK(cfg->denied_cidrs.size() == default_denied_ranges().size());
  CHECK(cfg->dns.namespace_name == "kube-system");
  auto policy = cfg->address_policy();
  CHECK_FALSE(policy.check(boost::asio::ip::make_address("169.254.169.254")).allowed);
  CHECK(policy.check(boost::asio::ip::make_address("185.15.59.224")).allowed);
}

TEST_CASE("allow_cidrs is accepted with a warning; denied_cidrs without default warns", "[unit][common][config]") {
  std::string text = std::string(minimal) + "allow_cidrs: [127.0.0.0/8]\ndenied_cidrs: [10.0.0.0/8]\n";
  diagnostics d;
  auto cfg = load_config_text(text, "m.yaml", accept_kind::deployment_only, d);
  REQUIRE(cfg);
  CHECK(printed(d, "m.yaml") ==
        "11:14: warning: allow_cidrs: overrides the denied ranges for 127.0.0.0/8; use only for tests\n"
        "12:15: warning: denied_cidrs: the built-in denied ranges are not included; add \"default\" to the list to "
        "keep them\n");
  CHECK(cfg->address_policy().check(boost::asio::ip::make_address("127.0.0.1")).allowed);
}

// issue 9: upstream ranges that leave nothing after the denied ranges are an error
// (tests/data/config/bad/upstream-inside-denied.yaml and friends); one range that opens
// nothing next to others that do is a warning; an allow override can keep a range.
TEST_CASE("upstream ranges: nothing left is an error, one range opening nothing a warning", "[unit][common][config]") {
  {
    std::string text = std::string(minimal) + "upstream_cidrs: [10.0.0.0/8, 185.15.56.0/22, \"64:ff9b::a9fe:0/112\"]\n";
    diagnostics d;
    auto cfg = load_config_text(text, "m.yaml", accept_kind::deployment_only, d);
    REQUIRE(cfg);
    CHECK(printed(d, "m.yaml") ==
          "11:18: warning: upstream_cidrs[0]: 10.0.0.0/8 lies wholly inside the denied ranges; it opens nothing\n"
          "11:46: warning: upstream_cidrs[2]: 64:ff9b::a9fe:0/112 lies wholly inside the denied ranges; it opens "
          "nothing\n");
    CHECK(cfg->address_policy().reachable_upstream().blocks().size() == 1);
  }
  {
    std::string text = std::string(minimal) + "upstream_cidrs: [10.0.0.0/8]\nallow_cidrs: [10.20.0.0/16]\n";
    diagnostics d;
    auto cfg = load_config_text(text, "m.yaml", accept_kind::deployment_only, d);
    REQUIRE(cfg);
    CHECK_FALSE(d.has_errors());
    REQUIRE(cfg->address_policy().reachable_upstream().blocks().size() == 1);
    CHECK(cfg->address_policy().reachable_upstream().blocks()[0].to_string() == "10.20.0.0/16");
  }
  {
    // NAT64 forms of denied IPv4 count as denied: nothing is left of 64:ff9b::a00:0/104.
    std::string text = std::string(minimal) + "upstream_cidrs: [\"64:ff9b::a00:0/104\"]\n";
    diagnostics d;
    CHECK_FALSE(load_config_text(text, "m.yaml", accept_kind::deployment_only, d));
    CHECK(printed(d, "m.yaml").rfind("11:17: error: upstream_cidrs: the upstream ranges (64:ff9b::a00:0/104) lie wholly "
                                     "inside the denied ranges",
                                     0) == 0);
  }
  {
    // Without a proxy the upstream ranges open nothing anyway: no error.
    const char* text = R"(version: 1
namespace: ns
workloads:
  - {name: app, selector: {app: app}, egress: dns-only}
upstream_cidrs: [10.0.0.0/8]
)";
    diagnostics d;
    CHECK(load_config_text(text, "m.yaml", accept_kind::deployment_only, d));
  }
}

TEST_CASE("a kind proxy file loads for the proxy and is refused by the generator", "[unit][common][config]") {
  const char* text = R"(version: 1
kind: proxy
source: config/x.yaml
proxy:
  mode: gateway
  selector: {app: p}
allowlist:
  - host: "*.wikidata.org"
    ports: [443, 8443]
)";
  diagnostics d;
  auto cfg = load_config_text(text, "p.yaml", accept_kind::deployment_or_proxy, d);
  REQUIRE(cfg);
  CHECK(cfg->kind == config_kind::proxy);
  CHECK(cfg->proxy.listen_address == "0.0.0.0");
  CHECK(cfg->allowlist[0].pattern.wildcard);
  diagnostics d2;
  CHECK_FALSE(load_config_text(text, "p.yaml", accept_kind::deployment_only, d2));
}

TEST_CASE("the shipped configs load without errors", "[unit][common][config]") {
  for (const char* name : {"wikifunctions.yaml", "examples/gateway.yaml", "examples/sidecar-nodelocal.yaml"}) {
    DYNAMIC_SECTION(name) {
      diagnostics d;
      auto path = fs::path(EGRESS_TEST_DATA) / ".." / ".." / "config" / name;
      auto cfg = load_config(path.string(), accept_kind::deployment_only, d);
      INFO(printed(d, path.string()));
      REQUIRE(cfg);
      CHECK_FALSE(d.has_errors());
    }
  }
}
