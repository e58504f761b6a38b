// Unit tests for request-head parsing and checks, and for the head sent upstream. Each
// rejection case breaks exactly one rule of an otherwise valid head.

#include "egress/proxy/request_head.hpp"

#include <catch2/catch.hpp>

#include <cstdint>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>

namespace {

using egress::common::host_kind;
using egress::proxy::find_head_end;
using egress::proxy::head_error;
using egress::proxy::parse_request_head;
using egress::proxy::request_form;
using egress::proxy::request_head;
using egress::proxy::upstream_head;
namespace reason = egress::proxy::head_reason;
using namespace std::string_literals;

std::string describe(const boost::system::result<request_head, head_error>& r) {
  std::ostringstream out;
  if (!r) {
    out << "error " << r.error().status << ' ' << r.error().reason;
    return out.str();
  }
  out << "ok " << r->method << ' ' << (r->form == request_form::connect ? "connect" : "absolute") << " host="
      << r->host.text << " port=" << r->port << " path=" << r->path_and_query << " minor=" << r->version_minor
      << " fields=" << r->fields.size() << " keep_alive=" << r->keep_alive;
  if (r->content_length) out << " content_length=" << *r->content_length;
  if (r->chunked) out << " chunked";
  return out.str();
}

}  // namespace

namespace Catch {
template <> struct StringMaker<boost::system::result<request_head, head_error>> {
  static std::string convert(const boost::system::result<request_head, head_error>& r) { return describe(r); }
};
template <> struct StringMaker<head_error> {
  static std::string convert(const head_error& e) { return std::to_string(e.status) + " " + std::string(e.reason); }
};
}  // namespace Catch

namespace {

struct ok_case {
  const char* name;
  std::string head;
  std::string_view method;
  request_form form;
  std::string_view host;
  host_kind kind;
  std::uint16_t port;
  std::string_view path_and_query;
  int version_minor;
  bool keep_alive;
  std::optional<std::uint64_t> content_length;
  bool chunked;
};

struct bad_case {
  const char* name;
  std::string head;
  int status;
  std::string_view reason;
};

constexpr auto reg_name = host_kind::name;
constexpr auto connect_form = request_form::connect;
constexpr auto absolute_form = request_form::absolute;

/// A GET for http://www.wikidata.org/ with `extra` field lines (each ending in CRLF)
/// after a matching Host.
std::string get_with(std::string_view extra) {
  return "GET http://www.wikidata.org/ HTTP/1.1\r\nHost: www.wikidata.org\r\n" + std::string(extra) + "\r\n";
}

/// A POST for http://www.wikidata.org/w/api.php with `extra` field lines.
std::string post_with(std::string_view extra) {
  return "POST http://www.wikidata.org/w/api.php HTTP/1.1\r\nHost: www.wikidata.org\r\n" + std::string(extra) +
         "\r\n";
}

/// A GET whose request line is `line` (without CRLF), with Host: www.wikidata.org.
std::string line_with_host(std::string_view line) {
  return std::string(line) + "\r\nHost: www.wikidata.org\r\n\r\n";
}

std::string many_fields(std::size_t n) {
  std::string extra;
  for (std::size_t i = 0; i < n; ++i) extra += "X-F" + std::to_string(i) + ": v\r\n";
  return extra;
}

}  // namespace

