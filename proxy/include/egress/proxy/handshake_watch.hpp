#pragma once
/// The handshake watch: after a CONNECT tunnel's first ClientHello passed check_sni(), it
/// keeps reading both directions of the TLS handshake until the handshake can no longer
/// carry a plaintext ClientHello the server would accept, so every ClientHello (the second
/// one after a HelloRetryRequest, RFC 8446 §4.1.4, and any other) is checked before a byte
/// of it goes upstream. Pure: bytes in, counts and reasons out; no sockets, no Asio, no TLS
/// library. It never writes to either peer: the relay moves the bytes.
///
/// When the check is over (`done()`), and why that is enough:
///   A server accepts a ClientHello only before it has sent its (real, non-HRR)
///   ServerHello: afterwards a TLS 1.3 server reads records under the client's handshake
///   (or early-data) keys and rejects unprotected handshake records (RFC 8446 §2, §5), and
///   a TLS 1.2 server expects ClientKeyExchange/ChangeCipherSpec/Finished (RFC 5246 §7.3),
///   so a ClientHello there is an unexpected_message. The relay feeds upstream bytes to the
///   watch before it forwards them to the client, so every client byte it forwards after
///   the watch saw the ServerHello reaches the server after the server sent it. Hence:
///   done() = a real ServerHello was seen from upstream AND at least one ClientHello was
///   checked AND no client byte fed so far is held (every client byte read before it was
///   inspected and released; a ClientHello in progress at that moment is finished and
///   checked first).
///   Not ends of the check: a HelloRetryRequest (a ServerHello whose random is
///   SHA-256("HelloRetryRequest"), RFC 8446 §4.1.3): a second ClientHello follows; a
///   ChangeCipherSpec record from either side (TLS 1.3 middlebox compatibility, RFC 8446
///   §D.4, sent between the HRR and the second hello); 0-RTT application_data records
///   (RFC 8446 §4.2.10) before the ServerHello, passed without parsing but counted.
///   Out of reach: TLS 1.2 renegotiation (RFC 5746) sends its ClientHello encrypted under
///   the session's keys, so no proxy without the keys can read it; TLS 1.3 has no
///   renegotiation. A server that renegotiates with a new name is not covered here.
///
/// Bounds: the client bytes held (a ClientHello in progress with its record headers, or
/// one record header) are at most max(`max_hello_bytes`, 5); memory is the hello's
/// message (<= max_hello_bytes) plus ~200 bytes;
/// each direction is inspected for at most `max_watch_bytes` before the check must have
/// ended, or the watch refuses (`handshake_too_long`), failing closed.
///
/// Concurrency: none; one watch per tunnel, used from one thread at a time.
/// Source: RFC 8446 §4.1.2-§4.1.4, §5.1, §D.4; RFC 5246 §7.4; RFC 6066 §3.

