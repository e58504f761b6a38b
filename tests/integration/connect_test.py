"""CONNECT tunnels through the built egress-proxy: the ClientHello cases of issue 3 (1-byte
writes, three records, post-quantum size, same packet as the CONNECT head, SNI case and
trailing dot, ECH, no SNI), target forms (odd IPv4, bracketed and mapped IPv6), ports,
DNS and connect failures, rebinding, and the relay (byte-exact bulk transfer, half-close
either way, the copy -> splice switch, backpressure on a slow reader, a client reset,
50 tunnels at once).

Run (ctest does this, in a PID namespace too):
  unshare --net sh -c 'ip link set lo up && exec /usr/bin/python3 -m unittest -v connect_test'
"""

import hashlib
import os
import socket
import struct
import sys
import threading
import time
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness as h  # noqa: E402


def one_byte_writes(sock, data, pause=0.0005):
    for b in data:
        sock.send(bytes([b]))
        time.sleep(pause)


class ClientHelloTest(h.ProxyTestCase):
    """Every way a ClientHello can arrive: parsed, allowed when the SNI is right, and
    the real handshake completes through the tunnel."""

    def setUp(self):
        super().setUp()
        self.start_proxy()

    def assert_served(self, conn, host="www.wikidata.org"):
        self.assertIn(b"hello from upstream " + host.encode(), self.https_get(conn, host).lower())
        d = h.wait_until(lambda: self.proxy.decisions(verdict="allow"), 5, what="the allowed decision")[-1]
        self.assertEqual((d["host"], d["end"]), (host, "eof"), d)
        return d

    def test_client_hello_in_one_byte_writes_is_reassembled_and_served(self):
        conn = self.tls_via_proxy("www.wikidata.org", send_first_flight=one_byte_writes)
        d = self.assert_served(conn)
        self.assertEqual(d["sni"], "www.wikidata.org")

    def test_client_hello_split_over_three_tls_records_is_reassembled_and_served(self):
        sent = []

        def three_records(sock, hello):
            records = h.frame_records(h.handshake_message(hello), 3)
            self.assertEqual(len(h.split_records(records)), 3)
            sent.append(records)
            sock.sendall(records)
        conn = self.tls_via_proxy("www.wikidata.org", send_first_flight=three_records)
        self.assert_served(conn)
        # the upstream got the three records exactly as sent
        self.assertEqual(bytes(self.tls.connection(0).raw[:len(sent[0])]), sent[0])

    def test_client_hello_three_records_each_written_in_pieces_across_record_boundaries(self):
        def pieces(sock, hello):
            data = h.frame_records(h.handshake_message(hello), 3)
            for i in range(0, len(data), 7):  # 7-byte writes straddle every header
                sock.send(data[i:i + 7])
                time.sleep(0.001)
        conn = self.tls_via_proxy("www.wikidata.org", send_first_flight=pieces)
        self.assert_served(conn)

    def test_post_quantum_sized_client_hello_over_1500_bytes_in_two_segments_is_served(self):
        # A real hello made large by a big ALPN list (what a ML-KEM key share does to size).
        alpn = ["pq-%03d-" % i + "x" * 190 for i in range(9)]
        self.assertGreater(len(h.make_client_hello("www.wikidata.org", alpn=alpn)), 1536)

        def two_segments(sock, hello):
            self.assertGreater(len(hello), 1536)
            sock.send(hello[:1400])
            time.sleep(0.05)
            sock.send(hello[1400:])
        conn = self.tls_via_proxy("www.wikidata.org", send_first_flight=two_segments, alpn=alpn)
        d = self.assert_served(conn)
        self.assertGreater(d["bytes_up"], 1536)

    def test_post_quantum_sized_client_hello_with_padding_extension_reaches_upstream_byte_exact(self):
        hello = h.add_extension(h.make_client_hello("www.wikidata.org"), 21, b"\x00" * 1600, grow_existing=True)
        self.assertGreater(len(hello), 2000)
        c, _ = self.hello_after_connect("www.wikidata.org:%d" % self.tls.port, hello,
                                        write=lambda s, b: (s.send(b[:1400]), time.sleep(0.05), s.send(b[1400:])),
                                        wait_close=0)
        rec = self.tls.connection(0)
        h.wait_until(lambda: len(rec.raw) >= len(hello), 5, what="the padded hello upstream")
        self.assertEqual(bytes(rec.raw[:len(hello)]), hello)
        c.close()
        d = self.proxy.wait_decision(client=c.local)
        self.assertEqual((d["verdict"], d["sni"]), ("allow", "www.wikidata.org"), d)

    def test_client_hello_sent_in_the_same_packet_as_the_connect_head_is_kept_and_served(self):
        conn = self.tls_via_proxy("www.wikidata.org", with_connect_head=True)
        self.assert_served(conn)

    def test_mismatching_client_hello_in_the_same_packet_as_the_connect_head_never_reaches_upstream(self):
        c = self.client()
        c.send(self.connect_request("www.wikidata.org:%d" % self.tls.port) + h.make_client_hello("en.wikipedia.org"))
        status, _ = c.read_head()
        self.assertEqual(status, 200)
        self.assertTrue(c.closed_within(5))
        self.assertEqual(self.decision_for(c)["reason"], "sni_mismatch")
        self.assert_upstream_saw_nothing(self.tls.connection(0))

    def test_client_hello_in_the_same_packet_as_a_refused_connect_gets_the_full_403(self):
        c = self.client()
        c.send(self.connect_request("evil.example:443") + h.make_client_hello("evil.example"))
        status, headers = c.read_head()
        self.assertEqual((status, headers.get("x-egress-denied")), (403, "host_not_allowed"))
        self.assertEqual(c.read_exact(int(headers["content-length"])), b"egress-proxy: host_not_allowed\n")

    def test_sni_in_upper_case_is_allowed(self):
        conn = self.tls_via_proxy("www.wikidata.org", sni="WWW.WIKIDATA.ORG")
        d = self.assert_served(conn)
        self.assertEqual(d["sni"], "WWW.WIKIDATA.ORG")

    def test_sni_with_trailing_dot_is_allowed(self):
        conn = self.tls_via_proxy("www.wikidata.org", sni="www.wikidata.org.", check_hostname=False)
        d = self.assert_served(conn)
        self.assertEqual(d["sni"], "www.wikidata.org.")

    def test_ech_extension_is_denied_ech_present_before_upstream_sees_a_byte(self):
        hello = h.add_extension(h.make_client_hello("www.wikidata.org"), 0xFE0D, b"\x00\x00\x01\x00\x01\x01" + b"\x00" * 40)
        c, closed = self.hello_after_connect("www.wikidata.org:%d" % self.tls.port, hello)
        self.assertTrue(closed)
        self.assertEqual(self.decision_for(c)["reason"], "ech_present")
        self.assert_upstream_saw_nothing(self.tls.connection(0))

    def test_no_sni_is_denied_sni_missing_before_upstream_sees_a_byte(self):
        c, closed = self.hello_after_connect("www.wikidata.org:%d" % self.tls.port, h.make_client_hello(None))
        self.assertTrue(closed)
        d = self.decision_for(c)
        self.assertEqual((d["reason"], d["status"]), ("sni_missing", 200), d)
        self.assertNotIn("sni", d)
        self.assert_upstream_saw_nothing(self.tls.connection(0))

    def test_sni_mismatch_in_one_byte_writes_is_still_denied(self):
        c, closed = self.hello_after_connect("www.wikidata.org:%d" % self.tls.port,
                                             h.make_client_hello("en.wikipedia.org"), write=one_byte_writes)
        self.assertTrue(closed)
        self.assertEqual(self.decision_for(c)["reason"], "sni_mismatch")
        self.assert_upstream_saw_nothing(self.tls.connection(0))

    def test_sni_of_another_allowed_host_is_a_mismatch(self):
        c, closed = self.hello_after_connect("www.wikidata.org:%d" % self.tls.port, h.make_client_hello("wikidata.org"))
        self.assertTrue(closed)
        self.assertEqual(self.decision_for(c)["reason"], "sni_mismatch")
        self.assert_upstream_saw_nothing(self.tls.connection(0))

    def test_not_tls_after_connect_is_denied_not_tls(self):
        c, closed = self.hello_after_connect("www.wikidata.org:%d" % self.tls.port,
                                             b"GET / HTTP/1.1\r\nHost: www.wikidata.org\r\n\r\n")
        self.assertTrue(closed)
        self.assertEqual(self.decision_for(c)["reason"], "not_tls")
        self.assert_upstream_saw_nothing(self.tls.connection(0))

    def test_malformed_client_hello_is_denied(self):
        hello = bytearray(h.make_client_hello("www.wikidata.org"))
        hello[5 + 4 + 2 + 32] = 200  # session id length 200 > 32
        c, closed = self.hello_after_connect("www.wikidata.org:%d" % self.tls.port, bytes(hello))
        self.assertTrue(closed)
        self.assertEqual(self.decision_for(c)["reason"], "client_hello_malformed")
        self.assert_upstream_saw_nothing(self.tls.connection(0))

    def test_client_hello_over_16_kib_is_denied_too_large(self):
        hello = h.make_client_hello("www.wikidata.org", alpn=["x" * 200] * 90)
        self.assertGreater(len(hello), 16384)
        c, closed = self.hello_after_connect("www.wikidata.org:%d" % self.tls.port, hello)
        self.assertTrue(closed)
        self.assertEqual(self.decision_for(c)["reason"], "client_hello_too_large")
        self.assert_upstream_saw_nothing(self.tls.connection(0))

    def test_client_hello_never_completed_times_out(self):
        p = self.start_proxy(limits={"client_hello_timeout_ms": 800})
        hello = h.make_client_hello("www.wikidata.org")
        t0 = time.monotonic()
        c, closed = self.hello_after_connect("www.wikidata.org:%d" % self.tls.port, hello[:100], proxy=p)
        self.assertTrue(closed)
        self.assertLess(time.monotonic() - t0, 3)
        self.assertEqual(self.decision_for(c)["reason"], "client_hello_timeout")
        self.assert_upstream_saw_nothing(self.tls.connection(0))


