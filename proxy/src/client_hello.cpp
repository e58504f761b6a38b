// The ClientHello parser (client_hello.hpp): handshake-message reassembly and body
// parsing (client_hello_message) and the first hello's record layer
// (client_hello_parser). Judges structure and the host_name's bytes only; policy (SNI
// against the CONNECT host, ECH, missing SNI) stays in acl.cpp.

#include "egress/proxy/client_hello.hpp"

#include <algorithm>
#include <cassert>
#include <utility>

namespace egress::proxy {
namespace {

constexpr std::uint8_t content_type_handshake = 22;
constexpr std::uint8_t record_version_major = 3;
constexpr std::uint8_t record_version_minor_min = 1;  // TLS 1.0
constexpr std::uint8_t record_version_minor_max = 4;  // TLS 1.3 never sends it, but allowed
constexpr std::size_t max_fragment_bytes = std::size_t{1} << 14;  // RFC 8446 §5.1

constexpr std::uint8_t handshake_type_client_hello = 1;
constexpr std::size_t handshake_header_bytes = 4;
// legacy_version, random, empty session id, one cipher suite, one compression method.
constexpr std::size_t min_body_bytes = 2 + 32 + 1 + (2 + 2) + (1 + 1);

constexpr std::size_t random_bytes = 32;
constexpr std::size_t max_session_id_bytes = 32;
constexpr std::uint16_t extension_server_name = 0;
constexpr std::uint16_t extension_encrypted_client_hello = 0xfe0d;
constexpr std::uint8_t name_type_host_name = 0;
constexpr std::size_t max_host_name_bytes = 253;  // RFC 1035 §2.3.4, without the root dot

using byte_span = std::span<const std::uint8_t>;

/// Bounds-checked big-endian reads over a complete buffer; every read either takes what
/// it asks for or fails without a partial value.
class reader {
public:
  explicit reader(byte_span data) noexcept : data_{data} {}

  bool empty() const noexcept { return data_.empty(); }

  std::optional<std::uint8_t> u8() noexcept {
    if (data_.empty()) return std::nullopt;
    const std::uint8_t value = data_[0];
    data_ = data_.subspan(1);
    return value;
  }

  std::optional<std::uint16_t> u16() noexcept {
    if (data_.size() < 2) return std::nullopt;
    const auto value = static_cast<std::uint16_t>((data_[0] << 8) | data_[1]);
    data_ = data_.subspan(2);
    return value;
  }

  std::optional<byte_span> take(std::size_t n) noexcept {
    if (data_.size() < n) return std::nullopt;
    const byte_span out = data_.first(n);
    data_ = data_.subspan(n);
    return out;
  }

  /// opaque x<0..2^8-1>: a 1-byte length, then that many bytes.
  std::optional<byte_span> vector8() noexcept {
    const auto n = u8();
    if (!n) return std::nullopt;
    return take(*n);
  }

