"""Integration harness for egress-proxy: real processes on loopback, nothing else.

What it gives a test (tests/integration/*_test.py):

- ``require_isolation()``: refuses to run (raises at import) when any network interface
  other than loopback is up, so the suite only ever runs inside a loopback-only network
  namespace (``unshare --net``), where a fail-open bug meets ENETUNREACH instead of sending
  a packet off the machine. Interfaces are read through the process's own network
  namespace (``if_nameindex`` + SIOCGIFFLAGS): /sys/class/net is NOT usable for this,
  because sysfs shows the namespace of whoever mounted it, and ``unshare --net`` without a
  new mount namespace keeps showing the host's eth0 there.
- ``PKI``: a test CA and a leaf certificate for every test name, made at test time with
  the openssl CLI.
- ``TLSUpstream``: a threaded TLS server on loopback (Python ssl over memory BIOs) that
  records every raw byte it receives per connection, before TLS sees it, so a test can
  assert "the upstream saw nothing". Modes: ``http`` (one small response), ``echo``,
  ``bulk`` (sends ``bulk_bytes`` of known data while hashing what it receives),
  ``reply_after_eof`` (answers only after the client half-closed) and ``half_close_first``
  (answers the first line with ``bulk_bytes`` of known data, half-closes, then hashes
  what the client still sends until its end).
- ``HTTPUpstream``: a plain HTTP/1.1 server recording request heads and bodies.
- ``Dnsmasq``: a private dnsmasq on a free loopback port with ``--host-record`` answers,
  its query log parsed, ``restart()`` with other answers on the same port, ``sync()`` to
  make sure every earlier query is in the log.
- ``FlipDNS``: a tiny DNS stub whose answer for a name changes after the first query (a
  rebinding attacker inside one request), and ``SilentUDP``: a DNS server that never
  answers.
- ``Proxy``: spawns the built egress-proxy on ``--listen 127.0.0.1:0 --admin 127.0.0.1:0``,
  waits (<= 10 s, failing at once if it exits) for the ``listening`` line, collects every
  stdout line as JSON; teardown sends SIGTERM, waits, then SIGKILL, and the test asserts
  the exit status.
- ``ProxyTestCase``: per-test temp dir, per-class dnsmasq and upstreams, a config
  builder, raw-socket helpers (CONNECT, plain HTTP, ClientHello crafting) and checks that
  every stdout line is JSON and every decision line has the documented fields.

Environment: EGRESS_PROXY (the binary; default build/proxy/egress-proxy under the source
dir), EGRESS_SOURCE_DIR (default: two levels up from this file).
"""

from __future__ import annotations

import atexit
import ctypes
import fcntl
import hashlib
import json
import os
import random
import re
import resource
import select
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import tempfile
import threading
import time
import unittest
from pathlib import Path
from typing import Callable, Iterable, Optional

import yaml

SOURCE_DIR = Path(os.environ.get("EGRESS_SOURCE_DIR") or Path(__file__).resolve().parents[2])
PROXY_BINARY = os.environ.get("EGRESS_PROXY") or str(SOURCE_DIR / "build" / "proxy" / "egress-proxy")
DNSMASQ = "/usr/sbin/dnsmasq"
OPENSSL = shutil.which("openssl") or "/usr/bin/openssl"

#: Fields every decision line carries. The others appear when they apply (proxy/log.hpp):
#: ``sni`` (a ClientHello with a server_name was read), ``upstream`` (an address was
#: dialled, or the address refused), ``dns_ms`` (a lookup happened), ``connect_ms`` (a
#: connect was attempted), ``end`` (allowed: how the tunnel or exchange ended).
DECISION_FIELDS = ("time", "event", "conn", "client", "method", "host", "port", "verdict", "reason",
                   "status", "bytes_up", "bytes_down", "total_ms")

#: Names the test CA issues a certificate for and the main dnsmasq answers with 127.0.0.1.
LOOPBACK_NAMES = ("www.wikidata.org", "wikidata.org", "wikifunctions.org", "www.wikifunctions.org",
                  "en.wikipedia.org", "api.wikidata.org")

#: Names on the allowlist (through *.wikidata.org) whose answers are denied addresses.
DENIED_NAME_ANSWERS = {
    "internal.wikidata.org": ["10.0.0.5"],
    "metadata.wikidata.org": ["169.254.169.254"],
    "loopback6.wikidata.org": ["::1"],
    "ec2metadata6.wikidata.org": ["fd00:ec2::254"],
    "mapped.wikidata.org": ["::ffff:10.0.0.1"],
    "ula.wikidata.org": ["fc00::1"],
    # public-looking and private answers together: only the public one may be dialled
    "mixed.wikidata.org": ["185.15.59.224", "10.0.0.5"],
}


# --------------------------------------------------------------------------------------
# Isolation
# --------------------------------------------------------------------------------------

_SIOCGIFFLAGS = 0x8913
_IFF_UP = 0x1


def interfaces_up() -> dict:
    """Interface name -> True when up, as this process's network namespace sees them."""
    out = {}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _, name in socket.if_nameindex():
            req = struct.pack("16sH22x", name.encode()[:15], 0)
            flags = struct.unpack("16sH22x", fcntl.ioctl(s.fileno(), _SIOCGIFFLAGS, req))[1]
            out[name] = bool(flags & _IFF_UP)
    return out


def require_isolation() -> None:
    """Raises RuntimeError unless the only interface up is loopback (and loopback is up)."""
    state = interfaces_up()
    others = sorted(n for n, up in state.items() if up and n != "lo")
    if others:
        raise RuntimeError(
            "egress-proxy integration tests refuse to run: network interface(s) %s are up. "
            "They resolve test names to public and private addresses; run them inside a "
            "loopback-only network namespace, e.g.\n  unshare --net sh -c 'ip link set lo up && "
            "exec /usr/bin/python3 -m unittest -v threats_test'\n(ctest does this for you)." % ", ".join(others))
    if not state.get("lo"):
        raise RuntimeError("loopback is down in this network namespace: run `ip link set lo up` first")


require_isolation()


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 65536
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


_raise_fd_limit()


# --------------------------------------------------------------------------------------
# Small utilities
# --------------------------------------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """preexec_fn: the child gets SIGKILL when the test process dies (a ctest timeout
    kills only the test process), so no proxy or dnsmasq outlives its test."""
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def wait_until(predicate: Callable[[], object], timeout: float, interval: float = 0.02, what: str = "condition"):
    """Polls `predicate` until it returns a truthy value (returned) or raises AssertionError."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError("timed out after %.1f s waiting for %s" % (timeout, what))
        time.sleep(interval)


