#pragma once
/// The request head a client sends to the proxy: finding its end, parsing and checking it
/// (CONNECT authority-form and plain-HTTP absolute-form only), and building the head sent
/// upstream for plain HTTP. Pure: takes text, returns values; no sockets, no Asio I/O.

#include "egress/common/host_name.hpp"

#include <boost/assert/source_location.hpp>
#include <boost/system/result.hpp>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace egress::proxy {

/// Stable reason words of a rejected request head, shared by logs, metrics, the
/// `X-Egress-Denied` header and tests. Static storage: a `head_error::reason` views one of
/// these, or a `common::host_error_reason` word (`host_*`) for a bad target host.
/// Status and trigger of each are listed on `parse_request_head`.
namespace head_reason {
inline constexpr std::string_view incomplete_head = "incomplete_head";
inline constexpr std::string_view bare_lf = "bare_lf";
inline constexpr std::string_view bare_cr = "bare_cr";
inline constexpr std::string_view bad_request_line = "bad_request_line";
inline constexpr std::string_view version_missing = "version_missing";
inline constexpr std::string_view bad_method = "bad_method";
inline constexpr std::string_view bad_version = "bad_version";
inline constexpr std::string_view version_not_supported = "version_not_supported";
inline constexpr std::string_view bad_target = "bad_target";
inline constexpr std::string_view fragment_in_target = "fragment_in_target";
inline constexpr std::string_view origin_form = "origin_form";
inline constexpr std::string_view asterisk_form = "asterisk_form";
inline constexpr std::string_view https_absolute_form = "https_absolute_form";
inline constexpr std::string_view unsupported_scheme = "unsupported_scheme";
inline constexpr std::string_view userinfo_in_target = "userinfo_in_target";
inline constexpr std::string_view bad_connect_target = "bad_connect_target";
inline constexpr std::string_view port_missing = "port_missing";
inline constexpr std::string_view bad_port = "bad_port";
inline constexpr std::string_view too_many_fields = "too_many_fields";
inline constexpr std::string_view obs_fold = "obs_fold";
inline constexpr std::string_view bad_field_line = "bad_field_line";
inline constexpr std::string_view whitespace_before_colon = "whitespace_before_colon";
inline constexpr std::string_view bad_field_name = "bad_field_name";
inline constexpr std::string_view bad_field_value = "bad_field_value";
inline constexpr std::string_view host_missing = "host_missing";
inline constexpr std::string_view host_duplicate = "host_duplicate";
inline constexpr std::string_view host_header_invalid = "host_header_invalid";
inline constexpr std::string_view host_mismatch = "host_mismatch";
inline constexpr std::string_view duplicate_content_length = "duplicate_content_length";
inline constexpr std::string_view bad_content_length = "bad_content_length";
inline constexpr std::string_view bad_transfer_encoding = "bad_transfer_encoding";
inline constexpr std::string_view bad_connection = "bad_connection";
inline constexpr std::string_view transfer_encoding_http10 = "transfer_encoding_http10";
inline constexpr std::string_view cl_and_te = "cl_and_te";
inline constexpr std::string_view connect_with_body = "connect_with_body";
inline constexpr std::string_view transparent_connect = "transparent_connect";
inline constexpr std::string_view transparent_absolute_form = "transparent_absolute_form";
inline constexpr std::string_view trace_with_body = "trace_with_body";
inline constexpr std::string_view bad_max_forwards = "bad_max_forwards";
}  // namespace head_reason

/// One header field line as received.
/// Lifetime: both views point into the `head` given to `parse_request_head`.
struct header_field {
  std::string_view name;   ///< field-name as received (case kept; compare case-insensitively)
  std::string_view value;  ///< field-value with leading and trailing SP/HTAB (OWS) removed
  friend bool operator==(const header_field&, const header_field&) = default;
};

/// The shape of the request-target (RFC 9112 §3.2): connect and absolute on the proxy
/// listener, origin on a transparent HTTP listener.
enum class request_form {
  connect,   ///< authority-form "host:port" of a CONNECT request (RFC 9112 §3.2.3)
  absolute,  ///< absolute-form "http://host[:port][/path][?query]" (RFC 9112 §3.2.2)
  origin,    ///< origin-form "/path[?query]" with the target from Host (RFC 9112 §3.2.1)
};

