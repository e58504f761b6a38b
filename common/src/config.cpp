#include "egress/common/config.hpp"

#include "yaml_reader.hpp"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>

namespace egress::common {
namespace {

using detail::index_path;
using detail::map_view;
using detail::yaml_reader;
namespace ip = boost::asio::ip;

constexpr bool is_lower_alnum(char c) noexcept { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); }
constexpr bool is_alnum(char c) noexcept { return is_lower_alnum(c) || (c >= 'A' && c <= 'Z'); }

// DNS-1123 label: [a-z0-9]([-a-z0-9]*[a-z0-9])?, at most 63 (k8s.io/apimachinery
// IsDNS1123Label).
bool is_dns1123_label(std::string_view s) {
  if (s.empty() || s.size() > 63 || !is_lower_alnum(s.front()) || !is_lower_alnum(s.back())) return false;
  return std::all_of(s.begin(), s.end(), [](char c) { return is_lower_alnum(c) || c == '-'; });
}

// DNS-1123 subdomain: dot-separated labels, at most 253 (IsDNS1123Subdomain).
bool is_dns1123_subdomain(std::string_view s) {
  if (s.empty() || s.size() > 253) return false;
  std::size_t start = 0;
  while (true) {
    std::size_t end = s.find('.', start);
    std::string_view label = s.substr(start, end == std::string_view::npos ? std::string_view::npos : end - start);
    if (label.empty() || !is_lower_alnum(label.front()) || !is_lower_alnum(label.back())) return false;
    if (!std::all_of(label.begin(), label.end(), [](char c) { return is_lower_alnum(c) || c == '-'; })) return false;
    if (end == std::string_view::npos) return true;
    start = end + 1;
  }
}

// Name part of a qualified name / a non-empty label value:
// ([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9], at most 63.
bool is_label_token(std::string_view s) {
  if (s.empty() || s.size() > 63 || !is_alnum(s.front()) || !is_alnum(s.back())) return false;
  return std::all_of(s.begin(), s.end(), [](char c) { return is_alnum(c) || c == '-' || c == '_' || c == '.'; });
}

// Label key: [prefix/]name (IsQualifiedName).
std::optional<std::string> label_key_problem(std::string_view k) {
  std::string_view name = k;
  if (auto slash = k.find('/'); slash != std::string_view::npos) {
    std::string_view prefix = k.substr(0, slash);
    name = k.substr(slash + 1);
    if (!is_dns1123_subdomain(prefix))
      return "label key prefix \"" + std::string(prefix) + "\" must be a DNS-1123 subdomain (lower case, at most 253)";
  }
  if (!is_label_token(name))
    return "label key \"" + std::string(k) +
           "\" must be at most 63 characters of letters, digits, '-', '_' or '.', starting and ending with a letter or digit";
  return std::nullopt;
}

std::optional<std::string> label_value_problem(std::string_view v) {
  if (v.empty() || is_label_token(v)) return std::nullopt;
  return "label value \"" + std::string(v) +
         "\" must be at most 63 characters of letters, digits, '-', '_' or '.', starting and ending with a letter or digit";
}

// IANA service name as Kubernetes validates port names (IsValidPortName).
bool is_port_name(std::string_view s) {
  if (s.empty() || s.size() > 15 || s.front() == '-' || s.back() == '-') return false;
  if (s.find("--") != std::string_view::npos) return false;
  bool letter = false;
  for (char c : s) {
    if (c >= 'a' && c <= 'z') letter = true;
    else if (!((c >= '0' && c <= '9') || c == '-')) return false;
  }
  return letter;
}

struct loader {
  yaml_reader& r;
  config& cfg;
  bool deployment = true;

  std::optional<label_map> labels(const YAML::Node& n, const std::string& path, bool allow_empty) {
    map_view m(r, n, path, {});
    if (!m.ok()) return std::nullopt;
    label_map out;
    bool ok = true;
    for (auto& [k, v] : m.entries()) {
      std::string kp = m.child(k.Scalar());
      if (auto p = label_key_problem(k.Scalar())) {
        r.error(k, kp, *p);
        ok = false;
        continue;
      }
      if (k.Scalar() == denied_set_label_key) {
        r.error(k, kp,
                "label key \"" + std::string(denied_set_label_key) +
                    "\" is reserved: egress-gen labels its GlobalNetworkSet of denied ranges with it");
        ok = false;
        continue;
      }
      auto s = r.string(v, kp);
      if (!s) {
        ok = false;
        continue;
      }
      if (auto p = label_value_problem(*s)) {
        r.error(v, kp, *p);
        ok = false;
        continue;
      }
      out.emplace(k.Scalar(), *s);
    }
    if (out.empty() && ok && !allow_empty) {
      r.error(n, path, "selector must have at least one label (an empty selector selects every pod)");
      return std::nullopt;
    }
    return ok ? std::optional<label_map>(std::move(out)) : std::nullopt;
  }

  std::optional<std::uint16_t> port(const YAML::Node& n, const std::string& path) {
    auto v = r.integer(n, path, 1, 65535);
    if (!v) return std::nullopt;
    return static_cast<std::uint16_t>(*v);
  }

  std::vector<std::uint16_t> port_list(const YAML::Node& n, const std::string& path) {
    std::vector<std::uint16_t> out;
    if (!r.is_sequence(n, path)) return out;
    if (n.size() == 0) r.error(n, path, "list must not be empty");
    for (std::size_t i = 0; i < n.size(); ++i) {
      auto p = port(n[i], index_path(path, i));
      if (!p) continue;
      if (std::find(out.begin(), out.end(), *p) != out.end()) {
        r.error(n[i], index_path(path, i), "duplicate port " + std::to_string(*p));
        continue;
      }
      out.push_back(*p);
    }
    std::sort(out.begin(), out.end());
    return out;
  }

