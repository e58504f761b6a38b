"""Regression tests of issue 9, end to end: the built egress-gen renders (or refuses) a
config, the project's evaluator (netpol_eval.py) judges flows on the rendered objects.
Each test names the defect it pins; each failed on the egress-gen before the fix.

  1. upstream ranges wholly inside the denied ranges rendered an upstream rule `to: []`
     (every destination): now a config error (exit 2, FILE:LINE:COL);
  2. Calico rule selectors also matched the denied-ranges GlobalNetworkSet (it holds every
     pod IP): a selector sharing its labels let every pod reach kube-dns, and the gateway
     deny caught the proxy pods; now every pod selector carries a namespaceSelector and
     the set selector matches network sets only;
  3. a port served over TCP and UDP kept one protocol for a peer with `ports: [5432]`;
  and `egress-gen chart` rendered workloads whose selector picks the chart's proxy pods.

Environment: EGRESS_GEN (default <root>/build/gen/egress-gen), EGRESS_SOURCE_DIR.
Run: EGRESS_GEN=build/gen/egress-gen /usr/bin/python3 -m unittest -v regression_test
Must not: write outside its temporary directory.
"""

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import netpol_eval as ne  # noqa: E402

SOURCE_DIR = Path(os.environ.get("EGRESS_SOURCE_DIR") or Path(__file__).resolve().parents[2])
GEN = Path(os.environ.get("EGRESS_GEN") or SOURCE_DIR / "build" / "gen" / "egress-gen")
BAD = SOURCE_DIR / "tests" / "data" / "config" / "bad"
SET_KEY = "egress-guard.io/address-set"


def pods(specs):
    return [ne.Pod(name, ns, labels, (f"10.244.{i}.{10 + i}", f"fd00:10:244:{i:x}::10"))
            for i, (name, ns, labels) in enumerate(specs, start=1)]


class Rendered:
    """egress-gen render of a config text into a temporary directory."""

    def __init__(self, text: str, command: str = "render"):
        self.dir = Path(tempfile.mkdtemp(prefix="egress-regression-"))
        self.config = self.dir / "config.yaml"
        self.config.write_text(textwrap.dedent(text), encoding="utf-8")
        args = ([str(GEN), "render", "--config", str(self.config), "--out", str(self.dir / "out"), "--quiet"]
                if command == "render" else
                [str(GEN), "chart", "--config", str(self.config), "--chart", str(self.dir / "chart")])
        p = subprocess.run(args, capture_output=True, text=True, timeout=60)
        self.returncode, self.stderr = p.returncode, p.stderr

    def documents(self, name):
        return ne.load_documents(self.dir / "out" / name)

    def close(self):
        shutil.rmtree(self.dir, ignore_errors=True)


def setUpModule():
    if not os.access(GEN, os.X_OK):
        raise unittest.SkipTest(f"egress-gen not built at {GEN} (set EGRESS_GEN)")


class _Case(unittest.TestCase):
    def render(self, text, command="render"):
        r = Rendered(text, command)
        self.addCleanup(r.close)
        return r

    def engines(self, r):
        k8s, calico = r.documents("networkpolicies.yaml"), r.documents("calico.yaml")
        return {"kubernetes": ne.Kubernetes(k8s), "calico": ne.Calico(calico, k8s)}

    def assertFlow(self, world, engine, expected, src, dst, protocol, port, family=None):
        v = ne.evaluate(world, engine, world.flow(src, dst, protocol, port, family))
        self.assertEqual(v.allowed, expected, f"{src} -> {dst} {protocol}/{port}: {v.reason}")


