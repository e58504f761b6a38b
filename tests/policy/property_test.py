#!/usr/bin/python3
"""Property-based test of egress-gen: random valid configs, rendered by the built binary,
judged by the project's evaluator (netpol_eval.py) against what each config means
(config_meaning.py), on the Kubernetes NetworkPolicies alone and on Calico plus them.

For every config (random_config.generate, seeded "<seed>:<index>"):
  1. the loader's verdict: egress-gen must refuse (exit 2, FILE:LINE:COL) exactly the
     configs whose meaning allows nothing upstream, and accept the rest;
  2. `egress-gen render`, then for every check of config_meaning.flows (one direction of
     one flow, at a pod of the deployment's namespace or elsewhere) the evaluator's verdict
     on each engine must equal the config's meaning. The invariants (each check names its
     own): none sends nothing; dns-only reaches only the configured DNS; nothing reaches a
     denied range unless allow_cidrs says so; sidecar proxy workloads reach upstream ranges
     only on allowlisted ports; gateway proxy workloads reach only the proxy pods, DNS and
     peers; the gateway's proxy pods reach only DNS and the upstream ranges, and only the
     proxy workloads reach them; only configured sources reach each port; pods of other
     namespaces and pods matching no selector of the config are unaffected (get nothing
     in the namespace, lose nothing elsewhere); and every configured path is allowed;
  3. ../shared/tools/validate_manifests.py --strict on every rendered networkpolicies.yaml
     and calico.yaml (skipped, saying so, when the shared checkout is absent).
A failure prints the seed and index, then shrinks the config (random_config.reductions)
to a minimal one that still fails and prints it with its failing checks.

Run: EGRESS_GEN=build/gen/egress-gen /usr/bin/python3 tests/policy/property_test.py
       [--seed S] [--count N] [--only INDEX] [--budget CHECKS] [--no-validate]
     or as a unittest (ctest policy_property): 300 rendered configs of the fixed seed.
     --count N counts configs rendered and judged; those the loader must refuse (and
     does) come on top.
Environment: EGRESS_GEN (egress-gen binary; default <root>/build/gen/egress-gen),
EGRESS_SOURCE_DIR (repository root), EGRESS_SHARED_DIR (the shared checkout; default
<root>/../shared), EGRESS_HELM (default <root>/.tools/bin/helm), EGRESS_PROPERTY_COUNT / EGRESS_PROPERTY_SEED
(override the unittest's count and seed).

Must not: build anything, write outside its temporary directory, or look at the rendered
YAML to decide what is expected.
"""

from __future__ import annotations

import argparse
import collections
import ipaddress
import itertools
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import unittest
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import config_meaning as cm  # noqa: E402
import netpol_eval as ne  # noqa: E402
import random_config as rc  # noqa: E402

SOURCE_DIR = Path(os.environ.get("EGRESS_SOURCE_DIR") or Path(__file__).resolve().parents[2])
DEFAULT_SEED = "issue-9"
DEFAULT_COUNT = 300
DEFAULT_BUDGET = 160   # checks per config and engine
DEFAULT_CHART_COUNT = 30
ENGINES = ("kubernetes", "calico")


def egress_gen() -> Path:
    """The egress-gen binary under test."""
    return Path(os.environ.get("EGRESS_GEN") or SOURCE_DIR / "build" / "gen" / "egress-gen")


def validate_manifests() -> Path | None:
    """The shared checkout's validate_manifests.py, or None when it is absent."""
    for d in (os.environ.get("EGRESS_SHARED_DIR"), SOURCE_DIR.parent / "shared"):
        if d and (Path(d) / "tools" / "validate_manifests.py").is_file():
            return Path(d) / "tools" / "validate_manifests.py"
    return None


class Outcome:
    """What one config did: failures (strings), counts, rendered files."""

    def __init__(self, index, cfg):
        self.index, self.cfg = index, cfg
        self.failures: list[str] = []
        self.invariants_failed: set = set()
        self.checks = 0
        self.per_invariant = collections.Counter()
        self.rejected = False
        self.files: list[Path] = []

    def fail(self, invariant: str, text: str) -> None:
        """Records one failed check of `invariant`."""
        self.invariants_failed.add(invariant)
        self.failures.append(f"[{invariant}] {text}")


