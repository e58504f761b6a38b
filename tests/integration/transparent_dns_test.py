"""The allowlisting DNS responder (proxy.capture: dns, issue #11) queried as clients query
it: raw UDP and TCP messages from Python sockets (RFC 1035, RFC 7766 framing) and glibc's
getaddrinfo with /etc/resolv.conf naming the responder (a bind mount private to this
test's mount namespace). A private dnsmasq is the cluster DNS; its query log proves
which names were forwarded and that nothing else left the responder.

Two ways the responder runs, same checks:
- ``StandaloneResponderTest``: the responder room alone (egress-dns-responder-harness,
  tests/support/dns_responder_main.cpp, built from the same proxy/src/dns_responder.cpp).
- ``ProxyResponderTest``: egress-proxy itself with ``proxy.capture: dns`` and
  ``proxy.dns.*``. SKIPPED with a message until server.cpp starts the responder (it
  probes the DNS port first); once wired, these run unchanged.

The responder listens on 127.0.0.53:53 (root in the test's network namespace, as ctest
runs it), so glibc, which always asks port 53, can use it.

Run (ctest does this, in a PID namespace too):
  unshare --net sh -c 'ip link set lo up && exec /usr/bin/python3 -m unittest -v transparent_dns_test'
"""

import json
import os
import random
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest
from pathlib import Path
from typing import Callable, Optional

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness as h  # noqa: E402

HARNESS = os.environ.get("EGRESS_DNS_HARNESS") or str(h.SOURCE_DIR / "build" / "tests" / "egress-dns-responder-harness")
DNS_HOST = "127.0.0.53"
DNS_PORT = 53

A, AAAA, TXT, SRV, SVCB, HTTPS = 1, 28, 16, 33, 64, 65
NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP = 0, 1, 2, 3, 4

#: Fields every dns line carries (proxy/include/egress/proxy/log.hpp, dns_record).
DNS_FIELDS = ("time", "event", "client", "transport", "qname", "qtype", "verdict", "reason", "rcode", "total_ms")

CLUSTER_RECORDS = {
    "kube-dns.kube-system.svc.cluster.local": ["10.96.0.10"],
    "web.default.svc.cluster.local": ["10.96.1.1"],
}


# --------------------------------------------------------------------------------------
# DNS messages
# --------------------------------------------------------------------------------------

def query(name: str, qtype: int = A, qid: Optional[int] = None, edns: Optional[int] = None, flags: int = 0x0100) -> bytes:
    qid = random.randrange(65536) if qid is None else qid
    labels = [l for l in name.rstrip(".").split(".") if l]
    q = b"".join(bytes([len(l)]) + l.encode() for l in labels) + b"\x00" + struct.pack(">HH", qtype, 1)
    ar = 1 if edns else 0
    out = struct.pack(">HHHHHH", qid, flags, 1, 0, 0, ar) + q
    if edns:
        out += b"\x00" + struct.pack(">HHIH", 41, edns, 0, 0)
    return out


def _skip_name(b: bytes, at: int) -> int:
    while True:
        n = b[at]
        if n & 0xC0 == 0xC0:
            return at + 2
        if n == 0:
            return at + 1
        at += n + 1


def parse_reply(b: bytes) -> dict:
    qid, flags, qd, an, ns, ar = struct.unpack(">HHHHHH", b[:12])
    at = 12
    for _ in range(qd):
        at = _skip_name(b, at) + 4
    answers = []
    for _ in range(an):
        at = _skip_name(b, at)
        rtype, _cls, ttl, rdlen = struct.unpack(">HHIH", b[at:at + 10])
        at += 10
        data = b[at:at + rdlen]
        at += rdlen
        if rtype == A:
            answers.append(("A", ttl, socket.inet_ntop(socket.AF_INET, data)))
        elif rtype == AAAA:
            answers.append(("AAAA", ttl, socket.inet_ntop(socket.AF_INET6, data)))
        else:
            answers.append((rtype, ttl, data))
    return {"id": qid, "rcode": flags & 0xF, "aa": bool(flags & 0x0400), "ra": bool(flags & 0x0080),
            "tc": bool(flags & 0x0200), "qr": bool(flags & 0x8000), "qd": qd, "an": an, "ns": ns, "ar": ar,
            "answers": answers, "addresses": [a[2] for a in answers if a[0] in ("A", "AAAA")]}


