"""Seeded generator of random VALID egress-guard deployment configs (config/*.yaml shape),
for the property test (property_test.py), and the reductions its shrinker tries.

What it generates: 1-8 workloads of every egress class (none, dns-only, peers, proxy),
served ports over TCP, UDP and SCTP (sometimes one port over two protocols), ingress and
egress peers by workload, by pod selector and across namespaces, sidecar and gateway
proxies, custom cluster DNS and node-local DNS, allow_cidrs, upstream_cidrs and
denied_cidrs overrides. Selectors deliberately share labels with each other and with the
labels egress-gen and the Helm charts put on objects (`app.kubernetes.io/part-of:
egress-guard` on the GlobalNetworkSet and the egress-proxy chart's pods, the chart's
`app.kubernetes.io/instance` and `managed-by: Helm`), since that is where selectors
overreach.

"Valid" means: the generator obeys every rule of the loader (common/src/config.cpp) it
knows of, so egress-gen is expected to accept the config, except for rules it breaks on
purpose now and then, which the loader must enforce (config_meaning.must_be_rejected
decides which outcome is right): upstream_cidrs wholly inside the denied ranges, a
workload selector and proxy.selector that contain one another, a workload selector
using the label key reserved for egress-gen's GlobalNetworkSet.

Must not: read rendered output, call egress-gen, or know how anything is rendered. Plain
dicts in, plain dicts out (yaml.safe_dump writes them).
"""

from __future__ import annotations

import copy
import random
from typing import Iterator

# Labels egress-gen puts on every object (gen/src/render.cpp object_labels) and the charts
# put on objects and pods (charts/*/templates/_helpers.tpl, render_chart's extra labels).
OBJECT_LABELS = [
    ("app.kubernetes.io/part-of", "egress-guard"),
    ("app.kubernetes.io/managed-by", "egress-gen"),
    ("app.kubernetes.io/managed-by", "Helm"),
    ("app.kubernetes.io/instance", "wf"),
    ("egress-guard.io/generated-by", "egress-gen"),
    ("app.kubernetes.io/component", "gateway"),
]
# Labels workloads share with each other.
SHARED_LABELS = [("tier", "web"), ("tier", "db"), ("team", "functions"), ("k8s-app", "kube-dns")]

NAMESPACES = ["apps", "functions", "wf-prod", "team-a"]
WORKLOAD_NAMES = ["orchestrator", "evaluator", "api", "db", "cache", "worker", "relay",
                  "frontend", "batch", "metrics"]
PORTS = [53, 80, 443, 3128, 5432, 6254, 6927, 8080, 9090]
PROTOCOLS = ["TCP"] * 5 + ["UDP"] * 3 + ["SCTP"] * 2

# Namespace selectors and the pod selectors that go with them; property_test's inventory
# creates namespaces carrying these labels (config_meaning.OTHER_NAMESPACES).
NAMESPACE_SELECTORS = [
    {"team": "callers"},
    {"team": "callers", "env": "prod"},
    {"kubernetes.io/metadata.name": "monitoring"},
    {"env": "prod"},
    {},
]
FOREIGN_POD_SELECTORS = [None, {"app": "mediawiki"}, {"app": "prometheus"},
                         {"app.kubernetes.io/part-of": "egress-guard"},
                         {"app.kubernetes.io/instance": "wf"}]

PROXY_SELECTORS = [
    {"app.kubernetes.io/name": "egress-proxy"},
    {"app.kubernetes.io/name": "egress-proxy", "app.kubernetes.io/part-of": "egress-guard"},
    {"app.kubernetes.io/part-of": "egress-guard", "app.kubernetes.io/component": "gateway"},
    {"app.kubernetes.io/part-of": "egress-guard"},
    {"app": "proxy"},
]
DNS_SELECTORS = [{"k8s-app": "kube-dns"}, {"app.kubernetes.io/name": "coredns"},
                 {"k8s-app": "kube-dns", "app.kubernetes.io/part-of": "egress-guard"}]
NODE_LOCAL = ["169.254.20.10", "fd00:10::a"]

# Upstream ranges: public blocks, the defaults, NAT64/6to4 prefixes, and blocks wholly
# inside the built-in denied ranges (10.0.0.0/8, a metadata /32).
UPSTREAM_PUBLIC = ["0.0.0.0/0", "::/0", "185.15.56.0/22", "2a02:ec80::/29", "8.8.8.0/24",
                   "64:ff9b::/96", "2002::/16"]
