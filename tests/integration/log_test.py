"""The built egress-proxy's log never stalls it: a reader of its stdout pipe that stops
reading for 10 s under load costs log lines (dropped whole, counted in
egress_proxy_log_lines_dropped_total and reported by a log_dropped line), never service:
requests, /healthz and tunnels keep working, and every line that gets out is whole JSON.

Run (ctest does this, in a PID namespace too):
  unshare --net sh -c 'ip link set lo up && exec /usr/bin/python3 -m unittest -v log_test'
"""

import json
import subprocess
import re
import sys
import threading
import time
import unittest
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness as h  # noqa: E402


class PausableProxy(h.Proxy):
    """A Proxy whose stdout reader can be stopped (the pipe then fills) and resumed."""

    def __init__(self, *args, **kw):
        self.reading = threading.Event()
        self.reading.set()
        self.partial_lines = []  # lines read without their '\n' (must stay empty)
        super().__init__(*args, **kw)

    def _read_stdout(self):
        f = self.proc.stdout
        while True:
            self.reading.wait()
            raw = f.readline()
            if not raw:
                break
            if not raw.endswith(b"\n"):
                self.partial_lines.append(raw)
            line = raw.decode("utf-8", "replace").rstrip("\n")
            with self.cond:
                self.lines.append(line)
                try:
                    obj = json.loads(line)
                    if isinstance(obj, dict):
                        self.events.append(obj)
                    else:
                        self.bad_lines.append(line)
                except ValueError:
                    self.bad_lines.append(line)
                self.cond.notify_all()
        with self.cond:
            self._eof = True
            self.cond.notify_all()


def metric(body: bytes, name: str) -> float:
    m = re.search(rb"^%s (\S+)$" % re.escape(name.encode()), body, re.M)
    if not m:
        raise AssertionError("no %s in /metrics" % name)
    return float(m.group(1))


def decisions_total(body: bytes) -> float:
    return sum(float(v) for v in re.findall(rb"^egress_proxy_decisions_total\{[^}]*\} (\S+)$", body, re.M))


class LogStallTest(h.ProxyTestCase):

    def start_pausable(self, buffer_bytes: int) -> PausableProxy:
        cfg = self.config()
        cfg["proxy"]["log"] = {"buffer_bytes": buffer_bytes}
        directory = self.dir / ("proxy%d" % len(self._proxies))
        directory.mkdir()
        p = PausableProxy(directory, yaml.safe_dump(cfg, sort_keys=False))
        self._proxies.append(p)
        self.proxy = p
        return p

    def denied_connect(self, limit: float) -> float:
        """A CONNECT the allowlist refuses (one decision line); returns how long it took."""
        t0 = time.monotonic()
        c = self.client()
        c.send(self.connect_request("example.org:443"))
        status, _ = c.read_head(timeout=limit)
        self.assertEqual(status, 403)
        c.close()
        self._clients.remove(c)
        return time.monotonic() - t0

    def test_a_stalled_stdout_reader_costs_log_lines_not_service(self):
        self.tls.mode = "echo"
        p = self.start_pausable(16384)
        early = self.tls_via_proxy("www.wikidata.org")  # a tunnel open before the stall
        early.send(b"before")
        early.recv_until(lambda b: b == b"before")
        early.app_in.clear()

        p.reading.clear()  # the reader stops: the pipe (64 KiB) and then the buffer fill
        stall_start = time.monotonic()
        requests, slowest, checks = 0, 0.0, 0
        next_check = stall_start
        authority = b"www.wikidata.org:%d" % self.http.port
        while time.monotonic() - stall_start < 10:
            slowest = max(slowest, self.denied_connect(limit=3))
            requests += 1
            if time.monotonic() >= next_check:  # once a second: admin, a plain request, both tunnels
                next_check += 1
                checks += 1
                t0 = time.monotonic()
                status, body = p.admin_get("/healthz", timeout=2)
                self.assertEqual((status, body), (200, b"ok\n"))
                c = self.client()
                c.send(b"GET http://%s/ HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % (authority, authority))
                self.assertEqual(c.read_response(timeout=3)[0], 200)
                msg = b"ping %d" % checks
                early.send(msg)
                self.assertEqual(early.recv_until(lambda b: len(b) >= len(msg), timeout=3), msg)
                early.app_in.clear()
                fresh = self.tls_via_proxy("www.wikidata.org")
                fresh.send(b"fresh")
                self.assertEqual(fresh.recv_until(lambda b: len(b) >= 5, timeout=3), b"fresh")
                fresh.close()
                slowest = max(slowest, time.monotonic() - t0)
        _, stalled_metrics = p.admin_get("/metrics")
        dropped_during_stall = metric(stalled_metrics, "egress_proxy_log_lines_dropped_total")
        print("\n    stall: %d denied CONNECTs + %d checks in 10 s, slowest %.3f s, %d lines dropped, "
              "%d bytes buffered" % (requests, checks, slowest, dropped_during_stall,
                                     metric(stalled_metrics, "egress_proxy_log_buffered_bytes")), file=sys.stderr)
        self.assertGreater(dropped_during_stall, 0, "the pipe and the buffer should have filled")
        self.assertLessEqual(metric(stalled_metrics, "egress_proxy_log_buffered_bytes"), 16384 + 4096)
        self.assertGreaterEqual(checks, 9)

        p.reading.set()  # the reader is back: the buffer drains, the drop is reported
        report = p.wait_event(lambda e: e.get("event") == "log_dropped", 10, "a log_dropped line")
        self.assertEqual(report.get("level"), "warning")
        self.assertGreater(report.get("lines", 0), 0)
        # Everything drained: a decision made now gets out, nothing waits, and every line
        # the proxy decided is either received or counted as dropped.
        mark = p.mark()
        c = self.client()
        c.send(self.connect_request("example.org:443"))
        c.read_head()
        p.wait_event(lambda e: e.get("event") == "decision" and e.get("client") == c.local, 10,
                     "the decision of a request after the stall", start=mark)
        _, after = p.admin_get("/metrics")
        self.assertEqual(metric(after, "egress_proxy_log_buffered_bytes"), 0)
        dropped = metric(after, "egress_proxy_log_lines_dropped_total")
        with p.cond:
            reported = sum(e.get("lines", 0) for e in p.events if e.get("event") == "log_dropped")
            received = len([e for e in p.events if e.get("event") == "decision"])
        self.assertEqual(reported, dropped, "every dropped line is reported")
        self.assertEqual(received + dropped, decisions_total(after), "decision lines received + dropped")
        self.assertEqual(p.partial_lines, [], "a line was cut")
        early.close()

    def test_the_log_buffer_size_is_checked_by_the_loader(self):
        cfg = self.config()
        cfg["proxy"]["log"] = {"buffer_bytes": 100}
        path = self.dir / "bad.yaml"
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        r = subprocess.run([h.PROXY_BINARY, "--check-config", str(path)], capture_output=True, text=True, timeout=10)
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("proxy.log.buffer_bytes: integer 100 is out of range (4096-67108864)", r.stderr)


if __name__ == "__main__":
    unittest.main()
