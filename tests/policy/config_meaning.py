"""What a deployment config means, stated independently of how egress-gen renders it: the
oracle of the property test (property_test.py).

From a config dict (config/*.yaml shape) it builds
  - an inventory: namespaces, pods (dual-stack addresses), and external addresses chosen
    around every range the config names (public, private, metadata, NAT64/6to4 forms);
  - the checks: one direction of one flow (egress at a source pod of the deployment's
    namespace, or ingress at a destination pod), each with the verdict the config's
    meaning demands and the invariant it belongs to;
  - whether the loader must refuse the config (upstream ranges that leave nothing).

The meaning, from config/egress-config.schema.json, common/include/egress/common/config.hpp
and README.md (never from rendered YAML):
  - namespace default deny: a pod of the namespace gets only what the workloads whose
    selector matches it get (union over those workloads); pods of other namespaces are
    not restricted at all;
  - class none: nothing at all (with Calico also when the pod matches other workloads:
    the deny-all-egress policy; Kubernetes alone can only add allows, so there it is the
    union); dns-only and proxy: cluster DNS (kube-dns pods of dns.namespace with
    dns.selector, UDP and TCP 53; and node_local_address on 53); every class but none:
    its egress peers on the peer's ports;
  - peer ports: a workload peer without ports gets every (protocol, port) the target
    serves; a workload peer's port means every protocol the target serves on it; a
    selector peer's ports are TCP;
  - proxy, sidecar mode: TCP on the union of allowlisted ports to the upstream ranges
    minus the denied ranges; proxy, gateway mode: TCP proxy.port to the proxy pods only;
    the gateway's proxy pods: DNS and the upstream ranges minus the denied ranges on the
    allowlisted ports, and ingress on proxy.port from the proxy workloads' pods only;
  - denied ranges: denied_cidrs ("default" = the built-in list below) minus allow_cidrs,
    plus the NAT64 (64:ff9b::/96) and 6to4 (2002::/16) forms of every denied IPv4 address
    that allow_cidrs does not cover (IP-level policy cannot unwrap them);
  - ingress: a served port (port AND protocol) from the listed peers only; nothing from
    outside the cluster (peers are selectors).

Must not: import or read anything egress-gen renders, or the evaluator.
"""

from __future__ import annotations

import ipaddress
import random
from typing import Optional

import netpol_eval as ne

NAME_LABEL = "kubernetes.io/metadata.name"
# The label of egress-gen's GlobalNetworkSet; config.hpp reserves the key.
RESERVED_KEY = "egress-guard.io/address-set"

# The built-in denied ranges ("default" in denied_cidrs), as config.hpp documents them:
# every range of the IANA IPv4 and IPv6 Special-Purpose Address Registries whose
# "Globally Reachable" is False or N/A (whole blocks), IPv4 multicast, and the cloud
# metadata addresses; NAT64 64:ff9b::/96 and 6to4 2002::/16 are judged by the IPv4 inside.
# Source: iana-ipv4-special-registry, iana-ipv6-special-registry (RFC 6890), RFC 5771.
DEFAULT_DENIED = [
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
    "172.16.0.0/12", "192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "192.168.0.0/16",
    "198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4",
    "168.63.129.16/32",                                    # Azure platform metadata
    "::/96", "::ffff:0:0/96", "64:ff9b:1::/48", "100::/64", "100:0:0:1::/64", "2001::/23",
    "2001:db8::/32", "3fff::/20", "5f00::/16", "fc00::/7", "fe80::/10", "ff00::/8",
]
DEFAULT_UPSTREAM = ["0.0.0.0/0", "::/0"]
DNS_PORTS = {("UDP", 53), ("TCP", 53)}
NAT64 = ipaddress.ip_network("64:ff9b::/96")
SIX_TO_FOUR = ipaddress.ip_network("2002::/16")
V4_MAPPED = ipaddress.ip_network("::ffff:0:0/96")