  std::optional<std::chrono::milliseconds> millis(const map_view& m, std::string_view key, std::int64_t max) {
    if (auto n = m.get(key)) {
      if (auto v = r.integer(*n, m.child(key), 1, max)) return std::chrono::milliseconds(*v);
    }
    return std::nullopt;
  }

  std::optional<ip::address> address(const YAML::Node& n, const std::string& path) {
    auto s = r.string(n, path);
    if (!s) return std::nullopt;
    auto c = parse_cidr(*s);
    if (!c || s->find('/') != std::string::npos) {
      r.error(n, path, "\"" + *s + "\" is not an IP address");
      return std::nullopt;
    }
    return c->network();
  }

  std::optional<peer> parse_peer(const YAML::Node& n, const std::string& path, bool egress) {
    map_view m = egress ? map_view(r, n, path, {"workload", "pod_selector", "namespace_selector", "ports"})
                        : map_view(r, n, path, {"workload", "pod_selector", "namespace_selector"});
    if (!m.ok()) return std::nullopt;
    peer p;
    p.line = n.Mark().line + 1;
    p.column = n.Mark().column + 1;
    bool ok = true;
    if (auto w = m.get("workload")) {
      if (auto s = r.string(*w, m.child("workload"))) p.workload = *s;
      else ok = false;
    }
    if (auto s = m.get("pod_selector")) {
      if (auto l = labels(*s, m.child("pod_selector"), true)) p.pod_selector = std::move(*l);
      else ok = false;
    }
    if (auto s = m.get("namespace_selector")) {
      if (auto l = labels(*s, m.child("namespace_selector"), true)) p.namespace_selector = std::move(*l);
      else ok = false;
    }
    if (egress) {
      if (auto ports = m.get("ports")) p.ports = port_list(*ports, m.child("ports"));
    }
    if (p.workload && (p.pod_selector || p.namespace_selector)) {
      r.error(n, path, "a peer names either a workload or selectors, not both");
      return std::nullopt;
    }
    if (!p.workload && !p.pod_selector && !p.namespace_selector) {
      if (ok) r.error(n, path, "a peer needs \"workload\", \"pod_selector\" or \"namespace_selector\"");
      return std::nullopt;
    }
    if (egress && !p.workload && p.ports.empty() && ok && !m.get("ports")) {
      r.error(n, path, "a selector peer needs \"ports\" (only a workload peer defaults to the ports it serves)");
      return std::nullopt;
    }
    return ok ? std::optional<peer>(std::move(p)) : std::nullopt;
  }

  std::vector<peer> peer_list(const YAML::Node& n, const std::string& path, bool egress) {
    std::vector<peer> out;
    if (!r.is_sequence(n, path)) return out;
    if (n.size() == 0) r.error(n, path, "list must not be empty");
    for (std::size_t i = 0; i < n.size(); ++i)
      if (auto p = parse_peer(n[i], index_path(path, i), egress)) out.push_back(std::move(*p));
    return out;
  }

  std::optional<egress_class> parse_class(const YAML::Node& n, const std::string& path) {
    auto s = r.string(n, path);
    if (!s) return std::nullopt;
    if (*s == "none") return egress_class::none;
    if (*s == "dns-only") return egress_class::dns_only;
    if (*s == "proxy") return egress_class::proxy;
    if (*s == "peers") return egress_class::peers;
    r.error(n, path, "unknown egress class \"" + *s + "\"; expected none, dns-only, proxy or peers");
    return std::nullopt;
  }

  void parse_workload(const YAML::Node& n, const std::string& path) {
    map_view m(r, n, path, {"name", "selector", "ports", "egress"});
    if (!m.ok()) return;
    workload w;
    w.line = n.Mark().line + 1;
    if (auto v = m.require("name")) {
      if (auto s = r.string(*v, m.child("name"))) {
        if (!is_dns1123_label(*s))
          r.error(*v, m.child("name"),
                  "\"" + *s + "\" is not a valid name (DNS-1123 label: lower case letters, digits and '-', at most 63)");
        w.name = *s;
      }
    }
    if (auto v = m.require("selector")) {
      if (auto l = labels(*v, m.child("selector"), false)) w.selector = std::move(*l);
    }
    if (auto v = m.get("ports")) {
      std::string pp = m.child("ports");
      if (r.is_sequence(*v, pp)) {
        for (std::size_t i = 0; i < v->size(); ++i) {
          std::string ip = index_path(pp, i);
          map_view pm(r, (*v)[i], ip, {"name", "port", "protocol", "from"});
          if (!pm.ok()) continue;
          served_port sp;
          if (auto x = pm.get("name")) {
            if (auto s = r.string(*x, pm.child("name"))) {
              if (!is_port_name(*s))
                r.error(*x, pm.child("name"),
                        "\"" + *s + "\" is not a valid port name (IANA service name: at most 15 of a-z, 0-9, '-', with a letter)");
              sp.name = *s;
            }
          }
          if (auto x = pm.require("port")) {
            if (auto p = port(*x, pm.child("port"))) sp.port = *p;
          }
          if (auto x = pm.get("protocol")) {
            if (auto s = r.string(*x, pm.child("protocol"))) {
              if (*s != "TCP" && *s != "UDP" && *s != "SCTP")
                r.error(*x, pm.child("protocol"), "protocol must be TCP, UDP or SCTP, got \"" + *s + "\"");
              sp.protocol = *s;
            }
          }
          if (auto x = pm.require("from")) sp.from = peer_list(*x, pm.child("from"), false);
          if (sp.port != 0 && std::any_of(w.ports.begin(), w.ports.end(), [&](const served_port& o) {
                return o.port == sp.port && o.protocol == sp.protocol;
              }))
            r.error((*v)[i], ip, "duplicate port " + std::to_string(sp.port) + "/" + sp.protocol);
          w.ports.push_back(std::move(sp));
        }
      }
    }
    if (auto v = m.require("egress")) {
      std::string ep = m.child("egress");
      if (v->IsScalar()) {
        if (auto c = parse_class(*v, ep)) w.egress = *c;
      } else {
        map_view em(r, *v, ep, {"class", "peers"});
        if (em.ok()) {
          std::optional<egress_class> c;
          if (auto x = em.require("class")) c = parse_class(*x, em.child("class"));
          if (c) w.egress = *c;
          if (auto x = em.get("peers")) {
            if (c == egress_class::none)
              r.error(*x, em.child("peers"), "egress class none allows no peers; use class peers, dns-only or proxy");
            else
              w.egress_peers = peer_list(*x, em.child("peers"), true);
          } else if (c == egress_class::peers) {
            r.error(*v, ep, "egress class peers needs a \"peers\" list");
          }
        }
      }
    }
    cfg.workloads.push_back(std::move(w));
  }