/// Where a head arrived. The proxy listener takes CONNECT and absolute-form; a
/// transparent HTTP listener (capture dns/both: the client resolved the name to the
/// proxy and believes it talks to the origin) takes origin-form only, routed by Host.
struct head_context {
  bool transparent = false;
  /// The transparent listener's port: the target port, which a Host port must equal (a
  /// Host without port means 80, RFC 9110 §4.2.1).
  std::uint16_t listener_port = 80;
};

/// A request head that passed every check of `parse_request_head`.
/// Lifetime: `method`, `target` and `fields` view the `head` given to
/// `parse_request_head`; keep that buffer alive and unchanged while using them. `host` and
/// `path_and_query` are owned.
struct request_head {
  std::string_view method;  ///< a token, case-sensitive ("CONNECT", "GET", ...)
  request_form form = request_form::absolute;
  /// The target host, normalised by `common::normalize_host(..., host_syntax::uri)`:
  /// names lower case without trailing dot; IP literals recognised, never resolved.
  common::host host;
  /// Explicit port of the target, or 80 for an absolute-form target without one; origin
  /// form: the listener's port. Never 0.
  std::uint16_t port = 0;
  std::string_view target;  ///< the request-target exactly as received
  /// Absolute form: the origin-form to send upstream, "/path?query"; "/" when the target
  /// has no path (RFC 9112 §3.2.1), and "/?query" for "http://host?query" (hence owned).
  /// Origin form: the target as received. CONNECT: empty.
  std::string path_and_query;
  int version_minor = 1;               ///< HTTP/1.0 -> 0, HTTP/1.1 -> 1
  std::vector<header_field> fields;    ///< every field line, in order, as received
  std::size_t head_bytes = 0;          ///< bytes through the final CRLFCRLF; body or tunnel bytes follow
  /// Body framing (RFC 9112 §6.3): the Content-Length value, or `chunked`, or neither
  /// (no body). Never both. CONNECT: at most Content-Length 0, never chunked.
  std::optional<std::uint64_t> content_length;
  bool chunked = false;
  /// Whether the client connection may carry another request after this one (RFC 9112
  /// §9.3): HTTP/1.1 unless Connection has "close"; HTTP/1.0 only with "keep-alive" and
  /// without "close". Connection options compare case-insensitively. "close" in the
  /// non-standard Proxy-Connection (curl sends it; some parsers read it as Connection)
  /// closes too; its "keep-alive" keeps nothing open: the conservative reading of both.
  bool keep_alive = true;
  /// TRACE and OPTIONS only (RFC 9110 §7.6.2): the Max-Forwards value received, or
  /// nullopt when there is none (and always for other methods, where a recipient may
  /// ignore the field: it is then forwarded as received). Values above 2^64-1 saturate.
  std::optional<std::uint64_t> max_forwards;
  /// TRACE or OPTIONS with "Max-Forwards: 0": the proxy is the final recipient (RFC 9110
  /// §7.6.2 "MUST NOT forward the request" and "MUST respond as the final recipient"):
  /// answer with `local_answer(*this)` and dial nothing.
  bool answer_locally = false;

  friend bool operator==(const request_head&, const request_head&) = default;
};

/// Why a request head was refused: the HTTP status to answer with and a stable reason.
struct head_error {
  int status = 400;         ///< 400, 431 or 505
  std::string_view reason;  ///< a `head_reason` word or a `host_*` word; static storage
  friend bool operator==(const head_error&, const head_error&) = default;
};

/// Lets `boost::system::result<T, head_error>::value()` throw (a `std::runtime_error`
/// naming the reason) when it holds an error. Prefer testing the result and using `*r`.
[[noreturn]] void throw_exception_from_error(const head_error& e, const boost::source_location& loc);

/// Most field lines a head may have; more is a 431 `too_many_fields`.
inline constexpr std::size_t max_fields = 100;

/// Finds the end of the request head: the first empty line.
///
/// Returns the number of bytes up to and including the empty line, or 0 when `buffer`
/// holds none yet. For a head whose lines all end in CRLF this is the offset just past the
/// first CRLFCRLF. An empty line reached through a bare LF ("\n\n", "\n\r\n") also ends
/// the head, so a client using bare LF gets a prompt 400 `bare_lf` from
/// `parse_request_head` instead of a wait for a CRLFCRLF that never comes.
///
/// `searched`: a previous call on the first `searched` bytes of the same (since grown)
/// buffer returned 0, so the search resumes just before that point; the result is the
/// same as with 0, and a client sending one byte per read costs linear, not quadratic,
/// time. The size cap (431) is the caller's: it stops reading past `max_header_bytes`.
/// Units: bytes.
std::size_t find_head_end(std::string_view buffer, std::size_t searched = 0) noexcept;