# Addresses every inventory holds, whatever the config says.
FIXED_ADDRESSES = [
    "8.8.8.8", "185.15.59.224", "1.1.1.1", "2620:0:861:ed1a::1", "2a02:ec80::1",  # public
    "169.254.169.254", "fd00:ec2::254", "168.63.129.16", "100.100.100.200",        # metadata
    "10.1.2.3", "192.168.1.1", "172.16.5.4", "127.0.0.1", "100.64.0.1", "fc00::1",   # private
    "169.254.20.10",                                                               # node-local DNS
    "64:ff9b::a9fe:a9fe", "2002:a9fe:a9fe::1", "64:ff9b::a01:203",                 # embedded denied
    "64:ff9b::808:808", "2002:808:808::1",                                         # embedded public
    "224.0.0.251", "192.0.2.10",
]

# Namespaces of the inventory besides the deployment's and DNS's, with the labels the
# generator's namespace selectors ask for (random_config.NAMESPACE_SELECTORS).
OTHER_NAMESPACES = {
    "monitoring": {},
    "callers-a": {"team": "callers"},
    "callers-b": {"team": "callers", "env": "prod"},
    "near-miss": {"team": "near", "env": "prod"},
    "stranger": {"team": "strangers"},
}
DEPLOYMENT_NAMESPACE_LABELS = [{}, {"team": "callers"}, {"team": "callers", "env": "prod"}]


# The Helm chart variant (`egress-gen chart`, README "Helm"): the namespace follows the
# release, .Values.proxy.mode picks sidecar or gateway objects, and the gateway's proxy
# pods are the egress-proxy chart's, selected by app.kubernetes.io/name: egress-proxy and
# labelled as charts/egress-proxy/templates/_helpers.tpl says.
CHART_PROXY_SELECTOR = {"app.kubernetes.io/name": "egress-proxy"}
CHART_RELEASE = "wf"


def chart_proxy_pod_labels(release: str = CHART_RELEASE) -> dict:
    return {"app.kubernetes.io/name": "egress-proxy", "app.kubernetes.io/instance": release,
            "app.kubernetes.io/component": "gateway", "app.kubernetes.io/part-of": "egress-guard",
            "app.kubernetes.io/managed-by": "Helm"}


def chart_refusal(cfg: dict) -> Optional[str]:
    """Why `egress-gen chart` must refuse `cfg` (a workload selector and the chart's
    gateway proxy pods select each other: the proxy pods would get the workload's policy,
    or the workload's pods the proxy's), or None. Labels whose value follows the release
    or chart (instance, version, helm.sh/chart) count as matching."""
    pod = chart_proxy_pod_labels()
    for w in cfg["workloads"]:
        sel = w["selector"]
        if _matches(CHART_PROXY_SELECTOR, sel) or all(
                k in ("app.kubernetes.io/instance", "app.kubernetes.io/version", "helm.sh/chart")
                or pod.get(k) == v for k, v in sel.items()):
            return f"workload {w['name']} and the chart's proxy pods select each other"
    return None


def chart_variant(cfg: dict, mode: str, namespace: str) -> dict:
    """The config the chart's objects mean under `helm template --namespace NAMESPACE`
    with proxy.mode=MODE."""
    out = {**cfg, "namespace": namespace}
    if "proxy" in cfg:
        proxy = {k: v for k, v in cfg["proxy"].items() if k != "selector"}
        proxy["mode"] = mode
        if mode == "gateway":
            proxy["selector"] = dict(CHART_PROXY_SELECTOR)
        out["proxy"] = proxy
    return out


# --------------------------------------------------------------------------------------
# Address sets: per family, sorted disjoint [lo, hi] intervals of integers.
# --------------------------------------------------------------------------------------

