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
inline constexpr std::string_view transfer_encoding_http10 = "transfer_encoding_http10";
inline constexpr std::string_view cl_and_te = "cl_and_te";
inline constexpr std::string_view connect_with_body = "connect_with_body";
inline constexpr std::string_view transparent_connect = "transparent_connect";
inline constexpr std::string_view transparent_absolute_form = "transparent_absolute_form";
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
  /// without "close". Connection options compare case-insensitively.
  bool keep_alive = true;

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
/// of digits. CONNECT carries no content (RFC 9110 §9.3.6).
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
///   -- then, over all fields:
///   400 cl_and_te                both Content-Length and Transfer-Encoding (RFC 9112 §6.1)
///   400 connect_with_body        CONNECT with Transfer-Encoding or Content-Length > 0
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
///     - Host (rebuilt above; RFC 9112 §3.2.2)
///     - hop-by-hop fields (RFC 9110 §7.6.1): Connection, Keep-Alive, TE, Trailer, Upgrade
///     - every Proxy-* field (Proxy-Authorization, Proxy-Connection, ...): meant for us
///     - the fields named in Connection, except Host, Content-Length and
///       Transfer-Encoding: those are never dropped through Connection, so a client cannot
///       make the upstream see different framing from the bytes the proxy relays
///   "Connection: close" CRLF
///   CRLF
///
/// Framing choices: the proxy opens a fresh upstream connection per request and relays the
/// body bytes as received, so Content-Length and Transfer-Encoding: chunked are kept as
/// received (they describe those bytes; the parser allowed at most one of them), and
/// "Connection: close" tells the upstream the connection ends with this response, so the
/// proxy can read the response until its framing ends or the connection closes.
///
/// Precondition: `r.form` is absolute or origin (asserted).
std::string upstream_head(const request_head& r);

}  // namespace egress::proxy