UPSTREAM_DENIED = ["10.0.0.0/8", "169.254.169.254/32", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7",
                   "64:ff9b::a9fe:0/112"]
DENIED_EXTRA = ["185.71.0.0/16", "8.8.4.0/24", "185.15.58.0/24"]
DENIED_OWN = ["10.0.0.0/8", "169.254.0.0/16", "fc00::/7", "192.168.0.0/16", "185.71.0.0/16",
              "127.0.0.0/8"]
ALLOW_POOL = ["10.20.0.0/16", "127.0.0.0/8", "169.254.169.254/32", "192.168.5.0/24",
              "fd00:ab::/32", "185.71.4.0/24"]
HOSTS = ["www.wikidata.org", "wikidata.org", "*.wikimedia.org", "example.org", "api.example.com"]
ALLOW_PORTS = [443, 8443, 80, 5432]


def _subset(rng: random.Random, labels: dict, min_size: int = 1) -> dict:
    keys = sorted(labels)
    k = rng.randint(min(min_size, len(keys)), len(keys))
    return {key: labels[key] for key in sorted(rng.sample(keys, k))}


def _is_subset(small: dict, big: dict) -> bool:
    return all(big.get(k) == v for k, v in small.items())


def _selector(rng: random.Random, name: str) -> dict:
    sel = {}
    if rng.random() < 0.6:
        sel["app"] = name
    for _ in range(rng.choice([0, 1, 1, 2])):
        key, value = rng.choice(OBJECT_LABELS if rng.random() < 0.6 else SHARED_LABELS)
        sel.setdefault(key, value)
    if not sel:
        key, value = rng.choice(OBJECT_LABELS)
        sel[key] = value
    return sel


def _served_ports(rng: random.Random) -> list:
    out, seen = [], set()
    for _ in range(rng.choice([0, 0, 1, 1, 2, 3])):
        port = rng.choice(PORTS)
        protocols = [rng.choice(PROTOCOLS)]
        if rng.random() < 0.3:  # the same port over two protocols
            protocols.append(rng.choice([p for p in ("TCP", "UDP", "SCTP") if p != protocols[0]]))
        for proto in protocols:
            if (port, proto) in seen:
                continue
            seen.add((port, proto))
            sp = {"port": port}
            if proto != "TCP" or rng.random() < 0.5:
                sp["protocol"] = proto
            out.append(sp)
    return out


def _foreign_peer(rng: random.Random) -> dict:
    peer = {"namespace_selector": dict(rng.choice(NAMESPACE_SELECTORS))}
    pods = rng.choice(FOREIGN_POD_SELECTORS)
    if pods is not None:
        peer["pod_selector"] = dict(pods)
    return peer


def _ingress_peer(rng: random.Random, workloads: list) -> dict:
    r = rng.random()
    if r < 0.45:
        return {"workload": rng.choice(workloads)["name"]}
    if r < 0.7:
        return {"pod_selector": _subset(rng, rng.choice(workloads)["selector"])}
    return _foreign_peer(rng)


def _egress_peer(rng: random.Random, workloads: list) -> dict | None:
    r = rng.random()
    if r < 0.55:
        target = rng.choice(workloads)
        served = sorted({sp["port"] for sp in target.get("ports", [])})
        if not served:
            return None
        peer = {"workload": target["name"]}
        if rng.random() < 0.6:
            peer["ports"] = sorted(rng.sample(served, rng.randint(1, len(served))))
        return peer
    ports = sorted(rng.sample(PORTS, rng.randint(1, 2)))
    if r < 0.75:
        return {"pod_selector": _subset(rng, rng.choice(workloads)["selector"]), "ports": ports}
    return {**_foreign_peer(rng), "ports": ports}


