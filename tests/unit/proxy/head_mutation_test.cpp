// Mutation test of the plain-HTTP parsers against independent ones: real request heads
// (curl, Python, Node, ...) and upstream responses are mutated (field order, duplicates,
// case, whitespace, obs-fold, lengths, bare LF/CR, NUL, split lines, framing and routing
// fields, target forms) and each mutant is judged by our parser and by Boost.Beast's
// http::request_parser / response_parser (targets and Host values by Boost.URL), from the
// SAME bytes. Invariant: whenever ours accepts, what it judged (target host and port, Host,
// framing, persistence) is what Beast reads, and the head we forward re-parses, by ours and
// by Beast, to the same target, Host and framing; otherwise ours refuses. Chunked bodies
// too: what the scanner relays parses, by Beast, to the same body, with no framing field
// in the trailer.
//
// Generated input: the seed is printed on every failure (and with -s); set
// EGRESS_MUTATION_SEED to replay one, EGRESS_MUTATION_SECONDS to run longer (default 1.5 s
// per test case). A failing mutant is shrunk (chunks deleted while it still fails) before
// it is reported. Touches nothing but memory.

#include "egress/proxy/http_framing.hpp"
#include "egress/proxy/request_head.hpp"

#include <boost/beast/core/error.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/url/parse.hpp>
#include <boost/url/authority_view.hpp>
#include <boost/url/ipv6_address.hpp>

#include <catch2/catch.hpp>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

