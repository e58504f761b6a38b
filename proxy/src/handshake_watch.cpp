// The handshake watch (handshake_watch.hpp): a client record layer that checks every
// ClientHello through client_hello_message and check_sni(), and an upstream record layer
// that reads no further than the ServerHello's random. Decides only; moving, holding and
// closing are the relay's (server.cpp), which this file may not touch.

#include "egress/proxy/handshake_watch.hpp"

#include "egress/proxy/acl.hpp"

#include <algorithm>
#include <cassert>
#include <utility>

namespace egress::proxy {
namespace {

constexpr std::uint8_t content_change_cipher_spec = 20;
constexpr std::uint8_t content_alert = 21;
constexpr std::uint8_t content_handshake = 22;
constexpr std::uint8_t content_application_data = 23;
constexpr std::uint8_t record_version_major = 3;
constexpr std::uint8_t client_version_minor_min = 1;  // TLS 1.0, as for the first hello
constexpr std::uint8_t version_minor_max = 4;
constexpr std::size_t max_plaintext_bytes = std::size_t{1} << 14;            // RFC 8446 §5.1
constexpr std::size_t max_ciphertext_bytes = max_plaintext_bytes + 256;      // RFC 8446 §5.2

constexpr std::uint8_t handshake_hello_request = 0;  // TLS 1.2 and older (RFC 5246 §7.4.1.1)
constexpr std::uint8_t handshake_server_hello = 2;
constexpr std::size_t handshake_header_bytes = 4;
// legacy_version, random, session id length, cipher suite, compression method.
constexpr std::size_t min_server_hello_body = 2 + 32 + 1 + 2 + 1;

/// SHA-256("HelloRetryRequest"): the random of a HelloRetryRequest (RFC 8446 §4.1.3).
constexpr std::array<std::uint8_t, 32> hello_retry_request_random{
    0xcf, 0x21, 0xad, 0x74, 0xe5, 0x9a, 0x61, 0x11, 0xbe, 0x1d, 0x8c, 0x02, 0x1e, 0x65, 0xb8, 0x91,
    0xc2, 0xa2, 0x11, 0x16, 0x7a, 0xbb, 0x8c, 0x5e, 0x07, 0x9e, 0x09, 0xe2, 0xc8, 0xa8, 0x33, 0x9c};

std::size_t record_length(const std::array<std::uint8_t, 5>& header) noexcept {
  return (std::size_t{header[3]} << 8) | header[4];
}

}  // namespace

handshake_watch::handshake_watch(common::host connect_host, bool allow_missing_sni, bool allow_ech,
                                 std::size_t max_hello_bytes, std::optional<std::size_t> max_watch_bytes)
    : connect_host_{std::move(connect_host)},
      allow_missing_sni_{allow_missing_sni},
      allow_ech_{allow_ech},
      max_hello_bytes_{max_hello_bytes},
      max_watch_bytes_{max_watch_bytes.value_or(default_max_watch_bytes(max_hello_bytes))} {}

bool handshake_watch::done() const noexcept {
  // hellos_ > 0: a ServerHello before any client hello (an upstream that spoke first)
  // cannot end a check that has not judged the first hello yet.
  return refusal_.empty() && server_.server_hello_seen && hellos_ > 0 && !client_.hold_from;
}

std::string_view handshake_watch::refuse(std::string_view reason) {
  refusal_ = reason;
  client_.hello.reset();  // release the buffer: the verdict is final
  return refusal_;
}

std::size_t handshake_watch::release_point() const noexcept {
  return client_.hold_from ? *client_.hold_from : client_.consumed;
}

// ---------------------------------------------------------------------------------------
// Client -> upstream

// One header byte at a time, so a wrong byte is caught where it is and the partial header
// is held (it may begin a ClientHello).
std::string_view handshake_watch::take_client_header_byte(std::uint8_t byte) {
  record_state& rec = client_.rec;
  const std::string_view wrong = rec.first ? hello_reason::not_tls : hello_reason::malformed;
  rec.header[rec.header_len++] = byte;
  switch (rec.header_len) {
    case 1:
      if (rec.first) return byte == content_handshake ? std::string_view{} : wrong;
      // RFC 8446 §5.1: no other record between the records of one handshake message.
      if (client_.hello) return byte == content_handshake ? std::string_view{} : hello_reason::malformed;
      return byte >= content_change_cipher_spec && byte <= content_application_data ? std::string_view{}
                                                                                    : hello_reason::malformed;
    case 2:
      return byte == record_version_major ? std::string_view{} : wrong;
    case 3:
      return byte >= client_version_minor_min && byte <= version_minor_max ? std::string_view{} : wrong;
    case 4:
      return {};
    default: {
      const std::size_t length = record_length(rec.header);
      rec.type = rec.header[0];
      const std::size_t max = rec.type == content_application_data ? max_ciphertext_bytes : max_plaintext_bytes;
      if (length == 0 || length > max) return hello_reason::malformed;
      rec.left = length;
      rec.header_len = 0;
      rec.first = false;
      if (rec.type == content_application_data) client_.early_data += record_header_bytes;
      // Only a handshake record can carry a ClientHello: any other header is released.
      if (rec.type != content_handshake) client_.hold_from.reset();
      return {};
    }
  }
}

std::string_view handshake_watch::check_hello(const hello_result& hello) {
  // The checks of the first hello, unchanged (acl.cpp), ...
  if (const auto d = check_sni(hello, connect_host_, allow_missing_sni_, allow_ech_); !d.allowed) return d.reason;
  // Allowed with a server_name means: it normalises to the CONNECT host (check_sni), so
  // "has a name" is all that can still differ between two allowed hellos.
  const bool named = hello.server_name.has_value();
  if (hellos_ == 0) {
    first_named_ = named;
    first_ech_ = hello.encrypted_client_hello;
    first_server_name_ = hello.server_name;
    return {};
  }
  // ... and a later hello may not change the name (RFC 8446 §4.1.2: the second
  // ClientHello repeats the first but for key_share, early_data, cookie,
  // pre_shared_key and padding).
  if (named != first_named_) return named ? "sni_mismatch" : "sni_missing";
  if (hello.encrypted_client_hello && !first_ech_) return "ech_present";
  return {};
}

client_step handshake_watch::feed_client(std::span<const std::uint8_t> bytes) {
  if (!refusal_.empty()) return {0, refusal_};

  std::size_t pos = 0;
  while (pos < bytes.size()) {
    if (done()) {  // the check is over: the rest passes unparsed
      client_.consumed += bytes.size() - pos;
      break;
    }
    if (client_.consumed == max_watch_bytes_) return {0, refuse(watch_reason::too_long)};
    // A hello in progress never holds more than max_hello_bytes, even while record headers
    // pile up before its length is known (as client_hello_parser's cap on bytes consumed).
    if (client_.hello && client_.consumed - *client_.hold_from >= max_hello_bytes_) {
      return {0, refuse(hello_reason::too_large)};
    }
    record_state& rec = client_.rec;

    if (rec.left == 0) {
      if (rec.header_len == 0) {
        if (!client_.hello) {
          client_.hold_from = client_.consumed;  // held until its type and length are known
        } else {
          // A record continuing the hello: its header counts toward the hello's cap, as
          // client_hello_parser counts the first hello's.
          const std::size_t length = client_.hello->length();
          if (length != 0 && client_.hello_headers + record_header_bytes > max_hello_bytes_ - length) {
            return {0, refuse(hello_reason::too_large)};
          }
          client_.hello_headers += record_header_bytes;
        }
      }
      ++client_.consumed;
      if (const auto reason = take_client_header_byte(bytes[pos++]); !reason.empty()) return {0, refuse(reason)};
      continue;
    }

    const std::size_t n = std::min({bytes.size() - pos, rec.left, max_watch_bytes_ - client_.consumed});
    if (rec.type != content_handshake) {
      // ChangeCipherSpec, alert, 0-RTT application_data: passed as they come.
      if (rec.type == content_application_data) client_.early_data += n;
      pos += n;
      client_.consumed += n;
      rec.left -= n;
      continue;
    }

    if (!client_.hello) {
      // A handshake message begins: before the ServerHello only a ClientHello is legal.
      // Held from its record's header when it opens the record, else from its first byte.
      if (client_.hold_from) {
        client_.hello_headers = record_header_bytes;
      } else {
        client_.hold_from = client_.consumed;
        client_.hello_headers = 0;
      }
      client_.hello.emplace();
    }
    const std::size_t room = client_.hello_headers < max_hello_bytes_ ? max_hello_bytes_ - client_.hello_headers : 0;
    const std::size_t held_now = client_.consumed - *client_.hold_from;
    if (held_now >= max_hello_bytes_) return {0, refuse(hello_reason::too_large)};
    std::size_t used = 0;
    const hello_result r =
        client_.hello->feed(bytes.subspan(pos, std::min(n, max_hello_bytes_ - held_now)), room, used);
    assert(used != 0 || r.state != hello_state::need_more);
    pos += used;
    client_.consumed += used;
    rec.left -= used;
    if (r.state == hello_state::invalid) return {0, refuse(r.reason)};
    if (r.state == hello_state::complete) {
      if (const auto reason = check_hello(r); !reason.empty()) return {0, refuse(reason)};
      ++hellos_;
      client_.hello.reset();
      client_.hold_from.reset();  // checked: released, up to its last byte
    }
  }

  const std::size_t point = release_point();
  client_step step;
  step.forward = point - client_.released;
  client_.released = point;
  return step;
}

// ---------------------------------------------------------------------------------------
// Upstream -> client

std::string_view handshake_watch::take_server_header_byte(std::uint8_t byte) {
  record_state& rec = server_.rec;
  const std::string_view wrong = rec.first ? watch_reason::upstream_not_tls : watch_reason::upstream_malformed;
  rec.header[rec.header_len++] = byte;
  switch (rec.header_len) {
    case 1:
      if (rec.first) return byte == content_handshake || byte == content_alert ? std::string_view{} : wrong;
      if (server_.msg_header_len != 0) {  // inside a handshake message (RFC 8446 §5.1)
        return byte == content_handshake ? std::string_view{} : watch_reason::upstream_malformed;
      }
      // application_data before the ServerHello has no keys to be under.
      return byte >= content_change_cipher_spec && byte <= content_handshake ? std::string_view{}
                                                                             : watch_reason::upstream_malformed;
    case 2:
      return byte == record_version_major ? std::string_view{} : wrong;
    case 3:
      return byte <= version_minor_max ? std::string_view{} : wrong;
    case 4:
      return {};
    default: {
      const std::size_t length = record_length(rec.header);
      if (length == 0 || length > max_plaintext_bytes) return watch_reason::upstream_malformed;
      rec.type = rec.header[0];
      rec.left = length;
      rec.header_len = 0;
      rec.first = false;
      return {};
    }
  }
}

// Handshake-record payload from upstream: message headers, the first 34 body bytes of a
// ServerHello, the rest skipped. Stops at the byte that shows the real ServerHello.
std::string_view handshake_watch::take_server_handshake(std::span<const std::uint8_t> bytes, std::size_t& used) {
  server_side& s = server_;
  used = 0;
  while (used < bytes.size() && !s.server_hello_seen) {
    if (s.msg_header_len < handshake_header_bytes) {
      s.msg_header[s.msg_header_len++] = bytes[used++];
      if (s.msg_header_len < handshake_header_bytes) continue;
      const std::uint8_t type = s.msg_header[0];
      const std::size_t length =
          (std::size_t{s.msg_header[1]} << 16) | (std::size_t{s.msg_header[2]} << 8) | s.msg_header[3];
      if (type == handshake_hello_request && length == 0) {  // ignorable before the handshake
        s.msg_header_len = 0;
        continue;
      }
      if (type != handshake_server_hello || length < min_server_hello_body) return watch_reason::upstream_malformed;
      s.msg_left = length;
      s.prefix_len = 0;
      s.in_server_hello = true;
      continue;
    }
    std::size_t n = std::min(bytes.size() - used, s.msg_left);
    if (s.in_server_hello) n = std::min(n, hello_prefix_bytes - s.prefix_len);
    const auto piece = bytes.subspan(used, n);
    used += n;
    s.msg_left -= n;
    if (s.in_server_hello) {
      std::copy(piece.begin(), piece.end(), s.prefix.begin() + static_cast<std::ptrdiff_t>(s.prefix_len));
      s.prefix_len += n;
      if (s.prefix_len == hello_prefix_bytes) {
        s.in_server_hello = false;
        const bool retry = std::equal(hello_retry_request_random.begin(), hello_retry_request_random.end(),
                                      s.prefix.begin() + 2);
        if (!retry) {
          s.server_hello_seen = true;  // nothing after it is looked at
          return {};
        }
        if (s.hrr_seen) return watch_reason::upstream_malformed;  // RFC 8446 §4.1.4: one HRR per connection
        s.hrr_seen = true;
      }
    }
    if (s.msg_left == 0 && !s.in_server_hello) s.msg_header_len = 0;  // the message is over
  }
  return {};
}

std::string_view handshake_watch::feed_server(std::span<const std::uint8_t> bytes) {
  if (!refusal_.empty()) return refusal_;

  std::size_t pos = 0;
  while (pos < bytes.size() && !server_.server_hello_seen) {
    if (server_.consumed == max_watch_bytes_) return refuse(watch_reason::too_long);
    record_state& rec = server_.rec;
    if (rec.left == 0) {
      ++server_.consumed;
      if (const auto reason = take_server_header_byte(bytes[pos++]); !reason.empty()) return refuse(reason);
      continue;
    }
    const std::size_t n = std::min({bytes.size() - pos, rec.left, max_watch_bytes_ - server_.consumed});
    std::size_t used = n;
    std::string_view reason;
    if (rec.type == content_handshake) reason = take_server_handshake(bytes.subspan(pos, n), used);
    pos += used;
    server_.consumed += used;  // up to the deciding byte, however the bytes were split
    rec.left -= used;
    if (!reason.empty()) return refuse(reason);
  }
  return {};
}

}  // namespace egress::proxy
