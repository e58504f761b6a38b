"""Operating the built egress-proxy: limits (slowloris, connection cap and memory, EMFILE,
idle timeout), signals (SIGHUP reload, SIGTERM drain), the admin listener, the decision
log, and start-up errors.

Run (ctest does this, in a PID namespace too):
  unshare --net sh -c 'ip link set lo up && exec /usr/bin/python3 -m unittest -v operations_test'
"""

import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import time
import unittest
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness as h  # noqa: E402


def cpu_seconds(pid: int) -> float:
    fields = Path("/proc/%d/stat" % pid).read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def readable_now(s: socket.socket) -> bool:
    """Data or EOF waiting on `s` (no select: fds above 1024 are fine)."""
    timeout = s.gettimeout()
    s.setblocking(False)
    try:
        s.recv(1, socket.MSG_PEEK)
        return True
    except BlockingIOError:
        return False
    except OSError:
        return True
    finally:
        s.settimeout(timeout)


class LimitsTest(h.ProxyTestCase):

    def served_quickly(self, limit: float = 1.0) -> float:
        """A TLS request and a plain HTTP request through the proxy; returns the slower time."""
        t0 = time.monotonic()
        conn = self.tls_via_proxy("www.wikidata.org")
        self.assertIn(b"200 OK", self.https_get(conn, "www.wikidata.org"))
        c = self.client()
        a = b"www.wikidata.org:%d" % self.http.port
        c.send(b"GET http://%s/ HTTP/1.1\r\nHost: %s\r\n\r\n" % (a, a))
        self.assertEqual(c.read_response()[0], 200)
        c.close()
        elapsed = time.monotonic() - t0
        self.assertLess(elapsed, limit)
        return elapsed

    def test_slowloris_gets_408_within_the_header_deadline_while_other_clients_are_served(self):
        self.start_proxy(limits={"header_timeout_ms": 1500})
        silent = self.client()  # connects and never sends a byte
        slow = [self.client() for _ in range(20)]
        t0 = time.monotonic()
        head = b"GET http://www.wikidata.org/ HTTP/1.1\r\nHost: www.wikidata.org\r\n"
        answered = {}
        i = 0
        while len(answered) < len(slow) and time.monotonic() - t0 < 6:
            for k, c in enumerate(slow):  # one byte per second per connection
                if k not in answered:
                    try:
                        c.sock.send(head[i:i + 1])
                    except OSError:
                        pass
            i += 1
            self.served_quickly(0.9)  # others are unaffected meanwhile
            ready, _, _ = select.select([c.sock for c in slow], [], [], max(0.0, 1.0 - (time.monotonic() - t0 - i + 1)))
            for k, c in enumerate(slow):
                if c.sock in ready and k not in answered:
                    answered[k] = time.monotonic() - t0
        self.assertEqual(len(answered), len(slow), "some slowloris connections were never cut off")
        for k, c in enumerate(slow):
            status, headers = c.read_head(2)
            self.assertEqual((status, headers.get("x-egress-denied")), (408, "header_timeout"))
            self.assertTrue(c.closed_within(2))
        self.assertLess(max(answered.values()), 1.5 + 1.0, answered)
        self.assertGreater(min(answered.values()), 1.2, answered)
        status, headers = silent.read_head(1)
        self.assertEqual((status, headers.get("x-egress-denied")), (408, "header_timeout"))

    def test_idle_connections_over_max_connections_get_503_with_bounded_memory_and_service_resumes(self):
        p = self.start_proxy(limits={"max_connections": 300, "header_timeout_ms": 60000})
        self.served_quickly()
        base = p.rss_kib()
        held = []
        try:
            for _ in range(1200):
                held.append(socket.create_connection(("127.0.0.1", p.port), timeout=10))
            h.wait_until(lambda: len(p.decisions(reason="too_many_connections")) >= 900, 20,
                         what="900 refusals")
            refused = [s for s in held if readable_now(s)]
            self.assertEqual(len(refused), 900, "exactly the connections over the cap are answered")
            answer = refused[-1].recv(4096)
            self.assertRegex(answer, rb"^HTTP/1.1 503 ")
            self.assertIn(b"X-Egress-Denied: too_many_connections", answer)
            # a normal client during saturation: refused, not hung
            c = self.client()
            c.send(self.connect_request("www.wikidata.org:%d" % self.tls.port))
            self.assertEqual(c.read_head(5)[0], 503)
            grown = p.rss_kib() - base
            print("\n    RSS %d KiB -> +%d KiB for 300 idle connections (%.1f KiB each)"
                  % (base, grown, grown / 300.0), file=sys.stderr)
            self.assertLess(grown, 300 * 16, "more than 16 KiB per idle connection")
        finally:
            for s in held:
                s.close()
        h.wait_until(lambda: p.fd_count() < 50, 10, what="the proxy to close the idle connections")
        self.served_quickly()

    def test_idle_tunnels_hold_only_a_few_kib_each(self):
        self.tls.mode = "echo"
        p = self.start_proxy()
        tunnels = []
        n = 120
        for _ in range(10):
            tunnels.append(self.tls_via_proxy("www.wikidata.org"))
        base = p.rss_kib()
        for _ in range(n):
            conn = self.tls_via_proxy("www.wikidata.org")
            conn.send(b"x" * 1000)
            conn.recv_until(lambda b: len(b) >= 1000)
            tunnels.append(conn)
        time.sleep(0.2)
        grown = p.rss_kib() - base
        print("\n    RSS %d KiB -> +%d KiB for %d idle tunnels (%.1f KiB each)" % (base, grown, n, grown / n),
              file=sys.stderr)
        try:
            self.assertLess(grown / n, 16, "an idle tunnel should hold a few KiB")
        finally:
            for t in tunnels:
                t.close()

    def test_accept_failing_with_emfile_backs_off_instead_of_spinning_and_recovers(self):
        p = self.start_proxy()
        p.set_fd_limit(40)
        held = []
        try:
            for _ in range(80):
                held.append(socket.create_connection(("127.0.0.1", p.port), timeout=5))
            p.wait_event(lambda e: e.get("event") == "accept_failed", 5, "an accept_failed warning")
            before = cpu_seconds(p.pid)
            time.sleep(1.0)
            used = cpu_seconds(p.pid) - before
            self.assertLess(used, 0.3, "the accept loop spins on EMFILE (%.2f s CPU in 1 s)" % used)
        finally:
            for s in held:
                s.close()
        h.wait_until(lambda: self._served_once(), 10, 0.2, "service after EMFILE")

    def _served_once(self) -> bool:
        try:
            conn = self.tls_via_proxy("www.wikidata.org")
            return b"200 OK" in self.https_get(conn, "www.wikidata.org")
        except (AssertionError, OSError):
            return False

    def test_idle_timeout_closes_a_quiet_tunnel_but_not_a_busy_one(self):
        self.tls.mode = "echo"
        p = self.start_proxy(limits={"idle_timeout_ms": 1000})
        busy = self.tls_via_proxy("www.wikidata.org")
        quiet = self.tls_via_proxy("www.wikidata.org")
        t0 = time.monotonic()
        while time.monotonic() - t0 < 2.5:  # busy: traffic every 300 ms for 2.5 s
            busy.app_in.clear()
            busy.send(b"tick")
            busy.recv_until(lambda b: len(b) >= 4, timeout=2)
            time.sleep(0.3)
        quiet.pump(lambda: quiet.raw_eof, 1, "the quiet tunnel to be closed")
        d = p.wait_decision(end="idle_timeout")
        self.assertEqual(d["client"], self._clients[-1].local)
        self.assertEqual(len(p.decisions()), 1, "only the quiet tunnel ended")
        self.assertGreaterEqual(d["total_ms"], 1000)
        self.assertLess(d["total_ms"], 2600)
        busy.app_in.clear()
        busy.send(b"still here")
        self.assertEqual(busy.recv_until(lambda b: len(b) >= 10), b"still here")


