#pragma once
/// DNS wire format for the proxy's allowlisting DNS responder: parses a query message and
/// builds the responder's answers and the queries it forwards. Pure: bytes in, values and
/// bytes out; no sockets, no Asio I/O, no policy (what a name may get is decided in
/// acl.hpp, `check_dns_question`).
///
/// Message shape (RFC 1035 §4.1, integers big-endian):
///   header      12 bytes: ID(16) | QR(1) OPCODE(4) AA(1) TC(1) RD(1) RA(1) Z(1) AD(1) CD(1)
///               RCODE(4) | QDCOUNT(16) ANCOUNT(16) NSCOUNT(16) ARCOUNT(16)
///   question    QNAME, QTYPE(16), QCLASS(16)
///   RRs         NAME, TYPE(16), CLASS(16), TTL(32), RDLENGTH(16), RDATA
///   name        labels: a length octet 1..63 and that many bytes, ended by the root label
///               (a zero octet) or by a compression pointer (two octets 11xxxxxx xxxxxxxx:
///               an offset from the start of the message, RFC 1035 §4.1.4). At most 255
///               octets uncompressed, length octets and root included (§2.3.4).
///   OPT         the EDNS(0) pseudo-RR in the additional section (RFC 6891 §6.1): owner
///               root, TYPE 41, CLASS = requester's UDP payload size, TTL = extended
///               RCODE(8) VERSION(8) DO(1) Z(15), RDATA = options {code(16) length(16) data}.

#include <boost/asio/ip/address.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace egress::proxy::dns {

/// RR types the responder treats specially (RFC 1035 §3.2.2, RFC 3596, RFC 6891,
/// RFC 9460, RFC 5936, RFC 1995).
inline constexpr std::uint16_t type_a = 1;
inline constexpr std::uint16_t type_ns = 2;
inline constexpr std::uint16_t type_soa = 6;
inline constexpr std::uint16_t type_aaaa = 28;
inline constexpr std::uint16_t type_opt = 41;
inline constexpr std::uint16_t type_svcb = 64;
inline constexpr std::uint16_t type_https = 65;
inline constexpr std::uint16_t type_ixfr = 251;
inline constexpr std::uint16_t type_axfr = 252;
inline constexpr std::uint16_t type_any = 255;
/// CLASS IN (RFC 1035 §3.2.4).
inline constexpr std::uint16_t class_in = 1;

/// The fixed header size and the UDP payload a requester without EDNS may receive
/// (RFC 1035 §2.3.4, §4.2.1).
inline constexpr std::size_t header_bytes = 12;
inline constexpr std::size_t classic_udp_payload = 512;
/// The largest uncompressed name, length octets and root label included (RFC 1035 §2.3.4).
inline constexpr std::size_t max_name_bytes = 255;
/// The UDP payload size the responder advertises in its own OPT record: the DNS Flag Day
/// 2020 value, which fits an IPv6 packet on a 1280-byte-MTU path without fragmentation.
inline constexpr std::uint16_t advertised_udp_payload = 1232;

/// Response codes (RFC 1035 §4.1.1; BADVERS is an extended RCODE, RFC 6891 §9, so it
/// needs an OPT record to be expressed: 4 low bits in the header, 8 high bits in the OPT).
enum class rcode : std::uint16_t {
  noerror = 0,
  formerr = 1,
  servfail = 2,
  nxdomain = 3,
  notimp = 4,
  refused = 5,
  badvers = 16,
};

/// "NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED", "BADVERS", or
/// "RCODE<n>" for others (static storage for the named ones; the others are formatted).
std::string rcode_name(std::uint16_t rc);
/// The mnemonic of an RR type ("A", "AAAA", "HTTPS", ...), or "TYPE<n>" (RFC 3597 §5).
std::string type_name(std::uint16_t type);