class UpstreamInsideDeniedTest(_Case):
    """Defect 1."""

    def test_bad_configs_are_refused_with_a_position(self):
        for name, where in (("upstream-inside-denied", ":14:17: error: upstream_cidrs:"),
                            ("gateway-upstream-metadata", ":17:3: error: upstream_cidrs:"),
                            ("denied-covers-upstream", ":15:15: error: denied_cidrs:")):
            with self.subTest(config=name):
                path = BAD / f"{name}.yaml"
                out = self.render(path.read_text())
                self.assertEqual(out.returncode, 2, out.stderr)
                self.assertIn(f"{out.config}{where} the upstream ranges", out.stderr)
                self.assertIn("nothing written", out.stderr)
                self.assertFalse((out.dir / "out").exists())

    def test_an_allow_override_keeps_only_itself_reachable(self):
        out = self.render("""\
            version: 1
            namespace: ns
            workloads:
              - {name: app, selector: {app: app}, egress: proxy}
            proxy: {mode: sidecar}
            allowlist: [{host: www.wikidata.org}]
            upstream_cidrs: [10.0.0.0/8]
            allow_cidrs: [10.20.0.0/16]
            """)
        self.assertEqual(out.returncode, 0, out.stderr)
        world = ne.World([ne.Namespace("ns")], pods([("app", "ns", {"app": "app"})]))
        for name, engine in self.engines(out).items():
            with self.subTest(engine=name):
                self.assertFlow(world, engine, True, "app", "10.20.1.1", "TCP", 443)
                for dst in ("10.1.2.3", "169.254.169.254", "8.8.8.8", "2620:0:861:ed1a::1"):
                    self.assertFlow(world, engine, False, "app", dst, "TCP", 443)


class CalicoSelectorsMatchNetworkSetsTest(_Case):
    """Defect 2: selectors sharing the labels the GlobalNetworkSet carries."""

    CONFIG = """\
        version: 1
        namespace: gw
        workloads:
          - name: orchestrator
            selector: {app.kubernetes.io/managed-by: egress-gen}
            egress: proxy
          - name: relay
            selector: {app: relay}
            egress: dns-only
        proxy:
          mode: gateway
          selector: {app.kubernetes.io/part-of: egress-guard}
        allowlist: [{host: www.wikidata.org}]
        """

    def setUp(self):
        self.out = self.render(self.CONFIG)
        self.assertEqual(self.out.returncode, 0, self.out.stderr)
        self.world = ne.World(
            [ne.Namespace("gw"), ne.Namespace("kube-system")],
            pods([("orchestrator", "gw", {"app.kubernetes.io/managed-by": "egress-gen"}),
                  ("proxy", "gw", {"app.kubernetes.io/part-of": "egress-guard"}),
                  ("relay", "gw", {"app": "relay"}),
                  ("neighbour", "gw", {"app": "neighbour"}),
                  ("kube-dns", "kube-system", {"k8s-app": "kube-dns"})]))
        self.calico = self.engines(self.out)["calico"]

    def test_the_set_really_carries_the_shared_labels(self):
        gns = [d for d in self.out.documents("calico.yaml") if d["kind"] == "GlobalNetworkSet"]
        self.assertEqual(len(gns), 1)
        labels = gns[0]["metadata"]["labels"]
        self.assertEqual(labels["app.kubernetes.io/part-of"], "egress-guard")
        self.assertEqual(labels["app.kubernetes.io/managed-by"], "egress-gen")
        self.assertEqual(labels[SET_KEY], "gw-denied")
        self.assertIn("10.0.0.0/8", gns[0]["spec"]["nets"])

    def test_unrelated_pods_do_not_reach_kube_dns(self):
        for family in (4, 6):
            self.assertFlow(self.world, self.calico, False, "neighbour", "kube-dns", "UDP", 53, family)
            self.assertFlow(self.world, self.calico, False, "neighbour", "kube-dns", "TCP", 53, family)
            self.assertFlow(self.world, self.calico, True, "relay", "kube-dns", "UDP", 53, family)

    def test_the_gateway_deny_does_not_catch_the_proxy_pods(self):
        self.assertFlow(self.world, self.calico, True, "proxy", "185.15.59.224", "TCP", 443)
        self.assertFlow(self.world, self.calico, True, "proxy", "2620:0:861:ed1a::1", "TCP", 443)
        self.assertFlow(self.world, self.calico, True, "orchestrator", "proxy", "TCP", 3128)
        self.assertFlow(self.world, self.calico, False, "orchestrator", "185.15.59.224", "TCP", 443)

    def test_a_pod_wearing_the_set_label_is_not_the_set(self):
        # denied_cidrs without the pod ranges: pod IPs are upstream addresses, and a pod
        # labelled like the set must not be denied as if it were the set.
        out = self.render("""\
            version: 1
            namespace: ns
            workloads:
              - {name: app, selector: {app: app}, egress: proxy}
            proxy: {mode: sidecar}
            allowlist: [{host: www.wikidata.org}]
            denied_cidrs: [169.254.0.0/16]
            """)
        self.assertEqual(out.returncode, 0, out.stderr)
        world = ne.World([ne.Namespace("ns"), ne.Namespace("other")],
                         pods([("app", "ns", {"app": "app"}), ("labelled", "other", {SET_KEY: "ns-denied"})]))
        calico = self.engines(out)["calico"]
        self.assertFlow(world, calico, True, "app", "labelled", "TCP", 443)
        self.assertFlow(world, calico, False, "app", "169.254.169.254", "TCP", 443)

    def test_every_rule_selector_means_pods_of_a_namespace_or_the_set(self):
        renders = [self.out] + [self.render(p.read_text()) for p in sorted((SOURCE_DIR / "config").rglob("*.yaml"))]
        for r in renders:
            self.assertEqual(r.returncode, 0, r.stderr)
            for d in r.documents("calico.yaml"):
                if d["kind"] != "GlobalNetworkPolicy":
                    continue
                for rule in d["spec"].get("egress", []) + d["spec"].get("ingress", []):
                    for side in ("source", "destination"):
                        entity = rule.get(side) or {}
                        if "selector" not in entity:
                            continue
                        with self.subTest(policy=d["metadata"]["name"], entity=entity):
                            if SET_KEY in entity["selector"]:
                                self.assertTrue(entity["selector"].endswith("&& !has(projectcalico.org/namespace)"))
                            else:
                                self.assertIn("namespaceSelector", entity)

    def test_the_reserved_set_label_is_refused_in_selectors(self):
        out = self.render((BAD / "reserved-label-key.yaml").read_text())
        self.assertEqual(out.returncode, 2)
        self.assertIn(f"label key \"{SET_KEY}\" is reserved", out.stderr)