class AddressSet:
    """A set of IPv4 and IPv6 addresses with exact union, difference and emptiness."""

    def __init__(self, cidrs=()):
        self.spans = {4: [], 6: []}
        for c in cidrs:
            net = ipaddress.ip_network(c, strict=True)
            self.add_span(net.version, int(net.network_address), int(net.broadcast_address))

    def add_span(self, family: int, lo: int, hi: int) -> None:
        """Adds the addresses lo..hi (integers, inclusive) of IP version `family`."""
        spans = sorted(self.spans[family] + [(lo, hi)])
        merged = []
        for a, b in spans:
            if merged and a <= merged[-1][1] + 1:
                merged[-1] = (merged[-1][0], max(merged[-1][1], b))
            else:
                merged.append((a, b))
        self.spans[family] = merged

    def union(self, other: "AddressSet") -> "AddressSet":
        """Addresses in either set."""
        out = AddressSet()
        for fam in (4, 6):
            for lo, hi in self.spans[fam] + other.spans[fam]:
                out.add_span(fam, lo, hi)
        return out

    def minus(self, other: "AddressSet") -> "AddressSet":
        """Addresses of this set that are not in `other`."""
        out = AddressSet()
        for fam in (4, 6):
            for lo, hi in self.spans[fam]:
                pieces = [(lo, hi)]
                for a, b in other.spans[fam]:
                    nxt = []
                    for x, y in pieces:
                        if b < x or a > y:
                            nxt.append((x, y))
                            continue
                        if x < a:
                            nxt.append((x, a - 1))
                        if b < y:
                            nxt.append((b + 1, y))
                    pieces = nxt
                for x, y in pieces:
                    out.add_span(fam, x, y)
        return out

    def contains(self, address) -> bool:
        """True when `address` (text or ipaddress object) is in the set."""
        a = ipaddress.ip_address(address)
        n = int(a)
        return any(lo <= n <= hi for lo, hi in self.spans[a.version])

    def empty(self) -> bool:
        """True when the set holds no address of either family."""
        return not self.spans[4] and not self.spans[6]

    def embedded_forms(self) -> "AddressSet":
        """The NAT64 (RFC 6052, /96) and 6to4 (RFC 3056) forms of the IPv4 addresses."""
        out = AddressSet()
        nat64, six = int(NAT64.network_address), int(SIX_TO_FOUR.network_address)
        for lo, hi in self.spans[4]:
            out.add_span(6, nat64 + lo, nat64 + hi)
            out.add_span(6, six + (lo << 80), six + (hi << 80) + (1 << 80) - 1)
        return out


def expand_denied(entries) -> list[str]:
    """denied_cidrs with "default" replaced by DEFAULT_DENIED."""
    out = []
    for e in entries:
        out += DEFAULT_DENIED if e == "default" else [e]
    return out


# --------------------------------------------------------------------------------------
# The config, read for its meaning
# --------------------------------------------------------------------------------------

def _matches(selector: dict, labels: dict) -> bool:
    # matchLabels semantics: every label of the selector, with its value.
    return all(labels.get(k) == v for k, v in selector.items())