def free_port(kind: int = socket.SOCK_STREAM, host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (bind to 0, read it, close)."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def pattern_bytes(n: int, seed: int) -> bytes:
    """`n` deterministic pseudo-random bytes."""
    return random.Random(seed).randbytes(n)


# --------------------------------------------------------------------------------------
# PKI
# --------------------------------------------------------------------------------------

class PKI:
    """A throw-away CA and one leaf certificate per name (ECDSA P-256), made with openssl."""

    def __init__(self, directory: Path, names: Iterable[str]):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ca = self.dir / "ca.pem"
        self.ca_key = self.dir / "ca.key"
        self._run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                  "-keyout", self.ca_key, "-out", self.ca, "-days", "2", "-subj", "/CN=egress-guard test CA",
                  "-addext", "basicConstraints=critical,CA:TRUE",
                  "-addext", "keyUsage=critical,keyCertSign,cRLSign",
                  "-addext", "subjectKeyIdentifier=hash")
        self.leaves = {}
        for name in names:
            self.leaves[name] = self._leaf(name)

    def _run(self, *args):
        r = subprocess.run([OPENSSL, *map(str, args)], capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            raise RuntimeError("openssl %s failed:\n%s" % (args[0], r.stderr))

    def _leaf(self, name: str):
        key = self.dir / (name + ".key")
        csr = self.dir / (name + ".csr")
        cert = self.dir / (name + ".pem")
        ext = self.dir / (name + ".ext")
        ext.write_text("basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
                       "extendedKeyUsage=serverAuth\nsubjectAltName=DNS:%s\n"
                       "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid:always\n" % name)
        self._run("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                  "-keyout", key, "-out", csr, "-subj", "/CN=" + name)
        self._run("x509", "-req", "-in", csr, "-CA", self.ca, "-CAkey", self.ca_key, "-CAcreateserial",
                  "-out", cert, "-days", "2", "-extfile", ext)
        return cert, key

    def client_context(self, check_hostname: bool = True) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca))
        ctx.check_hostname = check_hostname
        return ctx

    def server_context(self, on_sni: Optional[Callable[[Optional[str]], None]] = None) -> ssl.SSLContext:
        """A server context choosing the leaf by SNI (www.wikidata.org's when unknown)."""
        contexts = {}
        for name, (cert, key) in self.leaves.items():
            c = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            c.load_cert_chain(str(cert), str(key))
            contexts[name] = c
        default = contexts.get("www.wikidata.org") or next(iter(contexts.values()))

        def pick(sslobj, server_name, _ctx):
            if on_sni:
                on_sni(sslobj, server_name)
            if server_name:
                sslobj.context = contexts.get(server_name.lower().rstrip("."), default)
            return None

        default.sni_callback = pick
        return default


_pki_lock = threading.Lock()
_pki: Optional[PKI] = None


def pki() -> PKI:
    """The process-wide test PKI (made once, at test time, in a temp dir removed at exit)."""
    global _pki
    with _pki_lock:
        if _pki is None:
            d = tempfile.mkdtemp(prefix="egress-pki-")
            atexit.register(shutil.rmtree, d, True)
            _pki = PKI(Path(d), LOOPBACK_NAMES)
        return _pki


# --------------------------------------------------------------------------------------
# TLS over memory BIOs (both ends): exact control of the bytes on the wire
# --------------------------------------------------------------------------------------

