#pragma once
/// egress-gen's renderers: one validated deployment config in, the Kubernetes
/// NetworkPolicies, the Calico projectcalico.org/v3 objects and the proxy's own config
/// out, deterministically (same input, byte-identical output).

#include "egress/common/config.hpp"
#include "egress/gen/yaml_writer.hpp"

#include <stdexcept>
#include <string>
#include <vector>

namespace egress::gen {

/// One output file: its name inside the output directory and its full content.
struct rendered_file {
  std::string name;
  std::string content;
};

/// Rendering options.
struct render_options {
  /// How the header names the source file (the path as given on the command line, so
  /// output does not depend on the working directory).
  std::string source;
  /// Calico GlobalNetworkPolicy order of the deny policies; must be below 1000, the
  /// order at which Calico evaluates Kubernetes NetworkPolicies in the default tier.
  int calico_order = 100;
  /// Labels added to every object's metadata.labels (e.g. the Helm release instance).
  common::label_map extra_labels;
};

/// Prefix of every object name and the value of the `app.kubernetes.io/part-of` label.
inline constexpr std::string_view object_prefix = "egress-guard";

/// Every renderer below throws std::logic_error rather than write an empty `to`, `from`,
/// `ports` or workload podSelector (each would mean "everything"); a config the loader
/// accepted never gets there.
///
/// networkpolicies.yaml: networking.k8s.io/v1 NetworkPolicy objects, in this order:
/// the namespace default deny (podSelector {}, policyTypes Ingress and Egress, no rules);
/// one policy per workload (its served ports as ingress rules; DNS egress to the kube-dns
/// pods by namespace AND pod label in one peer plus the node-local DNS ipBlock; its egress
/// peers; in sidecar mode, for class `proxy`, the upstream ipBlocks (upstream_cidrs with
/// the effective denied ranges, and their NAT64/6to4 forms, as `except`) on the union of
/// allowlisted ports; in gateway mode, the proxy pods on the proxy port); in gateway mode,
/// one policy for the proxy pods (ingress from `proxy` workloads, egress DNS + upstreams).
/// Source: Kubernetes API reference, NetworkPolicy v1 (networking.k8s.io).
std::vector<node> network_policies(const common::config& cfg, const render_options& opts = {});

/// calico.yaml: projectcalico.org/v3 objects: the GlobalNetworkSet of effective denied
/// ranges (labelled `common::denied_set_label_key`: <namespace>-denied, and selected only
/// as a network set); a GlobalNetworkPolicy at `calico_order` applied to every pod of the namespace
/// that first allows the in-cluster paths the config allows (DNS, egress peers, proxy)
/// and then denies the set (IPv4 and IPv6 in separate rules) and, in gateway mode, every
/// other egress of `proxy` workloads (the proxy is their only way out); a GlobalNetworkPolicy at
/// the same order denying all egress of `none` workloads; and a default deny for the
/// namespace without an order (evaluated after Kubernetes NetworkPolicies) keeping DNS
/// for the workloads that have it. Every rule selector for pods carries a
/// namespaceSelector, since a bare selector in a GlobalNetworkPolicy also matches network
/// sets (and a set of private ranges holds every pod IP).
/// Source: Calico docs, GlobalNetworkPolicy and GlobalNetworkSet (projectcalico.org/v3),
/// "Get started with Calico network policy" (policy order, tiers, end-of-tier deny).
std::vector<node> calico_objects(const common::config& cfg, const render_options& opts);

/// proxy.yaml: a `kind: proxy` config holding exactly what egress-proxy loads (proxy
/// section with every default made explicit, allowlist, CIDR lists expanded).
node proxy_config(const common::config& cfg, const render_options& opts);

/// All three files with their generated-file headers.
std::vector<rendered_file> render(const common::config& cfg, const render_options& opts);

/// A short human summary of what the rendered policies allow, per workload.
std::string summary(const common::config& cfg);

/// The Helm variant for charts/<name>/: templates/networkpolicies.yaml (sidecar objects
/// under `{{- if eq .Values.proxy.mode "sidecar" }}`, gateway objects, with the proxy pods
/// selected by `app.kubernetes.io/name: egress-proxy`, under `{{- else }}`),
/// templates/calico.yaml (the same split, all under `{{- if .Values.calico.enabled }}`) and
/// files/proxy.yaml. The namespace is `{{ .Release.Namespace }}` wherever it appears and
/// every object carries `app.kubernetes.io/instance: {{ .Release.Name }}`,
/// `app.kubernetes.io/managed-by: {{ .Release.Service }}` and
/// `egress-guard.io/generated-by: egress-gen`.
/// Errors: `chart_error` ("FILE:LINE:1: error: ...") when a workload selector and the
/// gateway pods of charts/egress-proxy select each other (their labels differ from the
/// config's own proxy.selector, which the loader checked).
std::vector<rendered_file> render_chart(const common::config& cfg, const render_options& opts);

/// A config the loader accepted that the chart variant cannot render safely.
struct chart_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

/// Writes each file to `dir` atomically (temporary file in `dir`, fsync, rename), creating
/// `dir` if needed. Throws std::system_error on I/O failure; files already renamed stay.
void write_files(const std::string& dir, const std::vector<rendered_file>& files);

/// Names the files in `dir` whose content differs from `files` (missing counts as stale).
std::vector<std::string> stale_files(const std::string& dir, const std::vector<rendered_file>& files);

}  // namespace egress::gen