#include "egress/common/host_name.hpp"
#include "egress/proxy/client_hello.hpp"

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace egress::proxy {

/// Stable reason words of the watch's own refusals (static storage), beside the parser's
/// (`hello_reason`) and check_sni()'s ("sni_mismatch", "sni_missing", "ech_present", ...),
/// which the watch reports unchanged for a later ClientHello.
namespace watch_reason {
/// The upstream's first record is not a TLS handshake or alert record (content type,
/// or record version major != 3 / minor > 4): whatever it speaks, it is not TLS.
inline constexpr std::string_view upstream_not_tls = "upstream_not_tls";
/// The upstream's records before its real ServerHello break TLS: an unknown or
/// application_data record, a record of length 0 or > 2^14, a handshake message other
/// than ServerHello (or an empty HelloRequest) first, a ServerHello body under 38 bytes,
/// a second HelloRetryRequest (RFC 8446 §4.1.4), a record interleaved inside a message.
inline constexpr std::string_view upstream_malformed = "upstream_handshake_malformed";
/// One direction carried more than `max_watch_bytes` before the check ended.
inline constexpr std::string_view too_long = "handshake_too_long";
}  // namespace watch_reason

/// What `handshake_watch::feed_client` allows.
struct client_step {
  /// Client bytes that may now go upstream, counted from the first byte not yet
  /// released: the relay forwards that many bytes from the front of what it holds.
  std::size_t forward = 0;
  /// Non-empty: refused (a `hello_reason`, check_sni() or `watch_reason` word, static
  /// storage). Final: close the tunnel, forward nothing more in either direction.
  std::string_view refusal;
};

/// Watches a CONNECT tunnel's TLS handshake in both directions (see the file comment).
///
/// Client direction, from the client's first byte (the first ClientHello included: the
/// watch re-checks it, so it also sees where that hello ended inside its record):
///   TLSPlaintext records (RFC 8446 §5.1): content_type 1, legacy_record_version 2
///   (0x0301..0x0304), length 2 (1..2^14; application_data 1..2^14+256), fragment.
///     handshake (22): the handshake stream; while watching, every message in it must be
///       a ClientHello (nothing else is legal before the ServerHello), reassembled across
///       records by `client_hello_message` under `max_hello_bytes` (record headers of
///       the records it spans included, as for the first hello), and checked:
///       check_sni(hello, connect_host, allow_missing_sni, allow_ech), then: its
///       normalised server_name equals the first hello's (both absent, or equal), and it
///       adds no encrypted_client_hello the first hello did not have.
///     change_cipher_spec (20), alert (21), application_data (23): passed unparsed
///       (RFC 8446 §D.4 CCS, alerts, 0-RTT early data), counted.
///   No record may come between two records of one handshake message (RFC 8446 §5.1).
///   Held: bytes of a ClientHello not yet checked (from the header of the record it
///   starts at, or from its first byte when it starts mid-record) and a record header not
///   yet complete. Everything else is released as soon as it is fed.
/// Upstream direction: observed, never held. The first record must be a handshake or an
///   alert record; then handshake, alert and CCS records; versions 0x0300..0x0304 (so an
///   SSL 3.0-versioned alert is still TLS); lengths 1..2^14. Handshake messages are
///   reassembled as far as the ServerHello's legacy_version and random (RFC 8446 §4.1.3),
///   an empty HelloRequest (RFC 5246 §7.4.1.1) is skipped, alerts and CCS are skipped.
///   Nothing is parsed after the real ServerHello.
///
/// Reasons (`client_step::refusal`, `feed_server`, `refusal()`):
///   client: not_tls (first record not a handshake), client_hello_malformed (framing, a
///     non-ClientHello handshake message, an unknown record type, interleaving, and the
///     parser's structure reasons), client_hello_too_large, sni_invalid,
///     sni_list_invalid; check_sni()'s ech_present, sni_missing, sni_ip_literal,
///     sni_mismatch; sni_mismatch / sni_missing when a later hello's name differs from
///     the first's; ech_present when a later hello adds ECH.
///   upstream: upstream_not_tls, upstream_handshake_malformed.
///   either: handshake_too_long.
///
/// The verdict, done() and the counts depend only on the two byte streams and the order
/// in which upstream and client bytes were fed, never on how each stream was split
/// (but a refusal releases nothing of the feed it comes in; the tunnel closes anyway).
class handshake_watch {
public:
  /// Default per-direction inspection bound for a hello cap: two maximal ClientHellos
  /// (the first and one after an HRR) plus 32 KiB for CCS records and 0-RTT data (twice
  /// OpenSSL's default max_early_data of 16 KiB). 64 KiB for the default 16 KiB cap.
  static constexpr std::size_t default_max_watch_bytes(std::size_t max_hello_bytes) noexcept {
    return 2 * max_hello_bytes + 32 * 1024;
  }

  /// A watch for a tunnel to `connect_host` (normalised, as given to check_sni()), with
  /// the same policy flags. `max_hello_bytes`: the cap of each ClientHello, record headers
  /// included (the proxy's `max_client_hello_bytes`). `max_watch_bytes`: bytes each
  /// direction may carry before the check has to be over (the first hello counted);
  /// nullopt = default_max_watch_bytes(max_hello_bytes).
  handshake_watch(common::host connect_host, bool allow_missing_sni, bool allow_ech,
                  std::size_t max_hello_bytes = client_hello_parser::default_max_bytes,
                  std::optional<std::size_t> max_watch_bytes = std::nullopt);

  /// Consumes the next client->upstream bytes (the client's stream from its first byte).
  /// Any split works, down to one byte; an empty span changes nothing. Returns the bytes
  /// newly released (the relay forwards them) or a refusal. After done(), everything fed
  /// is released at once, unparsed; after a refusal, nothing is consumed and the refusal
  /// is returned again. Lifetime: `bytes` is copied as needed (at most one ClientHello).
  client_step feed_client(std::span<const std::uint8_t> bytes);

  /// Observes the next upstream->client bytes (the upstream's stream from its first
  /// byte), before the relay forwards them; never holds any. Returns empty, or a refusal
  /// (then forward nothing more). May make done() true. Bytes after the real ServerHello
  /// are not looked at.
  std::string_view feed_server(std::span<const std::uint8_t> bytes);

  /// True once the check is over (see the file comment): a real ServerHello was seen, a
  /// ClientHello was checked, nothing is held. Final. Then the relay forwards freely
  /// (splice) and drops the watch.
  bool done() const noexcept;

  /// The refusal reason, or empty. Final once set.
  std::string_view refusal() const noexcept { return refusal_; }

  /// Client bytes fed but not yet released (the relay holds exactly these); at most
  /// max(max_hello_bytes, 5).
  std::size_t held() const noexcept { return client_.consumed - client_.released; }

  /// Client bytes fed (and consumed) so far.
  std::size_t client_bytes() const noexcept { return client_.consumed; }

  /// Upstream bytes inspected so far (stops growing at the real ServerHello).
  std::size_t server_bytes() const noexcept { return server_.consumed; }

  /// The first ClientHello's server_name exactly as sent (for the decision line's `sni`),
  /// once it passed; nullopt before, or when it had none.
  const std::optional<std::string>& first_server_name() const noexcept { return first_server_name_; }

  /// ClientHellos that passed every check (the first included).
  std::size_t hellos_checked() const noexcept { return hellos_; }

  /// A HelloRetryRequest was seen from upstream.
  bool retry_requested() const noexcept { return server_.hrr_seen; }

  /// A real (non-HRR) ServerHello was seen from upstream.
  bool server_hello_seen() const noexcept { return server_.server_hello_seen; }

  /// Client application_data bytes (0-RTT early data, record headers included) passed
  /// unparsed before the check ended.
  std::size_t early_data_bytes() const noexcept { return client_.early_data; }

private:
  static constexpr std::size_t record_header_bytes = 5;
  static constexpr std::size_t hello_prefix_bytes = 2 + 32;  // legacy_version + random

  struct record_state {
    std::array<std::uint8_t, record_header_bytes> header{};
    std::size_t header_len = 0;
    std::uint8_t type = 0;
    /// Fragment bytes of the current record not yet consumed; 0 = a header comes next.
    std::size_t left = 0;
    bool first = true;  ///< no record header completed yet
  };

  struct client_side {
    record_state rec;
    std::size_t consumed = 0;
    std::size_t released = 0;
    /// Offset of the first held byte; nullopt = only a partial header (if any) is held.
    std::optional<std::size_t> hold_from;
    /// The ClientHello in progress, if any, and the record-header bytes it spans.
    std::optional<client_hello_message> hello;
    std::size_t hello_headers = 0;
    std::size_t early_data = 0;
  };

  struct server_side {
    record_state rec;
    std::size_t consumed = 0;
    std::array<std::uint8_t, 4> msg_header{};
    std::size_t msg_header_len = 0;
    std::size_t msg_left = 0;  ///< body bytes of the current message still to come
    std::array<std::uint8_t, hello_prefix_bytes> prefix{};
    std::size_t prefix_len = 0;
    bool in_server_hello = false;
    bool hrr_seen = false;
    bool server_hello_seen = false;
  };

  std::string_view refuse(std::string_view reason);
  std::string_view take_client_header_byte(std::uint8_t byte);
  std::string_view check_hello(const hello_result& hello);
  std::size_t release_point() const noexcept;
  std::string_view take_server_header_byte(std::uint8_t byte);
  std::string_view take_server_handshake(std::span<const std::uint8_t> bytes, std::size_t& used);

  common::host connect_host_;
  bool allow_missing_sni_;
  bool allow_ech_;
  std::size_t max_hello_bytes_;
  std::size_t max_watch_bytes_;

  client_side client_;
  server_side server_;
  std::size_t hellos_ = 0;
  /// The first hello: had a server_name (then equal to the CONNECT host), ECH, the name.
  bool first_named_ = false;
  bool first_ech_ = false;
  std::optional<std::string> first_server_name_;
  std::string_view refusal_;
};

}  // namespace egress::proxy