/// Parses and checks a request head sent to the proxy.
///
/// `head` starts at the request line; it is parsed up to `find_head_end(head)`, so bytes
/// after the head (body, or a ClientHello sent together with CONNECT) may be included and
/// are ignored; `request_head::head_bytes` says where they begin. Leading empty lines
/// before the request line are not skipped (400 `bad_request_line`).
///
/// Shape (RFC 9112 §2.1, §3, §5):
///   request-line  = method SP request-target SP HTTP-version CRLF   (exactly one SP each)
///   method        = token (case-sensitive)
///   HTTP-version  = "HTTP/1.0" / "HTTP/1.1"                          (case-sensitive)
///   request-target, CONNECT:  authority-form  host ":" port           (port 1..65535)
///                   others:   absolute-form   "http://" host [":" port] [path] ["?" query]
///                             (scheme case-insensitive; port 1..65535, default 80)
///                   host = reg-name or IPv4 (canonical dotted quad) or "[" IPv6 "]"
///   field-line    = field-name ":" OWS field-value OWS CRLF          (at most `max_fields`)
///   field-name    = token;  field-value bytes: HTAB, SP, VCHAR, obs-text (0x80-0xFF)
///   the head ends with an empty line (CRLF)
///
/// The target's host goes through `common::normalize_host(host, host_syntax::uri)`. The
/// request-target may hold only visible ASCII (0x21-0x7E); a byte >= 0x80 in its host
/// is reported by the normaliser (host_non_ascii).
///
/// Semantic checks: Host (RFC 9112 §3.2, RFC 9110 §7.2): HTTP/1.1 absolute form needs
/// exactly one; at most one always; when present it must name the target after
/// normalisation: same host, and same port, where a Host without port means 80 for
/// absolute form, and (CONNECT only, as some clients send it so) "any port". CONNECT
/// without Host is accepted in 1.1 too (Host is not forwarded for a tunnel). Framing
/// (RFC 9112 §6): Transfer-Encoding only as one field whose value is exactly "chunked"
/// (any case), not in HTTP/1.0, not with Content-Length; Content-Length only as one field
/// of digits. CONNECT carries no content (RFC 9110 §9.3.6), nor does TRACE (§9.3.8).
/// Max-Forwards (RFC 9110 §7.6.2) is read for TRACE and OPTIONS only: one field of
/// digits; 0 sets `answer_locally`. An absolute-form OPTIONS target with an empty path and
/// no query ("OPTIONS http://host:8080 HTTP/1.1") is forwarded as "*" (RFC 9112 §3.2.4).
///
/// Errors (`head_error`, first failing check in the order listed):
///   400 incomplete_head          no empty line ends the head (a caller bug: wait for
///                                `find_head_end`)
///   400 bare_lf                  an LF not preceded by CR anywhere in the head (RFC 9112 §2.2)
///   400 bare_cr                  a CR not followed by LF anywhere in the head (RFC 9112 §2.2)
///   400 bad_request_line         request line not three non-empty parts split by single SP
///                                (double or trailing SP, HTAB separators, empty line)
///   400 version_missing          "method SP target" with no version: HTTP/0.9
///   400 bad_method               method not a token
///   400 bad_version              version not "HTTP/" DIGIT "." DIGIT, or 0.x or 1.2-1.9
///   505 version_not_supported    a well-formed HTTP/2.0 .. HTTP/9.x
///   400 bad_target               target with a control byte or DEL, or (not CONNECT)
///                                not starting with "/" or "*" and without "://", or
///                                junk after "[...]" in the authority; also, checked
///                                after the host and port, a byte >= 0x80 in the path
///                                or query
///   400 fragment_in_target       '#' in the target
///   400 origin_form              not CONNECT, target starts with "/" (a request meant for
///                                an origin server, not a proxy)
///   400 asterisk_form            not CONNECT, target "*" ("OPTIONS *")
///   400 https_absolute_form      scheme "https": clients must use CONNECT for TLS
///   400 unsupported_scheme       any other scheme before "://" ("ftp", "ws", ...)
///   400 userinfo_in_target       '@' in the authority ("http://good@evil/", "CONNECT a@b:443")
///   400 bad_connect_target       CONNECT target with '/' or '?' (scheme or path), or junk
///                                after "[...]"
///   400 host_*                   the target host rejected by `normalize_host`: the word
///                                of `common::host_error_reason` (host_empty,
///                                host_non_ascii, host_non_canonical_ipv4,
///                                host_unbracketed_ipv6, host_invalid_ipv6, ...)
///   400 port_missing             CONNECT target without ":port"
///   400 bad_port                 port empty, not 1-5 digits ('+', '-', ...), 0 or > 65535
///   400 obs_fold                 a field line starting with SP or HTAB (line folding,
///                                RFC 9112 §5.2, or whitespace after the request line §2.2)
///   -- field lines are checked one by one, so the first bad line decides among these:
///   431 too_many_fields          more than `max_fields` field lines
///   400 bad_field_line           a field line without ':'
///   400 whitespace_before_colon  SP/HTAB between field-name and ':' (RFC 9112 §5.1 MUST)
///   400 bad_field_name           empty field-name or one with a non-token byte
///   400 bad_field_value          a control byte (NUL, 0x01-0x08, 0x0A-0x1F, DEL) in a value
///   400 host_duplicate           a second Host field
///   400 duplicate_content_length a second Content-Length field, or a comma list in one
///                                ("5, 5"), equal values included (RFC 9112 §6.3 item 5)
///   400 bad_content_length       a Content-Length value that is not 1*DIGIT or exceeds
///                                2^64-1 ("+5", "-1", "0x5", "", "5 5")
///   400 bad_transfer_encoding    a second Transfer-Encoding field, or a value other than
///                                "chunked" ("identity", "chunked, identity", "gzip,
///                                chunked", "chunked;x=1")
///   400 transfer_encoding_http10 Transfer-Encoding in an HTTP/1.0 request (RFC 9112 §6.1)
///   400 bad_connection           a Connection or Proxy-Connection value that is not a
///                                comma list of tokens ("keep\\alive", "close;x", "a b"):
///                                what it asks for (persistence, hop-by-hop fields) would
///                                be read differently by different parsers
///   -- then, over all fields:
///   400 cl_and_te                both Content-Length and Transfer-Encoding (RFC 9112 §6.1)
///   400 connect_with_body        CONNECT with Transfer-Encoding or Content-Length > 0
///   400 trace_with_body          TRACE with Transfer-Encoding or Content-Length > 0
///                                (RFC 9110 §9.3.8: a client MUST NOT send content; a
///                                body a server ignores is a classic desync vector)
///   400 bad_max_forwards         TRACE or OPTIONS with two Max-Forwards fields, or one
///                                whose value is not 1*DIGIT ("", "-1", "1, 2", "0x1")
///   400 host_missing             HTTP/1.1 absolute-form request without Host
///   400 host_header_invalid      a Host value that is not a valid uri-host [":" port]
///                                (bad host, bad port, userinfo, empty)
///   400 host_mismatch            Host names another host or port than the target
///
/// With `ctx.transparent` (a transparent HTTP listener) the target must be origin-form
/// ("/..."; "*" is asterisk_form) and Host names it: CONNECT is 400 transparent_connect,
/// an absolute-form target 400 transparent_absolute_form, a missing Host (HTTP/1.0 too)
/// 400 host_missing, a Host whose port (80 when absent) is not the listener's port 400
/// host_mismatch; everything else as above.
///
/// Units: bytes. Lifetime: see `request_head`. Concurrency: none; reentrant.
/// Source: RFC 9112 §2.2, §3, §3.2, §5, §6.1, §6.3, §9.3; RFC 9110 §5.5, §5.6.2, §7.2,
/// §7.6.1, §9.3.6; RFC 3986 §3.2.
boost::system::result<request_head, head_error> parse_request_head(std::string_view head,
                                                                  const head_context& ctx = {});

