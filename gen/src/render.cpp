#include "egress/gen/render.hpp"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <stdexcept>
#include <system_error>

#include <fcntl.h>
#include <unistd.h>

namespace egress::gen {
namespace {

using common::config;
using common::egress_class;
using common::label_map;
using common::peer;
using common::proxy_mode;
using common::workload;

constexpr std::string_view metadata_name_label = "kubernetes.io/metadata.name";

/// A layer-4 destination port.
struct l4 {
  std::string protocol;
  std::uint16_t port;
  friend auto operator<=>(const l4&, const l4&) = default;
};

std::string object_name(std::string_view suffix) { return std::string(object_prefix) + "-" + std::string(suffix); }

// The renderer's own guard against failing open. In a NetworkPolicy an empty `to`/`from`
// means every peer and an empty `ports` every port; an empty podSelector every pod of
// the namespace. Where the renderer means a list of peers, ports or pods, it must never
// write an empty one: a validated config cannot get here, and if one does, rendering
// stops (std::logic_error) instead of writing a policy that allows everything.
void require_some(const node& n, std::string_view what) {
  if (n.empty())
    throw std::logic_error(std::string(what) + " came out empty, which would allow everything; refusing to render");
}

const workload& target_of(const config& cfg, const peer& p) {
  const workload* w = cfg.find_workload(*p.workload);
  if (!w) throw std::logic_error("peer names unknown workload \"" + *p.workload + "\"; refusing to render");
  return *w;
}

// Calico names must be one DNS label (<= 63); long namespaces are shortened with a stable
// hash so names stay unique and deterministic.
std::string calico_name(const config& cfg, std::string_view suffix) {
  std::string name = std::string(object_prefix) + "-" + cfg.namespace_name + "-" + std::string(suffix);
  // A Helm template expression is measured after rendering, not here.
  if (name.size() <= 63 || cfg.namespace_name.find("{{") != std::string::npos) return name;
  std::uint32_t h = 2166136261u;  // FNV-1a of the namespace
  for (char c : cfg.namespace_name) h = (h ^ static_cast<unsigned char>(c)) * 16777619u;
  char hex[9];
  std::snprintf(hex, sizeof hex, "%08x", h);
  std::string head = std::string(object_prefix) + "-";
  std::size_t room = 63 - head.size() - suffix.size() - 10;
  std::string ns = cfg.namespace_name.substr(0, room);
  while (!ns.empty() && ns.back() == '-') ns.pop_back();
  return head + ns + "-" + hex + "-" + std::string(suffix);
}

node labels_node(const label_map& m) {
  node n = node::map();
  for (const auto& [k, v] : m) n.set(k, node::str(v));
  return n;
}

node match_labels(const label_map& m) {
  node n = node::map();
  if (!m.empty()) n.set("matchLabels", labels_node(m));
  return n;
}

node object_labels(const render_options& opts) {
  node n = node::map();
  for (const auto& [k, v] : {std::pair<std::string, std::string>{"app.kubernetes.io/managed-by", "egress-gen"},
                             {"app.kubernetes.io/part-of", std::string(object_prefix)}})
    if (!opts.extra_labels.count(k)) n.set(k, node::str(v));  // extra labels override
  for (const auto& [k, v] : opts.extra_labels) n.set(k, node::str(v));
  return n;
}

node metadata(std::string name, const std::string* ns, const render_options& opts) {
  node m = node::map();
  m.set("name", node::str(std::move(name)));
  if (ns) m.set("namespace", node::str(*ns));
  m.set("labels", object_labels(opts));
  return m;
}

// Calico selector expression for matchLabels semantics.
std::string calico_selector(const label_map& m) {
  if (m.empty()) return "all()";
  std::string out;
  for (const auto& [k, v] : m) {
    if (!out.empty()) out += " && ";
    out += k + " == '" + v + "'";
  }
  return out;
}

std::string calico_namespace(const std::string& ns) {
  return std::string(metadata_name_label) + " == '" + ns + "'";
}

bool needs_dns(egress_class c) { return c == egress_class::dns_only || c == egress_class::proxy; }

// The (protocol, port) pairs an egress peer opens (config.hpp `peer::ports`): a workload
// peer's port means every protocol the workload serves it with (5432/TCP and 5432/UDP
// both), a workload peer without ports gets every (protocol, port) it serves, and a
// selector peer's ports are TCP.
std::vector<l4> peer_ports(const config& cfg, const peer& p) {
  std::vector<l4> out;
  if (p.workload) {
    for (const auto& s : target_of(cfg, p).ports)
      if (p.ports.empty() || std::find(p.ports.begin(), p.ports.end(), s.port) != p.ports.end())
        out.push_back({s.protocol, s.port});
  } else {
    for (auto port : p.ports) out.push_back({"TCP", port});
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  if (out.empty()) throw std::logic_error("an egress peer opens no port; refusing to render");
  return out;
}

std::vector<std::uint16_t> allowlist_ports(const config& cfg) {
  std::set<std::uint16_t> ports;
  for (const auto& e : cfg.allowlist) ports.insert(e.ports.begin(), e.ports.end());
  return {ports.begin(), ports.end()};
}

node k8s_ports(const std::vector<l4>& ports) {
  node n = node::seq();
  for (const auto& p : ports)
    n.push(node::map().set("protocol", node::str(p.protocol)).set("port", node::integer(p.port)));
  return n;
}

std::vector<l4> dns_ports() { return {{"UDP", 53}, {"TCP", 53}}; }

// One NetworkPolicy rule: `key` (to/from) the peers, on the ports; neither may be empty.
node k8s_rule(std::string_view key, node peers, node ports, std::string_view what) {
  require_some(peers, std::string(what) + ": " + std::string(key));
  require_some(ports, std::string(what) + ": ports");
  return node::map().set(std::string(key), std::move(peers)).set("ports", std::move(ports));
}

// A NetworkPolicyPeer for the pods of the policy's namespace matching `selector`, which
// must not be empty (`podSelector: {}` is every pod).
node pods_peer(const label_map& selector, const std::string& what) {
  node sel = match_labels(selector);
  require_some(sel, what);
  return node::map().set("podSelector", std::move(sel));
}

// A Kubernetes NetworkPolicyPeer for an in-cluster peer.
node k8s_peer(const config& cfg, const peer& p) {
  node n = node::map();
  if (p.workload) {
    const workload& w = target_of(cfg, p);
    return pods_peer(w.selector, "the selector of workload " + w.name);
  }
  if (p.namespace_selector) n.set("namespaceSelector", match_labels(*p.namespace_selector));
  if (p.pod_selector) n.set("podSelector", match_labels(*p.pod_selector));
  return n;
}

node dns_rule(const config& cfg) {
  node to = node::seq();
  to.push(node::map()
              .set("namespaceSelector", match_labels({{std::string(metadata_name_label), cfg.dns.namespace_name}}))
              .set("podSelector", match_labels(cfg.dns.selector)));
  if (cfg.dns.node_local_address) {
    common::cidr c(*cfg.dns.node_local_address, cfg.dns.node_local_address->is_v4() ? 32 : 128);
    to.push(node::map().set("ipBlock", node::map().set("cidr", node::str(c.to_string()))));
  }
  return k8s_rule("to", std::move(to), k8s_ports(dns_ports()), "the DNS rule");
}

// The effective denied ranges as IP-level rules see them (denied minus allow overrides,
// plus the NAT64 and 6to4 forms of every denied IPv4 block: the proxy unwraps those forms,
// IP-level policy cannot, so it denies them outright).
common::cidr_set ip_level_denied(const config& cfg) { return cfg.address_policy().ip_level_denied(); }

// ipBlock peers for the upstream ranges: each upstream CIDR minus the denied ranges
// inside it. The allow overrides need no peers of their own: they are already taken out
// of the denied ranges, so they are simply not excepted.
// IPv4-mapped blocks (::ffff:0:0/96) are left out of `except`: Kubernetes' strict CIDR
// validation (KEP-4858) rejects IPv4-mapped values in ipBlock fields, and a connection to
// ::ffff:a.b.c.d leaves the pod as IPv4, where the IPv4 excepts apply.
node upstream_peers(const config& cfg) {
  common::cidr_set denied = ip_level_denied(cfg);
  denied.remove(*common::parse_cidr("::ffff:0:0/96"));
  node to = node::seq();
  const common::cidr_set upstream(cfg.upstream_cidrs);
  for (const auto& u : upstream.blocks()) {
    if (denied.covers(u)) continue;
    node block = node::map().set("cidr", node::str(u.to_string()));
    std::vector<std::string> except;
    for (const auto& d : denied.within(u)) except.push_back(d.to_string());
    if (!except.empty()) block.set("except", node::str_seq(except));
    to.push(node::map().set("ipBlock", std::move(block)));
  }
  // The loader refuses upstream ranges that lie wholly inside the denied ranges; an empty
  // list here would be `to: []`, every destination.
  require_some(to, "the upstream ipBlocks (upstream_cidrs minus the denied ranges)");
  return to;
}

node upstream_rule(const config& cfg) {
  std::vector<l4> ports;
  for (auto p : allowlist_ports(cfg)) ports.push_back({"TCP", p});
  return k8s_rule("to", upstream_peers(cfg), k8s_ports(ports), "the upstream rule");
}

// `selector` empty = every pod of the namespace; only the namespace default deny uses that.
node network_policy(const config& cfg, const render_options& opts, std::string name, const label_map& selector,
                    node ingress, node egress) {
  node spec = node::map();
  if (selector.empty() && name != object_name("default-deny"))
    throw std::logic_error("NetworkPolicy " + name + " would select every pod of the namespace; refusing to render");
  spec.set("podSelector", match_labels(selector));
  spec.set("policyTypes", node::str_seq({"Ingress", "Egress"}));
  if (!ingress.empty()) spec.set("ingress", std::move(ingress));
  if (!egress.empty()) spec.set("egress", std::move(egress));
  node doc = node::map();
  doc.set("apiVersion", node::str("networking.k8s.io/v1"));
  doc.set("kind", node::str("NetworkPolicy"));
  doc.set("metadata", metadata(std::move(name), &cfg.namespace_name, opts));
  doc.set("spec", std::move(spec));
  return doc;
}

bool gateway(const config& cfg) { return cfg.has_proxy && cfg.proxy.mode == proxy_mode::gateway; }

std::vector<const workload*> proxied(const config& cfg) {
  std::vector<const workload*> out;
  for (const auto& w : cfg.workloads)
    if (w.egress == egress_class::proxy) out.push_back(&w);
  return out;
}

std::string header(const render_options& opts, std::string_view what) {
  return "# Generated by egress-gen from " + opts.source + ": " + std::string(what) +
         ".\n# Do not edit: change the source config and run `make policies`.\n";
}

std::string documents(const std::vector<node>& docs) {
  std::string out;
  for (const auto& d : docs) {
    out += "---\n";
    out += d.emit();
  }
  return out;
}

// Calico rule: one protocol, destination entity.
node calico_rule(std::string action, const std::string* protocol, node source, node destination) {
  node r = node::map();
  r.set("action", node::str(std::move(action)));
  if (protocol) r.set("protocol", node::str(*protocol));
  if (!source.empty()) r.set("source", std::move(source));
  if (!destination.empty()) r.set("destination", std::move(destination));
  return r;
}

node port_list(const std::vector<std::uint16_t>& ports) {
  node n = node::seq();
  for (auto p : ports) n.push(node::integer(p));
  return n;
}

// Calico EntityRule for pods of the deployment's namespace matching `selector`. Every
// rule selector that means pods carries a namespaceSelector: in a GlobalNetworkPolicy a
// bare selector matches endpoints of every namespace AND every (Global)NetworkSet with
// those labels, and a set of private ranges holds every pod IP (Calico reference,
// "Global network policy", EntityRule selector/namespaceSelector).
node namespace_pods(const config& cfg, const label_map& selector) {
  if (selector.empty()) throw std::logic_error("a rule selector for workload pods came out empty; refusing to render");
  return node::map()
      .set("selector", node::str(calico_selector(selector)))
      .set("namespaceSelector", node::str(calico_namespace(cfg.namespace_name)));
}

// Calico EntityRule for an in-cluster peer (namespaceSelector is always set, see above).
node calico_peer(const config& cfg, const peer& p) {
  node d = node::map();
  if (p.workload) {
    d = namespace_pods(cfg, target_of(cfg, p).selector);
  } else {
    d.set("selector", node::str(calico_selector(p.pod_selector.value_or(label_map{}))));
    d.set("namespaceSelector", node::str(p.namespace_selector ? calico_selector(*p.namespace_selector)
                                                               : calico_namespace(cfg.namespace_name)));
  }
  return d;
}

// Allow rules, one per protocol, from `source` (an EntityRule) to `dest` on `ports`.
void allow_rules(node& rules, const node& source, const node& dest, const std::vector<l4>& ports) {
  std::map<std::string, std::vector<std::uint16_t>> by_proto;
  for (const auto& p : ports) by_proto[p.protocol].push_back(p.port);
  // UDP before TCP for DNS reads naturally; any fixed order keeps output stable.
  for (const auto& proto : {std::string("UDP"), std::string("TCP"), std::string("SCTP")}) {
    auto it = by_proto.find(proto);
    if (it == by_proto.end()) continue;
    node d = dest;
    d.set("ports", port_list(it->second));
    rules.push(calico_rule("Allow", &proto, source, std::move(d)));
  }
}

void dns_allow_rules(const config& cfg, node& rules, const node& source) {
  node kube_dns = node::map()
                      .set("selector", node::str(calico_selector(cfg.dns.selector)))
                      .set("namespaceSelector", node::str(calico_namespace(cfg.dns.namespace_name)));
  allow_rules(rules, source, kube_dns, dns_ports());
  if (cfg.dns.node_local_address) {
    common::cidr c(*cfg.dns.node_local_address, cfg.dns.node_local_address->is_v4() ? 32 : 128);
    node local = node::map().set("nets", node::str_seq({c.to_string()}));
    allow_rules(rules, source, local, dns_ports());
  }
}

// The GlobalNetworkSet's own label (a key no config selector may use, see config.hpp).
std::string denied_set_label(const config& cfg) { return cfg.namespace_name + "-denied"; }
constexpr std::string_view denied_set_key = common::denied_set_label_key;

}  // namespace

std::vector<node> network_policies(const config& cfg, const render_options& opts) {
  std::vector<node> docs;
  docs.push_back(network_policy(cfg, opts, object_name("default-deny"), {}, node::seq(), node::seq()));
  for (const auto& w : cfg.workloads) {
    node ingress = node::seq();
    for (const auto& sp : w.ports) {
      node from = node::seq();
      for (const auto& p : sp.from) from.push(k8s_peer(cfg, p));
      ingress.push(k8s_rule("from", std::move(from), k8s_ports({{sp.protocol, sp.port}}),
                            "the ingress rule of " + w.name + " port " + std::to_string(sp.port)));
    }
    node egress = node::seq();
    if (needs_dns(w.egress)) egress.push(dns_rule(cfg));
    for (const auto& p : w.egress_peers)
      egress.push(k8s_rule("to", node::seq().push(k8s_peer(cfg, p)), k8s_ports(peer_ports(cfg, p)),
                           "an egress peer rule of " + w.name));
    if (w.egress == egress_class::proxy && cfg.has_proxy) {
      if (gateway(cfg)) {
        egress.push(k8s_rule("to", node::seq().push(pods_peer(cfg.proxy.selector, "proxy.selector")),
                             k8s_ports({{"TCP", cfg.proxy.port}}), "the proxy rule of " + w.name));
      } else {
        egress.push(upstream_rule(cfg));
      }
    }
    docs.push_back(network_policy(cfg, opts, object_name(w.name), w.selector, std::move(ingress), std::move(egress)));
  }
  if (gateway(cfg)) {
    node from = node::seq();
    for (const auto* w : proxied(cfg)) from.push(pods_peer(w->selector, "the selector of workload " + w->name));
    node ingress = node::seq();
    if (!from.empty())
      ingress.push(k8s_rule("from", std::move(from), k8s_ports({{"TCP", cfg.proxy.port}}), "the proxy pods' ingress rule"));
    node egress = node::seq();
    egress.push(dns_rule(cfg));
    egress.push(upstream_rule(cfg));
    docs.push_back(network_policy(cfg, opts, object_name("egress-proxy"), cfg.proxy.selector, std::move(ingress), std::move(egress)));
  }
  return docs;
}

std::vector<node> calico_objects(const config& cfg, const render_options& opts) {
  std::vector<node> docs;
  const std::string ns_selector = calico_namespace(cfg.namespace_name);
  common::cidr_set denied = ip_level_denied(cfg);

  // GlobalNetworkSet of the denied ranges.
  {
    std::vector<std::string> nets;
    for (const auto& b : denied.blocks()) nets.push_back(b.to_string());
    node labels = object_labels(opts);
    labels.set(std::string(denied_set_key), node::str(denied_set_label(cfg)));
    node doc = node::map();
    doc.set("apiVersion", node::str("projectcalico.org/v3"));
    doc.set("kind", node::str("GlobalNetworkSet"));
    node meta = node::map();
    meta.set("name", node::str(calico_name(cfg, "denied")));
    meta.set("labels", std::move(labels));
    doc.set("metadata", std::move(meta));
    doc.set("spec", node::map().set("nets", node::str_seq(nets)));
    docs.push_back(std::move(doc));
  }

  auto gnp = [&](std::string suffix, std::optional<int> order, std::string selector, std::vector<std::string> types,
                 node ingress, node egress) {
    node spec = node::map();
    if (order) spec.set("order", node::integer(*order));
    spec.set("namespaceSelector", node::str(ns_selector));
    spec.set("selector", node::str(std::move(selector)));
    spec.set("types", node::str_seq(types));
    if (!ingress.empty()) spec.set("ingress", std::move(ingress));
    if (!egress.empty()) spec.set("egress", std::move(egress));
    node doc = node::map();
    doc.set("apiVersion", node::str("projectcalico.org/v3"));
    doc.set("kind", node::str("GlobalNetworkPolicy"));
    doc.set("metadata", metadata(calico_name(cfg, suffix), nullptr, opts));
    doc.set("spec", std::move(spec));
    return doc;
  };

  // Denied ranges: allow the configured in-cluster paths first (pod and node-local DNS
  // addresses are inside the denied private ranges), then deny the set.
  {
    node egress = node::seq();
    for (const auto& w : cfg.workloads) {
      if (w.egress == egress_class::none) continue;
      const node src = namespace_pods(cfg, w.selector);
      if (needs_dns(w.egress)) dns_allow_rules(cfg, egress, src);
      for (const auto& p : w.egress_peers) allow_rules(egress, src, calico_peer(cfg, p), peer_ports(cfg, p));
      if (w.egress == egress_class::proxy && gateway(cfg)) {
        allow_rules(egress, src, namespace_pods(cfg, cfg.proxy.selector), {{"TCP", cfg.proxy.port}});
      }
    }
    if (gateway(cfg)) {
      dns_allow_rules(cfg, egress, namespace_pods(cfg, cfg.proxy.selector));
      // Gateway mode enforces the allowlist: a proxied workload's only way out is the
      // proxy, so everything else it sends is denied here, ahead of any Kubernetes
      // NetworkPolicy that might allow more.
      for (const auto* w : proxied(cfg)) {
        node rule = node::map();
        rule.set("action", node::str("Deny"));
        rule.set("source", namespace_pods(cfg, w->selector));
        egress.push(std::move(rule));
      }
    }
    // The set and nothing else: a pod wearing the set's label is no network set (workload
    // endpoints carry projectcalico.org/namespace; network sets may not, Calico's
    // validator refuses that label on them).
    const std::string set_selector = std::string(denied_set_key) + " == '" + denied_set_label(cfg) +
                                     "' && !has(projectcalico.org/namespace)";
    for (int version : {4, 6}) {
      node rule = node::map();
      rule.set("action", node::str("Deny"));
      rule.set("ipVersion", node::integer(version));
      rule.set("destination", node::map().set("selector", node::str(set_selector)));
      egress.push(std::move(rule));
    }
    docs.push_back(gnp("deny-denied-ranges", opts.calico_order, "all()", {"Egress"}, node::seq(), std::move(egress)));
  }

  // No egress at all for class none, at the same precedence.
  {
    std::vector<std::string> selectors;
    for (const auto& w : cfg.workloads)
      if (w.egress == egress_class::none) selectors.push_back("(" + calico_selector(w.selector) + ")");
    if (!selectors.empty()) {
      std::string sel;
      for (const auto& s : selectors) sel += (sel.empty() ? "" : " || ") + s;
      if (selectors.size() == 1) sel = sel.substr(1, sel.size() - 2);
      node egress = node::seq().push(node::map().set("action", node::str("Deny")));
      docs.push_back(gnp("deny-all-egress", opts.calico_order, sel, {"Egress"}, node::seq(), std::move(egress)));
    }
  }

  // Namespace default deny without order: evaluated after the Kubernetes policies (order
  // 1000); keeps DNS for the workloads that have it.
  {
    node egress = node::seq();
    for (const auto& w : cfg.workloads)
      if (needs_dns(w.egress)) dns_allow_rules(cfg, egress, namespace_pods(cfg, w.selector));
    if (gateway(cfg)) dns_allow_rules(cfg, egress, namespace_pods(cfg, cfg.proxy.selector));
    docs.push_back(gnp("default-deny", std::nullopt, "all()", {"Ingress", "Egress"}, node::seq(), std::move(egress)));
  }
  return docs;
}

node proxy_config(const config& cfg, const render_options& opts) {
  const auto& p = cfg.proxy;
  node doc = node::map();
  doc.set("version", node::integer(1));
  doc.set("kind", node::str("proxy"));
  doc.set("source", node::str(opts.source));
  node px = node::map();
  px.set("mode", node::str(std::string(common::to_string(p.mode))));
  px.set("port", node::integer(p.port));
  px.set("admin_port", node::integer(p.admin_port));
  px.set("listen_address", node::str(p.listen_address));
  px.set("admin_address", node::str(p.admin_address));
  if (!p.selector.empty()) px.set("selector", labels_node(p.selector));
  const auto& l = p.limits;
  px.set("limits", node::map()
                       .set("max_connections", node::integer(l.max_connections))
                       .set("max_header_bytes", node::integer(l.max_header_bytes))
                       .set("header_timeout_ms", node::integer(l.header_timeout.count()))
                       .set("connect_timeout_ms", node::integer(l.connect_timeout.count()))
                       .set("idle_timeout_ms", node::integer(l.idle_timeout.count()))
                       .set("client_hello_timeout_ms", node::integer(l.client_hello_timeout.count()))
                       .set("max_client_hello_bytes", node::integer(l.max_client_hello_bytes))
                       .set("drain_timeout_ms", node::integer(l.drain_timeout.count()))
                       .set("max_tunnel_lifetime_ms", node::integer(l.max_tunnel_lifetime.count())));
  px.set("tls", node::map()
                    .set("allow_missing_sni", node::boolean(p.allow_missing_sni))
                    .set("allow_ech", node::boolean(p.allow_ech)));
  px.set("log", node::map().set("buffer_bytes", node::integer(p.log.buffer_bytes)));
  node resolver = node::map();
  resolver.set("servers", node::str_seq(p.resolver.servers));
  resolver.set("timeout_ms", node::integer(p.resolver.timeout.count()));
  resolver.set("min_ttl_s", node::integer(p.resolver.min_ttl.count()));
  resolver.set("max_ttl_s", node::integer(p.resolver.max_ttl.count()));
  px.set("resolver", std::move(resolver));
  px.set("capture", node::str(std::string(common::to_string(p.capture))));
  node dns = node::map();
  dns.set("listen_address", node::str(p.dns.listen_address));
  dns.set("port", node::integer(p.dns.port));
  if (p.dns.answer_ipv4) dns.set("answer_ipv4", node::str(p.dns.answer_ipv4->to_string()));
  if (p.dns.answer_ipv6) dns.set("answer_ipv6", node::str(p.dns.answer_ipv6->to_string()));
  dns.set("ttl_s", node::integer(p.dns.ttl.count()));
  dns.set("cluster_domains", node::str_seq(p.dns.cluster_domains));
  dns.set("cluster_dns", node::str_seq(p.dns.cluster_dns));
  px.set("dns", std::move(dns));
  node transparent = node::map();
  transparent.set("listen_address", node::str(p.transparent.listen_address));
  node http_ports = node::seq();
  for (auto port : p.transparent.http_ports) http_ports.push(node::integer(port));
  transparent.set("http_ports", std::move(http_ports));
  px.set("transparent", std::move(transparent));
  if (!p.hosts.empty()) {
    node hosts = node::map();
    for (const auto& [name, addrs] : p.hosts) {
      std::vector<std::string> texts;
      for (const auto& a : addrs) texts.push_back(a.to_string());
      hosts.set(name, node::str_seq(texts));
    }
    px.set("hosts", std::move(hosts));
  }
  doc.set("proxy", std::move(px));
  node allow = node::seq();
  for (const auto& e : cfg.allowlist) {
    node ports = node::seq();
    for (auto port : e.ports) ports.push(node::integer(port));
    allow.push(node::map().set("host", node::str(e.pattern.to_string())).set("ports", std::move(ports)));
  }
  doc.set("allowlist", std::move(allow));
  auto cidrs = [](const std::vector<common::cidr>& v) {
    std::vector<std::string> s;
    for (const auto& c : v) s.push_back(c.to_string());
    return node::str_seq(s);
  };
  doc.set("upstream_cidrs", cidrs(cfg.upstream_cidrs));
  doc.set("denied_cidrs", cidrs(cfg.denied_cidrs));
  doc.set("allow_cidrs", cidrs(cfg.allow_cidrs));
  return doc;
}

std::vector<rendered_file> render(const config& cfg, const render_options& opts) {
  std::vector<rendered_file> files;
  files.push_back({"networkpolicies.yaml",
                   header(opts, "Kubernetes NetworkPolicies for namespace " + cfg.namespace_name) +
                       documents(network_policies(cfg, opts))});
  files.push_back({"calico.yaml", header(opts, "Calico projectcalico.org/v3 policies for namespace " + cfg.namespace_name) +
                                      documents(calico_objects(cfg, opts))});
  if (cfg.has_proxy)
    files.push_back({"proxy.yaml", header(opts, "egress-proxy configuration (load with egress-proxy --config)") +
                                       proxy_config(cfg, opts).emit()});
  return files;
}

std::vector<rendered_file> render_chart(const config& cfg, const render_options& opts) {
  // The chart's gateway pods carry the egress-proxy chart's labels
  // (charts/egress-proxy/templates/_helpers.tpl); the loader checked the workload
  // selectors against the config's own proxy.selector, not against these. Keys whose
  // value follows the release or chart (instance, version, helm.sh/chart) may match.
  static const label_map proxy_pod_labels = {{"app.kubernetes.io/name", "egress-proxy"},
                                             {"app.kubernetes.io/component", "gateway"},
                                             {"app.kubernetes.io/part-of", "egress-guard"},
                                             {"app.kubernetes.io/managed-by", "Helm"}};
  for (const auto& w : cfg.workloads) {
    bool selects_proxy_pods = std::all_of(w.selector.begin(), w.selector.end(), [](const auto& kv) {
      if (kv.first == "app.kubernetes.io/instance" || kv.first == "app.kubernetes.io/version" || kv.first == "helm.sh/chart")
        return true;
      auto it = proxy_pod_labels.find(kv.first);
      return it != proxy_pod_labels.end() && it->second == kv.second;
    });
    auto name = w.selector.find("app.kubernetes.io/name");
    bool is_proxy_pod = name != w.selector.end() && name->second == "egress-proxy";
    if (selects_proxy_pods || is_proxy_pod)
      throw chart_error(cfg.file + ":" + std::to_string(w.line) + ":1: error: workloads: the selector of workload \"" +
                        w.name + "\" " + (is_proxy_pod ? "is selected by" : "also selects") +
                        " the chart's gateway proxy pods (labels of charts/egress-proxy); give the workload a label of "
                        "its own");
  }
  render_options chart_opts = opts;
  chart_opts.extra_labels.emplace("app.kubernetes.io/instance", "{{ .Release.Name }}");
  // Helm owns what it installs (its adoption checks read managed-by); the generator's
  // mark moves to a label of its own.
  chart_opts.extra_labels.emplace("app.kubernetes.io/managed-by", "{{ .Release.Service }}");
  chart_opts.extra_labels.emplace("egress-guard.io/generated-by", "egress-gen");
  config sidecar = cfg;
  sidecar.namespace_name = "{{ .Release.Namespace }}";
  sidecar.proxy.mode = proxy_mode::sidecar;
  sidecar.proxy.selector.clear();
  config gw = sidecar;
  gw.proxy.mode = proxy_mode::gateway;
  gw.proxy.selector = {{"app.kubernetes.io/name", "egress-proxy"}};
  std::string note = "\n# Helm template: namespace and instance label follow the release; "
                     ".Values.proxy.mode picks the objects.\n";
  std::string np = header(opts, "Kubernetes NetworkPolicies (Helm template)") + note +
                   "{{- if eq .Values.proxy.mode \"sidecar\" }}\n" + documents(network_policies(sidecar, chart_opts)) +
                   "{{- else }}\n" + documents(network_policies(gw, chart_opts)) + "{{- end }}\n";
  std::string calico = header(opts, "Calico projectcalico.org/v3 policies (Helm template)") + note +
                       "{{- if .Values.calico.enabled }}\n{{- if eq .Values.proxy.mode \"sidecar\" }}\n" +
                       documents(calico_objects(sidecar, chart_opts)) + "{{- else }}\n" +
                       documents(calico_objects(gw, chart_opts)) + "{{- end }}\n{{- end }}\n";
  config proxy_cfg = cfg;
  proxy_cfg.proxy.mode = proxy_mode::sidecar;
  proxy_cfg.proxy.selector.clear();
  std::string proxy = header(opts, "egress-proxy configuration for the chart's ConfigMap") + proxy_config(proxy_cfg, opts).emit();
  return {{"templates/networkpolicies.yaml", std::move(np)},
          {"templates/calico.yaml", std::move(calico)},
          {"files/proxy.yaml", std::move(proxy)}};
}

std::string summary(const config& cfg) {
  std::ostringstream out;
  out << "namespace " << cfg.namespace_name << ": default deny (ingress and egress)";
  if (cfg.has_proxy) out << ", proxy in " << common::to_string(cfg.proxy.mode) << " mode on port " << cfg.proxy.port;
  out << '\n';
  auto ports_text = [](const std::vector<l4>& ports) {
    std::string s;
    for (const auto& p : ports) s += (s.empty() ? "" : ",") + std::to_string(p.port) + "/" + p.protocol;
    return s;
  };
  std::string upstream_ports;
  for (auto p : allowlist_ports(cfg)) upstream_ports += (upstream_ports.empty() ? "" : ",") + std::to_string(p) + "/TCP";
  for (const auto& w : cfg.workloads) {
    out << "  " << w.name << " [egress " << common::to_string(w.egress) << "]\n";
    for (const auto& sp : w.ports) {
      out << "    ingress " << sp.port << "/" << sp.protocol << " from";
      for (const auto& p : sp.from) {
        if (p.workload) out << " workload " << *p.workload;
        else {
          if (p.namespace_selector) out << " namespaces{" << calico_selector(*p.namespace_selector) << "}";
          if (p.pod_selector) out << " pods{" << calico_selector(*p.pod_selector) << "}";
        }
      }
      out << '\n';
    }
    if (w.ports.empty()) out << "    ingress: none\n";
    if (w.egress == egress_class::none) out << "    egress: none (not even DNS)\n";
    if (needs_dns(w.egress)) out << "    egress DNS 53/UDP,53/TCP to " << cfg.dns.namespace_name << " kube-dns\n";
    for (const auto& p : w.egress_peers)
      out << "    egress " << ports_text(peer_ports(cfg, p)) << " to "
          << (p.workload ? "workload " + *p.workload : std::string("selected pods")) << '\n';
    if (w.egress == egress_class::proxy && cfg.has_proxy) {
      if (gateway(cfg)) out << "    egress " << cfg.proxy.port << "/TCP to the proxy pods\n";
      else out << "    egress " << upstream_ports << " to upstream ranges minus denied ranges (names checked by the sidecar proxy)\n";
    }
  }
  if (gateway(cfg)) out << "  egress-proxy pods: DNS, " << upstream_ports << " to upstream ranges minus denied ranges\n";
  out << "  allowlist:";
  for (const auto& e : cfg.allowlist) {
    out << ' ' << e.pattern.to_string() << ':';
    for (std::size_t i = 0; i < e.ports.size(); ++i) out << (i ? "," : "") << e.ports[i];
  }
  out << "\n  denied ranges: " << ip_level_denied(cfg).blocks().size() << " blocks (IPv4, IPv6, NAT64/6to4 forms)\n";
  return out.str();
}

void write_files(const std::string& dir, const std::vector<rendered_file>& files) {
  namespace fs = std::filesystem;
  fs::create_directories(dir);
  for (const auto& f : files) {
    fs::path target = fs::path(dir) / f.name;
    fs::create_directories(target.parent_path());
    std::string tmpl = (target.parent_path() / ("." + target.filename().string() + ".XXXXXX")).string();
    int fd = ::mkstemp(tmpl.data());
    if (fd < 0) throw std::system_error(errno, std::generic_category(), "create " + tmpl);
    const char* p = f.content.data();
    std::size_t left = f.content.size();
    while (left > 0) {
      ssize_t n = ::write(fd, p, left);
      if (n < 0) {
        if (errno == EINTR) continue;
        int e = errno;
        ::close(fd);
        ::unlink(tmpl.c_str());
        throw std::system_error(e, std::generic_category(), "write " + tmpl);
      }
      p += n;
      left -= static_cast<std::size_t>(n);
    }
    if (::fchmod(fd, 0644) != 0 || ::fsync(fd) != 0) {
      int e = errno;
      ::close(fd);
      ::unlink(tmpl.c_str());
      throw std::system_error(e, std::generic_category(), "sync " + tmpl);
    }
    ::close(fd);
    if (::rename(tmpl.c_str(), target.c_str()) != 0) {
      int e = errno;
      ::unlink(tmpl.c_str());
      throw std::system_error(e, std::generic_category(), "rename to " + target.string());
    }
  }
  std::set<fs::path> dirs;
  for (const auto& f : files) dirs.insert((fs::path(dir) / f.name).parent_path());
  for (const auto& d : dirs) {
    int dfd = ::open(d.c_str(), O_RDONLY | O_DIRECTORY);
    if (dfd >= 0) {
      ::fsync(dfd);
      ::close(dfd);
    }
  }
}

std::vector<std::string> stale_files(const std::string& dir, const std::vector<rendered_file>& files) {
  std::vector<std::string> stale;
  for (const auto& f : files) {
    std::filesystem::path path = std::filesystem::path(dir) / f.name;
    std::ifstream in(path, std::ios::binary);
    std::ostringstream ss;
    if (in) ss << in.rdbuf();
    if (!in || ss.str() != f.content) stale.push_back(path.string());
  }
  return stale;
}

}  // namespace egress::gen
