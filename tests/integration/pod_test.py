"""Unmodified clients in a "pod" whose DNS is egress-proxy's responder (capture both),
with no proxy settings at all: Node 20's fetch() and https.get, Python urllib and requests,
curl and wget. The mission of issue #11: whatever HTTP library the orchestrator uses, it
reaches allowlisted hosts only through the proxy, and nothing else resolves.

The pod: a private mount namespace per client (unshare --mount) with /etc/resolv.conf
bind-mounted to a file naming the responder (127.0.0.53), the search list and ndots of a
Kubernetes pod. The proxy's own resolver asks the main dnsmasq (names -> 127.0.0.1, where
the upstreams listen); the responder forwards cluster.local names to a second dnsmasq
playing kube-dns. Everything on loopback, inside the suite's network namespace.

Run (ctest does this):
  unshare --net --pid --fork --mount-proc sh -c 'ip link set lo up && exec /usr/bin/python3 -m unittest -v pod_test'
"""

import json
import os
import subprocess
import sys
import textwrap
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness as h  # noqa: E402

PROXY_ADDRESS = "127.0.0.53"
SEARCH = "default.svc.cluster.local svc.cluster.local cluster.local"


class PodTest(h.ProxyTestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.kube_dns = h.Dnsmasq(cls.class_dir / "kube-dns", {"orchestrator.default.svc.cluster.local": ["127.0.0.9"]},
                                 ["cluster.local"])
        cls.resolv = cls.class_dir / "pod-resolv.conf"
        cls.resolv.write_text("nameserver %s\nsearch %s\noptions ndots:5\n" % (PROXY_ADDRESS, SEARCH))

    @classmethod
    def tearDownClass(cls):
        cls.kube_dns.stop()
        super().tearDownClass()

    def setUp(self):
        super().setUp()
        cfg = self.config()
        cfg["proxy"].update({
            "capture": "both",
            "dns": {"listen_address": PROXY_ADDRESS, "answer_ipv4": PROXY_ADDRESS, "ttl_s": 5,
                    "cluster_domains": ["cluster.local"], "cluster_dns": [self.kube_dns.server()]},
            "transparent": {"listen_address": PROXY_ADDRESS, "http_ports": [self.http.port]},
        })
        self.p = self.start_proxy(cfg)

    def in_pod(self, argv, env=None, timeout=60):
        """Runs `argv` in the pod: the responder as its only DNS server, no proxy variables."""
        clean = {"PATH": "/usr/bin:/bin", "HOME": str(self.dir)}
        clean.update(env or {})
        for k in list(clean):
            assert "proxy" not in k.lower(), k
        return subprocess.run(["unshare", "--mount", "sh", "-c", 'mount --bind "$0" /etc/resolv.conf && exec "$@"',
                               str(self.resolv), *argv], env=clean, capture_output=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)

    def clients(self, url):
        ca = str(self.pki.ca)
        node_fetch = "fetch(process.argv[1]).then(async r => { console.log(r.status); console.log(await r.text()); })" \
                     ".catch(e => { console.error(String(e.cause || e)); process.exit(3); });"
        node_https = textwrap.dedent("""
            const mod = process.argv[1].startsWith('https:') ? require('https') : require('http');
            mod.get(process.argv[1], r => { let b = ''; r.on('data', d => b += d);
              r.on('end', () => { console.log(r.statusCode); console.log(b); }); })
             .on('error', e => { console.error(String(e)); process.exit(3); });""")
        py_urllib = textwrap.dedent("""
            import ssl, sys, urllib.request
            ctx = ssl.create_default_context(cafile=sys.argv[2])
            r = urllib.request.urlopen(sys.argv[1], context=ctx, timeout=20)
            print(r.status); print(r.read().decode())""")
        py_requests = textwrap.dedent("""
            import sys, requests
            r = requests.get(sys.argv[1], verify=sys.argv[2], timeout=20)
            print(r.status_code); print(r.text)""")
        node_env = {"NODE_EXTRA_CA_CERTS": ca}
        return {
            "node20 fetch": (["node", "-e", node_fetch, url], node_env),
            "node https.get": (["node", "-e", node_https, url], node_env),
            "python urllib": (["/usr/bin/python3", "-c", py_urllib, url, ca], None),
            "python requests": (["/usr/bin/python3", "-c", py_requests, url, ca], None),
            "curl": (["curl", "-sS", "--cacert", ca, url], None),
            "wget": (["wget", "-q", "-O", "-", "--ca-certificate", ca, url], None),
        }

    def test_unmodified_clients_reach_an_allowlisted_host_over_tls_only_through_the_proxy(self):
        url = "https://www.wikidata.org:%d/" % self.tls.port
        for name, (argv, env) in self.clients(url).items():
            with self.subTest(client=name):
                before = len(self.p.decisions(method="TLS", verdict="allow"))
                r = self.in_pod(argv, env)
                self.assertEqual(r.returncode, 0, "%s failed: %s" % (name, r.stderr.decode(errors="replace")))
                self.assertIn(b"hello from upstream www.wikidata.org", r.stdout)
                h.wait_until(lambda: len(self.p.decisions(method="TLS", verdict="allow")) > before, 5,
                             what="a TLS decision line of the proxy for " + name)

    def test_unmodified_clients_reach_an_allowlisted_host_over_plain_http_only_through_the_proxy(self):
        url = "http://www.wikidata.org:%d/" % self.http.port
        for name, (argv, env) in self.clients(url).items():
            with self.subTest(client=name):
                before = self.http.count()
                r = self.in_pod(argv, env)
                self.assertEqual(r.returncode, 0, "%s failed: %s" % (name, r.stderr.decode(errors="replace")))
                self.assertEqual(self.http.count(), before + 1)
                d = self.p.decisions(host="www.wikidata.org", method="GET")
                self.assertTrue(d and d[-1]["verdict"] == "allow", d)

    def test_a_name_off_the_allowlist_does_not_resolve_and_no_query_or_connection_leaves(self):
        url = "https://example.org:%d/" % self.tls.port
        tls_before = self.tls.count()
        for name, (argv, env) in self.clients(url).items():
            with self.subTest(client=name):
                r = self.in_pod(argv, env)
                self.assertNotEqual(r.returncode, 0, "%s reached %s" % (name, url))
        self.kube_dns.sync()
        self.dns.sync()
        leaked = [q for q in self.kube_dns.queries() + self.dns.queries() if "example.org" in q[1].lower()
                  and not q[1].lower().endswith("cluster.local")]
        self.assertEqual(leaked, [], "a query for the off-list name left the responder")
        self.assertEqual(self.tls.count(), tls_before, "an upstream was connected")
        refusals = [e for e in self.p.events if e.get("event") == "dns" and e.get("qname", "").rstrip(".") == "example.org"]
        self.assertTrue(refusals and all(e["verdict"] == "deny" for e in refusals), refusals)

    def test_search_list_expansions_are_forwarded_to_cluster_dns_and_cluster_names_resolve(self):
        script = "import socket; print(socket.gethostbyname('www.wikidata.org')); " \
                 "print(socket.gethostbyname('orchestrator.default.svc.cluster.local'))"
        self.kube_dns.sync()
        before = len(self.kube_dns.queries())
        r = self.in_pod(["/usr/bin/python3", "-c", script])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.decode().split(), [PROXY_ADDRESS, "127.0.0.9"])
        self.kube_dns.sync()
        seen = [q[1].lower() for q in self.kube_dns.queries()[before:]]
        # ndots:5: the search list is tried first; those names are cluster names, forwarded
        self.assertIn("www.wikidata.org.default.svc.cluster.local", seen)
        self.assertIn("orchestrator.default.svc.cluster.local", seen)
        # the allowlisted name itself is answered by the responder, never forwarded
        self.assertNotIn("www.wikidata.org", seen)

    def test_an_sni_other_than_an_allowlisted_name_is_closed_before_the_upstream(self):
        before = self.tls.count()
        r = self.in_pod(["openssl", "s_client", "-connect", "www.wikidata.org:%d" % self.tls.port,
                         "-servername", "example.org", "-verify_return_error", "-CAfile", str(self.pki.ca)],
                        timeout=30)
        self.assertNotEqual(r.returncode, 0)
        self.assertEqual(self.p.wait_decision(sni="example.org")["reason"], "host_not_allowed")
        self.assertEqual(self.tls.count(), before)


if __name__ == "__main__":
    unittest.main()
