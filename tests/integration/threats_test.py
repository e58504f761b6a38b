"""One test per row of the threat table in DESIGN.md ("Threats it must stop"), against the
built egress-proxy, a dnsmasq and TLS/HTTP upstreams on loopback.

Run (ctest does this, in a PID namespace too):
  unshare --net sh -c 'ip link set lo up && exec /usr/bin/python3 -m unittest -v threats_test'
"""

import resource
import select
import socket
import sys
import time
import unittest
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness as h  # noqa: E402

sys.path.insert(0, str(h.SOURCE_DIR / "tests" / "policy"))
import netpol_eval as ne  # noqa: E402

TRAP_NAME = "trap.wikidata.org"


class ThreatTest(h.ProxyTestCase):
    dns_records = dict(h.default_dns_records(), **{TRAP_NAME: ["127.0.0.2", "127.0.0.1"]})

    # | evaluator code opens any socket | nothing leaves the pod (NetworkPolicy default deny, no DNS either) |
    def test_threat_evaluator_code_opening_any_socket_gets_no_egress_rule_not_even_dns(self):
        config = yaml.safe_load((h.SOURCE_DIR / "config" / "wikifunctions.yaml").read_text())
        namespace = config["namespace"]
        evaluators = [w for w in config["workloads"] if w["egress"] == "none"]
        self.assertEqual([w["name"] for w in evaluators], ["function-evaluator"])
        labels = evaluators[0]["selector"]
        rendered = h.SOURCE_DIR / "policies" / "wikifunctions"

        # Kubernetes: some policy isolates the evaluator for egress, none gives it a rule.
        policies = [d for d in ne.load_documents(rendered / "networkpolicies.yaml")
                    if d.get("kind") == "NetworkPolicy" and d["metadata"]["namespace"] == namespace
                    and ne.label_selector_matches(d["spec"]["podSelector"], labels)]
        self.assertTrue(policies, "no NetworkPolicy selects the evaluator")
        self.assertTrue(any("Egress" in ne.k8s_policy_types(p["spec"]) for p in policies),
                        "no policy isolates the evaluator for egress")
        for p in policies:
            self.assertFalse(p["spec"].get("egress"), "%s gives the evaluator an egress rule: %r"
                             % (p["metadata"]["name"], p["spec"].get("egress")))

        # Calico: no Allow egress rule can apply to an evaluator, and a Deny-all does.
        ns_labels = {"kubernetes.io/metadata.name": namespace}
        deny_all = False
        for d in ne.load_documents(rendered / "calico.yaml"):
            if d.get("kind") not in ("GlobalNetworkPolicy", "NetworkPolicy"):
                continue
            spec = d["spec"]
            if "Egress" not in spec.get("types", []):
                continue
            if not (ne.calico_selector(spec.get("selector"))(labels)
                    and ne.calico_selector(spec.get("namespaceSelector"))(ns_labels)):
                continue
            for rule in spec.get("egress", []):
                source = (rule.get("source") or {}).get("selector")
                applies = source is None or ne.calico_selector(source)(labels)
                if rule["action"] == "Allow":
                    self.assertFalse(applies, "%s allows evaluator egress: %r" % (d["metadata"]["name"], rule))
                if rule["action"] == "Deny" and applies and not rule.get("destination") and not rule.get("protocol"):
                    deny_all = True
        self.assertTrue(deny_all, "no Calico policy denies all evaluator egress")

    # | orchestrator asks the proxy for a host not on the list | 403, logged, no DNS query, no upstream connection |
    def test_threat_host_not_on_list_gets_403_without_dns_query_or_upstream_connection(self):
        self.start_proxy()
        queries = h.DnsQueries(self.dns, "evil.example")
        d = self.refused(self.connect_request("evil.example:443"), 403, "host_not_allowed")
        self.assertEqual((d["method"], d["host"], d["port"]), ("CONNECT", "evil.example", 443))
        self.assertNotIn("upstream", d)
        self.assertNotIn("dns_ms", d)
        d = self.refused(b"GET http://evil.example/ HTTP/1.1\r\nHost: evil.example\r\n\r\n", 403, "host_not_allowed")
        self.assertEqual((d["method"], d["host"], d["port"]), ("GET", "evil.example", 80))
        self.assertEqual(queries.since(), [], "the proxy looked up a host that is not on the list")
        self.assertEqual((self.tls.count(), self.http.count()), (0, 0))

    # | CONNECT www.wikidata.org:443, then a ClientHello with SNI en.wikipedia.org | tunnel closed before any byte reaches upstream, logged |
    def test_threat_sni_differs_from_connect_host_closes_before_upstream_sees_a_byte(self):
        self.start_proxy()
        c, closed = self.hello_after_connect("www.wikidata.org:%d" % self.tls.port, h.make_client_hello("en.wikipedia.org"))
        self.assertTrue(closed, "tunnel still open after a ClientHello for another host")
        d = self.decision_for(c)
        self.assertEqual((d["verdict"], d["reason"], d["sni"], d["host"]),
                         ("deny", "sni_mismatch", "en.wikipedia.org", "www.wikidata.org"), d)
        self.assert_upstream_saw_nothing(self.tls.connection(0))  # opened, never written to
        self.assertEqual(self.tls.count(), 1)

    # | ClientHello split over several TLS records or TCP segments | parsed correctly; never fails open |
    def test_threat_client_hello_split_over_records_and_segments_is_parsed_and_never_fails_open(self):
        self.start_proxy()

        def three_records_byte_by_byte(sock, hello):
            for b in h.frame_records(h.handshake_message(hello), 3):
                sock.send(bytes([b]))
                time.sleep(0.0005)

        # allowed: the real handshake completes through the re-framed, trickled hello
        conn = self.tls_via_proxy("www.wikidata.org", send_first_flight=three_records_byte_by_byte)
        self.assertIn(b"hello from upstream www.wikidata.org", self.https_get(conn, "www.wikidata.org"))
        # mismatch: the same splitting does not let en.wikipedia.org through
        bad = h.make_client_hello("en.wikipedia.org")
        c, closed = self.hello_after_connect("www.wikidata.org:%d" % self.tls.port, bad, write=three_records_byte_by_byte)
        self.assertTrue(closed)
        d = self.decision_for(c)
        self.assertEqual((d["reason"], d["sni"]), ("sni_mismatch", "en.wikipedia.org"), d)
        self.assert_upstream_saw_nothing(self.tls.connection(1))
        # a hello cut off before it is complete never opens the tunnel
        c, closed = self.hello_after_connect("www.wikidata.org:%d" % self.tls.port,
                                             h.frame_records(h.handshake_message(bad), 3)[:-10])
        c.sock.shutdown(socket.SHUT_WR)
        self.assertTrue(c.closed_within(5))
        d = self.decision_for(c)
        self.assertEqual(d["verdict"], "deny", d)
        self.assert_upstream_saw_nothing(self.tls.connection(2))

    # | no SNI, or an encrypted ClientHello (ECH) | denied unless configured otherwise |
    def test_threat_no_sni_or_ech_is_denied_unless_configured_otherwise(self):
        authority = "www.wikidata.org:%d" % self.tls.port
        no_sni = h.make_client_hello(None)
        ech = h.add_extension(h.make_client_hello("www.wikidata.org"), 0xFE0D, b"\x00" * 32)
        self.start_proxy()
        for hello, reason in ((no_sni, "sni_missing"), (ech, "ech_present")):
            before = self.tls.count()
            c, closed = self.hello_after_connect(authority, hello)
            self.assertTrue(closed, reason)
            self.assertEqual(self.decision_for(c)["reason"], reason)
            self.assert_upstream_saw_nothing(self.tls.connection(before))
        # configured otherwise: both go through, byte for byte
        self.start_proxy(tls={"allow_missing_sni": True, "allow_ech": True})
        for hello in (no_sni, ech):
            before = self.tls.count()
            c, _ = self.hello_after_connect(authority, hello, wait_close=0)
            rec = self.tls.connection(before)
            h.wait_until(lambda: len(rec.raw) >= len(hello), 5, what="the hello upstream")
            self.assertEqual(bytes(rec.raw[:len(hello)]), hello)
            c.close()
            self.assertEqual(self.proxy.wait_decision(client=c.local)["verdict"], "allow")

    # | allowed name that resolves to 10.x, 127.x, 169.254.x, ::1, fc00::/7, ::ffff:10.x … | 403; the proxy connects only to the addresses it checked (no second lookup) |
    def test_threat_allowed_name_resolving_to_denied_address_gets_403_and_only_checked_addresses_are_dialled(self):
        self.start_proxy()
        for name, addresses in h.DENIED_NAME_ANSWERS.items():
            if name == "mixed.wikidata.org":
                continue
            queries = h.DnsQueries(self.dns, name)
            d = self.refused(self.connect_request("%s:%d" % (name, self.tls.port)), 403, "address_denied")
            self.assertIn(addresses[0], d.get("upstream", ""), d)
            self.assertEqual(len([q for q in queries.since() if q[0] == "A"]), 1, name)
        # 127.x without the test override
        self.start_proxy(allow_cidrs=())
        self.refused(self.connect_request("www.wikidata.org:%d" % self.tls.port), 403, "address_denied",
                     proxy=self.proxy)
        self.assertEqual(self.tls.count(), 0)
        # mixed public + private: only the public address is dialled (ENETUNREACH here)
        self.start_proxy()
        d = self.refused(self.connect_request("mixed.wikidata.org:%d" % self.tls.port), 502, "connect_failed")
        self.assertEqual(d["upstream"], "185.15.59.224:%d" % self.tls.port, d)
        # denied-but-reachable 127.0.0.2 next to allowed 127.0.0.1: never dialled
        trap = h.RawRecorder("127.0.0.2", self.tls.port)
        self.addCleanup(trap.close)
        self.start_proxy(allow_cidrs=("127.0.0.1/32",))
        queries = h.DnsQueries(self.dns, TRAP_NAME)
        c, status, headers = self.connect("%s:%d" % (TRAP_NAME, self.tls.port))
        self.assertEqual(status, 200, headers)
        c.close()
        d = self.proxy.wait_decision(client=c.local)
        self.assertEqual(d["upstream"], "127.0.0.1:%d" % self.tls.port, d)
        self.assertEqual(trap.count(), 0, "the proxy dialled 127.0.0.2, a denied address")
        self.assertEqual(len([q for q in queries.since() if q[0] == "A"]), 1, "more than one lookup")

    # | IP literal or odd forms (2130706433, 0x7f.1, 127.1, [::ffff:7f00:1]) | 403 unless the config allows IP literals |
    def test_threat_ip_literals_and_odd_ipv4_forms_are_refused_unless_the_allowlist_names_the_address(self):
        self.start_proxy()
        port = self.tls.port
        self.refused(self.connect_request("127.0.0.1:%d" % port), 403, "ip_literal_not_allowed")
        self.refused(self.connect_request("[::ffff:7f00:1]:%d" % port), 403, "ip_literal_not_allowed")
        self.refused(b"GET http://127.0.0.1:%d/ HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n" % (self.http.port, self.http.port),
                     403, "ip_literal_not_allowed")
        # Non-canonical IPv4 text is malformed (issue 3: 400), never a name to resolve.
        for odd in ("2130706433", "0x7f.1", "127.1", "0x7f.0.0.1", "010.0.0.1"):
            self.refused(self.connect_request("%s:%d" % (odd, port)), 400, "host_non_canonical_ipv4")
        self.dns.sync()
        logged = {n for _, n in self.dns.queries()}
        self.assertFalse(logged & {"2130706433", "0x7f.1", "127.1", "0x7f.0.0.1", "010.0.0.1", "127.0.0.1"}, logged)
        self.assertEqual((self.tls.count(), self.http.count()), (0, 0))
        # allowed when the allowlist names that very address
        self.start_proxy(allowlist=self.allowlist() + [{"host": "127.0.0.1", "ports": [port, self.http.port]}])
        hello = h.make_client_hello(None)  # no SNI for an address (RFC 6066 §3)
        c, status, headers = self.connect("127.0.0.1:%d" % port, payload=hello)
        self.assertEqual(status, 200, headers)
        rec = self.tls.connection(0)
        h.wait_until(lambda: bytes(rec.raw[:len(hello)]) == hello, 5, what="the hello upstream")
        c.close()
        self.assertEqual(self.proxy.wait_decision(client=c.local)["verdict"], "allow")
        self.refused(self.connect_request("127.0.0.2:%d" % port), 403, "ip_literal_not_allowed")

    # | http://www.wikidata.org@evil.example/, Host header ≠ target, two Host headers, CL+TE | 400/403, never forwarded |
    def test_threat_userinfo_host_mismatch_two_hosts_and_cl_te_are_refused_and_never_forwarded(self):
        self.start_proxy()
        hp = self.http.port
        target = b"www.wikidata.org:%d" % hp
        cases = [
            (b"GET http://www.wikidata.org@evil.example/ HTTP/1.1\r\nHost: evil.example\r\n\r\n", "userinfo_in_target"),
            (b"GET http://www.wikidata.org:%d@evil.example/ HTTP/1.1\r\nHost: evil.example\r\n\r\n" % hp,
             "userinfo_in_target"),
            (b"GET http://%s/ HTTP/1.1\r\nHost: evil.example\r\n\r\n" % target, "host_mismatch"),
            (b"GET http://%s/ HTTP/1.1\r\nHost: %s\r\nHost: evil.example\r\n\r\n" % (target, target), "host_duplicate"),
            (b"POST http://%s/ HTTP/1.1\r\nHost: %s\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
             b"0\r\n\r\nGET /smuggled HTTP/1.1\r\n\r\n" % (target, target), "cl_and_te"),
            (b"CONNECT www.wikidata.org@evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n",
             "userinfo_in_target"),
            (b"CONNECT www.wikidata.org:%d HTTP/1.1\r\nHost: evil.example:%d\r\n\r\n" % (self.tls.port, self.tls.port),
             "host_mismatch"),
        ]
        for request, reason in cases:
            with self.subTest(reason=reason, request=request[:60]):
                self.refused(request, 400, reason)
        time.sleep(0.2)
        self.assertEqual((self.http.count(), self.tls.count()), (0, 0), "a refused request was forwarded")
        queries = [n for _, n in self.dns.queries() if "evil" in n]
        self.assertEqual(queries, [])

    # | evilwikidata.org, wikidata.org.evil.example, upper case, trailing dot | matched by label, case-insensitively, trailing dot folded |
    def test_threat_lookalike_names_do_not_match_while_upper_case_and_trailing_dot_do(self):
        self.start_proxy()
        port = self.tls.port
        for name in ("evilwikidata.org", "wikidata.org.evil.example", "wwwwikidata.org", "www.wikidata.org.evil.example",
                     "wikidata.org-evil.example"):
            d = self.refused(self.connect_request("%s:%d" % (name, port)), 403, "host_not_allowed")
            self.assertEqual(d["host"], name)
        self.dns.sync()
        self.assertFalse([n for _, n in self.dns.queries() if "evil" in n or n.startswith("wwwwiki")])
        self.assertEqual(self.tls.count(), 0)
        for written, sni in (("WWW.WikiData.ORG", "WWW.WIKIDATA.ORG"), ("www.wikidata.org.", "www.wikidata.org."),
                             ("Www.Wikidata.Org.", "www.wikidata.org")):
            with self.subTest(connect=written, sni=sni):
                conn = self.tls_via_proxy(written, sni=sni, check_hostname=False)
                self.assertIn(b"200 OK", self.https_get(conn, "www.wikidata.org"))
        decisions = h.wait_until(lambda: len(self.proxy.decisions(verdict="allow")) == 3 and
                                 self.proxy.decisions(verdict="allow"), 5, what="three allowed decisions")
        self.assertEqual({d["host"] for d in decisions}, {"www.wikidata.org"})

    # | slowloris, giant headers, 10k idle connections | bounded time and memory; other clients unaffected |
    def test_threat_slowloris_giant_headers_and_10k_idle_connections_are_bounded_and_others_still_served(self):
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        idle_count = min(10000, soft - 400)
        self.assertGreater(idle_count, 1000, "need more file descriptors for this test")
        self.start_proxy(limits={"header_timeout_ms": 1500, "max_header_bytes": 8192})

        # slowloris: a byte every 0.3 s; cut off at the header deadline, not later
        slow = self.client()
        t0 = time.monotonic()
        slow.send(b"G")
        got = None
        for b in b"ET http://www.wikidata.org/ HTTP/1.1\r\nHost: www.wikidata.org\r\nX-Slow: " + b"a" * 100:
            try:
                slow.sock.send(bytes([b]))
            except OSError:
                break
            # meanwhile another client is served at once
            if got is None:
                conn = self.tls_via_proxy("www.wikidata.org")
                got = self.https_get(conn, "www.wikidata.org")
            r, _, _ = select.select([slow.sock], [], [], 0.3)
            if r:
                break
        status, headers = slow.read_head(5)
        elapsed = time.monotonic() - t0
        self.assertEqual((status, headers.get("x-egress-denied")), (408, "header_timeout"))
        self.assertTrue(slow.closed_within(2))
        self.assertLess(elapsed, 1.5 + 1.5, "slowloris held its connection for %.1f s" % elapsed)
        self.assertIn(b"200 OK", got)

        # giant headers: 431 after max_header_bytes, not an unbounded buffer
        big = self.client()
        try:
            big.send(b"GET http://www.wikidata.org/ HTTP/1.1\r\nHost: www.wikidata.org\r\nX-Big: " + b"a" * 200000)
        except OSError:
            pass
        status, headers = big.read_head(5)
        self.assertEqual((status, headers.get("x-egress-denied")), (431, "headers_too_large"))

        # idle connections: 300 held, the rest refused at once with 503 (a proxy whose
        # header deadline outlasts the burst, so the held set stays the same 300)
        p = self.start_proxy(limits={"max_connections": 300, "header_timeout_ms": 120000})
        base_rss = p.rss_kib()
        idle = []
        try:
            for i in range(idle_count):
                s = socket.socket()
                s.setblocking(True)
                s.connect(("127.0.0.1", p.port))
                idle.append(s)
                if i >= 300 and i % 500 == 0:
                    # pace the burst so the listen backlog never overflows (an overflow
                    # only delays the handshake by SYN-ACK retransmits; it is not the proxy)
                    h.wait_until(lambda: len(p.decisions(reason="too_many_connections")) >= i - 300, 30,
                                 interval=0.1, what="the proxy to keep up with the refusals")
            h.wait_until(lambda: len(p.decisions(reason="too_many_connections")) >= idle_count - 300, 30,
                         interval=0.1, what="503 too_many_connections for the extra connections")
            rss = p.rss_kib()
            refused_one = idle[-1].recv(4096)
            self.assertIn(b"503", refused_one)
            self.assertIn(b"X-Egress-Denied: too_many_connections", refused_one)
            # bounded memory: < 16 KiB per held connection plus 8 MiB slack
            self.assertLess(rss - base_rss, 300 * 16 + 8192, "RSS grew from %d to %d KiB" % (base_rss, rss))
        finally:
            for s in idle:
                s.close()
        # once they are gone, a normal client is served again
        h.wait_until(lambda: self._served(), 10, 0.2, "a normal client to be served again")

    def _served(self) -> bool:
        try:
            conn = self.tls_via_proxy("www.wikidata.org")
            return b"200 OK" in self.https_get(conn, "www.wikidata.org")
        except (AssertionError, OSError):
            return False


if __name__ == "__main__":
    unittest.main()