  /// opaque x<0..2^16-1>: a 2-byte length, then that many bytes.
  std::optional<byte_span> vector16() noexcept {
    const auto n = u16();
    if (!n) return std::nullopt;
    return take(*n);
  }

private:
  byte_span data_;
};

hello_result invalid(std::string_view reason) {
  hello_result r;
  r.state = hello_state::invalid;
  r.reason = reason;
  return r;
}

bool is_host_name_byte(std::uint8_t c) noexcept {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '.';
}

/// Only the checks that make a name unusable as an allowlist key whatever the policy:
/// label rules (empty labels, hyphens, IP literals) are left to `common::normalize_host`,
/// which the caller runs anyway, so its finer reasons survive.
bool is_acceptable_host_name(byte_span name) noexcept {
  std::size_t significant = name.size();
  if (significant != 0 && name.back() == '.') --significant;  // one root dot is allowed
  if (significant == 0 || significant > max_host_name_bytes) return false;
  return std::all_of(name.begin(), name.end(), is_host_name_byte);
}

/// server_name extension_data (RFC 6066 §3). Returns an error reason, or empty with
/// `host_name` set to the list's one host_name.
std::string_view parse_server_name(byte_span data, std::optional<std::string>& host_name) {
  reader outer{data};
  const auto list = outer.vector16();
  if (!list || !outer.empty() || list->empty()) return hello_reason::malformed;

  // Frame the whole list before judging it, so a structural error wins over the others.
  reader entries{*list};
  std::size_t count = 0;
  std::uint8_t first_type = 0;
  byte_span first_name;
  while (!entries.empty()) {
    const auto name_type = entries.u8();
    const auto name = entries.vector16();  // every name type carries a 16-bit length
    if (!name_type || !name) return hello_reason::malformed;
    if (count++ == 0) {
      first_type = *name_type;
      first_name = *name;
    }
  }
  // RFC 6066 §3: one name per type, and host_name is the only type. A second entry (or
  // an entry of another type) is read differently by parsers that take the first entry
  // and parsers that take the first host_name.
  if (count != 1 || first_type != name_type_host_name) return hello_reason::sni_list_invalid;
  if (!is_acceptable_host_name(first_name)) return hello_reason::sni_invalid;
  host_name.emplace(first_name.begin(), first_name.end());
  return {};
}

/// The ClientHello body (after the 4-byte handshake header), all of it present.
hello_result parse_body(byte_span body) {
  reader in{body};

  const auto legacy_version = in.u16();
  if (!legacy_version || (*legacy_version >> 8) != record_version_major) {
    return invalid(hello_reason::malformed);
  }
  if (!in.take(random_bytes)) return invalid(hello_reason::malformed);
  const auto session_id = in.vector8();
  if (!session_id || session_id->size() > max_session_id_bytes) return invalid(hello_reason::malformed);
  const auto cipher_suites = in.vector16();
  if (!cipher_suites || cipher_suites->empty() || cipher_suites->size() % 2 != 0) {
    return invalid(hello_reason::malformed);
  }
  const auto compression_methods = in.vector8();
  if (!compression_methods || compression_methods->empty()) return invalid(hello_reason::malformed);

  hello_result result;
  result.state = hello_state::complete;
  if (in.empty()) return result;  // TLS 1.2 and older may omit the extensions block

  const auto block = in.vector16();
  if (!block || !in.empty()) return invalid(hello_reason::malformed);

  reader extensions{*block};
  std::vector<std::uint16_t> types;
  types.reserve(block->size() / 4);
  std::optional<byte_span> server_name_data;
  while (!extensions.empty()) {
    const auto type = extensions.u16();
    const auto data = extensions.vector16();
    if (!type || !data) return invalid(hello_reason::malformed);
    types.push_back(*type);
    if (*type == extension_server_name) {
      server_name_data = *data;
    } else if (*type == extension_encrypted_client_hello) {
      result.encrypted_client_hello = true;
    }
  }
  // RFC 8446 §4.2: at most one extension of each type. A second server_name could
  // otherwise disagree with the one checked here.
  std::sort(types.begin(), types.end());
  if (std::adjacent_find(types.begin(), types.end()) != types.end()) {
    return invalid(hello_reason::malformed);
  }

  if (server_name_data) {
    if (const auto reason = parse_server_name(*server_name_data, result.server_name); !reason.empty()) {
      return invalid(reason);
    }
  }
  return result;
}

}  // namespace

const hello_result& client_hello_message::fail(std::string_view reason) {
  result_ = invalid(reason);
  message_ = {};  // release the buffer: the result is final
  return result_;
}

hello_result client_hello_message::feed(std::span<const std::uint8_t> bytes, std::size_t room, std::size_t& used) {
  used = 0;
  if (result_.state != hello_state::need_more) return result_;
  while (used < bytes.size()) {
    // Take only what the message still needs, so the handshake header is judged exactly
    // when its 4th byte arrives and nothing past the ClientHello is consumed.
    const std::size_t wanted = (length_ != 0 ? length_ : handshake_header_bytes) - message_.size();
    const std::size_t n = std::min(bytes.size() - used, wanted);
    assert(n != 0);  // wanted is positive while need_more, so the loop always advances
    const auto piece = bytes.subspan(used, n);
    message_.insert(message_.end(), piece.begin(), piece.end());
    used += n;
    consumed_ += n;

    if (length_ == 0) {
      if (message_.size() < handshake_header_bytes) continue;
      if (message_[0] != handshake_type_client_hello) return fail(hello_reason::malformed);
      const std::size_t body_len =
          (std::size_t{message_[1]} << 16) | (std::size_t{message_[2]} << 8) | message_[3];
      if (body_len < min_body_bytes) return fail(hello_reason::malformed);
      // Reject now rather than after buffering a hello that cannot fit.
      if (handshake_header_bytes + body_len > room) return fail(hello_reason::too_large);
      length_ = handshake_header_bytes + body_len;
      message_.reserve(length_);
      continue;
    }
    if (message_.size() == length_) {
      result_ = parse_body(std::span{message_}.subspan(handshake_header_bytes));
      message_ = {};
      return result_;
    }
  }
  return result_;
}

client_hello_parser::client_hello_parser(std::size_t max_bytes) : max_bytes_{max_bytes} {}

const hello_result& client_hello_parser::fail(std::string_view reason) {
  result_ = invalid(reason);
  message_ = {};  // release the buffer: the result is final
  return result_;
}

// Record header bytes are judged one at a time, so the point of failure (and so
// bytes_fed) depends only on the stream, and "GET" fails on its first byte.
std::string_view client_hello_parser::take_record_header_byte(std::uint8_t byte) {
  // Before the first record completes, a wrong byte means the peer is not speaking TLS;
  // after it, a wrong record inside the ClientHello is a broken (or hostile) hello.
  const bool first_record = record_header_total_ == record_header_bytes;
  const std::string_view wrong = first_record ? hello_reason::not_tls : hello_reason::malformed;
  header_[header_len_++] = byte;
  switch (header_len_) {
    case 1:
      return byte == content_type_handshake ? std::string_view{} : wrong;
    case 2:
      return byte == record_version_major ? std::string_view{} : wrong;
    case 3:
      return byte >= record_version_minor_min && byte <= record_version_minor_max ? std::string_view{} : wrong;
    case 4:
      return {};
    default: {
      const std::size_t length = (std::size_t{header_[3]} << 8) | header_[4];
      if (length == 0 || length > max_fragment_bytes) return hello_reason::malformed;
      record_left_ = length;
      header_len_ = 0;
      return {};
    }
  }
}

hello_result client_hello_parser::feed(std::span<const std::uint8_t> bytes) {
  if (result_.state != hello_state::need_more) return result_;

  std::size_t pos = 0;
  while (pos < bytes.size()) {
    if (consumed_ == max_bytes_) return fail(hello_reason::too_large);

    if (record_left_ == 0) {
      if (header_len_ == 0) {
        // A new record: its header must still fit beside the message it carries.
        const std::size_t message_len = message_.length();
        if (message_len != 0 && record_header_total_ + record_header_bytes > max_bytes_ - message_len) {
          return fail(hello_reason::too_large);
        }
        record_header_total_ += record_header_bytes;
      }
      ++consumed_;
      if (const auto reason = take_record_header_byte(bytes[pos++]); !reason.empty()) return fail(reason);
      continue;
    }

    // Fragment bytes: the message takes what it still needs, within the record and the cap.
    const std::size_t n = std::min({bytes.size() - pos, record_left_, max_bytes_ - consumed_});
    const std::size_t room = record_header_total_ < max_bytes_ ? max_bytes_ - record_header_total_ : 0;
    std::size_t used = 0;
    const hello_result r = message_.feed(bytes.subspan(pos, n), room, used);
    pos += used;
    consumed_ += used;
    record_left_ -= used;
    if (r.state != hello_state::need_more) {
      result_ = r;
      message_ = {};
      return result_;
    }
  }
  return result_;
}

}  // namespace egress::proxy