  void parse_limits(const YAML::Node& n, const std::string& path) {
    map_view m(r, n, path,
               {"max_connections", "max_header_bytes", "header_timeout_ms", "connect_timeout_ms", "idle_timeout_ms",
                "client_hello_timeout_ms", "max_client_hello_bytes", "drain_timeout_ms", "max_tunnel_lifetime_ms"});
    if (!m.ok()) return;
    auto& l = cfg.proxy.limits;
    if (auto x = m.get("max_connections"))
      if (auto v = r.integer(*x, m.child("max_connections"), 1, 1'000'000)) l.max_connections = static_cast<std::uint32_t>(*v);
    if (auto x = m.get("max_header_bytes"))
      if (auto v = r.integer(*x, m.child("max_header_bytes"), 1024, 1 << 20)) l.max_header_bytes = static_cast<std::uint32_t>(*v);
    if (auto x = m.get("max_client_hello_bytes"))
      if (auto v = r.integer(*x, m.child("max_client_hello_bytes"), 512, 65536))
        l.max_client_hello_bytes = static_cast<std::uint32_t>(*v);
    constexpr std::int64_t day = 86'400'000;
    if (auto v = millis(m, "header_timeout_ms", day)) l.header_timeout = *v;
    if (auto v = millis(m, "connect_timeout_ms", day)) l.connect_timeout = *v;
    if (auto v = millis(m, "idle_timeout_ms", day)) l.idle_timeout = *v;
    if (auto v = millis(m, "client_hello_timeout_ms", day)) l.client_hello_timeout = *v;
    if (auto v = millis(m, "drain_timeout_ms", day)) l.drain_timeout = *v;
    if (auto x = m.get("max_tunnel_lifetime_ms"))  // 0 turns the limit off
      if (auto v = r.integer(*x, m.child("max_tunnel_lifetime_ms"), 0, 30 * day))
        l.max_tunnel_lifetime = std::chrono::milliseconds(*v);
  }

