#pragma once
/// The deployment configuration (config/<deployment>.yaml) and the proxy configuration
/// rendered from it (policies/<deployment>/proxy.yaml): model and strict loader.
///
/// Shape (YAML, `version: 1`; keys not listed are errors; see config/egress-config.schema.json):
///   version: 1
///   kind: deployment | proxy          # optional, default deployment
///   source: <string>                  # kind proxy only: the file it was rendered from
///   namespace: <DNS-1123 label>       # deployment only, required
///   workloads:                        # deployment only, required, >= 1
///     - name: <DNS-1123 label>
///       selector: {<label key>: <label value>, ...}          # required, non-empty
///       ports:                                               # what the workload serves
///         - {name: <IANA svc name>?, port: 1-65535, protocol: TCP|UDP|SCTP = TCP,
///            from: [<peer>, ...]}                            # who may call it (>= 1)
///       egress: none | dns-only | proxy | peers              # or the mapping below
///       egress: {class: <as above>, peers: [<peer with ports>, ...]}
///   <peer>: {workload: <name>} | {pod_selector: {...}}       # same namespace
///         | {namespace_selector: {...}, pod_selector: {...}?} # other namespaces
///           peers under egress also carry ports: [1-65535, ...]: for a workload peer
///           every protocol the workload serves each port with, for a selector peer TCP
///           (default, workload peers only: every port and protocol the workload serves)
///   proxy:
///     mode: sidecar | gateway           # required
///     port: 3128                        # proxy listener port
///     admin_port: 9901                  # /healthz /readyz /metrics
///     listen_address: 127.0.0.1 (sidecar) | 0.0.0.0 (gateway)
///     admin_address: 0.0.0.0
///     selector: {...}                   # gateway: the proxy pods' labels (required)
///     limits: {max_connections, max_header_bytes, header_timeout_ms,
///              connect_timeout_ms, idle_timeout_ms, client_hello_timeout_ms,
///              max_client_hello_bytes, drain_timeout_ms,
///              max_tunnel_lifetime_ms}       # 0 = no limit (the default)
///     tls: {allow_missing_sni: false, allow_ech: false}
///     log: {buffer_bytes: 1048576}      # stdout backlog kept while the reader stalls
///     resolver: {servers: ["ADDR[:PORT]", ...], timeout_ms, min_ttl_s, max_ttl_s}
///     hosts: {<name>: [<address>, ...]} # static answers, consulted before DNS
///     capture: env | dns | both         # env (default): clients use HTTP(S)_PROXY
///     dns: {listen_address, port: 53, answer_ipv4, answer_ipv6, ttl_s: 5,
///           cluster_domains: [cluster.local], cluster_dns: ["ADDR[:PORT]", ...]}
///     transparent: {listen_address, http_ports: [80]}
///   allowlist:                          # >= 1
///     - {host: <name | *.suffix | IP literal>, ports: [1-65535, ...] = [443]}
///   dns:                                # deployment only
///     namespace: kube-system            # kube-dns pods: namespace AND pod labels
///     selector: {k8s-app: kube-dns}
///     node_local_address: <IP>?         # node-local DNS cache (ipBlock /32 or /128)
///   upstream_cidrs: [CIDR, ...] = [0.0.0.0/0, ::/0]  # with a proxy: must keep some
///                                       # address outside the denied ranges (error)
///   denied_cidrs: [CIDR, ...] = default_denied_ranges()
///   allow_cidrs: [CIDR, ...] = []       # overrides of denied_cidrs (warned about)
///
/// Source: Kubernetes NetworkPolicy API (networking.k8s.io/v1), label syntax from
/// k8s.io/apimachinery/pkg/util/validation.