class PeerPortOverTwoProtocolsTest(_Case):
    """Defect 3."""

    def test_both_protocols_reach_the_peer(self):
        out = self.render("""\
            version: 1
            namespace: ns
            workloads:
              - name: app
                selector: {app: app}
                egress: {class: peers, peers: [{workload: db, ports: [5432]}]}
              - name: db
                selector: {app: db}
                ports:
                  - {port: 5432, protocol: TCP, from: [{workload: app}]}
                  - {port: 5432, protocol: UDP, from: [{workload: app}]}
                  - {port: 9187, from: [{workload: app}]}
                egress: none
            """)
        self.assertEqual(out.returncode, 0, out.stderr)
        world = ne.World([ne.Namespace("ns")], pods([("app", "ns", {"app": "app"}), ("db", "ns", {"app": "db"})]))
        for name, engine in self.engines(out).items():
            with self.subTest(engine=name):
                for family in (4, 6):
                    self.assertFlow(world, engine, True, "app", "db", "TCP", 5432, family)
                    self.assertFlow(world, engine, True, "app", "db", "UDP", 5432, family)
                    self.assertFlow(world, engine, False, "app", "db", "SCTP", 5432, family)
                    self.assertFlow(world, engine, False, "app", "db", "TCP", 9187, family)


class ChartProxyPodsTest(_Case):
    """`egress-gen chart`: the gateway pods are the egress-proxy chart's (labels
    app.kubernetes.io/name: egress-proxy, part-of: egress-guard, ...), not proxy.selector."""

    def test_workloads_selecting_the_chart_proxy_pods_are_refused(self):
        for selector in ("{app.kubernetes.io/part-of: egress-guard}",
                         "{app.kubernetes.io/instance: wf, app.kubernetes.io/component: gateway}",
                         "{app.kubernetes.io/name: egress-proxy, app: x}"):
            with self.subTest(selector=selector):
                out = self.render(f"""\
                    version: 1
                    namespace: ns
                    workloads:
                      - {{name: app, selector: {selector}, egress: proxy}}
                    proxy: {{mode: sidecar}}
                    allowlist: [{{host: www.wikidata.org}}]
                    """, command="chart")
                self.assertEqual(out.returncode, 2, out.stderr)
                self.assertIn(f"{out.config}:4:1: error: workloads: the selector of workload \"app\"", out.stderr)

    def test_other_workloads_render(self):
        out = self.render("""\
            version: 1
            namespace: ns
            workloads:
              - {name: app, selector: {app: app, app.kubernetes.io/part-of: egress-guard}, egress: proxy}
            proxy: {mode: sidecar}
            allowlist: [{host: www.wikidata.org}]
            """, command="chart")
        self.assertEqual(out.returncode, 0, out.stderr)


if __name__ == "__main__":
    unittest.main()
