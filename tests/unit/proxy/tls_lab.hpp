#pragma once
// Test support for the ClientHello and handshake-watch tests: real OpenSSL 3 TLS clients
// and servers in process over memory BIO pairs (no sockets), a self-signed P-256
// certificate made at start-up, a servername-callback recorder, and ClientHello surgery
// (a hello split into its fields and joined back, every length field tracked) for
// hand-built and mutated hellos. Test code only: touches no proxy state.

#include <openssl/ssl.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace tls_lab {

using bytes = std::vector<std::uint8_t>;

bytes to_bytes(std::string_view s);
std::string hex(const bytes& b, std::size_t max = 64);

struct ssl_ctx_deleter {
  void operator()(SSL_CTX* p) const noexcept { SSL_CTX_free(p); }
};
struct ssl_deleter {
  void operator()(SSL* p) const noexcept { SSL_free(p); }
};
using ctx_ptr = std::unique_ptr<SSL_CTX, ssl_ctx_deleter>;
using ssl_ptr = std::unique_ptr<SSL, ssl_deleter>;

// ---------------------------------------------------------------------------------------
// Contexts

struct client_options {
  int min_version = TLS1_2_VERSION;
  int max_version = TLS1_3_VERSION;
  /// SSL_CTX_set1_groups_list; OpenSSL 3.0 sends a key share for the first group only.
  std::string groups = "X25519:P-256";
  /// ALPN protocol names, e.g. {"h2", "http/1.1"}.
  std::vector<std::string> alpn;
  /// SSL_OP_TLSEXT_PADDING: the padding extension (RFC 7685) for 256..511-byte hellos.
  bool padding_option = false;
  /// Data size of an extra unregistered extension (0x7e7e), to make big hellos.
  std::size_t big_extension_bytes = 0;
};

/// A client context with certificate verification off (the tests judge bytes, not trust).
ctx_ptr make_client_ctx(const client_options& options = {});

struct server_options {
  int min_version = TLS1_2_VERSION;
  int max_version = TLS1_3_VERSION;
  std::string groups = "X25519:P-256";
  /// SSL_CTX_set_max_early_data; 0 = no 0-RTT.
  std::uint32_t max_early_data = 0;
};

/// A server context with the shared self-signed P-256 certificate and the servername
/// recorder installed (see `names_seen`).
ctx_ptr make_server_ctx(const server_options& options = {});

// ---------------------------------------------------------------------------------------
// Endpoints

/// One SSL object with its network side on a memory BIO pair: what it writes is taken
/// with `take_output`, what the peer sent is given with `give_input`.
class endpoint {
public:
  endpoint(SSL_CTX* ctx, bool server);
  ~endpoint();
  endpoint(const endpoint&) = delete;
  endpoint& operator=(const endpoint&) = delete;

  SSL* ssl() const noexcept { return ssl_.get(); }
  /// SSL_do_handshake once; true when the handshake is complete. Fails the test on a
  /// TLS error unless `error_ok`, in which case `failed()` reports it.
  bool step(bool error_ok = false);
  bool failed() const noexcept { return failed_; }
  bool finished() const noexcept { return SSL_is_init_finished(ssl_.get()) == 1; }
  /// Everything the SSL wrote to the network so far and nobody took.
  bytes take_output();
  /// Bytes from the network for the SSL to read.
  void give_input(const bytes& in);
  /// SNI to send (client), or clear it with nullopt (SSL_set_tlsext_host_name).
  void set_host_name(const std::optional<std::string>& name);

private:
  ssl_ptr ssl_;
  BIO* network_ = nullptr;  // owned; the SSL owns the other half
  bool failed_ = false;
};

/// The server names the servername callback of a `make_server_ctx` server saw, one entry
/// per call (nullopt: called without a name), in order.
const std::vector<std::optional<std::string>>& names_seen(SSL* server);

/// The first flight an OpenSSL client writes (its first ClientHello record(s)), for SNI
/// `sni` (nullopt: none).
bytes openssl_client_hello(const client_options& options, const std::optional<std::string>& sni);

/// How an OpenSSL server took a byte stream offered as a connection's first bytes.
struct server_verdict {
  /// The server processed a ClientHello and answered with a handshake record
  /// (ServerHello or HelloRetryRequest).
  bool accepted = false;
  /// The server failed the connection (alert or error).
  bool rejected = false;
  /// The servername callback was called (it runs only after the hello parsed).
  bool callback_called = false;
  /// The names it saw.
  std::vector<std::optional<std::string>> names;
};
server_verdict offer_to_openssl_server(SSL_CTX* server_ctx, const bytes& in);

/// SHA-256 of `text` (OpenSSL's EVP), e.g. to check the HelloRetryRequest random.
bytes sha256(std::string_view text);

// ---------------------------------------------------------------------------------------
// ClientHello surgery

struct extension {
  std::uint16_t type = 0;
  bytes data;
};

struct name_entry {
  std::uint8_t type = 0;
  bytes name;
};

/// A ClientHello's fields (RFC 8446 §4.1.2) and the record version it came in.
struct hello_parts {
  std::uint16_t record_version = 0x0301;
  std::uint16_t legacy_version = 0x0303;
  bytes random;
  bytes session_id;
  bytes cipher_suites;
  bytes compression_methods;
  std::optional<std::vector<extension>> extensions;
  /// Bytes after the extensions block inside the message (none in a valid hello).
  bytes trailing;
};

/// A well-formed ClientHello record stream (one or more handshake records, nothing else)
/// split into fields; nullopt when it is not one.
std::optional<hello_parts> split_hello(const bytes& records);

/// Where a length field sits in a serialised handshake message: offset and width.
struct length_field {
  std::size_t offset = 0;
  std::size_t width = 0;
  std::string what;
};

/// The handshake message (4-byte header + body) of `parts`, and every length field in it
/// (handshake length, session id, cipher suites, compression, extensions block, each
/// extension, and in a server_name extension its list and each name).
bytes join_message(const hello_parts& parts, std::vector<length_field>* fields = nullptr);

/// `message` framed as handshake records cut at the given message offsets.
bytes frame(const bytes& message, const std::vector<std::size_t>& cuts, std::uint16_t record_version);

/// One record of the given type around `fragment`.
bytes record(std::uint8_t type, const bytes& fragment, std::uint16_t version = 0x0303);

/// The ClientHello of `parts` in one record.
inline bytes join_hello(const hello_parts& parts) { return frame(join_message(parts), {}, parts.record_version); }

/// server_name extension_data of `entries` (RFC 6066 §3), and its inverse (nullopt when
/// the data is not a well-framed list).
bytes server_name_data(const std::vector<name_entry>& entries);
std::optional<std::vector<name_entry>> parse_server_name_data(const bytes& data);

/// The index of the extension of `type` in `parts`, if any.
std::optional<std::size_t> find_extension(const hello_parts& parts, std::uint16_t type);

constexpr std::uint16_t ext_server_name = 0;
constexpr std::uint16_t ext_encrypted_client_hello = 0xfe0d;

}  // namespace tls_lab