/// Builds the head the proxy sends upstream for an absolute-form request, ending with the
/// empty line; the body (if any) is relayed after it unchanged.
///
/// Shape:
///   METHOD SP path_and_query SP "HTTP/1.1" CRLF   (the proxy's own version, RFC 9110 §6.2)
///   "Host: " host [":" port] CRLF                  (from the target; port only if not 80;
///                                                  IPv6 in brackets; first, RFC 9110 §7.2)
///   each received field line, in order, as "name: value" CRLF, except
///     - the framing fields, written in canonical form where they were received:
///       "Transfer-Encoding: chunked" (coding names are case-insensitive, RFC 9112 §7, but
///       an upstream comparing case-sensitively would frame "Chunked" differently) and
///       "Content-Length: N" with N the parsed value in decimal without leading zeros
///       ("007" is 7 to us and 7 or an error to others; "010" read by a base-0 strtol is 8)
///     - Max-Forwards of TRACE/OPTIONS, written decremented (RFC 9110 §7.6.2); 0 stays 0
///       (a caller that forwards an `answer_locally` request anyway sends what it got)
///     - Host (rebuilt above; RFC 9112 §3.2.2)
///     - hop-by-hop fields (RFC 9110 §7.6.1): Connection, Keep-Alive, TE, Trailer, Upgrade
///     - every Proxy-* field (Proxy-Authorization, Proxy-Connection, ...) and "Proxy"
///       itself (httpoxy, CVE-2016-5385: CGI servers turn it into HTTP_PROXY): meant for us
///     - fields that let an origin or its front end route by another host than the Host
///       the proxy checked: Forwarded (RFC 7239 "host="), X-Forwarded-Host,
///       X-Forwarded-Server, X-Host, X-HTTP-Host-Override
///     - every '_' spelling of a field the proxy interprets or removes
///       (`http::is_underscore_alias`: Content_Length, Transfer_Encoding, Keep_Alive,
///       Max_Forwards, Proxy_Authorization, X_Forwarded_Host, ...): servers that fold '_'
///       into '-' would read them as the real field, with a value the proxy never judged
///     - the fields named in Connection, except Host, Content-Length and
///       Transfer-Encoding: those are never dropped through Connection, so a client cannot
///       make the upstream see different framing from the bytes the proxy relays
///   "Connection: close" CRLF
///   CRLF
///
/// Framing choices: the proxy opens a fresh upstream connection per request and relays the
/// body bytes as received, so the framing field the parser allowed (at most one of
/// Content-Length and Transfer-Encoding: chunked) describes those bytes, and
/// "Connection: close" tells the upstream the connection ends with this response, so the
/// proxy can read the response until its framing ends or the connection closes.
///
/// Precondition: `r.form` is absolute or origin (asserted). A request with
/// `answer_locally` should get `local_answer` instead of being forwarded.
std::string upstream_head(const request_head& r);