/// The question of a query (RFC 1035 §4.1.2).
struct question {
  /// The QNAME in uncompressed wire form exactly as sent (labels with their length
  /// octets, original letter case, ending with the root label). Compare names through
  /// `names_equal`, `name_at_or_under` or `name_host`, never byte for byte.
  std::string name;
  std::uint16_t type = 0;
  std::uint16_t klass = 0;  ///< QCLASS ("class" is a keyword)
  friend bool operator==(const question&, const question&) = default;
};

/// The requester's EDNS(0) OPT record (RFC 6891 §6.1.2, §6.1.3).
struct edns {
  std::uint16_t udp_payload = 0;  ///< as sent (values below 512 mean 512, §6.2.5)
  std::uint8_t version = 0;
  bool dnssec_ok = false;         ///< the DO bit (RFC 3225), copied into the response
  friend bool operator==(const edns&, const edns&) = default;
};

/// A parsed query: what the responder needs to answer or forward it.
struct query {
  std::uint16_t id = 0;
  std::uint8_t opcode = 0;
  bool rd = false;  ///< recursion desired: copied into the response (RFC 1035 §4.1.1)
  bool cd = false;  ///< checking disabled: copied into the response (RFC 6840 §5.9)
  /// Set when the question section parsed (always for `parse_status::ok`).
  std::optional<question> q;
  /// Set when exactly one well-formed OPT record was in the additional section.
  std::optional<edns> opt;
};

/// What to do with a received message.
enum class parse_status {
  ok,     ///< a well-formed standard query with one question: decide and answer it
  drop,   ///< not answered at all: shorter than a header, or a response (QR=1), so a
          ///< spoofed or looped response never makes us send anything
  reply,  ///< answer with `parse_result::error` (FORMERR, NOTIMP or BADVERS) and nothing else
};

/// The outcome of `parse_query`.
struct parse_result {
  parse_status status = parse_status::drop;
  rcode error = rcode::noerror;  ///< status reply: formerr, notimp or badvers
  /// A stable snake_case word saying why (static storage): "ok", "short_header",
  /// "response", "opcode_not_query", "qdcount_not_one", "name_truncated",
  /// "name_too_long", "label_type" (extended or reserved label types, RFC 6891 §5),
  /// "pointer_not_backwards" (to itself, forward, or not strictly before the labels that
  /// contain it: loops are impossible), "pointer_into_header", "question_truncated",
  /// "records_in_query" (ANCOUNT or NSCOUNT not 0), "record_truncated", "opt_not_root",
  /// "opt_duplicate", "opt_options_malformed", "trailing_bytes", "edns_version".
  std::string_view reason;
  query msg;  ///< header fields always set unless `drop`; the rest as `query` says
};

/// Parses `wire` as one DNS query message (a UDP datagram, or one TCP message without its
/// two-byte length prefix, RFC 7766 §8).
///
/// Checked in this order: header present (else drop); QR=0 (else drop); OPCODE = QUERY
/// (else reply NOTIMP, no question); QDCOUNT = 1 (else FORMERR, no question, RFC 9619);
/// the question (names as in the file comment; compression pointers must point strictly
/// before the labels that contain them and never into the header); ANCOUNT = NSCOUNT = 0;
/// each additional record well-formed, at most one OPT, with owner root and options that
/// fill its RDATA exactly; no bytes after the last record; EDNS VERSION 0 (else BADVERS,
/// RFC 6891 §6.1.3). Any FORMERR keeps the question and OPT that parsed before it.
/// Never throws, never reads outside `wire`; cost linear in its size.
parse_result parse_query(std::span<const std::uint8_t> wire) noexcept;

/// The largest UDP response `q`'s requester accepts: 512 without EDNS, else its payload
/// size but never below 512 (RFC 6891 §6.2.5).
std::size_t udp_limit(const query& q) noexcept;

/// The owner names, as uncompressed wire forms, are equal ignoring ASCII case (RFC 4343).
bool names_equal(std::string_view a, std::string_view b) noexcept;