class Meaning:
    """The config's meaning over an inventory. `cfg` is the config dict."""

    def __init__(self, cfg: dict):
        self.cfg = cfg
        self.ns = cfg["namespace"]
        self.workloads = cfg["workloads"]
        self.by_name = {w["name"]: w for w in self.workloads}
        proxy = cfg.get("proxy")
        self.has_proxy = proxy is not None
        self.gateway = self.has_proxy and proxy["mode"] == "gateway"
        self.proxy_port = (proxy or {}).get("port", 3128)
        self.admin_port = (proxy or {}).get("admin_port", 9901)
        self.proxy_selector = (proxy or {}).get("selector") if self.gateway else None
        self.allow_ports = sorted({p for e in cfg.get("allowlist", []) for p in e.get("ports", [443])})
        dns = cfg.get("dns", {})
        self.dns_ns = dns.get("namespace", "kube-system")
        self.dns_selector = dns.get("selector", {"k8s-app": "kube-dns"})
        self.node_local = dns.get("node_local_address")
        upstream = AddressSet(cfg.get("upstream_cidrs", DEFAULT_UPSTREAM))
        denied = AddressSet(expand_denied(cfg.get("denied_cidrs", ["default"])))
        allow = AddressSet(cfg.get("allow_cidrs", []))
        effective = denied.minus(allow)
        self.ip_denied = effective.union(effective.embedded_forms().minus(allow))
        self.reachable_upstream = upstream.minus(self.ip_denied)
        self._workloads_of: dict = {}

    # -- the loader's verdict ---------------------------------------------------------

    def must_be_rejected(self) -> Optional[str]:
        """Why the loader must refuse this config, or None when it must accept it: the
        upstream ranges leave nothing outside the denied ranges; a selector uses the
        label key egress-gen reserves for its GlobalNetworkSet; the proxy pods and a
        workload's pods cannot be told apart (one selector contains the other)."""
        if self.has_proxy and self.reachable_upstream.empty():
            return "upstream ranges lie wholly inside the denied ranges"
        for w in self.workloads:
            if RESERVED_KEY in w["selector"]:
                return f"workload {w['name']} uses the reserved label key {RESERVED_KEY}"
            if self.proxy_selector and (_matches(self.proxy_selector, w["selector"])
                                        or _matches(w["selector"], self.proxy_selector)):
                return f"workload {w['name']} and the proxy pods select each other"
        return None

    # -- selectors --------------------------------------------------------------------

    @staticmethod
    def klass(w: dict) -> str:
        """A workload's egress class (none, dns-only, proxy, peers)."""
        return w["egress"] if isinstance(w["egress"], str) else w["egress"]["class"]

    @staticmethod
    def egress_peers(w: dict) -> list:
        """A workload's egress peers (dicts), [] for the scalar form."""
        return [] if isinstance(w["egress"], str) else w["egress"].get("peers", [])

    def workloads_of(self, pod: ne.Pod) -> list:
        """The workloads whose selector matches `pod` (none outside the namespace)."""
        if pod.name not in self._workloads_of:
            self._workloads_of[pod.name] = [] if pod.namespace != self.ns else [
                w for w in self.workloads if _matches(w["selector"], pod.labels)]
        return self._workloads_of[pod.name]

    def is_proxy_pod(self, pod: ne.Pod) -> bool:
        """True for a gateway proxy pod: in the namespace, matching proxy.selector."""
        return (self.gateway and pod.namespace == self.ns
                and _matches(self.proxy_selector, pod.labels))

    def is_kube_dns(self, pod: ne.Pod) -> bool:
        """True for a cluster DNS pod: dns.namespace AND dns.selector."""
        return pod.namespace == self.dns_ns and _matches(self.dns_selector, pod.labels)

    def peer_matches(self, peer: dict, endpoint, world: ne.World) -> bool:
        """True when `endpoint` (pod or address) is one of the pods `peer` names: a
        workload's pods in the namespace, pods by label in the namespace, or pods by label
        (none = all) in the namespaces matching namespace_selector."""
        if not isinstance(endpoint, ne.Pod):
            return False  # peers are selectors: nothing outside the cluster
        if "workload" in peer:
            return endpoint.namespace == self.ns and _matches(
                self.by_name[peer["workload"]]["selector"], endpoint.labels)
        if "namespace_selector" in peer:
            if not _matches(peer["namespace_selector"], world.namespace_labels(endpoint.namespace)):
                return False
        elif endpoint.namespace != self.ns:
            return False
        return _matches(peer.get("pod_selector", {}), endpoint.labels)

    def peer_l4(self, peer: dict) -> set:
        """The (protocol, port) pairs an egress peer opens (see the module docstring)."""
        target = self.by_name.get(peer.get("workload"))
        served = [(sp.get("protocol", "TCP"), sp["port"]) for sp in (target or {}).get("ports", [])]
        if target is not None and not peer.get("ports"):
            return set(served)
        if target is not None:
            return {(proto, port) for proto, port in served if port in peer["ports"]}
        return {("TCP", port) for port in peer["ports"]}

    # -- egress -----------------------------------------------------------------------

    def _dns(self, dst, dst_ip, l4) -> bool:
        if l4 not in DNS_PORTS:
            return False
        if isinstance(dst, ne.Pod):
            return self.is_kube_dns(dst)
        return self.node_local is not None and dst_ip == ipaddress.ip_address(self.node_local)

    def _upstream(self, dst_ip, l4) -> bool:
        return l4[0] == "TCP" and l4[1] in self.allow_ports and self.reachable_upstream.contains(dst_ip)

    def workload_allows(self, w, dst, dst_ip, l4, world) -> bool:
        """True when workload `w`'s egress includes (dst at dst_ip, l4)."""
        cls = self.klass(w)
        if cls == "none":
            return False
        if cls in ("dns-only", "proxy") and self._dns(dst, dst_ip, l4):
            return True
        for p in self.egress_peers(w):
            if l4 in self.peer_l4(p) and self.peer_matches(p, dst, world):
                return True
        if cls == "proxy":
            if not self.gateway:
                return self._upstream(dst_ip, l4)
            return (isinstance(dst, ne.Pod) and self.is_proxy_pod(dst)
                    and l4 == ("TCP", self.proxy_port))
        return False

    def egress(self, engine: str, src: ne.Pod, dst, dst_ip, l4, world) -> tuple:
        """(expected verdict or None, invariant) for egress at `src`."""
        if src.namespace != self.ns:
            return True, "pods of other namespaces are unaffected"
        mine = self.workloads_of(src)
        if self.is_proxy_pod(src):
            if mine:
                return None, ""
            ok = self._dns(dst, dst_ip, l4) or self._upstream(dst_ip, l4)
            return ok, ("configured paths are allowed" if ok else
                        "gateway proxy pods reach only DNS and upstream ranges on allowlisted ports")
        if not mine:
            return False, "pods matching no selector of the config get nothing"
        classes = {self.klass(w) for w in mine}
        if engine == "calico" and "none" in classes:
            return False, "none sends nothing"
        if any(self.workload_allows(w, dst, dst_ip, l4, world) for w in mine):
            return True, "configured paths are allowed"
        if classes == {"none"}:
            return False, "none sends nothing"
        if not isinstance(dst, ne.Pod) and self.ip_denied.contains(dst_ip):
            return False, "nothing reaches a denied range unless allow_cidrs says so"
        if "proxy" in classes:
            return False, ("gateway proxy workloads reach only the proxy pods, DNS and peers" if self.gateway
                           else "sidecar proxy workloads reach only the upstream ranges, on allowlisted ports")
        if "dns-only" in classes:
            return False, "dns-only reaches only the configured DNS (and its peers)"
        return False, "peers reach only their peers on the peer ports"

    # -- ingress ----------------------------------------------------------------------

    def ingress(self, dst: ne.Pod, src, l4, world) -> tuple:
        """(expected verdict or None, invariant) for ingress at `dst`."""
        if dst.namespace != self.ns:
            return True, "pods of other namespaces are unaffected"
        mine = self.workloads_of(dst)
        if self.is_proxy_pod(dst):
            if mine:
                return None, ""
            ok = (l4 == ("TCP", self.proxy_port) and isinstance(src, ne.Pod) and src.namespace == self.ns
                  and any(_matches(w["selector"], src.labels) for w in self.workloads
                          if self.klass(w) == "proxy"))
            return ok, ("configured paths are allowed" if ok else
                        "only the proxy workloads reach the gateway proxy, on its port")
        if not mine:
            return False, "pods matching no selector of the config get nothing"
        for w in mine:
            for sp in w.get("ports", []):
                if (sp.get("protocol", "TCP"), sp["port"]) == l4 and any(
                        self.peer_matches(f, src, world) for f in sp["from"]):
                    return True, "configured paths are allowed"
        return False, "only configured sources reach each port"