def udp_ask(packet: bytes, timeout: float = 3.0) -> Optional[bytes]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(packet, (DNS_HOST, DNS_PORT))
        try:
            return s.recvfrom(65535)[0]
        except socket.timeout:
            return None


def tcp_ask(packets: list, timeout: float = 5.0) -> list:
    """Sends every packet framed in one write (pipelined) and reads as many answers."""
    with socket.create_connection((DNS_HOST, DNS_PORT), timeout=timeout) as s:
        s.sendall(b"".join(struct.pack(">H", len(p)) + p for p in packets))
        out = []
        buf = b""
        while len(out) < len(packets):
            chunk = s.recv(65535)
            if not chunk:
                break
            buf += chunk
            while len(buf) >= 2 and len(buf) >= 2 + struct.unpack(">H", buf[:2])[0]:
                n = struct.unpack(">H", buf[:2])[0]
                out.append(buf[2:2 + n])
                buf = buf[2 + n:]
        return out


# --------------------------------------------------------------------------------------
# The responder alone
# --------------------------------------------------------------------------------------

class StandaloneResponder:
    """egress-dns-responder-harness on a config; stdout lines parsed as JSON."""

    def __init__(self, directory: Path, config_text: str):
        self.dir = Path(directory)
        self.config_path = self.dir / "proxy.yaml"
        self.config_path.write_text(config_text)
        self.events: list = []
        self.bad_lines: list = []
        self.cond = threading.Condition()
        self.proc = subprocess.Popen([HARNESS, "--config", str(self.config_path)], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=h._die_with_parent)
        self._eof = False
        threading.Thread(target=self._read, daemon=True).start()
        self.wait_event(lambda e: e.get("event") == "dns_listening", what="the dns_listening line")

    def _read(self):
        for raw in self.proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            with self.cond:
                try:
                    obj = json.loads(line)
                    (self.events if isinstance(obj, dict) else self.bad_lines).append(obj if isinstance(obj, dict) else line)
                except ValueError:
                    self.bad_lines.append(line)
                self.cond.notify_all()
        with self.cond:
            self._eof = True
            self.cond.notify_all()

    def wait_event(self, predicate: Callable[[dict], bool], timeout: float = 10, what: str = "an event") -> dict:
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for e in self.events:
                    if predicate(e):
                        return e
                if self._eof:
                    raise AssertionError("egress-dns-responder-harness exited (%s) waiting for %s:\n%s"
                                         % (self.proc.poll(), what, self.proc.stderr.read().decode(errors="replace")))
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("timed out waiting for %s" % what)
                self.cond.wait(min(left, 0.1))

    def signal(self, sig) -> None:
        self.proc.send_signal(sig)

    def metrics(self) -> Optional[str]:
        return None  # no admin listener

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        for f in (self.proc.stdout, self.proc.stderr):
            try:
                f.close()
            except (OSError, ValueError):
                pass
        return self.proc.returncode


# --------------------------------------------------------------------------------------
# The checks, for either way of running the responder
# --------------------------------------------------------------------------------------