  void parse_resolver(const YAML::Node& n, const std::string& path) {
    map_view m(r, n, path, {"servers", "timeout_ms", "min_ttl_s", "max_ttl_s"});
    if (!m.ok()) return;
    auto& rs = cfg.proxy.resolver;
    if (auto x = m.get("servers")) {
      std::string sp = m.child("servers");
      if (r.is_sequence(*x, sp)) {
        for (std::size_t i = 0; i < x->size(); ++i) {
          std::string ip = index_path(sp, i);
          auto s = r.string((*x)[i], ip);
          if (!s) continue;
          if (!valid_server(*s))
            r.error((*x)[i], ip, "\"" + *s + "\" is not ADDRESS, ADDRESS:PORT or [IPv6]:PORT");
          else
            rs.servers.push_back(*s);
        }
      }
    }
    if (auto v = millis(m, "timeout_ms", 60'000)) rs.timeout = *v;
    if (auto x = m.get("min_ttl_s"))
      if (auto v = r.integer(*x, m.child("min_ttl_s"), 0, 86'400)) rs.min_ttl = std::chrono::seconds(*v);
    if (auto x = m.get("max_ttl_s"))
      if (auto v = r.integer(*x, m.child("max_ttl_s"), 0, 86'400)) rs.max_ttl = std::chrono::seconds(*v);
    if (rs.min_ttl > rs.max_ttl) r.error(n, path, "min_ttl_s is greater than max_ttl_s");
  }

  static bool valid_server(std::string_view s) {
    std::string_view addr = s;
    std::string_view port_text;
    if (s.starts_with('[')) {
      auto close = s.find(']');
      if (close == std::string_view::npos) return false;
      addr = s.substr(1, close - 1);
      std::string_view rest = s.substr(close + 1);
      if (!rest.empty()) {
        if (rest.front() != ':') return false;
        port_text = rest.substr(1);
        if (port_text.empty()) return false;
      }
    } else if (std::count(s.begin(), s.end(), ':') == 1) {
      addr = s.substr(0, s.find(':'));
      port_text = s.substr(s.find(':') + 1);
      if (port_text.empty()) return false;
    }
    auto c = parse_cidr(addr);
    if (!c || addr.find('/') != std::string_view::npos) return false;
    if (!port_text.empty()) {
      unsigned p = 0;
      for (char ch : port_text) {
        if (ch < '0' || ch > '9') return false;
        p = p * 10 + static_cast<unsigned>(ch - '0');
        if (p > 65535) return false;
      }
      if (p == 0) return false;
    }
    return true;
  }

  void parse_dns_responder(const YAML::Node& n, const std::string& path) {
    map_view m(r, n, path, {"listen_address", "port", "answer_ipv4", "answer_ipv6", "ttl_s", "cluster_domains", "cluster_dns"});
    if (!m.ok()) return;
    auto& d = cfg.proxy.dns;
    if (auto x = m.get("listen_address"))
      if (auto a = address(*x, m.child("listen_address"))) d.listen_address = a->to_string();
    if (auto x = m.get("port"))
      if (auto v = port(*x, m.child("port"))) d.port = *v;
    if (auto x = m.get("answer_ipv4"))
      if (auto a = address(*x, m.child("answer_ipv4"))) {
        if (!a->is_v4()) r.error(*x, m.child("answer_ipv4"), "answer_ipv4 must be an IPv4 address");
        else d.answer_ipv4 = *a;
      }
    if (auto x = m.get("answer_ipv6"))
      if (auto a = address(*x, m.child("answer_ipv6"))) {
        if (!a->is_v6()) r.error(*x, m.child("answer_ipv6"), "answer_ipv6 must be an IPv6 address");
        else d.answer_ipv6 = *a;
      }
    if (auto x = m.get("ttl_s"))
      if (auto v = r.integer(*x, m.child("ttl_s"), 0, 3600)) d.ttl = std::chrono::seconds(*v);
    if (auto x = m.get("cluster_domains")) {
      d.cluster_domains.clear();
      std::string sp = m.child("cluster_domains");
      if (r.is_sequence(*x, sp))
        for (std::size_t i = 0; i < x->size(); ++i) {
          std::string ip = index_path(sp, i);
          auto s = r.string((*x)[i], ip);
          if (!s) continue;
          auto h = normalize_host(*s, host_syntax::bare);
          if (!h || h->is_ip()) {
            r.error((*x)[i], ip, "\"" + *s + "\" is not a domain name");
            continue;
          }
          d.cluster_domains.push_back(h->text);
        }
    }
    if (auto x = m.get("cluster_dns")) {
      std::string sp = m.child("cluster_dns");
      if (r.is_sequence(*x, sp))
        for (std::size_t i = 0; i < x->size(); ++i) {
          std::string ip = index_path(sp, i);
          auto s = r.string((*x)[i], ip);
          if (!s) continue;
          if (!valid_server(*s)) r.error((*x)[i], ip, "\"" + *s + "\" is not ADDRESS, ADDRESS:PORT or [IPv6]:PORT");
          else d.cluster_dns.push_back(*s);
        }
    }
  }

  void parse_transparent(const YAML::Node& n, const std::string& path) {
    map_view m(r, n, path, {"listen_address", "http_ports"});
    if (!m.ok()) return;
    auto& t = cfg.proxy.transparent;
    if (auto x = m.get("listen_address"))
      if (auto a = address(*x, m.child("listen_address"))) t.listen_address = a->to_string();
    if (auto x = m.get("http_ports")) {
      t.http_ports.clear();
      std::string sp = m.child("http_ports");
      if (r.is_sequence(*x, sp))
        for (std::size_t i = 0; i < x->size(); ++i)
          if (auto v = port((*x)[i], index_path(sp, i))) t.http_ports.push_back(*v);
      std::sort(t.http_ports.begin(), t.http_ports.end());
      t.http_ports.erase(std::unique(t.http_ports.begin(), t.http_ports.end()), t.http_ports.end());
    }
  }

  // capture dns/both: what the responder and the transparent listeners need. The proxy's
  // own resolver must never ask the responder: with dnsPolicy None the pod's resolv.conf
  // names the responder, so its servers come from the config, and none may be the
  // responder itself (a loop).
  void check_capture(const YAML::Node& n, const std::string& path, const map_view& m) {
    const auto& p = cfg.proxy;
    const auto dns_node = m.get("dns");
    const bool answer_given = dns_node && dns_node->IsMap() && ((*dns_node)["answer_ipv4"] || (*dns_node)["answer_ipv6"]);
    if (!p.dns.answer_ipv4 && !p.dns.answer_ipv6 && !answer_given)  // an invalid one was reported already
      r.error(m.get("dns") ? *m.get("dns") : n, m.get("dns") ? m.child("dns") : path,
              "capture " + std::string(to_string(p.capture)) +
                  " needs dns.answer_ipv4 and/or dns.answer_ipv6: the address clients reach the proxy at");
    if (!p.dns.cluster_domains.empty() && p.dns.cluster_dns.empty())
      r.error(m.get("dns") ? *m.get("dns") : n, m.get("dns") ? m.child("dns") : path,
              "dns.cluster_dns is required to forward dns.cluster_domains (the kube-dns Service address)");
    if (p.resolver.servers.empty())
      r.error(m.get("resolver") ? *m.get("resolver") : n, m.get("resolver") ? m.child("resolver") : path,
              "capture " + std::string(to_string(p.capture)) +
                  " needs resolver.servers: /etc/resolv.conf names the proxy's own DNS responder then");
    auto responder = ip::make_address(p.dns.listen_address);
    for (std::size_t i = 0; i < p.resolver.servers.size(); ++i) {
      const auto& s = p.resolver.servers[i];
      auto [addr, server_port] = split_server(s);
      bool same_port = server_port == p.dns.port;
      bool same_addr = addr == responder || (responder.is_unspecified() && addr.is_loopback());
      YAML::Node servers = (*m.get("resolver"))["servers"];
      if (same_port && same_addr)
        r.error(servers.IsSequence() && i < servers.size() ? servers[i] : servers, index_path(m.child("resolver") + ".servers", i),
                "\"" + s + "\" is the proxy's own DNS responder: the resolver would ask itself (use the cluster DNS address)");
    }
  }

  // "ADDR", "ADDR:PORT", "[V6]:PORT" (already valid) -> address and port (53 by default).
  static std::pair<ip::address, std::uint16_t> split_server(std::string_view s) {
    std::string_view addr = s, port_text;
    if (s.starts_with('[')) {
      auto close = s.find(']');
      addr = s.substr(1, close - 1);
      if (close + 1 < s.size()) port_text = s.substr(close + 2);
    } else if (std::count(s.begin(), s.end(), ':') == 1) {
      addr = s.substr(0, s.find(':'));
      port_text = s.substr(s.find(':') + 1);
    }
    unsigned p = 0;
    for (char ch : port_text) p = p * 10 + static_cast<unsigned>(ch - '0');
    return {ip::make_address(std::string(addr)), static_cast<std::uint16_t>(port_text.empty() ? 53 : p)};
  }

  void parse_proxy(const YAML::Node& n, const std::string& path) {
    map_view m(r, n, path,
               {"mode", "port", "admin_port", "listen_address", "admin_address", "selector", "limits", "tls", "log",
                "resolver", "hosts", "capture", "dns", "transparent"});
    if (!m.ok()) return;
    cfg.has_proxy = true;
    auto& p = cfg.proxy;
    if (auto x = m.require("mode")) {
      if (auto s = r.string(*x, m.child("mode"))) {
        if (*s == "sidecar") p.mode = proxy_mode::sidecar;
        else if (*s == "gateway") p.mode = proxy_mode::gateway;
        else r.error(*x, m.child("mode"), "mode must be sidecar or gateway, got \"" + *s + "\"");
      }
    }
    if (auto x = m.get("port"))
      if (auto v = port(*x, m.child("port"))) p.port = *v;
    if (auto x = m.get("admin_port"))
      if (auto v = port(*x, m.child("admin_port"))) p.admin_port = *v;
    if (p.port == p.admin_port)
      r.error(n, path, "port and admin_port must differ (both " + std::to_string(p.port) + ")");
    p.listen_address = p.mode == proxy_mode::sidecar ? "127.0.0.1" : "0.0.0.0";
    if (auto x = m.get("listen_address"))
      if (auto a = address(*x, m.child("listen_address"))) p.listen_address = a->to_string();
    if (auto x = m.get("admin_address"))
      if (auto a = address(*x, m.child("admin_address"))) p.admin_address = a->to_string();
    if (auto x = m.get("selector")) {
      if (p.mode == proxy_mode::sidecar && deployment)
        r.error(*x, m.child("selector"), "selector applies to gateway mode only (a sidecar runs inside the proxied pods)");
      else if (auto l = labels(*x, m.child("selector"), false))
        p.selector = std::move(*l);
    } else if (p.mode == proxy_mode::gateway && deployment) {
      r.error(n, path, "gateway mode needs a \"selector\" for the proxy pods");
    }
    if (auto x = m.get("limits")) parse_limits(*x, m.child("limits"));
    if (auto x = m.get("tls")) {
      map_view tm(r, *x, m.child("tls"), {"allow_missing_sni", "allow_ech"});
      if (tm.ok()) {
        if (auto y = tm.get("allow_missing_sni"))
          if (auto b = r.boolean(*y, tm.child("allow_missing_sni"))) p.allow_missing_sni = *b;
        if (auto y = tm.get("allow_ech"))
          if (auto b = r.boolean(*y, tm.child("allow_ech"))) p.allow_ech = *b;
      }
    }
    if (auto x = m.get("log")) {
      map_view lm(r, *x, m.child("log"), {"buffer_bytes"});
      if (lm.ok())
        if (auto y = lm.get("buffer_bytes"))
          if (auto v = r.integer(*y, lm.child("buffer_bytes"), 4096, 64 << 20)) p.log.buffer_bytes = static_cast<std::uint32_t>(*v);
    }
    if (auto x = m.get("resolver")) parse_resolver(*x, m.child("resolver"));
    if (auto x = m.get("capture")) {
      if (auto s = r.string(*x, m.child("capture"))) {
        if (*s == "env") p.capture = capture_mode::env;
        else if (*s == "dns") p.capture = capture_mode::dns;
        else if (*s == "both") p.capture = capture_mode::both;
        else r.error(*x, m.child("capture"), "capture must be env, dns or both, got \"" + *s + "\"");
      }
    }
    p.dns.listen_address = p.listen_address;
    p.transparent.listen_address = p.listen_address;
    if (auto x = m.get("dns")) parse_dns_responder(*x, m.child("dns"));
    if (auto x = m.get("transparent")) parse_transparent(*x, m.child("transparent"));
    if (p.transparent_capture()) check_capture(n, path, m);
    if (auto x = m.get("hosts")) {
      map_view hm(r, *x, m.child("hosts"), {});
      for (auto& [k, v] : hm.entries()) {
        std::string kp = hm.child(k.Scalar());
        auto h = normalize_host(k.Scalar(), host_syntax::bare);
        if (!h) {
          r.error(k, kp, "\"" + k.Scalar() + "\": " + h.error().message());
          continue;
        }
        if (h->is_ip()) {
          r.error(k, kp, "hosts keys are names, not addresses");
          continue;
        }
        if (p.hosts.count(h->text)) {
          r.error(k, kp, "\"" + h->text + "\" is listed twice (names are compared after normalisation)");
          continue;
        }
        std::vector<ip::address> addrs;
        if (r.is_sequence(v, kp)) {
          if (v.size() == 0) r.error(v, kp, "list must not be empty");
          for (std::size_t i = 0; i < v.size(); ++i)
            if (auto a = address(v[i], index_path(kp, i))) addrs.push_back(*a);
        }
        p.hosts.emplace(h->text, std::move(addrs));
      }
    }
  }

  void parse_allowlist(const YAML::Node& n, const std::string& path) {
    if (!r.is_sequence(n, path)) return;
    std::map<std::string, int> seen;
    for (std::size_t i = 0; i < n.size(); ++i) {
      std::string ep = index_path(path, i);
      map_view m(r, n[i], ep, {"host", "ports"});
      if (!m.ok()) continue;
      allow_entry e;
      e.line = n[i].Mark().line + 1;
      e.ports = {443};
      bool ok = true;
      if (auto x = m.require("host")) {
        std::string hp = m.child("host");
        if (auto s = r.string(*x, hp)) {
          auto pat = parse_host_pattern(*s);
          if (!pat) {
            r.error(*x, hp, host_message(*s, pat.error()));
            ok = false;
          } else {
            e.pattern = *pat;
            std::string canon = pat->to_string();
            if (auto it = seen.find(canon); it != seen.end()) {
              r.error(*x, hp, "\"" + canon + "\" is already listed at line " + std::to_string(it->second));
              ok = false;
            } else {
              seen.emplace(canon, e.line);
            }
            if (pat->wildcard && pat->base.text.find('.') == std::string::npos)
              r.warning(x->Mark(), hp, "\"" + canon + "\" allows every name under a top-level domain");
          }
        } else {
          ok = false;
        }
      } else {
        ok = false;
      }
      if (auto x = m.get("ports")) e.ports = port_list(*x, m.child("ports"));
      if (ok) cfg.allowlist.push_back(std::move(e));
    }
  }

  static std::string host_message(std::string_view text, const boost::system::error_code& ec) {
    std::string msg = "\"" + std::string(text) + "\": " + ec.message();
    if (ec == host_error::invalid_wildcard) {
      auto star = text.rfind('*');
      std::string_view rest = text.substr(star + 1);
      while (!rest.empty() && rest.front() == '.') rest.remove_prefix(1);
      if (!rest.empty() && rest.find('*') == std::string_view::npos) {
        auto n = normalize_host(rest, host_syntax::bare);
        if (n && !n->is_ip()) msg += "; did you mean \"*." + n->text + "\"?";
      }
    }
    return msg;
  }

  std::vector<cidr> cidr_list(const YAML::Node& n, const std::string& path, bool allow_default, bool* used_default) {
    std::vector<cidr> out;
    if (!r.is_sequence(n, path)) return out;
    for (std::size_t i = 0; i < n.size(); ++i) {
      std::string ip = index_path(path, i);
      auto s = r.string(n[i], ip);
      if (!s) continue;
      if (allow_default && *s == "default") {
        for (const auto& d : default_denied_ranges()) out.push_back(*parse_cidr(d.cidr));
        if (used_default) *used_default = true;
        continue;
      }
      auto c = parse_cidr(*s);
      if (!c) {
        r.error(n[i], ip, describe_cidr_error(*s, static_cast<cidr_error>(c.error().value())));
        continue;
      }
      out.push_back(*c);
    }
    return out;
  }

  // Cross-field checks once every field is read.
  void cross_check(const YAML::Node& root) {
    std::map<std::string, int> names;
    for (const auto& w : cfg.workloads) {
      if (w.name.empty()) continue;
      if (auto [it, fresh] = names.emplace(w.name, w.line); !fresh)
        r.diags().error(r.file(), w.line, 0, "workloads", "duplicate workload name \"" + w.name + "\" (first at line " +
                                                               std::to_string(it->second) + ")");
    }
    auto check_peer = [&](const peer& p, const std::string& where) {
      if (p.workload) {
        if (!cfg.find_workload(*p.workload))
          r.diags().error(r.file(), p.line, p.column, where, "unknown workload \"" + *p.workload + "\"");
      } else if (p.pod_selector && !p.namespace_selector) {
        bool any = std::any_of(cfg.workloads.begin(), cfg.workloads.end(), [&](const workload& w) {
          return std::all_of(p.pod_selector->begin(), p.pod_selector->end(), [&](const auto& kv) {
            auto it = w.selector.find(kv.first);
            return it != w.selector.end() && it->second == kv.second;
          });
        });
        if (!any)
          r.diags().error(r.file(), p.line, p.column, where,
                          "pod_selector matches no workload of namespace \"" + cfg.namespace_name +
                              "\" (add namespace_selector for pods elsewhere)");
      }
    };
    for (std::size_t wi = 0; wi < cfg.workloads.size(); ++wi) {
      const auto& w = cfg.workloads[wi];
      std::string wp = index_path("workloads", wi);
      for (std::size_t pi = 0; pi < w.ports.size(); ++pi)
        for (std::size_t fi = 0; fi < w.ports[pi].from.size(); ++fi)
          check_peer(w.ports[pi].from[fi], index_path(index_path(wp + ".ports", pi) + ".from", fi));
      for (std::size_t pi = 0; pi < w.egress_peers.size(); ++pi) {
        const auto& p = w.egress_peers[pi];
        std::string pp = index_path(wp + ".egress.peers", pi);
        check_peer(p, pp);
        if (!p.workload) continue;
        const workload* target = cfg.find_workload(*p.workload);
        if (!target) continue;
        if (p.ports.empty() && target->ports.empty())
          r.diags().error(r.file(), p.line, p.column, pp,
                          "workload \"" + target->name + "\" serves no ports; give \"ports\"");
        for (auto port : p.ports) {
          bool served = std::any_of(target->ports.begin(), target->ports.end(),
                                    [&](const served_port& s) { return s.port == port; });
          if (!served)
            r.diags().error(r.file(), p.line, p.column, pp,
                            "workload \"" + target->name + "\" does not serve port " + std::to_string(port));
        }
      }
      if (w.egress == egress_class::proxy && !cfg.has_proxy)
        r.diags().error(r.file(), w.line, 0, wp + ".egress", "egress class proxy needs a \"proxy\" section");
    }
    if (cfg.has_proxy && cfg.proxy.transparent_capture()) {
      // Every allowlisted port gets a transparent listener: none may be a port the proxy
      // already listens on.
      const auto& p = cfg.proxy;
      for (const auto& e : cfg.allowlist)
        for (auto port : e.ports)
          if (port == p.port || port == p.admin_port)
            r.diags().error(r.file(), e.line, 0, "allowlist",
                            "port " + std::to_string(port) + " is the proxy's " +
                                (port == p.port ? "listener port" : "admin port") +
                                "; capture " + std::string(to_string(p.capture)) +
                                " opens a transparent listener on every allowlisted port");
    }
    if (cfg.has_proxy && cfg.allowlist.empty() && !r.diags().has_errors())
      r.error(root, "allowlist", "the proxy needs at least one allowlist entry");
    if (cfg.has_proxy && deployment &&
        std::none_of(cfg.workloads.begin(), cfg.workloads.end(),
                     [](const workload& w) { return w.egress == egress_class::proxy; }))
      r.warning(root.Mark(), "proxy", "no workload has egress class proxy; the proxy serves nobody");
    if (cfg.proxy.mode == proxy_mode::gateway && !cfg.proxy.selector.empty()) {
      for (const auto& w : cfg.workloads)
        if (std::all_of(cfg.proxy.selector.begin(), cfg.proxy.selector.end(), [&](const auto& kv) {
              auto it = w.selector.find(kv.first);
              return it != w.selector.end() && it->second == kv.second;
            }))
          r.diags().error(r.file(), w.line, 0, "proxy.selector",
                          "proxy.selector also selects workload \"" + w.name + "\"; give the proxy pods their own labels");
      // The other way round: every proxy pod would also get the workload's policies (and,
      // for a proxy workload in gateway mode, Calico's deny of everything but the proxy).
      for (std::size_t wi = 0; wi < cfg.workloads.size(); ++wi) {
        const auto& w = cfg.workloads[wi];
        if (!w.selector.empty() && std::all_of(w.selector.begin(), w.selector.end(), [&](const auto& kv) {
              auto it = cfg.proxy.selector.find(kv.first);
              return it != cfg.proxy.selector.end() && it->second == kv.second;
            }))
          r.diags().error(r.file(), w.line, 0, index_path("workloads", wi) + ".selector",
                          "the selector of workload \"" + w.name +
                              "\" also selects the proxy pods (every label of it is in proxy.selector); "
                              "give the workload or the proxy pods a label of their own");
      }
    }
  }

  void load(const YAML::Node& root, accept_kind accept) {
    map_view m(r, root, "",
               {"version", "kind", "source", "namespace", "workloads", "proxy", "allowlist", "dns", "upstream_cidrs",
                "denied_cidrs", "allow_cidrs"});
    if (!m.ok()) return;
    if (auto v = m.require("version")) {
      if (auto n = r.integer(*v, "version", 0, 1'000'000); n && *n != 1)
        r.error(*v, "version", "unsupported version " + std::to_string(*n) + "; this build reads version 1");
    }
    if (auto k = m.get("kind")) {
      if (auto s = r.string(*k, "kind")) {
        if (*s == "proxy") cfg.kind = config_kind::proxy;
        else if (*s != "deployment") r.error(*k, "kind", "kind must be deployment or proxy, got \"" + *s + "\"");
      }
    }
    deployment = cfg.kind == config_kind::deployment;
    if (!deployment && accept == accept_kind::deployment_only)
      r.error(*m.get("kind"), "kind",
              "egress-gen reads deployment configs; check a kind proxy file with `egress-proxy --check-config FILE`");
    auto only_in = [&](std::string_view key, bool wanted_deployment) {
      if (auto x = m.get(key); x && deployment != wanted_deployment) {
        r.error(*x, std::string(key),
                "\"" + std::string(key) + "\" belongs in a kind " + (wanted_deployment ? "deployment" : "proxy") + " file");
        return false;
      }
      return true;
    };
    if (only_in("source", false))
      if (auto x = m.get("source"))
        if (auto s = r.string(*x, "source")) cfg.source = *s;
    if (deployment) {
      if (auto x = m.require("namespace")) {
        if (auto s = r.string(*x, "namespace")) {
          if (!is_dns1123_label(*s))
            r.error(*x, "namespace",
                    "\"" + *s + "\" is not a valid namespace (DNS-1123 label: lower case letters, digits and '-', at most 63)");
          cfg.namespace_name = *s;
        }
      }
      if (auto x = m.require("workloads")) {
        if (r.is_sequence(*x, "workloads")) {
          if (x->size() == 0) r.error(*x, "workloads", "list must not be empty");
          for (std::size_t i = 0; i < x->size(); ++i) parse_workload((*x)[i], index_path("workloads", i));
        }
      }
      if (auto x = m.get("dns")) {
        map_view dm(r, *x, "dns", {"namespace", "selector", "node_local_address"});
        if (dm.ok()) {
          if (auto y = dm.get("namespace")) {
            if (auto s = r.string(*y, dm.child("namespace"))) {
              if (!is_dns1123_label(*s)) r.error(*y, dm.child("namespace"), "\"" + *s + "\" is not a valid namespace");
              cfg.dns.namespace_name = *s;
            }
          }
          if (auto y = dm.get("selector"))
            if (auto l = labels(*y, dm.child("selector"), false)) cfg.dns.selector = std::move(*l);
          if (auto y = dm.get("node_local_address"))
            cfg.dns.node_local_address = address(*y, dm.child("node_local_address"));
        }
      }
    } else {
      only_in("namespace", true);
      only_in("workloads", true);
      only_in("dns", true);
    }
    if (auto x = m.get("proxy")) parse_proxy(*x, "proxy");
    else if (!deployment) r.error(root, "", "missing required key \"proxy\"");
    if (auto x = m.get("allowlist")) parse_allowlist(*x, "allowlist");
    if (auto x = m.get("upstream_cidrs")) {
      cfg.upstream_cidrs = cidr_list(*x, "upstream_cidrs", false, nullptr);
      if (cfg.upstream_cidrs.empty() && x->IsSequence()) r.error(*x, "upstream_cidrs", "list must not be empty");
    } else {
      cfg.upstream_cidrs = {*parse_cidr("0.0.0.0/0"), *parse_cidr("::/0")};
    }
    if (auto x = m.get("denied_cidrs")) {
      bool used_default = false;
      cfg.denied_cidrs = cidr_list(*x, "denied_cidrs", true, &used_default);
      cfg.denied_cidrs_default = used_default;
      // A rendered proxy file lists the ranges expanded; only hand-written deployment
      // configs are warned that they dropped the built-in list.
      if (!used_default && deployment)
        r.warning(x->Mark(), "denied_cidrs",
                  "the built-in denied ranges are not included; add \"default\" to the list to keep them");
    } else {
      for (const auto& d : default_denied_ranges()) cfg.denied_cidrs.push_back(*parse_cidr(d.cidr));
    }
    if (auto x = m.get("allow_cidrs")) {
      cfg.allow_cidrs = cidr_list(*x, "allow_cidrs", false, nullptr);
      if (!cfg.allow_cidrs.empty())
        r.warning(x->Mark(), "allow_cidrs", "overrides the denied ranges for " + [&] {
          std::string s;
          for (const auto& a : cfg.allow_cidrs) s += (s.empty() ? "" : ", ") + a.to_string();
          return s;
        }() + "; use only for tests");
    }
    cross_check(root);
    if (cfg.has_proxy && !r.diags().has_errors()) check_upstream(root, m);
  }

  // Upstream ranges that leave nothing once the denied ranges are taken out: the proxy
  // could reach nothing, and the IP-level rule would have no destination at all, which a
  // NetworkPolicy reads as "every destination". An error; one range that opens nothing
  // while others do is a warning.
  void check_upstream(const YAML::Node& root, const map_view& m) {
    const upstream_policy policy = cfg.address_policy();
    auto up = m.get("upstream_cidrs");
    if (policy.reachable_upstream().empty()) {
      auto denied = m.get("denied_cidrs");
      std::string ranges;
      for (const auto& c : cfg.upstream_cidrs) ranges += (ranges.empty() ? "" : ", ") + c.to_string();
      r.error(up ? *up : denied ? *denied : root, up || !denied ? "upstream_cidrs" : "denied_cidrs",
              "the upstream ranges (" + ranges +
                  ") lie wholly inside the denied ranges (with their NAT64/6to4 forms, after allow_cidrs): "
                  "the proxy could reach no upstream at all; widen upstream_cidrs or add the range to allow_cidrs");
      return;
    }
    if (!up) return;
    const cidr_set denied = policy.ip_level_denied();
    for (std::size_t i = 0; i < cfg.upstream_cidrs.size() && i < up->size(); ++i) {
      cidr_set one({cfg.upstream_cidrs[i]});
      one.remove(denied);
      if (one.empty())
        r.warning((*up)[i].Mark(), index_path("upstream_cidrs", i),
                  cfg.upstream_cidrs[i].to_string() + " lies wholly inside the denied ranges; it opens nothing");
    }
  }
};

}  // namespace

std::string_view to_string(egress_class c) noexcept {
  switch (c) {
    case egress_class::none: return "none";
    case egress_class::dns_only: return "dns-only";
    case egress_class::proxy: return "proxy";
    case egress_class::peers: return "peers";
  }
  return "none";
}

std::string_view to_string(proxy_mode m) noexcept { return m == proxy_mode::sidecar ? "sidecar" : "gateway"; }

std::string_view to_string(capture_mode m) noexcept {
  switch (m) {
    case capture_mode::env: return "env";
    case capture_mode::dns: return "dns";
    case capture_mode::both: return "both";
  }
  return "env";
}

upstream_policy config::address_policy() const {
  upstream_policy p;
  p.upstream = cidr_set(upstream_cidrs);
  p.denied = cidr_set(denied_cidrs);
  p.allow = cidr_set(allow_cidrs);
  return p;
}

const workload* config::find_workload(std::string_view name) const noexcept {
  for (const auto& w : workloads)
    if (w.name == name) return &w;
  return nullptr;
}

std::optional<config> load_config_text(const std::string& text, const std::string& path, accept_kind accept,
                                       diagnostics& diags) {
  diagnostics local;
  config cfg;
  cfg.file = path;
  yaml_reader r(path, local);
  try {
    std::vector<YAML::Node> docs = YAML::LoadAll(text);
    if (docs.empty() || docs[0].IsNull()) {
      local.error(path, 0, 0, "", "file is empty; expected a mapping starting with \"version: 1\"");
    } else if (docs.size() > 1) {
      local.error(path, docs[1].Mark().line + 1, docs[1].Mark().column + 1, "",
                  "more than one YAML document; put the configuration in one");
    } else {
      loader{r, cfg}.load(docs[0], accept);
    }
  } catch (const YAML::Exception& e) {
    local.error(path, e.mark.is_null() ? 0 : e.mark.line + 1, e.mark.is_null() ? 0 : e.mark.column + 1, "",
                "YAML syntax: " + e.msg);
  }
  local.sort();
  bool bad = local.has_errors();
  for (const auto& d : local.items()) diags.add(d);
  if (bad) return std::nullopt;
  return cfg;
}

std::optional<config> load_config(const std::string& path, accept_kind accept, diagnostics& diags) {
  errno = 0;
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    diags.error(path, 0, 0, "", std::string("cannot read file: ") + (errno ? std::strerror(errno) : "unknown error"));
    return std::nullopt;
  }
  std::ostringstream ss;
  ss << in.rdbuf();
  return load_config_text(ss.str(), path, accept, diags);
}

}  // namespace egress::common