# --------------------------------------------------------------------------------------
# Inventory
# --------------------------------------------------------------------------------------

def _near(address: str, delta: int) -> Optional[str]:
    a = ipaddress.ip_address(address)
    try:
        b = a + delta
    except ipaddress.AddressValueError:
        return None
    return None if b in V4_MAPPED else str(b)


def _addresses_around(cidrs, rng: random.Random) -> list[str]:
    out = []
    for c in cidrs:
        if c == "default":
            continue
        net = ipaddress.ip_network(c, strict=True)
        first, last = net.network_address, net.broadcast_address
        inside = first + rng.randrange(net.num_addresses)
        for a in (str(first), str(last), str(inside), _near(str(first), -1), _near(str(last), 1)):
            if a is not None and ipaddress.ip_address(a) not in V4_MAPPED:
                out.append(a)
    return out


class Inventory:
    """Namespaces, pods and external addresses for one config, chosen from its meaning.
    `proxy_pod_labels`: the gateway proxy pods' labels (default: proxy.selector)."""

    def __init__(self, meaning: Meaning, seed: str, proxy_pod_labels: Optional[dict] = None):
        rng = random.Random(seed)
        m, cfg = meaning, meaning.cfg
        namespaces = {m.ns: dict(rng.choice(DEPLOYMENT_NAMESPACE_LABELS)), m.dns_ns: {}}
        for name, labels in OTHER_NAMESPACES.items():
            namespaces.setdefault(name, dict(labels))
        specs = []  # (name, namespace, labels)

        def pod(name, ns, labels):
            if not any(s[1] == ns and s[2] == labels for s in specs):
                specs.append((name, ns, dict(labels)))

        for w in m.workloads:
            pod(f"w-{w['name']}", m.ns, w["selector"])
        if m.gateway:
            pod("proxy", m.ns, proxy_pod_labels or m.proxy_selector)
            pod("fake-proxy", "stranger", proxy_pod_labels or m.proxy_selector)
        pod("kube-dns", m.dns_ns, m.dns_selector)
        pod("dns-neighbour", m.dns_ns, {"app": "neighbour"})
        pod("fake-kube-dns", "stranger", m.dns_selector)
        pod("unselected", m.ns, {"app": "unselected"})
        # Pods wearing the labels egress-gen and the charts put on objects.
        pod("object-labels", m.ns, {"app.kubernetes.io/part-of": "egress-guard",
                                    "app.kubernetes.io/managed-by": "egress-gen",
                                    "egress-guard.io/address-set": f"{m.ns}-denied"})
        pod("chart-labels", m.ns, {"app.kubernetes.io/instance": "wf", "app.kubernetes.io/managed-by": "Helm",
                                   "egress-guard.io/generated-by": "egress-gen"})
        for w in m.workloads:
            if len(w["selector"]) > 1:  # one label short of the workload
                drop = rng.choice(sorted(w["selector"]))
                pod(f"near-{w['name']}", m.ns, {k: v for k, v in w["selector"].items() if k != drop})
            if rng.random() < 0.5:
                pod(f"fake-{w['name']}", rng.choice(["stranger", "callers-a"]), w["selector"])
        foreign = [p for w in m.workloads for p in m.egress_peers(w) + [f for sp in w.get("ports", []) for f in sp["from"]]
                   if "namespace_selector" in p]
        for i, p in enumerate(foreign):
            labels = p.get("pod_selector") or {"app": "caller"}
            for ns in sorted(OTHER_NAMESPACES):
                if _matches(p["namespace_selector"], {**OTHER_NAMESPACES[ns], NAME_LABEL: ns}) or rng.random() < 0.2:
                    pod(f"caller-{i}-{ns}", ns, labels)
            pod(f"caller-{i}-own", m.ns, labels)
        for ns in ("callers-a", "monitoring"):
            pod(f"other-{ns}", ns, {"app": "other"})
        pods = []
        for i, (name, ns, labels) in enumerate(specs):
            pods.append(ne.Pod(name, ns, labels, (f"10.244.{i // 200}.{i % 200 + 2}", f"fd00:10:244::{i + 2:x}")))
        self.world = ne.World([ne.Namespace(n, l) for n, l in namespaces.items()], pods)
        self.pods = pods
        addresses = list(FIXED_ADDRESSES)
        addresses += _addresses_around(cfg.get("upstream_cidrs", []), rng)
        addresses += _addresses_around(cfg.get("denied_cidrs", []), rng)
        addresses += _addresses_around(cfg.get("allow_cidrs", []), rng)
        if m.node_local:
            addresses += [m.node_local, _near(m.node_local, 1)]
        self.addresses = sorted({a for a in addresses if a is not None}, key=lambda a: (":" in a, a))


