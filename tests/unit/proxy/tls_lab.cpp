// Test support (tls_lab.hpp): OpenSSL endpoints over memory BIO pairs, a self-signed
// certificate, a servername recorder and ClientHello surgery. Test code only.

#include "tls_lab.hpp"

#include <catch2/catch.hpp>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#include <algorithm>
#include <cstdio>

namespace tls_lab {
namespace {

// Several OpenSSL configuration calls are macros with C casts inside; the warning is off
// only around them.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wold-style-cast"
long set_groups(SSL_CTX* ctx, const std::string& groups) { return SSL_CTX_set1_groups_list(ctx, groups.c_str()); }
long set_host(SSL* ssl, const char* name) { return SSL_set_tlsext_host_name(ssl, name); }
long set_min(SSL_CTX* ctx, int v) { return SSL_CTX_set_min_proto_version(ctx, v); }
long set_max(SSL_CTX* ctx, int v) { return SSL_CTX_set_max_proto_version(ctx, v); }
void set_servername_cb(SSL_CTX* ctx, int (*cb)(SSL*, int*, void*)) { SSL_CTX_set_tlsext_servername_callback(ctx, cb); }
#pragma GCC diagnostic pop

std::string openssl_errors() {
  std::string out;
  while (const unsigned long e = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    if (!out.empty()) out += "; ";
    out += buf;
  }
  return out;
}

struct pkey_deleter {
  void operator()(EVP_PKEY* p) const noexcept { EVP_PKEY_free(p); }
};
struct x509_deleter {
  void operator()(X509* p) const noexcept { X509_free(p); }
};

struct credentials {
  std::unique_ptr<EVP_PKEY, pkey_deleter> key;
  std::unique_ptr<X509, x509_deleter> cert;
};

/// A P-256 key and a self-signed certificate for it, made once.
const credentials& lab_credentials() {
  static const credentials creds = [] {
    credentials c;
    c.key.reset(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256"));
    REQUIRE(c.key);
    c.cert.reset(X509_new());
    REQUIRE(c.cert);
    X509* x = c.cert.get();
    REQUIRE(X509_set_version(x, 2) == 1);
    REQUIRE(ASN1_INTEGER_set(X509_get_serialNumber(x), 1) == 1);
    REQUIRE(X509_gmtime_adj(X509_getm_notBefore(x), -60) != nullptr);
    REQUIRE(X509_gmtime_adj(X509_getm_notAfter(x), 24 * 3600) != nullptr);
    REQUIRE(X509_set_pubkey(x, c.key.get()) == 1);
    X509_NAME* name = X509_get_subject_name(x);
    static const unsigned char cn[] = "tls-lab";
    REQUIRE(X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, cn, -1, -1, 0) == 1);
    REQUIRE(X509_set_issuer_name(x, name) == 1);
    REQUIRE(X509_sign(x, c.key.get(), EVP_sha256()) > 0);
    return c;
  }();
  return creds;
}

using name_log = std::vector<std::optional<std::string>>;

void free_name_log(void*, void* ptr, CRYPTO_EX_DATA*, int, long, void*) { delete static_cast<name_log*>(ptr); }

int name_log_index() {
  static const int index = CRYPTO_get_ex_new_index(CRYPTO_EX_INDEX_SSL, 0, nullptr, nullptr, nullptr, free_name_log);
  return index;
}

name_log& log_of(SSL* ssl) {
  auto* log = static_cast<name_log*>(SSL_get_ex_data(ssl, name_log_index()));
  if (log == nullptr) {
    log = new name_log;
    SSL_set_ex_data(ssl, name_log_index(), log);
  }
  return *log;
}

int record_server_name(SSL* ssl, int*, void*) {
  const char* name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
  log_of(ssl).push_back(name ? std::optional<std::string>{name} : std::nullopt);
  return SSL_TLSEXT_ERR_OK;
}

constexpr unsigned big_extension_type = 0x7e7e;

int add_big_extension(SSL*, unsigned int, unsigned int, const unsigned char** out, std::size_t* out_len, X509*,
                      std::size_t, int*, void* arg) {
  const auto* data = static_cast<const bytes*>(arg);
  *out = data->data();
  *out_len = data->size();
  return 1;
}

void put_u8(bytes& out, std::size_t v) { out.push_back(static_cast<std::uint8_t>(v & 0xff)); }
void put_u16(bytes& out, std::size_t v) {
  put_u8(out, v >> 8);
  put_u8(out, v);
}
void put(bytes& out, const bytes& b) { out.insert(out.end(), b.begin(), b.end()); }

/// Bounds-checked reads for split_hello.
struct cursor {
  const bytes& data;
  std::size_t pos = 0;
  std::size_t end;
  bool ok = true;