TEST_CASE("valid heads parse into their parts", "[unit][request_head]") {
  auto c = GENERATE(values<ok_case>({
      {"valid CONNECT", "CONNECT www.wikidata.org:443 HTTP/1.1\r\nHost: www.wikidata.org:443\r\n\r\n", "CONNECT",
       connect_form, "www.wikidata.org", reg_name, 443, "", 1, true, std::nullopt, false},
      {"CONNECT HTTP/1.0 without Host (openssl s_client, older Python)",
       "CONNECT www.wikidata.org:443 HTTP/1.0\r\n\r\n", "CONNECT", connect_form, "www.wikidata.org", reg_name, 443, "", 0,
       false, std::nullopt, false},
      {"CONNECT HTTP/1.1 without Host", "CONNECT www.wikidata.org:443 HTTP/1.1\r\n\r\n", "CONNECT", connect_form,
       "www.wikidata.org", reg_name, 443, "", 1, true, std::nullopt, false},
      {"CONNECT with a Host without port", "CONNECT www.wikidata.org:443 HTTP/1.1\r\nHost: www.wikidata.org\r\n\r\n",
       "CONNECT", connect_form, "www.wikidata.org", reg_name, 443, "", 1, true, std::nullopt, false},
      {"CONNECT with Content-Length: 0",
       "CONNECT www.wikidata.org:443 HTTP/1.1\r\nHost: www.wikidata.org:443\r\nContent-Length: 0\r\n\r\n",
       "CONNECT", connect_form, "www.wikidata.org", reg_name, 443, "", 1, true, 0, false},
      {"CONNECT to a bracketed IPv6 literal", "CONNECT [2001:DB8::1]:8443 HTTP/1.1\r\nHost: [2001:db8::1]:8443\r\n\r\n",
       "CONNECT", connect_form, "2001:db8::1", host_kind::ipv6, 8443, "", 1, true, std::nullopt, false},
      {"CONNECT to an IPv4 literal", "CONNECT 192.0.2.7:443 HTTP/1.1\r\nHost: 192.0.2.7:443\r\n\r\n", "CONNECT",
       connect_form, "192.0.2.7", host_kind::ipv4, 443, "", 1, true, std::nullopt, false},
      {"Proxy-Connection: close closes (curl's non-standard field, read conservatively)",
       "GET http://www.wikidata.org/ HTTP/1.1\r\nHost: www.wikidata.org\r\nProxy-Connection: close\r\n\r\n", "GET",
       absolute_form, "www.wikidata.org", reg_name, 80, "/", 1, false, std::nullopt, false},
      {"Proxy-Connection: keep-alive keeps nothing open in HTTP/1.0",
       "GET http://www.wikidata.org/ HTTP/1.0\r\nProxy-Connection: Keep-Alive\r\n\r\n", "GET", absolute_form,
       "www.wikidata.org", reg_name, 80, "/", 0, false, std::nullopt, false},
      {"OPTIONS with an empty path is for *", "OPTIONS http://www.wikidata.org HTTP/1.1\r\nHost: www.wikidata.org\r\n\r\n",
       "OPTIONS", absolute_form, "www.wikidata.org", reg_name, 80, "*", 1, true, std::nullopt, false},
      {"OPTIONS with an empty path and a query is for /?query",
       "OPTIONS http://www.wikidata.org?x HTTP/1.1\r\nHost: www.wikidata.org\r\n\r\n", "OPTIONS", absolute_form,
       "www.wikidata.org", reg_name, 80, "/?x", 1, true, std::nullopt, false},
      {"absolute GET with query",
       "GET http://www.wikidata.org/w/api.php?action=wbgetentities&ids=Q42 HTTP/1.1\r\nHost: www.wikidata.org\r\n"
       "Accept: */*\r\n\r\n",
       "GET", absolute_form, "www.wikidata.org", reg_name, 80, "/w/api.php?action=wbgetentities&ids=Q42", 1, true,
       std::nullopt, false},
      {"port default: no port means 80, Host may say :80",
       "GET http://www.wikidata.org/ HTTP/1.1\r\nHost: www.wikidata.org:80\r\n\r\n", "GET", absolute_form,
       "www.wikidata.org", reg_name, 80, "/", 1, true, std::nullopt, false},
      {"explicit port 80, Host without port", "GET http://www.wikidata.org:80/ HTTP/1.1\r\nHost: www.wikidata.org\r\n\r\n",
       "GET", absolute_form, "www.wikidata.org", reg_name, 80, "/", 1, true, std::nullopt, false},
      {"explicit other port", "GET http://www.wikidata.org:8080/x HTTP/1.1\r\nHost: www.wikidata.org:8080\r\n\r\n",
       "GET", absolute_form, "www.wikidata.org", reg_name, 8080, "/x", 1, true, std::nullopt, false},
      {"IPv6 literal", "GET http://[2001:db8:0::1]:8080/ HTTP/1.1\r\nHost: [2001:DB8::1]:8080\r\n\r\n", "GET",
       absolute_form, "2001:db8::1", host_kind::ipv6, 8080, "/", 1, true, std::nullopt, false},
      {"uppercase host normalised, scheme any case",
       "GET HTTP://WWW.WikiData.ORG/Q42 HTTP/1.1\r\nHost: www.WIKIDATA.org\r\n\r\n", "GET", absolute_form,
       "www.wikidata.org", reg_name, 80, "/Q42", 1, true, std::nullopt, false},
      {"trailing dot folded in target and Host",
       "GET http://www.wikidata.org./ HTTP/1.1\r\nHost: www.wikidata.org.\r\n\r\n", "GET", absolute_form,
       "www.wikidata.org", reg_name, 80, "/", 1, true, std::nullopt, false},
      {"empty path becomes /", "GET http://www.wikidata.org HTTP/1.1\r\nHost: www.wikidata.org\r\n\r\n", "GET",
       absolute_form, "www.wikidata.org", reg_name, 80, "/", 1, true, std::nullopt, false},
      {"query without path gets /", "GET http://www.wikidata.org?q=1 HTTP/1.1\r\nHost: www.wikidata.org\r\n\r\n",
       "GET", absolute_form, "www.wikidata.org", reg_name, 80, "/?q=1", 1, true, std::nullopt, false},
      {"HTTP/1.0 without Host, not persistent", "GET http://www.wikidata.org/ HTTP/1.0\r\n\r\n", "GET", absolute_form,
       "www.wikidata.org", reg_name, 80, "/", 0, false, std::nullopt, false},
      {"HTTP/1.0 with keep-alive", "GET http://www.wikidata.org/ HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", "GET",
       absolute_form, "www.wikidata.org", reg_name, 80, "/", 0, true, std::nullopt, false},
      {"HTTP/1.1 with Connection: close", get_with("Connection: foo, CLOSE\r\n"), "GET", absolute_form,
       "www.wikidata.org", reg_name, 80, "/", 1, false, std::nullopt, false},
      {"POST with Content-Length", post_with("Content-Length: 12\r\n"), "POST", absolute_form, "www.wikidata.org", reg_name,
       80, "/w/api.php", 1, true, 12, false},
      {"POST with Content-Length 2^64-1", post_with("Content-Length: 18446744073709551615\r\n"), "POST", absolute_form,
       "www.wikidata.org", reg_name, 80, "/w/api.php", 1, true, UINT64_C(18446744073709551615), false},
      {"POST chunked, any case, OWS around", post_with("Transfer-Encoding: \t Chunked \r\n"), "POST", absolute_form,
       "www.wikidata.org", reg_name, 80, "/w/api.php", 1, true, std::nullopt, true},
      {"extension method, odd but legal token", "M-SEARCH! http://www.wikidata.org/ HTTP/1.1\r\nhost:www.wikidata.org\r\n\r\n",
       "M-SEARCH!", absolute_form, "www.wikidata.org", reg_name, 80, "/", 1, true, std::nullopt, false},
      {"obs-text in a field value", get_with("X-Name: caf\xc3\xa9\r\n"), "GET", absolute_form, "www.wikidata.org", reg_name,
       80, "/", 1, true, std::nullopt, false},
      {"exactly 100 fields", get_with(many_fields(99)), "GET", absolute_form, "www.wikidata.org", reg_name, 80, "/", 1, true,
       std::nullopt, false},
  }));
  DYNAMIC_SECTION(c.name) {
    const auto r = parse_request_head(c.head);
    INFO(describe(r));
    REQUIRE(r);
    CHECK(r->method == c.method);
    CHECK(r->form == c.form);
    CHECK(r->host.text == c.host);
    CHECK(r->host.kind == c.kind);
    CHECK(r->port == c.port);
    CHECK(r->path_and_query == c.path_and_query);
    CHECK(r->version_minor == c.version_minor);
    CHECK(r->keep_alive == c.keep_alive);
    CHECK(r->content_length == c.content_length);
    CHECK(r->chunked == c.chunked);
    CHECK(r->head_bytes == c.head.size());
    CHECK(r->target == std::string_view(c.head).substr(r->method.size() + 1, r->target.size()));
  }
}

