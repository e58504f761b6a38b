#!/usr/bin/python3
"""egress-proxy runs the way the charts run it, and passes a request.

The container image cannot be built here (no Docker engine), so this test starts the
binary under bubblewrap with what the charts' restricted securityContext gives it:

  read-only root filesystem        --ro-bind / /  (no tmpfs: the proxy writes nothing;
                                   /proc and a minimal /dev as in a container)
  non-root UID/GID 65532           --unshare-user --uid 65532 --gid 65532
  no capabilities                  --cap-drop ALL (and no_new_privs, which bwrap always sets:
                                   allowPrivilegeEscalation: false)
  own PID namespace, proxy = PID 1 --unshare-pid --as-pid-1 (SIGTERM is delivered as the
                                   kubelet delivers it)
  the chart's config               charts/wikifunctions/files/proxy.yaml (the ConfigMap), with
                                   the test's local upstream: proxy.hosts maps www.wikidata.org
                                   to 127.0.0.1, allow_cidrs 127.0.0.0/8, resolver pointed at
                                   127.0.0.1:1 so no real DNS is used, the allowlist port set to
                                   the local TLS server's

The network namespace is shared so loopback works. A CONNECT through the proxy reaches a
local TLS server (python ssl, certificate for www.wikidata.org from `openssl req -x509`),
curl verifies it; a host off the allowlist gets 403; the sandbox's confinement is checked
on the running process and by write probes under the same flags; SIGTERM drains and exits 0.

Environment:
  EGRESS_PROXY       the egress-proxy binary. When set, the test must run (fails if it cannot).
                     When unset: <EGRESS_SOURCE_DIR>/build/proxy/egress-proxy, skipped if absent.
  EGRESS_SOURCE_DIR  repository root (default: two levels above this file)

Run: cd tests/charts && /usr/bin/python3 -m unittest -v sandbox_test
"""

import http.server
import json
import os
import pathlib
import select
import shutil
import signal
import ssl
import subprocess
import tempfile
import threading
import time
import unittest
import urllib.error
import urllib.request

import yaml

SOURCE = pathlib.Path(os.environ.get("EGRESS_SOURCE_DIR") or pathlib.Path(__file__).resolve().parents[2])
UID = GID = 65532
HOST = "www.wikidata.org"
BODY = b"egress-guard sandbox ok\n"
READY_TIMEOUT_S = 10


def proxy_binary():
    """(path, required). required: EGRESS_PROXY was set, so the test may not skip."""
    env = os.environ.get("EGRESS_PROXY")
    if env:
        return pathlib.Path(env), True
    return SOURCE / "build" / "proxy" / "egress-proxy", False


def sandbox_argv(bwrap):
    """bwrap flags equivalent to the charts' restricted pod (see the module docstring)."""
    return [bwrap,
            "--ro-bind", "/", "/",
            "--proc", "/proc",
            "--dev", "/dev",
            "--unshare-user", "--uid", str(UID), "--gid", str(GID),
            "--unshare-pid", "--unshare-ipc", "--unshare-uts",
            "--cap-drop", "ALL",
            "--die-with-parent", "--new-session",
            "--clearenv", "--setenv", "PATH", "/usr/local/bin:/usr/bin:/bin"]


class _Handler(http.server.BaseHTTPRequestHandler):
    requests = 0

    def do_GET(self):  # noqa: N802 (http.server API)
        type(self).requests += 1
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)

    def log_message(self, *args):
        pass


