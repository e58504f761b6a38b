"""A small evaluator of Kubernetes NetworkPolicy and Calico policy semantics, for tests.

It answers one question: is a flow (source, destination, protocol, port) allowed by a set
of rendered objects? It models only what the documentation says, and refuses (raises
NotImplementedError) when it meets a field it does not model, so that an unmodelled field
can never be silently ignored and make a test pass.

Sources (each rule of the model below cites its section):
  [K8S-API]   Kubernetes API reference, networking.k8s.io/v1 NetworkPolicy
              (NetworkPolicySpec, NetworkPolicyEgressRule/IngressRule, NetworkPolicyPeer,
              IPBlock, NetworkPolicyPort) and meta/v1 LabelSelector.
  [K8S-NP]    Kubernetes concepts, "Network Policies" (isolation, behaviour of to/from
              selectors, ipBlock).
  [CAL-GNP]   Calico reference, "Global network policy" (spec fields, types default,
              Rule, EntityRule, Selectors, selector scopes).
  [CAL-GNS]   Calico reference, "Global network set".
  [CAL-ORDER] Calico, "Policy tiers" / policy tutorial: "Policy ordering", "Mixing
              Kubernetes and Calico policies" (implicit order 1000), "Policies with no order
              value", "Policy processing overview" (end-of-tier implicit deny, implicit allow).

Not modelled: traffic from the node itself (the [K8S-API] ingress exception for the pod's
local node), NAT (Service IPs must be given as the backend pod), named ports, tiers other
than default, host endpoints, ICMP type matching. Using any of them raises.
"""

from __future__ import annotations

import functools
import ipaddress
import math
import re
from dataclasses import dataclass, field
from typing import Callable, NamedTuple, Optional, Union

import yaml

Address = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
# Address literals parsed once each (flows repeat the same few hundred addresses).
_ip = functools.lru_cache(maxsize=65536)(ipaddress.ip_address)
NAME_LABEL = "kubernetes.io/metadata.name"


# --------------------------------------------------------------------------------------
# The world: namespaces, pods, external addresses, flows.
# --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Namespace:
    name: str
    labels: dict = field(default_factory=dict, hash=False)

    def all_labels(self) -> dict:
        # Kubernetes sets kubernetes.io/metadata.name on every namespace (well-known label).
        return {**self.labels, NAME_LABEL: self.name}


@dataclass(frozen=True)
class Pod:
    name: str
    namespace: str
    labels: dict = field(hash=False)
    ips: tuple  # at most one address per IP family

    def address(self, family: int) -> Address:
        for ip in self.ips:
            if _ip(ip).version == family:
                return _ip(ip)
        raise ValueError(f"pod {self.name} has no IPv{family} address")


Endpoint = Union[Pod, Address]


class Flow(NamedTuple):
    src: Endpoint
    dst: Endpoint
    protocol: str          # TCP, UDP, SCTP, ICMP
    port: Optional[int]    # None for protocols without ports
    src_ip: Address
    dst_ip: Address


class World:
    def __init__(self, namespaces: list[Namespace], pods: list[Pod]):
        self.namespaces = {ns.name: ns for ns in namespaces}
        self.pods = {pod.name: pod for pod in pods}
        for pod in pods:
            if pod.namespace not in self.namespaces:
                raise ValueError(f"pod {pod.name}: unknown namespace {pod.namespace}")

    def namespace_labels(self, name: str) -> dict:
        return self.namespaces[name].all_labels()

    def endpoint(self, ref: str) -> Endpoint:
        """A pod by name, or else an IP literal (an address outside the cluster)."""
        if ref in self.pods:
            return self.pods[ref]
        return _ip(ref)

    def flow(self, src: str, dst: str, protocol: str, port: Optional[int],
             family: Optional[int] = None) -> Flow:
        s, d = self.endpoint(src), self.endpoint(dst)
        if isinstance(s, Pod) and isinstance(d, Pod):
            family = family or 4
        else:
            family = (d if not isinstance(d, Pod) else s).version
        s_ip = s.address(family) if isinstance(s, Pod) else s
        d_ip = d.address(family) if isinstance(d, Pod) else d
        if s_ip.version != d_ip.version:
            raise ValueError(f"{src} -> {dst}: mixed IP families")
        return Flow(s, d, protocol.upper(), port, s_ip, d_ip)


