"""Plain-HTTP framing through the built egress-proxy, as the upstream and the client see it:
framing fields forwarded only in canonical form (Transfer-Encoding exactly "chunked",
Content-Length in plain decimal), '_' spellings of framing and proxy fields and
host-override fields never forwarded, chunked trailers that frame or route refused
before they reach the other side, Connection values that are not token lists refused,
Max-Forwards decremented on TRACE/OPTIONS and TRACE with a body refused.

Run (ctest does this, in a PID namespace too):
  unshare --net sh -c 'ip link set lo up && exec /usr/bin/python3 -m unittest -v framing_test'
"""

import sys
import time
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness as h  # noqa: E402


class CanonicalFramingTest(h.ProxyTestCase):

    def setUp(self):
        super().setUp()
        self.start_proxy()
        self.a = b"www.wikidata.org:%d" % self.http.port

    def forward(self, request: bytes):
        c = self.client()
        c.send(request)
        status, headers, body = c.read_response()
        self.assertEqual(status, 200, headers)
        return self.http.connection(0), headers, body

    def test_transfer_encoding_in_any_case_is_forwarded_as_exactly_chunked(self):
        chunked = b"5\r\nhello\r\n0\r\n\r\n"
        rec, _, _ = self.forward(b"POST http://%s/up HTTP/1.1\r\nHost: %s\r\nTransfer-Encoding: ChUnKeD\r\n\r\n%s"
                                 % (self.a, self.a, chunked))
        self.assertIn(b"\r\nTransfer-Encoding: chunked\r\n", rec.head)
        self.assertNotIn(b"ChUnKeD", rec.head)
        self.assertEqual(rec.body, chunked)

    def test_content_length_is_forwarded_in_plain_decimal(self):
        rec, _, _ = self.forward(b"POST http://%s/up HTTP/1.1\r\nHost: %s\r\nContent-Length: 0010\r\n\r\n0123456789"
                                 % (self.a, self.a))
        self.assertIn(("Content-Length", "10"), rec.fields)
        self.assertEqual(rec.body, b"0123456789")

    def test_underscore_spellings_and_host_overrides_never_reach_the_upstream(self):
        rec, _, _ = self.forward(
            b"POST http://%s/up HTTP/1.1\r\nHost: %s\r\nContent-Length: 2\r\nContent_Length: 200\r\n"
            b"Transfer_Encoding: chunked\r\nProxy_Authorization: Basic eDp5\r\nProxy: http://evil.example/\r\n"
            b"X-Forwarded-Host: evil.example\r\nX_Forwarded_Host: evil.example\r\nForwarded: host=evil.example\r\n"
            b"X-Host: evil.example\r\nX-Kept: yes\r\n\r\nok" % (self.a, self.a))
        self.assertNotIn(b"evil", rec.head)
        self.assertNotIn(b"_", rec.head.split(b"\r\n", 1)[1], "a field name with '_' reached the upstream")
        self.assertIn(("X-Kept", "yes"), rec.fields)
        self.assertEqual(rec.body, b"ok")

    def test_response_framing_reaches_the_client_in_canonical_form(self):
        self.http.response_mode = "chunked"
        c = self.client()
        c.send(b"GET http://%s/ HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % (self.a, self.a))
        raw = c.read_to_eof()
        head = raw[:raw.index(b"\r\n\r\n") + 4]
        self.assertIn(b"\r\nTransfer-Encoding: chunked\r\n", head)
        self.assertTrue(raw.endswith(b"0\r\n\r\n"), raw)

    def test_a_connection_value_that_is_not_a_token_list_is_refused(self):
        self.refused(b"GET http://%s/ HTTP/1.1\r\nHost: %s\r\nConnection: keep\\alive\r\n\r\n" % (self.a, self.a),
                     400, "bad_connection")
        time.sleep(0.05)
        self.assertEqual(self.http.count(), 0)


class TrailerTest(h.ProxyTestCase):

    def setUp(self):
        super().setUp()
        self.start_proxy()
        self.a = b"www.wikidata.org:%d" % self.http.port

    def test_request_trailers_that_frame_or_route_never_reach_the_upstream(self):
        for trailer in (b"Host: evil.example", b"Content-Length: 5", b"Transfer-Encoding: chunked",
                        b"GET http://evil.example/ HTTP/1.1", b"content_length: 5"):
            with self.subTest(trailer=trailer):
                self.http.reset()
                c = self.client()
                c.send(b"POST http://%s/up HTTP/1.1\r\nHost: %s\r\nTransfer-Encoding: chunked\r\n\r\n"
                       b"5\r\nhello\r\n0\r\n%s\r\n\r\n" % (self.a, self.a, trailer))
                self.assertTrue(c.closed_within(5), "the proxy kept relaying after a refused trailer")
                self.assertNotIn(b" 200 ", c.buf[:20])
                rec = self.http.connection(0)
                self.assertTrue(rec.closed.wait(5), "the proxy did not close its upstream connection")
                raw = bytes(rec.raw)
                after_head = raw[raw.find(b"\r\n\r\n") + 4:] if b"\r\n\r\n" in raw else b""
                self.assertNotIn(trailer, after_head, "the trailer reached the upstream")
                self.assertNotIn(b"evil", raw)

    def test_a_response_trailer_that_frames_never_reaches_the_client(self):
        self.http.response_mode = "chunked"
        for trailer in (b"Content-Length: 5\r\n", b"Transfer-Encoding: chunked\r\n", b"Host: evil.example\r\n",
                        b"HTTP/1.1 200 OK\r\n"):
            with self.subTest(trailer=trailer):
                self.http.chunk_trailer = trailer
                c = self.client()
                c.send(b"GET http://%s/ HTTP/1.1\r\nHost: %s\r\n\r\n" % (self.a, self.a))
                status, headers = c.read_head()
                self.assertEqual(status, 200)
                rest = c.read_to_eof()
                self.assertNotIn(trailer.rstrip(), rest, "the trailer reached the client")
                self.assertFalse(rest.endswith(b"0\r\n\r\n"), "a body without the refused trailer was completed")

    def test_an_ordinary_trailer_field_is_relayed(self):
        chunked = b"5\r\nhello\r\n0\r\nX-Checksum: abc\r\n\r\n"
        c = self.client()
        c.send(b"POST http://%s/up HTTP/1.1\r\nHost: %s\r\nTransfer-Encoding: chunked\r\n\r\n%s"
               % (self.a, self.a, chunked))
        self.assertEqual(c.read_response()[0], 200)
        self.assertEqual(self.http.connection(0).body, chunked)


    def test_hop_by_hop_trailer_fields_are_dropped_and_the_rest_relayed(self):
        c = self.client()
        c.send(b"POST http://%s/up HTTP/1.1\r\nHost: %s\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"5\r\nhello\r\n0\r\nConnection: close\r\nX-Checksum: abc\r\nProxy-Authorization: x\r\n\r\n"
               % (self.a, self.a))
        self.assertEqual(c.read_response()[0], 200)
        self.assertEqual(self.http.connection(0).body, b"5\r\nhello\r\n0\r\nX-Checksum: abc\r\n\r\n")

class MaxForwardsTest(h.ProxyTestCase):

    def setUp(self):
        super().setUp()
        self.start_proxy()
        self.a = b"www.wikidata.org:%d" % self.http.port

    def test_trace_and_options_have_max_forwards_decremented(self):
        for method, path in ((b"TRACE", b"/t"), (b"OPTIONS", b"/o")):
            with self.subTest(method=method):
                self.http.reset()
                c = self.client()
                c.send(b"%s http://%s%s HTTP/1.1\r\nHost: %s\r\nMax-Forwards: 3\r\n\r\n" % (method, self.a, path, self.a))
                self.assertEqual(c.read_response()[0], 200)
                rec = self.http.connection(0)
                self.assertEqual(rec.request_line, "%s %s HTTP/1.1" % (method.decode(), path.decode()))
                self.assertIn(("Max-Forwards", "2"), rec.fields)

    def test_trace_and_options_at_max_forwards_0_are_answered_by_the_proxy(self):
        for method in (b"TRACE", b"OPTIONS"):
            with self.subTest(method=method):
                before = self.http.count()
                c = self.client()
                c.send(b"%s http://%s/x HTTP/1.1\r\nHost: %s\r\nMax-Forwards: 0\r\nAuthorization: secret\r\n\r\n"
                       % (method, self.a, self.a))
                status, headers, body = c.read_response()
                self.assertEqual(status, 200, headers)
                if method == b"TRACE":
                    self.assertEqual(headers.get("content-type"), "message/http")
                    self.assertIn(b"TRACE http://%s/x HTTP/1.1" % self.a, body)
                    self.assertNotIn(b"secret", body)
                # keep-alive: the same connection serves the next request
                c.send(b"GET http://%s/ HTTP/1.1\r\nHost: %s\r\n\r\n" % (self.a, self.a))
                self.assertEqual(c.read_response()[0], 200)
                self.assertEqual(self.http.count(), before + 1, "the Max-Forwards: 0 request was forwarded")
                d = self.proxy.wait_decision(method=method.decode())
                self.assertEqual((d["verdict"], d["reason"]), ("allow", "answered_locally"), d)
        # a host off the allowlist is refused, not answered
        self.refused(b"TRACE http://example.org/ HTTP/1.1\r\nHost: example.org\r\nMax-Forwards: 0\r\n\r\n",
                     403, "host_not_allowed")

    def test_options_for_the_whole_server_is_forwarded_as_asterisk(self):
        c = self.client()
        c.send(b"OPTIONS http://%s HTTP/1.1\r\nHost: %s\r\n\r\n" % (self.a, self.a))
        self.assertEqual(c.read_response()[0], 200)
        self.assertEqual(self.http.connection(0).request_line, "OPTIONS * HTTP/1.1")

    def test_trace_with_a_body_is_refused_and_not_forwarded(self):
        self.refused(b"TRACE http://%s/ HTTP/1.1\r\nHost: %s\r\nContent-Length: 4\r\n\r\nbody" % (self.a, self.a),
                     400, "trace_with_body")
        time.sleep(0.05)
        self.assertEqual(self.http.count(), 0)


if __name__ == "__main__":
    unittest.main()