class ResponderChecks:
    """Mixin: subclasses define start_responder(config_dict) -> an object with `events`,
    `wait_event`, `signal`, `metrics()`, `stop()`, `config_path`."""

    @classmethod
    def setUpClass(cls):
        cls.class_dir = Path(tempfile.mkdtemp(prefix="egress-it-%s-" % cls.__name__))
        cls.dns = h.Dnsmasq(cls.class_dir / "dns", CLUSTER_RECORDS, local=("cluster.local",))

    @classmethod
    def tearDownClass(cls):
        cls.dns.stop()
        shutil.rmtree(cls.class_dir, ignore_errors=True)

    def setUp(self):
        self.dir = Path(tempfile.mkdtemp(prefix="t-", dir=self.class_dir))
        self.responder = self.start_responder(self.config())

    def tearDown(self):
        rc = self.responder.stop()
        self.assertEqual(rc, 0, "exit status after SIGTERM")
        self.assertEqual(getattr(self.responder, "bad_lines", []), [], "stdout lines that are not JSON")
        for d in self.dns_lines():
            missing = [f for f in DNS_FIELDS if f not in d]
            self.assertEqual(missing, [], "dns line without %s: %r" % (missing, d))
            self.assertIn(d["verdict"], ("allow", "deny"), d)

    def config(self, allowlist=None, dns_extra=None) -> dict:
        dns = {"listen_address": DNS_HOST, "port": DNS_PORT, "answer_ipv4": "127.0.0.1", "ttl_s": 5,
               "cluster_domains": ["cluster.local"], "cluster_dns": [self.dns.server()]}
        dns.update(dns_extra or {})
        return {"version": 1, "kind": "proxy",
                "proxy": {"mode": "sidecar", "capture": "dns", "dns": dns,
                          "transparent": {"listen_address": "127.0.0.3", "http_ports": []},
                          "resolver": {"servers": [self.dns.server()], "timeout_ms": 1000}},
                "allowlist": allowlist if allowlist is not None else
                [{"host": "www.wikidata.org", "ports": [8443]}, {"host": "*.wikimedia.org", "ports": [8443]}],
                "allow_cidrs": ["127.0.0.0/8"]}

    def dns_lines(self, **match) -> list:
        return [e for e in list(self.responder.events) if e.get("event") == "dns"
                and all(e.get(k) == v for k, v in match.items())]

    def wait_dns_line(self, **match) -> dict:
        return self.responder.wait_event(lambda e: e.get("event") == "dns" and all(e.get(k) == v for k, v in match.items()),
                                         what="a dns line with %r" % (match,))

    def forwarded(self, name: str) -> list:
        self.dns.sync()
        return self.dns.queries(name)

    # -- the checks --

    def test_allowlisted_names_get_the_proxy_address_over_udp_and_tcp(self):
        r = parse_reply(udp_ask(query("www.wikidata.org", A, 0x1111)))
        self.assertEqual((r["id"], r["rcode"], r["qr"], r["aa"], r["ra"], r["tc"]), (0x1111, NOERROR, True, True, False, False))
        self.assertEqual(r["answers"], [("A", 5, "127.0.0.1")])
        r = parse_reply(udp_ask(query("UPLOAD.Wikimedia.ORG.", A)))
        self.assertEqual(r["addresses"], ["127.0.0.1"])
        t = [parse_reply(x) for x in tcp_ask([query("www.wikidata.org", A, 1), query("commons.wikimedia.org", A, 2)])]
        self.assertEqual([(x["id"], x["addresses"]) for x in t], [(1, ["127.0.0.1"]), (2, ["127.0.0.1"])])
        line = self.wait_dns_line(qname="www.wikidata.org", transport="tcp")
        self.assertEqual((line["qtype"], line["verdict"], line["reason"], line["rcode"]), ("A", "allow", "allowlisted", "NOERROR"))
        self.assertEqual(self.forwarded("www.wikidata.org"), [])

    def test_aaaa_without_answer_ipv6_and_https_svcb_are_nodata(self):
        for qtype, reason in ((AAAA, "allowlisted_nodata"), (HTTPS, "https_record_withheld"), (SVCB, "https_record_withheld")):
            r = parse_reply(udp_ask(query("www.wikidata.org", qtype)))
            self.assertEqual((r["rcode"], r["an"], r["aa"]), (NOERROR, 0, True), qtype)
            self.wait_dns_line(qname="www.wikidata.org", reason=reason)
        self.assertEqual(self.forwarded("www.wikidata.org"), [])

    def test_other_names_are_nxdomain_and_no_query_leaves(self):
        names = ["example.org", "evilwikidata.org", "www.wikidata.org.evil.example",
                 "aGVsbG8gd29ybGQ.tunnel.attacker.example", "evilcluster.local"]
        self.dns.sync()
        before = len(self.dns.queries())
        for name in names:
            r = parse_reply(udp_ask(query(name, A)))
            self.assertEqual((r["rcode"], r["an"]), (NXDOMAIN, 0), name)
        t = parse_reply(tcp_ask([query("exfil.attacker.example", TXT)])[0])
        self.assertEqual(t["rcode"], NXDOMAIN)
        self.dns.sync()
        leaked = [q for q in self.dns.queries()[before:] if not q[1].endswith(".invalid")]  # but sync markers
        self.assertEqual(leaked, [], "queries that reached the cluster DNS")
        line = self.wait_dns_line(qname="example.org")
        self.assertEqual((line["verdict"], line["reason"], line["rcode"], line["transport"]),
                         ("deny", "name_not_allowed", "NXDOMAIN", "udp"))

    def test_cluster_names_are_forwarded_and_answered_as_the_cluster_dns_answers(self):
        r = parse_reply(udp_ask(query("kube-dns.kube-system.svc.cluster.local", A, 0x2222)))
        self.assertEqual((r["id"], r["rcode"], r["addresses"]), (0x2222, NOERROR, ["10.96.0.10"]))
        self.assertTrue(r["ra"], "dnsmasq's own flags relayed")
        self.assertEqual(self.forwarded("kube-dns.kube-system.svc.cluster.local"),
                         [("A", "kube-dns.kube-system.svc.cluster.local")])
        missing = parse_reply(udp_ask(query("nope.default.svc.cluster.local", A, edns=1232)))
        self.assertEqual(missing["rcode"], NXDOMAIN)
        # a search-list expansion of an allowlisted name is forwarded, not answered
        expansion = parse_reply(udp_ask(query("www.wikidata.org.default.svc.cluster.local", A)))
        self.assertEqual((expansion["rcode"], expansion["addresses"]), (NXDOMAIN, []))
        self.assertEqual(len(self.forwarded("www.wikidata.org.default.svc.cluster.local")), 1)
        t = [parse_reply(x) for x in tcp_ask([query("web.default.svc.cluster.local", A, 7),
                                              query("kube-dns.kube-system.svc.cluster.local", A, 8)])]
        self.assertEqual([(x["id"], x["addresses"]) for x in t], [(7, ["10.96.1.1"]), (8, ["10.96.0.10"])])
        self.assertEqual(len(self.forwarded("web.default.svc.cluster.local")), 1)
        line = self.wait_dns_line(qname="web.default.svc.cluster.local")
        self.assertEqual((line["verdict"], line["reason"], line["transport"], line["upstream"]),
                         ("allow", "cluster_forward", "tcp", self.dns.server()))

    def test_malformed_queries_and_responses(self):
        two = bytearray(query("www.wikidata.org", A, 0x3333))
        two[5] = 2
        r = parse_reply(udp_ask(bytes(two)))
        self.assertEqual((r["id"], r["rcode"], r["qd"]), (0x3333, FORMERR, 0))
        notify = query("www.wikidata.org", 6, flags=0x2000)
        self.assertEqual(parse_reply(udp_ask(notify))["rcode"], NOTIMP)
        self.assertIsNone(udp_ask(query("www.wikidata.org", A, flags=0x8100), timeout=0.5), "a response was answered")
        self.wait_dns_line(reason="dropped", detail="response")
        self.wait_dns_line(reason="formerr", detail="qdcount_not_one")

    def test_reload_changes_the_answers_of_the_next_query(self):
        self.assertEqual(parse_reply(udp_ask(query("api.example.net", A)))["rcode"], NXDOMAIN)
        cfg = self.config(allowlist=[{"host": "api.example.net", "ports": [8443]}])
        tmp = self.responder.config_path.with_suffix(".tmp")
        tmp.write_text(yaml.safe_dump(cfg, sort_keys=False))
        os.replace(tmp, self.responder.config_path)
        self.responder.signal(signal.SIGHUP)
        self.responder.wait_event(lambda e: e.get("event") == "reloaded", what="the reloaded line")
        self.assertEqual(parse_reply(udp_ask(query("api.example.net", A)))["addresses"], ["127.0.0.1"])
        self.assertEqual(parse_reply(udp_ask(query("www.wikidata.org", A)))["rcode"], NXDOMAIN)

    def test_glibc_getaddrinfo_through_the_responder(self):
        """An unmodified client: glibc's stub resolver with resolv.conf naming the responder.
        NODATA must come back as "no address" at once (AA=1: with AA=0 and RA=0 glibc
        takes it for a referral and gives up on the server: "temporary failure")."""
        resolv = self.dir / "resolv.conf"
        resolv.write_text("nameserver %s\noptions timeout:2 attempts:1\n" % DNS_HOST)
        unshare = shutil.which("unshare")
        if os.geteuid() != 0 or not unshare:
            self.skipTest("needs root and unshare(1) for a private mount namespace")
        code = r"""
import json, socket, time
out = {}
for key, name, family in (("a", "www.wikidata.org", socket.AF_INET), ("aaaa", "www.wikidata.org", socket.AF_INET6),
                          ("other", "example.org", socket.AF_UNSPEC), ("cluster", "web.default.svc.cluster.local", socket.AF_INET)):
    t = time.monotonic()
    try:
        value = sorted({a[4][0] for a in socket.getaddrinfo(name, 443, family, socket.SOCK_STREAM)})
    except socket.gaierror as e:
        value = "gaierror %d" % e.errno
    out[key] = [value, time.monotonic() - t]
print(json.dumps(out))
"""
        # The client runs in a mount namespace of its own (unshare --mount makes it private),
        # so the bind mount never reaches anyone else's /etc/resolv.conf.
        res = subprocess.run([unshare, "--mount", "sh", "-c", 'mount --bind "$1" /etc/resolv.conf && exec "$2" -c "$3"',
                              "sh", str(resolv), sys.executable, code], capture_output=True, timeout=30)
        self.assertEqual(res.returncode, 0, res.stderr.decode(errors="replace"))
        got = json.loads(res.stdout)
        self.assertEqual(got["a"][0], ["127.0.0.1"])
        self.assertEqual(got["aaaa"][0], "gaierror %d" % socket.EAI_NODATA, got)  # no address of that family
        self.assertEqual(got["other"][0], "gaierror %d" % socket.EAI_NONAME, got)  # does not exist
        self.assertEqual(got["cluster"][0], ["10.96.1.1"])
        for key, (_, took) in got.items():
            self.assertLess(took, 1.0, "%s took %.2f s (retries or timeouts instead of a final answer)" % (key, took))
        self.dns.sync()
        self.assertEqual(self.dns.queries("example.org"), [])


