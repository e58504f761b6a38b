#pragma once
/// Message framing for the plain-HTTP path, free of sockets: an incremental scanner that
/// finds the end of a chunked body while its bytes are relayed unchanged, and the
/// upstream response head (status line, fields, body length) the proxy rewrites for the
/// client. Source: RFC 9112 §6 (message body length), §7.1 (chunked), §4 (status line).

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace egress::proxy {

/// What `chunked_scanner::step` found in one piece of a chunked body.
struct chunked_step {
  /// Bytes of the piece that belong to the body: all of them unless the body ends inside
  /// the piece (then the count through its last byte; the rest is the next message), or
  /// up to the byte that put the scanner in the error state.
  std::size_t consumed = 0;
  /// Of those, how many the relay forwards as they are: always a prefix of the piece.
  /// The trailer section (the bytes after the last-chunk line) is never among them: the
  /// scanner keeps it, and once the state is `done` the relay writes
  /// `trailer_section()` after this prefix instead.
  std::size_t verbatim = 0;
};

/// Scans a chunked body (RFC 9112 §7.1) to find where the message ends, and checks its
/// trailer section (§7.1.2) so that the relay never forwards it raw.
///
/// Shape: *( chunk-size [ chunk-ext ] CRLF chunk-data CRLF ) "0" [ chunk-ext ] CRLF
///        *( trailer-field CRLF ) CRLF. chunk-size is 1-16 hex digits (< 2^64); chunk-ext
///        is not interpreted (it is relayed as received) but must have the RFC's shape,
///        at most 4096 bytes: *( BWS ";" BWS token [ BWS "=" BWS ( token /
///        quoted-string ) ] ), so no trailing whitespace, no empty name, no unclosed quote
///        (RFC 9112 §7.1.1): recipients that read a malformed extension differently (where
///        it ends, what a quote hides) would frame the body differently.
///
/// Trailer fields (RFC 9110 §6.5): a trailer line must be a field line as in a header
/// section (name token, ':' right after it, value of field-value bytes, no obs-fold);
/// anything else (a request line, "x", " folded") is an error. Then, by name (case-
/// insensitive, '_' spellings included, see `http::is_underscore_alias`):
///   refused (error): Host, Content-Length, Transfer-Encoding. They frame or route a
///     message; a sender MUST NOT generate them as trailers (RFC 9110 §6.5.1) and a
///     recipient MUST NOT merge them into the header section (§6.5.2), so their only
///     use is against a recipient that does: a smuggling attempt, refused like the
///     header-section forms the request parser refuses (never guessed at).
///   dropped: Connection, Keep-Alive, TE, Trailer, Upgrade, every Proxy-* field and
///     "Proxy": hop-by-hop or meant for the proxy, removed from a trailer section as the
///     proxy removes them from a header section (a recipient "MAY selectively retain or
///     discard the received trailer fields", RFC 9112 §7.1.2); a sloppy sender's
///     "Connection: close" trailer costs nothing.
///   kept: every other field, written back as "name: value" CRLF (OWS trimmed).
/// At most 16384 bytes of trailer section (each line at most 4096) and 100 fields.
///
/// Errors: malformed framing (bad hex, bare LF or CR, missing CRLF after data, over-long
/// size/extension/trailer line or section, a chunk-ext not of the shape above, a bad or
/// refused trailer line) puts the scanner in the `error` state; it stays there.
/// Source: RFC 9112 §7.1, §7.1.1, §7.1.2; RFC 9110 §6.5, §7.6.1.
class chunked_scanner {
public:
  enum class state { body, done, error };

  /// Consumes the next piece of the body. Use this form when relaying: write the first
  /// `verbatim` bytes of `bytes`, then, when `status()` is `done`, `trailer_section()`.
  /// Bytes past `consumed` belong to the next message.
  chunked_step step(std::string_view bytes);

  /// The older form, for a relay that forwards every consumed byte as received: returns
  /// `step(bytes).consumed`. Because such a relay would send the trailer section raw,
  /// every trailer field `step` would drop is an error here too; the trailer bytes of a
  /// refused line that arrived in an earlier piece have then already been relayed (the
  /// message is cut off there). Do not mix with `step` on one scanner.
  std::size_t feed(std::string_view bytes);

  state status() const noexcept { return status_; }

  /// When `status()` is `done`: the trailer section to relay after the verbatim bytes,
  /// the kept fields then the final CRLF ("\r\n" when there were none or all were
  /// dropped). Empty before. Lifetime: until the scanner is destroyed.
  std::string_view trailer_section() const noexcept { return status_ == state::done ? std::string_view(trailer_out_) : std::string_view(); }

  /// How many trailer fields were dropped (diagnostics and tests).
  std::size_t dropped_trailer_fields() const noexcept { return dropped_; }

  /// Limits, bytes / fields.
  static constexpr std::size_t max_line_bytes = 4096;
  static constexpr std::size_t max_trailer_bytes = 16384;
  static constexpr std::size_t max_trailer_fields = 100;

private:
  enum class phase { size, ext, size_lf, data, data_cr, data_lf, trailer_start, trailer, trailer_lf, final_lf };
  void end_trailer_line();
  phase phase_ = phase::size;
  state status_ = state::body;
  bool drop_is_error_ = false;  ///< feed(): a trailer field to drop is an error
  std::uint64_t remaining_ = 0;
  int size_digits_ = 0;
  std::size_t trailer_bytes_ = 0;
  std::size_t trailer_fields_ = 0;
  std::size_t dropped_ = 0;
  std::string line_;         ///< the chunk-ext or trailer line being read
  std::string trailer_out_;  ///< the kept trailer fields, rebuilt
};

/// How a response body is delimited.
enum class body_kind { none, length, chunked, until_close };

/// A parsed upstream response head.
struct response_head {
  int status = 0;
  int version_minor = 1;
  std::string reason_phrase;
  std::vector<std::pair<std::string, std::string>> fields;  ///< as received, in order
  body_kind body = body_kind::until_close;
  std::uint64_t content_length = 0;  ///< the body's length when `body == length`, else 0
  /// The Content-Length value received (one value; equal duplicates collapse into it),
  /// even when the body is `none` (HEAD, 304) or chunked is refused; nullopt without one.
  std::optional<std::uint64_t> declared_length;
  std::size_t head_bytes = 0;  ///< through the final CRLFCRLF
};

/// Parses an upstream response head (`head` holds exactly the head bytes). Framing per
/// RFC 9112 §6.3: HEAD requests and 1xx/204/304 responses have no body; then chunked,
/// then Content-Length, else the body runs until the connection closes.
/// Errors (nullopt): bad status line, obs-fold, a field line without ':' or with
/// whitespace before it, a control byte (NUL, CR, LF, ...) in a value, a Connection or
/// Proxy-Connection value that is not a comma list of tokens, CL with TE,
/// conflicting or invalid Content-Length, more than one Transfer-Encoding field or one
/// other than "chunked" (any case).
std::optional<response_head> parse_response_head(std::string_view head, bool request_was_head);

/// The head sent to the client: the status line as HTTP/1.1, every field except
/// hop-by-hop ones (Connection, Keep-Alive, Proxy-Connection, Proxy-Authenticate, TE,
/// Trailer, Upgrade and fields named in Connection) and the '_' spellings of the framing
/// and hop-by-hop fields (Content_Length, Transfer_Encoding, Keep_Alive, Proxy_*: a client
/// that folds '_' into '-' would frame by them); the framing fields in canonical form
/// where the first one was received: "Transfer-Encoding: chunked" and one
/// "Content-Length: N" (N the parsed value, decimal, no leading zeros; equal duplicates
/// collapse into it); then "Connection: keep-alive" or "Connection: close".
std::string client_response_head(const response_head& r, bool keep_alive);

}  // namespace egress::proxy