# --------------------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------------------

def interesting_ports(m: Meaning) -> list[tuple]:
    """Every (protocol, port) the config names (served, peer, allowlisted, proxy, admin,
    DNS) and a few it does not, each over TCP, UDP and SCTP."""
    ports = {53, 22, 9153, m.proxy_port, m.admin_port} | set(m.allow_ports)
    for w in m.workloads:
        ports |= {sp["port"] for sp in w.get("ports", [])}
        for p in m.egress_peers(w):
            ports |= set(p.get("ports", []))
    return sorted((proto, port) for port in ports for proto in ("TCP", "UDP", "SCTP"))


def expectation(m: Meaning, world: ne.World, engine: str, key: tuple) -> tuple:
    """(expected verdict or None, invariant) of one check `key` =
    (direction, subject pod name, peer name or IP literal, (protocol, port), family)."""
    direction, subject, peer, l4, family = key
    pod, other = world.pods[subject], world.endpoint(peer)
    if direction == "Egress":
        ip = other.address(family) if isinstance(other, ne.Pod) else other
        return m.egress(engine, pod, other, ip, l4, world)
    return m.ingress(pod, other, l4, world)


def _candidates(m: Meaning, inv: Inventory) -> list[tuple]:
    """(direction, subject, peer, (protocol, port), family or None) of every flow the
    config may allow, built from its parts (DNS, peers, upstream, proxy, served ports),
    and of the flows a policy that overreaches would allow with them: DNS ports to every
    pod and address, the allowlisted ports to every address and pod, the proxy port to
    every pod; family None = any."""
    world = inv.world
    everything = [(p.name, fam) for p in inv.pods for fam in (4, 6)] + [(a, None) for a in inv.addresses]
    dns = everything
    upstream = everything
    proxies = [(p.name, None) for p in inv.pods]
    sources = [p.name for p in inv.pods] + inv.addresses[:3]
    tcp_allow = [("TCP", port) for port in m.allow_ports]
    out = []
    for src in (p for p in inv.pods if p.namespace == m.ns):
        def egress(dsts, l4s):
            out.extend(("Egress", src.name, d, l4, fam) for d, fam in dsts for l4 in l4s)
        if m.is_proxy_pod(src):
            egress(dns, DNS_PORTS)
            egress(upstream, tcp_allow)
            out.extend(("Ingress", src.name, s, ("TCP", m.proxy_port), None) for s in sources)
        for w in m.workloads_of(src):
            cls = m.klass(w)
            if cls in ("dns-only", "proxy"):
                egress(dns, DNS_PORTS)
            for peer in m.egress_peers(w):
                egress([(p.name, None) for p in inv.pods if m.peer_matches(peer, p, world)], m.peer_l4(peer))
            if cls == "proxy":
                egress(upstream if not m.gateway else proxies,
                       tcp_allow if not m.gateway else [("TCP", m.proxy_port)])
            for sp in w.get("ports", []):
                l4 = (sp.get("protocol", "TCP"), sp["port"])
                out.extend(("Ingress", src.name, s, l4, None) for s in sources)
    return out