class StandaloneResponderTest(ResponderChecks, unittest.TestCase):
    """The responder room alone (egress-dns-responder-harness)."""

    def start_responder(self, config: dict):
        if not Path(HARNESS).exists():
            self.skipTest("%s not built" % HARNESS)
        return StandaloneResponder(self.dir, yaml.safe_dump(config, sort_keys=False))


    def test_port_53_without_privileges_fails_with_a_clear_message(self):
        setpriv = shutil.which("setpriv")
        if os.geteuid() != 0 or not setpriv:
            self.skipTest("needs root and setpriv(1) to run the harness as nobody")
        self.responder.stop()  # it holds the port; the unprivileged one must fail on EACCES, not EADDRINUSE
        directory = Path(tempfile.mkdtemp(prefix="nobody-"))
        self.addCleanup(shutil.rmtree, directory, True)
        config = directory / "proxy.yaml"
        config.write_text(yaml.safe_dump(self.config(), sort_keys=False))
        os.chmod(directory, 0o755)
        os.chmod(config, 0o644)
        res = subprocess.run([setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", HARNESS, "--config", str(config)],
                             capture_output=True, timeout=20)
        self.assertEqual(res.returncode, 1, res.stderr)
        err = res.stderr.decode()
        for part in ("dns responder", "%s:%d" % (DNS_HOST, DNS_PORT), "Permission denied",
                     "net.ipv4.ip_unprivileged_port_start", "CAP_NET_BIND_SERVICE"):
            self.assertIn(part, err)


class ProxyResponderTest(ResponderChecks, unittest.TestCase):
    """egress-proxy itself with proxy.capture dns: it answers on
    proxy.dns.listen_address:port (skipped, saying so, if a binary without the responder
    is tested)."""

    def start_responder(self, config: dict):
        directory = self.dir / "proxy"
        directory.mkdir()
        p = h.Proxy(directory, yaml.safe_dump(config, sort_keys=False))
        p.metrics = lambda: p.admin_get("/metrics")[1].decode()
        if udp_ask(query("www.wikidata.org", A), timeout=1.5) is None:
            p.stop()
            self.skipTest("egress-proxy does not answer DNS on %s:%d with capture dns: server.cpp does not start "
                          "dns_responder yet (issue #11 wiring)" % (DNS_HOST, DNS_PORT))
        return p

    def tearDown(self):
        try:
            if self.responder is not None:
                def counted():
                    m = self.responder.metrics()
                    return sum(int(line.rsplit(" ", 1)[1]) for line in m.splitlines()
                               if line.startswith("egress_proxy_dns_queries_total{"))
                # lines leave once per event-loop turn and are read by another thread:
                # the count may be ahead of the lines seen for a moment, never for long
                deadline = time.monotonic() + 3
                while counted() != len(self.dns_lines()) and time.monotonic() < deadline:
                    time.sleep(0.05)
                self.assertEqual(counted(), len(self.dns_lines()), "one metric count per dns line")
        finally:
            super().tearDown()

    def setUp(self):
        self.responder = None
        super().setUp()


if __name__ == "__main__":
    unittest.main()
