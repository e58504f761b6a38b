// parse_request_head on a transparent HTTP listener (head_context::transparent): the
// target is origin-form and Host names it; the proxy forms are refused; upstream_head
// rebuilds the same head an absolute-form request would get.

#include "egress/proxy/request_head.hpp"

#include <catch2/catch.hpp>

#include <string>

namespace {

using egress::proxy::head_context;
using egress::proxy::parse_request_head;
using egress::proxy::request_form;
using egress::proxy::upstream_head;

std::string reason_of(const std::string& head, std::uint16_t port = 80) {
  auto r = parse_request_head(head, head_context{true, port});
  return r ? std::string("ok") : std::string(r.error().reason);
}

}  // namespace

TEST_CASE("transparent HTTP: origin-form routed by Host on the listener's port", "[unit][request_head]") {
  std::string head = "GET /w/api.php?action=query HTTP/1.1\r\nHost: WWW.Wikidata.org.\r\nAccept: */*\r\n\r\n";
  auto r = parse_request_head(head, head_context{true, 80});
  REQUIRE(r.has_value());
  CHECK(r->form == request_form::origin);
  CHECK(r->host.text == "www.wikidata.org");
  CHECK(r->port == 80);
  CHECK(r->path_and_query == "/w/api.php?action=query");
  CHECK(upstream_head(*r) ==
        "GET /w/api.php?action=query HTTP/1.1\r\nHost: www.wikidata.org\r\nAccept: */*\r\nConnection: close\r\n\r\n");

  auto alt = parse_request_head("GET / HTTP/1.0\r\nHost: wikidata.org:8080\r\n\r\n", head_context{true, 8080});
  REQUIRE(alt.has_value());
  CHECK(alt->port == 8080);
  CHECK(upstream_head(*alt).starts_with("GET / HTTP/1.1\r\nHost: wikidata.org:8080\r\n"));
}

TEST_CASE("transparent HTTP: proxy forms, missing or mismatched Host are refused", "[unit][request_head]") {
  CHECK(reason_of("GET http://wikidata.org/ HTTP/1.1\r\nHost: wikidata.org\r\n\r\n") == "transparent_absolute_form");
  CHECK(reason_of("CONNECT wikidata.org:443 HTTP/1.1\r\nHost: wikidata.org:443\r\n\r\n") == "transparent_connect");
  CHECK(reason_of("OPTIONS * HTTP/1.1\r\nHost: wikidata.org\r\n\r\n") == "asterisk_form");
  CHECK(reason_of("GET wikidata.org/ HTTP/1.1\r\nHost: wikidata.org\r\n\r\n") == "bad_target");
  CHECK(reason_of("GET / HTTP/1.1\r\n\r\n") == "host_missing");
  CHECK(reason_of("GET / HTTP/1.0\r\n\r\n") == "host_missing");  // 1.0 too: nothing else names the target
  CHECK(reason_of("GET / HTTP/1.1\r\nHost: wikidata.org:8080\r\n\r\n") == "host_mismatch");
  CHECK(reason_of("GET / HTTP/1.1\r\nHost: wikidata.org\r\n\r\n", 8080) == "host_mismatch");
  CHECK(reason_of("GET / HTTP/1.1\r\nHost: a@wikidata.org\r\n\r\n") == "host_header_invalid");
  CHECK(reason_of("GET / HTTP/1.1\r\nHost: 127.1\r\n\r\n") == "host_header_invalid");
  CHECK(reason_of("GET / HTTP/1.1\r\nHost: wikidata.org\r\nHost: wikidata.org\r\n\r\n") == "host_duplicate");
  CHECK(reason_of("GET /\xc3\xa9 HTTP/1.1\r\nHost: wikidata.org\r\n\r\n") == "bad_target");
  // Framing checks are the same as on the proxy listener.
  CHECK(reason_of("POST / HTTP/1.1\r\nHost: wikidata.org\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n") ==
        "cl_and_te");
  // The proxy listener still refuses origin-form.
  auto r = parse_request_head("GET / HTTP/1.1\r\nHost: wikidata.org\r\n\r\n");
  REQUIRE_FALSE(r.has_value());
  CHECK(r.error().reason == "origin_form");
}