class TargetFormTest(h.ProxyTestCase):
    """CONNECT targets: IP literals and their odd spellings, ports."""

    def setUp(self):
        super().setUp()
        self.start_proxy()

    def test_odd_ipv4_forms_are_400_host_non_canonical_ipv4_and_never_resolved(self):
        forms = ("127.1", "2130706433", "0x7f.0.0.1", "010.0.0.1", "0x7f.1", "0177.0.0.1", "127.0.0.01", "0x7f000001")
        for form in forms:
            with self.subTest(form=form):
                self.refused(self.connect_request("%s:%d" % (form, self.tls.port)), 400, "host_non_canonical_ipv4")
        self.dns.sync()
        self.assertFalse({n for _, n in self.dns.queries()} & set(forms))
        self.assertEqual(self.tls.count(), 0)

    def test_bracketed_ipv6_and_mapped_forms_are_refused(self):
        port = self.tls.port
        for target in ("[::1]", "[::ffff:7f00:1]", "[::ffff:127.0.0.1]", "[0:0:0:0:0:ffff:7f00:1]", "[fd00:ec2::254]",
                       "[64:ff9b::7f00:1]"):
            with self.subTest(target=target):
                self.refused(self.connect_request("%s:%d" % (target, port)), 403, "ip_literal_not_allowed")
        for target, reason in (("::1", "host_unbracketed_ipv6"), ("[fe80::1%25lo]", "host_invalid_ipv6"),
                               ("[::1%lo]", "host_invalid_ipv6"), ("[127.0.0.1]", "host_invalid_ipv6")):
            with self.subTest(target=target):
                c = self.client()
                c.send(self.connect_request("%s:%d" % (target, port)))
                status, headers = c.read_head()
                self.assertEqual(status, 400, headers)
                self.assertTrue(headers.get("x-egress-denied", "").startswith(("host_", "bad_")), headers)
        self.assertEqual(self.tls.count(), 0)

    def test_ports_not_allowed_are_403_without_dns_query(self):
        queries = h.DnsQueries(self.dns, "www.wikidata.org")
        for port in (443, 22, 25, 8443, 65535):
            with self.subTest(port=port):
                self.refused(self.connect_request("www.wikidata.org:%d" % port), 403, "port_not_allowed")
        self.refused(b"GET http://www.wikidata.org:8080/ HTTP/1.1\r\nHost: www.wikidata.org:8080\r\n\r\n",
                     403, "port_not_allowed")
        self.refused(b"GET http://www.wikidata.org/ HTTP/1.1\r\nHost: www.wikidata.org\r\n\r\n",
                     403, "port_not_allowed")
        self.assertEqual(queries.since(), [])
        for bad in ("0", "65536", "-1", "+443", "", "44 3"):
            with self.subTest(port=bad):
                c = self.client()
                c.send(self.connect_request("www.wikidata.org:%s" % bad))
                self.assertEqual(c.read_head()[0], 400)

    def test_connect_without_port_is_400(self):
        self.refused(self.connect_request("www.wikidata.org"), 400, "port_missing")

    def test_connect_with_a_body_is_400(self):
        self.refused(self.connect_request("www.wikidata.org:%d" % self.tls.port, extra=b"Content-Length: 5\r\n"),
                     400, "connect_with_body")

    def test_bad_host_names_are_400_and_never_resolved(self):
        for target, reason in (("www..wikidata.org", "host_empty_label"), ("-www.wikidata.org", "host_hyphen_at_label_edge"),
                               ("a" * 64 + ".wikidata.org", "host_label_too_long"), ("www_x.wikidata.org", None),
                               ("xy--z.wikidata.org", "host_invalid_a_label")):
            with self.subTest(target=target):
                c = self.client()
                c.send(self.connect_request("%s:%d" % (target, self.tls.port)))
                status, headers = c.read_head()
                self.assertEqual(status, 400, headers)
                if reason:
                    self.assertEqual(headers.get("x-egress-denied"), reason)
        self.dns.sync()
        bad = {"www..wikidata.org", "-www.wikidata.org", "a" * 64 + ".wikidata.org", "www_x.wikidata.org",
               "xy--z.wikidata.org"}
        self.assertFalse({n for _, n in self.dns.queries()} & bad)

    def test_allowlist_entry_without_ports_allows_443_only(self):
        p = self.start_proxy(allowlist=[{"host": "www.wikidata.org"}])
        self.refused(self.connect_request("www.wikidata.org:%d" % self.tls.port), 403, "port_not_allowed", proxy=p)
        self.refused(b"GET http://www.wikidata.org/ HTTP/1.1\r\nHost: www.wikidata.org\r\n\r\n", 403,
                     "port_not_allowed", proxy=p)
        c = self.client(p)
        c.send(self.connect_request("www.wikidata.org:443"))
        status, headers = c.read_head()
        # 443: allowed by the list; nothing listens there in this namespace
        self.assertEqual((status, headers.get("x-egress-denied")), (502, "connect_refused"))

    def test_wildcard_entry_matches_names_below_the_suffix_but_not_the_apex(self):
        p = self.start_proxy(allowlist=[{"host": "*.wikidata.org", "ports": [self.tls.port]}])
        self.refused(self.connect_request("wikidata.org:%d" % self.tls.port), 403, "host_not_allowed", proxy=p)
        self.refused(self.connect_request("evilwikidata.org:%d" % self.tls.port), 403, "host_not_allowed", proxy=p)
        for name in ("api.wikidata.org", "API.WikiData.org."):
            conn = self.tls_via_proxy(name, sni="api.wikidata.org", proxy=p)
            self.assertIn(b"hello from upstream api.wikidata.org", self.https_get(conn, "api.wikidata.org"))