class TLSConn:
    """One TLS connection over a non-blocking socket, driven by select and memory BIOs.

    `raw_log(bytes)` is called with every byte received from the socket before TLS sees
    it. The peer's end (close_notify or TCP EOF) sets `app_eof`. `raw_sent` and
    `raw_received` count the bytes that went through the socket here (not bytes a caller
    wrote to or read from `sock` itself, such as a `send_first_flight`).
    """

    def __init__(self, sock: socket.socket, ctx: ssl.SSLContext, server_side: bool,
                 server_hostname: Optional[str] = None, raw_log: Optional[Callable[[bytes], None]] = None):
        self.sock = sock
        sock.setblocking(False)
        self.inc = ssl.MemoryBIO()
        self.out = ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self.inc, self.out, server_side=server_side, server_hostname=server_hostname)
        self.raw_out = bytearray()
        self.raw_eof = False
        self.app_in = bytearray()
        self.app_eof = False
        self.handshaken = False
        self.write_shut = False
        self.raw_log = raw_log
        self.raw_sent = 0
        self.raw_received = 0

    # -- engine --
    def _progress(self):
        if not self.handshaken:
            try:
                self.obj.do_handshake()
                self.handshaken = True
            except ssl.SSLWantReadError:
                if self.raw_eof:
                    self._flush_out_bio()
                    raise ConnectionError("connection closed during the TLS handshake")
        if self.handshaken and not self.app_eof:
            while True:
                try:
                    data = self.obj.read(256 * 1024)
                except ssl.SSLWantReadError:
                    break
                except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                    self.app_eof = True
                    break
                if not data:
                    self.app_eof = True
                    break
                self.app_in += data
        self._flush_out_bio()

    def _flush_out_bio(self):
        data = self.out.read()
        if data:
            self.raw_out += data

    def _io(self, timeout: float) -> None:
        rlist = [] if self.raw_eof else [self.sock]
        wlist = [self.sock] if self.raw_out and not self.write_shut else []
        if not rlist and not wlist:
            time.sleep(min(timeout, 0.01))
            return
        r, w, _ = select.select(rlist, wlist, [], max(0.0, timeout))
        if w:
            try:
                n = self.sock.send(self.raw_out)
                del self.raw_out[:n]
                self.raw_sent += n
            except (BlockingIOError, InterruptedError):
                pass
            except (BrokenPipeError, ConnectionResetError):
                self.raw_out.clear()
                self.write_shut = True
        if r:
            try:
                data = self.sock.recv(256 * 1024)
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionResetError:
                data = b""
            if not data:
                self.raw_eof = True
                self.inc.write_eof()
            else:
                self.raw_received += len(data)
                if self.raw_log:
                    self.raw_log(data)
                self.inc.write(data)

    def pump(self, until: Callable[[], bool], timeout: float, what: str = "TLS progress") -> None:
        deadline = time.monotonic() + timeout
        while True:
            self._progress()
            if until():
                return
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("timed out waiting for " + what)
            if self.raw_eof and not self.raw_out and (self.app_eof or not self.handshaken):
                self._progress()
                if until():
                    return
                raise ConnectionError("connection closed while waiting for " + what)
            self._io(min(left, 0.2))

    # -- operations --
    def handshake(self, timeout: float = 10, send_first_flight: Optional[Callable[[socket.socket, bytes], None]] = None):
        """Completes the handshake. `send_first_flight(sock, hello)`, when given, sends the
        client's first flight (the ClientHello) itself: in pieces, re-framed, ..."""
        if send_first_flight is not None:
            self._progress()
            hello = bytes(self.raw_out)
            self.raw_out.clear()
            self.sock.setblocking(True)
            try:
                send_first_flight(self.sock, hello)
            finally:
                self.sock.setblocking(False)
        self.pump(lambda: self.handshaken and not self.raw_out, timeout, "the TLS handshake")

    def send(self, data: bytes, timeout: float = 30) -> None:
        view = memoryview(data)
        deadline = time.monotonic() + timeout
        while view:
            if len(self.raw_out) < 1 << 20:
                n = self.obj.write(view[:16384])
                view = view[n:]
                self._flush_out_bio()
            self._progress()
            if time.monotonic() > deadline:
                raise TimeoutError("timed out sending")
            if self.write_shut:
                raise ConnectionError("peer closed while sending")
            if len(self.raw_out) >= 1 << 20 or not view:
                self._io(0.05 if view else 0)
        self.pump(lambda: not self.raw_out or self.write_shut, timeout, "send buffer drained")

    def recv_until(self, predicate: Callable[[bytes], bool], timeout: float = 10) -> bytes:
        self.pump(lambda: predicate(bytes(self.app_in)) or self.app_eof, timeout, "application data")
        return bytes(self.app_in)

    def recv_to_eof(self, timeout: float = 10) -> bytes:
        self.pump(lambda: self.app_eof, timeout, "the peer's end of stream")
        return bytes(self.app_in)

    def close_notify(self) -> None:
        try:
            self.obj.unwrap()
        except (ssl.SSLWantReadError, ssl.SSLError):
            pass
        self._flush_out_bio()

    def shutdown_write(self, timeout: float = 10) -> None:
        """Flushes, then sends TCP FIN (no close_notify): a half-close."""
        self.pump(lambda: not self.raw_out, timeout, "send buffer drained")
        self.sock.shutdown(socket.SHUT_WR)
        self.write_shut = True

    def duplex(self, up: bytes, down_bytes: int, timeout: float = 60, half_close: bool = True):
        """Sends `up` while receiving; half-closes after sending; returns what came down
        (until `down_bytes` arrived and the peer ended)."""
        view = memoryview(up)
        deadline = time.monotonic() + timeout
        while True:
            if view and len(self.raw_out) < 1 << 20:
                n = self.obj.write(view[:16384])
                view = view[n:]
                self._flush_out_bio()
            self._progress()
            if not view and not self.raw_out and half_close and not self.write_shut:
                self.sock.shutdown(socket.SHUT_WR)
                self.write_shut = True
            if len(self.app_in) >= down_bytes and self.app_eof and not view:
                return bytes(self.app_in)
            if self.raw_eof and not self.raw_out and self.app_eof:
                return bytes(self.app_in)
            if time.monotonic() > deadline:
                raise TimeoutError("duplex transfer: %d bytes left to send, %d of %d received"
                                   % (len(view), len(self.app_in), down_bytes))
            self._io(0.0 if (view and len(self.raw_out) < 1 << 20) else 0.05)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def make_client_hello(server_hostname: Optional[str], alpn: Optional[list] = None,
                      ctx: Optional[ssl.SSLContext] = None) -> bytes:
    """A real ClientHello (TLS records as OpenSSL writes them) for `server_hostname`
    (None: no SNI)."""
    if ctx is None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if alpn:
        ctx.set_alpn_protocols(alpn)
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inc, out, server_side=False, server_hostname=server_hostname)
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return out.read()


def split_records(data: bytes) -> list:
    """TLS records in `data`: [(content_type, version, fragment), ...]."""
    out, i = [], 0
    while i + 5 <= len(data):
        ctype, ver, n = data[i], data[i + 1:i + 3], struct.unpack(">H", data[i + 3:i + 5])[0]
        out.append((ctype, ver, data[i + 5:i + 5 + n]))
        i += 5 + n
    if i != len(data):
        raise ValueError("trailing bytes after TLS records")
    return out


def handshake_message(hello_records: bytes) -> bytes:
    """The handshake message(s) carried by the records of a ClientHello."""
    return b"".join(frag for ctype, _, frag in split_records(hello_records) if ctype == 22)