  cursor(const bytes& d, std::size_t from, std::size_t to) : data{d}, pos{from}, end{to} {}
  std::size_t left() const { return end - pos; }
  std::size_t number(std::size_t width) {
    if (!ok || left() < width) {
      ok = false;
      return 0;
    }
    std::size_t v = 0;
    for (std::size_t i = 0; i < width; ++i) v = (v << 8) | data[pos++];
    return v;
  }
  bytes take(std::size_t n) {
    if (!ok || left() < n) {
      ok = false;
      return {};
    }
    bytes out(data.begin() + static_cast<std::ptrdiff_t>(pos), data.begin() + static_cast<std::ptrdiff_t>(pos + n));
    pos += n;
    return out;
  }
};

}  // namespace

bytes to_bytes(std::string_view s) { return bytes(s.begin(), s.end()); }

std::string hex(const bytes& b, std::size_t max) {
  std::string out;
  char buf[4];
  for (std::size_t i = 0; i < b.size() && i < max; ++i) {
    std::snprintf(buf, sizeof buf, "%02x", b[i]);
    out += buf;
  }
  if (b.size() > max) out += "...(" + std::to_string(b.size()) + " bytes)";
  return out;
}

ctx_ptr make_client_ctx(const client_options& o) {
  ctx_ptr ctx{SSL_CTX_new(TLS_client_method())};
  REQUIRE(ctx);
  REQUIRE(set_min(ctx.get(), o.min_version) == 1);
  REQUIRE(set_max(ctx.get(), o.max_version) == 1);
  REQUIRE(set_groups(ctx.get(), o.groups) == 1);
  SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_NONE, nullptr);
  if (!o.alpn.empty()) {
    bytes wire;
    for (const auto& p : o.alpn) {
      put_u8(wire, p.size());
      wire.insert(wire.end(), p.begin(), p.end());
    }
    REQUIRE(SSL_CTX_set_alpn_protos(ctx.get(), wire.data(), static_cast<unsigned>(wire.size())) == 0);
  }
  if (o.padding_option) SSL_CTX_set_options(ctx.get(), SSL_OP_TLSEXT_PADDING);
  if (o.big_extension_bytes != 0) {
    // The data must outlive the context: keep one buffer per size, for the process.
    static std::vector<std::unique_ptr<bytes>> buffers;
    buffers.push_back(std::make_unique<bytes>(o.big_extension_bytes, 0x5a));
    REQUIRE(SSL_CTX_add_custom_ext(ctx.get(), big_extension_type, SSL_EXT_CLIENT_HELLO, add_big_extension, nullptr,
                                   buffers.back().get(), nullptr, nullptr) == 1);
  }
  return ctx;
}

ctx_ptr make_server_ctx(const server_options& o) {
  ctx_ptr ctx{SSL_CTX_new(TLS_server_method())};
  REQUIRE(ctx);
  REQUIRE(set_min(ctx.get(), o.min_version) == 1);
  REQUIRE(set_max(ctx.get(), o.max_version) == 1);
  REQUIRE(set_groups(ctx.get(), o.groups) == 1);
  const auto& creds = lab_credentials();
  REQUIRE(SSL_CTX_use_certificate(ctx.get(), creds.cert.get()) == 1);
  REQUIRE(SSL_CTX_use_PrivateKey(ctx.get(), creds.key.get()) == 1);
  set_servername_cb(ctx.get(), record_server_name);
  if (o.max_early_data != 0) REQUIRE(SSL_CTX_set_max_early_data(ctx.get(), o.max_early_data) == 1);
  return ctx;
}

endpoint::endpoint(SSL_CTX* ctx, bool server) : ssl_{SSL_new(ctx)} {
  REQUIRE(ssl_);
  BIO* ssl_side = nullptr;
  REQUIRE(BIO_new_bio_pair(&ssl_side, 1 << 20, &network_, 1 << 20) == 1);
  SSL_set_bio(ssl_.get(), ssl_side, ssl_side);
  if (server) {
    SSL_set_accept_state(ssl_.get());
  } else {
    SSL_set_connect_state(ssl_.get());
  }
}

