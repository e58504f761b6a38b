// Unit tests for the chunked-body scanner (framing and trailer check), the upstream
// response head parser and the head the client gets.

#include "egress/proxy/http_framing.hpp"

#include <catch2/catch.hpp>

#include <string>
#include <vector>

using namespace egress::proxy;

namespace {

// What a relay using `step` writes for `input` cut at `cuts`, and the final state.
struct relayed {
  std::string out;
  std::size_t consumed = 0;
  chunked_scanner::state status = chunked_scanner::state::body;
};

relayed relay(std::string_view input, const std::vector<std::size_t>& cuts) {
  chunked_scanner s;
  relayed r;
  std::size_t from = 0;
  std::vector<std::size_t> ends = cuts;
  ends.push_back(input.size());
  for (std::size_t end : ends) {
    if (s.status() != chunked_scanner::state::body || end < from) break;
    const std::string_view piece = input.substr(from, end - from);
    const auto st = s.step(piece);
    REQUIRE(st.verbatim <= st.consumed);
    REQUIRE(st.consumed <= piece.size());
    r.consumed += st.consumed;
    if (s.status() == chunked_scanner::state::error) break;
    r.out.append(piece.substr(0, st.verbatim));
    if (s.status() == chunked_scanner::state::done) r.out.append(s.trailer_section());
    else REQUIRE(st.consumed == piece.size());
    from = end;
  }
  r.status = s.status();
  return r;
}

}  // namespace

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

TEST_CASE("chunked step relays data verbatim and rebuilds the trailer at every split point", "[unit][proxy][framing]") {
  const std::string chunks = "4\r\nWiki\r\n6;ext=1\r\npedia \r\n0;last\r\n";
  const std::string trailer = "X-Checksum:  abc \r\nConnection: close\r\nproxy_authorization: x\r\nTE: trailers\r\n"
                              "Keep-Alive: 5\r\nTrailer: X\r\nUpgrade: h2c\r\nProxy: http://e/\r\nServer-Timing: db;dur=1\r\n\r\n";
  const std::string next = "GET http://a/ HTTP/1.1\r\n";
  const std::string all = chunks + trailer + next;
  const std::string expected = chunks + "X-Checksum: abc\r\nServer-Timing: db;dur=1\r\n\r\n";
  for (std::size_t split = 0; split <= all.size(); ++split) {
    for (std::size_t split2 = split; split2 <= all.size(); split2 += 7) {
      INFO("splits at " << split << ", " << split2);
      const auto r = relay(all, {split, split2});
      REQUIRE(r.status == chunked_scanner::state::done);
      CHECK(r.consumed == chunks.size() + trailer.size());
      CHECK(r.out == expected);
    }
  }
  chunked_scanner s;
  s.step(all);
  CHECK(s.dropped_trailer_fields() == 7);
}

TEST_CASE("chunked step: no trailer fields gives the bare final CRLF", "[unit][proxy][framing]") {
  const auto r = relay("3\r\nabc\r\n0\r\n\r\n", {});
  CHECK(r.status == chunked_scanner::state::done);
  CHECK(r.out == "3\r\nabc\r\n0\r\n\r\n");
  chunked_scanner s;
  CHECK(s.trailer_section().empty());  // nothing before done
}

TEST_CASE("trailer lines that are not field lines are refused", "[unit][proxy][framing]") {
  using namespace std::string_literals;
  for (const std::string& line : {"GET http://evil.example/ HTTP/1.1"s, "x"s, " folded: yes"s, "\tX: y"s, "X : y"s,
                                  ": empty-name"s, "X\x01: y"s, "X: a\x01b"s, "X: a\x7f"s, "X: nul\0"s, "X(y): z"s,
                                  "X: y\rZ"s}) {
    const std::string body = "1\r\na\r\n0\r\nX-Ok: 1\r\n" + line + "\r\n\r\n";
    DYNAMIC_SECTION(line) {
      for (std::size_t split = 0; split <= body.size(); ++split) {
        INFO("split at " << split);
        const auto r = relay(body, {split});
        CHECK(r.status == chunked_scanner::state::error);
        // Nothing of the trailer section went out.
        CHECK(r.out.size() <= std::string_view("1\r\na\r\n0\r\n").size());
      }
    }
  }
}