TEST_CASE("malformed and smuggling heads are refused with a status and a reason", "[unit][request_head]") {
  auto c = GENERATE(values<bad_case>({
      // Line endings and the request line.
      {"bare LF line endings", "GET http://www.wikidata.org/ HTTP/1.1\nHost: www.wikidata.org\n\n", 400,
       reason::bare_lf},
      {"one bare LF inside the fields", "GET http://www.wikidata.org/ HTTP/1.1\r\nHost: www.wikidata.org\nX: y\r\n\r\n",
       400, reason::bare_lf},
      {"bare CR in a value", get_with("X-A: a\rb\r\n"), 400, reason::bare_cr},
      {"HTTP/0.9 GET /", "GET /\r\n\r\n", 400, reason::version_missing},
      {"HTTP/0.9 with absolute target", "GET http://www.wikidata.org/\r\n\r\n", 400, reason::version_missing},
      {"empty request line (leading CRLF)", "\r\n\r\n", 400, reason::bad_request_line},
      {"double space in request line", line_with_host("GET  http://www.wikidata.org/ HTTP/1.1"), 400,
       reason::bad_request_line},
      {"trailing space in request line", line_with_host("GET http://www.wikidata.org/ HTTP/1.1 "), 400,
       reason::bad_request_line},
      {"HTAB as separator", line_with_host("GET\thttp://www.wikidata.org/\tHTTP/1.1"), 400, reason::bad_request_line},
      {"method with a slash", line_with_host("G/ET http://www.wikidata.org/ HTTP/1.1"), 400, reason::bad_method},
      {"NUL in the method", line_with_host("GE\0T http://www.wikidata.org/ HTTP/1.1"s), 400,
       reason::bad_method},
      {"lower-case version", line_with_host("GET http://www.wikidata.org/ http/1.1"), 400, reason::bad_version},
      {"HTTP/1.2", line_with_host("GET http://www.wikidata.org/ HTTP/1.2"), 400, reason::bad_version},
      {"HTTP/0.9 spelled out", line_with_host("GET http://www.wikidata.org/ HTTP/0.9"), 400, reason::bad_version},
      {"HTTP/1.10", line_with_host("GET http://www.wikidata.org/ HTTP/1.10"), 400, reason::bad_version},
      {"HTTP/2.0", line_with_host("GET http://www.wikidata.org/ HTTP/2.0"), 505, reason::version_not_supported},
      {"HTTP/2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505, reason::version_not_supported},
      // Request-target.
      {"origin-form", line_with_host("GET /wiki/Q42 HTTP/1.1"), 400, reason::origin_form},
      {"asterisk-form", line_with_host("OPTIONS * HTTP/1.1"), 400, reason::asterisk_form},
      {"https absolute-form", line_with_host("GET https://www.wikidata.org/ HTTP/1.1"), 400,
       reason::https_absolute_form},
      {"HTTPS absolute-form upper case", line_with_host("GET HTTPS://www.wikidata.org/ HTTP/1.1"), 400,
       reason::https_absolute_form},
      {"ftp scheme", line_with_host("GET ftp://www.wikidata.org/ HTTP/1.1"), 400, reason::unsupported_scheme},
      {"authority-form on GET", line_with_host("GET www.wikidata.org:80 HTTP/1.1"), 400, reason::bad_target},
      {"http:/ with one slash", line_with_host("GET http:/www.wikidata.org/ HTTP/1.1"), 400, reason::bad_target},
      {"non-ASCII byte in the path", line_with_host("GET http://www.wikidata.org/caf\xc3\xa9 HTTP/1.1"), 400,
       reason::bad_target},
      {"DEL in the path", line_with_host("GET http://www.wikidata.org/\x7f HTTP/1.1"), 400, reason::bad_target},
      {"junk after IPv6 brackets", "GET http://[::1]x/ HTTP/1.1\r\nHost: [::1]\r\n\r\n", 400, reason::bad_target},
      {"fragment", line_with_host("GET http://www.wikidata.org/#x HTTP/1.1"), 400, reason::fragment_in_target},
      {"fragment hiding userinfo", line_with_host("GET http://evil.example#@www.wikidata.org/ HTTP/1.1"), 400,
       reason::fragment_in_target},
      {"userinfo", line_with_host("GET http://www.wikidata.org@evil.example/ HTTP/1.1"), 400,
       reason::userinfo_in_target},
      {"userinfo with password", line_with_host("GET http://u:p@www.wikidata.org/ HTTP/1.1"), 400,
       reason::userinfo_in_target},
      {"userinfo in CONNECT", "CONNECT www.wikidata.org@evil.example:443 HTTP/1.1\r\n\r\n", 400,
       reason::userinfo_in_target},
      {"non-ASCII host", line_with_host("GET http://b\xc3\xbc" "cher.example/ HTTP/1.1"), 400, "host_non_ascii"},
      {"IPv4 127.1", line_with_host("GET http://127.1/ HTTP/1.1"), 400, "host_non_canonical_ipv4"},
      {"IPv4 2130706433", line_with_host("GET http://2130706433/ HTTP/1.1"), 400, "host_non_canonical_ipv4"},
      {"IPv4 0x7f.0.0.1", line_with_host("GET http://0x7f.0.0.1/ HTTP/1.1"), 400, "host_non_canonical_ipv4"},
      {"IPv4 010.0.0.1", line_with_host("GET http://010.0.0.1/ HTTP/1.1"), 400, "host_non_canonical_ipv4"},
      {"IPv6 zone id", line_with_host("GET http://[fe80::1%25eth0]/ HTTP/1.1"), 400, "host_invalid_ipv6"},
      {"IPv6 without brackets", line_with_host("GET http://::1/ HTTP/1.1"), 400, "host_unbracketed_ipv6"},
      {"CONNECT IPv6 without brackets", "CONNECT ::1:443 HTTP/1.1\r\n\r\n", 400, "host_unbracketed_ipv6"},
      {"empty label", line_with_host("GET http://www..wikidata.org/ HTTP/1.1"), 400, "host_empty_label"},
      {"empty host", line_with_host("GET http:///x HTTP/1.1"), 400, "host_empty"},
      {"underscore in host", line_with_host("GET http://a_b.example/ HTTP/1.1"), 400, "host_invalid_character"},
      {"empty port", line_with_host("GET http://www.wikidata.org:/ HTTP/1.1"), 400, reason::bad_port},
      {"port with +", line_with_host("GET http://www.wikidata.org:+80/ HTTP/1.1"), 400, reason::bad_port},
      {"port 65536", line_with_host("GET http://www.wikidata.org:65536/ HTTP/1.1"), 400, reason::bad_port},
      {"port 0", line_with_host("GET http://www.wikidata.org:0/ HTTP/1.1"), 400, reason::bad_port},
      {"port with six digits", line_with_host("GET http://www.wikidata.org:000080/ HTTP/1.1"), 400, reason::bad_port},
      {"CONNECT without port", "CONNECT www.wikidata.org HTTP/1.1\r\nHost: www.wikidata.org\r\n\r\n", 400,
       reason::port_missing},
      {"CONNECT with empty port", "CONNECT www.wikidata.org: HTTP/1.1\r\n\r\n", 400, reason::bad_port},
      {"CONNECT port 0", "CONNECT www.wikidata.org:0 HTTP/1.1\r\n\r\n", 400, reason::bad_port},
      {"CONNECT port 99999", "CONNECT www.wikidata.org:99999 HTTP/1.1\r\n\r\n", 400, reason::bad_port},
      {"CONNECT with scheme", "CONNECT http://www.wikidata.org:443 HTTP/1.1\r\n\r\n", 400, reason::bad_connect_target},
      {"CONNECT with path", "CONNECT www.wikidata.org:443/x HTTP/1.1\r\n\r\n", 400, reason::bad_connect_target},
      {"CONNECT origin-form", "CONNECT / HTTP/1.1\r\n\r\n", 400, reason::bad_connect_target},
      {"CONNECT junk after brackets", "CONNECT [::1]443 HTTP/1.1\r\n\r\n", 400, reason::bad_connect_target},
      {"CONNECT non-ASCII host", "CONNECT b\xc3\xbc" "cher.example:443 HTTP/1.1\r\n\r\n", 400, "host_non_ascii"},
      {"CONNECT IPv4 127.1", "CONNECT 127.1:443 HTTP/1.1\r\n\r\n", 400, "host_non_canonical_ipv4"},
      // Field lines.
      {"101 fields", get_with(many_fields(100)), 431, reason::too_many_fields},
      {"obs-fold", get_with("X-A: a\r\n b\r\n"), 400, reason::obs_fold},
      {"TE with obs-fold", post_with("Transfer-Encoding:\r\n chunked\r\n"), 400, reason::obs_fold},
      {"whitespace before the first field", "GET http://www.wikidata.org/ HTTP/1.1\r\n Host: www.wikidata.org\r\n\r\n",
       400, reason::obs_fold},
      {"field line without colon", get_with("X-A\r\n"), 400, reason::bad_field_line},
      {"Transfer-Encoding : chunked", post_with("Transfer-Encoding : chunked\r\n"), 400,
       reason::whitespace_before_colon},
      {"HTAB before colon", get_with("X-A\t: b\r\n"), 400, reason::whitespace_before_colon},
      {"empty field name", get_with(": b\r\n"), 400, reason::bad_field_name},
      {"space inside a field name", get_with("X A: b\r\n"), 400, reason::bad_field_name},
      {"NUL in a value", get_with("X-A: a\0b\r\n"s), 400, reason::bad_field_value},
      {"control byte in a value", get_with("X-A: a\x01" "b\r\n"), 400, reason::bad_field_value},
      {"DEL in a value", get_with("X-A: a\x7f\r\n"), 400, reason::bad_field_value},
      // Host.
      {"two Host headers", get_with("Host: www.wikidata.org\r\n"), 400, reason::host_duplicate},
      {"two Host headers, the second differing", get_with("host: evil.example\r\n"), 400, reason::host_duplicate},
      {"two Host headers on CONNECT",
       "CONNECT www.wikidata.org:443 HTTP/1.1\r\nHost: www.wikidata.org:443\r\nHost: www.wikidata.org:443\r\n\r\n", 400,
       reason::host_duplicate},
      {"Host missing in HTTP/1.1", "GET http://www.wikidata.org/ HTTP/1.1\r\nAccept: */*\r\n\r\n", 400,
       reason::host_missing},
      {"Host differs from target", "GET http://www.wikidata.org/ HTTP/1.1\r\nHost: evil.example\r\n\r\n", 400,
       reason::host_mismatch},
      {"Host differs in port", "GET http://www.wikidata.org/ HTTP/1.1\r\nHost: www.wikidata.org:8080\r\n\r\n", 400,
       reason::host_mismatch},
      {"Host without port for a non-80 target",
       "GET http://www.wikidata.org:8080/ HTTP/1.1\r\nHost: www.wikidata.org\r\n\r\n", 400, reason::host_mismatch},
      {"Host differs in HTTP/1.0", "GET http://www.wikidata.org/ HTTP/1.0\r\nHost: evil.example\r\n\r\n", 400,
       reason::host_mismatch},
      {"CONNECT Host differs", "CONNECT www.wikidata.org:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n", 400,
       reason::host_mismatch},
      {"CONNECT Host differs in port", "CONNECT www.wikidata.org:443 HTTP/1.1\r\nHost: www.wikidata.org:8443\r\n\r\n",
       400, reason::host_mismatch},
      {"empty Host", "GET http://www.wikidata.org/ HTTP/1.1\r\nHost:\r\n\r\n", 400, reason::host_header_invalid},
      {"Host with userinfo", "GET http://www.wikidata.org/ HTTP/1.1\r\nHost: u@www.wikidata.org\r\n\r\n", 400,
       reason::host_header_invalid},
      {"Host with non-canonical IPv4", "GET http://127.0.0.1/ HTTP/1.1\r\nHost: 127.1\r\n\r\n", 400,
       reason::host_header_invalid},
      {"Host with bad port", "GET http://www.wikidata.org/ HTTP/1.1\r\nHost: www.wikidata.org:+80\r\n\r\n", 400,
       reason::host_header_invalid},
      // Framing (request smuggling forms).
      {"CL+TE", post_with("Content-Length: 5\r\nTransfer-Encoding: chunked\r\n"), 400, reason::cl_and_te},
      {"TE+CL", post_with("Transfer-Encoding: chunked\r\nContent-Length: 5\r\n"), 400, reason::cl_and_te},
      {"TE: chunked, identity", post_with("Transfer-Encoding: chunked, identity\r\n"), 400,
       reason::bad_transfer_encoding},
      {"TE: identity", post_with("Transfer-Encoding: identity\r\n"), 400, reason::bad_transfer_encoding},
      {"TE: gzip, chunked", post_with("Transfer-Encoding: gzip, chunked\r\n"), 400, reason::bad_transfer_encoding},
      {"TE: chunked with a parameter", post_with("Transfer-Encoding: chunked;x=1\r\n"), 400,
       reason::bad_transfer_encoding},
      {"TE: xchunked", post_with("Transfer-Encoding: xchunked\r\n"), 400, reason::bad_transfer_encoding},
      {"two TE: chunked fields", post_with("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n"), 400,
       reason::bad_transfer_encoding},
      {"TE in HTTP/1.0", "POST http://www.wikidata.org/ HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400,
       reason::transfer_encoding_http10},
      {"double Content-Length, equal", post_with("Content-Length: 5\r\nContent-Length: 5\r\n"), 400,
       reason::duplicate_content_length},
      {"double Content-Length, different", post_with("Content-Length: 5\r\ncontent-length: 6\r\n"), 400,
       reason::duplicate_content_length},
      {"Content-Length list", post_with("Content-Length: 5, 5\r\n"), 400, reason::duplicate_content_length},
      {"Content-Length: +5", post_with("Content-Length: +5\r\n"), 400, reason::bad_content_length},
      {"Content-Length: -1", post_with("Content-Length: -1\r\n"), 400, reason::bad_content_length},
      {"Content-Length hex", post_with("Content-Length: 0x5\r\n"), 400, reason::bad_content_length},
      {"Content-Length empty", post_with("Content-Length:\r\n"), 400, reason::bad_content_length},
      {"Content-Length with inner space", post_with("Content-Length: 5 5\r\n"), 400, reason::bad_content_length},
      {"Content-Length 2^64", post_with("Content-Length: 18446744073709551616\r\n"), 400, reason::bad_content_length},
      {"CONNECT with a body length", "CONNECT www.wikidata.org:443 HTTP/1.1\r\nContent-Length: 5\r\n\r\n", 400,
       reason::connect_with_body},
      {"CONNECT chunked", "CONNECT www.wikidata.org:443 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 400,
       reason::connect_with_body},
      {"Connection value not a token list", get_with("Connection: keep\\alive\r\n"), 400, reason::bad_connection},
      {"Connection value with a space inside an element", get_with("Connection: close x\r\n"), 400,
       reason::bad_connection},
      {"Proxy-Connection value not a token list", get_with("Proxy-Connection: keep-alive;q=1\r\n"), 400,
       reason::bad_connection},
      {"TRACE with a body length", "TRACE http://www.wikidata.org/ HTTP/1.1\r\nHost: www.wikidata.org\r\n"
       "Content-Length: 5\r\n\r\n", 400, reason::trace_with_body},
      {"TRACE chunked", "TRACE http://www.wikidata.org/ HTTP/1.1\r\nHost: www.wikidata.org\r\n"
       "Transfer-Encoding: chunked\r\n\r\n", 400, reason::trace_with_body},
      {"TRACE with two Max-Forwards", "TRACE http://www.wikidata.org/ HTTP/1.1\r\nHost: www.wikidata.org\r\n"
       "Max-Forwards: 1\r\nMax-Forwards: 0\r\n\r\n", 400, reason::bad_max_forwards},
      {"OPTIONS with a Max-Forwards list", "OPTIONS http://www.wikidata.org/ HTTP/1.1\r\nHost: www.wikidata.org\r\n"
       "Max-Forwards: 1, 0\r\n\r\n", 400, reason::bad_max_forwards},
      {"OPTIONS with Max-Forwards -1", "OPTIONS http://www.wikidata.org/ HTTP/1.1\r\nHost: www.wikidata.org\r\n"
       "Max-Forwards: -1\r\n\r\n", 400, reason::bad_max_forwards},
      {"OPTIONS with an empty Max-Forwards", "OPTIONS http://www.wikidata.org/ HTTP/1.1\r\nHost: www.wikidata.org\r\n"
       "Max-Forwards:\r\n\r\n", 400, reason::bad_max_forwards},
      {"TRACE with Max-Forwards 0x1", "TRACE http://www.wikidata.org/ HTTP/1.1\r\nHost: www.wikidata.org\r\n"
       "max-forwards: 0x1\r\n\r\n", 400, reason::bad_max_forwards},
  }));
  DYNAMIC_SECTION(c.name) {
    const auto r = parse_request_head(c.head);
    INFO(describe(r));
    REQUIRE_FALSE(r);
    CHECK(r.error() == head_error{c.status, c.reason});
  }
}

TEST_CASE("every head_error reason is a snake_case word", "[unit][request_head]") {
  const std::string_view all[] = {
      reason::incomplete_head, reason::bare_lf, reason::bare_cr, reason::bad_request_line, reason::version_missing,
      reason::bad_method, reason::bad_version, reason::version_not_supported, reason::bad_target,
      reason::fragment_in_target, reason::origin_form, reason::asterisk_form, reason::https_absolute_form,
      reason::unsupported_scheme, reason::userinfo_in_target, reason::bad_connect_target, reason::port_missing,
      reason::bad_port, reason::too_many_fields, reason::obs_fold, reason::bad_field_line,
      reason::whitespace_before_colon, reason::bad_field_name, reason::bad_field_value, reason::host_missing,
      reason::host_duplicate, reason::host_header_invalid, reason::host_mismatch, reason::duplicate_content_length,
      reason::bad_content_length, reason::bad_transfer_encoding, reason::transfer_encoding_http10, reason::cl_and_te,
      reason::connect_with_body, reason::trace_with_body, reason::bad_max_forwards, reason::bad_connection,
      egress::proxy::answered_locally};
  for (std::string_view r : all) {
    INFO(r);
    CHECK(!r.empty());
    CHECK(r.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789_") == std::string_view::npos);
  }
}

TEST_CASE("fields are kept in order, as received, values trimmed of OWS", "[unit][request_head]") {
  const std::string head =
      "GET http://www.wikidata.org/ HTTP/1.1\r\nHost:www.wikidata.org \r\nX-Empty:\r\nX-Tabs:\t a  b \t\r\n"
      "accept: */*\r\n\r\n";
  const auto r = parse_request_head(head);
  REQUIRE(r);
  using egress::proxy::header_field;
  const std::vector<header_field> expected = {
      {"Host", "www.wikidata.org"}, {"X-Empty", ""}, {"X-Tabs", "a  b"}, {"accept", "*/*"}};
  CHECK(r->fields == expected);
  // Views into the caller's buffer, not copies.
  CHECK(r->fields[0].name.data() == head.data() + head.find("Host"));
  CHECK(r->target.data() == head.data() + 4);
}

TEST_CASE("bytes after the head are left for the body or tunnel", "[unit][request_head]") {
  const std::string connect = "CONNECT www.wikidata.org:443 HTTP/1.1\r\nHost: www.wikidata.org:443\r\n\r\n";
  const std::string buffer = connect + "\x16\x03\x01\x02\x00\x01";
  const auto r = parse_request_head(buffer);
  REQUIRE(r);
  CHECK(r->head_bytes == connect.size());

  const std::string post = post_with("Content-Length: 4\r\n");
  const auto p = parse_request_head(post + "a=b\n\n\r\n\r\n");
  REQUIRE(p);
  CHECK(p->head_bytes == post.size());
}

TEST_CASE("a buffer without a complete head is a caller error with a reason", "[unit][request_head]") {
  const auto r = parse_request_head("GET http://www.wikidata.org/ HTTP/1.1\r\nHost: www.wikidata.org\r\n");
  REQUIRE_FALSE(r);
  CHECK(r.error() == head_error{400, reason::incomplete_head});
  CHECK_THROWS_AS(r.value(), std::runtime_error);
}

TEST_CASE("find_head_end on partial and complete input", "[unit][request_head]") {
  const std::string head = get_with("Accept: */*\r\n");
  const std::string buffer = head + "trailing body bytes\r\n\r\n";

  SECTION("every proper prefix is incomplete, the whole head is found, later bytes ignored") {
    for (std::size_t n = 0; n < head.size(); ++n) {
      INFO("prefix " << n);
      REQUIRE(find_head_end(std::string_view(buffer).substr(0, n)) == 0);
    }
    CHECK(find_head_end(head) == head.size());
    CHECK(find_head_end(buffer) == head.size());
  }
  SECTION("resuming after any earlier incomplete search gives the same answer") {
    for (std::size_t searched = 0; searched < head.size(); ++searched) {
      for (std::size_t n = searched; n <= buffer.size(); ++n) {
        const std::string_view b = std::string_view(buffer).substr(0, n);
        REQUIRE(find_head_end(b, searched) == find_head_end(b));
      }
    }
  }
  SECTION("named partial inputs") {
    struct partial {
      const char* name;
      std::string_view text;
      std::size_t end;
    };
    auto c = GENERATE(values<partial>({
        {"empty", "", 0},
        {"request line only", "GET http://a/ HTTP/1.1\r\n", 0},
        {"ends after CRLFCR", "GET http://a/ HTTP/1.1\r\nHost: a\r\n\r", 0},
        {"CRLFCRLF", "GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n", 35},
        {"bare LF LF ends the head too", "GET / HTTP/1.1\n\n", 16},
        {"LF CRLF ends the head too", "GET / HTTP/1.1\n\r\n", 17},
        {"CR CR is not an end", "GET / HTTP/1.1\r\r\r\r", 0},
        {"a lone CRLF is not an end", "\r\nGET", 0},
    }));
    DYNAMIC_SECTION(c.name) { CHECK(find_head_end(c.text) == c.end); }
  }
}

TEST_CASE("upstream_head rebuilds the head for the origin", "[unit][request_head]") {
  struct upstream_case {
    const char* name;
    std::string head;
    std::string expected;
  };
  auto c = GENERATE(values<upstream_case>({
      {"Proxy-* and Proxy-Connection stripped, field named in Connection stripped, Host rebuilt, query kept",
       "GET http://WWW.Wikidata.org./w/api.php?action=query&format=json HTTP/1.1\r\n"
       "Host: www.wikidata.org\r\n"
       "User-Agent: curl/7.88.1\r\n"
       "Proxy-Authorization: Basic dXNlcjpwYXNz\r\n"
       "Proxy-Connection: Keep-Alive\r\n"
       "Connection: X-Secret, keep-alive\r\n"
       "X-Secret: s3cr3t\r\n"
       "Keep-Alive: timeout=5\r\n"
       "Accept: */*\r\n"
       "\r\n",
       "GET /w/api.php?action=query&format=json HTTP/1.1\r\n"
       "Host: www.wikidata.org\r\n"
       "User-Agent: curl/7.88.1\r\n"
       "Accept: */*\r\n"
       "Connection: close\r\n"
       "\r\n"},
      {"hop-by-hop TE, Trailer, Upgrade dropped; chunked framing kept; port kept",
       "POST http://api.example:8080/submit HTTP/1.1\r\n"
       "Host: api.example:8080\r\n"
       "TE: trailers\r\n"
       "Trailer: X-Checksum\r\n"
       "Upgrade: h2c\r\n"
       "Transfer-Encoding: chunked\r\n"
       "Content-Type: application/json\r\n"
       "\r\n",
       "POST /submit HTTP/1.1\r\n"
       "Host: api.example:8080\r\n"
       "Transfer-Encoding: chunked\r\n"
       "Content-Type: application/json\r\n"
       "Connection: close\r\n"
       "\r\n"},
      {"Connection cannot strip Host or the framing; Content-Length in canonical decimal",
       "PUT http://api.example/x HTTP/1.1\r\n"
       "Connection: Host, Content-Length, transfer-encoding, close\r\n"
       "Host: api.example\r\n"
       "Content-Length: 007\r\n"
       "\r\n",
       "PUT /x HTTP/1.1\r\n"
       "Host: api.example\r\n"
       "Content-Length: 7\r\n"
       "Connection: close\r\n"
       "\r\n"},
      {"Transfer-Encoding forwarded as exactly chunked whatever its case",
       "POST http://api.example/x HTTP/1.1\r\nHost: api.example\r\nTransfer-Encoding: ChUnKeD\r\nX-A: 1\r\n\r\n",
       "POST /x HTTP/1.1\r\nHost: api.example\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\nConnection: close\r\n\r\n"},
      {"underscore spellings of framing, hop-by-hop and proxy fields dropped",
       "POST http://api.example/x HTTP/1.1\r\nHost: api.example\r\nContent-Length: 5\r\n"
       "Content_Length: 50\r\nTransfer_Encoding: chunked\r\ntransfer_encoding: chunked\r\nKeep_Alive: 1\r\n"
       "Proxy_Authorization: Basic eA==\r\nPROXY_CONNECTION: close\r\nMax_Forwards: 0\r\nX_Forwarded_Host: evil\r\n"
       "X_Request_Id: 7\r\nContent_Type: text/plain\r\n\r\n",
       "POST /x HTTP/1.1\r\nHost: api.example\r\nContent-Length: 5\r\nX_Request_Id: 7\r\nContent_Type: text/plain\r\n"
       "Connection: close\r\n\r\n"},
      {"Proxy (httpoxy) and host-override fields dropped",
       "GET http://api.example/x HTTP/1.1\r\nHost: api.example\r\nProxy: http://evil:1/\r\n"
       "X-Forwarded-Host: internal.example\r\nForwarded: host=internal.example\r\nX-Host: internal\r\n"
       "X-Forwarded-Server: internal\r\nX-HTTP-Host-Override: internal\r\nX-Forwarded-For: 192.0.2.1\r\n\r\n",
       "GET /x HTTP/1.1\r\nHost: api.example\r\nX-Forwarded-For: 192.0.2.1\r\nConnection: close\r\n\r\n"},
      {"Max-Forwards of TRACE decremented in place",
       "TRACE http://api.example/x HTTP/1.1\r\nHost: api.example\r\nMax-Forwards: 05\r\nX-A: 1\r\n\r\n",
       "TRACE /x HTTP/1.1\r\nHost: api.example\r\nMax-Forwards: 4\r\nX-A: 1\r\nConnection: close\r\n\r\n"},
      {"Max-Forwards of OPTIONS decremented; empty path sent as *",
       "OPTIONS http://api.example:8080 HTTP/1.1\r\nHost: api.example:8080\r\nmax-forwards: 1\r\n\r\n",
       "OPTIONS * HTTP/1.1\r\nHost: api.example:8080\r\nMax-Forwards: 0\r\nConnection: close\r\n\r\n"},
      {"a huge Max-Forwards saturates",
       "OPTIONS http://api.example/x HTTP/1.1\r\nHost: api.example\r\nMax-Forwards: 99999999999999999999999\r\n\r\n",
       "OPTIONS /x HTTP/1.1\r\nHost: api.example\r\nMax-Forwards: 18446744073709551614\r\nConnection: close\r\n\r\n"},
      {"Max-Forwards of other methods forwarded as received (RFC 9110 7.6.2: may be ignored)",
       "GET http://api.example/x HTTP/1.1\r\nHost: api.example\r\nMax-Forwards: 0\r\n\r\n",
       "GET /x HTTP/1.1\r\nHost: api.example\r\nMax-Forwards: 0\r\nConnection: close\r\n\r\n"},
      {"IPv6 bracketed, HTTP/1.0 sent as 1.1, empty path as /, OWS normalised",
       "GET http://[2001:DB8::1]:8080 HTTP/1.0\r\nX-A:\t b \r\n\r\n",
       "GET / HTTP/1.1\r\n"
       "Host: [2001:db8::1]:8080\r\n"
       "X-A: b\r\n"
       "Connection: close\r\n"
       "\r\n"},
      {"two Connection fields both honoured",
       "GET http://a.example/ HTTP/1.1\r\nHost: a.example\r\nConnection: x-one\r\nX-One: 1\r\nX-Two: 2\r\n"
       "connection: ,X-TWO,\r\nX-Three: 3\r\n\r\n",
       "GET / HTTP/1.1\r\n"
       "Host: a.example\r\n"
       "X-Three: 3\r\n"
       "Connection: close\r\n"
       "\r\n"},
  }));
  DYNAMIC_SECTION(c.name) {
    const auto r = parse_request_head(c.head);
    INFO(describe(r));
    REQUIRE(r);
    const std::string out = upstream_head(*r);
    CHECK(out == c.expected);
    // What we send is itself a head our own checks accept (origin-form aside).
    CHECK(find_head_end(out) == out.size());
  }
}

TEST_CASE("Max-Forwards on TRACE and OPTIONS: 0 is answered by the proxy", "[unit][request_head]") {
  SECTION("parsed for TRACE and OPTIONS only") {
    auto t = parse_request_head("TRACE http://a.example/ HTTP/1.1\r\nHost: a.example\r\nMax-Forwards: 3\r\n\r\n");
    REQUIRE(t);
    CHECK(t->max_forwards == 3u);
    CHECK_FALSE(t->answer_locally);
    auto g = parse_request_head("GET http://a.example/ HTTP/1.1\r\nHost: a.example\r\nMax-Forwards: 0\r\n\r\n");
    REQUIRE(g);
    CHECK_FALSE(g->max_forwards);
    CHECK_FALSE(g->answer_locally);
    auto n = parse_request_head("OPTIONS http://a.example/ HTTP/1.1\r\nHost: a.example\r\n\r\n");
    REQUIRE(n);
    CHECK_FALSE(n->max_forwards);
    CHECK_FALSE(n->answer_locally);
    // Not parsed, so not refused, for other methods.
    CHECK(parse_request_head("GET http://a.example/ HTTP/1.1\r\nHost: a.example\r\nMax-Forwards: x\r\n\r\n"));
  }
  SECTION("OPTIONS at 0: 200, Content-Length 0, no Allow") {
    auto r = parse_request_head("OPTIONS http://a.example/x HTTP/1.1\r\nHost: a.example\r\nMax-Forwards: 0\r\n\r\n");
    REQUIRE(r);
    CHECK(r->answer_locally);
    const auto a = egress::proxy::local_answer(*r);
    CHECK(a.status == 200);
    CHECK(a.keep_alive);
    CHECK(a.bytes ==
          "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nCache-Control: no-store\r\nConnection: keep-alive\r\n\r\n");
  }
  SECTION("OPTIONS at 0 with content: the answer closes the connection") {
    auto r = parse_request_head("OPTIONS http://a.example/x HTTP/1.1\r\nHost: a.example\r\nMax-Forwards: 0\r\n"
                                "Content-Length: 4\r\n\r\nbody");
    REQUIRE(r);
    const auto a = egress::proxy::local_answer(*r);
    CHECK_FALSE(a.keep_alive);
    CHECK(a.bytes.ends_with("Connection: close\r\n\r\n"));
  }
  SECTION("TRACE at 0: message/http echo of the head without credentials") {
    const std::string head =
        "TRACE http://a.example/p?q=1 HTTP/1.0\r\nHost: a.example\r\nMax-Forwards: 0\r\nAuthorization: Basic eA==\r\n"
        "Proxy-Authorization: Basic eQ==\r\nCookie: s=1\r\nX-Api-Key: k\r\nX-Auth-Token: t\r\nUser-Agent:  curl/8 \r\n"
        "Connection: keep-alive\r\n\r\n";
    auto r = parse_request_head(head);
    REQUIRE(r);
    REQUIRE(r->answer_locally);
    const auto a = egress::proxy::local_answer(*r);
    const std::string echo =
        "TRACE http://a.example/p?q=1 HTTP/1.0\r\nHost: a.example\r\nMax-Forwards: 0\r\nUser-Agent: curl/8\r\n"
        "Connection: keep-alive\r\n\r\n";
    CHECK(a.keep_alive);
    CHECK(a.bytes == "HTTP/1.1 200 OK\r\nContent-Type: message/http\r\nContent-Length: " + std::to_string(echo.size()) +
                         "\r\nCache-Control: no-store\r\nConnection: keep-alive\r\n\r\n" + echo);
  }
}