def frame_records(message: bytes, pieces: int = 1, version: bytes = b"\x03\x01") -> bytes:
    """Frames a handshake message into `pieces` TLS handshake records of near-equal size."""
    size = -(-len(message) // pieces)
    out = b""
    for i in range(0, len(message), size):
        frag = message[i:i + size]
        out += b"\x16" + version + struct.pack(">H", len(frag)) + frag
    return out


def add_extension(hello_records: bytes, ext_type: int, ext_data: bytes, pieces: int = 0,
                  grow_existing: bool = False) -> bytes:
    """The ClientHello with one more extension appended (lengths fixed up), re-framed into
    as many records as it needs (or `pieces`). `grow_existing`: when the extension is
    already there (OpenSSL may add padding, type 21, itself), append `ext_data` to it."""
    msg = bytearray(handshake_message(hello_records))
    assert msg[0] == 1, "not a ClientHello"
    body = msg[4:]
    p = 2 + 32
    p += 1 + body[p]                                   # session id
    p += 2 + struct.unpack(">H", body[p:p + 2])[0]     # cipher suites
    p += 1 + body[p]                                   # compression methods
    ext_len = struct.unpack(">H", body[p:p + 2])[0]
    exts = body[p + 2:p + 2 + ext_len]
    q = 0
    found = False
    while q < len(exts):
        t, n = struct.unpack(">HH", exts[q:q + 4])
        if t == ext_type:
            if not grow_existing:
                raise ValueError("extension %#x already present" % ext_type)
            exts = exts[:q] + struct.pack(">HH", t, n + len(ext_data)) + exts[q + 4:q + 4 + n] + ext_data + exts[q + 4 + n:]
            found = True
            break
        q += 4 + n
    if not found:
        exts = exts + struct.pack(">HH", ext_type, len(ext_data)) + ext_data
    body = body[:p] + struct.pack(">H", len(exts)) + exts
    message = bytes([1]) + len(body).to_bytes(3, "big") + bytes(body)
    if not pieces:
        pieces = -(-len(message) // 16384)
    return frame_records(message, pieces)


def replace_sni(hello_records: bytes, old: str, new: str) -> bytes:
    """The ClientHello with the SNI host_name bytes replaced by same-length `new`."""
    assert len(old) == len(new)
    needle = struct.pack(">H", len(old)) + old.encode()
    assert hello_records.count(needle) == 1
    return hello_records.replace(needle, struct.pack(">H", len(new)) + new.encode())


# --------------------------------------------------------------------------------------
# Upstreams
# --------------------------------------------------------------------------------------

class UpstreamConnection:
    """What one upstream connection received: raw bytes (pre-TLS), application data, SNI."""

    def __init__(self, peer):
        self.peer = peer
        self.raw = bytearray()
        self.app = bytearray()
        self.sni: Optional[str] = None
        self.error: Optional[str] = None
        self.closed = threading.Event()
        self.up_sha256 = None
        self.up_bytes = 0


class _Server:
    """A threaded TCP accept loop; subclasses implement `handle(sock, record)`."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((host, port))
        self.listener.listen(512)
        self.host = host
        self.port = self.listener.getsockname()[1]
        self.lock = threading.Lock()
        self.connections: list = []
        self._stop = False
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._thread.start()

    def _accept_loop(self):
        while not self._stop:
            try:
                sock, peer = self.listener.accept()
            except OSError:
                return
            rec = UpstreamConnection(peer)
            with self.lock:
                self.connections.append(rec)
            threading.Thread(target=self._run, args=(sock, rec), daemon=True).start()

    def _run(self, sock, rec):
        try:
            self.handle(sock, rec)
        except Exception as e:  # recorded for the test, never raised in a thread
            rec.error = "%s: %s" % (type(e).__name__, e)
        finally:
            try:
                sock.close()
            except OSError:
                pass
            rec.closed.set()

    def handle(self, sock, rec):
        raise NotImplementedError

    def count(self) -> int:
        with self.lock:
            return len(self.connections)

    def reset(self) -> None:
        with self.lock:
            self.connections = []

    def connection(self, index: int = -1, timeout: float = 5) -> UpstreamConnection:
        wait_until(lambda: self.count() > (index if index >= 0 else -index - 1), timeout, what="an upstream connection")
        with self.lock:
            return self.connections[index]

    def close(self):
        self._stop = True
        try:
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() in the thread
        except OSError:
            pass
        try:
            self.listener.close()
        except OSError:
            pass
        self._thread.join(5)


class TLSUpstream(_Server):
    """TLS server on loopback; `mode` is read per connection (tests set it before use)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, mode: str = "http"):
        self.mode = mode
        self.bulk_bytes = 0
        self.bulk_seed = 1
        self._sni = {}
        self.ctx = pki().server_context(on_sni=self._on_sni)
        super().__init__(host, port)

    def _on_sni(self, sslobj, name):
        rec = self._sni.get(id(sslobj))
        if rec is not None:
            rec.sni = name

    def response_body(self, rec) -> bytes:
        return b"hello from upstream %s\n" % (rec.sni or "-").encode()

    def handle(self, sock, rec):
        mode = self.mode
        conn = TLSConn(sock, self.ctx, server_side=True, raw_log=rec.raw.extend)
        self._sni[id(conn.obj)] = rec
        try:
            conn.handshake(timeout=15)
        finally:
            self._sni.pop(id(conn.obj), None)
        if mode == "http":
            data = conn.recv_until(lambda b: b"\r\n\r\n" in b, timeout=15)
            rec.app += data
            body = self.response_body(rec)
            conn.send(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
                      b"Connection: close\r\n\r\n%s" % (len(body), body))
            conn.close_notify()
            conn.pump(lambda: not conn.raw_out, 5)
        elif mode == "echo":
            while True:
                conn.pump(lambda: conn.app_in or conn.app_eof, 120, "echo data")
                if conn.app_in:
                    data = bytes(conn.app_in)
                    conn.app_in.clear()
                    rec.app += data
                    conn.send(data)
                elif conn.app_eof:
                    break
            conn.close_notify()
            conn.pump(lambda: not conn.raw_out, 5)
        elif mode == "bulk":
            h = hashlib.sha256()
            n = 0
            view = memoryview(pattern_bytes(self.bulk_bytes, self.bulk_seed))
            deadline = time.monotonic() + 120
            while True:
                if view and len(conn.raw_out) < 1 << 20:
                    k = conn.obj.write(view[:16384])
                    view = view[k:]
                    conn._flush_out_bio()
                conn._progress()
                if conn.app_in:
                    h.update(conn.app_in)
                    n += len(conn.app_in)
                    conn.app_in.clear()
                if not view and conn.app_eof and not conn.raw_out:
                    break
                if conn.write_shut and conn.raw_eof:
                    raise ConnectionError("bulk upstream: the peer went away (%d bytes left to send)" % len(view))
                if time.monotonic() > deadline:
                    raise TimeoutError("bulk upstream: timed out")
                conn._io(0.0 if (view and len(conn.raw_out) < 1 << 20) else 0.05)
            rec.up_sha256, rec.up_bytes = h.hexdigest(), n
            conn.close_notify()
            conn.pump(lambda: not conn.raw_out, 5)
        elif mode == "half_close_first":
            h = hashlib.sha256()
            first = conn.recv_until(lambda b: b"\n" in b, timeout=30)
            conn.app_in.clear()
            h.update(first)
            n = len(first)
            conn.send(pattern_bytes(self.bulk_bytes, self.bulk_seed), timeout=60)
            conn.close_notify()
            conn.shutdown_write()
            while True:
                conn.pump(lambda: conn.app_in or conn.app_eof, 60, "data after the half-close")
                if conn.app_in:
                    h.update(conn.app_in)
                    n += len(conn.app_in)
                    conn.app_in.clear()
                elif conn.app_eof:
                    break
            rec.up_sha256, rec.up_bytes = h.hexdigest(), n
        elif mode == "reply_after_eof":
            data = conn.recv_to_eof(timeout=30)
            rec.app += data
            conn.send(b"received %d bytes sha256 %s\n" % (len(data), hashlib.sha256(data).hexdigest().encode()))
            conn.close_notify()
            conn.pump(lambda: not conn.raw_out, 5)
        else:
            raise ValueError(mode)


class RawRecorder(_Server):
    """Accepts, records every byte it gets, never answers (a trap for addresses the proxy
    must never dial)."""

    def handle(self, sock, rec):
        sock.settimeout(30)
        while True:
            try:
                data = sock.recv(65536)
            except OSError:
                return
            if not data:
                return
            rec.raw += data


def chunked_complete(body: bytes) -> bool:
    """Whether `body` holds a whole chunked body (chunks, last chunk, trailer section)."""
    pos = 0
    while True:
        eol = body.find(b"\r\n", pos)
        if eol < 0:
            return False
        try:
            size = int(body[pos:eol].split(b";")[0].strip() or b"x", 16)
        except ValueError:
            return True  # not chunked framing: nothing more will make it whole
        pos = eol + 2
        if size == 0:
            return body.find(b"\r\n\r\n", pos - 2) >= 0
        pos += size + 2
        if pos > len(body):
            return False


class HTTPUpstream(_Server):
    """Plain HTTP/1.1 origin: records each request's head and body, answers 200 and closes.
    `response_mode` (read per connection): "length" (Content-Length), "close" (body until
    close, no length), "chunked" (with the field lines of `chunk_trailer`, CRLF-terminated,
    as its trailer section), "garbage" (not HTTP). HEAD gets no body."""

    response_mode = "length"
    chunk_trailer = b""

    def handle(self, sock, rec):
        sock.settimeout(15)
        buf = bytearray()
        while b"\r\n\r\n" not in buf:
            data = sock.recv(65536)
            if not data:
                rec.raw += buf
                return
            buf += data
        rec.raw += buf
        end = buf.index(b"\r\n\r\n") + 4
        head = bytes(buf[:end])
        body = bytearray(buf[end:])
        lines = head.decode("latin-1").split("\r\n")
        fields = [l.split(":", 1) for l in lines[1:] if l]
        length = next((int(v) for k, v in fields if k.strip().lower() == "content-length"), None)
        chunked = any(k.strip().lower() == "transfer-encoding" for k, _ in fields)
        while (length is not None and len(body) < length) or (chunked and not chunked_complete(bytes(body))):
            data = sock.recv(65536)
            if not data:
                break
            rec.raw += data
            body += data
        rec.head = head
        rec.request_line = lines[0]
        rec.fields = [(k, v.strip()) for k, v in fields]
        rec.body = bytes(body)
        payload = b"plain upstream saw " + lines[0].encode("latin-1") + b"\n"
        mode = self.response_mode
        head_only = lines[0].startswith("HEAD ")
        if mode == "length":
            sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
                         b"X-Upstream: plain\r\nConnection: close\r\n\r\n%s"
                         % (len(payload), b"" if head_only else payload))
        elif mode == "close":
            sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Upstream: plain\r\n"
                         b"Connection: close\r\n\r\n%s" % payload)
        elif mode == "chunked":
            body = (b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in (payload[:5], payload[5:]) if p) + b"0\r\n"
                    + self.chunk_trailer + b"\r\n")
            sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n"
                         b"X-Upstream: plain\r\nConnection: close\r\n\r\n%s" % body)
        else:
            sock.sendall(b"SSH-2.0-OpenSSH_9.2\r\n")
        sock.shutdown(socket.SHUT_WR)
        try:
            while sock.recv(65536):
                pass
        except OSError:
            pass


