"""egress-proxy's transparent listeners (proxy.capture dns/both): connections that reach
the proxy without any proxy protocol, because the client resolved an allowlisted name to
the proxy's address. TLS routed by the ClientHello's SNI, plain HTTP routed by Host, with
every check of the CONNECT and absolute-form paths, and the clients' own view: a
certificate verified end to end, curl with no proxy settings.

The proxy's transparent listeners sit on 127.0.0.53 (the address the DNS responder would
answer), the upstreams on 127.0.0.1 with the same ports, so a connection that reaches an
upstream went through the proxy. DNS steering itself (the responder) is in
transparent_dns_test.py; here curl's --resolve plays the resolver's part.

Run (ctest does this, in a loopback-only network namespace):
  unshare --net sh -c 'ip link set lo up && exec /usr/bin/python3 -m unittest -v transparent_test'
"""

import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness as h  # noqa: E402

PROXY_ADDRESS = "127.0.0.53"


class TransparentTest(h.ProxyTestCase):

    def transparent_config(self, **kw):
        cfg = self.config(**kw)
        cfg["proxy"].update({
            "capture": "both",
            "dns": {"listen_address": PROXY_ADDRESS, "answer_ipv4": PROXY_ADDRESS, "cluster_domains": []},
            "transparent": {"listen_address": PROXY_ADDRESS, "http_ports": [self.http.port]},
        })
        return cfg

    def start(self, **kw):
        p = self.start_proxy(self.transparent_config(**kw))
        listening = p.wait_event(lambda e: e.get("event") == "listening", 5, "the listening line")
        self.assertEqual(listening["capture"], "both")
        self.assertIn("%s:%d tls" % (PROXY_ADDRESS, self.tls.port), listening["transparent"])
        self.assertIn("%s:%d http" % (PROXY_ADDRESS, self.http.port), listening["transparent"])
        return p

    def raw(self, port):
        s = socket.create_connection((PROXY_ADDRESS, port), timeout=10)
        self.addCleanup(s.close)
        return s

    def closed_within(self, s, timeout=5) -> bool:
        s.settimeout(timeout)
        try:
            while True:
                if not s.recv(65536):
                    return True
        except ConnectionResetError:
            return True
        except socket.timeout:
            return False

    # -- TLS routed by SNI --

    def test_tls_by_sni_reaches_the_allowlisted_upstream_with_the_certificate_verified(self):
        p = self.start()
        ctx = self.pki.client_context(check_hostname=True)
        with ctx.wrap_socket(self.raw(self.tls.port), server_hostname="www.wikidata.org") as tls:
            tls.sendall(b"GET / HTTP/1.1\r\nHost: www.wikidata.org\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := tls.recv(65536):
                data += chunk
        self.assertIn(b"200 OK", data)
        self.assertIn(b"hello from upstream www.wikidata.org", data)
        d = p.wait_decision(host="www.wikidata.org")
        self.assertEqual((d["method"], d["verdict"], d["sni"], d["port"]), ("TLS", "allow", "www.wikidata.org", self.tls.port))
        self.assertEqual(d["upstream"], "127.0.0.1:%d" % self.tls.port)

    def test_tls_sni_not_allowlisted_missing_not_tls_or_ech_is_closed_before_a_byte_goes_upstream(self):
        p = self.start()
        cases = [
            (h.make_client_hello("example.org"), "host_not_allowed"),
            (h.make_client_hello(None), "sni_missing"),
            (b"GET / HTTP/1.1\r\nHost: www.wikidata.org\r\n\r\n", "not_tls"),
            (h.add_extension(h.make_client_hello("www.wikidata.org"), 0xFE0D, b"\x00" * 32), "ech_present"),
            (h.make_client_hello("internal.wikidata.org"), "address_denied"),
        ]
        for hello, reason in cases:
            with self.subTest(reason=reason):
                before = self.tls.count()
                s = self.raw(self.tls.port)
                s.sendall(hello)
                self.assertTrue(self.closed_within(s), "the proxy kept the connection open")
                d = p.wait_decision(reason=reason)
                self.assertEqual((d["verdict"], d["method"]), ("deny", "TLS"), d)
                self.assertEqual(self.tls.count(), before, "the upstream was connected")

    def test_tls_sni_on_a_port_the_entry_does_not_allow_is_refused(self):
        # www.wikidata.org may use both ports; wikifunctions.org only the HTTP one: its
        # TLS connection on the TLS port is refused by port, as a CONNECT would be.
        allow = [{"host": "www.wikidata.org", "ports": [self.tls.port, self.http.port]},
                 {"host": "wikifunctions.org", "ports": [self.http.port]}]
        p = self.start(allowlist=allow)
        s = self.raw(self.tls.port)
        s.sendall(h.make_client_hello("wikifunctions.org"))
        self.assertTrue(self.closed_within(s))
        self.assertEqual(p.wait_decision(host="wikifunctions.org")["reason"], "port_not_allowed")

    def test_curl_without_proxy_settings_goes_through_the_proxy(self):
        p = self.start()
        url = "https://www.wikidata.org:%d/" % self.tls.port
        r = subprocess.run(["curl", "-sS", "--noproxy", "*", "--cacert", str(self.pki.ca), "--resolve",
                            "www.wikidata.org:%d:%s" % (self.tls.port, PROXY_ADDRESS), url],
                           capture_output=True, timeout=30, env={"PATH": "/usr/bin:/bin"})
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn(b"hello from upstream www.wikidata.org", r.stdout)
        self.assertEqual(p.wait_decision(host="www.wikidata.org")["method"], "TLS")
        # a name off the allowlist: the connection is closed, curl fails
        r = subprocess.run(["curl", "-sS", "--noproxy", "*", "-k", "--resolve",
                            "example.org:%d:%s" % (self.tls.port, PROXY_ADDRESS), "https://example.org:%d/" % self.tls.port],
                           capture_output=True, timeout=30, env={"PATH": "/usr/bin:/bin"})
        self.assertNotEqual(r.returncode, 0)
        self.assertEqual(p.wait_decision(host="example.org")["reason"], "host_not_allowed")

    # -- plain HTTP routed by Host --

    def http_request(self, request: bytes):
        c = h.RawClient(self.raw(self.http.port))
        c.send(request)
        return c, c.read_head()

    def test_plain_http_by_host_is_forwarded_and_off_list_hosts_are_403(self):
        p = self.start()
        a = b"www.wikidata.org:%d" % self.http.port
        c, (status, headers) = self.http_request(b"GET /path?q=1 HTTP/1.1\r\nHost: %s\r\n\r\n" % a)
        self.assertEqual(status, 200, headers)
        up = self.http.connection(-1)
        h.wait_until(lambda: b"\r\n\r\n" in bytes(up.raw), 5, what="the request upstream")
        self.assertTrue(bytes(up.raw).startswith(b"GET /path?q=1 HTTP/1.1\r\nHost: %s\r\n" % a), bytes(up.raw))
        d = p.wait_decision(host="www.wikidata.org", method="GET")
        self.assertEqual(d["verdict"], "allow")
        before = self.http.count()
        c, (status, headers) = self.http_request(b"GET / HTTP/1.1\r\nHost: example.org:%d\r\n\r\n" % self.http.port)
        self.assertEqual((status, headers.get("x-egress-denied")), (403, "host_not_allowed"))
        self.assertEqual(self.http.count(), before)

    def test_plain_http_refuses_proxy_forms_a_missing_host_and_a_port_other_than_the_listeners(self):
        self.start()
        a = b"www.wikidata.org:%d" % self.http.port
        cases = [
            (b"GET http://%s/ HTTP/1.1\r\nHost: %s\r\n\r\n" % (a, a), "transparent_absolute_form"),
            (b"CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (a, a), "transparent_connect"),
            (b"GET / HTTP/1.1\r\n\r\n", "host_missing"),
            (b"GET / HTTP/1.0\r\n\r\n", "host_missing"),
            (b"GET / HTTP/1.1\r\nHost: www.wikidata.org:%d\r\n\r\n" % self.tls.port, "host_mismatch"),
            (b"GET / HTTP/1.1\r\nHost: www.wikidata.org\r\n\r\n", "host_mismatch"),  # port 80 implied
            (b"GET / HTTP/1.1\r\nHost: %s\r\nHost: %s\r\n\r\n" % (a, a), "host_duplicate"),
        ]
        before = self.http.count()
        for request, reason in cases:
            with self.subTest(reason=reason, request=request[:40]):
                c, (status, headers) = self.http_request(request)
                self.assertEqual((status, headers.get("x-egress-denied")), (400, reason), headers)
        self.assertEqual(self.http.count(), before, "a refused request reached the upstream")

    def test_a_port_below_1024_without_privileges_is_refused_with_the_sysctl_named_and_works_with_it(self):
        cfg = self.transparent_config(allowlist=[{"host": "www.wikidata.org", "ports": [443]}])
        shared = Path(tempfile.mkdtemp(prefix="egress-low-port-"))  # readable by the unprivileged user
        self.addCleanup(shutil.rmtree, shared, True)
        os.chmod(shared, 0o755)
        path = shared / "proxy.yaml"
        path.write_text(h.yaml.safe_dump(cfg))
        os.chmod(path, 0o644)
        sysctl = Path("/proc/sys/net/ipv4/ip_unprivileged_port_start")
        old = sysctl.read_text().strip()
        self.addCleanup(sysctl.write_text, old)
        sysctl.write_text("1024")
        cmd = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", "--bounding-set=-all",
               h.PROXY_BINARY, "--config", str(path), "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"]
        r = subprocess.run(cmd, capture_output=True, timeout=20)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn(b"127.0.0.53:443", r.stderr)
        self.assertIn(b"net.ipv4.ip_unprivileged_port_start", r.stderr)
        # the namespaced sysctl the chart sets: the same unprivileged process binds 443
        sysctl.write_text("0")
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            line = b""
            for _ in range(5):  # warnings (allow_cidrs) come first
                line = p.stdout.readline()
                if not line or b'"event":"listening"' in line:
                    break
            self.assertIn(b'"event":"listening"', line, p.stderr.read1(4096) if p.poll() is not None else b"")
            self.assertIn(b"127.0.0.53:443 tls", line)
        finally:
            p.terminate()
            p.wait(10)

    def test_env_capture_opens_no_transparent_listener(self):
        self.start_proxy()  # capture env (the default)
        with self.assertRaises(OSError):
            socket.create_connection((PROXY_ADDRESS, self.tls.port), timeout=2).close()


if __name__ == "__main__":
    unittest.main()