def render(cfg: dict, workdir: Path, gen: Path) -> tuple:
    """`egress-gen render` of `cfg`: (exit status, stderr, config path, output dir)."""
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    out = workdir / "out"
    p = subprocess.run([str(gen), "render", "--config", str(path), "--out", str(out), "--quiet"],
                       capture_output=True, text=True, timeout=60)
    return p.returncode, p.stderr, path, out


def run_one(index, cfg: dict, seeds: tuple, workdir: Path, gen: Path, budget: int) -> Outcome:
    """Renders and judges one config. `seeds` = (inventory seed, flow seed)."""
    o = Outcome(index, cfg)
    meaning = cm.Meaning(cfg)
    must_reject = meaning.must_be_rejected()
    rc_, stderr, path, out = render(cfg, workdir, gen)
    if must_reject:
        if rc_ == 2:
            o.rejected = True
            says = ("lie wholly inside the denied ranges" if "upstream" in must_reject else
                    "is reserved" if "reserved" in must_reject else "also selects"
                    if "select each other" in must_reject else "")
            if not re.search(re.escape(str(path)) + r":\d+:(\d+:)? error: ", stderr) or says not in stderr:
                o.fail("the loader refuses configs it must refuse",
                       f"exit 2 but no FILE:LINE:COL error saying {says!r}:\n{stderr}")
            return o
        o.fail("the loader refuses configs it must refuse", f"egress-gen accepted it (exit {rc_}): {must_reject}")
        if rc_ != 0:
            return o
    elif rc_ != 0:
        o.fail("the loader accepts every valid config", f"egress-gen exit {rc_}:\n{stderr}")
        return o
    o.files = [out / "networkpolicies.yaml", out / "calico.yaml"]
    judge(o, meaning, cm.Inventory(meaning, seeds[0]), ne.load_documents(out / "networkpolicies.yaml"),
          ne.load_documents(out / "calico.yaml"), seeds[1], budget)
    return o


def judge(o: Outcome, meaning: cm.Meaning, inv: cm.Inventory, k8s_docs: list, calico_docs: list,
          flow_seed: str, budget: int, where: str = "") -> None:
    """Evaluates every check of `meaning` over `inv` on both engines; adds failures to `o`."""
    engines = {"kubernetes": ne.Kubernetes(k8s_docs), "calico": ne.Calico(calico_docs, k8s_docs)}
    world = inv.world
    keys = cm.flows(meaning, inv, budget, flow_seed)
    for engine_name, engine in engines.items():
        for key in keys:
            expected, invariant = cm.expectation(meaning, world, engine_name, key)
            if expected is None:
                continue
            direction, subject, peer, (proto, port), family = key
            pod, other = world.pods[subject], world.endpoint(peer)
            if isinstance(other, ne.Pod):
                flow = world.flow(subject if direction == "Egress" else peer,
                                  peer if direction == "Egress" else subject, proto, port, family)
                other_ip = flow.dst_ip if direction == "Egress" else flow.src_ip
            else:
                flow = world.flow(subject if direction == "Egress" else peer,
                                  peer if direction == "Egress" else subject, proto, port)
                other_ip = other
            verdict = engine.direction_allows(world, pod, direction, other, other_ip, flow)
            o.checks += 1
            o.per_invariant[invariant] += 1
            if verdict.allowed != expected:
                arrow = f"{subject} -> {peer}" if direction == "Egress" else f"{peer} -> {subject}"
                o.fail(invariant, f"{where}{engine_name}: {direction.lower()} at {subject}: {arrow} "
                                  f"{proto}/{port}{'' if family is None else f' IPv{family}'}: expected "
                                  f"{'allow' if expected else 'deny'}, got {'allow' if verdict.allowed else 'deny'} "
                                  f"({verdict.reason})")


def helm() -> Path:
    """The helm binary (scripts/install-deps puts it in .tools/bin)."""
    return Path(os.environ.get("EGRESS_HELM") or SOURCE_DIR / ".tools" / "bin" / "helm")