/// The uncompressed wire name `name` equals `domain` or lies below it, label by label
/// and ignoring ASCII case. `domain` is dotted text without trailing dot, e.g.
/// "cluster.local" (so "evilcluster.local" is not under it); "" is the root (everything).
bool name_at_or_under(std::string_view name, std::string_view domain) noexcept;

/// The uncompressed wire name `name` as dotted text for the proxy's host normaliser:
/// labels joined by '.', no trailing dot; "" for the root. nullopt when a label contains
/// a '.' byte (it could not round-trip through text). Case kept.
std::optional<std::string> name_dotted(std::string_view name);

/// The uncompressed wire name `name` in presentation form for logs (RFC 1035 §5.1):
/// lower case, labels joined by '.', '.' and '\\' inside a label escaped with '\\',
/// bytes outside printable ASCII as "\\DDD"; no trailing dot; "." for the root.
std::string name_presentation(std::string_view name);

/// Encodes dotted text ("www.example.org", one trailing dot allowed) as an uncompressed
/// wire name; nullopt when a label is empty or longer than 63 octets or the whole is
/// longer than 255 octets. For tests and the fuzz target; names from the wire never need it.
std::optional<std::string> encode_name(std::string_view dotted);

/// Builds the response to `q` into `out` (cleared first).
///
/// Header: ID, OPCODE, RD and CD copied; QR=1; RA=0 (the responder recurses for nobody:
/// it answers from configuration or relays the cluster DNS); AA=1 for NOERROR and
/// NXDOMAIN (answers from configuration: a NODATA with AA=0, RA=0 and no additional
/// record is a referral to glibc's stub, which then gives up on the server). The question
/// is echoed as sent (case kept, RFC 4343 §4) when `q.q` is set. Each address in
/// `answers` becomes an A (IPv4) or AAAA (IPv6) record for the question name (a
/// compression pointer to it), class IN, TTL `ttl` seconds. No authority section (so no
/// SOA in negative answers: RFC 2308 §5 then says caches SHOULD NOT cache them, which is
/// what a reloadable allowlist wants). An OPT record (payload `advertised_udp_payload`,
/// version 0, DO copied, no options) when `q.opt` is set; BADVERS's high bits go there.
///
/// Truncation (RFC 1035 §4.2.1, RFC 6891 §7, RFC 7766 §5): when the message would be
/// longer than `limit` bytes, TC=1 and no answer records are sent (header, question and
/// OPT only). Returns true when it truncated.
bool build_response(std::vector<std::uint8_t>& out, const query& q, rcode rc,
                    std::span<const boost::asio::ip::address> answers = {}, std::chrono::seconds ttl = {},
                    std::size_t limit = 65535);

/// Builds the stand-in for an answer too large for the requester's UDP limit (a relayed
/// cluster DNS answer): like `build_response` with `rc` (the RCODE of the answer it
/// replaces; extended bits need `q.opt`) and no records, but with TC=1, so the client
/// asks again over TCP (RFC 7766 §5).
void build_truncated(std::vector<std::uint8_t>& out, const query& q, rcode rc);

/// Builds the query the responder forwards to the cluster DNS for `q` (which must have a
/// question) into `out`: header with `id`, RD and CD copied, QDCOUNT 1; the question as
/// sent; an OPT record with `udp_payload`, version 0 and DO copied when `q` had one. No
/// other record of the client's is passed on.
void build_forward_query(std::vector<std::uint8_t>& out, const query& q, std::uint16_t id,
                         std::uint16_t udp_payload);

/// True when `wire` is a response to the query with `id` and question `q` (RFC 5452 §9.1:
/// ID, QR=1, OPCODE QUERY, QDCOUNT 1, and the same QNAME ignoring case, QTYPE and
/// QCLASS). Anything else is not our answer and is ignored by the caller.
bool is_response_to(std::span<const std::uint8_t> wire, std::uint16_t id, const question& q) noexcept;

/// Writes `id` into the first two bytes of `wire` (which must have a header).
void set_id(std::span<std::uint8_t> wire, std::uint16_t id) noexcept;

}  // namespace egress::proxy::dns
