#pragma once
/// Incremental TLS ClientHello parser: finds the SNI host name a client is about to ask
/// an upstream for. Two layers: `client_hello_message` reassembles and parses one
/// ClientHello handshake message from handshake-record payload (shared with
/// handshake_watch, which checks every later hello of the handshake), and
/// `client_hello_parser` adds the record layer for the first hello of a connection.
/// Pure: takes bytes, returns values; no sockets, Asio or TLS library, no policy (the
/// SNI is judged in acl.cpp's check_sni).

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace egress::proxy {

/// Stable reason words of an invalid ClientHello, shared by logs, metrics and tests.
/// Static storage: a `hello_result::reason` views one of these.
namespace hello_reason {
/// The first bytes are not a TLS handshake record (HTTP text, SSLv2 hello, other record).
inline constexpr std::string_view not_tls = "not_tls";
/// The ClientHello, record headers included, needs more than `max_bytes`.
inline constexpr std::string_view too_large = "client_hello_too_large";
/// A TLS framing or ClientHello structure rule is broken (lengths, types, duplicates).
inline constexpr std::string_view malformed = "client_hello_malformed";
/// The server_name extension is well framed but its host_name is not acceptable.
inline constexpr std::string_view sni_invalid = "sni_invalid";
/// The server_name list is well framed but does not hold exactly one entry, of type
/// host_name (RFC 6066 §3 allows one name per type and defines only host_name; parsers
/// that take the first entry and parsers that take the first host_name disagree).
inline constexpr std::string_view sni_list_invalid = "sni_list_invalid";
}  // namespace hello_reason

/// Where the parser stands after a `feed`.
enum class hello_state {
  need_more,  ///< every byte so far is a valid prefix of a ClientHello; feed more
  complete,   ///< the first ClientHello is whole and valid; see `server_name`
  invalid,    ///< rejected; see `reason`. Final: never becomes complete
};

/// The outcome of feeding bytes to a `client_hello_parser`.
struct hello_result {
  hello_state state = hello_state::need_more;
  /// invalid: one of the `hello_reason` words (static storage); empty otherwise.
  std::string_view reason;
  /// complete: the SNI host_name exactly as sent (case and one trailing dot kept; not
  /// normalised: compare through `common::normalize_host`). nullopt when the hello has no
  /// server_name extension (a list without its one host_name is invalid, never nullopt).
  /// Always nullopt unless complete.
  std::optional<std::string> server_name;
  /// complete: an encrypted_client_hello (0xfe0d) extension was present, so
  /// `server_name` is the ECH public name, not the name the client will really use.
  bool encrypted_client_hello = false;

  friend bool operator==(const hello_result&, const hello_result&) = default;
};

/// One ClientHello handshake message (RFC 8446 §4: msg_type 1, uint24 length, body),
/// reassembled from the handshake stream that handshake records carry (their fragments
/// back to back, record headers stripped) and parsed when its last byte arrives. The
/// handshake-header and body rules and the reasons are those of `client_hello_parser`
/// below (which is this class plus the record layer); the caller owns the record layer.
///
/// Units: bytes. Memory: the message (<= the `room` given when its header completed),
/// allocated once its length is known and released when the result is final.
/// Concurrency: none. Source: RFC 8446 §4, §4.1.2; RFC 6066 §3.
class client_hello_message {
public:
  /// Consumes the next bytes of the handshake stream, never past the message's last byte,
  /// and returns where the message stands. `room`: the most bytes the whole message
  /// (4 + length) may have; read when the 4th header byte arrives, a larger declared
  /// length is `client_hello_too_large` at once. `used` (out): bytes of `bytes` consumed
  /// (all of them while need_more, up to the deciding byte otherwise). Once the result is
  /// final, further feeds consume nothing and return it again. Any split works.
  hello_result feed(std::span<const std::uint8_t> bytes, std::size_t room, std::size_t& used);

  /// 4 + the declared body length once the handshake header is in; 0 before.
  std::size_t length() const noexcept { return length_; }

  /// Bytes of the message consumed so far (header included).
  std::size_t size() const noexcept { return consumed_; }

  /// The current result, as the last `feed` returned it.
  const hello_result& result() const noexcept { return result_; }

private:
  const hello_result& fail(std::string_view reason);

  /// The message so far (header, then body); empty again once the result is final.
  std::vector<std::uint8_t> message_;
  std::size_t length_ = 0;
  std::size_t consumed_ = 0;
  hello_result result_;
};

/// Reassembles and checks the first TLS ClientHello of a connection, fed in pieces as
/// they are read, and reports its SNI host_name.
///
/// Shape (widths in bytes, integers big-endian, "L + a..b" = an L-byte length prefix
/// followed by a..b bytes). Each length is checked against what remains around it.
///
///   TLSPlaintext record (RFC 8446 §5.1), repeated until the handshake message is whole:
///     content_type                 1        22 (handshake)
///     legacy_record_version        2        0x0301..0x0304
///     length                       2        1..16384 (2^14)
///     fragment                     length   the next bytes of the handshake stream
///   Handshake header (RFC 8446 §4), reassembled across records and reads:
///     msg_type                     1        1 (client_hello)
///     length                       3        body bytes, >= 41; 4 + length <= max_bytes
///   ClientHello body (RFC 8446 §4.1.2; RFC 5246 §7.4.1.2 lets a TLS 1.2 hello end
///   after the compression methods, which counts as "no extensions"):
///     legacy_version               2        major 3
///     random                       32
///     legacy_session_id            1 + 0..32
///     cipher_suites                2 + 2..65534, even
///     legacy_compression_methods   1 + 1..255
///     extensions                   2 + 0..65535, ending exactly at the body's end
///   Extension (RFC 8446 §4.2), repeated; no extension_type twice:
///     extension_type               2
///     extension_data               2 + 0..(bytes left in the block)
///   server_name extension_data (extension_type 0, RFC 6066 §3):
///     server_name_list             2 + 1..65535, exactly filling extension_data; framed
///                                  as entries of (name_type 1, name 2 + n) (RFC 6066 §3:
///                                  future types begin with a 16-bit length), and then
///                                  required to hold exactly one entry, of name_type 0
///       name_type                  1        0 = host_name
///       name                       2 + n    host_name: 1..253 bytes of A-Z a-z 0-9 '-'
///                                           '.', plus one optional trailing '.'.
///   encrypted_client_hello (extension_type 0xfe0d, draft-ietf-tls-esni): only its
///   presence is reported.
///
/// Parsing stops at the last byte of the first ClientHello: later bytes of the same
/// record, and later records (ChangeCipherSpec, early data), are neither examined nor
/// counted. The body is checked once, when its last byte arrives; framing (record
/// headers, the handshake header) is checked byte by byte as it arrives, so HTTP text is
/// rejected on its first byte and an impossible length as soon as it is read.
///
/// Units: bytes. `max_bytes` caps the bytes consumed up to the end of the ClientHello,
/// record headers included; memory held is at most the handshake message (<= max_bytes),
/// allocated once when its length is known and released when the result is final.
///
/// Errors (`hello_result::reason`), with their triggers:
///   not_tls                  first record: content_type != 22, or version major != 3,
///                            or minor not 1..4 (so "GET / ...", SSLv2 hellos with the
///                            high bit set, alerts, SSL 3.0 records)
///   client_hello_too_large   record headers + 4 + handshake length > max_bytes, or
///                            a byte would be consumed beyond max_bytes
///   client_hello_malformed   a later record that is not a TLS 1.0-1.3 handshake record
///                            (RFC 8446 §5.1: no interleaving); record length 0 or >
///                            16384; msg_type != 1; handshake length < 41; any ClientHello
///                            or extension length that overruns, underfills or leaves
///                            bytes over; legacy_version major != 3; session_id > 32;
///                            cipher_suites odd or empty; no compression method; a
///                            duplicate extension_type; an empty server_name_list
///   sni_list_invalid         a well-framed server_name_list with more than one entry or
///                            whose one entry is not a host_name (RFC 6066 §3)
///   sni_invalid              the one host_name is empty, over-long, or has a byte
///                            outside LDH and '.' (NUL, '_', space, bytes >= 0x80, ...)
///
/// The result depends only on the byte stream, never on how it was split into feeds;
/// `bytes_fed()` too.
///
/// Concurrency: none; one parser per connection, used from one thread at a time.
/// Source: RFC 8446 §4.1.2 (ClientHello), §4.2 (extensions), §5.1 (record layer);
/// RFC 6066 §3 (server_name); draft-ietf-tls-esni (encrypted_client_hello, 0xfe0d).
class client_hello_parser {
public:
  /// Default `max_bytes`: one full record of 2^14 bytes; fits post-quantum key shares.
  static constexpr std::size_t default_max_bytes = 16 * 1024;

  /// A parser that consumes at most `max_bytes` (record headers included).
  explicit client_hello_parser(std::size_t max_bytes = default_max_bytes);

  /// Consumes the next bytes of the client's stream and returns where the parser stands.
  /// Any split works, down to one byte per call; an empty span changes nothing. Once the
  /// result is complete or invalid, further feeds consume nothing and return it again.
  /// Lifetime: `bytes` is copied as needed; the result owns its data.
  hello_result feed(std::span<const std::uint8_t> bytes);

  /// Bytes consumed: all fed bytes while need_more; once final, the stream offset just
  /// past the byte that completed the ClientHello or showed it invalid. On complete this
  /// is the ClientHello's size on the wire. Never more than `max_bytes()`.
  std::size_t bytes_fed() const noexcept { return consumed_; }

  /// The current result, as the last `feed` returned it.
  const hello_result& result() const noexcept { return result_; }

  /// The cap given at construction.
  std::size_t max_bytes() const noexcept { return max_bytes_; }

private:
  static constexpr std::size_t record_header_bytes = 5;

  const hello_result& fail(std::string_view reason);
  std::string_view take_record_header_byte(std::uint8_t byte);

  std::size_t max_bytes_;
  std::size_t consumed_ = 0;
  /// Record headers fully or partly consumed, in bytes (5 per record begun).
  std::size_t record_header_total_ = 0;
  std::array<std::uint8_t, record_header_bytes> header_{};
  std::size_t header_len_ = 0;
  /// Fragment bytes of the current record not yet consumed; 0 = a header comes next.
  std::size_t record_left_ = 0;
  /// The handshake message: header, then the ClientHello body.
  client_hello_message message_;
  hello_result result_;
};

}  // namespace egress::proxy
