#include "egress/proxy/http_framing.hpp"

#include <catch2/catch.hpp>

using namespace egress::proxy;

TEST_CASE("chunked scanner finds the end at every split point", "[unit][proxy][framing]") {
  const std::string body = "4\r\nWiki\r\n6;ext=1\r\npedia \r\n0\r\nX-Trailer: yes\r\n\r\n";
  const std::string next = "GET http://a/ HTTP/1.1\r\n";
  std::string all = body + next;
  for (std::size_t split = 0; split <= all.size(); ++split) {
    DYNAMIC_SECTION("split at " << split) {
      chunked_scanner s;
      std::size_t used = s.feed(std::string_view(all).substr(0, split));
      if (s.status() == chunked_scanner::state::body) used += s.feed(std::string_view(all).substr(split));
      CHECK(s.status() == chunked_scanner::state::done);
      CHECK(used == body.size());
    }
  }
}

TEST_CASE("chunked scanner rejects malformed framing", "[unit][proxy][framing]") {
  for (const char* bad : {"x\r\n", "4\nWiki\r\n", "4\r\nWikiX\r\n", "\r\n", "11111111111111111\r\n", "0\r\nbad\n"}) {
    DYNAMIC_SECTION(bad) {
      chunked_scanner s;
      s.feed(bad);
      CHECK(s.status() == chunked_scanner::state::error);
    }
  }
}

TEST_CASE("response framing follows RFC 9112 section 6.3", "[unit][proxy][framing]") {
  auto r = parse_response_head("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", false);
  REQUIRE(r);
  CHECK(r->body == body_kind::length);
  CHECK(r->content_length == 5);
  CHECK(parse_response_head("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true)->body == body_kind::none);
  CHECK(parse_response_head("HTTP/1.1 204 No Content\r\n\r\n", false)->body == body_kind::none);
  CHECK(parse_response_head("HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n", false)->body == body_kind::none);
  CHECK(parse_response_head("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", false)->body == body_kind::chunked);
  CHECK(parse_response_head("HTTP/1.0 200 OK\r\n\r\n", false)->body == body_kind::until_close);
  CHECK(parse_response_head("HTTP/1.1 200\r\n\r\n", false));
  CHECK_FALSE(parse_response_head("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", false));
  CHECK_FALSE(parse_response_head("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", false));
  CHECK_FALSE(parse_response_head("HTTP/1.1 200 OK\r\nX: a\r\n folded\r\n\r\n", false));
  CHECK_FALSE(parse_response_head("HTTP/2 200 OK\r\n\r\n", false));
  CHECK_FALSE(parse_response_head("HTTP/1.1 20 OK\r\n\r\n", false));
}

TEST_CASE("client response head drops hop-by-hop fields", "[unit][proxy][framing]") {
  auto r = parse_response_head(
      "HTTP/1.1 200 OK\r\nConnection: X-Secret, keep-alive\r\nX-Secret: 1\r\nKeep-Alive: timeout=5\r\n"
      "Upgrade: h2c\r\nContent-Length: 2\r\nServer: test\r\n\r\n",
      false);
  REQUIRE(r);
  CHECK(client_response_head(*r, true) ==
        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nServer: test\r\nConnection: keep-alive\r\n\r\n");
  CHECK(client_response_head(*r, false).ends_with("Connection: close\r\n\r\n"));
}