CHART_NAMESPACE = "wf-chart"


def run_charts(items: list, workdir: Path, gen: Path, budget: int) -> list[Outcome]:
    """The Helm variant: `egress-gen chart` for each (index, cfg, seeds) of `items`, the
    templates of all of them in one chart rendered by `helm template` once per proxy mode
    (release "wf", namespace CHART_NAMESPACE), each judged against the config's chart
    meaning (config_meaning.chart_variant)."""
    chart = workdir / "chart"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: egress-property\nversion: 0.0.1\n")
    (chart / "values.yaml").write_text("proxy:\n  mode: sidecar\ncalico:\n  enabled: true\n")
    outcomes, accepted = [], []
    for index, cfg, seeds in items:
        o = Outcome(index, cfg)
        outcomes.append(o)
        d = workdir / f"chart-c{index}"
        d.mkdir(parents=True)
        path = d / "config.yaml"
        path.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
        p = subprocess.run([str(gen), "chart", "--config", str(path), "--chart", str(d)],
                           capture_output=True, text=True, timeout=60)
        refusal = cm.chart_refusal(cfg)
        if refusal and p.returncode != 2:
            o.fail("the chart refuses workloads that select its proxy pods", f"egress-gen chart exit {p.returncode}: {refusal}")
        elif not refusal and p.returncode != 0:
            o.fail("the chart renders every config the loader accepts", f"egress-gen chart exit {p.returncode}:\n{p.stderr}")
        if p.returncode != 0:
            continue
        for name in ("networkpolicies", "calico"):
            shutil.copy(d / "templates" / f"{name}.yaml", chart / "templates" / f"c{index}-{name}.yaml")
        accepted.append((o, seeds))
    if not accepted:
        return outcomes
    for mode in ("sidecar", "gateway"):
        p = subprocess.run([str(helm()), "template", cm.CHART_RELEASE, str(chart), "--namespace", CHART_NAMESPACE,
                            "--set", f"proxy.mode={mode}"], capture_output=True, text=True, timeout=300,
                           env={**os.environ, "HELM_CACHE_HOME": str(workdir / "helm"),
                                "HELM_CONFIG_HOME": str(workdir / "helm"), "HELM_DATA_HOME": str(workdir / "helm")})
        if p.returncode != 0:
            accepted[0][0].fail("the chart renders every config the loader accepts",
                                f"helm template failed ({p.returncode}): {p.stderr[:2000]}")
            return outcomes
        by_source = collections.defaultdict(list)
        for text in p.stdout.split("\n---\n"):
            first = text.lstrip("-\n").split("\n", 1)[0]
            if first.startswith("# Source: "):
                by_source[first.split("/")[-1]].append(text)
        for o, seeds in accepted:
            docs = {name: [d for d in yaml.load_all("\n---\n".join(by_source[f"c{o.index}-{name}.yaml"]),
                                                    Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) if d]
                    for name in ("networkpolicies", "calico")}
            f = workdir / f"chart-c{o.index}" / f"helm-{mode}"
            f.mkdir()
            for name, ds in docs.items():
                (f / f"{name}.yaml").write_text(yaml.safe_dump_all(ds, sort_keys=False))
                o.files.append(f / f"{name}.yaml")
            meaning = cm.Meaning(cm.chart_variant(o.cfg, mode, CHART_NAMESPACE))
            inv = cm.Inventory(meaning, seeds[0] + ":chart", cm.chart_proxy_pod_labels())
            judge(o, meaning, inv, docs["networkpolicies"], docs["calico"], seeds[1] + f":chart-{mode}", budget,
                  where=f"chart {mode}: ")
    return outcomes