TEST_CASE("trailer fields that frame or route the message are refused", "[unit][proxy][framing]") {
  for (const char* field : {"Host: evil.example", "host: a", "Content-Length: 5", "content_length: 5",
                            "Transfer-Encoding: chunked", "TRANSFER_ENCODING: chunked", "Content-Length: 0"}) {
    DYNAMIC_SECTION(field) {
      const std::string body = "0\r\n" + std::string(field) + "\r\n\r\n";
      chunked_scanner a;
      a.step(body);
      CHECK(a.status() == chunked_scanner::state::error);
      chunked_scanner b;
      b.feed(body);
      CHECK(b.status() == chunked_scanner::state::error);
    }
  }
}

TEST_CASE("feed, which relays verbatim, refuses the trailer fields step drops", "[unit][proxy][framing]") {
  for (const char* field : {"Connection: close", "Keep-Alive: 1", "TE: trailers", "Trailer: X", "Upgrade: h2c",
                            "Proxy-Authorization: Basic eA==", "Proxy_Connection: close", "Proxy: http://e/"}) {
    DYNAMIC_SECTION(field) {
      const std::string body = "0\r\n" + std::string(field) + "\r\n\r\n";
      chunked_scanner s;
      s.feed(body);
      CHECK(s.status() == chunked_scanner::state::error);
      chunked_scanner t;
      CHECK(t.step(body).consumed == body.size());
      CHECK(t.status() == chunked_scanner::state::done);
      CHECK(t.trailer_section() == "\r\n");
    }
  }
  chunked_scanner s;
  const std::string ok = "0\r\nX-Checksum: 1\r\n\r\n";
  CHECK(s.feed(ok) == ok.size());
  CHECK(s.status() == chunked_scanner::state::done);
}

TEST_CASE("trailer section, trailer line and chunk-ext are bounded; chunk-ext has no control bytes",
          "[unit][proxy][framing]") {
  auto status_of = [](const std::string& body) {
    chunked_scanner s;
    s.step(body);
    return s.status();
  };
  const std::string long_value(chunked_scanner::max_line_bytes, 'v');
  CHECK(status_of("0\r\nX: " + long_value.substr(0, chunked_scanner::max_line_bytes - 3) + "\r\n\r\n") ==
        chunked_scanner::state::done);
  CHECK(status_of("0\r\nX: " + long_value + "\r\n\r\n") == chunked_scanner::state::error);
  std::string many;
  for (std::size_t i = 0; i <= chunked_scanner::max_trailer_fields; ++i) many += "X-" + std::to_string(i) + ": 1\r\n";
  CHECK(status_of("0\r\n" + many + "\r\n") == chunked_scanner::state::error);
  std::string big;
  while (big.size() <= chunked_scanner::max_trailer_bytes) big += "Connection: " + std::string(100, 'c') + "\r\n";
  CHECK(status_of("0\r\n" + big + "\r\n") == chunked_scanner::state::error);
  CHECK(status_of("1;a=\x01\r\nx\r\n0\r\n\r\n") == chunked_scanner::state::error);
  CHECK(status_of("1;a=\"q\"\r\nx\r\n0\r\n\r\n") == chunked_scanner::state::done);
  CHECK(status_of("1;" + long_value + "\r\nx\r\n0\r\n\r\n") == chunked_scanner::state::error);
}

