"""Real clients through the built egress-proxy: curl -x (https and http), openssl s_client
-proxy (matching and mismatching -servername), Python urllib with HTTPS_PROXY, and Node's
undici EnvHttpProxyAgent (the orchestrator is a Node service).

Run (ctest does this, in a PID namespace too):
  unshare --net sh -c 'ip link set lo up && exec /usr/bin/python3 -m unittest -v clients_test'
"""

import os
import shutil
import subprocess
import sys
import textwrap
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness as h  # noqa: E402

CURL = shutil.which("curl")
NODE = shutil.which("node")
UNDICI = h.SOURCE_DIR / ".tools" / "node_modules" / "undici"

PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY",
              "NO_PROXY")


def clean_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in PROXY_VARS}
    env.update(extra)
    return env


class ClientsTest(h.ProxyTestCase):

    def setUp(self):
        super().setUp()
        self.start_proxy()
        self.proxy_url = "http://127.0.0.1:%d" % self.proxy.port
        self.https_url = "https://www.wikidata.org:%d/wiki/Q42" % self.tls.port
        self.http_url = "http://www.wikidata.org:%d/wiki/Q42?x=1" % self.http.port

    def run_client(self, args, env=None, stdin=None, timeout=20):
        return subprocess.run(args, capture_output=True, env=env or clean_env(), input=stdin, timeout=timeout)

    # -- curl --
    @unittest.skipUnless(CURL, "curl not installed")
    def test_curl_https_through_the_proxy(self):
        r = self.run_client([CURL, "-sS", "--max-time", "10", "-x", self.proxy_url, "--cacert", str(self.pki.ca),
                             self.https_url])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout, b"hello from upstream www.wikidata.org\n")
        d = self.proxy.wait_decision(verdict="allow")
        self.assertEqual((d["method"], d["sni"]), ("CONNECT", "www.wikidata.org"))
        # curl closes as soon as it has the body; the server's session tickets may still be in
        # flight to it, and closing a socket with unread bytes sends RST: then the relay's
        # write fails and the line says "error" (a reset), otherwise "eof".
        self.assertIn(d["end"], ("eof", "error"), d)
        self.assertGreater(d["bytes_down"], 0, d)

    @unittest.skipUnless(CURL, "curl not installed")
    def test_curl_https_to_a_host_not_on_the_list_gets_403(self):
        r = self.run_client([CURL, "-sS", "--max-time", "10", "-x", self.proxy_url, "--cacert", str(self.pki.ca),
                             "https://en.wikipedia.org:%d/" % self.tls.port])
        self.assertNotEqual(r.returncode, 0)
        self.assertIn(b"403", r.stderr)
        self.assertEqual(self.tls.count(), 0)
        self.assertEqual(self.proxy.wait_decision()["reason"], "host_not_allowed")

    @unittest.skipUnless(CURL, "curl not installed")
    def test_curl_plain_http_through_the_proxy(self):
        r = self.run_client([CURL, "-sS", "--max-time", "10", "-x", self.proxy_url, self.http_url])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout, b"plain upstream saw GET /wiki/Q42?x=1 HTTP/1.1\n")
        rec = self.http.connection(0)
        self.assertNotIn("proxy-connection", [k.lower() for k, _ in rec.fields])

    @unittest.skipUnless(CURL, "curl not installed")
    def test_curl_shows_the_refusal_reason_header(self):
        r = self.run_client([CURL, "-sS", "--max-time", "10", "-x", self.proxy_url, "-i",
                             "http://evil.example/"])
        self.assertIn(b"403", r.stdout)
        self.assertIn(b"X-Egress-Denied: host_not_allowed", r.stdout)

    # -- openssl s_client --
    def s_client(self, servername):
        request = b"GET / HTTP/1.1\r\nHost: www.wikidata.org\r\nConnection: close\r\n\r\n"
        return self.run_client([h.OPENSSL, "s_client", "-proxy", "127.0.0.1:%d" % self.proxy.port,
                                "-connect", "www.wikidata.org:%d" % self.tls.port, "-servername", servername,
                                "-CAfile", str(self.pki.ca), "-verify_return_error", "-quiet"], stdin=request)

    def test_openssl_s_client_with_matching_servername_is_served(self):
        r = self.s_client("www.wikidata.org")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn(b"hello from upstream www.wikidata.org", r.stdout)

    def test_openssl_s_client_with_mismatching_servername_is_cut_before_upstream(self):
        r = self.s_client("en.wikipedia.org")
        self.assertNotIn(b"hello from upstream", r.stdout)
        self.assertNotEqual(r.returncode, 0)
        d = self.proxy.wait_decision()
        self.assertEqual((d["reason"], d["sni"]), ("sni_mismatch", "en.wikipedia.org"))
        self.assert_upstream_saw_nothing(self.tls.connection(0))

    # -- Python urllib --
    URLLIB = textwrap.dedent("""
        import ssl, sys, urllib.request, urllib.error
        ctx = ssl.create_default_context(cafile=sys.argv[2])
        try:
            r = urllib.request.urlopen(sys.argv[1], context=ctx, timeout=10)
            print(r.status)
            sys.stdout.write(r.read().decode())
        except urllib.error.URLError as e:
            print("error", e.reason)
            sys.exit(3)
    """)

    def urllib(self, url):
        env = clean_env(HTTPS_PROXY=self.proxy_url, HTTP_PROXY=self.proxy_url)
        return self.run_client([sys.executable, "-c", self.URLLIB, url, str(self.pki.ca)], env=env)

    def test_python_urllib_with_https_proxy(self):
        r = self.urllib(self.https_url)
        self.assertEqual(r.returncode, 0, r.stderr + r.stdout)
        self.assertEqual(r.stdout, b"200\nhello from upstream www.wikidata.org\n")

    def test_python_urllib_with_https_proxy_to_a_host_not_on_the_list(self):
        r = self.urllib("https://en.wikipedia.org:%d/" % self.tls.port)
        self.assertEqual(r.returncode, 3, r.stderr)
        self.assertIn(b"403", r.stdout)
        self.assertEqual(self.tls.count(), 0)

    def test_python_urllib_with_http_proxy_plain_http(self):
        r = self.urllib(self.http_url)
        self.assertEqual(r.returncode, 0, r.stderr + r.stdout)
        self.assertEqual(r.stdout, b"200\nplain upstream saw GET /wiki/Q42?x=1 HTTP/1.1\n")

    # -- Node undici --
    UNDICI_SCRIPT = textwrap.dedent("""
        const { fetch, EnvHttpProxyAgent } = require(process.env.UNDICI_PATH);
        (async () => {
          try {
            const r = await fetch(process.env.TARGET_URL, { dispatcher: new EnvHttpProxyAgent() });
            console.log(r.status);
            process.stdout.write(await r.text());
          } catch (e) {
            console.log("error " + (e.cause ? e.cause.message : e.message));
            process.exit(3);
          }
        })();
    """)

    def undici(self, url):
        if not NODE or not (UNDICI / "package.json").exists():
            self.skipTest("node or undici missing (scripts/install-deps installs undici into .tools/)")
        env = clean_env(HTTPS_PROXY=self.proxy_url, HTTP_PROXY=self.proxy_url, NODE_EXTRA_CA_CERTS=str(self.pki.ca),
                        UNDICI_PATH=str(UNDICI), TARGET_URL=url)
        return self.run_client([NODE, "--no-warnings", "-e", self.UNDICI_SCRIPT], env=env, timeout=30)

    def test_node_undici_env_http_proxy_agent_https(self):
        r = self.undici(self.https_url)
        self.assertEqual(r.returncode, 0, r.stderr + r.stdout)
        self.assertEqual(r.stdout, b"200\nhello from upstream www.wikidata.org\n")
        d = self.proxy.wait_decision(verdict="allow")
        self.assertEqual(d["sni"], "www.wikidata.org")

    def test_node_undici_env_http_proxy_agent_host_not_on_the_list(self):
        r = self.undici("https://en.wikipedia.org:%d/" % self.tls.port)
        self.assertEqual(r.returncode, 3, r.stderr + r.stdout)  # undici reports "Request was cancelled."
        d = self.proxy.wait_decision()
        self.assertEqual((d["method"], d["reason"], d["status"]), ("CONNECT", "host_not_allowed", 403))
        self.assertEqual(self.tls.count(), 0)

    def test_node_undici_env_http_proxy_agent_tunnels_plain_http_so_it_is_refused_not_tls(self):
        # undici's proxy agents send http:// requests through CONNECT too (never absolute
        # form); the proxy wants TLS in every tunnel, so plain HTTP from Node fails closed.
        r = self.undici(self.http_url)
        self.assertEqual(r.returncode, 3, r.stderr + r.stdout)
        d = self.proxy.wait_decision()
        self.assertEqual((d["method"], d["reason"]), ("CONNECT", "not_tls"), d)
        self.assert_upstream_saw_nothing(self.http.connection(0))


if __name__ == "__main__":
    unittest.main()