/// The proxy's own response to a request it is the final recipient of.
struct local_response {
  std::string bytes;  ///< the whole response: status line, fields, empty line, content
  int status = 200;
  /// Whether the client connection may carry another request: the request's keep_alive,
  /// and false when the request had content (OPTIONS may; the proxy does not read it, so
  /// the caller closes the connection after writing `bytes`). "Connection:" in `bytes`
  /// says the same.
  bool keep_alive = true;
};

/// Stable reason word of the decision line for a request answered by `local_answer`.
inline constexpr std::string_view answered_locally = "answered_locally";

/// Builds the answer to a request with `r.answer_locally` (TRACE or OPTIONS with
/// Max-Forwards: 0; RFC 9110 §7.6.2):
///   OPTIONS (§9.3.7): "HTTP/1.1 200 OK", "Content-Length: 0", no content. No Allow field:
///     Allow lists what the target resource supports (§10.2.1), which only its origin
///     knows; the answer says only that the request reached this hop.
///   TRACE (§9.3.8): "HTTP/1.1 200 OK", "Content-Type: message/http", Content-Length, and
///     as content the request head as received (request line and field lines, "name:
///     value" with OWS trimmed, then CRLF), minus the fields likely to carry credentials
///     ("SHOULD exclude any request fields that are likely to contain sensitive data"):
///     Authorization, Proxy-Authorization, Cookie, and every field whose name contains
///     "auth", "cookie", "token", "secret", "passw", "key" or "session" (any case).
///   Both end their fields with "Cache-Control: no-store" (TRACE responses are not
///   cacheable, §9.3.8) and "Connection: keep-alive" or "Connection: close".
/// Precondition: `r.answer_locally` (asserted).
local_response local_answer(const request_head& r);

}  // namespace egress::proxy