endpoint::~endpoint() {
  ssl_.reset();
  BIO_free(network_);
}

bool endpoint::step(bool error_ok) {
  ERR_clear_error();
  const int rc = SSL_do_handshake(ssl_.get());
  if (rc == 1) return true;
  const int err = SSL_get_error(ssl_.get(), rc);
  if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) return false;
  failed_ = true;
  const std::string why = openssl_errors();
  if (!error_ok) FAIL("TLS handshake failed: SSL_get_error " << err << ": " << why);
  return false;
}

bytes endpoint::take_output() {
  bytes out(BIO_ctrl_pending(network_));
  if (out.empty()) return out;
  REQUIRE(BIO_read(network_, out.data(), static_cast<int>(out.size())) == static_cast<int>(out.size()));
  return out;
}

void endpoint::give_input(const bytes& in) {
  if (in.empty()) return;
  REQUIRE(BIO_write(network_, in.data(), static_cast<int>(in.size())) == static_cast<int>(in.size()));
}

void endpoint::set_host_name(const std::optional<std::string>& name) {
  REQUIRE(set_host(ssl_.get(), name ? name->c_str() : nullptr) == 1);
}

const std::vector<std::optional<std::string>>& names_seen(SSL* server) { return log_of(server); }

bytes openssl_client_hello(const client_options& options, const std::optional<std::string>& sni) {
  const ctx_ptr ctx = make_client_ctx(options);
  endpoint client{ctx.get(), false};
  if (sni) client.set_host_name(sni);
  REQUIRE_FALSE(client.step());
  bytes out = client.take_output();
  REQUIRE(!out.empty());
  return out;
}

server_verdict offer_to_openssl_server(SSL_CTX* server_ctx, const bytes& in) {
  endpoint server{server_ctx, true};
  server.give_input(in);
  server.step(true);
  const bytes out = server.take_output();
  server_verdict v;
  v.rejected = server.failed() || (!out.empty() && out[0] == 21);
  v.accepted = !v.rejected && !out.empty() && out[0] == 22;
  v.names = names_seen(server.ssl());
  v.callback_called = !v.names.empty();
  ERR_clear_error();
  return v;
}

bytes sha256(std::string_view text) {
  bytes out(32);
  unsigned int len = 0;
  REQUIRE(EVP_Digest(text.data(), text.size(), out.data(), &len, EVP_sha256(), nullptr) == 1);
  REQUIRE(len == 32);
  return out;
}

// ---------------------------------------------------------------------------------------
// ClientHello surgery

std::optional<hello_parts> split_hello(const bytes& records) {
  hello_parts parts;
  bytes message;
  std::size_t pos = 0;
  bool first = true;
  while (pos < records.size()) {
    cursor c{records, pos, records.size()};
    const std::size_t type = c.number(1);
    const std::size_t version = c.number(2);
    const std::size_t length = c.number(2);
    const bytes fragment = c.take(length);
    if (!c.ok || type != 22 || length == 0) return std::nullopt;
    if (first) parts.record_version = static_cast<std::uint16_t>(version);
    first = false;
    put(message, fragment);
    pos = c.pos;
  }
  cursor m{message, 0, message.size()};
  if (m.number(1) != 1) return std::nullopt;
  const std::size_t body_length = m.number(3);
  if (!m.ok || body_length != m.left()) return std::nullopt;
  parts.legacy_version = static_cast<std::uint16_t>(m.number(2));
  parts.random = m.take(32);
  parts.session_id = m.take(m.number(1));
  parts.cipher_suites = m.take(m.number(2));
  parts.compression_methods = m.take(m.number(1));
  if (!m.ok) return std::nullopt;
  if (m.left() != 0) {
    const std::size_t block = m.number(2);
    if (!m.ok || block != m.left()) return std::nullopt;
    std::vector<extension> extensions;
    while (m.left() != 0) {
      extension e;
      e.type = static_cast<std::uint16_t>(m.number(2));
      e.data = m.take(m.number(2));
      if (!m.ok) return std::nullopt;
      extensions.push_back(std::move(e));
    }
    parts.extensions = std::move(extensions);
  }
  return parts;
}