#include "egress/common/cidr.hpp"
#include "egress/common/diagnostics.hpp"
#include "egress/common/host_name.hpp"

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace egress::common {

/// Kubernetes labels as matchLabels: ordered map, so rendering is deterministic.
using label_map = std::map<std::string, std::string>;

/// The label key egress-gen marks its GlobalNetworkSet of denied ranges with. Reserved:
/// no selector of a config may use it, so that no rule selector meaning pods can be
/// written to match the set (Calico rule selectors match network sets too).
inline constexpr std::string_view denied_set_label_key = "egress-guard.io/address-set";

/// A source or destination of in-cluster traffic.
struct peer {
  /// A workload of this deployment by name (resolved to its selector).
  std::optional<std::string> workload;
  /// Pods by label; same namespace unless `namespace_selector` is set.
  std::optional<label_map> pod_selector;
  /// Namespaces by label; with `pod_selector` both must match (one peer, AND).
  std::optional<label_map> namespace_selector;
  /// Egress peers: destination port numbers. For a workload peer each number means every
  /// protocol the workload serves that port with (5432 served over TCP and UDP opens
  /// both); for a selector peer it means TCP. Empty (workload peers only) = every
  /// (protocol, port) the workload serves.
  std::vector<std::uint16_t> ports;
  int line = 0;  ///< 1-based position of the peer in the file, for diagnostics
  int column = 0;
};

/// A port a workload serves and who may call it.
struct served_port {
  std::string name;  ///< optional IANA service name
  std::uint16_t port = 0;
  std::string protocol = "TCP";  ///< TCP, UDP or SCTP (upper case, as the API spells it)
  std::vector<peer> from;
};

/// What egress a workload gets.
enum class egress_class {
  none,      ///< nothing at all, not even DNS
  dns_only,  ///< cluster DNS (+ explicit peers)
  proxy,     ///< DNS, explicit peers, and upstreams only through the proxy
  peers,     ///< only the explicit peers (no DNS)
};
/// "none", "dns-only", "proxy", "peers".
std::string_view to_string(egress_class c) noexcept;

/// One workload of the deployment.
struct workload {
  std::string name;
  label_map selector;
  std::vector<served_port> ports;
  egress_class egress = egress_class::none;
  std::vector<peer> egress_peers;
  int line = 0;
};

/// Proxy placement (DESIGN.md "Sidecar vs gateway").
enum class proxy_mode { sidecar, gateway };
/// "sidecar" or "gateway".
std::string_view to_string(proxy_mode m) noexcept;

/// Limits of the proxy's data path. Milliseconds and bytes as the names say.
struct proxy_limits {
  std::uint32_t max_connections = 4096;
  std::uint32_t max_header_bytes = 32 * 1024;
  std::chrono::milliseconds header_timeout{10'000};
  std::chrono::milliseconds connect_timeout{5'000};  ///< the whole dial: every address's attempt together
  std::chrono::milliseconds idle_timeout{300'000};
  std::chrono::milliseconds client_hello_timeout{10'000};
  std::uint32_t max_client_hello_bytes = 16 * 1024;
  std::chrono::milliseconds drain_timeout{20'000};
  /// An established tunnel is closed (end "max_lifetime") this long after its CONNECT
  /// was allowed, so a long-lived tunnel is judged again by the config current when the
  /// client reconnects; 0 = no limit. A reload closes tunnels the new config no longer
  /// allows at once, whatever this says.
  std::chrono::milliseconds max_tunnel_lifetime{0};
};

/// The proxy's log output (JSON lines on stdout).
struct proxy_log_settings {
  /// Bytes of log lines kept in memory while stdout does not take them (a stalled log
  /// reader, a full pipe); past it whole lines are dropped and counted. 4096 - 64 MiB.
  std::uint32_t buffer_bytes = 1 << 20;
};

/// The proxy's resolver settings.
struct resolver_settings {
  /// "ADDR" or "ADDR:PORT" / "[V6]:PORT"; empty = the system's resolv.conf servers.
  std::vector<std::string> servers;
  std::chrono::milliseconds timeout{2'000};
  std::chrono::seconds min_ttl{5};
  std::chrono::seconds max_ttl{300};
};

/// How clients reach the proxy (proxy.capture).
enum class capture_mode {
  env,   ///< clients that honour HTTP(S)_PROXY send CONNECT / absolute-form requests
  dns,   ///< the DNS responder answers allowlisted names with the proxy's address and the
         ///< transparent listeners route connections by SNI (TLS) or Host (plain HTTP)
  both,  ///< both of the above
};

/// "env", "dns" or "both".
std::string_view to_string(capture_mode m) noexcept;

/// The allowlisting DNS responder (proxy.dns), used when capture is dns or both.
/// Source: RFC 1035 (UDP and TCP), RFC 7766 (TCP), RFC 2308 (negative answers).
struct dns_responder_settings {
  std::string listen_address;      ///< default: the proxy's listen_address
  std::uint16_t port = 53;         ///< UDP and TCP
  /// Answered (A) for allowlisted names: the proxy's own address as the clients reach it
  /// (sidecar: 127.0.0.1; gateway: the Service's cluster IP). Unset: no A records.
  std::optional<boost::asio::ip::address> answer_ipv4;
  /// Answered (AAAA) for allowlisted names; unset (the default): NODATA for AAAA.
  std::optional<boost::asio::ip::address> answer_ipv6;
  std::chrono::seconds ttl{5};     ///< TTL of those answers
  /// Names at or under these domains are forwarded to `cluster_dns` and answered as it
  /// answers (lower case, no trailing dot).
  std::vector<std::string> cluster_domains{"cluster.local"};
  /// "ADDR" or "ADDR:PORT": the cluster DNS (kube-dns Service) for `cluster_domains`.
  std::vector<std::string> cluster_dns;
};

/// The transparent listeners (proxy.transparent), used when capture is dns or both: one
/// per allowlisted port on `listen_address`; `http_ports` take plain HTTP routed by Host,
/// every other port TLS routed by the ClientHello's SNI.
struct transparent_settings {
  std::string listen_address;            ///< default: the proxy's listen_address
  std::vector<std::uint16_t> http_ports{80};
};

/// The proxy section.
struct proxy_settings {
  proxy_mode mode = proxy_mode::sidecar;
  std::uint16_t port = 3128;
  std::uint16_t admin_port = 9901;
  std::string listen_address;  ///< default by mode: 127.0.0.1 (sidecar), 0.0.0.0 (gateway)
  std::string admin_address = "0.0.0.0";
  label_map selector;  ///< gateway: labels of the proxy pods
  proxy_limits limits;
  bool allow_missing_sni = false;
  bool allow_ech = false;
  proxy_log_settings log;
  resolver_settings resolver;
  /// Static answers by normalised name, in file order.
  std::map<std::string, std::vector<boost::asio::ip::address>> hosts;
  capture_mode capture = capture_mode::env;
  dns_responder_settings dns;
  transparent_settings transparent;

  /// True when the DNS responder and the transparent listeners run (capture dns or both).
  bool transparent_capture() const noexcept { return capture != capture_mode::env; }
};

/// One allowlist entry.
struct allow_entry {
  host_pattern pattern;
  std::vector<std::uint16_t> ports;  ///< sorted, unique; default {443}
  int line = 0;
};

/// Cluster DNS.
struct dns_settings {
  std::string namespace_name = "kube-system";
  label_map selector{{"k8s-app", "kube-dns"}};
  std::optional<boost::asio::ip::address> node_local_address;
};

/// Which document a file is.
enum class config_kind { deployment, proxy };

/// A loaded, validated configuration.
struct config {
  std::string file;  ///< path as given
  config_kind kind = config_kind::deployment;
  std::string source;  ///< kind proxy: the deployment file it was rendered from
  std::string namespace_name;
  std::vector<workload> workloads;
  proxy_settings proxy;
  bool has_proxy = false;
  std::vector<allow_entry> allowlist;
  dns_settings dns;
  std::vector<cidr> upstream_cidrs;  ///< as written (canonical), file order
  std::vector<cidr> denied_cidrs;
  std::vector<cidr> allow_cidrs;
  bool denied_cidrs_default = true;  ///< denied_cidrs came from the built-in list

  /// The address policy built from the three CIDR lists.
  upstream_policy address_policy() const;
  /// The workload named `name`, or nullptr.
  const workload* find_workload(std::string_view name) const noexcept;
};

/// Which documents a loader accepts.
enum class accept_kind { deployment_only, deployment_or_proxy };

/// Loads and validates a configuration file. Every problem is added to `diags` (file
/// order after `sort()`); returns nothing when any error was found.
/// Errors: unreadable file, YAML syntax, duplicate keys, unknown keys, wrong types,
/// missing required keys, invalid names/labels/hosts/CIDRs/ports, cross-field problems
/// (unknown workload, selector matching no workload, `proxy` class without a proxy,
/// gateway without a selector, proxy and workload selectors that select each other's
/// pods, the reserved `denied_set_label_key` in a selector, upstream ranges that lie
/// wholly inside the denied ranges, ...). Never throws for bad input.
std::optional<config> load_config(const std::string& path, accept_kind accept, diagnostics& diags);
/// Same, from text already in memory; `path` names it in diagnostics.
std::optional<config> load_config_text(const std::string& text, const std::string& path,
                                       accept_kind accept, diagnostics& diags);

}  // namespace egress::common