class Validator:
    """validate_manifests --strict over rendered files, in batches, one batch at a time in
    a background process (so it overlaps the evaluation)."""

    BATCH = 100

    def __init__(self, tool: Path | None):
        self.tool, self.pending, self.running, self.done = tool, [], None, []
        self.files = 0

    def add(self, files) -> None:
        if self.tool is None:
            return
        self.pending += [str(f) for f in files]
        self.files += len(files)
        self._poll(start=len(self.pending) >= self.BATCH)

    def _poll(self, start: bool) -> None:
        if self.running is not None and self.running.poll() is not None:
            out, err = self.running.communicate()
            self.done.append((self.running.returncode, out + err))
            self.running = None
        if start and self.running is None and self.pending:
            batch, self.pending = self.pending[:self.BATCH], self.pending[self.BATCH:]
            self.running = subprocess.Popen(["/usr/bin/python3", str(self.tool), "--strict", *batch],
                                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def finish(self) -> list[str]:
        """Waits for every batch; returns the outputs of the failed ones."""
        while self.running is not None or self.pending:
            if self.running is not None:
                self.running.wait()
            self._poll(start=True)
        return [text for rc_, text in self.done if rc_ != 0]


def seeds_for(seed: str, index: int) -> tuple:
    """(config seed, (inventory seed, flow seed)) of config `index` of `seed`."""
    return (f"{seed}:{index}", (f"{seed}:{index}:inventory", f"{seed}:{index}:flows"))


def shrink(cfg: dict, fails, limit: int = 400) -> dict:
    """Greedy shrinking: take the first one-step reduction of `cfg`
    (random_config.reductions) for which `fails(candidate)` is true, until none is (or
    `limit` candidates were tried). Returns the smallest failing config found."""
    best, tries, progress = cfg, 0, True
    while progress and tries < limit:
        progress = False
        for cand in rc.reductions(best):
            tries += 1
            if fails(cand):
                best, progress = cand, True
                break
            if tries >= limit:
                break
    return best


def shrink_outcome(o: Outcome, seeds: tuple, workdir: Path, gen: Path, budget: int) -> Outcome:
    """Shrinks a failing config to a minimal one that still fails an invariant `o`
    failed; returns the outcome of that config."""
    last = {}

    def fails(cand):
        r = run_one(o.index, cand, seeds, workdir / "shrink", gen, budget)
        last[id(cand)] = r
        return bool(r.invariants_failed & o.invariants_failed)

    best = shrink(o.cfg, fails)
    return last.get(id(best), o)


def report(o: Outcome, seed: str, count: int, shrunk: Outcome | None, chart: bool = False) -> str:
    """The failure text: seed, index, rerun command, first failing checks, shrunk config."""
    lines = [f"property failed{' (chart variant)' if chart else ''}: seed {seed!r}, config #{o.index} of {count} "
             f"(rerun: EGRESS_GEN={egress_gen()} /usr/bin/python3 tests/policy/property_test.py "
             f"--seed {seed} --only {o.index})",
             f"  {len(o.failures)} failing checks; first ones:"]
    lines += ["    " + f for f in o.failures[:8]]
    if shrunk is not None:
        lines.append("  minimal failing config (shrunk):")
        lines += ["    " + line for line in yaml.safe_dump(shrunk.cfg, sort_keys=False).splitlines()]
        lines.append(f"  its failing checks ({len(shrunk.failures)}):")
        lines += ["    " + f for f in shrunk.failures[:8]]
    return "\n".join(lines)


def run(seed: str, count: int, only=None, budget=DEFAULT_BUDGET, validate=True, do_shrink=True,
        max_failed: int = 3, chart_count: int = DEFAULT_CHART_COUNT) -> tuple:
    """Runs the property until `count` configs were rendered and judged (configs the
    loader must refuse, and does, come on top), plus the chart variant of the first
    `chart_count` of them; returns (ok, summary text, report text)."""
    gen = egress_gen()
    if not os.access(gen, os.X_OK):
        raise FileNotFoundError(f"egress-gen not found at {gen} (build it, or set EGRESS_GEN)")
    tmp = Path(tempfile.mkdtemp(prefix="egress-property-"))
    start = time.monotonic()
    tool = validate_manifests() if validate else None
    validator = Validator(tool)
    try:
        outcomes, reports, chart_items = [], [], []
        indices = [only] if only is not None else itertools.count()
        for i in indices:
            if only is None and sum(1 for o in outcomes if not o.rejected) >= count:
                break
            cfg_seed, seeds = seeds_for(seed, i)
            cfg = rc.generate(cfg_seed)
            o = run_one(i, cfg, seeds, tmp / f"c{i}", gen, budget)
            outcomes.append(o)
            validator.add(o.files)
            if not o.rejected and len(chart_items) < chart_count:
                chart_items.append((i, cfg, seeds))
            if o.failures:
                shrunk = shrink_outcome(o, seeds, tmp / f"c{i}", gen, budget) if do_shrink else None
                reports.append(report(o, seed, count, shrunk))
                if len(reports) >= max_failed:
                    break
        chart_note = f"chart: SKIPPED (helm not found at {helm()}; set EGRESS_HELM)"
        chart_outcomes = []
        if chart_items and os.access(helm(), os.X_OK):
            chart_outcomes = run_charts(chart_items, tmp / "charts", gen, budget)
            for o in chart_outcomes:
                validator.add(o.files)
                if o.failures:
                    reports.append(report(o, seed, count, None, chart=True))
            judged = sum(1 for o in chart_outcomes if o.checks)
            chart_note = (f"chart: {len(chart_outcomes)} configs through `egress-gen chart` "
                          f"({len(chart_outcomes) - judged} rightly refused), "
                          f"{judged} x 2 proxy modes through helm template, "
                          f"{sum(o.checks for o in chart_outcomes)} checks")
        elif not chart_items:
            chart_note = "chart: no config to render"
        if tool is None:
            validated = ("validate_manifests: not run (--no-validate)" if not validate else
                         "validate_manifests: SKIPPED (../shared/tools/validate_manifests.py not found)")
        else:
            bad = validator.finish()
            validated = (f"validate_manifests --strict: all {validator.files} rendered files "
                         f"(render and chart), " + ("ok" if not bad else "FAILED"))
            for text in bad:
                reports.append(f"property failed: seed {seed!r}: validate_manifests --strict:\n" +
                               "\n".join(text.splitlines()[:20]))
        elapsed = time.monotonic() - start
        per_invariant = collections.Counter()
        for o in outcomes + chart_outcomes:
            per_invariant.update(o.per_invariant)
        checks = sum(o.checks for o in outcomes)
        rejected = sum(o.rejected for o in outcomes)
        summary = [f"property: seed {seed!r}: {len(outcomes) - rejected} configs rendered and judged "
                   f"(and {rejected} more rightly refused by the loader), "
                   f"{checks} checks ({checks // max(1, len(ENGINES))} flow directions x {len(ENGINES)} engines) "
                   f"in {elapsed:.1f} s", f"  {chart_note}", f"  {validated}", "  checks per invariant:"]
        summary += [f"  {n:7d}  {inv}" for inv, n in sorted(per_invariant.items(), key=lambda x: -x[1])]
        return not reports, "\n".join(summary), "\n\n".join(reports)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class PropertyToolsTest(unittest.TestCase):
    """The property test's own parts, without egress-gen's policies."""

    def test_shrinker_finds_the_minimal_failing_part(self):
        # A "property" that fails whenever some workload serves a UDP port.
        def fails(cfg):
            return any(sp.get("protocol") == "UDP" for w in cfg["workloads"] for sp in w.get("ports", []))
        for i in range(40):
            cfg = rc.generate(f"shrink:{i}")
            if not fails(cfg) or len(cfg["workloads"]) < 3:
                continue
            small = shrink(cfg, fails)
            self.assertTrue(fails(small))
            self.assertEqual(len(small["workloads"]), 1, small)
            self.assertEqual(len(small["workloads"][0]["ports"]), 1, small)
            for key in ("allow_cidrs", "denied_cidrs", "upstream_cidrs", "dns"):
                self.assertNotIn(key, small)
            return
        self.fail("no generated config served UDP")

    def test_generator_is_deterministic_and_varied(self):
        a = [rc.generate(f"{DEFAULT_SEED}:{i}") for i in range(DEFAULT_COUNT)]
        self.assertEqual(a[:20], [rc.generate(f"{DEFAULT_SEED}:{i}") for i in range(20)])
        classes = {cm.Meaning.klass(w) for c in a for w in c["workloads"]}
        self.assertEqual(classes, {"none", "dns-only", "proxy", "peers"})
        self.assertEqual({c["proxy"]["mode"] for c in a if "proxy" in c}, {"sidecar", "gateway"})
        protocols = {sp.get("protocol", "TCP") for c in a for w in c["workloads"] for sp in w.get("ports", [])}
        self.assertEqual(protocols, {"TCP", "UDP", "SCTP"})
        self.assertTrue(any(len({sp.get("protocol", "TCP") for sp in w.get("ports", []) if sp["port"] == p}) > 1
                            for c in a for w in c["workloads"] for p in {sp["port"] for sp in w.get("ports", [])}))
        for key in ("allow_cidrs", "upstream_cidrs", "denied_cidrs"):
            self.assertTrue(any(key in c for c in a), key)
        self.assertTrue(any("node_local_address" in c.get("dns", {}) for c in a))
        self.assertTrue(any("namespace_selector" in p for c in a for w in c["workloads"]
                            for p in cm.Meaning.egress_peers(w)))
        self.assertEqual({len(c["workloads"]) for c in a}, set(range(1, 9)))
        self.assertTrue(any(k in ("app.kubernetes.io/part-of", "app.kubernetes.io/instance")
                            for c in a for w in c["workloads"] for k in w["selector"]))

    def test_the_oracles_default_denied_ranges_are_egress_gens(self):
        gen = egress_gen()
        if not os.access(gen, os.X_OK):
            self.skipTest(f"egress-gen not found at {gen}")
        tmp = Path(tempfile.mkdtemp(prefix="egress-property-"))
        self.addCleanup(shutil.rmtree, tmp, True)
        cfg = {"version": 1, "namespace": "ns", "workloads": [{"name": "a", "selector": {"app": "a"}, "egress": "proxy"}],
               "proxy": {"mode": "sidecar"}, "allowlist": [{"host": "example.org"}]}
        rc_, stderr, _, out = render(cfg, tmp, gen)
        self.assertEqual(rc_, 0, stderr)
        proxy = yaml.safe_load((out / "proxy.yaml").read_text())
        self.assertEqual([ipaddress.ip_network(c) for c in proxy["denied_cidrs"]],
                         [ipaddress.ip_network(c) for c in cm.DEFAULT_DENIED])


class PropertyTest(unittest.TestCase):
    def test_random_configs_render_what_they_mean(self):
        """DEFAULT_COUNT configs of DEFAULT_SEED (EGRESS_PROPERTY_COUNT/_SEED override)."""
        seed = os.environ.get("EGRESS_PROPERTY_SEED", DEFAULT_SEED)
        count = int(os.environ.get("EGRESS_PROPERTY_COUNT", DEFAULT_COUNT))
        ok, summary, text = run(seed, count)
        print("\n" + summary, file=sys.stderr)
        self.assertTrue(ok, "\n" + text)


def main(argv=None) -> int:
    """Command line: see the module docstring; exit 0 when every check passed."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", default=DEFAULT_SEED)
    ap.add_argument("--count", type=int, default=DEFAULT_COUNT, help="configs to render and judge")
    ap.add_argument("--only", type=int, help="run config INDEX of the seed only")
    ap.add_argument("--budget", type=int, default=DEFAULT_BUDGET, help="checks per config and engine")
    ap.add_argument("--no-validate", action="store_true", help="skip validate_manifests")
    ap.add_argument("--no-shrink", action="store_true")
    ap.add_argument("--max-failed", type=int, default=3, help="stop after this many failing configs")
    ap.add_argument("--charts", type=int, default=DEFAULT_CHART_COUNT,
                    help="configs also rendered as the Helm chart variant (0: none)")
    ap.add_argument("--print-config", action="store_true", help="print the config(s) and exit")
    a = ap.parse_args(argv)
    if a.print_config:
        for i in ([a.only] if a.only is not None else range(a.count)):
            print(f"# config #{i} of seed {a.seed!r}")
            print(yaml.safe_dump(rc.generate(seeds_for(a.seed, i)[0]), sort_keys=False))
        return 0
    ok, summary, text = run(a.seed, a.count, a.only, a.budget, not a.no_validate, not a.no_shrink,
                            a.max_failed, a.charts)
    if text:
        print(text)
    print(summary)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