class ResolutionTest(h.ProxyTestCase):
    """DNS and connect failures, and rebinding."""

    def test_dns_name_not_found_is_502_dns_not_found(self):
        self.start_proxy()
        d = self.refused(self.connect_request("nx.wikidata.org:%d" % self.tls.port), 502, "dns_not_found")
        self.assertIn("dns_ms", d)

    def test_dns_server_not_answering_is_504_dns_timeout_within_the_budget(self):
        silent = h.SilentUDP()
        self.addCleanup(silent.close)
        self.start_proxy(resolver={"servers": [silent.server()], "timeout_ms": 700})
        t0 = time.monotonic()
        self.refused(self.connect_request("www.wikidata.org:%d" % self.tls.port), 504, "dns_timeout")
        self.assertLess(time.monotonic() - t0, 3)

    def test_dns_server_port_closed_is_502_dns_failure(self):
        # Port 9 (discard): nothing in this fresh namespace binds it, and it is below the
        # ephemeral range, so no client socket can take it meanwhile.
        self.start_proxy(resolver={"servers": ["127.0.0.1:9"], "timeout_ms": 700})
        c = self.client()
        c.send(self.connect_request("www.wikidata.org:%d" % self.tls.port))
        status, headers = c.read_head()
        self.assertEqual(status, 502, headers)
        self.assertIn(headers.get("x-egress-denied"), ("dns_failure", "dns_refused"))

    def test_connect_refused_is_502_connect_refused(self):
        closed_port = h.free_port()
        self.start_proxy(allowlist=[{"host": "www.wikidata.org", "ports": [closed_port]}])
        d = self.refused(self.connect_request("www.wikidata.org:%d" % closed_port), 502, "connect_refused")
        self.assertEqual(d["upstream"], "127.0.0.1:%d" % closed_port)
        self.refused(b"GET http://www.wikidata.org:%d/ HTTP/1.1\r\nHost: www.wikidata.org:%d\r\n\r\n"
                     % (closed_port, closed_port), 502, "connect_refused")

    def test_connect_timeout_is_504_connect_timeout(self):
        # A listener whose accept queue is full drops SYNs: the connect hangs.
        full = socket.socket()
        full.bind(("127.0.0.1", 0))
        full.listen(0)
        self.addCleanup(full.close)
        port = full.getsockname()[1]
        fillers = []
        for _ in range(4):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", port))
            fillers.append(s)
        self.addCleanup(lambda: [s.close() for s in fillers])
        time.sleep(0.2)
        self.start_proxy(allowlist=[{"host": "www.wikidata.org", "ports": [port]}], limits={"connect_timeout_ms": 800})
        t0 = time.monotonic()
        self.refused(self.connect_request("www.wikidata.org:%d" % port), 504, "connect_timeout")
        self.assertLess(time.monotonic() - t0, 3)

    def stalled_listeners(self, addresses, port):
        """Listeners on `addresses`:`port` whose accept queues are full: a connect to them
        hangs (SYNs dropped), like a dead host."""
        for a in addresses:
            full = socket.socket()
            full.bind((a, port))
            full.listen(0)
            self.addCleanup(full.close)
            for _ in range(4):
                s = socket.socket()
                s.setblocking(False)
                s.connect_ex((a, port))
                self.addCleanup(s.close)
        time.sleep(0.2)

    def test_happy_eyeballs_a_stalled_address_does_not_hold_the_dial_for_the_connect_timeout(self):
        # RFC 8305 §5: the next address starts 250 ms after the last one, not when it times
        # out; three stalled addresses before the live one cost ~750 ms, not 3 x 2 s.
        dead = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
        self.stalled_listeners(dead, self.tls.port)
        self.start_proxy(hosts={"slow.wikidata.org": dead + ["127.0.0.1"]}, limits={"connect_timeout_ms": 2000})
        t0 = time.monotonic()
        conn = self.tls_via_proxy("slow.wikidata.org", check_hostname=False)
        elapsed = time.monotonic() - t0
        self.assertIn(b"200 OK", self.https_get(conn, "slow.wikidata.org"))
        d = self.proxy.wait_decision(host="slow.wikidata.org")
        self.assertEqual(d["upstream"], "127.0.0.1:%d" % self.tls.port, d)
        self.assertGreaterEqual(d["connect_ms"], 700, d)
        self.assertLess(d["connect_ms"], 1500, d)
        self.assertLess(elapsed, 1.8)

    def test_happy_eyeballs_one_connect_deadline_for_all_addresses(self):
        dead = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
        self.stalled_listeners(dead, self.tls.port)
        self.start_proxy(hosts={"dead.wikidata.org": dead}, limits={"connect_timeout_ms": 1000})
        fds_before = self.proxy.fd_count()
        t0 = time.monotonic()
        d = self.refused(self.connect_request("dead.wikidata.org:%d" % self.tls.port), 504, "connect_timeout")
        self.assertLess(time.monotonic() - t0, 2.0, "each address got the whole connect timeout")
        self.assertGreaterEqual(d["connect_ms"], 950, d)
        self.assertLess(d["connect_ms"], 1500, d)
        # every attempt's socket is closed with the dial (the client's was closed by the refusal)
        h.wait_until(lambda: self.proxy.fd_count() == fds_before, 5, what="the attempts' sockets to be closed")

    def test_happy_eyeballs_a_refused_attempt_starts_the_next_at_once(self):
        # 127.0.0.5-7 refuse (nothing listens): each failure starts the next attempt without
        # waiting out the attempt delay.
        self.start_proxy(hosts={"refusing.wikidata.org": ["127.0.0.5", "127.0.0.6", "127.0.0.7", "127.0.0.1"]})
        conn = self.tls_via_proxy("refusing.wikidata.org", check_hostname=False)
        self.assertIn(b"200 OK", self.https_get(conn, "refusing.wikidata.org"))
        d = self.proxy.wait_decision(host="refusing.wikidata.org")
        self.assertEqual(d["upstream"], "127.0.0.1:%d" % self.tls.port, d)
        self.assertLess(d["connect_ms"], 200, d)

    def test_next_allowed_address_is_tried_when_one_refuses(self):
        dns = h.Dnsmasq(self.dir / "failover-dns", {"failover.wikidata.org": ["127.0.0.3", "127.0.0.1"]}, ["wikidata.org"])
        self.addCleanup(dns.stop)
        self.start_proxy(resolver={"servers": [dns.server()]})
        hello = h.make_client_hello("failover.wikidata.org")
        c, status, headers = self.connect("failover.wikidata.org:%d" % self.tls.port, payload=hello)
        self.assertEqual(status, 200, headers)
        rec = self.tls.connection(0)
        h.wait_until(lambda: bytes(rec.raw[:len(hello)]) == hello, 5, what="the hello upstream")
        c.close()
        self.assertEqual(self.decision_for(c)["upstream"], "127.0.0.1:%d" % self.tls.port)

    def test_static_hosts_answer_without_dns_and_are_filtered_too(self):
        self.start_proxy(hosts={"static.wikidata.org": ["127.0.0.1"], "static-meta.wikidata.org": ["169.254.169.254"]})
        queries = h.DnsQueries(self.dns, "static.wikidata.org")
        c, status, headers = self.connect("static.wikidata.org:%d" % self.tls.port)
        self.assertEqual(status, 200, headers)
        c.close()
        self.refused(self.connect_request("static-meta.wikidata.org:%d" % self.tls.port), 403, "address_denied")
        self.assertEqual(queries.since(), [])
        self.dns.sync()
        self.assertEqual(self.dns.queries("static-meta.wikidata.org"), [])

    def test_positive_answers_are_cached_for_min_ttl_and_not_at_all_with_ttl_0(self):
        for min_ttl, expected in ((5, 1), (0, 3)):
            with self.subTest(min_ttl_s=min_ttl):
                p = self.start_proxy(resolver={"min_ttl_s": min_ttl})
                queries = h.DnsQueries(self.dns, "wikidata.org")
                for _ in range(3):
                    c, status, _ = self.connect("wikidata.org:%d" % self.tls.port, proxy=p)
                    self.assertEqual(status, 200)
                    c.close()
                self.assertEqual(len([q for q in queries.since() if q[0] == "A"]), expected)

    def test_lookups_use_the_absolute_name_never_a_search_list(self):
        # c-ares honours LOCALDOMAIN/RES_OPTIONS; a search list would look up
        # www.wikidata.org.evil.test first, which answers the trap address.
        trap = h.RawRecorder("127.0.0.2", self.tls.port)
        self.addCleanup(trap.close)
        dns = h.Dnsmasq(self.dir / "search-dns", {"www.wikidata.org": ["127.0.0.1"],
                                                   "www.wikidata.org.evil.test": ["127.0.0.2"]},
                        ["wikidata.org", "test"])
        self.addCleanup(dns.stop)
        p = self.start_proxy(resolver={"servers": [dns.server()]},
                             env={"LOCALDOMAIN": "evil.test", "RES_OPTIONS": "ndots:5"})
        c, status, _ = self.connect("www.wikidata.org:%d" % self.tls.port, proxy=p)
        self.assertEqual(status, 200)
        c.close()
        self.assertEqual(self.decision_for(c)["upstream"], "127.0.0.1:%d" % self.tls.port)
        dns.sync()
        self.assertEqual([n for _, n in dns.queries() if n.endswith("evil.test")], [])
        self.assertEqual(trap.count(), 0)

    def test_rebinding_ttl0_name_is_checked_again_on_each_request_and_dialled_only_as_checked(self):
        name = "rebind.wikidata.org"
        dns = h.Dnsmasq(self.dir / "rebind-dns", {name: ["127.0.0.1"]}, ["wikidata.org"])
        self.addCleanup(dns.stop)
        trap = h.RawRecorder("127.0.0.2", self.tls.port)
        self.addCleanup(trap.close)
        self.start_proxy(resolver={"servers": [dns.server()]}, allow_cidrs=("127.0.0.1/32",))
        authority = "%s:%d" % (name, self.tls.port)

        def one_request():
            queries = h.DnsQueries(dns, name)
            c = self.client()
            c.send(self.connect_request(authority))
            status, headers = c.read_head()
            if status == 200:
                c.close()
            d = self.decision_for(c)
            self.assertEqual(len([q for q in queries.since() if q[0] == "A"]), 1, "one lookup per request")
            return status, headers.get("x-egress-denied"), d

        status, _, d = one_request()
        self.assertEqual((status, d["upstream"]), (200, "127.0.0.1:%d" % self.tls.port), d)
        for answer, reachable_trap in (("127.0.0.2", True), ("10.0.0.5", False), ("169.254.169.254", False)):
            dns.restart({name: [answer]}, ["wikidata.org"])
            status, reason, d = one_request()
            self.assertEqual((status, reason, d["upstream"]), (403, "address_denied", "%s:%d" % (answer, self.tls.port)), d)
        self.assertEqual(trap.count(), 0, "the proxy dialled 127.0.0.2")
        self.tls.connection(0)
        self.assertEqual(self.tls.count(), 1)

    def test_rebinding_within_one_request_no_second_lookup(self):
        # The stub answers 127.0.0.1 once, then 127.0.0.2 (denied, reachable, trapped).
        name = "flip.wikidata.org"
        flip = h.FlipDNS(name, "127.0.0.1", "127.0.0.2")
        self.addCleanup(flip.close)
        trap = h.RawRecorder("127.0.0.2", self.tls.port)
        self.addCleanup(trap.close)
        self.start_proxy(resolver={"servers": [flip.server()]}, allow_cidrs=("127.0.0.1/32",))
        hello = h.make_client_hello(name)
        c, status, headers = self.connect("%s:%d" % (name, self.tls.port), payload=hello)
        self.assertEqual(status, 200, headers)
        rec = self.tls.connection(0)
        h.wait_until(lambda: bytes(rec.raw[:len(hello)]) == hello, 5, what="the hello at the checked address")
        c.close()
        d = self.decision_for(c)
        self.assertEqual(d["upstream"], "127.0.0.1:%d" % self.tls.port)
        self.assertEqual(trap.count(), 0, "the proxy looked the name up again and dialled the new answer")
        self.assertEqual([q for q in flip.queries if q[0] == 1], [(1, name)])
        # the next request sees the new answer (TTL 0 is not cached) and is refused
        self.refused(self.connect_request("%s:%d" % (name, self.tls.port)), 403, "address_denied")
        self.assertEqual(trap.count(), 0)