TEST_CASE("chunk-ext must have the RFC 9112 shape", "[unit][proxy][framing]") {
  auto status_of = [](const std::string& size_line) {
    chunked_scanner s;
    s.step(size_line + "\r\nx\r\n0\r\n\r\n");
    return s.status();
  };
  for (const char* ok : {"1;a", "1;a=b", "1;a=\"q \\\" x\"", "1 ;a", "1; a = b", "1;a;b=c", "1\t;\ta=\"\""}) {
    INFO(ok);
    CHECK(status_of(ok) == chunked_scanner::state::done);
  }
  for (const char* bad : {"1;", "1 ", "1;a ", "1;a=", "1;a=b ", "1;=b", "1;a=\"unclosed", "1;a=\"x\"y", "1;a[b]",
                          "1;a=b c", "1 x", "1;a=\"\\\x01\"", "1;a,b"}) {
    INFO(bad);
    CHECK(status_of(bad) == chunked_scanner::state::error);
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

TEST_CASE("client response head forwards the framing fields only in canonical form", "[unit][proxy][framing]") {
  SECTION("Transfer-Encoding any case -> chunked") {
    auto r = parse_response_head("HTTP/1.1 200 OK\r\nTransfer-Encoding: CHUNKED\r\nX-A: 1\r\n\r\n", false);
    REQUIRE(r);
    CHECK(r->body == body_kind::chunked);
    CHECK(client_response_head(*r, true) ==
          "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\nConnection: keep-alive\r\n\r\n");
  }
  SECTION("Content-Length with leading zeros and equal duplicates -> one canonical field") {
    auto r = parse_response_head("HTTP/1.1 200 OK\r\nContent-Length: 010\r\nX-A: 1\r\ncontent-length: 10\r\n\r\n", false);
    REQUIRE(r);
    CHECK(r->content_length == 10);
    CHECK(client_response_head(*r, false) ==
          "HTTP/1.1 200 OK\r\nContent-Length: 10\r\nX-A: 1\r\nConnection: close\r\n\r\n");
  }
  SECTION("Content-Length of a HEAD response kept (canonical) though there is no body") {
    auto r = parse_response_head("HTTP/1.1 200 OK\r\nContent-Length: 0042\r\n\r\n", true);
    REQUIRE(r);
    CHECK(r->body == body_kind::none);
    CHECK(r->declared_length == 42u);
    CHECK(client_response_head(*r, true) == "HTTP/1.1 200 OK\r\nContent-Length: 42\r\nConnection: keep-alive\r\n\r\n");
  }
  SECTION("'_' spellings of framing and hop-by-hop fields dropped") {
    auto r = parse_response_head(
        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent_Length: 20\r\nTransfer_Encoding: chunked\r\n"
        "Keep_Alive: 1\r\nProxy_Connection: close\r\nX_Other: kept\r\n\r\n",
        false);
    REQUIRE(r);
    CHECK(client_response_head(*r, true) ==
          "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX_Other: kept\r\nConnection: keep-alive\r\n\r\n");
  }
}

TEST_CASE("response heads with control bytes or a second Transfer-Encoding are refused", "[unit][proxy][framing]") {
  CHECK_FALSE(parse_response_head("HTTP/1.1 200 OK\r\nX: a\x01b\r\n\r\n", false));
  CHECK_FALSE(parse_response_head("HTTP/1.1 200 OK\r\nX: a\x7f\r\n\r\n", false));
  CHECK_FALSE(parse_response_head("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", false));
  CHECK_FALSE(parse_response_head("HTTP/1.1 200 OK\r\nContent-Length : 5\r\n\r\n", false));
  CHECK_FALSE(parse_response_head("HTTP/1.1 200 OK\r\nConnection: keep]alive\r\n\r\n", false));
  CHECK_FALSE(parse_response_head("HTTP/1.1 200 OK\r\nProxy-Connection: a b\r\n\r\n", false));
  CHECK(parse_response_head("HTTP/1.1 200 OK\r\nConnection: , close,,X-A \r\n\r\n", false));
  CHECK(parse_response_head("HTTP/1.1 200 OK\r\nX: caf\xc3\xa9\t!\r\n\r\n", false));
}
