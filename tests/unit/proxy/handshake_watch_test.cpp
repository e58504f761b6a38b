// Unit tests for the handshake watch (handshake_watch.hpp): real OpenSSL 3 clients and
// servers driven in memory through a relay that does what the proxy does with the watch
// (client bytes forwarded only when released, upstream bytes fed before they are passed
// on), HelloRetryRequest forced by a key share the server does not support, hostile
// second hellos (another name, none, ECH, two entries, a non-host_name entry), 0-RTT,
// TLS 1.2, splits at every byte, and hand-built upstream streams.

#include "egress/proxy/handshake_watch.hpp"

#include "tls_lab.hpp"

#include <catch2/catch.hpp>

#include <openssl/ssl.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <functional>
#include <string>
#include <vector>

namespace {

using egress::proxy::client_step;
using egress::proxy::handshake_watch;
namespace watch_reason = egress::proxy::watch_reason;
namespace hello_reason = egress::proxy::hello_reason;
using tls_lab::bytes;

const std::string allowed = "allowed.example.org";
const std::string evil = "evil.example.net";

handshake_watch make_watch(std::size_t max_hello = egress::proxy::client_hello_parser::default_max_bytes,
                           std::optional<std::size_t> max_watch = std::nullopt) {
  return handshake_watch{*egress::common::normalize_host(allowed), false, false, max_hello, max_watch};
}

bytes slice(const bytes& b, std::size_t from, std::size_t to) {
  return bytes(b.begin() + static_cast<std::ptrdiff_t>(from), b.begin() + static_cast<std::ptrdiff_t>(to));
}

bytes concat(std::initializer_list<bytes> parts) {
  bytes out;
  for (const auto& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

/// A relay between an OpenSSL client and server doing what the proxy's relay does with a
/// watch: client bytes go through feed_client and only released bytes reach the server
/// (the rest is held); server bytes are fed to feed_server before they reach the client;
/// once done(), bytes pass untouched; on a refusal, nothing more moves. Without a watch,
/// it forwards blind, as the relay did before.
struct lab_relay {
  lab_relay(tls_lab::endpoint& c, tls_lab::endpoint& s, handshake_watch* w, std::size_t feed_size = 0)
      : client{c}, server{s}, watch{w}, segment{feed_size} {}

  tls_lab::endpoint& client;
  tls_lab::endpoint& server;
  handshake_watch* watch = nullptr;
  /// Feed size for the watch (0: each flight whole).
  std::size_t segment = 0;
  /// Called after the client's flight `index` was taken (e.g. to change its SNI).
  std::function<void(std::size_t index)> after_client_flight;
  /// Rewrites the client's flight `index` before the relay sees it (a hostile client).
  std::function<bytes(const bytes& flight, std::size_t index)> rewrite_client_flight;

  std::string_view refusal;
  std::size_t client_fed = 0;       ///< client bytes given to the watch
  std::size_t client_forwarded = 0;  ///< client bytes the server got while watched
  std::size_t client_flights = 0;
  std::size_t server_flights = 0;
  /// The server flight (1-based) during which done() became true; 0 = never.
  std::size_t done_in_server_flight = 0;
  bool done_before_any_server_byte = false;
  bytes held;
  std::vector<bytes> client_stream_flights;  ///< as the relay saw them (after rewriting)
  std::vector<bytes> server_stream_flights;
  /// Every flight in the order the relay moved them: (from upstream?, bytes).
  std::vector<std::pair<bool, bytes>> sequence;

  bool watching() const { return watch != nullptr && !watch->done(); }

  std::vector<bytes> pieces(const bytes& flight) const {
    if (segment == 0) return {flight};
    std::vector<bytes> out;
    for (std::size_t i = 0; i < flight.size(); i += segment) {
      out.push_back(slice(flight, i, std::min(flight.size(), i + segment)));
    }
    return out;
  }

  void to_server(const bytes& flight) {
    for (const bytes& piece : pieces(flight)) {
      if (!watching()) {
        server.give_input(piece);
        continue;
      }
      const client_step step = watch->feed_client(piece);
      client_fed += piece.size();
      if (!step.refusal.empty()) {
        refusal = step.refusal;
        return;
      }
      held.insert(held.end(), piece.begin(), piece.end());
      REQUIRE(step.forward <= held.size());
      server.give_input(slice(held, 0, step.forward));
      client_forwarded += step.forward;
      held.erase(held.begin(), held.begin() + static_cast<std::ptrdiff_t>(step.forward));
      REQUIRE(held.size() == watch->held());
      if (watch->done()) REQUIRE(held.empty());
    }
  }

  void to_client(const bytes& flight) {
    ++server_flights;
    for (const bytes& piece : pieces(flight)) {
      if (watching()) {
        const auto r = watch->feed_server(piece);
        if (!r.empty()) {
          refusal = r;
          return;
        }
        if (watch->done()) {
          done_in_server_flight = server_flights;
          REQUIRE(held.empty());
        }
      }
      client.give_input(piece);
    }
  }

  /// Runs both handshakes until they finish, fail, stall or the watch refuses.
  void run() {
    if (watch != nullptr && watch->done()) done_before_any_server_byte = true;
    for (int round = 0; round < 20; ++round) {
      const bool client_finished = client.finished() || client.step(true);
      bytes out = client.take_output();
      if (!out.empty()) {
        const std::size_t index = client_flights++;
        if (after_client_flight) after_client_flight(index);
        if (rewrite_client_flight) out = rewrite_client_flight(out, index);
        client_stream_flights.push_back(out);
        sequence.emplace_back(false, out);
        to_server(out);
        if (!refusal.empty()) return;
      }
      const bool server_finished = server.finished() || server.step(true);
      const bytes back = server.take_output();
      if (!back.empty()) {
        server_stream_flights.push_back(back);
        sequence.emplace_back(true, back);
        to_client(back);
        if (!refusal.empty()) return;
      }
      if (client.failed() || server.failed()) return;
      if (client_finished && server_finished && out.empty() && back.empty()) return;
    }
  }
};

/// Client and server set up so that the server answers the first hello with a
/// HelloRetryRequest: the client offers groups X25519 and P-256 but a key share for
/// X25519 only (OpenSSL 3.0 shares its first group), the server supports only P-256.
struct hrr_pair {
  tls_lab::ctx_ptr client_ctx = tls_lab::make_client_ctx({TLS1_2_VERSION, TLS1_3_VERSION, "X25519:P-256", {}, false, 0});
  tls_lab::ctx_ptr server_ctx = tls_lab::make_server_ctx({TLS1_2_VERSION, TLS1_3_VERSION, "P-256", 0});
  tls_lab::endpoint client{client_ctx.get(), false};
  tls_lab::endpoint server{server_ctx.get(), true};

  hrr_pair() { client.set_host_name(allowed); }
};

/// The records of a flight as (type, whole record bytes).
std::vector<std::pair<std::uint8_t, bytes>> records_of(const bytes& flight) {
  std::vector<std::pair<std::uint8_t, bytes>> out;
  std::size_t pos = 0;
  while (pos < flight.size()) {
    REQUIRE(flight.size() - pos >= 5);
    const std::size_t length = (std::size_t{flight[pos + 3]} << 8) | flight[pos + 4];
    REQUIRE(flight.size() - pos - 5 >= length);
    out.emplace_back(flight[pos], slice(flight, pos, pos + 5 + length));
    pos += 5 + length;
  }
  return out;
}

/// Rewrites the ClientHello records of a flight (others kept in place) with `change`.
bytes rewrite_hello_in_flight(const bytes& flight, const std::function<void(tls_lab::hello_parts&)>& change) {
  bytes hello_records;
  bytes before;
  bytes after;
  for (const auto& [type, rec] : records_of(flight)) {
    if (type == 22) {
      hello_records.insert(hello_records.end(), rec.begin(), rec.end());
    } else {
      bytes& side = hello_records.empty() ? before : after;
      side.insert(side.end(), rec.begin(), rec.end());
    }
  }
  auto parts = tls_lab::split_hello(hello_records);
  REQUIRE(parts);
  change(*parts);
  return concat({before, tls_lab::join_hello(*parts), after});
}

/// Sets the server_name extension's data (adding the extension when missing).
void set_server_name_data(tls_lab::hello_parts& p, const bytes& data) {
  const auto i = tls_lab::find_extension(p, tls_lab::ext_server_name);
  REQUIRE(i);
  (*p.extensions)[*i].data = data;
}

tls_lab::name_entry entry(std::uint8_t type, const std::string& name) { return {type, tls_lab::to_bytes(name)}; }

/// A hand-built upstream record.
bytes server_hello_record(bool retry, std::size_t extra_body = 8) {
  const bytes random = retry ? tls_lab::sha256("HelloRetryRequest") : bytes(32, 0x11);
  const bytes cipher_and_compression{0x13, 0x01, 0x00};
  const bytes body = concat({bytes{0x03, 0x03}, random, bytes{0x00}, cipher_and_compression, bytes(extra_body, 0x00)});
  const bytes header{2, 0, static_cast<std::uint8_t>(body.size() >> 8), static_cast<std::uint8_t>(body.size())};
  const bytes msg = concat({header, body});
  return tls_lab::record(22, msg);
}

const bytes ccs = tls_lab::record(20, {0x01});

bytes hello_for(const std::string& sni, const tls_lab::client_options& o = {}) {
  return tls_lab::openssl_client_hello(o, sni);
}

/// Feeds `in` to feed_client in the given pieces; returns the bytes released in total,
/// checking after each feed that they never exceed `limit`.
std::size_t feed_pieces(handshake_watch& w, const bytes& in, const std::vector<std::size_t>& cuts,
                        std::size_t limit = SIZE_MAX) {
  std::size_t released = 0;
  std::size_t from = 0;
  std::vector<std::size_t> points = cuts;
  points.push_back(in.size());
  for (const std::size_t to : points) {
    const client_step s = w.feed_client(std::span{in}.subspan(from, to - from));
    released += s.forward;
    if (released > limit) {
      INFO("released " << released << " > " << limit << " after feeding " << to << " bytes");
      REQUIRE(released <= limit);
    }
    from = to;
  }
  return released;
}

}  // namespace

// =======================================================================================
// Real handshakes through the watch

TEST_CASE("HelloRetryRequest forced by an unsupported key share: the handshake completes through the watch, "
          "which ends after the real ServerHello having forwarded every byte fed",
          "[unit][handshake_watch]") {
  const std::size_t segment = GENERATE(0u, 1u, 7u, 100u);
  INFO("feed size " << segment << " (0 = whole flights)");
  hrr_pair p;
  handshake_watch watch = make_watch();
  lab_relay relay{p.client, p.server, &watch, segment};
  relay.run();

  CHECK(relay.refusal.empty());
  CHECK(p.client.finished());
  CHECK(p.server.finished());
  CHECK(SSL_version(p.server.ssl()) == TLS1_3_VERSION);
  // Two ClientHellos, both with the allowed name: the servername callback ran twice.
  CHECK(tls_lab::names_seen(p.server.ssl()) == std::vector<std::optional<std::string>>{allowed, allowed});
  CHECK(watch.retry_requested());
  CHECK(watch.hellos_checked() == 2);
  CHECK(watch.done());
  // Server flight 1 is the HRR (+ CCS): not the end. Flight 2 has the real ServerHello.
  CHECK(relay.done_in_server_flight == 2);
  CHECK(relay.client_forwarded == relay.client_fed);
  CHECK(watch.held() == 0);
  // The watch read the whole client side of the handshake up to the real ServerHello:
  // CH1, then CCS + CH2.
  REQUIRE(relay.client_stream_flights.size() >= 2);
  CHECK(relay.client_fed == relay.client_stream_flights[0].size() + relay.client_stream_flights[1].size());
}

TEST_CASE("TLS 1.3 without HelloRetryRequest and TLS 1.2: the watch ends at the ServerHello, one hello checked",
          "[unit][handshake_watch]") {
  const int max_version = GENERATE(TLS1_2_VERSION, TLS1_3_VERSION);
  INFO("client max version " << std::hex << max_version);
  const auto client_ctx = tls_lab::make_client_ctx({TLS1_2_VERSION, max_version, "X25519:P-256", {"h2"}, false, 0});
  const auto server_ctx = tls_lab::make_server_ctx();
  tls_lab::endpoint client{client_ctx.get(), false};
  tls_lab::endpoint server{server_ctx.get(), true};
  client.set_host_name(allowed);
  handshake_watch watch = make_watch();
  lab_relay relay{client, server, &watch, 0};
  relay.run();

  CHECK(relay.refusal.empty());
  CHECK(client.finished());
  CHECK(server.finished());
  CHECK(SSL_version(server.ssl()) == max_version);
  CHECK_FALSE(watch.retry_requested());
  CHECK(watch.hellos_checked() == 1);
  CHECK(relay.done_in_server_flight == 1);
  CHECK(relay.client_forwarded == relay.client_fed);
  CHECK(relay.client_fed == relay.client_stream_flights.at(0).size());
}

TEST_CASE("the bypass: after a HelloRetryRequest a second hello with another name reaches the server blind and "
          "OpenSSL takes the new name, through the watch it is refused before one byte of it is forwarded",
          "[unit][handshake_watch]") {
  struct variant {
    std::string label;
    std::optional<std::string> second_name;
    std::string_view reason;
  };
  const auto v = GENERATE(values<variant>({
      {"another name", evil, "sni_mismatch"},
      {"no name", std::nullopt, "sni_missing"},
  }));
  INFO(v.label);

  SECTION("blind relay (the relay before the watch): OpenSSL's servername callback sees the new name") {
    hrr_pair p;
    lab_relay relay{p.client, p.server, nullptr};
    relay.after_client_flight = [&](std::size_t i) {
      if (i == 0) p.client.set_host_name(v.second_name);
    };
    relay.run();
    CHECK(p.client.finished());
    CHECK(p.server.finished());  // the handshake completes under the new name
    CHECK(tls_lab::names_seen(p.server.ssl()) == std::vector<std::optional<std::string>>{allowed, v.second_name});
    const char* final_name = SSL_get_servername(p.server.ssl(), TLSEXT_NAMETYPE_host_name);
    CHECK((final_name ? std::optional<std::string>{final_name} : std::nullopt) == v.second_name);
  }
  SECTION("through the watch: refused, the server never gets the second hello") {
    hrr_pair p;
    handshake_watch watch = make_watch();
    lab_relay relay{p.client, p.server, &watch};
    relay.after_client_flight = [&](std::size_t i) {
      if (i == 0) p.client.set_host_name(v.second_name);
    };
    relay.run();
    CHECK(relay.refusal == v.reason);
    CHECK(watch.refusal() == v.reason);
    CHECK_FALSE(watch.done());
    CHECK(watch.hellos_checked() == 1);
    REQUIRE(relay.client_stream_flights.size() == 2);
    CHECK(relay.client_forwarded == relay.client_stream_flights[0].size());  // the first hello only
    CHECK(tls_lab::names_seen(p.server.ssl()) == std::vector<std::optional<std::string>>{allowed});
    CHECK_FALSE(p.server.finished());
  }
}

TEST_CASE("hand-built hostile second hellos after a real HelloRetryRequest are refused before their bytes are "
          "forwarded",
          "[unit][handshake_watch]") {
  struct variant {
    std::string label;
    std::function<void(tls_lab::hello_parts&)> change;
    std::string_view reason;
  };
  const auto v = GENERATE(values<variant>({
      {"ECH extension added",
       [](tls_lab::hello_parts& p) { p.extensions->push_back({tls_lab::ext_encrypted_client_hello, bytes(64, 7)}); },
       "ech_present"},
      {"two server_name entries (allowed first)",
       [](tls_lab::hello_parts& p) {
         set_server_name_data(p, tls_lab::server_name_data({entry(0, allowed), entry(0, evil)}));
       },
       hello_reason::sni_list_invalid},
      {"two server_name entries (evil first)",
       [](tls_lab::hello_parts& p) {
         set_server_name_data(p, tls_lab::server_name_data({entry(0, evil), entry(0, allowed)}));
       },
       hello_reason::sni_list_invalid},
      {"a non-host_name entry before the host_name",
       [](tls_lab::hello_parts& p) {
         set_server_name_data(p, tls_lab::server_name_data({entry(1, evil), entry(0, allowed)}));
       },
       hello_reason::sni_list_invalid},
      {"only a non-host_name entry",
       [](tls_lab::hello_parts& p) { set_server_name_data(p, tls_lab::server_name_data({entry(5, allowed)})); },
       hello_reason::sni_list_invalid},
      {"a second server_name extension",
       [](tls_lab::hello_parts& p) {
         p.extensions->push_back({tls_lab::ext_server_name, tls_lab::server_name_data({entry(0, evil)})});
       },
       hello_reason::malformed},
      {"the name changed in the bytes, same length",
       [](tls_lab::hello_parts& p) {
         set_server_name_data(p, tls_lab::server_name_data({entry(0, "allowed.example.net")}));
       },
       "sni_mismatch"},
      {"the name with a trailing junk label", [](tls_lab::hello_parts& p) {
         set_server_name_data(p, tls_lab::server_name_data({entry(0, allowed + ".evil.net")}));
       },
       "sni_mismatch"},
  }));
  INFO(v.label);
  const std::size_t segment = GENERATE(0u, 1u);
  INFO("feed size " << segment);

  hrr_pair p;
  handshake_watch watch = make_watch();
  lab_relay relay{p.client, p.server, &watch, segment};
  relay.rewrite_client_flight = [&](const bytes& flight, std::size_t i) {
    return i == 1 ? rewrite_hello_in_flight(flight, v.change) : flight;
  };
  relay.run();
  CHECK(relay.refusal == v.reason);
  REQUIRE(relay.client_stream_flights.size() == 2);
  // At most the first hello and the CCS record before the second hello got through.
  CHECK(relay.client_forwarded <= relay.client_stream_flights[0].size() + ccs.size());
  CHECK(tls_lab::names_seen(p.server.ssl()) == std::vector<std::optional<std::string>>{allowed});
}

TEST_CASE("a second hello differing only in letter case or a trailing dot passes (same normalised name)",
          "[unit][handshake_watch]") {
  for (const std::string name : {"ALLOWED.example.ORG", "allowed.example.org."}) {
    INFO(name);
    handshake_watch watch = make_watch();
    const bytes first = hello_for(allowed);
    const bytes second = hello_for(name);
    const bytes in = concat({first, ccs, second});
    CHECK(feed_pieces(watch, in, {}) == in.size());
    CHECK(watch.hellos_checked() == 2);
    CHECK(watch.refusal().empty());
    CHECK(watch.first_server_name() == allowed);
  }
  handshake_watch mixed = make_watch();
  CHECK_FALSE(mixed.first_server_name());
  CHECK(mixed.feed_client(hello_for("ALLOWED.example.ORG.")).refusal.empty());
  CHECK(mixed.first_server_name() == "ALLOWED.example.ORG.");  // as sent, for the decision line
}

TEST_CASE("0-RTT: a resumed TLS 1.3 client's early data passes the watch unparsed and counted, the watch ends "
          "after the ServerHello",
          "[unit][handshake_watch]") {
  const auto client_ctx = tls_lab::make_client_ctx();
  const auto server_ctx = tls_lab::make_server_ctx({TLS1_2_VERSION, TLS1_3_VERSION, "X25519:P-256", 16384});

  // A first, direct handshake for a session ticket that allows early data.
  SSL_SESSION* session = nullptr;
  {
    tls_lab::endpoint client{client_ctx.get(), false};
    tls_lab::endpoint server{server_ctx.get(), true};
    client.set_host_name(allowed);
    lab_relay direct{client, server, nullptr, 0};
    direct.run();
    REQUIRE(client.finished());
    client.give_input(server.take_output());
    char buf[16];
    REQUIRE(SSL_read(client.ssl(), buf, sizeof buf) <= 0);  // processes the NewSessionTicket
    session = SSL_get1_session(client.ssl());
    REQUIRE(session != nullptr);
    REQUIRE(SSL_SESSION_get_max_early_data(session) == 16384);
    // Freed without a shutdown, an SSL removes its session from the cache (client: not
    // resumable; server: no anti-replay entry, so early data would be rejected).
    SSL_set_shutdown(client.ssl(), SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
    SSL_set_shutdown(server.ssl(), SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
  }

  tls_lab::endpoint client{client_ctx.get(), false};
  tls_lab::endpoint server{server_ctx.get(), true};
  client.set_host_name(allowed);
  REQUIRE(SSL_set_session(client.ssl(), session) == 1);
  SSL_SESSION_free(session);
  const std::string early(3000, 'e');
  std::size_t written = 0;
  const int wrote = SSL_write_early_data(client.ssl(), early.data(), early.size(), &written);
  REQUIRE(wrote == 1);
  REQUIRE(written == early.size());
  const bytes flight = client.take_output();
  const auto records = records_of(flight);
  REQUIRE(records.front().first == 22);
  REQUIRE(records.back().first == 23);  // early data after the hello (and a CCS)

  handshake_watch watch = make_watch();
  const client_step step = watch.feed_client(flight);
  REQUIRE(step.refusal.empty());
  CHECK(step.forward == flight.size());
  CHECK(watch.early_data_bytes() > early.size());
  CHECK(watch.hellos_checked() == 1);
  CHECK_FALSE(watch.done());
  server.give_input(flight);

  std::string received;
  for (int i = 0; i < 10; ++i) {
    char buf[4096];
    std::size_t n = 0;
    const int r = SSL_read_early_data(server.ssl(), buf, sizeof buf, &n);
    if (r == SSL_READ_EARLY_DATA_SUCCESS) {
      received.append(buf, n);
      continue;
    }
    break;  // waiting for EndOfEarlyData, or finished
  }
  CHECK(SSL_get_early_data_status(server.ssl()) == SSL_EARLY_DATA_ACCEPTED);
  CHECK(received == early);
  const bytes back = server.take_output();
  REQUIRE(!back.empty());
  CHECK(watch.feed_server(back).empty());
  CHECK(watch.done());  // the ServerHello was in that flight
  client.give_input(back);
  lab_relay rest{client, server, nullptr, 0};
  rest.run();
  CHECK(client.finished());
  CHECK(server.finished());
}

// =======================================================================================
// Splits

TEST_CASE("a real HRR handshake's streams split at every byte: same releases, never a byte of a hello before "
          "it is checked",
          "[unit][handshake_watch]") {
  hrr_pair p;
  handshake_watch recorder = make_watch();
  lab_relay relay{p.client, p.server, &recorder, 0};
  relay.run();
  REQUIRE(relay.refusal.empty());
  REQUIRE(relay.client_stream_flights.size() >= 2);
  const bytes ch1 = relay.client_stream_flights[0];
  const bytes flight2 = relay.client_stream_flights[1];  // CCS + CH2
  const bytes client_stream = concat({ch1, flight2});
  const bytes server_stream = concat({relay.server_stream_flights.at(0), relay.server_stream_flights.at(1)});
  const std::size_t ch2_start = ch1.size() + ccs.size();
  REQUIRE(slice(flight2, 0, ccs.size()) == ccs);

  SECTION("client bytes split in two at every point, then the upstream's") {
    for (std::size_t cut = 0; cut <= client_stream.size(); ++cut) {
      handshake_watch w = make_watch();
      // Nothing of CH1 before its last byte, nothing of CH2 before its last byte.
      const std::size_t limit = cut < ch1.size() ? 0 : cut < client_stream.size() ? ch2_start : SIZE_MAX;
      const client_step first = w.feed_client(std::span{client_stream}.first(cut));
      if (first.forward > limit) {
        INFO("cut " << cut);
        REQUIRE(first.forward <= limit);
      }
      const client_step second = w.feed_client(std::span{client_stream}.subspan(cut));
      if (first.forward + second.forward != client_stream.size() || !w.refusal().empty()) {
        INFO("cut " << cut);
        REQUIRE(first.forward + second.forward == client_stream.size());
      }
      REQUIRE(w.feed_server(server_stream).empty());
      REQUIRE(w.done());
    }
  }
  SECTION("upstream bytes split in two at every point: done exactly once the real ServerHello's random is in") {
    const std::size_t hrr_flight = relay.server_stream_flights.at(0).size();
    // The ServerHello record follows the HRR flight; its random ends 5 + 4 + 34 bytes in.
    const std::size_t decisive = hrr_flight + 5 + 4 + 34;
    for (std::size_t cut = 0; cut <= server_stream.size(); ++cut) {
      handshake_watch w = make_watch();
      REQUIRE(w.feed_client(client_stream).forward == client_stream.size());
      REQUIRE(w.feed_server(std::span{server_stream}.first(cut)).empty());
      if (w.done() != (cut >= decisive)) {
        INFO("cut " << cut << " decisive " << decisive);
        REQUIRE(w.done() == (cut >= decisive));
      }
      REQUIRE(w.feed_server(std::span{server_stream}.subspan(cut)).empty());
      REQUIRE(w.done());
      CHECK(w.server_bytes() == decisive);
    }
  }
  SECTION("one byte at a time, both sides") {
    handshake_watch w = make_watch();
    std::vector<std::size_t> cuts;
    for (std::size_t i = 1; i < client_stream.size(); ++i) cuts.push_back(i);
    CHECK(feed_pieces(w, client_stream, cuts) == client_stream.size());
    for (std::size_t i = 0; i < server_stream.size(); ++i) REQUIRE(w.feed_server(std::span{server_stream}.subspan(i, 1)).empty());
    CHECK(w.done());
    CHECK(w.hellos_checked() == 2);
  }
  SECTION("a hostile CH2 (another name) split at every point: refused, nothing of it released") {
    const bytes hostile = concat({ch1, rewrite_hello_in_flight(flight2, [](tls_lab::hello_parts& parts) {
                                    set_server_name_data(parts, tls_lab::server_name_data({entry(0, evil)}));
                                  })});
    for (std::size_t cut = 0; cut <= hostile.size(); ++cut) {
      handshake_watch w = make_watch();
      REQUIRE(w.feed_server(relay.server_stream_flights.at(0)).empty());  // the HRR
      const std::size_t released = feed_pieces(w, hostile, {cut}, ch2_start);
      CHECK(released <= ch2_start);
      if (w.refusal() != "sni_mismatch") {
        INFO("cut " << cut);
        REQUIRE(w.refusal() == "sni_mismatch");
      }
    }
  }
}

TEST_CASE("OpenSSL first hellos split at every point, in one-byte records: released once complete, never "
          "before",
          "[unit][handshake_watch]") {
  const auto options = GENERATE(values<tls_lab::client_options>({
      {TLS1_2_VERSION, TLS1_2_VERSION, "X25519:P-256", {}, false, 0},
      {TLS1_2_VERSION, TLS1_3_VERSION, "X25519:P-256", {"h2", "http/1.1"}, true, 0},
      {TLS1_2_VERSION, TLS1_3_VERSION, "P-256:X25519", {}, false, 2000},
  }));
  const bytes hello = hello_for(allowed, options);
  for (std::size_t cut = 0; cut <= hello.size(); ++cut) {
    handshake_watch w = make_watch();
    const std::size_t a = w.feed_client(std::span{hello}.first(cut)).forward;
    REQUIRE(a == (cut == hello.size() ? hello.size() : 0));
    const std::size_t b = w.feed_client(std::span{hello}.subspan(cut)).forward;
    REQUIRE(a + b == hello.size());
  }
  const auto parts = tls_lab::split_hello(hello);
  REQUIRE(parts);
  const bytes message = tls_lab::join_message(*parts);
  std::vector<std::size_t> cuts;
  for (std::size_t i = 1; i < message.size(); ++i) cuts.push_back(i);
  const bytes tiny = tls_lab::frame(message, cuts, 0x0303);
  handshake_watch w = make_watch(tiny.size());
  CHECK(w.feed_client(std::span{tiny}.first(tiny.size() - 1)).forward == 0);
  CHECK(w.feed_client(std::span{tiny}.last(1)).forward == tiny.size());
  handshake_watch capped = make_watch(tiny.size() - 1);
  CHECK(feed_pieces(capped, tiny, {}) == 0);
  CHECK(capped.refusal() == hello_reason::too_large);
}

// =======================================================================================
// Hand-built client streams

TEST_CASE("client streams: what passes, what is held, what is refused", "[unit][handshake_watch]") {
  const bytes ch1 = hello_for(allowed);
  const auto message_of = [](const bytes& hello) {
    auto parts = tls_lab::split_hello(hello);
    REQUIRE(parts);
    return tls_lab::join_message(*parts);
  };

  SECTION("a second hello in the same record as the first: checked like any other") {
    const bytes same = tls_lab::frame(concat({message_of(ch1), message_of(hello_for(allowed))}), {}, 0x0301);
    handshake_watch ok = make_watch();
    CHECK(feed_pieces(ok, same, {}) == same.size());
    CHECK(ok.hellos_checked() == 2);
    const bytes other = tls_lab::frame(concat({message_of(ch1), message_of(hello_for(evil))}), {}, 0x0301);
    handshake_watch bad = make_watch();
    CHECK(feed_pieces(bad, other, {}) == 0);
    CHECK(bad.refusal() == "sni_mismatch");
    // Split: the first hello's bytes go as soon as it is complete, the rest is held.
    handshake_watch split = make_watch();
    const std::size_t first_end = 5 + message_of(ch1).size();
    CHECK(feed_pieces(split, other, {first_end + 10}, first_end) == first_end);
    CHECK(split.refusal() == "sni_mismatch");
  }
  SECTION("junk after the first hello in its record: not a ClientHello, refused") {
    const bytes junk = tls_lab::frame(concat({message_of(ch1), bytes{0xff, 0x00, 0x00, 0x00}}), {}, 0x0301);
    handshake_watch w = make_watch();
    CHECK(feed_pieces(w, junk, {}) == 0);
    CHECK(w.refusal() == hello_reason::malformed);
  }
  SECTION("other handshake messages before the ServerHello (ClientKeyExchange, Finished): refused") {
    for (const std::uint8_t type : {std::uint8_t{16}, std::uint8_t{20}, std::uint8_t{11}, std::uint8_t{2}}) {
      INFO("msg_type " << int{type});
      handshake_watch w = make_watch();
      const bytes in = concat({ch1, tls_lab::record(22, {type, 0, 0, 2, 0xaa, 0xbb})});
      CHECK(feed_pieces(w, in, {ch1.size()}) == ch1.size());
      CHECK(w.refusal() == hello_reason::malformed);
    }
  }
  SECTION("CCS, alert, application_data records pass as they come; record types outside 20..23 are refused") {
    handshake_watch w = make_watch();
    const bytes app = tls_lab::record(23, bytes(300, 0x17));
    CHECK(w.feed_client(ch1).forward == ch1.size());
    CHECK(w.feed_client(std::span{ccs}.first(3)).forward == 0);  // a partial header is held
    CHECK(w.feed_client(std::span{ccs}.subspan(3)).forward == 3 + 3);
    CHECK(w.feed_client(std::span{app}.first(100)).forward == 100);
    CHECK(w.feed_client(std::span{app}.subspan(100)).forward == app.size() - 100);
    CHECK(w.feed_client(tls_lab::record(21, {1, 0})).forward == 7);
    CHECK(w.early_data_bytes() == app.size());
    const client_step heartbeat = w.feed_client(tls_lab::record(24, {1, 0, 0}));
    CHECK(heartbeat.forward == 0);
    CHECK(heartbeat.refusal == hello_reason::malformed);
  }
  SECTION("record framing of later records: version, length 0, oversize") {
    const std::vector<bytes> bad{
        {22, 0x03, 0x00, 0x00, 0x05},        // SSL 3.0 record version
        {22, 0x02, 0x03, 0x00, 0x05},        // major 2
        {22, 0x03, 0x05, 0x00, 0x05},        // minor 5
        {20, 0x03, 0x03, 0x00, 0x00},        // length 0
        {22, 0x03, 0x03, 0x40, 0x01},        // 2^14 + 1 plaintext
        {23, 0x03, 0x03, 0x41, 0x01},        // 2^14 + 257 ciphertext
    };
    for (const bytes& header : bad) {
      INFO(tls_lab::hex(header));
      handshake_watch w = make_watch();
      CHECK(feed_pieces(w, concat({ch1, header}), {ch1.size()}) == ch1.size());
      CHECK(w.refusal() == hello_reason::malformed);
    }
    handshake_watch big = make_watch();
    CHECK(feed_pieces(big, concat({ch1, {23, 0x03, 0x03, 0x41, 0x00}}), {ch1.size()}) == ch1.size() + 5);  // 2^14 + 256: fine
    CHECK(big.refusal().empty());
  }
  SECTION("a record between two records of one hello is refused (RFC 8446 §5.1)") {
    const bytes m = message_of(hello_for(allowed));
    const bytes first_half = tls_lab::frame(slice(m, 0, 40), {}, 0x0303);
    const bytes second_half = tls_lab::frame(slice(m, 40, m.size()), {}, 0x0303);
    handshake_watch w = make_watch();
    CHECK(feed_pieces(w, concat({ch1, first_half, ccs, second_half}), {ch1.size()}) == ch1.size());
    CHECK(w.refusal() == hello_reason::malformed);
  }
  SECTION("the first record must be a handshake record: not_tls") {
    handshake_watch w = make_watch();
    CHECK(w.feed_client(tls_lab::to_bytes("GET / HTTP/1.1\r\n")).refusal == hello_reason::not_tls);
  }
  SECTION("a later hello over max_hello_bytes: client_hello_too_large as soon as its length is read") {
    handshake_watch w = make_watch(1000);
    const bytes big = hello_for(allowed, {TLS1_2_VERSION, TLS1_3_VERSION, "X25519", {}, false, 2000});
    CHECK(w.feed_client(ch1).forward == ch1.size());
    const client_step s = w.feed_client(std::span{big}.first(9));
    CHECK(s.refusal == hello_reason::too_large);
    CHECK(w.held() == 9);
  }
  SECTION("a later hello in one-byte records never holds more than max_hello_bytes") {
    const auto parts = tls_lab::split_hello(hello_for(allowed));
    REQUIRE(parts);
    const bytes message = tls_lab::join_message(*parts);
    std::vector<std::size_t> cuts;
    for (std::size_t i = 1; i < message.size(); ++i) cuts.push_back(i);
    const bytes tiny = tls_lab::frame(message, cuts, 0x0303);
    REQUIRE(tiny.size() > 3 * ch1.size());
    for (const std::size_t cap : {ch1.size(), ch1.size() + 101, 3 * ch1.size()}) {
      INFO("max_hello_bytes " << cap);
      handshake_watch w = make_watch(cap);
      REQUIRE(w.feed_client(ch1).forward == ch1.size());
      client_step s;
      std::size_t max_held = 0;
      for (std::size_t i = 0; i < tiny.size() && s.refusal.empty(); ++i) {
        s = w.feed_client(std::span{tiny}.subspan(i, 1));
        if (s.refusal.empty()) max_held = std::max(max_held, w.held());
      }
      CHECK(s.refusal == hello_reason::too_large);
      CHECK(max_held <= cap);
    }
    // Caps below the first length check (4 one-byte records = 24 bytes): the byte cap holds.
    for (const std::size_t cap : {std::size_t{6}, std::size_t{12}, std::size_t{23}}) {
      INFO("max_hello_bytes " << cap);
      handshake_watch w = make_watch(cap);
      client_step s;
      std::size_t fed = 0;
      for (; fed < tiny.size() && s.refusal.empty(); ++fed) s = w.feed_client(std::span{tiny}.subspan(fed, 1));
      CHECK(s.refusal == hello_reason::too_large);
      CHECK(fed == cap + 1);  // refused on the first byte past the cap
    }
  }
  SECTION("a hello in progress is held, bounded by max_hello_bytes") {
    handshake_watch w = make_watch();
    const bytes big = hello_for(allowed, {TLS1_2_VERSION, TLS1_3_VERSION, "X25519", {}, false, 6000});
    CHECK(w.feed_client(ch1).forward == ch1.size());
    CHECK(w.feed_client(std::span{big}.first(big.size() - 1)).forward == 0);
    CHECK(w.held() == big.size() - 1);
    CHECK(w.held() <= egress::proxy::client_hello_parser::default_max_bytes);
    CHECK(w.feed_client(std::span{big}.last(1)).forward == big.size());
    CHECK(w.held() == 0);
  }
  SECTION("after a refusal nothing more is released, and the reason stays") {
    handshake_watch w = make_watch();
    CHECK(w.feed_client(hello_for(evil)).refusal == "sni_mismatch");
    const client_step again = w.feed_client(ch1);
    CHECK(again.forward == 0);
    CHECK(again.refusal == "sni_mismatch");
    CHECK(w.feed_server(server_hello_record(false)) == "sni_mismatch");
    CHECK_FALSE(w.done());
  }
  SECTION("the first hello is judged too: ECH, no SNI, a name list with two entries") {
    handshake_watch no_sni = make_watch();
    CHECK(no_sni.feed_client(tls_lab::openssl_client_hello({}, std::nullopt)).refusal == "sni_missing");
    handshake_watch ech = make_watch();
    CHECK(ech.feed_client(rewrite_hello_in_flight(ch1, [](tls_lab::hello_parts& p) {
                            p.extensions->push_back({tls_lab::ext_encrypted_client_hello, bytes(8, 1)});
                          })).refusal == "ech_present");
    handshake_watch two = make_watch();
    CHECK(two.feed_client(rewrite_hello_in_flight(ch1, [](tls_lab::hello_parts& p) {
                            set_server_name_data(p, tls_lab::server_name_data({entry(0, allowed), entry(0, allowed)}));
                          })).refusal == hello_reason::sni_list_invalid);
  }
  SECTION("with allow_missing_sni, a later hello must still agree with the first") {
    handshake_watch w{*egress::common::normalize_host(allowed), true, false};
    CHECK(w.feed_client(tls_lab::openssl_client_hello({}, std::nullopt)).refusal.empty());
    CHECK(w.feed_client(ch1).refusal == "sni_mismatch");  // a name where the first had none
  }
  SECTION("with allow_ech, a later hello may not add ECH the first did not have") {
    handshake_watch w{*egress::common::normalize_host(allowed), false, true};
    CHECK(w.feed_client(ch1).refusal.empty());
    CHECK(w.feed_client(rewrite_hello_in_flight(ch1, [](tls_lab::hello_parts& p) {
                          p.extensions->push_back({tls_lab::ext_encrypted_client_hello, bytes(8, 1)});
                        })).refusal == "ech_present");
  }
  SECTION("0-RTT beyond max_watch_bytes: handshake_too_long, failing closed") {
    handshake_watch w = make_watch(egress::proxy::client_hello_parser::default_max_bytes, 4096);
    CHECK(w.feed_client(ch1).forward == ch1.size());
    std::size_t released = ch1.size();
    client_step s;
    for (int i = 0; i < 10 && s.refusal.empty(); ++i) {
      s = w.feed_client(tls_lab::record(23, bytes(1000, 0x17)));
      released += s.forward;
    }
    CHECK(s.refusal == watch_reason::too_long);
    CHECK(released <= 4096);
  }
  SECTION("after done(), client bytes are released unparsed, at once") {
    handshake_watch w = make_watch();
    CHECK(w.feed_client(ch1).forward == ch1.size());
    CHECK(w.feed_server(server_hello_record(false)).empty());
    REQUIRE(w.done());
    const bytes junk = tls_lab::to_bytes("anything, even \x16\x03\x01 garbage");
    CHECK(w.feed_client(junk).forward == junk.size());
    CHECK(w.client_bytes() == ch1.size() + junk.size());
  }
  SECTION("a hello in progress when the ServerHello arrives is finished and checked before done()") {
    handshake_watch w = make_watch();
    const bytes second = hello_for(evil);
    CHECK(w.feed_client(ch1).forward == ch1.size());
    CHECK(w.feed_client(std::span{second}.first(20)).forward == 0);
    CHECK(w.feed_server(server_hello_record(false)).empty());
    CHECK(w.server_hello_seen());
    CHECK_FALSE(w.done());
    CHECK(w.feed_client(std::span{second}.subspan(20)).refusal == "sni_mismatch");
  }
  SECTION("a partial record header when the ServerHello arrives: done once it shows a CCS") {
    handshake_watch w = make_watch();
    CHECK(w.feed_client(concat({ch1, slice(ccs, 0, 2)})).forward == ch1.size());
    CHECK(w.feed_server(server_hello_record(false)).empty());
    CHECK_FALSE(w.done());
    CHECK(w.feed_client(slice(ccs, 2, ccs.size())).forward == ccs.size());
    CHECK(w.done());
  }
}

// =======================================================================================
// Hand-built upstream streams

TEST_CASE("upstream streams: HRR vs ServerHello, CCS does not end the check, non-TLS and broken upstreams",
          "[unit][handshake_watch]") {
  const bytes ch1 = hello_for(allowed);
  const auto watching = [&] {
    handshake_watch w = make_watch();
    REQUIRE(w.feed_client(ch1).forward == ch1.size());
    return w;
  };

  SECTION("the HRR random is SHA-256(\"HelloRetryRequest\") (RFC 8446 §4.1.3)") {
    handshake_watch w = watching();
    CHECK(w.feed_server(server_hello_record(true)).empty());
    CHECK(w.retry_requested());
    CHECK_FALSE(w.server_hello_seen());
    CHECK_FALSE(w.done());
  }
  SECTION("HRR then the middlebox-compat CCS: still watching; the next ServerHello ends it") {
    handshake_watch w = watching();
    CHECK(w.feed_server(concat({server_hello_record(true), ccs})).empty());
    CHECK_FALSE(w.done());
    CHECK(w.feed_client(concat({ccs, hello_for(allowed)})).refusal.empty());
    CHECK_FALSE(w.done());
    CHECK(w.feed_server(concat({server_hello_record(false), tls_lab::record(23, bytes(50, 1))})).empty());
    CHECK(w.done());
    CHECK(w.hellos_checked() == 2);
  }
  SECTION("a ServerHello split over records, with a HelloRequest before it (TLS 1.2): done at its random") {
    handshake_watch w = watching();
    const bytes sh = server_hello_record(false);
    const bytes message = concat({{0, 0, 0, 0}, slice(sh, 5, sh.size())});
    CHECK(w.feed_server(tls_lab::frame(message, {3, 9, 20}, 0x0303)).empty());
    CHECK(w.done());
  }
  SECTION("an alert first is TLS (not done; the server is closing)") {
    handshake_watch w = watching();
    CHECK(w.feed_server(tls_lab::record(21, {2, 40}, 0x0300)).empty());
    CHECK_FALSE(w.done());
  }
  SECTION("not TLS: upstream_not_tls on the first byte that shows it") {
    const std::vector<bytes> streams{tls_lab::to_bytes("HTTP/1.1 400 Bad Request\r\n\r\n"),
                                     tls_lab::to_bytes("SSH-2.0-OpenSSH_9.2\r\n"),
                                     {0x17, 0x03, 0x03, 0x00, 0x10},  // application_data first
                                     {0x14, 0x03, 0x03, 0x00, 0x01},  // CCS first
                                     {0x16, 0x04, 0x03, 0x00, 0x10},  // major 4
                                     {0x16, 0x03, 0x05, 0x00, 0x10}};  // minor 5
    for (const bytes& in : streams) {
      INFO(tls_lab::hex(in));
      handshake_watch w = watching();
      CHECK(w.feed_server(in) == watch_reason::upstream_not_tls);
      CHECK(w.feed_client(ccs).refusal == watch_reason::upstream_not_tls);
    }
  }
  SECTION("broken TLS before the ServerHello: upstream_handshake_malformed") {
    const bytes cert_message = tls_lab::record(22, {11, 0, 0, 3, 0, 0, 0});
    bytes short_sh = server_hello_record(false, 0);
    short_sh[8] = static_cast<std::uint8_t>(short_sh[8] - 1);  // body length 37
    short_sh[4] = static_cast<std::uint8_t>(short_sh[4] - 1);
    short_sh.pop_back();
    const bytes sh = server_hello_record(false);
    const std::vector<std::pair<std::string, bytes>> cases{
        {"second HRR", concat({server_hello_record(true), ccs, server_hello_record(true)})},
        {"a Certificate before any ServerHello", cert_message},
        {"application_data before the ServerHello", concat({server_hello_record(true), tls_lab::record(23, {1, 2, 3})})},
        {"a ServerHello body under 38 bytes", short_sh},
        {"a record of length 0", {22, 3, 3, 0, 0}},
        {"a CCS inside a ServerHello split over records",
         concat({tls_lab::frame(slice(sh, 5, 20), {}, 0x0303), ccs, tls_lab::frame(slice(sh, 20, sh.size()), {}, 0x0303)})},
        {"a record type 24", concat({server_hello_record(true), tls_lab::record(24, {1})})},
    };
    for (const auto& [label, in] : cases) {
      INFO(label);
      handshake_watch w = watching();
      CHECK(w.feed_server(in) == watch_reason::upstream_malformed);
      CHECK_FALSE(w.done());
    }
  }
  SECTION("an upstream that never sends a ServerHello: handshake_too_long once max_watch_bytes is read") {
    handshake_watch w = make_watch(egress::proxy::client_hello_parser::default_max_bytes, 2048);
    REQUIRE(w.feed_client(ch1).forward == ch1.size());
    std::string_view r = w.feed_server(server_hello_record(true));
    for (int i = 0; i < 1000 && r.empty(); ++i) r = w.feed_server(ccs);
    CHECK(r == watch_reason::too_long);
    CHECK(w.server_bytes() == 2048);
  }
  SECTION("a ServerHello before any client byte does not end a check that judged no hello yet") {
    handshake_watch bad = make_watch();
    CHECK(bad.feed_server(server_hello_record(false)).empty());
    CHECK(bad.server_hello_seen());
    CHECK_FALSE(bad.done());
    const client_step s = bad.feed_client(hello_for(evil));
    CHECK(s.forward == 0);
    CHECK(s.refusal == "sni_mismatch");
    handshake_watch good = make_watch();
    CHECK(good.feed_server(server_hello_record(false)).empty());
    CHECK(good.feed_client(ch1).forward == ch1.size());
    CHECK(good.done());
  }
  SECTION("nothing after the real ServerHello is looked at") {
    handshake_watch w = watching();
    CHECK(w.feed_server(concat({server_hello_record(false), tls_lab::to_bytes("not TLS at all")})).empty());
    CHECK(w.done());
    CHECK(w.feed_server(tls_lab::to_bytes("more garbage")).empty());
  }
}

TEST_CASE("watch reason words are stable snake_case names", "[unit][handshake_watch]") {
  CHECK(watch_reason::upstream_not_tls == "upstream_not_tls");
  CHECK(watch_reason::upstream_malformed == "upstream_handshake_malformed");
  CHECK(watch_reason::too_long == "handshake_too_long");
}

// =======================================================================================
// Seed corpus for tests/fuzz/handshake_watch_fuzz.cpp (its input format: a flags byte,
// then chunks of direction byte, 2-byte length, bytes)

namespace {

struct watch_seed {
  std::string file;
  std::string_view refusal;
  bool done = false;
  std::size_t hellos = 0;
};

const std::vector<watch_seed>& watch_seeds() {
  static const std::vector<watch_seed> all{
      {"hrr.bin", "", true, 2},
      {"hrr_evil_second_hello.bin", "sni_mismatch", false, 1},
      {"tls13.bin", "", true, 1},
      {"tls12.bin", "", true, 1},
      {"upstream_not_tls.bin", watch_reason::upstream_not_tls, false, 1},
  };
  return all;
}

bytes encode_seed(const std::vector<std::pair<bool, bytes>>& sequence) {
  bytes out{0};
  for (const auto& [upstream, data] : sequence) {
    REQUIRE(data.size() <= 0xffff);
    out.push_back(upstream ? 1 : 0);
    out.push_back(static_cast<std::uint8_t>(data.size() >> 8));
    out.push_back(static_cast<std::uint8_t>(data.size()));
    out.insert(out.end(), data.begin(), data.end());
  }
  return out;
}

std::vector<std::pair<bool, bytes>> decode_seed(const bytes& in) {
  std::vector<std::pair<bool, bytes>> out;
  for (std::size_t pos = 1; pos + 3 <= in.size();) {
    const std::size_t n = std::min((std::size_t{in[pos + 1]} << 8) | in[pos + 2], in.size() - pos - 3);
    out.emplace_back((in[pos] & 1) != 0, slice(in, pos + 3, pos + 3 + n));
    pos += 3 + n;
  }
  return out;
}

bytes make_watch_seed(const watch_seed& s) {
  if (s.file == "upstream_not_tls.bin") {
    return encode_seed({{false, hello_for(allowed)}, {true, tls_lab::to_bytes("HTTP/1.1 400 Bad Request\r\n\r\n")}});
  }
  const bool hrr = s.file.starts_with("hrr");
  const int max_version = s.file == "tls12.bin" ? TLS1_2_VERSION : TLS1_3_VERSION;
  const auto client_ctx = tls_lab::make_client_ctx({TLS1_2_VERSION, max_version, "X25519:P-256", {}, false, 0});
  const auto server_ctx = tls_lab::make_server_ctx({TLS1_2_VERSION, TLS1_3_VERSION, hrr ? "P-256" : "X25519", 0});
  tls_lab::endpoint client{client_ctx.get(), false};
  tls_lab::endpoint server{server_ctx.get(), true};
  client.set_host_name(allowed);
  handshake_watch watch = make_watch();
  lab_relay relay{client, server, &watch};
  if (s.file == "hrr_evil_second_hello.bin") {
    relay.after_client_flight = [&](std::size_t i) {
      if (i == 0) client.set_host_name(evil);
    };
  }
  relay.run();
  return encode_seed(relay.sequence);
}

struct seed_outcome {
  std::string_view refusal;
  bool done = false;
  std::size_t hellos = 0;
};

seed_outcome run_seed(const bytes& in) {
  handshake_watch w = make_watch();
  for (const auto& [upstream, data] : decode_seed(in)) {
    if (upstream) {
      w.feed_server(data);
    } else {
      w.feed_client(data);
    }
  }
  return {w.refusal(), w.done(), w.hellos_checked()};
}

}  // namespace

#ifdef EGRESS_TEST_DATA
TEST_CASE("seed corpus in tests/data/handshake_watch runs to its recorded verdict", "[unit][handshake_watch]") {
  for (const auto& s : watch_seeds()) {
    INFO(s.file);
    std::ifstream file{std::filesystem::path{EGRESS_TEST_DATA} / "handshake_watch" / s.file, std::ios::binary};
    REQUIRE(file);
    const bytes in{std::istreambuf_iterator<char>{file}, std::istreambuf_iterator<char>{}};
    const seed_outcome o = run_seed(in);
    CHECK(o.refusal == s.refusal);
    CHECK(o.done == s.done);
    CHECK(o.hellos == s.hellos);
  }
}
#endif

// Run by hand: EGRESS_HANDSHAKE_WATCH_SEED_DIR=tests/data/handshake_watch ./egress_unit_proxy "[generate_watch_seeds]"
TEST_CASE("write the handshake watch fuzzer's seed corpus", "[.][generate_watch_seeds]") {
  const char* dir = std::getenv("EGRESS_HANDSHAKE_WATCH_SEED_DIR");
  REQUIRE(dir != nullptr);
  std::filesystem::create_directories(dir);
  for (const auto& s : watch_seeds()) {
    INFO(s.file);
    const bytes data = make_watch_seed(s);
    const seed_outcome o = run_seed(data);
    REQUIRE(o.refusal == s.refusal);
    REQUIRE(o.done == s.done);
    REQUIRE(o.hellos == s.hellos);
    std::ofstream out{std::filesystem::path{dir} / s.file, std::ios::binary | std::ios::trunc};
    out.write(reinterpret_cast<const char*>(data.data()), static_cast<std::streamsize>(data.size()));
    REQUIRE(out);
  }
}