class SignalTest(h.ProxyTestCase):

    def test_sighup_with_broken_config_keeps_the_old_one_then_a_good_one_changes_the_allowlist(self):
        p = self.start_proxy()
        conn = self.tls_via_proxy("www.wikidata.org")
        self.assertIn(b"200 OK", self.https_get(conn, "www.wikidata.org"))
        for broken in ("version: 1\nkind: proxy\nproxy: [unclosed\n",
                       yaml.safe_dump(dict(self.config(), allowlist=[{"host": "*.*.wikidata.org"}])),
                       yaml.safe_dump(dict(self.config(), surprise_key=1))):
            mark = p.mark()
            self.write_config(p, broken)
            p.signal(signal.SIGHUP)
            p.wait_event(lambda e: e.get("event") == "reload_failed", 5, "reload_failed", start=mark)
            conn = self.tls_via_proxy("www.wikidata.org")  # the old config still serves
            self.assertIn(b"200 OK", self.https_get(conn, "www.wikidata.org"))
        # a good config: wikifunctions.org only
        mark = p.mark()
        self.write_config(p, self.config(allowlist=[{"host": "wikifunctions.org", "ports": [self.tls.port]}]))
        p.signal(signal.SIGHUP)
        p.wait_event(lambda e: e.get("event") == "reloaded", 5, "reloaded", start=mark)
        self.refused(self.connect_request("www.wikidata.org:%d" % self.tls.port), 403, "host_not_allowed")
        conn = self.tls_via_proxy("wikifunctions.org")
        self.assertIn(b"hello from upstream wikifunctions.org", self.https_get(conn, "wikifunctions.org"))
        status, body = p.admin_get("/metrics")
        self.assertIn(b'egress_proxy_config_reloads_total{result="failed"} 3', body)
        self.assertIn(b'egress_proxy_config_reloads_total{result="ok"} 1', body)

    def reload(self, p, config) -> None:
        mark = p.mark()
        self.write_config(p, config)
        p.signal(signal.SIGHUP)
        p.wait_event(lambda e: e.get("event") == "reloaded", 5, "reloaded", start=mark)

    def test_sighup_closes_tunnels_the_new_config_no_longer_allows_and_keeps_the_others(self):
        self.tls.mode = "echo"
        p = self.start_proxy()
        gone = self.tls_via_proxy("www.wikidata.org")
        kept = self.tls_via_proxy("wikifunctions.org")
        for conn in (gone, kept):
            conn.send(b"before reload")
            self.assertEqual(conn.recv_until(lambda b: len(b) >= 13), b"before reload")
        self.reload(p, self.config(allowlist=[{"host": "wikifunctions.org", "ports": [self.tls.port]}]))
        gone.pump(lambda: gone.raw_eof, 5, "the revoked tunnel to be closed")
        d = p.wait_decision(end="revoked")
        self.assertEqual((d["host"], d["verdict"], d["reason"]), ("www.wikidata.org", "allow", "allowed"), d)
        self.assertGreaterEqual(d["bytes_up"], 13, d)
        kept.app_in.clear()
        kept.send(b"after reload")
        self.assertEqual(kept.recv_until(lambda b: len(b) >= 12), b"after reload")
        self.assertEqual(len(p.decisions(end="revoked")), 1, p.decisions())
        status, body = p.admin_get("/metrics")
        self.assertIn(b'egress_proxy_tunnels_closed_by_proxy_total{cause="revoked"} 1', body)
        self.assertIn(b'egress_proxy_active_tunnels 1', body)
        kept.close()

    def test_sighup_revokes_a_tunnel_whose_port_or_address_the_new_config_denies(self):
        self.tls.mode = "echo"
        p = self.start_proxy()
        conn = self.tls_via_proxy("www.wikidata.org")
        # the port leaves the allowlist entry: revoked
        self.reload(p, self.config(allowlist=[{"host": "www.wikidata.org", "ports": [self.http.port]}]))
        conn.pump(lambda: conn.raw_eof, 5, "the tunnel whose port was removed to be closed")
        self.assertEqual(p.wait_decision(end="revoked")["port"], self.tls.port)
        # the host stays allowed but loopback is no longer an allowed address: revoked
        self.reload(p, self.config())
        conn = self.tls_via_proxy("www.wikidata.org")
        mark = len(p.decisions(end="revoked"))
        self.reload(p, self.config(allow_cidrs=()))
        conn.pump(lambda: conn.raw_eof, 5, "the tunnel to a now denied address to be closed")
        h.wait_until(lambda: len(p.decisions(end="revoked")) == mark + 1, 5, what="a second revoked line")

    def test_a_keep_alive_request_after_sighup_is_judged_by_the_new_config(self):
        p = self.start_proxy()
        c = self.client()
        a = b"www.wikidata.org:%d" % self.http.port
        request = b"GET http://%s/ HTTP/1.1\r\nHost: %s\r\n\r\n" % (a, a)
        c.send(request)
        self.assertEqual(c.read_response()[0], 200)
        self.reload(p, self.config(allowlist=[{"host": "wikifunctions.org", "ports": [self.http.port]}]))
        before = self.http.count()
        c.send(request)  # same connection, second request
        status, headers = c.read_head()
        self.assertEqual((status, headers.get("x-egress-denied")), (403, "host_not_allowed"), headers)
        self.assertEqual(self.http.count(), before, "the refused request reached the upstream")

    def test_a_head_completed_after_sighup_is_judged_by_the_new_config(self):
        p = self.start_proxy()
        waiting = self.client()  # connected before the reload, completes its head after it
        waiting.send(b"CONNECT www.wikidata.org:%d HTTP/1.1\r\n" % self.tls.port)
        time.sleep(0.2)
        self.reload(p, self.config(allowlist=[{"host": "wikifunctions.org", "ports": [self.tls.port]}]))
        before = self.tls.count()
        waiting.send(b"Host: www.wikidata.org\r\n\r\n")
        status, headers = waiting.read_head()
        self.assertEqual((status, headers.get("x-egress-denied")), (403, "host_not_allowed"), headers)
        self.assertEqual(self.tls.count(), before, "the refused CONNECT reached the upstream")

    def test_max_tunnel_lifetime_closes_a_busy_tunnel_when_it_passes(self):
        self.tls.mode = "echo"
        p = self.start_proxy(limits={"max_tunnel_lifetime_ms": 1500})
        conn = self.tls_via_proxy("www.wikidata.org")
        t0 = time.monotonic()
        while not conn.raw_eof and time.monotonic() - t0 < 5:  # busy: never idle
            conn.app_in.clear()
            try:
                conn.send(b"ping")
                conn.recv_until(lambda b: len(b) >= 4, timeout=0.3)
            except (TimeoutError, ConnectionError, OSError):
                pass
            time.sleep(0.1)
        self.assertTrue(conn.raw_eof, "the tunnel outlived max_tunnel_lifetime_ms")
        d = p.wait_decision(end="max_lifetime")
        self.assertGreaterEqual(d["total_ms"], 1400, d)
        self.assertLess(d["total_ms"], 3500, d)
        status, body = p.admin_get("/metrics")
        self.assertIn(b'egress_proxy_tunnels_closed_by_proxy_total{cause="max_lifetime"} 1', body)
        # off by default: a tunnel of the default config outlives 1.5 s
        p2 = self.start_proxy()
        conn = self.tls_via_proxy("www.wikidata.org", proxy=p2)
        time.sleep(2)
        conn.send(b"still")
        self.assertEqual(conn.recv_until(lambda b: len(b) >= 5), b"still")
        conn.close()

    def test_sigterm_with_an_open_tunnel_drains_it_refuses_new_connections_and_exits_0(self):
        self.tls.mode = "echo"
        p = self.start_proxy(limits={"drain_timeout_ms": 20000})
        idle_client = self.client()  # connected, no request yet: closed at once by the drain
        conn = self.tls_via_proxy("www.wikidata.org")
        conn.send(b"before")
        self.assertEqual(conn.recv_until(lambda b: len(b) >= 6), b"before")
        self.assertEqual(p.admin_get("/readyz")[0], 200)
        t0 = time.monotonic()
        p.signal(signal.SIGTERM)
        p.wait_event(lambda e: e.get("event") == "draining", 5, "the draining event")
        self.assertTrue(idle_client.closed_within(2), "an idle client connection was kept during the drain")
        status, body = p.admin_get("/readyz")
        self.assertEqual((status, body), (503, b"draining\n"))
        self.assertEqual(p.admin_get("/healthz")[0], 200)
        with self.assertRaises(OSError):  # the proxy listener is closed
            socket.create_connection(("127.0.0.1", p.port), timeout=2).close()
        for i in range(5):  # the tunnel keeps relaying
            conn.app_in.clear()
            conn.send(b"during drain %d" % i)
            self.assertEqual(conn.recv_until(lambda b: len(b) >= 14), b"during drain %d" % i)
            time.sleep(0.1)
        self.assertIsNone(p.proc.poll(), "exited with a tunnel open")
        conn.close_notify()
        conn.shutdown_write()
        conn.recv_to_eof()
        conn.close()
        self.assertEqual(p.wait_exit(5), 0)
        self.assertLess(time.monotonic() - t0, 10)
        d = [d for d in p.decisions() if d["verdict"] == "allow"]
        self.assertEqual([x["end"] for x in d], ["eof"])

    def test_sigterm_drain_timeout_ends_a_stuck_tunnel_and_exits_0(self):
        self.tls.mode = "echo"
        p = self.start_proxy(limits={"drain_timeout_ms": 1000})
        conn = self.tls_via_proxy("www.wikidata.org")
        t0 = time.monotonic()
        p.signal(signal.SIGTERM)
        self.assertEqual(p.wait_exit(5), 0)
        elapsed = time.monotonic() - t0
        self.assertGreater(elapsed, 0.9)
        self.assertLess(elapsed, 3)
        conn.close()
        d = [d for d in p.decisions() if d["verdict"] == "allow"]
        self.assertEqual([x["end"] for x in d], ["drain"], p.decisions())