def flows(m: Meaning, inv: Inventory, budget: int, seed: str) -> list[tuple]:
    """Check keys for one config, `budget` in all: the flows the config allows (from
    _candidates, up to 40 % of the budget), the candidates it denies (25 %), the allowed
    flows one protocol or one port off (15 %), and a uniform sample of all other flows.
    Pod-to-pod flows take a random IP family unless the candidate needs one; address
    flows the address's."""
    rng = random.Random(seed)
    world = inv.world
    ports = interesting_ports(m)
    mine = [p for p in inv.pods if p.namespace == m.ns]
    others = [p for p in inv.pods if p.namespace != m.ns]
    peers = [p.name for p in inv.pods] + inv.addresses
    seen, out = set(), []

    def key(direction, subject, peer, l4, family=None):
        if family is None and peer in world.pods:
            family = rng.choice((4, 6))
        return (direction, subject, peer, l4, family)

    def take(k) -> bool:
        if k[:4] in seen:
            return False
        seen.add(k[:4])
        out.append(k)
        return True

    allowed, denied = [], []
    for c in _candidates(m, inv):
        k = key(*c)
        (allowed if expectation(m, world, "kubernetes", k)[0] else denied).append(k)
    rng.shuffle(allowed)
    rng.shuffle(denied)
    near = []
    for k in allowed:
        if len(out) >= budget * 2 // 5:
            break
        if take(k):
            proto, port = k[3]
            near += [k[:3] + ((p, port),) + k[4:] for p in ("TCP", "UDP", "SCTP") if p != proto]
            near.append(k[:3] + ((proto, port + 1 if port < 65535 else port - 1),) + k[4:])
    limit = len(out) + budget // 4
    for k in denied:
        if len(out) >= limit:
            break
        take(k)
    rng.shuffle(near)
    limit = len(out) + budget * 3 // 20
    for k in near:
        if len(out) >= limit:
            break
        take(k)
    tries = 0
    while len(out) < budget and tries < budget * 4:
        tries += 1
        r = rng.random()
        direction = "Egress" if r < 0.55 or 0.9 <= r < 0.95 else "Ingress"
        subject = rng.choice(mine if r < 0.9 else others)
        take(key(direction, subject.name, rng.choice(peers), rng.choice(ports)))
    return out