def generate(seed: str) -> dict:
    """One random valid deployment config (a dict in config/*.yaml shape) for `seed`."""
    rng = random.Random(seed)
    cfg: dict = {"version": 1, "namespace": rng.choice(NAMESPACES)}
    has_proxy = rng.random() < 0.8
    mode = rng.choice(["sidecar", "gateway"]) if has_proxy else None
    proxy_selector = dict(rng.choice(PROXY_SELECTORS)) if mode == "gateway" else None

    workloads = []
    for name in rng.sample(WORKLOAD_NAMES, rng.randint(1, 8)):
        for _ in range(20):
            sel = _selector(rng, name)
            # The loader refuses a proxy selector that selects a workload's pods, and a
            # workload selector that selects the proxy pods (broken on purpose, 2 %).
            if proxy_selector is None or not (_is_subset(proxy_selector, sel) or _is_subset(sel, proxy_selector)):
                break
            if rng.random() < 0.02:
                break
        else:
            sel = {"app": name}
        if rng.random() < 0.003:  # the reserved key of the GlobalNetworkSet's label
            sel["egress-guard.io/address-set"] = f"{cfg['namespace']}-denied"
        workloads.append({"name": name, "selector": sel})
    if proxy_selector is not None and rng.random() < 0.05:
        # A workload whose selector is part of proxy.selector: it selects the proxy pods.
        rng.choice(workloads)["selector"] = _subset(rng, proxy_selector)
    for w in workloads:
        ports = _served_ports(rng)
        if ports:
            w["ports"] = ports
    for w in workloads:
        for sp in w.get("ports", []):
            sp["from"] = [_ingress_peer(rng, workloads) for _ in range(rng.randint(1, 3))]
    classes = ["none", "dns-only", "peers"] + (["proxy", "proxy"] if has_proxy else [])
    for w in workloads:
        cls = rng.choice(classes)
        peers = []
        if cls != "none":
            for _ in range(rng.choice([0, 1, 1, 2, 3]) if cls != "peers" else rng.randint(1, 3)):
                p = _egress_peer(rng, workloads)
                if p is not None:
                    peers.append(p)
        if cls == "peers" and not peers:
            peers.append({**_foreign_peer(rng), "ports": [rng.choice(PORTS)]})
        w["egress"] = {"class": cls, "peers": peers} if peers else cls
    cfg["workloads"] = workloads

    if has_proxy:
        port = rng.choice([3128, 8080, 3129])
        proxy = {"mode": mode, "port": port, "admin_port": rng.choice([p for p in (9901, 9090, 3128) if p != port])}
        if proxy_selector is not None:
            proxy["selector"] = proxy_selector
        cfg["proxy"] = proxy
        allow = []
        for host in rng.sample(HOSTS, rng.randint(1, 3)):
            entry = {"host": host}
            if rng.random() < 0.5:
                entry["ports"] = sorted(rng.sample(ALLOW_PORTS, rng.randint(1, 2)))
            allow.append(entry)
        cfg["allowlist"] = allow
    if rng.random() < 0.4:
        dns = {}
        if rng.random() < 0.5:
            dns["namespace"] = rng.choice(["kube-system", "dns"])
        if rng.random() < 0.5:
            dns["selector"] = dict(rng.choice(DNS_SELECTORS))
        if rng.random() < 0.5:
            dns["node_local_address"] = rng.choice(NODE_LOCAL)
        if dns:
            cfg["dns"] = dns
    if rng.random() < 0.35:
        # Mostly a mix (a denied range next to public ones opens only the public ones),
        # sometimes denied ranges only, which the loader must refuse.
        if rng.random() < 0.15:
            cfg["upstream_cidrs"] = rng.sample(UPSTREAM_DENIED, rng.randint(1, 2))
        else:
            cfg["upstream_cidrs"] = (rng.sample(UPSTREAM_PUBLIC, rng.randint(1, 2))
                                     + rng.sample(UPSTREAM_DENIED, rng.choice([0, 0, 1])))
            rng.shuffle(cfg["upstream_cidrs"])
    if rng.random() < 0.25:
        if rng.random() < 0.5:
            cfg["denied_cidrs"] = ["default"] + rng.sample(DENIED_EXTRA, rng.randint(1, 2))
        else:
            cfg["denied_cidrs"] = rng.sample(DENIED_OWN, rng.randint(1, 3))
    if rng.random() < 0.25:
        cfg["allow_cidrs"] = rng.sample(ALLOW_POOL, rng.randint(1, 2))
    return cfg


# --------------------------------------------------------------------------------------
# Shrinking: smaller configs, one step at a time. The caller keeps a candidate only when
# egress-gen still accepts it and the property still fails.
# --------------------------------------------------------------------------------------