namespace {

namespace http = boost::beast::http;
namespace urls = boost::urls;
using egress::proxy::parse_request_head;
using egress::proxy::request_form;
using egress::proxy::request_head;
using rng_t = std::mt19937_64;

// ---------------------------------------------------------------------------------------
// Helpers

std::string escaped(std::string_view s) {
  static constexpr char hex[] = "0123456789abcdef";
  std::string out;
  for (char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    if (c == '\r') out += "\\r";
    else if (c == '\n') out += "\\n";
    else if (c == '\t') out += "\\t";
    else if (c == '\\') out += "\\\\";
    else if (c < 0x20 || c >= 0x7f) out.append("\\x").append(1, hex[c >> 4]).append(1, hex[c & 15]);
    else out += ch;
  }
  return out;
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  return out;
}

std::uint64_t seed_from_env() {
  if (const char* s = std::getenv("EGRESS_MUTATION_SEED")) return std::strtoull(s, nullptr, 0);
  return std::random_device{}() ^ (static_cast<std::uint64_t>(std::random_device{}()) << 32);
}

std::chrono::milliseconds budget_from_env() {
  if (const char* s = std::getenv("EGRESS_MUTATION_SECONDS")) return std::chrono::milliseconds(static_cast<long>(std::atof(s) * 1000));
  return std::chrono::milliseconds(1500);
}

std::size_t pick(rng_t& rng, std::size_t n) { return n == 0 ? 0 : std::uniform_int_distribution<std::size_t>(0, n - 1)(rng); }
template <class T> const T& pick(rng_t& rng, const std::vector<T>& v) { return v[pick(rng, v.size())]; }

// Offsets of every line start of the head part of `s` (the request/status line first).
std::vector<std::size_t> line_starts(const std::string& s) {
  std::vector<std::size_t> out{0};
  const std::size_t end = s.find("\r\n\r\n");
  const std::size_t limit = end == std::string::npos ? s.size() : end;
  for (std::size_t p = s.find("\r\n"); p != std::string::npos && p < limit; p = s.find("\r\n", p + 2)) out.push_back(p + 2);
  return out;
}

// End of the line starting at `start`: its CRLF, or the end of `s`.
std::size_t line_end(const std::string& s, std::size_t start) { return std::min(s.find("\r\n", start), s.size()); }

// The line starting at `start` with its CRLF (if any).
std::string line_at(const std::string& s, std::size_t start) {
  return s.substr(start, std::min(line_end(s, start) + 2, s.size()) - start);
}

// Removes chunks of `s` while `fails` still holds: the smallest failing input we find.
std::string shrink(std::string s, const std::function<bool(const std::string&)>& fails) {
  int evaluations = 0;
  for (std::size_t chunk = std::max<std::size_t>(s.size() / 2, 1); chunk >= 1 && evaluations < 20000; chunk /= 2) {
    bool progress = true;
    while (progress && evaluations < 20000) {
      progress = false;
      for (std::size_t i = 0; i + chunk <= s.size() && evaluations < 20000;) {
        std::string candidate = s.substr(0, i) + s.substr(i + chunk);
        ++evaluations;
        if (fails(candidate)) {
          s = std::move(candidate);
          progress = true;
        } else {
          i += chunk;
        }
      }
    }
    if (chunk == 1) break;
  }
  return s;
}

// ---------------------------------------------------------------------------------------
// Seeds: heads as real clients and servers send them.

const std::vector<std::string>& request_seeds() {
  static const std::vector<std::string> all{
      // curl 7.88 -x: CONNECT for https, absolute form for http
      "CONNECT www.wikidata.org:443 HTTP/1.1\r\nHost: www.wikidata.org:443\r\nUser-Agent: curl/7.88.1\r\n"
      "Proxy-Connection: Keep-Alive\r\n\r\n",
      "GET http://www.wikidata.org/w/api.php?action=wbgetentities&ids=Q42&format=json HTTP/1.1\r\n"
      "Host: www.wikidata.org\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\nProxy-Connection: Keep-Alive\r\n\r\n",
      "POST http://www.wikidata.org/w/api.php HTTP/1.1\r\nHost: www.wikidata.org\r\nUser-Agent: curl/7.88.1\r\n"
      "Accept: */*\r\nProxy-Connection: Keep-Alive\r\nContent-Length: 12\r\n"
      "Content-Type: application/x-www-form-urlencoded\r\n\r\naction=query",
      "POST http://www.wikidata.org:8080/upload HTTP/1.1\r\nHost: www.wikidata.org:8080\r\nUser-Agent: curl/7.88.1\r\n"
      "Accept: */*\r\nProxy-Connection: Keep-Alive\r\nTransfer-Encoding: chunked\r\nContent-Type: text/plain\r\n\r\n"
      "5\r\nhello\r\n0\r\n\r\n",
      // Python requests 2.28 / urllib3 and urllib, http.client tunnels
      "GET http://www.wikidata.org:8080/wiki/Q42 HTTP/1.1\r\nHost: www.wikidata.org:8080\r\n"
      "User-Agent: python-requests/2.28.1\r\nAccept-Encoding: gzip, deflate\r\nAccept: */*\r\nConnection: keep-alive\r\n\r\n",
      "GET http://wikidata.org/ HTTP/1.1\r\nAccept-Encoding: identity\r\nHost: wikidata.org\r\n"
      "User-Agent: Python-urllib/3.11\r\nConnection: close\r\n\r\n",
      "CONNECT www.wikidata.org:443 HTTP/1.0\r\n\r\n",
      "CONNECT www.wikifunctions.org:443 HTTP/1.1\r\nHost: www.wikifunctions.org:443\r\n\r\n",
      "PUT http://api.example:8080/items/7 HTTP/1.1\r\nHost: api.example:8080\r\nUser-Agent: python-requests/2.28.1\r\n"
      "Accept-Encoding: gzip, deflate\r\nAccept: */*\r\nConnection: keep-alive\r\nContent-Length: 2\r\n"
      "Content-Type: application/json\r\n\r\n{}",
      // Node http.request through a proxy, undici CONNECT
      "POST http://api.example:8080/submit HTTP/1.1\r\nContent-Type: application/json\r\nHost: api.example:8080\r\n"
      "Connection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
      "CONNECT www.wikidata.org:443 HTTP/1.1\r\nhost: www.wikidata.org:443\r\nconnection: keep-alive\r\n"
      "proxy-connection: keep-alive\r\n\r\n",
      // HTTP/1.0 clients, IP literals, TRACE/OPTIONS with Max-Forwards, HEAD
      "GET http://192.0.2.7/status HTTP/1.0\r\nUser-Agent: Wget/1.21.3\r\nAccept: */*\r\nHost: 192.0.2.7\r\n"
      "Connection: Keep-Alive\r\n\r\n",
      "GET http://[2001:db8::1]:8080/x?y=1 HTTP/1.1\r\nHost: [2001:db8::1]:8080\r\nAccept: */*\r\n\r\n",
      "CONNECT [2001:db8::7]:443 HTTP/1.1\r\nHost: [2001:db8::7]:443\r\n\r\n",
      "TRACE http://www.wikidata.org/ HTTP/1.1\r\nHost: www.wikidata.org\r\nMax-Forwards: 1\r\n\r\n",
      "OPTIONS http://www.wikidata.org:8080 HTTP/1.1\r\nHost: www.wikidata.org:8080\r\nMax-Forwards: 0\r\n\r\n",
      "HEAD http://www.wikidata.org/ HTTP/1.1\r\nHost: www.wikidata.org\r\nUser-Agent: curl/7.88.1\r\n\r\n",
  };
  return all;
}

const std::vector<std::string>& response_seeds() {
  static const std::vector<std::string> all{
      "HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Mon, 01 Jan 2024 00:00:00 GMT\r\nContent-Type: application/json\r\n"
      "Content-Length: 2\r\nConnection: keep-alive\r\n\r\n{}",
      "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=UTF-8\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\n"
      "Vary: Accept-Encoding\r\n\r\n2\r\nok\r\n0\r\n\r\n",
      "HTTP/1.0 200 OK\r\nServer: SimpleHTTP/0.6 Python/3.11.2\r\nContent-type: text/plain\r\n\r\nbody",
      "HTTP/1.1 204 No Content\r\nServer: Apache\r\n\r\n",
      "HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\nContent-Length: 10\r\n\r\n",
      "HTTP/1.1 301 Moved Permanently\r\nLocation: https://www.wikidata.org/\r\nContent-Length: 0\r\n"
      "Keep-Alive: timeout=5\r\nConnection: Keep-Alive\r\n\r\n",
  };
  return all;
}

// ---------------------------------------------------------------------------------------
// Mutators: each takes a message and returns it changed in one way.

const std::vector<std::string> interesting_fields{
    "Transfer-Encoding: chunked", "Transfer-Encoding: Chunked", "Transfer-Encoding:  chunked ", "Transfer-Encoding: xchunked",
    "Transfer-Encoding: chunked, identity", "Transfer-Encoding: identity", "Transfer_Encoding: chunked",
    "Transfer-Encoding: chunked\t", "Transfer-Encoding:\tchunked", "Content-Length: 5", "Content-Length: 0",
    "Content-Length: 05", "Content_Length: 10", "Content-Length: 5, 5", "Host: evil.example", "Host: www.wikidata.org",
    "Host: www.wikidata.org:80", "host: WWW.WIKIDATA.ORG.", "Host:", "Host: a@www.wikidata.org", "Host: [::1]",
    "Connection: close", "Connection: Host", "Connection: Content-Length, Transfer-Encoding", "Connection: keep-alive",
    "Connection: X-Hidden", "X-Hidden: 1", "Max-Forwards: 0", "Max-Forwards: 1", "Max-Forwards: 00", "Max_Forwards: 0",
    "Proxy-Connection: keep-alive", "Proxy-Authorization: Basic eDp5", "Proxy_Authorization: Basic eDp5",
    "X-Forwarded-Host: evil.example", "Forwarded: host=evil.example", "Expect: 100-continue", "Upgrade: h2c",
    "TE: trailers", "Keep-Alive: timeout=5", "Trailer: Host", "X-Ok: caf\xc3\xa9"};

const std::vector<std::string> odd_bytes{std::string(1, '\0'), "\x01", "\x7f", "\x80", "\xff", "\r", "\n", ":", " ",
                                         "\t", "@", "#", "?", "/", "\\", "%", "[", "]", ",", ";", "\"", "\r\n", "\r\n "};

const std::vector<std::string> length_values{"", "+5", "-1", "005", "5,5", "5, 5", "5 5", "18446744073709551616",
                                             "18446744073709551615", "0x5", "6", "4", " 5", "5 ", "0", "1e3"};

const std::vector<std::string> target_hosts{"www.wikidata.org", "WWW.WIKIDATA.ORG", "www.wikidata.org.", "127.1",
                                            "2130706433", "0x7f.0.0.1", "[::1]", "[::ffff:127.0.0.1]", "%77ww.wikidata.org",
                                            "www.wikidata.org@evil.example", "evil.example#@www.wikidata.org",
                                            "www.wikidata.org\\@evil", "www.wikidata.org:80", "www.wikidata.org:080",
                                            "www.wikidata.org:0", "www.wikidata.org:65536", "www.wikidata.org:", "[2001:db8::1]:8080",
                                            "xn--wikidata-9ua.org", "www.wikidata.org..", "-bad.example", "a_b.example"};

using mutator = std::string (*)(std::string, rng_t&);

std::string swap_lines(std::string s, rng_t& rng) {
  auto starts = line_starts(s);
  if (starts.size() < 3) return s;
  const std::size_t a = 1 + pick(rng, starts.size() - 1), b = 1 + pick(rng, starts.size() - 1);
  if (a == b) return s;
  std::vector<std::string> lines;
  for (std::size_t i = 1; i < starts.size(); ++i) lines.push_back(line_at(s, starts[i]));
  if (!lines[a - 1].ends_with("\r\n") || !lines[b - 1].ends_with("\r\n")) return s;
  const std::size_t rest = starts.back() + lines.back().size();
  std::swap(lines[a - 1], lines[b - 1]);
  std::string out = s.substr(0, starts[1]);
  for (auto& l : lines) out += l;
  out += s.substr(rest);
  return out;
}

std::string duplicate_line(std::string s, rng_t& rng) {
  auto starts = line_starts(s);
  if (starts.size() < 2) return s;
  const std::size_t i = 1 + pick(rng, starts.size() - 1);
  const std::string l = line_at(s, starts[i]);
  if (!l.ends_with("\r\n")) return s;
  const std::size_t at = starts[1 + pick(rng, starts.size() - 1)];
  return s.insert(at, l);
}

std::string delete_line(std::string s, rng_t& rng) {
  auto starts = line_starts(s);
  if (starts.size() < 2) return s;
  const std::size_t i = 1 + pick(rng, starts.size() - 1);
  return s.erase(starts[i], line_at(s, starts[i]).size());
}

std::string flip_case(std::string s, rng_t& rng) {
  const std::size_t head = std::min(s.find("\r\n\r\n"), s.size());
  if (head == 0) return s;
  const std::size_t from = pick(rng, head), n = 1 + pick(rng, 12);
  for (std::size_t i = from; i < std::min(head, from + n); ++i) {
    char& c = s[i];
    if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
    else if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return s;
}

std::string insert_whitespace(std::string s, rng_t& rng) {
  const std::size_t head = std::min(s.find("\r\n\r\n"), s.size());
  auto starts = line_starts(s);
  const std::size_t line = pick(rng, starts.size());
  const std::size_t ls = starts[line], le = line_end(s, ls);
  const std::size_t colon = s.find(':', ls);
  std::vector<std::size_t> spots{ls, le};
  if (colon < le) {
    spots.push_back(colon);
    spots.push_back(colon + 1);
  }
  for (std::size_t p = s.find(' ', ls); p < le; p = s.find(' ', p + 1)) spots.push_back(p);
  const std::size_t at = std::min(pick(rng, spots), head);
  return s.insert(at, pick(rng, 3) == 0 ? "\t" : " ");
}

std::string obs_fold(std::string s, rng_t& rng) {
  auto starts = line_starts(s);
  if (starts.size() < 2) return s;
  const std::size_t i = 1 + pick(rng, starts.size() - 1);
  const std::size_t le = line_end(s, starts[i]);
  const std::size_t at = starts[i] + pick(rng, le - starts[i] + 1);
  return s.insert(at, pick(rng, 2) ? "\r\n " : "\r\n\t");
}

std::string change_length(std::string s, rng_t& rng) {
  const std::size_t p = lower(s).find("content-length:");
  if (p == std::string::npos)
    return s.insert(std::min(line_end(s, 0) + 2, s.size()), "Content-Length: " + pick(rng, length_values) + "\r\n");
  const std::size_t v = p + 15, e = s.find("\r\n", v);
  return s.replace(v, e - v, " " + pick(rng, length_values));
}

std::string line_ending(std::string s, rng_t& rng) {
  std::vector<std::size_t> crlf;
  for (std::size_t p = s.find("\r\n"); p != std::string::npos; p = s.find("\r\n", p + 2)) crlf.push_back(p);
  if (crlf.empty()) return s;
  static const std::vector<std::string> forms{"\n", "\r", "\r\r\n", "\n\r", "\r\n\r\n", "\r\n\n"};
  return s.replace(pick(rng, crlf), 2, pick(rng, forms));
}

std::string insert_byte(std::string s, rng_t& rng) {
  const std::size_t head = std::min(s.find("\r\n\r\n"), s.size());
  return s.insert(pick(rng, head + 1), pick(rng, odd_bytes));
}

std::string delete_byte(std::string s, rng_t& rng) {
  if (s.empty()) return s;
  const std::size_t head = std::min(s.find("\r\n\r\n") + 4, s.size());
  return s.erase(pick(rng, head), 1 + pick(rng, 3));
}

std::string add_field(std::string s, rng_t& rng) {
  auto starts = line_starts(s);
  const std::size_t at = starts.size() > 1 ? starts[1 + pick(rng, starts.size() - 1)] : line_end(s, 0) + 2;
  return s.insert(std::min(at, s.size()), pick(rng, interesting_fields) + "\r\n");
}

std::string change_target(std::string s, rng_t& rng) {
  const std::size_t sp1 = s.find(' ');
  const std::size_t sp2 = s.find(' ', sp1 + 1);
  if (sp1 == std::string::npos || sp2 == std::string::npos || sp2 > s.find("\r\n")) return s;
  std::string target = s.substr(sp1 + 1, sp2 - sp1 - 1);
  const std::string host = pick(rng, target_hosts);
  const bool connect = s.starts_with("CONNECT ");
  static const std::vector<std::string> paths{"/", "", "/a?b=c", "?q", "/x#frag", "/%2e%2e/", "/caf\xc3\xa9", "*"};
  static const std::vector<std::string> schemes{"http://", "HTTP://", "https://", "ftp://", "http:/", "http:///", ""};
  if (connect) target = host + (host.find(':') == std::string::npos || host.front() == '[' ? ":443" : "");
  else target = pick(rng, schemes) + host + pick(rng, paths);
  return s.replace(sp1 + 1, sp2 - sp1 - 1, target);
}

std::string change_method_or_version(std::string s, rng_t& rng) {
  static const std::vector<std::string> methods{"GET", "get", "CONNECT", "TRACE", "OPTIONS", "HEAD", "POST", "G ET", "GET\t", "PRI", "M-SEARCH"};
  static const std::vector<std::string> versions{"HTTP/1.1", "HTTP/1.0", "HTTP/1.2", "http/1.1", "HTTP/2.0", "HTTP/1.1 ",
                                                 "HTTP/01.1", "HTTP/1", ""};
  const std::size_t eol = s.find("\r\n");
  if (eol == std::string::npos) return s;
  if (pick(rng, 2)) {
    const std::size_t sp = s.find(' ');
    if (sp < eol) return s.replace(0, sp, pick(rng, methods));
  } else {
    const std::size_t sp = s.rfind(' ', eol);
    if (sp != std::string::npos) return s.replace(sp + 1, eol - sp - 1, pick(rng, versions));
  }
  return s;
}

std::string split_line(std::string s, rng_t& rng) {
  const std::size_t head = std::min(s.find("\r\n\r\n"), s.size());
  return s.insert(pick(rng, head + 1), "\r\n");
}

const std::vector<mutator> head_mutators{swap_lines,  duplicate_line, delete_line, flip_case,     insert_whitespace,
                                         obs_fold,    change_length,  line_ending, insert_byte,   delete_byte,
                                         add_field,   change_target,  change_method_or_version,   split_line};

std::string mutate(const std::string& seed, rng_t& rng, const std::vector<mutator>& mutators) {
  std::string s = seed;
  const std::size_t n = 1 + pick(rng, 4);
  for (std::size_t i = 0; i < n; ++i) s = pick(rng, mutators)(std::move(s), rng);
  return s;
}

// ---------------------------------------------------------------------------------------
// The independent readings.

struct beast_request {
  bool ok = false;
  std::string error;
  std::size_t used = 0;
  std::string method, target;
  unsigned version = 0;
  std::vector<std::pair<std::string, std::string>> fields;
  bool chunked = false;
  std::optional<std::uint64_t> content_length;
  bool keep_alive = false;
};

beast_request beast_parse_request(std::string_view head) {
  beast_request out;
  http::request_parser<http::empty_body> p;
  p.eager(false);
  p.header_limit(1 << 20);
  p.body_limit(boost::none);
  boost::beast::error_code ec;
  out.used = p.put(boost::asio::const_buffer(head.data(), head.size()), ec);
  if (ec || !p.is_header_done()) {
    out.error = ec ? ec.message() : "header not done";
    return out;
  }
  const auto& m = p.get();
  out.ok = true;
  out.method = std::string(m.method_string());
  out.target = std::string(m.target());
  out.version = m.version();
  for (const auto& f : m) out.fields.emplace_back(std::string(f.name_string()), std::string(f.value()));
  out.chunked = p.chunked();
  if (p.content_length()) out.content_length = *p.content_length();
  out.keep_alive = p.keep_alive();
  return out;
}

// A host as Boost.URL reads it, in the proxy's normal form: reg-names lower case without
// one trailing dot, IPv4 dotted quad, IPv6 in RFC 5952 text (no brackets).
struct url_host {
  std::string text;
  std::optional<std::uint16_t> port;
  bool userinfo = false;
};

template <class View> std::optional<url_host> host_of(const View& v) {
  url_host h;
  h.userinfo = v.has_userinfo();
  switch (v.host_type()) {
    case urls::host_type::name: {
      h.text = lower(std::string(v.encoded_host()));
      if (!h.text.empty() && h.text.back() == '.') h.text.pop_back();
      break;
    }
    case urls::host_type::ipv4: h.text = v.host_ipv4_address().to_string(); break;
    case urls::host_type::ipv6: h.text = v.host_ipv6_address().to_string(); break;
    default: return std::nullopt;
  }
  if (v.has_port()) {
    if (v.port().empty()) h.port = 0;
    else h.port = v.port_number();
  }
  return h;
}

// Boost.URL 1.81 does not backtrack from its IPv4 rule: it refuses the reg-names
// "1.2.3.4.5" and "1.0.2.7s" as an authority, and splits "http://1.0.2.7s" into host
// 1.0.2.7 and path "s" (RFC 3986 §3.2.2: the host is the longest match, and a path after
// an authority starts with "/"). For a host with such a dotted-quad prefix the reg-name
// reading is made here instead: RFC 3986 reg-name bytes, lower case, one trailing dot off.
std::optional<url_host> reg_name_after_ipv4_prefix(std::string_view text) {
  std::size_t i = 0, dots = 0;
  while (i < text.size() && ((text[i] >= '0' && text[i] <= '9') || text[i] == '.')) dots += text[i++] == '.';
  if (dots < 3 || i == text.size() || text[i] == ':') return std::nullopt;
  const std::size_t colon = text.find(':');
  url_host h;
  h.text = lower(text.substr(0, colon));
  if (h.text.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789-._~!$&'()*+,;=") != std::string::npos) return std::nullopt;
  if (!h.text.empty() && h.text.back() == '.') h.text.pop_back();
  if (colon != std::string_view::npos) {
    auto port = urls::parse_authority("h" + std::string(text.substr(colon)));
    if (!port) return std::nullopt;
    h.port = port->port().empty() ? std::uint16_t{0} : port->port_number();
  }
  return h;
}

std::optional<url_host> authority_host(std::string_view text) {
  if (auto h = reg_name_after_ipv4_prefix(text)) return h;
  auto a = urls::parse_authority(text);
  if (!a) return std::nullopt;
  return host_of(*a);
}

// A path and query with the bytes RFC 3986 has no place for there ('"', '<', '>', '\\',
// '^', '`', '{', '|', '}', '[', ']', a '%' without two hex digits, >= 0x80)
// percent-encoded.
std::string rfc3986_escaped(std::string_view s) {
  static constexpr char hex[] = "0123456789ABCDEF";
  const auto is_hex = [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); };
  std::string out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    const char ch = s[i];
    const auto c = static_cast<unsigned char>(ch);
    const bool stray_percent = ch == '%' && !(i + 2 < s.size() && is_hex(s[i + 1]) && is_hex(s[i + 2]));
    if (std::string_view("\"<>\\^`{|}[]").find(ch) != std::string_view::npos || c >= 0x80 || stray_percent)
      out += {'%', hex[c >> 4], hex[c & 15]};
    else out += ch;
  }
  return out;
}

// The proxy's host text in the same form as `url_host::text`.
std::string our_host_text(const request_head& r) {
  if (r.host.kind == egress::common::host_kind::ipv6) return urls::ipv6_address(r.host.text).to_string();
  return r.host.text;
}

std::string authority_text(const request_head& r) {
  std::string out = r.host.kind == egress::common::host_kind::ipv6 ? "[" + r.host.text + "]" : r.host.text;
  if (r.port != 80) out += ":" + std::to_string(r.port);
  return out;
}

std::size_t count_fields(const beast_request& b, std::string_view name) {
  std::size_t n = 0;
  for (const auto& [k, v] : b.fields) n += lower(k) == name;
  return n;
}

// ---------------------------------------------------------------------------------------
// The invariant for one request head. Returns a description of the first violation.

std::optional<std::string> check_request(const std::string& input) {
  std::ostringstream why;
  const std::size_t end = egress::proxy::find_head_end(input);
  // The incremental search finds the same end whatever the segments (the proxy reads heads
  // in pieces): one-byte steps and halves.
  for (std::size_t step : {std::size_t{1}, std::max<std::size_t>(input.size() / 2, 1)}) {
    std::size_t searched = 0, found = 0;
    for (std::size_t have = std::min(step, input.size());; have = std::min(have + step, input.size())) {
      found = egress::proxy::find_head_end(std::string_view(input).substr(0, have), searched);
      if (found != 0 || have == input.size()) break;
      searched = have;
    }
    if (found != end) return "find_head_end in steps of " + std::to_string(step) + " found " + std::to_string(found) +
                             ", whole " + std::to_string(end);
  }
  if (end == 0) return std::nullopt;  // no head yet: nothing parsed, nothing forwarded
  const auto ours = parse_request_head(input);
  if (!ours) return std::nullopt;  // refused: the invariant holds
  const request_head& r = *ours;
  const std::string_view head(input.data(), r.head_bytes);

  const auto b = beast_parse_request(head);
  if (!b.ok) return "ours accepts, Beast refuses: " + b.error;
  if (b.used != r.head_bytes) return "head length: ours " + std::to_string(r.head_bytes) + ", Beast " + std::to_string(b.used);
  if (b.method != r.method) return "method: Beast " + b.method;
  if (b.target != r.target) return "target: Beast " + escaped(b.target);
  if (b.version != static_cast<unsigned>(10 + r.version_minor)) return "version: Beast " + std::to_string(b.version);
  // Beast keeps fields of one name together (a repeat goes after the last of its name),
  // so ours are grouped the same way before comparing.
  std::vector<std::pair<std::string, std::string>> grouped;
  for (const auto& f : r.fields) {
    auto at = grouped.end();
    for (auto it = grouped.begin(); it != grouped.end(); ++it)
      if (lower(it->first) == lower(f.name)) at = it + 1;
    grouped.emplace(at, std::string(f.name), std::string(f.value));
  }
  if (b.fields != grouped) {
    std::string text;
    for (const auto& [k, v] : b.fields) text += escaped(k) + "=" + escaped(v) + "; ";
    return "fields differ; Beast reads " + text;
  }
  if (b.chunked != r.chunked) return "chunked: Beast " + std::to_string(b.chunked);
  if (b.content_length != r.content_length) return "content length differs from Beast's";
  // Ours never keeps open what Beast closes. It may close what Beast keeps open in two
  // known, conservative cases: Beast reads Proxy-Connection as Connection (ours honours
  // only its "close"), and Beast lets "keep-alive" beat "close" in HTTP/1.0 (RFC 9112
  // §9.3: "close" ends the connection whatever the version).
  if (r.keep_alive && !b.keep_alive) return "keep-alive: ours keeps open what Beast closes";
  if (!r.keep_alive && b.keep_alive) {
    bool explained = count_fields(b, "proxy-connection") > 0;
    for (const auto& [k, v] : b.fields)
      if (lower(k) == "connection" && lower(v).find("close") != std::string::npos) explained = true;
    if (!explained) return "keep-alive: ours closes what Beast keeps open";
  }

  // The target as Boost.URL reads it.
  const std::string host = our_host_text(r);
  if (r.form == request_form::connect) {
    const auto h = authority_host(r.target);
    if (!h) return "CONNECT target: Boost.URL refuses the authority";
    if (h->userinfo || h->text != host || h->port != r.port)
      return "CONNECT target: Boost.URL reads " + h->text + ":" + std::to_string(h->port.value_or(0));
  } else {
    // Boost.URL follows RFC 3986, which has no '"', '<', '>', '\\', '^', '`', '{', '|', '}'
    // or bytes >= 0x80; we relay such path and query bytes as received (real clients send
    // "{" in SPARQL queries), so they are percent-encoded for Boost.URL. Only bytes after
    // the authority are touched: in the authority they must make ours refuse.
    const std::size_t scheme_end = r.target.find("://");
    if (scheme_end == std::string_view::npos || lower(r.target.substr(0, scheme_end)) != "http")
      return "absolute target: not http://";
    // The authority ends at the first '/', '?' or '#' (RFC 3986 §3.2); its host is read by
    // Boost.URL, the path and query by Boost.URL under a neutral host.
    const std::size_t authority = scheme_end + 3;
    const std::size_t rest = std::min(r.target.find_first_of("/?#", authority), r.target.size());
    const auto h = authority_host(r.target.substr(authority, rest - authority));
    if (!h || h->userinfo || h->text != host || h->port.value_or(80) != r.port)
      return "absolute target: Boost.URL reads host " + (h ? h->text + ":" + std::to_string(h->port.value_or(80)) : "none");
    const std::string neutral = "http://h" + rfc3986_escaped(r.target.substr(rest));  // outlives the view
    auto u = urls::parse_absolute_uri(neutral);
    if (!u || u->has_fragment()) return "absolute target: Boost.URL refuses the path, or reads a fragment";
    std::string path = std::string(u->encoded_path());
    if (path.empty()) path = (r.method == "OPTIONS" && !u->has_query()) ? "*" : "/";
    if (u->has_query()) path += "?" + std::string(u->encoded_query());
    const std::string ours_path = rfc3986_escaped(r.path_and_query);
    if (path != ours_path) return "path: Boost.URL " + escaped(path) + ", ours " + escaped(r.path_and_query);
  }
  // Host, when present, names the same host (any port for CONNECT without one).
  for (const auto& f : r.fields) {
    if (lower(f.name) != "host") continue;
    const auto h = authority_host(f.value);
    if (!h || h->userinfo || h->text != host) return "Host field: Boost.URL reads another host in " + escaped(f.value);
    if (h->port ? *h->port != r.port : (r.form == request_form::absolute && r.port != 80))
      return "Host field: another port in " + escaped(f.value);
  }
  // Max-Forwards of TRACE/OPTIONS as we judged it.
  if (r.method == "TRACE" || r.method == "OPTIONS") {
    for (const auto& [k, v] : b.fields)
      if (lower(k) == "max-forwards") {
        if (!r.max_forwards) return "Max-Forwards present but not read";
        const bool zero = v.find_first_not_of('0') == std::string::npos;
        if (zero != r.answer_locally) return "Max-Forwards 0 judged wrongly";
      }
  }
  if (r.form == request_form::connect || r.answer_locally) return std::nullopt;

  // What we forward: Beast reads the same request from it ...
  const std::string up = egress::proxy::upstream_head(r);
  const auto ub = beast_parse_request(up);
  if (!ub.ok || ub.used != up.size()) return "forwarded head: Beast refuses it: " + ub.error + " in " + escaped(up);
  if (ub.method != r.method || ub.target != r.path_and_query || ub.version != 11) return "forwarded request line differs";
  if (count_fields(ub, "host") != 1) return "forwarded head: not exactly one Host";
  for (const auto& [k, v] : ub.fields) {
    const std::string n = lower(k);
    std::string folded = n;
    for (char& c : folded) c = c == '_' ? '-' : c;
    if (n == "host" && v != authority_text(r)) return "forwarded Host " + escaped(v);
    if (n == "transfer-encoding" && v != "chunked") return "forwarded Transfer-Encoding not canonical: " + escaped(v);
    if (n == "content-length" && v != std::to_string(*r.content_length)) return "forwarded Content-Length not canonical";
    if (folded != n && (folded == "content-length" || folded == "transfer-encoding" || folded == "host" ||
                        folded == "max-forwards" || folded.starts_with("proxy-")))
      return "forwarded an '_' alias: " + k;
    if (folded.starts_with("proxy-") || folded == "proxy" || folded == "x-forwarded-host" || folded == "forwarded")
      return "forwarded " + k;
    if (n == "connection" && v != "close") return "forwarded Connection " + escaped(v);
  }
  if (count_fields(ub, "transfer-encoding") > 1 || count_fields(ub, "content-length") > 1) return "forwarded two framing fields";
  if (ub.chunked != r.chunked || ub.content_length != r.content_length) return "forwarded framing differs (Beast)";
  if (ub.keep_alive) return "forwarded head keeps the upstream connection alive";
  if (auto hb = authority_host(ub.fields.empty() ? "" : ub.fields.front().second); !hb || hb->text != host)
    return "forwarded Host: Boost.URL reads another host";

  // ... and so do we, as an absolute-form request again; forwarding it once more changes
  // nothing (Max-Forwards aside, which is decremented each time).
  std::string again = up;
  const std::string absolute = "http://" + authority_text(r) + (r.path_and_query == "*" ? "" : r.path_and_query);
  again.replace(r.method.size() + 1, r.path_and_query.size(), absolute);
  const auto r2 = parse_request_head(again);
  if (!r2) return "forwarded head: ours refuses it as " + std::string(r2.error().reason) + ": " + escaped(again);
  if (r2->host != r.host || r2->port != r.port || r2->path_and_query != r.path_and_query || r2->chunked != r.chunked ||
      r2->content_length != r.content_length || r2->method != r.method)
    return "forwarded head: ours reads another request";
  if (!r.max_forwards && !r2->answer_locally && egress::proxy::upstream_head(*r2) != up)
    return "forwarding is not idempotent: " + escaped(egress::proxy::upstream_head(*r2));
  return std::nullopt;
}

// ---------------------------------------------------------------------------------------
// Responses.

std::optional<std::string> check_response(const std::string& input) {
  const std::size_t end = egress::proxy::find_head_end(input);
  if (end == 0) return std::nullopt;
  const std::string_view head(input.data(), end);
  const auto ours = egress::proxy::parse_response_head(head, false);
  if (!ours) return std::nullopt;
  // Ours accepts "HTTP/1.1 200" without the SP before an empty reason phrase, which RFC
  // 9112 §4 asks for and Beast requires (servers do send it; it frames nothing). Beast is
  // given the form with the SP; the head we send the client always has it.
  std::string beast_head(head);
  const std::size_t eol = beast_head.find("\r\n");
  if (eol == 12) beast_head.insert(12, " ");
  http::response_parser<http::empty_body> p;
  p.eager(false);
  p.header_limit(1 << 20);
  p.body_limit(boost::none);
  boost::beast::error_code ec;
  const std::size_t used = p.put(boost::asio::const_buffer(beast_head.data(), beast_head.size()), ec);
  if (ec || !p.is_header_done()) return "ours accepts, Beast refuses: " + ec.message();
  if (used != beast_head.size()) return "head length differs";
  if (p.get().result_int() != static_cast<unsigned>(ours->status)) return "status differs";
  const bool no_body = ours->status < 200 || ours->status == 204 || ours->status == 304;
  if (!no_body) {
    if (p.chunked() != (ours->body == egress::proxy::body_kind::chunked)) return "chunked differs from Beast's";
    const bool beast_length = p.content_length().has_value();
    if (beast_length != (ours->body == egress::proxy::body_kind::length || ours->body == egress::proxy::body_kind::none))
      return "length framing differs from Beast's";
    if (beast_length && *p.content_length() != ours->content_length) return "content length differs from Beast's";
  }
  for (bool keep : {true, false}) {
    // The server keeps the client connection only for a response with framing.
    if (keep && ours->body == egress::proxy::body_kind::until_close) continue;
    const std::string out = egress::proxy::client_response_head(*ours, keep);
    const auto again = egress::proxy::parse_response_head(out, false);
    if (!again) return "client head: ours refuses it: " + escaped(out);
    if (again->status != ours->status || again->body != ours->body || again->content_length != ours->content_length)
      return "client head: ours reads other framing";
    http::response_parser<http::empty_body> q;
    q.eager(false);
    q.body_limit(boost::none);
    q.put(boost::asio::const_buffer(out.data(), out.size()), ec);
    if (ec || !q.is_header_done()) return "client head: Beast refuses it: " + ec.message();
    if (q.keep_alive() != keep) return "client head: persistence differs";
    if (!no_body && (q.chunked() != p.chunked() || q.content_length() != p.content_length()))
      return "client head: Beast reads other framing";
    for (const auto& f : q.get()) {
      std::string n = lower(f.name_string());
      if (n == "transfer-encoding" && f.value() != "chunked") return "client head: Transfer-Encoding not canonical";
      for (char& c : n) c = c == '_' ? '-' : c;
      if (n != lower(f.name_string()) && (n == "content-length" || n == "transfer-encoding"))
        return "client head: an '_' alias of a framing field";
    }
  }
  return std::nullopt;
}

// ---------------------------------------------------------------------------------------
// Chunked bodies: what `step` relays parses, by Beast, to the body ours consumed.

const std::string chunked_head = "POST /x HTTP/1.1\r\nHost: a.example\r\nTransfer-Encoding: chunked\r\n\r\n";

const std::vector<std::string>& chunked_seeds() {
  static const std::vector<std::string> all{
      "5\r\nhello\r\n0\r\n\r\n",
      "4\r\nWiki\r\n6;name=val\r\npedia \r\n0\r\nX-Checksum: abc\r\n\r\n",
      "1a\r\nabcdefghijklmnopqrstuvwxyz\r\n0;last=\"q\\\"x\"\r\nServer-Timing: db;dur=53\r\nConnection: close\r\n\r\n",
      "000\r\nX: 1\r\n\r\n",
  };
  return all;
}

std::string chunk_field(std::string s, rng_t& rng) {
  const std::size_t last = s.rfind("\r\n\r\n");
  if (last == std::string::npos) return s;
  return s.insert(last + 2, pick(rng, interesting_fields) + "\r\n");
}
std::string chunk_size(std::string s, rng_t& rng) {
  static const std::vector<std::string> sizes{"0", "00", "5", "05", "+5", "-5", "5 ", " 5", "0x5", "ffffffffffffffff",
                                              "10000000000000000", "5;", "5;a", "5;a=", "5 ;a=b", "5;a=\"\r\n\"", "g"};
  const std::size_t eol = s.find("\r\n");
  if (eol == std::string::npos) return s;
  return s.replace(0, eol, pick(rng, sizes));
}

const std::vector<mutator> body_mutators{chunk_field, chunk_field, chunk_size,  line_ending, insert_byte,
                                         delete_byte, flip_case,   split_line,  obs_fold,    duplicate_line};

std::optional<std::string> check_chunked(const std::string& body) {
  egress::proxy::chunked_scanner s;
  const auto st = s.step(body);
  if (s.status() != egress::proxy::chunked_scanner::state::done) return std::nullopt;
  const std::string relayed = body.substr(0, st.verbatim) + std::string(s.trailer_section());
  // Beast on the original: it must end where we end and read the same data (or refuse).
  auto beast_body = [](const std::string& b, std::size_t& used, bool& done, std::string& merged_fields) {
    http::request_parser<http::string_body> p;
    p.body_limit(boost::none);
    p.header_limit(1 << 20);
    boost::beast::error_code ec;
    const std::string all = chunked_head + b;
    used = p.put(boost::asio::const_buffer(all.data(), all.size()), ec);
    while (!ec && !p.is_done() && used < all.size()) {
      const std::size_t n = p.put(boost::asio::const_buffer(all.data() + used, all.size() - used), ec);
      if (n == 0) break;
      used += n;
    }
    done = !ec && p.is_done();
    used = used > chunked_head.size() ? used - chunked_head.size() : 0;
    for (const auto& f : p.get()) merged_fields += lower(f.name_string()) + ":" + std::string(f.value()) + "\n";
    return p.get().body();
  };
  std::size_t used_orig = 0, used_relay = 0;
  bool done_orig = false, done_relay = false;
  std::string fields_orig, fields_relay;
  const std::string data_orig = beast_body(body, used_orig, done_orig, fields_orig);
  const std::string data_relay = beast_body(relayed, used_relay, done_relay, fields_relay);
  if (!done_relay) return "ours accepts, Beast refuses what we relay: " + escaped(relayed);
  if (used_relay != relayed.size()) return "Beast ends the relayed body elsewhere";
  if (done_orig && (used_orig != st.consumed || data_orig != data_relay))
    return "Beast frames the original differently: ends at " + std::to_string(used_orig) + ", ours " + std::to_string(st.consumed);
  // The trailer fields Beast merged into the header: no second framing or routing field,
  // nothing hop-by-hop.
  std::size_t host = 0, te = 0;
  std::istringstream lines(fields_relay);
  for (std::string l; std::getline(lines, l);) {
    const std::string n = l.substr(0, l.find(':'));
    std::string folded = n;
    for (char& c : folded) c = c == '_' ? '-' : c;
    host += folded == "host";
    te += folded == "transfer-encoding";
    if (folded == "content-length" || folded == "connection" || folded == "te" || folded == "trailer" ||
        folded == "upgrade" || folded == "keep-alive" || folded == "proxy" || folded.starts_with("proxy-"))
      return "relayed trailer carries " + n;
  }
  if (host != 1 || te != 1) return "relayed trailer carries Host or Transfer-Encoding";
  return std::nullopt;
}

// ---------------------------------------------------------------------------------------
// The driver.

struct run_result {
  std::uint64_t seed = 0;
  std::size_t cases = 0;
};

run_result run(const char* what, const std::vector<std::string>& seeds, const std::vector<mutator>& mutators,
               const std::function<std::optional<std::string>(const std::string&)>& check) {
  const std::uint64_t seed = seed_from_env();
  const auto budget = budget_from_env();
  rng_t rng(seed);
  run_result res;
  res.seed = seed;
  const auto start = std::chrono::steady_clock::now();
  // The seeds themselves first, then mutants until the time budget is spent.
  for (std::size_t i = 0;; ++i) {
    if (i >= seeds.size() && std::chrono::steady_clock::now() - start > budget) break;
    const std::string input = i < seeds.size() ? seeds[i] : mutate(pick(rng, seeds), rng, mutators);
    ++res.cases;
    const auto failure = check(input);
    if (!failure) continue;
    // Shrink while the same kind of failure (the text before the first ':') remains.
    const auto kind = [](const std::string& f) { return f.substr(0, f.find(':')); };
    const std::string small = shrink(input, [&](const std::string& s) {
      const auto f = check(s);
      return f && kind(*f) == kind(*failure);
    });
    FAIL(what << ": invariant broken (EGRESS_MUTATION_SEED=" << seed << ", case " << res.cases << ")\n  " << *failure
              << "\n  input:  " << escaped(input) << "\n  shrunk: " << escaped(small) << "\n  shrunk failure: "
              << check(small).value_or("?"));
  }
  return res;
}

}  // namespace