# --------------------------------------------------------------------------------------
# DNS
# --------------------------------------------------------------------------------------

def dns_query_packet(name: str, qtype: int = 1, qid: int = 0x1234) -> bytes:
    q = b"".join(bytes([len(l)]) + l.encode() for l in name.rstrip(".").split(".")) + b"\x00"
    return struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0) + q + struct.pack(">HH", qtype, 1)


class Dnsmasq:
    """A private dnsmasq on a free 127.0.0.1 port. `records`: {name: [address, ...]}
    (host-record lines, TTL 0), `local`: domains answered locally (NXDOMAIN for unknown
    names in them instead of REFUSED)."""

    def __init__(self, directory: Path, records: dict, local: Iterable[str] = ()):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.dir / "dnsmasq.log"
        self.port = 0
        self.proc: Optional[subprocess.Popen] = None
        self._sync = 0
        self.start(records, local)

    def _args(self, records, local):
        args = [DNSMASQ, "--keep-in-foreground", "--no-resolv", "--no-hosts", "--conf-file=/dev/null",
                "--listen-address=127.0.0.1", "--bind-interfaces", "--port=%d" % self.port,
                "--pid-file=%s" % (self.dir / "dnsmasq.pid"), "--log-facility=%s" % self.log_path,
                "--log-queries", "--local-ttl=0", "--cache-size=0"]
        if os.geteuid() == 0:
            args.append("--user=root")  # else it drops to nobody and cannot write its log
        for d in local:
            args.append("--local=/%s/" % d)
        for name, addrs in records.items():
            for a in addrs:
                args.append("--host-record=%s,%s" % (name, a))
        return args

    def start(self, records: dict, local: Iterable[str] = (), port: int = 0):
        local = list(local)
        for attempt in range(6):
            self.port = port or free_port(socket.SOCK_DGRAM)
            stderr = open(self.dir / "stderr.log", "wb")
            self.proc = subprocess.Popen(self._args(records, local), stdin=subprocess.DEVNULL,
                                         stdout=stderr, stderr=stderr, preexec_fn=_die_with_parent)
            stderr.close()
            try:
                wait_until(lambda: self.proc.poll() is not None or self._answers(), 10, 0.02, "dnsmasq to answer")
            except AssertionError:
                self.stop()
                raise
            if self.proc.poll() is None:
                return
            err = (self.dir / "stderr.log").read_text(errors="replace")
            if "in use" in err and not port and attempt < 5:
                continue
            raise RuntimeError("dnsmasq exited at start (%s):\n%s" % (self.proc.returncode, err))

    def _answers(self) -> bool:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(0.2)
            try:
                s.sendto(dns_query_packet("ready.invalid"), ("127.0.0.1", self.port))
                s.recvfrom(4096)
                return True
            except OSError:
                return False

    def restart(self, records: dict, local: Iterable[str] = ()):
        """Same port, new answers (the log continues)."""
        port = self.port
        self.stop()
        self.start(records, local, port=port)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def server(self) -> str:
        return "127.0.0.1:%d" % self.port

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def queries(self, name: Optional[str] = None) -> list:
        """[(type, name), ...] dnsmasq logged, in order (sync() first for a stable view)."""
        out = []
        for m in re.finditer(r"query\[(\w+)\] (\S+) from", self.log()):
            if name is None or m.group(2).lower() == name.lower():
                out.append((m.group(1), m.group(2)))
        return out

    def sync(self) -> None:
        """Returns once every query received before this call is in the log."""
        self._sync += 1
        marker = "sync-%d-%d.invalid" % (os.getpid(), self._sync)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(2)
            s.sendto(dns_query_packet(marker), ("127.0.0.1", self.port))
            s.recvfrom(4096)
        wait_until(lambda: marker in self.log(), 5, what="dnsmasq to log " + marker)


