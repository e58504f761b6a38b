#pragma once
/// JSON-lines logging: exactly one `decision` line per connection (CONNECT) or request
/// (plain HTTP), one `dns` line per message the DNS responder received (answered,
/// refused or dropped), plus start-up and operational events. Wire data is escaped and
/// length-capped; no bodies, credentials or query strings are ever logged.

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

namespace egress::proxy {

/// Field names of the decision line (one place, shared by tests and docs).
namespace field {
inline constexpr std::string_view time = "time";
inline constexpr std::string_view event = "event";
inline constexpr std::string_view conn = "conn";
inline constexpr std::string_view client = "client";
inline constexpr std::string_view method = "method";
inline constexpr std::string_view host = "host";
inline constexpr std::string_view port = "port";
inline constexpr std::string_view sni = "sni";
inline constexpr std::string_view verdict = "verdict";
inline constexpr std::string_view reason = "reason";
inline constexpr std::string_view status = "status";
inline constexpr std::string_view upstream = "upstream";
inline constexpr std::string_view bytes_up = "bytes_up";
inline constexpr std::string_view bytes_down = "bytes_down";
inline constexpr std::string_view dns_ms = "dns_ms";
inline constexpr std::string_view connect_ms = "connect_ms";
inline constexpr std::string_view total_ms = "total_ms";
inline constexpr std::string_view end = "end";
// dns lines (besides time, event, client, verdict, reason, upstream, total_ms):
inline constexpr std::string_view transport = "transport";
inline constexpr std::string_view qname = "qname";
inline constexpr std::string_view qtype = "qtype";
inline constexpr std::string_view rcode = "rcode";
inline constexpr std::string_view detail = "detail";
inline constexpr std::string_view tc = "tc";
}  // namespace field

/// Everything the decision line reports. Strings are copied from the wire and escaped
/// and capped (256 bytes) when formatted.
struct decision_record {
  std::uint64_t conn = 0;
  std::string client;       ///< "ADDR:PORT" of the client
  std::string method;       ///< request method ("CONNECT", "GET", ...); empty when the head did not parse
  std::string host;         ///< normalised target host; empty when the head did not parse (never raw wire text)
  std::uint16_t port = 0;
  std::string sni;          ///< CONNECT: the ClientHello's server_name as sent, if any
  bool allowed = false;
  std::string_view reason;  ///< stable reason word
  int status = 0;           ///< HTTP status sent to the client (200 for an opened tunnel)
  std::string upstream;     ///< "ADDR:PORT" actually dialled, if any
  std::uint64_t bytes_up = 0;    ///< client -> upstream, bytes
  std::uint64_t bytes_down = 0;  ///< upstream -> client, bytes
  double dns_ms = -1;            ///< -1 when no lookup happened
  double connect_ms = -1;
  double total_ms = 0;
  std::string_view end;  ///< how an allowed tunnel ended: "eof", "idle_timeout", "error", "drain"
};

/// What a `dns` line reports: one query of the DNS responder and what became of it.
///   {"time":..,"event":"dns","client":"ADDR:PORT","transport":"udp"|"tcp",
///    "qname":"www.wikidata.org","qtype":"A","verdict":"allow"|"deny","reason":..,
///    "rcode":"NOERROR",["detail":..],["upstream":"ADDR:PORT"],["tc":true],"total_ms":..}
/// `qname` and `qtype` are empty when the message had no parsable question; `rcode` is
/// empty when nothing was sent back (a dropped message).
struct dns_record {
  std::string client;        ///< "ADDR:PORT" of the client
  std::string_view transport;  ///< "udp" or "tcp"
  std::string qname;         ///< presentation form, lower case, escaped (dns::name_presentation)
  std::string qtype;         ///< mnemonic ("A", "AAAA", "HTTPS", "TYPE65280")
  bool allowed = false;
  std::string_view reason;   ///< stable reason word (static storage)
  std::string rcode;         ///< the response's RCODE name ("NOERROR", "NXDOMAIN", ...)
  std::string_view detail;   ///< why a message was malformed (dns::parse_result::reason), or empty
  std::string upstream;      ///< forwarded: the cluster DNS server "ADDR:PORT" that answered or failed
  bool truncated = false;    ///< the answer went out with TC=1 and no answer records
  double total_ms = 0;
};

/// Formats the dns line (no trailing newline). Wire strings escaped and capped.
std::string format_dns(const dns_record& r, std::chrono::system_clock::time_point now);

/// Appends `s` as a JSON string (quoted, escaped, at most `cap` input bytes; non-ASCII and
/// control bytes as \u00XX so the line stays valid JSON whatever the wire held).
void append_json_string(std::string& out, std::string_view s, std::size_t cap = 256);

/// Formats the decision line (no trailing newline).
std::string format_decision(const decision_record& r, std::chrono::system_clock::time_point now);

/// Writes one line (appends '\n') to stdout with a single write(2).
void write_line(std::string_view line);

/// The start of an event line, `{"time":..,"event":..,"level":..` without the closing brace,
/// for callers that add fields of their own.
std::string format_event_prefix(std::string_view level, std::string_view event);

/// Writes an event line: {"time":..,"event":event,"level":level, "message":message}.
void log_event(std::string_view level, std::string_view event, std::string_view message);

}  // namespace egress::proxy
