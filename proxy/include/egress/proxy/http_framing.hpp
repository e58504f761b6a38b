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

/// Scans a chunked body (RFC 9112 §7.1) to find where the message ends. Bytes are only
/// inspected, never changed, so the relay forwards them as received.
///
/// Shape: *( chunk-size [ chunk-ext ] CRLF chunk-data CRLF ) "0" [ chunk-ext ] CRLF
///        *( trailer-field CRLF ) CRLF. chunk-size is 1-16 hex digits (< 2^64).
/// Errors: malformed framing (bad hex, bare LF, missing CRLF after data, over-long
/// size/extension/trailer line > 4096 bytes) puts the scanner in the `error` state.
class chunked_scanner {
public:
  enum class state { body, done, error };

  /// Consumes `bytes`; returns how many belong to the body (all of them unless the
  /// body ends inside `bytes`, then the count through its last byte).
  std::size_t feed(std::string_view bytes) noexcept;
  state status() const noexcept { return status_; }

private:
  enum class phase { size, ext, size_lf, data, data_cr, data_lf, trailer_start, trailer, trailer_lf, final_lf };
  phase phase_ = phase::size;
  state status_ = state::body;
  std::uint64_t remaining_ = 0;
  int size_digits_ = 0;
  std::size_t line_bytes_ = 0;
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
  std::uint64_t content_length = 0;
  std::size_t head_bytes = 0;  ///< through the final CRLFCRLF
};

/// Parses an upstream response head (`head` holds exactly the head bytes). Framing per
/// RFC 9112 §6.3: HEAD requests and 1xx/204/304 responses have no body; then chunked,
/// then Content-Length, else the body runs until the connection closes.
/// Errors (nullopt): bad status line, obs-fold, NUL/CR/LF in fields, CL with TE,
/// conflicting or invalid Content-Length, Transfer-Encoding other than "chunked".
std::optional<response_head> parse_response_head(std::string_view head, bool request_was_head);

/// The head sent to the client: the status line as HTTP/1.1, every field except
/// hop-by-hop ones (Connection, Keep-Alive, Proxy-Connection, TE, Trailer, Upgrade and
/// fields named in Connection); Transfer-Encoding/Content-Length kept (the body is relayed
/// as received); then "Connection: keep-alive" or "Connection: close".
std::string client_response_head(const response_head& r, bool keep_alive);

}  // namespace egress::proxy