bytes join_message(const hello_parts& p, std::vector<length_field>* fields) {
  std::vector<length_field> local;
  std::vector<length_field>& f = fields ? *fields : local;
  f.clear();
  bytes out;
  const auto field = [&](std::size_t width, std::size_t value, std::string what) {
    f.push_back({out.size(), width, std::move(what)});
    for (std::size_t i = width; i-- > 0;) put_u8(out, value >> (8 * i));
  };
  put_u8(out, 1);
  field(3, 0, "handshake length");  // patched below
  put_u16(out, p.legacy_version);
  put(out, p.random);
  field(1, p.session_id.size(), "session_id length");
  put(out, p.session_id);
  field(2, p.cipher_suites.size(), "cipher_suites length");
  put(out, p.cipher_suites);
  field(1, p.compression_methods.size(), "compression_methods length");
  put(out, p.compression_methods);
  if (p.extensions) {
    std::size_t total = 0;
    for (const auto& e : *p.extensions) total += 4 + e.data.size();
    field(2, total, "extensions length");
    for (std::size_t i = 0; i < p.extensions->size(); ++i) {
      const extension& e = (*p.extensions)[i];
      put_u16(out, e.type);
      field(2, e.data.size(), "extension " + std::to_string(e.type) + " length");
      const auto entries = e.type == ext_server_name ? parse_server_name_data(e.data) : std::nullopt;
      if (!entries) {
        put(out, e.data);
        continue;
      }
      std::size_t list = 0;
      for (const auto& n : *entries) list += 3 + n.name.size();
      field(2, list, "server_name_list length");
      for (const auto& n : *entries) {
        put_u8(out, n.type);
        field(2, n.name.size(), "server_name entry length");
        put(out, n.name);
      }
    }
  }
  put(out, p.trailing);
  const std::size_t body = out.size() - 4;
  out[1] = static_cast<std::uint8_t>(body >> 16);
  out[2] = static_cast<std::uint8_t>(body >> 8);
  out[3] = static_cast<std::uint8_t>(body);
  return out;
}

bytes record(std::uint8_t type, const bytes& fragment, std::uint16_t version) {
  bytes out;
  put_u8(out, type);
  put_u16(out, version);
  put_u16(out, fragment.size());
  put(out, fragment);
  return out;
}

bytes frame(const bytes& message, const std::vector<std::size_t>& cuts, std::uint16_t record_version) {
  std::vector<std::size_t> points;
  for (const std::size_t c : cuts) {
    if (c > 0 && c < message.size()) points.push_back(c);
  }
  std::sort(points.begin(), points.end());
  points.erase(std::unique(points.begin(), points.end()), points.end());
  points.push_back(message.size());
  bytes out;
  std::size_t from = 0;
  for (const std::size_t to : points) {
    const bytes piece(message.begin() + static_cast<std::ptrdiff_t>(from),
                      message.begin() + static_cast<std::ptrdiff_t>(to));
    put(out, record(22, piece, record_version));
    from = to;
  }
  return out;
}

bytes server_name_data(const std::vector<name_entry>& entries) {
  bytes list;
  for (const auto& e : entries) {
    put_u8(list, e.type);
    put_u16(list, e.name.size());
    put(list, e.name);
  }
  bytes out;
  put_u16(out, list.size());
  put(out, list);
  return out;
}

std::optional<std::vector<name_entry>> parse_server_name_data(const bytes& data) {
  cursor c{data, 0, data.size()};
  const std::size_t list = c.number(2);
  if (!c.ok || list != c.left() || list == 0) return std::nullopt;
  std::vector<name_entry> entries;
  while (c.left() != 0) {
    name_entry e;
    e.type = static_cast<std::uint8_t>(c.number(1));
    e.name = c.take(c.number(2));
    if (!c.ok) return std::nullopt;
    entries.push_back(std::move(e));
  }
  return entries;
}

std::optional<std::size_t> find_extension(const hello_parts& parts, std::uint16_t type) {
  if (!parts.extensions) return std::nullopt;
  for (std::size_t i = 0; i < parts.extensions->size(); ++i) {
    if ((*parts.extensions)[i].type == type) return i;
  }
  return std::nullopt;
}

}  // namespace tls_lab