TEST_CASE("mutated request heads: ours accepts only what Beast reads the same, and forwards a head both re-read the same",
          "[unit][proxy][mutation]") {
  std::size_t parsed = 0;
  const auto res = run("request heads", request_seeds(), head_mutators, [&](const std::string& s) {
    auto f = check_request(s);
    if (!f && egress::proxy::find_head_end(s) && parse_request_head(s)) ++parsed;
    return f;
  });
  INFO("EGRESS_MUTATION_SEED=" << res.seed << ": " << res.cases << " cases, " << parsed << " accepted by our parser");
  CHECK(res.cases > 1000);
  CHECK(parsed > res.cases / 20);  // the mutants are not all garbage
}

TEST_CASE("mutated response heads: ours accepts only what Beast frames the same", "[unit][proxy][mutation]") {
  std::vector<mutator> ms = head_mutators;
  std::erase(ms, mutator{change_target});
  std::erase(ms, mutator{change_method_or_version});
  std::size_t parsed = 0;
  const auto res = run("response heads", response_seeds(), ms, [&](const std::string& s) {
    auto f = check_response(s);
    const std::size_t end = egress::proxy::find_head_end(s);
    if (!f && end && egress::proxy::parse_response_head(std::string_view(s).substr(0, end), false)) ++parsed;
    return f;
  });
  INFO("EGRESS_MUTATION_SEED=" << res.seed << ": " << res.cases << " cases, " << parsed << " accepted by our parser");
  CHECK(res.cases > 1000);
  CHECK(parsed > res.cases / 20);
}

TEST_CASE("mutated chunked bodies: what the scanner relays Beast frames the same, trailer sanitized",
          "[unit][proxy][mutation]") {
  std::size_t done = 0;
  const auto res = run("chunked bodies", chunked_seeds(), body_mutators, [&](const std::string& s) {
    auto f = check_chunked(s);
    egress::proxy::chunked_scanner sc;
    sc.step(s);
    if (!f && sc.status() == egress::proxy::chunked_scanner::state::done) ++done;
    return f;
  });
  INFO("EGRESS_MUTATION_SEED=" << res.seed << ": " << res.cases << " cases, " << done << " complete bodies");
  CHECK(res.cases > 1000);
  CHECK(done > res.cases / 20);
}