class Verdict(NamedTuple):
    allowed: bool
    reason: str

    def __bool__(self) -> bool:
        return self.allowed


def load_documents(path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        # libyaml's safe loader when python3-yaml has it (same documents, ~10x faster).
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        return [d for d in yaml.load_all(f, Loader=loader) if d is not None]


def _check_keys(obj: dict, allowed: set, where: str) -> None:
    unknown = set(obj or {}) - allowed
    if unknown:
        raise NotImplementedError(f"{where}: fields not modelled: {sorted(unknown)}")


def evaluate(world: World, engine, flow: Flow) -> Verdict:
    """[K8S-NP] "for a connection from a source pod to a destination pod to be allowed, both
    the egress policy on the source pod and the ingress policy on the destination pod need
    to allow the connection". Calico likewise enforces policy at both workload endpoints.
    An address outside the cluster has no policy of its own: only the pod side counts."""
    if isinstance(flow.src, Pod):
        v = engine.direction_allows(world, flow.src, "Egress", flow.dst, flow.dst_ip, flow)
        if not v.allowed:
            return Verdict(False, f"egress at {flow.src.name}: {v.reason}")
        out = f"egress at {flow.src.name}: {v.reason}"
    else:
        out = "source outside the cluster"
    if isinstance(flow.dst, Pod):
        v = engine.direction_allows(world, flow.dst, "Ingress", flow.src, flow.src_ip, flow)
        return Verdict(v.allowed, f"{out}; ingress at {flow.dst.name}: {v.reason}")
    return Verdict(True, out)


# --------------------------------------------------------------------------------------
# Kubernetes NetworkPolicy
# --------------------------------------------------------------------------------------

def label_selector_matches(selector: Optional[dict], labels: dict) -> bool:
    """[K8S-API] LabelSelector: matchLabels and matchExpressions are ANDed; an empty
    selector matches all objects, a null selector matches none. Operators In, NotIn,
    Exists, DoesNotExist (NotIn also matches objects without the key)."""
    if selector is None:
        return False
    _check_keys(selector, {"matchLabels", "matchExpressions"}, "LabelSelector")
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        if op == "In":
            ok = key in labels and labels[key] in values
        elif op == "NotIn":
            ok = key not in labels or labels[key] not in values
        elif op == "Exists":
            ok = key in labels
        elif op == "DoesNotExist":
            ok = key not in labels
        else:
            raise NotImplementedError(f"matchExpressions operator {op}")
        if not ok:
            return False
    return True


@functools.lru_cache(maxsize=65536)
def _network(cidr: str):
    # Parsed once per distinct text: rendered policies repeat the same few dozen blocks.
    return ipaddress.ip_network(cidr, strict=True)


def _in_cidr(ip: Address, cidr: str) -> bool:
    net = _network(cidr)
    return ip.version == net.version and ip in net


def k8s_peer_matches(peer: dict, policy_ns: str, world: World, endpoint: Endpoint,
                     ip: Address, ipblock_matches_pod_ips: bool) -> bool:
    """[K8S-API] NetworkPolicyPeer / [K8S-NP] "Behavior of to and from selectors"."""
    _check_keys(peer, {"podSelector", "namespaceSelector", "ipBlock"}, "NetworkPolicyPeer")
    if "ipBlock" in peer:
        # [K8S-API] IPBlock: the CIDR is allowed, minus the `except` CIDRs. [K8S-NP] says
        # ipBlocks "should be cluster-external IPs"; whether they also match pod IPs is left
        # to the implementation (Calico: yes), hence the switch.
        if isinstance(endpoint, Pod) and not ipblock_matches_pod_ips:
            return False
        block = peer["ipBlock"]
        _check_keys(block, {"cidr", "except"}, "IPBlock")
        return _in_cidr(ip, block["cidr"]) and not any(
            _in_cidr(ip, c) for c in block.get("except") or [])
    if not isinstance(endpoint, Pod):
        return False  # pod and namespace selectors select pods only
    if "namespaceSelector" in peer:
        # namespaceSelector alone: all pods in the selected namespaces; with podSelector in
        # the same peer: pods matching podSelector in those namespaces (AND).
        if not label_selector_matches(peer["namespaceSelector"],
                                      world.namespace_labels(endpoint.namespace)):
            return False
    elif endpoint.namespace != policy_ns:
        return False  # podSelector alone: pods in the policy's own namespace
    return label_selector_matches(peer.get("podSelector", {}), endpoint.labels)


def k8s_ports_match(ports: Optional[list], flow: Flow) -> bool:
    """[K8S-API] NetworkPolicyPort: protocol defaults to TCP; no port = every port of that
    protocol; endPort makes port..endPort inclusive. Empty/absent `ports` = every port."""
    if not ports:
        return True
    for p in ports:
        _check_keys(p, {"protocol", "port", "endPort"}, "NetworkPolicyPort")
        if (p.get("protocol") or "TCP").upper() != flow.protocol:
            continue
        if "port" not in p:
            return True
        if isinstance(p["port"], str):
            raise NotImplementedError("named ports")
        if flow.port is not None and p["port"] <= flow.port <= p.get("endPort", p["port"]):
            return True
    return False


def k8s_rule_matches(rule: dict, direction: str, policy_ns: str, world: World,
                     peer: Endpoint, peer_ip: Address, flow: Flow,
                     ipblock_matches_pod_ips: bool) -> bool:
    """[K8S-API] NetworkPolicyEgressRule/IngressRule: traffic must match `to`/`from` AND
    `ports`; an empty or absent `to`/`from` matches every peer."""
    peers_key = "to" if direction == "Egress" else "from"
    _check_keys(rule, {peers_key, "ports"}, f"{direction} rule")
    peers = rule.get(peers_key) or []
    if peers and not any(k8s_peer_matches(p, policy_ns, world, peer, peer_ip,
                                          ipblock_matches_pod_ips) for p in peers):
        return False
    return k8s_ports_match(rule.get("ports"), flow)


def k8s_policy_types(spec: dict) -> list[str]:
    """[K8S-API] policyTypes default (SetDefaults_NetworkPolicy in
    pkg/apis/networking/v1/defaults.go): Ingress always; Egress only when the egress list
    is non-empty, so `egress: []` (or `egress: null`) without policyTypes leaves egress
    unisolated."""
    if spec.get("policyTypes"):
        return list(spec["policyTypes"])
    return ["Ingress"] + (["Egress"] if spec.get("egress") else [])


def _k8s_policies(documents: list[dict]) -> list[dict]:
    out = []
    for doc in documents:
        if doc.get("kind") != "NetworkPolicy" or doc.get("apiVersion") != "networking.k8s.io/v1":
            raise NotImplementedError(f"not a Kubernetes NetworkPolicy: {doc.get('kind')}")
        _check_keys(doc["spec"], {"podSelector", "policyTypes", "ingress", "egress"},
                    f"NetworkPolicy {doc['metadata']['name']}")
        out.append(doc)
    return out


def _k8s_selects(policy: dict, pod: Pod) -> bool:
    # [K8S-API] podSelector selects pods in the policy's namespace; {} selects them all.
    return (policy["metadata"]["namespace"] == pod.namespace
            and label_selector_matches(policy["spec"]["podSelector"], pod.labels))


class Kubernetes:
    """Kubernetes NetworkPolicy alone ([K8S-NP] "The two sorts of pod isolation")."""

    def __init__(self, documents: list[dict], ipblock_matches_pod_ips: bool = True):
        self.policies = _k8s_policies(documents)
        self.ipblock_matches_pod_ips = ipblock_matches_pod_ips

    def direction_allows(self, world, pod, direction, peer, peer_ip, flow) -> Verdict:
        # A pod is isolated for a direction iff some policy selecting it has that direction
        # in policyTypes; a non-isolated pod allows everything in that direction.
        relevant = [p for p in self.policies
                    if _k8s_selects(p, pod) and direction in k8s_policy_types(p["spec"])]
        if not relevant:
            return Verdict(True, "not isolated")
        # Allows are additive: the union of every rule of every relevant policy.
        key = direction.lower()
        for policy in relevant:
            for i, rule in enumerate(policy["spec"].get(key) or []):
                if k8s_rule_matches(rule, direction, policy["metadata"]["namespace"], world,
                                    peer, peer_ip, flow, self.ipblock_matches_pod_ips):
                    return Verdict(True, f"{policy['metadata']['name']} {key}[{i}]")
        return Verdict(False, "isolated, no rule allows")


# --------------------------------------------------------------------------------------
# Calico selectors ([CAL-GNP] "Selectors"): the subset ==, !=, in, not in, has(), all(),
# !, &&, || and parentheses. Precedence: match operators, parentheses, !, &&, ||.
# --------------------------------------------------------------------------------------

_TOKEN = re.compile(r"""\s*(?:(==|!=|&&|\|\||[!(){},])|'([^']*)'|"([^"]*)"|([A-Za-z0-9_./-]+))""")


def _tokenize(text: str) -> list[tuple[str, str]]:
    tokens, pos, text = [], 0, text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise ValueError(f"bad selector {text!r} at {pos}")
        op, single, double, word = m.groups()
        if op:
            tokens.append(("op", op))
        elif word is not None:
            tokens.append(("word", word))
        else:
            tokens.append(("str", single if single is not None else double))
        pos = m.end()
    return tokens


class _SelectorParser:
    def __init__(self, text: str):
        self.tokens, self.i, self.text = _tokenize(text), 0, text

    def peek(self):
        return self.tokens[self.i] if self.i < len(self.tokens) else ("end", "")

    def take(self, kind=None, value=None):
        tok = self.peek()
        if (kind and tok[0] != kind) or (value is not None and tok[1] != value):
            raise ValueError(f"selector {self.text!r}: expected {value or kind}, got {tok[1]!r}")
        self.i += 1
        return tok[1]

    def parse(self) -> Callable[[dict], bool]:
        fn = self.disjunction()
        self.take("end")
        return fn

    def disjunction(self):
        parts = [self.conjunction()]
        while self.peek() == ("op", "||"):
            self.take()
            parts.append(self.conjunction())
        return parts[0] if len(parts) == 1 else (lambda l, ps=parts: any(p(l) for p in ps))

    def conjunction(self):
        parts = [self.negation()]
        while self.peek() == ("op", "&&"):
            self.take()
            parts.append(self.negation())
        return parts[0] if len(parts) == 1 else (lambda l, ps=parts: all(p(l) for p in ps))

    def negation(self):
        if self.peek() == ("op", "!"):
            self.take()
            inner = self.negation()
            return lambda l: not inner(l)
        if self.peek() == ("op", "("):
            self.take()
            inner = self.disjunction()
            self.take("op", ")")
            return inner
        return self.match()

    def string_set(self) -> set:
        self.take("op", "{")
        values = set()
        while self.peek() != ("op", "}"):
            values.add(self.take("str"))
            if self.peek() == ("op", ","):
                self.take()
        self.take("op", "}")
        return values

    def match(self):
        word = self.take("word")
        if word in ("all", "has", "global") and self.peek() == ("op", "("):
            self.take()
            if word == "all":
                self.take("op", ")")
                return lambda l: True                      # all(): every in-scope resource
            if word == "global":
                raise NotImplementedError("global()")
            key = self.take("word")
            self.take("op", ")")
            return lambda l: key in l                      # has(k)
        kind, op = self.peek()
        if op == "==":
            self.take()
            v = self.take("str")
            return lambda l: l.get(word) == v              # label k present with value v
        if op == "!=":
            self.take()
            v = self.take("str")
            return lambda l: l.get(word) != v              # without k, or k with another value
        if (kind, op) == ("word", "in"):
            self.take()
            vs = self.string_set()
            return lambda l: word in l and l[word] in vs
        if (kind, op) == ("word", "not"):
            self.take()
            self.take("word", "in")
            vs = self.string_set()
            return lambda l: word not in l or l[word] not in vs
        raise NotImplementedError(f"selector {self.text!r}: operator {op!r}")


_selector_cache: dict = {}


def calico_selector(text: Optional[str]) -> Callable[[dict], bool]:
    if text is None or text.strip() == "":
        return lambda labels: True
    if text not in _selector_cache:
        _selector_cache[text] = _SelectorParser(text).parse()
    return _selector_cache[text]


# --------------------------------------------------------------------------------------
# Calico policy
# --------------------------------------------------------------------------------------

_PROTOCOLS = {1: "ICMP", 6: "TCP", 17: "UDP", 58: "ICMPV6", 132: "SCTP"}


def _protocol_name(p) -> str:
    return _PROTOCOLS.get(p, str(p)) if isinstance(p, int) else str(p).upper()


@dataclass
class GlobalNetworkSet:
    name: str
    labels: dict
    nets: list

    def contains(self, ip: Address) -> bool:
        return any(_in_cidr(ip, n) for n in self.nets)


def _calico_port_matches(spec, port: int) -> bool:
    # [CAL-GNP] Ports: a number or "first:last" (inclusive); named ports are not modelled.
    if isinstance(spec, int):
        return port == spec
    if isinstance(spec, str) and re.fullmatch(r"\d+:\d+", spec):
        lo, hi = (int(x) for x in spec.split(":"))
        return lo <= port <= hi
    raise NotImplementedError(f"named or odd port {spec!r}")


class _Calico:
    """Shared state for matching Calico rules: the world and the global network sets."""

    def __init__(self, world: World, network_sets: list[GlobalNetworkSet]):
        self.world, self.network_sets = world, network_sets

    def endpoint_labels(self, pod: Pod) -> dict:
        # Calico adds projectcalico.org/namespace to workload endpoints ([CAL-GNP]).
        return {**pod.labels, "projectcalico.org/namespace": pod.namespace}

    def namespace_labels(self, name: str) -> dict:
        # ... and projectcalico.org/name to namespaces, next to their own labels.
        return {**self.world.namespace_labels(name), "projectcalico.org/name": name}

    def selected(self, entity: dict, endpoint: Endpoint, ip: Address, key: str) -> bool:
        """[CAL-GNP] EntityRule selector/notSelector with its namespaceSelector scope: with a
        namespaceSelector only workload endpoints in the selected namespaces; without one
        (in a GlobalNetworkPolicy) every endpoint and every global network set. [CAL-GNS]
        a selector matching a network set matches the IPs in its nets."""
        sel = calico_selector(entity.get(key))
        ns_sel = entity.get("namespaceSelector")
        if ns_sel is not None:
            return (isinstance(endpoint, Pod)
                    and calico_selector(ns_sel)(self.namespace_labels(endpoint.namespace))
                    and sel(self.endpoint_labels(endpoint)))
        if isinstance(endpoint, Pod) and sel(self.endpoint_labels(endpoint)):
            return True
        return any(s.contains(ip) and sel(s.labels) for s in self.network_sets)

    def entity_matches(self, entity: Optional[dict], endpoint: Endpoint, ip: Address,
                       flow: Flow) -> bool:
        """[CAL-GNP] EntityRule: every criterion given must match."""
        entity = entity or {}
        _check_keys(entity, {"nets", "notNets", "selector", "notSelector",
                             "namespaceSelector", "ports", "notPorts"}, "EntityRule")
        if "nets" in entity and not any(_in_cidr(ip, n) for n in entity["nets"]):
            return False
        if any(_in_cidr(ip, n) for n in entity.get("notNets") or []):
            return False
        if ("selector" in entity or "namespaceSelector" in entity) \
                and not self.selected(entity, endpoint, ip, "selector"):
            return False
        if "notSelector" in entity and self.selected(entity, endpoint, ip, "notSelector"):
            return False
        if "ports" in entity and (flow.port is None or not any(
                _calico_port_matches(p, flow.port) for p in entity["ports"])):
            return False
        if flow.port is not None and any(
                _calico_port_matches(p, flow.port) for p in entity.get("notPorts") or []):
            return False
        return True

    def rule_matches(self, rule: dict, direction: str, pod: Pod, peer: Endpoint,
                     peer_ip: Address, flow: Flow) -> bool:
        """[CAL-GNP] Rule: protocol, ipVersion, source and destination must all match."""
        _check_keys(rule, {"action", "protocol", "ipVersion", "source", "destination",
                           "metadata"}, "Calico rule")
        if "protocol" in rule and _protocol_name(rule["protocol"]) != flow.protocol:
            return False
        if "ipVersion" in rule and rule["ipVersion"] != flow.dst_ip.version:
            return False
        if direction == "Egress":
            src, src_ip, dst, dst_ip = pod, flow.src_ip, peer, peer_ip
        else:
            src, src_ip, dst, dst_ip = peer, peer_ip, pod, flow.dst_ip
        # Ports in `source` are source ports; flows here carry destination ports only.
        if (rule.get("source") or {}).keys() & {"ports", "notPorts"}:
            raise NotImplementedError("source ports")
        return (self.entity_matches(rule.get("source"), src, src_ip, flow)
                and self.entity_matches(rule.get("destination"), dst, dst_ip, flow))


@dataclass
class _TierPolicy:
    name: str
    order: float                           # math.inf when the policy has no order
    applies: Callable[[_Calico, Pod], bool]
    types: list
    rules: Callable                        # (ctx, direction, pod, peer, peer_ip, flow) -> action | None


def _gnp_policy(doc: dict) -> _TierPolicy:
    name, spec = doc["metadata"]["name"], doc["spec"]
    _check_keys(spec, {"order", "selector", "namespaceSelector", "types", "ingress",
                       "egress", "tier", "performanceHints"}, f"GlobalNetworkPolicy {name}")
    if spec.get("tier", "default") != "default":
        raise NotImplementedError("tiers other than default")
    for rule in (spec.get("ingress") or []) + (spec.get("egress") or []):
        if rule.get("action") not in ("Allow", "Deny", "Pass", "Log"):
            raise ValueError(f"{name}: bad action {rule.get('action')!r}")
    # [CAL-GNP] types default: Egress added only when egress rules exist, Ingress unless
    # only egress rules exist.
    types = spec.get("types") or (
        ["Egress"] if spec.get("egress") and not spec.get("ingress") else
        ["Ingress", "Egress"] if spec.get("egress") else ["Ingress"])
    selector = calico_selector(spec.get("selector"))             # default all()
    ns_selector = calico_selector(spec.get("namespaceSelector"))  # default all()

    def applies(ctx: _Calico, pod: Pod) -> bool:
        return (selector(ctx.endpoint_labels(pod))
                and ns_selector(ctx.namespace_labels(pod.namespace)))

    def rules(ctx: _Calico, direction, pod, peer, peer_ip, flow):
        # [CAL-GNP] Rule: rules run in order; Log continues, Allow/Deny/Pass end the policy.
        for i, rule in enumerate(spec.get(direction.lower()) or []):
            if ctx.rule_matches(rule, direction, pod, peer, peer_ip, flow):
                if rule["action"] != "Log":
                    return rule["action"], f"{name} {direction.lower()}[{i}] {rule['action']}"
        return None

    order = spec.get("order")
    return _TierPolicy(name, math.inf if order is None else float(order), applies, types, rules)


def _k8s_as_calico(doc: dict, ipblock_matches_pod_ips: bool = True) -> _TierPolicy:
    """[CAL-ORDER] a Kubernetes NetworkPolicy is a policy in the default tier at implicit
    order 1000 whose rules all Allow (Calico names it knp.default.<name>)."""
    spec, ns = doc["spec"], doc["metadata"]["namespace"]
    name = f"knp.default.{doc['metadata']['name']}"

    def rules(ctx: _Calico, direction, pod, peer, peer_ip, flow):
        for i, rule in enumerate(spec.get(direction.lower()) or []):
            if k8s_rule_matches(rule, direction, ns, ctx.world, peer, peer_ip, flow,
                                ipblock_matches_pod_ips):
                return "Allow", f"{name} {direction.lower()}[{i}] Allow"
        return None

    return _TierPolicy(name, 1000.0, lambda ctx, pod: _k8s_selects(doc, pod),
                       k8s_policy_types(spec), rules)


class Calico:
    """Calico's default tier: GlobalNetworkPolicies plus Kubernetes NetworkPolicies."""

    def __init__(self, calico_documents: list[dict], kubernetes_documents: list[dict] = ()):
        self.network_sets: list[GlobalNetworkSet] = []
        self.policies: list[_TierPolicy] = []
        for doc in calico_documents:
            if doc.get("apiVersion") != "projectcalico.org/v3":
                raise NotImplementedError(f"apiVersion {doc.get('apiVersion')}")
            if doc["kind"] == "GlobalNetworkSet":
                _check_keys(doc["spec"], {"nets"}, "GlobalNetworkSet")
                self.network_sets.append(GlobalNetworkSet(
                    doc["metadata"]["name"], doc["metadata"].get("labels") or {},
                    doc["spec"].get("nets") or []))
            elif doc["kind"] == "GlobalNetworkPolicy":
                self.policies.append(_gnp_policy(doc))
            else:
                raise NotImplementedError(f"kind {doc['kind']}")
        self.policies += [_k8s_as_calico(d) for d in _k8s_policies(list(kubernetes_documents))]
        # [CAL-ORDER] lowest order first; policies without an order come last, and
        # policies of equal (or no) order are taken by name.
        self.policies.sort(key=lambda p: (p.order, p.name))

    def direction_allows(self, world, pod, direction, peer, peer_ip, flow) -> Verdict:
        ctx = _Calico(world, self.network_sets)
        applied = [p for p in self.policies if direction in p.types and p.applies(ctx, pod)]
        if not applied:
            # [CAL-ORDER] no policy applies: implicit allow (the namespace's profile).
            return Verdict(True, "no policy applies (profile allows)")
        for policy in applied:
            decided = policy.rules(ctx, direction, pod, peer, peer_ip, flow)
            if decided is None:
                continue
            action, why = decided
            if action == "Pass":
                # [CAL-GNP] Rule / [CAL-ORDER]: Pass skips the rest of the tier; default is
                # the last tier, so the endpoint's profile decides, and a Kubernetes pod's
                # namespace profile allows.
                return Verdict(True, f"{why} -> profile allows")
            return Verdict(action == "Allow", why)
        # [CAL-ORDER] policies applied but none decided: implicit end-of-tier deny.
        return Verdict(False, "end-of-tier deny after " + ", ".join(p.name for p in applied))