class SandboxTest(unittest.TestCase):
    """Tests share one sandboxed proxy; test_zz_* (SIGTERM) runs last by name."""

    @classmethod
    def setUpClass(cls):
        cls.proc = None
        cls.tmp = None
        cls.server = None
        binary, required = proxy_binary()

        def unavailable(why):
            if required:
                raise AssertionError(f"EGRESS_PROXY is set but the sandbox test cannot run: {why}")
            raise unittest.SkipTest(why)

        if not os.access(binary, os.X_OK):
            unavailable(f"egress-proxy not built at {binary} (set EGRESS_PROXY to require this test)")
        tools = {t: shutil.which(t) for t in ("bwrap", "curl", "openssl")}
        missing = [t for t, p in tools.items() if not p]
        if missing:
            unavailable(f"missing tools: {', '.join(missing)} (Debian packages bubblewrap, curl, openssl)")
        cls.binary, cls.bwrap, cls.curl_bin = binary, tools["bwrap"], tools["curl"]
        probe = subprocess.run(sandbox_argv(cls.bwrap) + ["--", "/bin/true"], capture_output=True, text=True)
        if probe.returncode != 0:
            unavailable(f"bwrap cannot create the sandbox here: {probe.stderr.strip()}")

        cls.tmp = pathlib.Path(tempfile.mkdtemp(prefix="egress-sandbox-"))
        cls.cert = cls.tmp / "cert.pem"
        key = cls.tmp / "key.pem"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                        "-nodes", "-keyout", str(key), "-out", str(cls.cert), "-days", "2",
                        "-subj", f"/CN={HOST}", "-addext", f"subjectAltName=DNS:{HOST}"],
                       check=True, capture_output=True)

        # Local TLS upstream standing in for www.wikidata.org.
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(cls.cert), str(key))
        cls.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        cls.server.socket = ctx.wrap_socket(cls.server.socket, server_side=True)
        cls.tls_port = cls.server.server_address[1]
        threading.Thread(target=cls.server.serve_forever, daemon=True).start()

        # The chart's proxy config (what the ConfigMap holds), pointed at the local upstream.
        base = SOURCE / "charts" / "wikifunctions" / "files" / "proxy.yaml"
        if not base.is_file():
            base = SOURCE / "policies" / "wikifunctions" / "proxy.yaml"
        cfg = yaml.safe_load(base.read_text())
        cfg["proxy"]["hosts"] = {HOST: ["127.0.0.1"]}
        cfg["proxy"].setdefault("resolver", {})["servers"] = ["127.0.0.1:1"]
        cfg["proxy"].setdefault("limits", {})["drain_timeout_ms"] = 2000
        cfg["allow_cidrs"] = ["127.0.0.0/8"]
        for entry in cfg["allowlist"]:
            if entry["host"] == HOST:
                entry["ports"] = [cls.tls_port]
        assert any(e["host"] == HOST for e in cfg["allowlist"]), f"{HOST} not on the chart's allowlist"
        cls.config = cls.tmp / "proxy.yaml"
        cls.config.write_text(yaml.safe_dump(cfg, sort_keys=False))
        os.chmod(cls.tmp, 0o755)
        for f in (cls.config, cls.cert):
            os.chmod(f, 0o644)

        # Start it as the chart does (sidecar: --listen on loopback; port 0 here, reported
        # on the "listening" line), with bwrap's --info-fd telling us the proxy's host PID.
        info_r, info_w = os.pipe()
        argv = sandbox_argv(cls.bwrap) + ["--as-pid-1", "--info-fd", str(info_w), "--",
                                          str(cls.binary), "--config", str(cls.config),
                                          "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"]
        cls.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    pass_fds=(info_w,), text=True)
        os.close(info_w)
        cls.lines, cls.stderr_lines = [], []
        cls.listening = threading.Event()
        threading.Thread(target=cls._read_stdout, daemon=True).start()
        threading.Thread(target=lambda: cls.stderr_lines.extend(cls.proc.stderr), daemon=True).start()
        cls.pid = cls._read_child_pid(info_r)
        if not cls.listening.wait(READY_TIMEOUT_S) or cls.proc.poll() is not None:
            cls._stop()
            raise AssertionError("egress-proxy did not report listening within "
                                 f"{READY_TIMEOUT_S}s under the sandbox:\n{cls.logs()}")
        deadline = time.monotonic() + READY_TIMEOUT_S
        while cls.admin_get("/readyz")[0] != 200:
            if time.monotonic() > deadline or cls.proc.poll() is not None:
                cls._stop()
                raise AssertionError(f"/readyz never returned 200:\n{cls.logs()}")
            time.sleep(0.05)

    @classmethod
    def _read_child_pid(cls, fd):
        buf = b""
        deadline = time.monotonic() + READY_TIMEOUT_S
        try:
            while time.monotonic() < deadline:
                r, _, _ = select.select([fd], [], [], 0.2)
                if r:
                    chunk = os.read(fd, 4096)
                    if not chunk:
                        break
                    buf += chunk
                    try:
                        return json.loads(buf)["child-pid"]
                    except ValueError:
                        continue
        finally:
            os.close(fd)
        return json.loads(buf)["child-pid"]

    @classmethod
    def _read_stdout(cls):
        for line in cls.proc.stdout:
            cls.lines.append(line)
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            if ev.get("event") == "listening":
                cls.proxy_addr, cls.admin_addr = ev["proxy"], ev["admin"]
                cls.listening.set()

    @classmethod
    def logs(cls):
        return "stdout:\n" + "".join(cls.lines[-40:]) + "stderr:\n" + "".join(cls.stderr_lines[-40:])

    @classmethod
    def admin_get(cls, path):
        try:
            with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(
                    f"http://{cls.admin_addr}{path}", timeout=2) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()
        except OSError:
            return None, b""

    @classmethod
    def _stop(cls):
        if cls.proc and cls.proc.poll() is None:
            cls.proc.send_signal(signal.SIGKILL)  # bwrap --die-with-parent takes the proxy along
            cls.proc.wait(10)

    @classmethod
    def tearDownClass(cls):
        cls._stop()
        if cls.server:
            cls.server.shutdown()
            cls.server.server_close()
        if cls.tmp:
            shutil.rmtree(cls.tmp, ignore_errors=True)

    def curl(self, url):
        """(exit status, body, http_code, http_connect) of a request through the proxy."""
        p = subprocess.run([self.curl_bin, "-sS", "--max-time", "10", "-x", f"http://{self.proxy_addr}",
                            "--cacert", str(self.cert), "-o", "-", "-w", "\n%{http_code} %{http_connect}", url],
                           capture_output=True, env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")})
        body, _, codes = p.stdout.rpartition(b"\n")
        code, connect = codes.decode().split()
        return p.returncode, body, code, connect

    def decisions(self, host):
        out = []
        for line in self.lines:
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            if ev.get("event") == "decision" and ev.get("host") == host:
                out.append(ev)
        return out

    def sandboxed(self, *cmd):
        return subprocess.run(sandbox_argv(self.bwrap) + ["--", *cmd], capture_output=True, text=True, timeout=30)

    # --- tests -------------------------------------------------------------------------

    def test_connect_through_the_sandboxed_proxy(self):
        before = _Handler.requests
        rc, body, code, connect = self.curl(f"https://{HOST}:{self.tls_port}/")
        self.assertEqual(rc, 0, f"curl failed ({rc}):\n{self.logs()}")
        self.assertEqual((code, connect), ("200", "200"))
        self.assertEqual(body, BODY)
        self.assertEqual(_Handler.requests, before + 1)
        time.sleep(0.2)  # the decision line is written when the tunnel closes
        allowed = [d for d in self.decisions(HOST) if d.get("verdict") == "allow"]
        self.assertTrue(allowed, f"no allowing decision line for {HOST}:\n{self.logs()}")

    def test_host_off_the_allowlist_is_refused(self):
        before = _Handler.requests
        rc, body, code, connect = self.curl(f"https://example.org:{self.tls_port}/")
        self.assertNotEqual(rc, 0)
        self.assertEqual(connect, "403", self.logs())
        self.assertEqual(_Handler.requests, before)

    def test_admin_endpoints(self):
        self.assertEqual(self.admin_get("/healthz")[0], 200)
        self.assertEqual(self.admin_get("/readyz")[0], 200)
        status, text = self.admin_get("/metrics")
        self.assertEqual(status, 200)
        self.assertIn(b"# TYPE", text)

    def test_running_process_is_confined(self):
        status = pathlib.Path(f"/proc/{self.pid}/status").read_text()
        fields = dict(l.split(":\t", 1) for l in status.splitlines() if ":\t" in l)
        for cap in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
            self.assertEqual(int(fields[cap].strip(), 16), 0, f"{cap} of the proxy")
        self.assertEqual(fields["NoNewPrivs"].strip(), "1")
        self.assertEqual(pathlib.Path(f"/proc/{self.pid}/exe").resolve(), pathlib.Path(self.binary).resolve())
        uid_map = pathlib.Path(f"/proc/{self.pid}/uid_map").read_text().split()
        gid_map = pathlib.Path(f"/proc/{self.pid}/gid_map").read_text().split()
        self.assertEqual((uid_map[0], uid_map[2]), (str(UID), "1"), "runs as UID 65532, the only mapped UID")
        self.assertEqual((gid_map[0], gid_map[2]), (str(GID), "1"))
        root = [l.split() for l in pathlib.Path(f"/proc/{self.pid}/mountinfo").read_text().splitlines()
                if l.split()[4] == "/"]
        self.assertTrue(root and "ro" in root[-1][5].split(","), "root filesystem must be read-only")
        pid_ns_host = os.readlink("/proc/self/ns/pid")
        self.assertNotEqual(os.readlink(f"/proc/{self.pid}/ns/pid"), pid_ns_host, "own PID namespace")
        self.assertEqual(os.readlink(f"/proc/{self.pid}/ns/net"), os.readlink("/proc/self/ns/net"))

    def test_writes_fail_under_the_same_flags(self):
        ident = self.sandboxed("/usr/bin/id", "-u")
        self.assertEqual(ident.stdout.strip(), str(UID))
        self.assertEqual(self.sandboxed("/usr/bin/id", "-g").stdout.strip(), str(GID))
        for target in ("/x", "/tmp/egress-sandbox-probe", str(self.tmp / "x"), "/etc/egress-proxy-probe",
                       "/usr/local/bin/egress-proxy-probe"):
            # (/dev/shm stays a writable tmpfs, as in every container; the AppArmor profile denies it)
            p = self.sandboxed("/usr/bin/touch", target)
            with self.subTest(target=target):
                self.assertNotEqual(p.returncode, 0, f"creating {target} succeeded")
                self.assertIn("Read-only file system", p.stderr)
        self.assertFalse((self.tmp / "x").exists())
        p = self.sandboxed("/usr/bin/touch", str(self.config))
        self.assertNotEqual(p.returncode, 0, "the config must not be writable")
        caps = self.sandboxed("/usr/bin/grep", "^CapEff", "/proc/self/status").stdout.split()
        self.assertEqual(int(caps[1], 16), 0)

    def test_zz_sigterm_drains_and_exits_0(self):
        """SIGTERM (as the kubelet sends it to PID 1): stop accepting, drain, exit 0."""
        os.kill(self.pid, signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.fail(f"egress-proxy did not exit within 15 s of SIGTERM:\n{self.logs()}")
        self.assertEqual(rc, 0, f"exit status after SIGTERM:\n{self.logs()}")


if __name__ == "__main__":
    unittest.main()