class FlipDNS:
    """A DNS stub answering A queries for `name` with `first` to the first query and
    `then` to every later one (a rebinding attacker); AAAA: no data; other names: NXDOMAIN."""

    def __init__(self, name: str, first: str, then: str):
        self.name, self.first, self.then = name.lower(), first, then
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.queries: list = []
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def server(self) -> str:
        return "127.0.0.1:%d" % self.port

    def _loop(self):
        while True:
            try:
                data, peer = self.sock.recvfrom(4096)
            except OSError:
                return
            try:
                self.sock.sendto(self._answer(data), peer)
            except Exception:
                continue

    def _answer(self, q: bytes) -> bytes:
        qid, flags = struct.unpack(">HH", q[:4])
        i, labels = 12, []
        while q[i]:
            labels.append(q[i + 1:i + 1 + q[i]].decode())
            i += 1 + q[i]
        qtype, qclass = struct.unpack(">HH", q[i + 1:i + 5])
        question = q[12:i + 5]
        name = ".".join(labels).lower()
        self.queries.append((qtype, name))
        rd = flags & 0x0100
        if name != self.name:
            return struct.pack(">HHHHHH", qid, 0x8000 | rd | 0x0400 | 3, 1, 0, 0, 0) + question
        if qtype != 1:
            return struct.pack(">HHHHHH", qid, 0x8000 | rd | 0x0400, 1, 0, 0, 0) + question
        count = sum(1 for t, n in self.queries if t == 1 and n == name)
        addr = self.first if count == 1 else self.then
        answer = b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 0, 4) + socket.inet_aton(addr)
        return struct.pack(">HHHHHH", qid, 0x8000 | rd | 0x0400, 1, 1, 0, 0) + question + answer

    def close(self):
        self.sock.close()


class SilentUDP:
    """A UDP port that is bound (no ICMP unreachable) but never answers."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]

    def server(self) -> str:
        return "127.0.0.1:%d" % self.port

    def close(self):
        self.sock.close()


# --------------------------------------------------------------------------------------
# The proxy process
# --------------------------------------------------------------------------------------

class Proxy:
    """egress-proxy started on a config text; stdout lines collected and parsed."""

    def __init__(self, directory: Path, config_text: str, binary: str = PROXY_BINARY, env: Optional[dict] = None):
        self.dir = Path(directory)
        self.config_path = self.dir / "proxy.yaml"
        self.config_path.write_text(config_text)
        self.binary = binary
        self.lines: list = []       # raw stdout lines
        self.events: list = []      # parsed JSON objects
        self.bad_lines: list = []   # stdout lines that are not JSON objects
        self.stderr = bytearray()
        self.cond = threading.Condition()
        self.proc = subprocess.Popen(
            [binary, "--config", str(self.config_path), "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=dict(os.environ, **(env or {})), preexec_fn=_die_with_parent)
        self.pid = self.proc.pid
        self._eof = False
        self._reader = threading.Thread(target=self._read_stdout, daemon=True)
        self._reader.start()
        threading.Thread(target=self._read_stderr, daemon=True).start()
        listening = self.wait_event(lambda e: e.get("event") == "listening", timeout=10, what="the listening line")
        self.port = int(listening["proxy"].rsplit(":", 1)[1])
        self.admin_port = int(listening["admin"].rsplit(":", 1)[1])
        self.returncode: Optional[int] = None

    def _read_stdout(self):
        for raw in self.proc.stdout:
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

    def _read_stderr(self):
        for raw in self.proc.stderr:
            with self.cond:
                self.stderr += raw

    def stdout_text(self) -> str:
        with self.cond:
            return "\n".join(self.lines)

    def wait_event(self, predicate: Callable[[dict], bool], timeout: float = 10, what: str = "an event",
                   start: int = 0) -> dict:
        """The first parsed line (from index `start`) matching `predicate`; fails at once if
        the proxy exits first."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for e in self.events[start:]:
                    if predicate(e):
                        return e
                if self._eof:
                    raise AssertionError("egress-proxy exited (status %s) while waiting for %s\nstderr:\n%s\nstdout:\n%s"
                                         % (self.proc.returncode, what, self.stderr.decode(errors="replace"),
                                            "\n".join(self.lines[-30:])))
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("timed out after %.1f s waiting for %s; stdout so far:\n%s"
                                         % (timeout, what, "\n".join(self.lines[-30:])))
                self.cond.wait(min(left, 0.1))

    def decisions(self, **match) -> list:
        with self.cond:
            return [e for e in self.events if e.get("event") == "decision"
                    and all(e.get(k) == v for k, v in match.items())]

    def wait_decision(self, timeout: float = 10, **match) -> dict:
        return self.wait_event(lambda e: e.get("event") == "decision" and all(e.get(k) == v for k, v in match.items()),
                               timeout, "a decision line with %r" % (match,))

    def mark(self) -> int:
        """An index into `events`, for wait_event(start=...)."""
        with self.cond:
            return len(self.events)

    def signal(self, sig) -> None:
        self.proc.send_signal(sig)

    def rss_kib(self) -> int:
        for line in Path("/proc/%d/status" % self.pid).read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS")

    def set_fd_limit(self, n: int) -> None:
        """Lowers the running proxy's RLIMIT_NOFILE (soft and hard) to `n`."""
        resource.prlimit(self.pid, resource.RLIMIT_NOFILE, (n, n))

    def fd_count(self) -> int:
        return len(os.listdir("/proc/%d/fd" % self.pid))

    def wait_exit(self, timeout: float) -> int:
        """Waits for the process to exit by itself (no signal sent)."""
        self.proc.wait(timeout)
        return self.stop()

    def stop(self, timeout: float = 15) -> int:
        """SIGTERM, wait up to `timeout`, then SIGKILL. Returns the exit status (negative:
        killed by that signal)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.returncode = self.proc.returncode
        self._reader.join(5)  # the last lines
        for f in (self.proc.stdout, self.proc.stderr):
            try:
                f.close()
            except (OSError, ValueError):
                pass
        return self.returncode

    def admin_get(self, path: str, timeout: float = 5):
        """(status, body) of GET `path` on the admin listener."""
        with socket.create_connection(("127.0.0.1", self.admin_port), timeout=timeout) as s:
            s.sendall(b"GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n" % path.encode())
            r = RawClient(s)
            status, _, body = r.read_response(timeout)
            return status, body


# --------------------------------------------------------------------------------------
# Raw clients
# --------------------------------------------------------------------------------------

class RawClient:
    """A socket plus a read buffer, for speaking HTTP to the proxy byte by byte."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.buf = bytearray()
        self.eof = False
        host, port = sock.getsockname()[:2]
        self.local = "%s:%d" % (host, port)  # the decision line's "client"

    @classmethod
    def connect(cls, port: int, timeout: float = 10) -> "RawClient":
        s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(s)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self, deadline: float) -> bool:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("timed out reading from the proxy; have %r" % bytes(self.buf[:200]))
        self.sock.settimeout(left)
        try:
            data = self.sock.recv(65536)
        except ConnectionResetError:
            data = b""
        except socket.timeout:
            raise TimeoutError("timed out reading from the proxy; have %r" % bytes(self.buf[:200]))
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def read_head(self, timeout: float = 10):
        """(status, {lower-name: value}) of the next response head."""
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in self.buf:
            if not self._fill(deadline):
                raise ConnectionError("connection closed before a response head; got %r" % bytes(self.buf))
        end = self.buf.index(b"\r\n\r\n") + 4
        head = bytes(self.buf[:end]).decode("latin-1")
        del self.buf[:end]
        lines = head.split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {}
        for l in lines[1:]:
            if ":" in l:
                k, v = l.split(":", 1)
                headers[k.strip().lower()] = v.strip()
        return status, headers

    def read_exact(self, n: int, timeout: float = 10) -> bytes:
        deadline = time.monotonic() + timeout
        while len(self.buf) < n:
            if not self._fill(deadline):
                raise ConnectionError("connection closed after %d of %d bytes" % (len(self.buf), n))
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def read_to_eof(self, timeout: float = 10) -> bytes:
        deadline = time.monotonic() + timeout
        while self._fill(deadline):
            pass
        out = bytes(self.buf)
        self.buf.clear()
        return out

    def read_response(self, timeout: float = 10):
        """(status, headers, body) with a Content-Length body (or to EOF without one)."""
        status, headers = self.read_head(timeout)
        if "content-length" in headers:
            body = self.read_exact(int(headers["content-length"]), timeout)
        else:
            body = self.read_to_eof(timeout)
        return status, headers, body

    def closed_within(self, timeout: float) -> bool:
        """True when the peer closes (EOF or reset) within `timeout`; data is kept."""
        deadline = time.monotonic() + timeout
        try:
            while self._fill(deadline):
                pass
            return True
        except TimeoutError:
            return False

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


