#pragma once
/// JSON-lines logging: exactly one `decision` line per connection (CONNECT) or request
/// (plain HTTP), one `dns` line per message the DNS responder received (answered,
/// refused or dropped), plus start-up and operational events. Wire data is escaped and
/// length-capped; no bodies, credentials or query strings are ever logged.
///
/// Output never stalls the proxy: after `log_init`, stdout is written without blocking;
/// lines stdout does not take at once wait in a bounded buffer (whole lines only, never
/// half of one), flushed from the io_context as soon as stdout is writable again
/// (`log_attachment`); when the buffer is full, whole lines are dropped, counted
/// (`log_lines_dropped`, the metric egress_proxy_log_lines_dropped_total) and reported by
/// a `log_dropped` event line ahead of the next line that gets out:
///   {"time":..,"event":"log_dropped","level":"warning","lines":N,"message":".."}
/// Single-threaded: every function on the io_context's thread (or before it runs).

#include <boost/asio/io_context.hpp>

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

/// Writes one line (appends '\n'); `line` may also hold several lines separated by '\n'
/// (a batch), each then kept or dropped whole. Before `log_init`: a blocking write(2)
/// loop, as for a tool. After: one non-blocking write(2) (send(2) with MSG_DONTWAIT when
/// stdout is a socket) when nothing waits, else the lines join the buffer; whatever part
/// of a line a short write left is always kept, so a line is never cut. Errors other than
/// EAGAIN (EPIPE: the reader is gone, ENOSPC) drop the lines and count them.
void write_line(std::string_view line);

/// Switches stdout to non-blocking output with a buffer of `buffer_bytes` (config
/// `proxy.log.buffer_bytes`; 4096 at least is sensible, one line more may be held while
/// a line is half written). How: a pipe, FIFO or terminal on fd 1 is reopened through
/// /proc/self/fd/1 with O_NONBLOCK (O_NOCTTY), so the flag is on the proxy's own open
/// file description and not on one it shares with its parent (a shell's terminal, the
/// container runtime's pipe); if that fails, O_NONBLOCK is set on the shared description
/// and put back at exit. A socket needs nothing (MSG_DONTWAIT); a regular file or
/// /dev/null never blocks and is left as it is. Call again to change the size (after a
/// reload): lines already buffered stay. Errors: none; logging never stops the proxy.
/// Source: open(2), fcntl(2), pipe(7) (O_NONBLOCK writes up to PIPE_BUF are atomic).
void log_init(std::size_t buffer_bytes);

/// While alive, flushes the buffer from `io`: whenever lines wait, an async_wait(write)
/// on a duplicate of fd 1 (a posix::stream_descriptor) wakes the flush as soon as stdout
/// is writable again (with a 1 s timer as a safety net); where fd 1 is a socket or epoll
/// cannot watch it, a 50 ms timer does. Construct it
/// after `io` (so it is destroyed first) and before the server starts; its destructor
/// writes what is left, waiting at most 1 s for stdout, and detaches.
class log_attachment {
public:
  explicit log_attachment(boost::asio::io_context& io);
  ~log_attachment();
  log_attachment(const log_attachment&) = delete;
  log_attachment& operator=(const log_attachment&) = delete;
};

/// Writes what the buffer holds, waiting for stdout (poll(2)) at most `timeout`; what is
/// left after it stays buffered. For exit paths. Returns whether the buffer is empty.
bool log_flush(std::chrono::milliseconds timeout);

/// Lines dropped since start: the buffer was full, or stdout failed. A counter.
std::uint64_t log_lines_dropped() noexcept;

/// Bytes of log lines waiting in the buffer now. A gauge.
std::size_t log_buffered_bytes() noexcept;

/// The start of an event line, `{"time":..,"event":..,"level":..` without the closing brace,
/// for callers that add fields of their own.
std::string format_event_prefix(std::string_view level, std::string_view event);

/// Writes an event line: {"time":..,"event":event,"level":level, "message":message}.
void log_event(std::string_view level, std::string_view event, std::string_view message);

}  // namespace egress::proxy