def _drop_workload(cfg: dict, name: str) -> dict:
    out = copy.deepcopy(cfg)
    out["workloads"] = [w for w in out["workloads"] if w["name"] != name]
    for w in out["workloads"]:
        for sp in w.get("ports", []):
            sp["from"] = [p for p in sp["from"] if p.get("workload") != name]
        w["ports"] = [sp for sp in w.get("ports", []) if sp["from"]]
        if not w["ports"]:
            w.pop("ports")
        if isinstance(w["egress"], dict):
            w["egress"]["peers"] = [p for p in w["egress"]["peers"] if p.get("workload") != name]
            if not w["egress"]["peers"]:
                w["egress"] = w["egress"]["class"]
    return out


def reductions(cfg: dict) -> Iterator[dict]:
    """Configs one step smaller than `cfg`, biggest steps first (whole workloads, then
    ports, peers, optional sections, selector labels, list entries)."""
    if len(cfg["workloads"]) > 1:
        for w in cfg["workloads"]:
            yield _drop_workload(cfg, w["name"])
    for key in ("allow_cidrs", "denied_cidrs", "upstream_cidrs", "dns"):
        if key in cfg:
            out = copy.deepcopy(cfg)
            del out[key]
            yield out
    if "proxy" in cfg and not any(_class(w) == "proxy" for w in cfg["workloads"]):
        out = copy.deepcopy(cfg)
        del out["proxy"]
        out.pop("allowlist", None)
        yield out
    for i, w in enumerate(cfg["workloads"]):
        for j in range(len(w.get("ports", []))):
            out = copy.deepcopy(cfg)
            del out["workloads"][i]["ports"][j]
            if not out["workloads"][i]["ports"]:
                del out["workloads"][i]["ports"]
            yield out
            for k in range(len(w["ports"][j]["from"])):
                if len(w["ports"][j]["from"]) > 1:
                    out = copy.deepcopy(cfg)
                    del out["workloads"][i]["ports"][j]["from"][k]
                    yield out
        if isinstance(w["egress"], dict):
            peers = w["egress"]["peers"]
            for k in range(len(peers)):
                out = copy.deepcopy(cfg)
                del out["workloads"][i]["egress"]["peers"][k]
                if not out["workloads"][i]["egress"]["peers"]:
                    out["workloads"][i]["egress"] = w["egress"]["class"]
                yield out
                if "ports" in peers[k] and len(peers[k]["ports"]) > 1:
                    for port in peers[k]["ports"]:
                        out = copy.deepcopy(cfg)
                        out["workloads"][i]["egress"]["peers"][k]["ports"].remove(port)
                        yield out
        for cls in ("none", "dns-only"):
            if w["egress"] != cls and not (cls == "dns-only" and _class(w) == "none"):
                out = copy.deepcopy(cfg)
                out["workloads"][i]["egress"] = cls
                yield out
        if len(w["selector"]) > 1:
            for key in sorted(w["selector"]):
                out = copy.deepcopy(cfg)
                del out["workloads"][i]["selector"][key]
                yield out
    for key in ("upstream_cidrs", "denied_cidrs", "allow_cidrs", "allowlist"):
        if len(cfg.get(key) or []) > 1:
            for j in range(len(cfg[key])):
                out = copy.deepcopy(cfg)
                del out[key][j]
                yield out
    for j, entry in enumerate(cfg.get("allowlist", [])):
        if "ports" in entry:
            out = copy.deepcopy(cfg)
            del out["allowlist"][j]["ports"]
            yield out
            for port in entry["ports"] if len(entry["ports"]) > 1 else []:
                out = copy.deepcopy(cfg)
                out["allowlist"][j]["ports"].remove(port)
                yield out
    if "dns" in cfg:
        for key in list(cfg["dns"]):
            out = copy.deepcopy(cfg)
            del out["dns"][key]
            if not out["dns"]:
                del out["dns"]
            yield out
    if "proxy" in cfg:
        for key in ("admin_port", "port"):
            if key in cfg["proxy"]:
                out = copy.deepcopy(cfg)
                del out["proxy"][key]
                yield out


def _class(w: dict) -> str:
    return w["egress"] if isinstance(w["egress"], str) else w["egress"]["class"]
