"""Every ClientHello of a tunnel's handshake is checked (issue #10 item 1), end to end with
the built egress-proxy, a real OpenSSL server (`openssl s_server -groups P-256`, so a
client offering only an X25519 key share gets a HelloRetryRequest, RFC 8446 §4.1.4) and
real clients: openssl s_client through CONNECT completes its handshake after the HRR;
a second hello naming another host, or none, is refused before it reaches the server.
The same for the transparent (SNI-routed) path.

Run (ctest does this, in a loopback-only network namespace):
  unshare --net sh -c 'ip link set lo up && exec /usr/bin/python3 -m unittest -v hrr_test'
"""

import socket
import subprocess
import sys
import time
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness as h  # noqa: E402


class HelloRetryTest(h.ProxyTestCase):

    def setUp(self):
        super().setUp()
        self.port = h.free_port()
        cert, key = self.pki.leaves["www.wikidata.org"]
        self.log = open(self.dir / "s_server.log", "wb")
        self.addCleanup(self.log.close)
        # -groups P-256: an X25519 key share (OpenSSL's and Python's default) forces an HRR.
        self.server = subprocess.Popen([h.OPENSSL, "s_server", "-accept", "127.0.0.1:%d" % self.port, "-cert", str(cert),
                                        "-key", str(key), "-groups", "P-256", "-tls1_3", "-www", "-servername_fatal",
                                        "-servername", "www.wikidata.org", "-cert2", str(cert), "-key2", str(key)],
                                       stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log)
        self.addCleanup(self.server.wait, 5)
        self.addCleanup(self.server.terminate)
        h.wait_until(lambda: self._listening(), 10, what="s_server to listen")
        self.start_proxy(allowlist=[{"host": "www.wikidata.org", "ports": [self.port]},
                                    {"host": "wikifunctions.org", "ports": [self.port]}])

    def _listening(self):
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
            return True
        except OSError:
            return False

    def test_a_real_handshake_through_an_hrr_completes_and_is_checked_to_the_end(self):
        r = subprocess.run([h.OPENSSL, "s_client", "-proxy", "127.0.0.1:%d" % self.proxy.port, "-connect",
                            "www.wikidata.org:%d" % self.port, "-servername", "www.wikidata.org", "-groups",
                            "X25519:P-256", "-CAfile", str(self.pki.ca), "-verify_return_error", "-msg", "-ign_eof"],
                           input=b"GET / HTTP/1.0\r\n\r\n", capture_output=True, timeout=30)
        self.assertIn(b"HTTP/1.0 200 ok", r.stdout, r.stderr[-2000:])
        # the server really asked again: two ClientHellos in s_client's message trace
        trace = r.stdout + r.stderr
        self.assertEqual(trace.count(b"ClientHello"), 2, trace[-4000:])
        self.assertIn(b"cf 21 ad 74 e5 9a 61 11", trace, "no HelloRetryRequest random in the trace")
        d = self.proxy.wait_decision(host="www.wikidata.org")
        self.assertEqual((d["verdict"], d["end"]), ("allow", "eof"), d)

    def second_hello_after_hrr(self, connect_host, first, second):
        """Sends `first` through a CONNECT tunnel, waits for the server's HRR, then a CCS
        and `second`. Returns (closed by the proxy, bytes the client received)."""
        c, status, headers = self.connect("%s:%d" % (connect_host, self.port))
        self.assertEqual(status, 200, headers)
        c.send(first)
        got = bytearray()
        c.sock.settimeout(5)
        while len(got) < 5 or len(got) < 5 + int.from_bytes(got[3:5], "big"):
            data = c.sock.recv(65536)
            self.assertTrue(data, "the server closed instead of answering the first hello")
            got += data
        self.assertEqual(got[0], 22, "not a handshake record")
        self.assertEqual(bytes(got[11:43]), HRR_RANDOM, "the server's answer is not a HelloRetryRequest")
        c.send(b"\x14\x03\x03\x00\x01\x01" + second)
        return c.closed_within(5)

    def test_a_second_hello_with_another_or_no_sni_is_refused_before_the_server(self):
        first = h.make_client_hello("www.wikidata.org")
        for second, reason in ((h.make_client_hello("wikifunctions.org"), "sni_mismatch"),
                               (h.make_client_hello(None), "sni_missing")):
            with self.subTest(reason=reason):
                mark = len(self.proxy.decisions(reason=reason))
                self.assertTrue(self.second_hello_after_hrr("www.wikidata.org", first, second),
                                "the proxy kept the tunnel open after a second hello naming another host")
                h.wait_until(lambda: len(self.proxy.decisions(reason=reason)) > mark, 5, what="a %s line" % reason)
                d = self.proxy.decisions(reason=reason)[-1]
                self.assertEqual((d["verdict"], d["end"]), ("deny", "refused"), d)
        self.server.terminate()
        self.server.wait(5)
        log = (self.dir / "s_server.log").read_bytes()
        self.assertNotIn(b"wikifunctions.org", log, "the second hello's name reached the server")
        status, body = self.proxy.admin_get("/metrics")
        self.assertIn(b'egress_proxy_tunnels_closed_by_proxy_total{cause="refused"} 2', body)


# SHA-256("HelloRetryRequest"), the random of a HelloRetryRequest (RFC 8446 §4.1.3).
HRR_RANDOM = bytes.fromhex("cf21ad74e59a6111be1d8c021e65b891c2a211167abb8c5e079e09e2c8a8339c")

if __name__ == "__main__":
    unittest.main()
