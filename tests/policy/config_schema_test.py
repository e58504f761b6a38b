"""The config's JSON Schema (config/egress-config.schema.json) accepts every shipped config
and every rendered proxy.yaml, and rejects structural defects the loader also rejects."""

import glob
import json
import os
import unittest

import jsonschema
import yaml

ROOT = os.environ.get("EGRESS_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))


def load_schema():
    with open(os.path.join(ROOT, "config", "egress-config.schema.json"), encoding="utf-8") as f:
        schema = json.load(f)
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


class ConfigSchemaTest(unittest.TestCase):
    validator = load_schema()

    def errors(self, doc):
        return [e.message for e in self.validator.iter_errors(doc)]

    def test_shipped_configs_and_rendered_proxy_files_validate(self):
        files = sorted(glob.glob(os.path.join(ROOT, "config", "*.yaml")) +
                       glob.glob(os.path.join(ROOT, "config", "examples", "*.yaml")) +
                       glob.glob(os.path.join(ROOT, "policies", "**", "proxy.yaml"), recursive=True))
        self.assertGreaterEqual(len(files), 6)
        for path in files:
            with self.subTest(path=os.path.relpath(path, ROOT)):
                with open(path, encoding="utf-8") as f:
                    self.assertEqual(self.errors(yaml.safe_load(f)), [])

    def test_structural_defects_are_rejected(self):
        with open(os.path.join(ROOT, "config", "wikifunctions.yaml"), encoding="utf-8") as f:
            good = yaml.safe_load(f)
        cases = {
            "unknown key": lambda d: d["proxy"].update(listen_port=1),
            "wrong version": lambda d: d.update(version=2),
            "port out of range": lambda d: d["allowlist"][0].update(ports=[70000]),
            "port as string": lambda d: d["proxy"].update(port="3128"),
            "bad egress class": lambda d: d["workloads"][1].update(egress="dns"),
            "wildcard in the middle": lambda d: d["allowlist"][0].update(host="www.*.wikidata.org"),
            "namespace with capitals": lambda d: d.update(namespace="WikiFunctions"),
            "peer with workload and selector": lambda d: d["workloads"][1]["ports"][0]["from"][0].update(pod_selector={"a": "b"}),
            "proxy kind with workloads": lambda d: d.update(kind="proxy"),
            "missing workloads": lambda d: d.pop("workloads"),
        }
        for name, mutate in cases.items():
            with self.subTest(case=name):
                doc = json.loads(json.dumps(good))
                mutate(doc)
                self.assertNotEqual(self.errors(doc), [], name)


if __name__ == "__main__":
    unittest.main()