class RelayTest(h.ProxyTestCase):
    """The tunnel relays bytes exactly, both ways, with half-close."""

    def test_large_transfer_is_byte_exact_in_both_directions_at_once(self):
        size = 8 * 1024 * 1024
        self.tls.mode = "bulk"
        self.tls.bulk_bytes = size
        self.tls.bulk_seed = 7
        self.start_proxy()
        up = h.pattern_bytes(size, 3)
        conn = self.tls_via_proxy("www.wikidata.org")
        down = conn.duplex(up, size, timeout=120)
        conn.close()
        self.assertEqual(len(down), size)
        self.assertEqual(hashlib.sha256(down).hexdigest(), hashlib.sha256(h.pattern_bytes(size, 7)).hexdigest())
        rec = self.tls.connection(0)
        self.assertTrue(rec.closed.wait(10))
        self.assertIsNone(rec.error)
        self.assertEqual((rec.up_bytes, rec.up_sha256), (size, hashlib.sha256(up).hexdigest()))
        d = self.proxy.wait_decision(verdict="allow")
        self.assertEqual(d["bytes_up"], len(rec.raw), "bytes_up is what the upstream received")
        self.assertGreater(d["bytes_down"], size)

    def test_half_close_client_shuts_write_side_upstream_still_answers(self):
        self.tls.mode = "reply_after_eof"
        self.start_proxy()
        conn = self.tls_via_proxy("www.wikidata.org")
        payload = b"request body then FIN\n" * 1000
        conn.send(payload)
        conn.shutdown_write()
        reply = conn.recv_to_eof(timeout=10)
        conn.close()
        self.assertEqual(reply, b"received %d bytes sha256 %s\n" % (len(payload), hashlib.sha256(payload).hexdigest().encode()))
        d = self.proxy.wait_decision(verdict="allow")
        self.assertEqual(d["end"], "eof")

    def test_echo_round_trips_through_the_tunnel(self):
        self.tls.mode = "echo"
        self.start_proxy()
        conn = self.tls_via_proxy("www.wikidata.org")
        for i in range(20):
            msg = b"ping %d " % i + b"z" * (i * 500)
            conn.app_in.clear()
            conn.send(msg)
            self.assertEqual(conn.recv_until(lambda b: len(b) >= len(msg)), msg)
        conn.close_notify()
        conn.shutdown_write()
        conn.recv_to_eof()
        conn.close()
        self.assertEqual(self.proxy.wait_decision(verdict="allow")["end"], "eof")

    # -- the relay on the readiness loop: half-close either way, the copy -> splice switch,
    # backpressure, resets, many tunnels at once --

    def proxy_pipes(self) -> int:
        """Pipe descriptors the proxy holds (its stdout and stderr are two; the relay's
        splice pipes stay pooled once used)."""
        d = "/proc/%d/fd" % self.proxy.pid
        n = 0
        for fd in os.listdir(d):
            try:
                n += os.readlink(os.path.join(d, fd)).startswith("pipe:")
            except FileNotFoundError:
                pass
        return n

    def test_upstream_half_closes_first_client_keeps_sending_upstream_gets_every_byte(self):
        answer_size = 300 * 1024
        self.tls.mode = "half_close_first"
        self.tls.bulk_bytes = answer_size
        self.tls.bulk_seed = 11
        self.start_proxy()
        conn = self.tls_via_proxy("www.wikidata.org")
        request = b"GET /then-keep-sending\n"
        conn.send(request)
        # the answer, then the upstream's close_notify and FIN, reach the client
        conn.pump(lambda: conn.raw_eof, 30, "the upstream's half-close passed on")
        self.assertTrue(conn.app_eof)
        self.assertEqual(len(conn.app_in), answer_size)
        self.assertEqual(sha256(conn.app_in), sha256(h.pattern_bytes(answer_size, 11)))
        # the other direction still carries bytes, in pieces, with pauses
        more = [h.pattern_bytes(size, 12 + i) for i, size in enumerate((1, 70 * 1024, 3 * 1024 * 1024, 5000))]
        for piece in more:
            conn.send(piece)
            time.sleep(0.1)
        self.assertEqual(self.proxy.decisions(), [], "the tunnel ended before the client's end")
        conn.close_notify()
        conn.shutdown_write()
        rec = self.tls.connection(0)
        self.assertTrue(rec.closed.wait(30), "the upstream never saw the client's end")
        self.assertIsNone(rec.error)
        sent = request + b"".join(more)
        self.assertEqual((rec.up_bytes, rec.up_sha256), (len(sent), sha256(sent)))
        d = self.proxy.wait_decision(verdict="allow")
        conn.close()
        self.assertEqual(d["end"], "eof", d)
        self.assertEqual(d["bytes_up"], len(rec.raw), "bytes_up is what the upstream received")
        self.assertEqual(d["bytes_down"], conn.raw_received, "bytes_down is what the client received")
        time.sleep(0.2)
        self.assertEqual(len(self.proxy.decisions()), 1, self.proxy.decisions())

    def test_small_then_multi_megabyte_then_small_messages_echo_in_order(self):
        self.tls.mode = "echo"
        self.start_proxy()
        conn = self.tls_via_proxy("www.wikidata.org")
        small_before = [b"before %d " % i + b"a" * (i * 700) for i in range(12)]
        big = h.pattern_bytes(6 * 1024 * 1024, 21)
        small_after = [b"after %d " % i + b"b" * (i * 900) for i in range(12)]
        for i, msg in enumerate(small_before):
            conn.app_in.clear()
            conn.send(msg)
            self.assertEqual(conn.recv_until(lambda b: len(b) >= len(msg)), msg, "message %d before" % i)
        pipes_before = self.proxy_pipes()
        conn.app_in.clear()
        conn.send(big, timeout=120)
        got = conn.recv_until(lambda b: len(b) >= len(big), timeout=120)
        self.assertEqual((len(got), sha256(got)), (len(big), sha256(big)))
        self.assertGreater(self.proxy_pipes(), pipes_before,
                           "the multi-megabyte message never switched the relay to splice(2)")
        for i, msg in enumerate(small_after):
            conn.app_in.clear()
            conn.send(msg)
            self.assertEqual(conn.recv_until(lambda b: len(b) >= len(msg)), msg, "message %d after" % i)
        # the same mix back to back, without waiting for the echo: order kept across switches
        mix = b"".join(small_before) + big + b"".join(small_after) + big[:100000] + b"end\n"
        conn.app_in.clear()
        conn.send(mix, timeout=120)
        got = conn.recv_until(lambda b: len(b) >= len(mix), timeout=120)
        self.assertEqual((len(got), sha256(got)), (len(mix), sha256(mix)))
        conn.close_notify()
        conn.shutdown_write()
        conn.recv_to_eof()
        conn.close()
        d = self.proxy.wait_decision(verdict="allow")
        self.assertEqual(d["end"], "eof", d)
        rec = self.tls.connection(0)
        self.assertTrue(rec.closed.wait(10))
        self.assertIsNone(rec.error)
        self.assertEqual(d["bytes_up"], len(rec.raw))
        self.assertEqual(d["bytes_down"], conn.raw_received)

    def test_slow_client_reader_gets_32_mb_byte_exact_and_the_proxy_does_not_buffer_it(self):
        size = 32 * 1024 * 1024
        self.tls.mode = "bulk"
        self.tls.bulk_bytes = size
        self.tls.bulk_seed = 31
        self.start_proxy()
        conn = self.tls_via_proxy("www.wikidata.org")
        # a small, fixed receive buffer: the client's kernel cannot absorb the download either
        conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        conn.close_notify()
        conn.shutdown_write()  # nothing to send: the upstream sends, then closes
        rss_start = self.proxy.rss_kib()
        rss_peak = rss_start
        digest = hashlib.sha256()
        got = 0
        raw = 0
        pauses = {size // 4, size // 2, 3 * size // 4}
        next_pause = sorted(pauses)
        sock = conn.sock
        sock.setblocking(True)
        sock.settimeout(30)
        since_progress = since_rss = 0
        started = time.monotonic()
        while True:
            data = sock.recv(4096)  # small pieces
            if not data:
                break
            raw += len(data)
            since_progress += len(data)
            since_rss += len(data)
            conn.inc.write(data)
            if since_progress >= 64 * 1024:  # decrypt, hash, and a short pause
                since_progress = 0
                conn._progress()
                digest.update(conn.app_in)
                got += len(conn.app_in)
                conn.app_in.clear()
                time.sleep(0.002)
            if since_rss >= 1024 * 1024:
                since_rss = 0
                rss_peak = max(rss_peak, self.proxy.rss_kib())
            if next_pause and got >= next_pause[0]:
                next_pause.pop(0)
                for _ in range(5):  # nobody reads for 0.5 s: the proxy must hold back
                    time.sleep(0.1)
                    rss_peak = max(rss_peak, self.proxy.rss_kib())
            self.assertLess(time.monotonic() - started, 300, "the slow download took too long")
        conn.inc.write_eof()
        conn._progress()
        digest.update(conn.app_in)
        got += len(conn.app_in)
        conn.close()
        self.assertEqual(next_pause, [], "the reader never paused")
        self.assertEqual(got, size)
        self.assertEqual(digest.hexdigest(), sha256(h.pattern_bytes(size, 31)))
        self.assertLess(rss_peak - rss_start, 8 * 1024,
                        "proxy VmRSS grew from %d KiB to %d KiB during a slow download" % (rss_start, rss_peak))
        d = self.proxy.wait_decision(verdict="allow")
        self.assertEqual(d["end"], "eof", d)
        self.assertEqual(d["bytes_down"], raw + conn.raw_received)
        rec = self.tls.connection(0)
        self.assertTrue(rec.closed.wait(10))
        self.assertIsNone(rec.error)

    def test_client_reset_during_a_large_download_logs_one_decision_and_the_proxy_serves_on(self):
        self.tls.mode = "bulk"
        self.tls.bulk_bytes = 64 * 1024 * 1024
        self.tls.bulk_seed = 41
        self.start_proxy()
        conn = self.tls_via_proxy("www.wikidata.org")
        local = "%s:%d" % conn.sock.getsockname()[:2]
        conn.pump(lambda: conn.raw_received >= 2 * 1024 * 1024, 30, "2 MiB of the download")
        received = conn.raw_received
        conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()  # RST
        d = self.proxy.wait_decision(client=local)
        self.assertEqual((d["verdict"], d["end"]), ("allow", "error"), d)
        self.assertGreaterEqual(d["bytes_down"], received, d)
        self.assertLess(d["bytes_down"], 64 * 1024 * 1024, d)
        rec = self.tls.connection(0)
        self.assertTrue(rec.closed.wait(10), "the proxy kept its upstream connection after the client's reset")
        # the proxy serves the next request
        self.tls.mode = "http"
        conn2 = self.tls_via_proxy("www.wikidata.org")
        local2 = "%s:%d" % conn2.sock.getsockname()[:2]
        self.assertIn(b"hello from upstream www.wikidata.org", self.https_get(conn2, "www.wikidata.org"))
        d2 = self.proxy.wait_decision(client=local2)
        self.assertEqual((d2["verdict"], d2["end"]), ("allow", "eof"), d2)
        time.sleep(0.3)
        self.assertEqual(len(self.proxy.decisions(client=local)), 1, self.proxy.decisions(client=local))
        self.assertEqual(len(self.proxy.decisions()), 2, self.proxy.decisions())

    def test_fifty_concurrent_tunnels_each_echo_256_kib_byte_exact(self):
        tunnels = 50
        size = 256 * 1024
        self.tls.mode = "echo"
        self.start_proxy()
        payloads = [h.pattern_bytes(size, 100 + i) for i in range(tunnels)]
        barrier = threading.Barrier(tunnels, timeout=120)
        results = [None] * tunnels
        errors = []

        def run(i):
            try:
                conn = self.tls_via_proxy("www.wikidata.org")
                barrier.wait()  # every tunnel is up: the transfers overlap
                conn.send(payloads[i], timeout=120)
                got = conn.recv_until(lambda b: len(b) >= size, timeout=120)
                conn.close_notify()
                conn.shutdown_write()
                conn.recv_to_eof(timeout=60)
                conn.close()
                results[i] = (len(got), sha256(got))
            except Exception as e:  # reported by the test's thread
                barrier.abort()
                errors.append("tunnel %d: %s: %s" % (i, type(e).__name__, e))

        threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(tunnels)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(240)
        self.assertFalse(any(t.is_alive() for t in threads), "tunnel threads still running")
        self.assertEqual(errors, [])
        for i in range(tunnels):
            self.assertEqual(results[i], (size, sha256(payloads[i])), "tunnel %d" % i)
        h.wait_until(lambda: len(self.proxy.decisions(verdict="allow")) >= tunnels, 30,
                     what="%d decision lines" % tunnels)
        decisions = self.proxy.decisions()
        self.assertEqual(len(decisions), tunnels)
        self.assertEqual(sorted({d["end"] for d in decisions}), ["eof"])
        self.assertEqual(len({d["conn"] for d in decisions}), tunnels)
        for d in decisions:
            self.assertGreater(d["bytes_up"], size, d)
            self.assertGreater(d["bytes_down"], size, d)
        self.assertEqual(self.tls.count(), tunnels)
        for rec in self.tls.connections:
            self.assertTrue(rec.closed.wait(10))
            self.assertIsNone(rec.error)
        self.assertEqual(sorted(sha256(rec.app) for rec in self.tls.connections),
                         sorted(sha256(p) for p in payloads))


def sha256(data) -> str:
    return hashlib.sha256(data).hexdigest()


if __name__ == "__main__":
    unittest.main()