class AdminAndLogTest(h.ProxyTestCase):

    def setUp(self):
        super().setUp()
        self.start_proxy()

    def test_admin_healthz_readyz_and_metrics_answer(self):
        self.assertEqual(self.proxy.admin_get("/healthz"), (200, b"ok\n"))
        self.assertEqual(self.proxy.admin_get("/readyz"), (200, b"ready\n"))
        status, body = self.proxy.admin_get("/metrics")
        self.assertEqual(status, 200)
        for name in (b"egress_proxy_decisions_total", b"egress_proxy_active_tunnels", b"egress_proxy_connections",
                     b"egress_proxy_dns_duration_seconds_bucket", b"egress_proxy_connect_duration_seconds_bucket"):
            self.assertIn(name, body)
        self.assertEqual(self.proxy.admin_get("/nothing")[0], 404)
        self.assertIn(b"egress_proxy_active_tunnels 0\n", body)
        self.tls.mode = "echo"
        conn = self.tls_via_proxy("www.wikidata.org")
        conn.send(b"x")
        conn.recv_until(lambda b: b == b"x")
        self.assertIn(b"egress_proxy_active_tunnels 1\n", self.proxy.admin_get("/metrics")[1])
        conn.close()
        self.proxy.wait_decision(verdict="allow")
        self.assertIn(b"egress_proxy_active_tunnels 0\n", self.proxy.admin_get("/metrics")[1])

    def test_metrics_count_decisions_by_verdict_and_reason(self):
        for _ in range(3):
            self.refused(self.connect_request("evil.example:443"), 403, "host_not_allowed")
        for _ in range(2):
            self.refused(self.connect_request("www.wikidata.org:22"), 403, "port_not_allowed")
        conn = self.tls_via_proxy("www.wikidata.org")
        self.https_get(conn, "www.wikidata.org")
        c, _ = self.hello_after_connect("www.wikidata.org:%d" % self.tls.port, h.make_client_hello("en.wikipedia.org"))
        h.wait_until(lambda: len(self.proxy.decisions()) == 7, 5, what="7 decisions")
        _, body = self.proxy.admin_get("/metrics")
        text = body.decode()
        expect = {('deny', 'host_not_allowed'): 3, ('deny', 'port_not_allowed'): 2, ('allow', 'allowed'): 1,
                  ('deny', 'sni_mismatch'): 1}
        for (verdict, reason), n in expect.items():
            self.assertIn('egress_proxy_decisions_total{verdict="%s",reason="%s"} %d' % (verdict, reason, n), text)
        self.assertRegex(text, r"egress_proxy_bytes_total\{direction=\"up\"\} [1-9]")

    def test_proxied_request_for_the_admin_metrics_is_denied_and_never_answered_by_the_admin_handler(self):
        ap = self.proxy.admin_port
        d = self.refused(b"GET http://127.0.0.1:%d/metrics HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n" % (ap, ap),
                         403, "ip_literal_not_allowed")
        self.assertNotIn("upstream", d)
        self.refused(self.connect_request("127.0.0.1:%d" % ap), 403, "ip_literal_not_allowed")
        self.refused(b"GET http://localhost:%d/metrics HTTP/1.1\r\nHost: localhost:%d\r\n\r\n" % (ap, ap),
                     403, "host_not_allowed")
        self.refused(b"GET http://[::1]:%d/metrics HTTP/1.1\r\nHost: [::1]:%d\r\n\r\n" % (ap, ap),
                     403, "ip_literal_not_allowed")
        _, body = self.proxy.admin_get("/metrics")
        self.assertIn(b'reason="ip_literal_not_allowed"} 3', body)

    def test_every_decision_is_exactly_one_json_line_with_the_documented_fields(self):
        p = self.proxy
        clients = []
        conn = self.tls_via_proxy("www.wikidata.org")                      # allowed tunnel
        clients.append((self._clients[-1].local, 1))
        self.https_get(conn, "www.wikidata.org")
        c, _ = self.hello_after_connect("www.wikidata.org:%d" % self.tls.port, h.make_client_hello("wikidata.org"))
        clients.append((c.local, 1))                                          # SNI mismatch
        self.refused(self.connect_request("evil.example:443"), 403, "host_not_allowed")
        clients.append((self._clients[-1].local, 1))
        self.refused(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n", 400, "origin_form")
        clients.append((self._clients[-1].local, 1))
        k = self.client()                                                    # keep-alive: 2 requests
        a = b"www.wikidata.org:%d" % self.http.port
        for _ in range(2):
            k.send(b"GET http://%s/ HTTP/1.1\r\nHost: %s\r\n\r\n" % (a, a))
            k.read_response()
        k.close()
        clients.append((k.local, 2))
        quiet = self.client()                                                # connects, says nothing
        quiet.close()
        h.wait_until(lambda: len(p.decisions()) >= 6, 5, what="decisions")
        time.sleep(0.3)
        for local, n in clients:
            lines = [l for l in p.lines if '"event":"decision"' in l and '"client":"%s"' % local in l]
            self.assertEqual(len(lines), n, "client %s: %r" % (local, lines))
            for line in lines:
                d = json.loads(line)
                self.assertEqual(list(d)[:2], ["time", "event"])
                self.assertRegex(d["time"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
                for f in h.DECISION_FIELDS:
                    self.assertIn(f, d)
                self.assertIsInstance(d["conn"], int)
                self.assertIsInstance(d["bytes_up"], int)
                self.assertIsInstance(d["total_ms"], (int, float))
        self.assertLessEqual(len(p.decisions(client=quiet.local)), 1)
        conns = [d["conn"] for d in p.decisions() if d["client"] != quiet.local]
        self.assertEqual(len(conns), len(set(conns)) + 1, "one conn id per connection (the keep-alive one twice)")

    def test_no_log_line_contains_a_query_string_credentials_or_proxy_authorization(self):
        secrets = ["QSECRET%d" % i for i in range(1, 8)]
        a = b"www.wikidata.org:%d" % self.http.port
        c = self.client()
        c.send(b"GET http://%s/p?token=%s HTTP/1.1\r\nHost: %s\r\nProxy-Authorization: Basic %s\r\n"
               b"Authorization: Bearer %s\r\n\r\n" % (a, secrets[0].encode(), a, secrets[1].encode(), secrets[2].encode()))
        self.assertEqual(c.read_response()[0], 200)
        rec = self.http.connection(0)
        self.assertNotIn(secrets[1].encode(), rec.head, "Proxy-Authorization was forwarded")
        self.refused(self.connect_request("evil.example:443", extra=b"Proxy-Authorization: Basic %s\r\n"
                                          % secrets[3].encode()), 403, "host_not_allowed")
        self.refused(b"GET http://evil.example/?q=%s HTTP/1.1\r\nHost: evil.example\r\n\r\n" % secrets[4].encode(),
                     403, "host_not_allowed")
        self.refused(b"GET http://user:%s@evil.example/ HTTP/1.1\r\nHost: evil.example\r\n\r\n" % secrets[5].encode(),
                     400, "userinfo_in_target")
        self.refused(b"GET http://%s/?a=%s HTTP/1.1\r\nHost: evil.example\r\n\r\n" % (a, secrets[6].encode()),
                     400, "host_mismatch")
        conn = self.tls_via_proxy("www.wikidata.org")
        self.https_get(conn, "www.wikidata.org")
        h.wait_until(lambda: len(self.proxy.decisions()) >= 6, 5, what="6 decisions")
        text = self.proxy.stdout_text() + self.proxy.stderr.decode(errors="replace")
        for s in secrets:
            self.assertNotIn(s, text)
        d = self.proxy.decisions(client=c.local)[0]
        self.assertNotIn("?", json.dumps(d))


class StartupTest(h.ProxyTestCase):

    def run_proxy(self, config_text: str, *args, timeout: float = 10):
        path = self.dir / "c.yaml"
        path.write_text(config_text)
        return subprocess.run([h.PROXY_BINARY, "--config", str(path), "--listen", "127.0.0.1:0",
                               "--admin", "127.0.0.1:0", *args], capture_output=True, text=True, timeout=timeout)

    def test_config_errors_exit_2_with_every_diagnostic_on_stderr(self):
        cfg = self.config()
        cfg["allowlist"].append({"host": "*.*.bad.example"})
        cfg["proxy"]["limits"]["header_timeout_ms"] = "soon"
        cfg["unknown_key"] = True
        r = self.run_proxy(yaml.safe_dump(cfg, sort_keys=False))
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertEqual(r.stdout.count('"event":"listening"'), 0)
        errors = [l for l in r.stderr.splitlines() if re.match(r"^.*c\.yaml:\d+:\d+: error: ", l)]
        self.assertGreaterEqual(len(errors), 3, r.stderr)
        self.assertIn("unknown_key", r.stderr)
        self.assertIn("header_timeout_ms", r.stderr)
        self.assertIn("allowlist[5]", r.stderr)

    def test_unreadable_yaml_exits_2(self):
        r = self.run_proxy("version: 1\nproxy: [\n")
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertRegex(r.stderr, r"c\.yaml:\d+:\d+: error")

    def test_usage_errors_exit_2(self):
        r = subprocess.run([h.PROXY_BINARY, "--bogus"], capture_output=True, text=True, timeout=10)
        self.assertEqual(r.returncode, 2)
        self.assertIn("usage", r.stderr)
        r = subprocess.run([h.PROXY_BINARY, "--config", "/nonexistent/x.yaml"], capture_output=True, text=True, timeout=10)
        self.assertEqual(r.returncode, 2)

    def test_check_config_accepts_a_good_file_and_the_shipped_configs(self):
        r = self.run_proxy(yaml.safe_dump(self.config()), "--check-config")
        self.assertEqual(r.returncode, 0, r.stderr)
        for shipped in (h.SOURCE_DIR / "config" / "wikifunctions.yaml",
                        h.SOURCE_DIR / "policies" / "wikifunctions" / "proxy.yaml"):
            r = subprocess.run([h.PROXY_BINARY, "--config", str(shipped), "--check-config"], capture_output=True,
                               text=True, timeout=10)
            self.assertEqual(r.returncode, 0, r.stderr)

    def test_allow_cidrs_override_is_warned_about_at_start(self):
        p = self.start_proxy()
        warnings = [e for e in p.events if e.get("level") == "warning" and "allow_cidrs" in json.dumps(e)]
        self.assertTrue(warnings, p.stdout_text())
        listening = [e for e in p.events if e.get("event") == "listening"][0]
        self.assertEqual(listening["proxy"], "127.0.0.1:%d" % p.port)


if __name__ == "__main__":
    unittest.main()