# --------------------------------------------------------------------------------------
# Test base class
# --------------------------------------------------------------------------------------

def default_dns_records() -> dict:
    records = {name: ["127.0.0.1"] for name in LOOPBACK_NAMES}
    records.update(DENIED_NAME_ANSWERS)
    return records


DEFAULT_LOCAL_DOMAINS = ("wikidata.org", "wikifunctions.org", "wikipedia.org", "example")


class ProxyTestCase(unittest.TestCase):
    """Per class: a dnsmasq, a TLS upstream and a plain HTTP upstream on loopback. Per test:
    a temp dir; `start_proxy()` writes a config and starts egress-proxy, stopped at
    teardown with SIGTERM (exit status 0 asserted unless the test took it over)."""

    dns_records: Optional[dict] = None

    @classmethod
    def setUpClass(cls):
        cls.class_dir = Path(tempfile.mkdtemp(prefix="egress-it-%s-" % cls.__name__))
        cls.pki = pki()
        cls.dns = Dnsmasq(cls.class_dir / "dns", cls.dns_records or default_dns_records(), DEFAULT_LOCAL_DOMAINS)
        cls.tls = TLSUpstream()
        cls.http = HTTPUpstream()

    @classmethod
    def tearDownClass(cls):
        cls.dns.stop()
        cls.tls.close()
        cls.http.close()
        shutil.rmtree(cls.class_dir, ignore_errors=True)

    def setUp(self):
        self.dir = Path(tempfile.mkdtemp(prefix="t-", dir=self.class_dir))
        self.tls.reset()
        self.tls.mode = "http"
        self.http.reset()
        self.http.response_mode = "length"
        self.http.chunk_trailer = b""
        self.proxy: Optional[Proxy] = None
        self._proxies: list = []
        self._clients: list = []

    def tearDown(self):
        for c in self._clients:
            c.close()
        # stop every proxy before asserting anything, so a failure never leaves one running
        statuses = [(p, p.stop() if p.returncode is None else None) for p in self._proxies]
        for p, rc in statuses:
            if rc is not None:
                self.assertEqual(rc, 0, "egress-proxy exit status after SIGTERM; stderr:\n%s"
                                 % p.stderr.decode(errors="replace"))
            self.check_log(p)

    # -- config and process --
    def allowlist(self) -> list:
        ports = [self.tls.port, self.http.port]
        return [{"host": h, "ports": ports} for h in ("www.wikidata.org", "wikidata.org", "wikifunctions.org",
                                                       "www.wikifunctions.org")] + \
               [{"host": "*.wikidata.org", "ports": ports}]

    def config(self, allowlist=None, limits=None, tls=None, resolver=None, hosts=None,
               allow_cidrs=("127.0.0.0/8",), extra=None) -> dict:
        lim = {"max_connections": 1000, "max_header_bytes": 32768, "header_timeout_ms": 5000,
               "connect_timeout_ms": 2000, "idle_timeout_ms": 30000, "client_hello_timeout_ms": 3000,
               "max_client_hello_bytes": 16384, "drain_timeout_ms": 5000}
        lim.update(limits or {})
        res = {"servers": [self.dns.server()], "timeout_ms": 1000, "min_ttl_s": 0, "max_ttl_s": 300}
        res.update(resolver or {})
        proxy = {"mode": "sidecar", "resolver": res, "limits": lim,
                 "tls": dict({"allow_missing_sni": False, "allow_ech": False}, **(tls or {}))}
        if hosts:
            proxy["hosts"] = hosts
        cfg = {"version": 1, "kind": "proxy", "proxy": proxy,
               "allowlist": allowlist if allowlist is not None else self.allowlist()}
        if allow_cidrs:
            cfg["allow_cidrs"] = list(allow_cidrs)
        cfg.update(extra or {})
        return cfg

    def start_proxy(self, config: Optional[dict] = None, env: Optional[dict] = None, **kw) -> Proxy:
        cfg = config if config is not None else self.config(**kw)
        directory = self.dir / ("proxy%d" % len(self._proxies))
        directory.mkdir()
        p = Proxy(directory, yaml.safe_dump(cfg, sort_keys=False), env=env)
        self._proxies.append(p)
        self.proxy = p
        return p

    def write_config(self, proxy: Proxy, config) -> None:
        text = config if isinstance(config, str) else yaml.safe_dump(config, sort_keys=False)
        tmp = proxy.config_path.with_suffix(".tmp")
        tmp.write_text(text)
        os.replace(tmp, proxy.config_path)

    # -- log checks --
    def check_log(self, p: Proxy) -> None:
        """Every stdout line is a JSON object; every decision line has the fields."""
        self.assertEqual(p.bad_lines, [], "stdout lines that are not JSON objects")
        for d in p.decisions():
            missing = [f for f in DECISION_FIELDS if f not in d]
            self.assertEqual(missing, [], "decision line without %s: %r" % (missing, d))
            self.assertIn(d["verdict"], ("allow", "deny"), d)
            if d["verdict"] == "allow" and d["reason"] == "answered_locally":  # Max-Forwards: 0
                self.assertEqual(d["end"], "complete", d)
                self.assertNotIn("upstream", d, d)
            elif d["verdict"] == "allow":
                self.assertEqual(d["reason"], "allowed", d)
                for f in ("upstream", "connect_ms", "end"):
                    self.assertIn(f, d, "allowed decision without %s" % f)
            if "connect_ms" in d:
                self.assertIn("upstream", d, d)

    # -- clients --
    def client(self, proxy: Optional[Proxy] = None, timeout: float = 10) -> RawClient:
        c = RawClient.connect((proxy or self.proxy).port, timeout)
        self._clients.append(c)
        return c

    def connect_request(self, authority: str, extra: bytes = b"", host_header: Optional[str] = None) -> bytes:
        host_header = authority if host_header is None else host_header
        return (b"CONNECT %s HTTP/1.1\r\nHost: %s\r\n%s\r\n" % (authority.encode(), host_header.encode(), extra))

    def connect(self, authority: str, payload: bytes = b"", extra: bytes = b"", proxy=None, timeout: float = 10):
        """Sends CONNECT (and `payload` in the same write); returns (client, status, headers)."""
        c = self.client(proxy)
        c.send(self.connect_request(authority, extra) + payload)
        status, headers = c.read_head(timeout)
        return c, status, headers

    def tls_via_proxy(self, host: str, port: Optional[int] = None, sni: Optional[str] = None,
                      send_first_flight=None, with_connect_head: bool = False, check_hostname: bool = True,
                      alpn=None, proxy=None):
        """CONNECT host:port, then a TLS handshake through the tunnel with `sni` (default
        `host`). Returns the TLSConn (handshake done)."""
        port = port or self.tls.port
        sni = host if sni is None else sni
        ctx = self.pki.client_context(check_hostname=check_hostname)
        if alpn:
            ctx.set_alpn_protocols(alpn)
        c = self.client(proxy)
        conn = TLSConn(c.sock, ctx, server_side=False, server_hostname=sni)
        head = self.connect_request("%s:%d" % (host, port))
        if with_connect_head:
            conn._progress()
            hello = bytes(conn.raw_out)
            conn.raw_out.clear()
            c.sock.setblocking(True)
            c.sock.sendall(head + hello)
            c.sock.setblocking(False)
        else:
            c.sock.setblocking(True)
            c.send(head)
        c.sock.settimeout(10)
        status, headers = c.read_head()
        self.assertEqual(status, 200, headers)
        if with_connect_head:  # the upstream's answer to the hello may follow the 200 at once
            conn.inc.write(bytes(c.buf))
            c.buf.clear()
        self.assertEqual(c.buf, b"", "bytes after the 200 head")
        conn.handshake(send_first_flight=send_first_flight)
        return conn

    def https_get(self, conn: TLSConn, host: str, path: str = "/") -> bytes:
        conn.send(b"GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % (path.encode(), host.encode()))
        data = conn.recv_to_eof()
        conn.close()
        return data

    def assert_refused(self, client: RawClient, status: int, reason: str, got_status: int, headers: dict):
        self.assertEqual((got_status, headers.get("x-egress-denied")), (status, reason), headers)
        self.assertTrue(client.closed_within(5), "the proxy kept the connection open after a refusal")

    def decision_for(self, client: RawClient, timeout: float = 10, proxy: Optional[Proxy] = None) -> dict:
        """The decision line of `client`'s connection (the first one, for keep-alive)."""
        return (proxy or self.proxy).wait_decision(timeout, client=client.local)

    def refused(self, request: bytes, status: int, reason: str, proxy: Optional[Proxy] = None) -> dict:
        """Sends `request`, asserts the refusal (status, X-Egress-Denied, body, close) and
        returns its decision line."""
        c = self.client(proxy)
        c.send(request)
        got, headers = c.read_head()
        self.assertEqual((got, headers.get("x-egress-denied")), (status, reason),
                         "request %r: %r" % (request[:120], headers))
        body = c.read_exact(int(headers.get("content-length", "0")))
        self.assertIn(reason.encode(), body)
        self.assertTrue(c.closed_within(5), "the proxy kept the connection open after a refusal")
        d = self.decision_for(c, proxy=proxy)
        self.assertEqual((d["verdict"], d["reason"], d["status"]), ("deny", reason, status), d)
        return d

    def hello_after_connect(self, authority: str, hello: bytes, proxy: Optional[Proxy] = None,
                            write: Optional[Callable[[socket.socket, bytes], None]] = None,
                            wait_close: float = 5) -> tuple:
        """CONNECT `authority`, wait for 200, send `hello` (with `write`, or at once).
        Returns (client, whether the proxy closed the connection within `wait_close` s)."""
        c, status, headers = self.connect(authority, proxy=proxy)
        self.assertEqual(status, 200, headers)
        (write or (lambda s, b: s.sendall(b)))(c.sock, hello)
        return c, c.closed_within(wait_close) if wait_close else False

    def assert_upstream_saw_nothing(self, rec: UpstreamConnection, timeout: float = 5):
        self.assertTrue(rec.closed.wait(timeout), "the proxy did not close its upstream connection")
        self.assertEqual(bytes(rec.raw), b"", "the upstream received bytes")


class DnsQueries:
    """Context-free helper: the A/AAAA queries for `name` logged since a point in time."""

    def __init__(self, dns: Dnsmasq, name: str):
        self.dns, self.name = dns, name
        dns.sync()
        self.before = len(dns.queries(name))

    def since(self) -> list:
        self.dns.sync()
        return self.dns.queries(self.name)[self.before:]
