"""Plain HTTP (absolute-form) through the built egress-proxy: what is forwarded (one Host,
origin-form, hop-by-hop and Proxy-* headers stripped, bodies), keep-alive with the client
with a fresh upstream connection per request, and the smuggling forms and malformed heads
that must be refused with 400/431 and never reach the upstream.

Run (ctest does this, in a PID namespace too):
  unshare --net sh -c 'ip link set lo up && exec /usr/bin/python3 -m unittest -v http_test'
"""

import sys
import time
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness as h  # noqa: E402


class ForwardingTest(h.ProxyTestCase):

    def setUp(self):
        super().setUp()
        self.start_proxy()
        self.authority = b"www.wikidata.org:%d" % self.http.port

    def get(self, request: bytes):
        c = self.client()
        c.send(request)
        status, headers, body = c.read_response()
        return c, status, headers, body

    def names(self, rec):
        return [k.strip().lower() for k, _ in rec.fields]

    def test_absolute_form_get_is_forwarded_in_origin_form_with_exactly_one_host(self):
        c, status, headers, body = self.get(
            b"GET http://%s/wiki/Q42?action=raw HTTP/1.1\r\nHost: %s\r\nUser-Agent: it/1\r\nAccept: */*\r\n\r\n"
            % (self.authority, self.authority))
        self.assertEqual(status, 200)
        self.assertEqual(body, b"plain upstream saw GET /wiki/Q42?action=raw HTTP/1.1\n")
        rec = self.http.connection(0)
        self.assertEqual(rec.request_line, "GET /wiki/Q42?action=raw HTTP/1.1")
        hosts = [v for k, v in rec.fields if k.strip().lower() == "host"]
        self.assertEqual(hosts, [self.authority.decode()])
        self.assertEqual(self.names(rec)[0], "host", "Host comes first")
        self.assertIn(("User-Agent", "it/1"), rec.fields)
        d = self.decision_for(c)
        self.assertEqual((d["method"], d["host"], d["port"], d["status"], d["end"]),
                         ("GET", "www.wikidata.org", self.http.port, 200, "complete"), d)

    def test_target_without_path_is_sent_as_slash_and_upper_case_host_with_trailing_dot_matches(self):
        c, status, _, _ = self.get(b"GET http://WWW.Wikidata.ORG.:%d HTTP/1.1\r\nHost: www.wikidata.org.:%d\r\n\r\n"
                                   % (self.http.port, self.http.port))
        self.assertEqual(status, 200)
        rec = self.http.connection(0)
        self.assertEqual(rec.request_line, "GET / HTTP/1.1")
        self.assertEqual([v for k, v in rec.fields if k.lower() == "host"], [self.authority.decode()])

    def test_hop_by_hop_and_proxy_headers_are_stripped(self):
        _, status, _, _ = self.get(
            b"GET http://%s/ HTTP/1.1\r\nHost: %s\r\nConnection: keep-alive, X-Drop-Me\r\nX-Drop-Me: 1\r\n"
            b"Keep-Alive: timeout=5\r\nTE: trailers\r\nTrailer: X-T\r\nUpgrade: h2c\r\n"
            b"Proxy-Authorization: Basic c2VjcmV0\r\nProxy-Connection: keep-alive\r\nProxy-Foo: bar\r\n"
            b"X-Keep: yes\r\n\r\n" % (self.authority, self.authority))
        self.assertEqual(status, 200)
        rec = self.http.connection(0)
        names = self.names(rec)
        for gone in ("x-drop-me", "keep-alive", "te", "trailer", "upgrade", "proxy-authorization",
                     "proxy-connection", "proxy-foo"):
            self.assertNotIn(gone, names)
        self.assertIn(("X-Keep", "yes"), rec.fields)
        self.assertEqual([v for k, v in rec.fields if k.lower() == "connection"], ["close"])

    def test_connection_naming_host_or_content_length_does_not_drop_them(self):
        body = b"0123456789"
        _, status, _, _ = self.get(
            b"POST http://%s/submit HTTP/1.1\r\nHost: %s\r\nConnection: Host, Content-Length\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (self.authority, self.authority, len(body), body))
        self.assertEqual(status, 200)
        rec = self.http.connection(0)
        self.assertIn("host", self.names(rec))
        self.assertIn(("Content-Length", "10"), rec.fields)
        self.assertEqual(rec.body, body)

    def test_post_with_content_length_body_is_forwarded_exactly(self):
        body = bytes(range(256)) * 300
        c, status, _, _ = self.get(b"POST http://%s/up HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\n\r\n%s"
                                   % (self.authority, self.authority, len(body), body))
        self.assertEqual(status, 200)
        self.assertEqual(self.http.connection(0).body, body)
        self.assertEqual(self.decision_for(c)["bytes_up"], len(body))

    def test_chunked_body_is_forwarded_exactly(self):
        chunked = b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
        _, status, _, _ = self.get(b"POST http://%s/up HTTP/1.1\r\nHost: %s\r\nTransfer-Encoding: chunked\r\n\r\n%s"
                                   % (self.authority, self.authority, chunked))
        self.assertEqual(status, 200)
        rec = self.http.connection(0)
        self.assertEqual(rec.body, chunked)
        self.assertIn(("Transfer-Encoding", "chunked"), rec.fields)

    def test_keep_alive_with_the_client_and_a_fresh_upstream_connection_per_request(self):
        c = self.client()
        other = b"wikifunctions.org:%d" % self.http.port
        for i, authority in enumerate((self.authority, other, self.authority)):
            c.send(b"GET http://%s/r%d HTTP/1.1\r\nHost: %s\r\n\r\n" % (authority, i, authority))
            status, headers, body = c.read_response()
            self.assertEqual((status, body), (200, b"plain upstream saw GET /r%d HTTP/1.1\n" % i))
            self.assertNotEqual(headers.get("connection", "").lower(), "close")
        self.assertEqual(self.http.count(), 3, "one upstream connection per request")
        self.assertEqual([self.http.connection(i).request_line for i in range(3)],
                         ["GET /r0 HTTP/1.1", "GET /r1 HTTP/1.1", "GET /r2 HTTP/1.1"])
        decisions = h.wait_until(lambda: len(self.proxy.decisions(client=c.local)) == 3 and
                                 self.proxy.decisions(client=c.local), 5, what="three decisions")
        self.assertEqual(len({d["conn"] for d in decisions}), 1, "same client connection")
        self.assertEqual([d["host"] for d in decisions], ["www.wikidata.org", "wikifunctions.org", "www.wikidata.org"])

    def test_keep_alive_second_request_to_a_host_not_on_the_list_is_refused(self):
        c = self.client()
        c.send(b"GET http://%s/ok HTTP/1.1\r\nHost: %s\r\n\r\n" % (self.authority, self.authority))
        self.assertEqual(c.read_response()[0], 200)
        c.send(b"GET http://evil.example/ HTTP/1.1\r\nHost: evil.example\r\n\r\n")
        status, headers = c.read_head()
        self.assertEqual((status, headers.get("x-egress-denied")), (403, "host_not_allowed"))
        self.assertEqual(self.http.count(), 1)

    def test_smuggling_on_the_second_request_of_a_keep_alive_connection_is_400_and_not_forwarded(self):
        c = self.client()
        c.send(b"GET http://%s/first HTTP/1.1\r\nHost: %s\r\n\r\n" % (self.authority, self.authority))
        self.assertEqual(c.read_response()[0], 200)
        c.send(b"POST http://%s/ HTTP/1.1\r\nHost: %s\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"0\r\n\r\nGET http://%s/smuggled HTTP/1.1\r\nHost: %s\r\n\r\n"
               % (self.authority, self.authority, self.authority, self.authority))
        status, headers = c.read_head()
        self.assertEqual((status, headers.get("x-egress-denied")), (400, "cl_and_te"))
        self.assertTrue(c.closed_within(5))
        time.sleep(0.1)
        self.assertEqual(self.http.count(), 1)
        self.assertEqual(self.http.connection(0).request_line, "GET /first HTTP/1.1")

    def test_pipelined_requests_with_a_body_in_one_packet_are_answered_in_order(self):
        c = self.client()
        a = self.authority
        c.send(b"POST http://%s/one HTTP/1.1\r\nHost: %s\r\nContent-Length: 5\r\n\r\nhello"
               b"GET http://%s/two HTTP/1.1\r\nHost: %s\r\n\r\n" % (a, a, a, a))
        for path in (b"/one", b"/two"):
            status, _, body = c.read_response()
            self.assertEqual(status, 200)
            self.assertIn(path, body)
        self.assertEqual(self.http.connection(0).body, b"hello")
        self.assertEqual(self.http.connection(1).request_line, "GET /two HTTP/1.1")

    def test_response_without_length_is_relayed_until_close_and_the_client_connection_closes(self):
        self.http.response_mode = "close"
        c = self.client()
        c.send(b"GET http://%s/u HTTP/1.1\r\nHost: %s\r\n\r\n" % (self.authority, self.authority))
        status, headers = c.read_head()
        self.assertEqual(status, 200)
        self.assertEqual(c.read_to_eof(), b"plain upstream saw GET /u HTTP/1.1\n")
        self.assertEqual(self.decision_for(c)["end"], "complete")

    def test_chunked_response_is_relayed_and_keep_alive_continues(self):
        self.http.response_mode = "chunked"
        c = self.client()
        for i in range(2):
            c.send(b"GET http://%s/c%d HTTP/1.1\r\nHost: %s\r\n\r\n" % (self.authority, i, self.authority))
            status, headers = c.read_head()
            self.assertEqual((status, headers.get("transfer-encoding", "").lower()), (200, "chunked"))
            data = b""
            while not data.endswith(b"0\r\n\r\n"):
                data += c.read_exact(1)
            self.assertIn(b"GET /c%d" % i, data)

    def test_head_response_has_no_body_and_keep_alive_continues(self):
        c = self.client()
        c.send(b"HEAD http://%s/h HTTP/1.1\r\nHost: %s\r\n\r\n" % (self.authority, self.authority))
        status, headers = c.read_head()
        self.assertEqual(status, 200)
        self.assertIn("content-length", headers)
        c.send(b"GET http://%s/after HTTP/1.1\r\nHost: %s\r\n\r\n" % (self.authority, self.authority))
        status, _, body = c.read_response()
        self.assertEqual((status, body), (200, b"plain upstream saw GET /after HTTP/1.1\n"))

    def test_expect_100_continue_gets_an_interim_response_then_the_body_is_forwarded(self):
        c = self.client()
        c.send(b"POST http://%s/e HTTP/1.1\r\nHost: %s\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n"
               % (self.authority, self.authority))
        status, _ = c.read_head()
        self.assertEqual(status, 100)
        c.send(b"body")
        status, _, _ = c.read_response()
        self.assertEqual(status, 200)
        self.assertEqual(self.http.connection(0).body, b"body")

    def test_upstream_answering_garbage_is_502_bad_upstream_response(self):
        self.http.response_mode = "garbage"
        self.refused(b"GET http://%s/g HTTP/1.1\r\nHost: %s\r\n\r\n" % (self.authority, self.authority),
                     502, "bad_upstream_response")

    def test_connection_close_from_the_client_closes_after_the_response(self):
        c = self.client()
        c.send(b"GET http://%s/ HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % (self.authority, self.authority))
        self.assertEqual(c.read_response()[0], 200)
        self.assertTrue(c.closed_within(5))

    def test_http_1_0_without_keep_alive_closes_after_the_response(self):
        c = self.client()
        c.send(b"GET http://%s/ HTTP/1.0\r\nHost: %s\r\n\r\n" % (self.authority, self.authority))
        status, _, _ = c.read_response()
        self.assertEqual(status, 200)
        self.assertTrue(c.closed_within(5))

    def test_response_for_a_metrics_path_comes_from_the_upstream_not_the_admin_handler(self):
        _, status, headers, body = self.get(b"GET http://%s/metrics HTTP/1.1\r\nHost: %s\r\n\r\n"
                                            % (self.authority, self.authority))
        self.assertEqual((status, headers.get("x-upstream")), (200, "plain"))
        self.assertEqual(body, b"plain upstream saw GET /metrics HTTP/1.1\n")
        self.assertNotIn(b"egress_proxy", body)


class RefusedRequestTest(h.ProxyTestCase):
    """Malformed and smuggling heads: refused with the stable reason, connection closed,
    nothing reaches the upstream."""

    def setUp(self):
        super().setUp()
        self.start_proxy(limits={"max_header_bytes": 8192})
        self.a = b"www.wikidata.org:%d" % self.http.port

    def tearDown(self):
        time.sleep(0.05)
        self.assertEqual(self.http.count(), 0, "a refused request reached the upstream")
        super().tearDown()

    def assert_400(self, request: bytes, reason: str):
        self.refused(request, 400, reason)

    def test_smuggling_content_length_and_transfer_encoding_is_400(self):
        self.assert_400(b"POST http://%s/ HTTP/1.1\r\nHost: %s\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n"
                        b"0\r\n\r\nX" % (self.a, self.a), "cl_and_te")

    def test_smuggling_transfer_encoding_before_content_length_is_400(self):
        self.assert_400(b"POST http://%s/ HTTP/1.1\r\nHost: %s\r\nTransfer-Encoding: chunked\r\nContent-Length: 6\r\n\r\n"
                        b"0\r\n\r\nX" % (self.a, self.a), "cl_and_te")

    def test_smuggling_two_content_lengths_is_400(self):
        self.assert_400(b"POST http://%s/ HTTP/1.1\r\nHost: %s\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello"
                        % (self.a, self.a), "duplicate_content_length")

    def test_smuggling_content_length_list_is_400(self):
        self.assert_400(b"POST http://%s/ HTTP/1.1\r\nHost: %s\r\nContent-Length: 5, 5\r\n\r\nhello" % (self.a, self.a),
                        "duplicate_content_length")

    def test_smuggling_signed_content_length_is_400(self):
        self.assert_400(b"POST http://%s/ HTTP/1.1\r\nHost: %s\r\nContent-Length: +5\r\n\r\nhello" % (self.a, self.a),
                        "bad_content_length")

    def test_smuggling_transfer_encoding_identity_is_400(self):
        self.assert_400(b"POST http://%s/ HTTP/1.1\r\nHost: %s\r\nTransfer-Encoding: identity\r\n\r\n" % (self.a, self.a),
                        "bad_transfer_encoding")

    def test_smuggling_transfer_encoding_list_is_400(self):
        self.assert_400(b"POST http://%s/ HTTP/1.1\r\nHost: %s\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n"
                        % (self.a, self.a), "bad_transfer_encoding")

    def test_smuggling_two_transfer_encodings_is_400(self):
        self.assert_400(b"POST http://%s/ HTTP/1.1\r\nHost: %s\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked"
                        b"\r\n\r\n0\r\n\r\n" % (self.a, self.a), "bad_transfer_encoding")

    def test_smuggling_transfer_encoding_in_http_1_0_is_400(self):
        self.assert_400(b"POST http://%s/ HTTP/1.0\r\nHost: %s\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
                        % (self.a, self.a), "transfer_encoding_http10")

    def test_smuggling_obs_fold_is_400(self):
        self.assert_400(b"GET http://%s/ HTTP/1.1\r\nHost: %s\r\nX-Folded: a\r\n b\r\n\r\n" % (self.a, self.a), "obs_fold")

    def test_smuggling_two_host_headers_is_400(self):
        self.assert_400(b"GET http://%s/ HTTP/1.1\r\nHost: %s\r\nHost: %s\r\n\r\n" % (self.a, self.a, self.a),
                        "host_duplicate")

    def test_smuggling_host_header_differs_from_target_is_400(self):
        self.assert_400(b"GET http://%s/ HTTP/1.1\r\nHost: evil.example\r\n\r\n" % self.a, "host_mismatch")

    def test_smuggling_host_header_port_differs_from_target_is_400(self):
        self.assert_400(b"GET http://%s/ HTTP/1.1\r\nHost: www.wikidata.org:1\r\n\r\n" % self.a, "host_mismatch")

    def test_smuggling_host_header_missing_in_http_1_1_is_400(self):
        self.assert_400(b"GET http://%s/ HTTP/1.1\r\nAccept: */*\r\n\r\n" % self.a, "host_missing")

    def test_smuggling_userinfo_in_target_is_400(self):
        self.assert_400(b"GET http://www.wikidata.org@evil.example/ HTTP/1.1\r\nHost: evil.example\r\n\r\n",
                        "userinfo_in_target")
        self.assert_400(b"GET http://%s@evil.example/ HTTP/1.1\r\nHost: evil.example\r\n\r\n" % self.a,
                        "userinfo_in_target")
        self.dns.sync()
        self.assertEqual([n for _, n in self.dns.queries() if "evil" in n], [])

    def test_smuggling_whitespace_before_colon_is_400(self):
        self.assert_400(b"GET http://%s/ HTTP/1.1\r\nHost : %s\r\n\r\n" % (self.a, self.a), "whitespace_before_colon")

    def test_smuggling_bare_lf_is_400(self):
        self.assert_400(b"GET http://%s/ HTTP/1.1\nHost: %s\n\n" % (self.a, self.a), "bare_lf")

    def test_smuggling_nul_in_a_field_value_is_400(self):
        self.assert_400(b"GET http://%s/ HTTP/1.1\r\nHost: %s\r\nX-A: a\x00b\r\n\r\n" % (self.a, self.a),
                        "bad_field_value")

    def test_origin_form_request_is_400(self):
        self.assert_400(b"GET /wiki HTTP/1.1\r\nHost: %s\r\n\r\n" % self.a, "origin_form")

    def test_origin_form_request_for_metrics_is_400_not_the_admin_handler(self):
        self.assert_400(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", "origin_form")

    def test_https_absolute_form_is_400(self):
        self.assert_400(b"GET https://%s/ HTTP/1.1\r\nHost: %s\r\n\r\n" % (self.a, self.a), "https_absolute_form")

    def test_http_0_9_request_is_400(self):
        c = self.client()
        c.send(b"GET http://%s/\r\n" % self.a)
        status, headers = c.read_head(5)
        self.assertEqual(status, 400, headers)
        self.assertTrue(c.closed_within(5))

    def test_fragment_in_target_is_400(self):
        self.assert_400(b"GET http://%s/#frag HTTP/1.1\r\nHost: %s\r\n\r\n" % (self.a, self.a), "fragment_in_target")

    def test_non_ascii_host_is_400(self):
        self.assert_400(b"GET http://www.wikid\xc3\xa4ta.org/ HTTP/1.1\r\nHost: www.wikid\xc3\xa4ta.org\r\n\r\n",
                        "host_non_ascii")

    def test_odd_ipv4_host_in_absolute_form_is_400(self):
        self.assert_400(b"GET http://2130706433:%d/ HTTP/1.1\r\nHost: 2130706433:%d\r\n\r\n"
                        % (self.http.port, self.http.port), "host_non_canonical_ipv4")

    def test_oversized_headers_are_431(self):
        big = b"X-Big: " + b"a" * 9000 + b"\r\n"
        self.refused(b"GET http://%s/ HTTP/1.1\r\nHost: %s\r\n%s\r\n" % (self.a, self.a, big), 431, "headers_too_large")

    def test_too_many_header_fields_are_431(self):
        fields = b"".join(b"X-F%d: 1\r\n" % i for i in range(120))
        self.refused(b"GET http://%s/ HTTP/1.1\r\nHost: %s\r\n%s\r\n" % (self.a, self.a, fields), 431, "too_many_fields")


if __name__ == "__main__":
    unittest.main()
