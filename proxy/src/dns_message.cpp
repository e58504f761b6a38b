// DNS wire format (see dns_message.hpp): query parser, response and forward-query
// builders. Pure; decides nothing about names (acl.cpp does).
#include "egress/proxy/dns_message.hpp"

#include <algorithm>
#include <array>

namespace egress::proxy::dns {
namespace {

using byte_span = std::span<const std::uint8_t>;

constexpr std::uint16_t flag_qr = 0x8000;
constexpr std::uint16_t flag_aa = 0x0400;
constexpr std::uint16_t flag_tc = 0x0200;
constexpr std::uint16_t flag_rd = 0x0100;
constexpr std::uint16_t flag_cd = 0x0010;
constexpr unsigned opcode_shift = 11;
constexpr std::uint16_t opcode_mask = 0xf;
constexpr std::uint8_t opcode_query = 0;
constexpr std::uint32_t edns_do_bit = 0x8000;  // in the OPT TTL's low 16 bits
constexpr std::size_t rr_fixed_bytes = 10;      // TYPE, CLASS, TTL, RDLENGTH

std::uint16_t get16(byte_span w, std::size_t at) noexcept {
  return static_cast<std::uint16_t>((w[at] << 8) | w[at + 1]);
}
std::uint32_t get32(byte_span w, std::size_t at) noexcept {
  return (std::uint32_t{w[at]} << 24) | (std::uint32_t{w[at + 1]} << 16) | (std::uint32_t{w[at + 2]} << 8) |
         std::uint32_t{w[at + 3]};
}
void put16(std::vector<std::uint8_t>& out, std::uint16_t v) {
  out.push_back(static_cast<std::uint8_t>(v >> 8));
  out.push_back(static_cast<std::uint8_t>(v & 0xff));
}
void put32(std::vector<std::uint8_t>& out, std::uint32_t v) {
  put16(out, static_cast<std::uint16_t>(v >> 16));
  put16(out, static_cast<std::uint16_t>(v & 0xffff));
}

char lower(char c) noexcept { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }

// Reads the name at `pos`, appending its labels (uncompressed, as sent) to `out` if
// given; on success `pos` is just past the name where it appears (after the first
// pointer, or the root label). Returns "" or a reason word.
//
// Pointer rule: a pointer must point strictly before the first byte of the label run
// that contains it (the name's start, or the previous pointer's target). Targets thus
// strictly decrease, so a loop, a pointer to itself and a forward pointer are all
// impossible, and at most pos / 2 jumps happen. A pointer into the header is refused: a
// name never starts there.
std::string_view read_name(byte_span w, std::size_t& pos, std::string* out) noexcept {
  std::size_t p = pos;
  std::size_t run_start = pos;
  std::size_t resume = 0;
  bool jumped = false;
  std::size_t total = 0;
  for (;;) {
    if (p >= w.size()) return "name_truncated";
    const std::uint8_t len = w[p];
    if ((len & 0xc0) == 0xc0) {
      if (p + 1 >= w.size()) return "name_truncated";
      const std::size_t target = (std::size_t{len & 0x3fu} << 8) | w[p + 1];
      if (target >= run_start) return "pointer_not_backwards";
      if (target < header_bytes) return "pointer_into_header";
      if (!jumped) resume = p + 2;
      jumped = true;
      p = run_start = target;
      continue;
    }
    if ((len & 0xc0) != 0) return "label_type";
    total += std::size_t{len} + 1;
    if (total > max_name_bytes) return "name_too_long";
    if (w.size() - p - 1 < len) return "name_truncated";
    if (out) out->append(reinterpret_cast<const char*>(w.data() + p), std::size_t{len} + 1);
    p += std::size_t{len} + 1;
    if (len == 0) {
      pos = jumped ? resume : p;
      return {};
    }
  }
}

// Reads QTYPE and QCLASS after the name.
std::string_view read_question(byte_span w, std::size_t& pos, question& q) {
  q.name.clear();
  if (auto r = read_name(w, pos, &q.name); !r.empty()) return r;
  if (w.size() - pos < 4) return "question_truncated";
  q.type = get16(w, pos);
  q.klass = get16(w, pos + 2);
  pos += 4;
  return {};
}

void put_header(std::vector<std::uint8_t>& out, std::uint16_t id, std::uint16_t flags, std::uint16_t qd,
                std::uint16_t an, std::uint16_t ns, std::uint16_t ar) {
  put16(out, id);
  put16(out, flags);
  put16(out, qd);
  put16(out, an);
  put16(out, ns);
  put16(out, ar);
}

void put_opt(std::vector<std::uint8_t>& out, std::uint16_t payload, std::uint8_t ext_rcode, bool dnssec_ok) {
  out.push_back(0);  // owner: root
  put16(out, type_opt);
  put16(out, payload);
  put32(out, (std::uint32_t{ext_rcode} << 24) | (dnssec_ok ? edns_do_bit : 0u));  // version 0
  put16(out, 0);  // no options
}

void put_question(std::vector<std::uint8_t>& out, const question& q) {
  out.insert(out.end(), q.name.begin(), q.name.end());
  put16(out, q.type);
  put16(out, q.klass);
}

// Splits the next label of a wire name at `at`: returns its bytes and advances `at`.
std::string_view next_label(std::string_view name, std::size_t& at) noexcept {
  const std::size_t len = static_cast<std::uint8_t>(name[at]);
  std::string_view label = name.substr(at + 1, len);
  at += len + 1;
  return label;
}

}  // namespace

std::string rcode_name(std::uint16_t rc) {
  switch (rc) {
    case 0: return "NOERROR";
    case 1: return "FORMERR";
    case 2: return "SERVFAIL";
    case 3: return "NXDOMAIN";
    case 4: return "NOTIMP";
    case 5: return "REFUSED";
    case 16: return "BADVERS";
    default: return "RCODE" + std::to_string(rc);
  }
}

std::string type_name(std::uint16_t type) {
  switch (type) {
    case type_a: return "A";
    case type_ns: return "NS";
    case 5: return "CNAME";
    case type_soa: return "SOA";
    case 12: return "PTR";
    case 15: return "MX";
    case 16: return "TXT";
    case type_aaaa: return "AAAA";
    case 33: return "SRV";
    case type_opt: return "OPT";
    case 43: return "DS";
    case 48: return "DNSKEY";
    case type_svcb: return "SVCB";
    case type_https: return "HTTPS";
    case type_ixfr: return "IXFR";
    case type_axfr: return "AXFR";
    case type_any: return "ANY";
    case 257: return "CAA";
    default: return "TYPE" + std::to_string(type);
  }
}

parse_result parse_query(byte_span w) noexcept {
  parse_result r;
  if (w.size() < header_bytes) {
    r.reason = "short_header";
    return r;
  }
  const std::uint16_t flags = get16(w, 2);
  if (flags & flag_qr) {
    r.reason = "response";
    return r;
  }
  r.msg.id = get16(w, 0);
  r.msg.opcode = static_cast<std::uint8_t>((flags >> opcode_shift) & opcode_mask);
  r.msg.rd = (flags & flag_rd) != 0;
  r.msg.cd = (flags & flag_cd) != 0;
  r.status = parse_status::reply;
  auto fail = [&r](rcode rc, std::string_view why) -> parse_result {
    r.error = rc;
    r.reason = why;
    return r;
  };
  if (r.msg.opcode != opcode_query) return fail(rcode::notimp, "opcode_not_query");
  if (get16(w, 4) != 1) return fail(rcode::formerr, "qdcount_not_one");
  const std::uint16_t ancount = get16(w, 6), nscount = get16(w, 8), arcount = get16(w, 10);

  std::size_t pos = header_bytes;
  question q;
  try {
    if (auto why = read_question(w, pos, q); !why.empty()) return fail(rcode::formerr, why);
  } catch (...) {  // std::bad_alloc for a name of at most 255 bytes: report, never throw
    return fail(rcode::servfail, "out_of_memory");
  }
  r.msg.q = std::move(q);
  if (ancount != 0 || nscount != 0) return fail(rcode::formerr, "records_in_query");

  std::optional<edns> opt;
  bool opt_seen = false;
  for (std::uint16_t i = 0; i < arcount; ++i) {
    const std::size_t owner = pos;
    if (auto why = read_name(w, pos, nullptr); !why.empty()) return fail(rcode::formerr, why);
    if (w.size() - pos < rr_fixed_bytes) return fail(rcode::formerr, "record_truncated");
    const std::uint16_t type = get16(w, pos);
    const std::uint16_t klass = get16(w, pos + 2);
    const std::uint32_t ttl = get32(w, pos + 4);
    const std::size_t rdlen = get16(w, pos + 8);
    pos += rr_fixed_bytes;
    if (w.size() - pos < rdlen) return fail(rcode::formerr, "record_truncated");
    if (type == type_opt) {
      // RFC 6891 §6.1.1: one OPT at most (else FORMERR), owner root; options framed.
      if (opt_seen) {
        r.msg.opt.reset();
        return fail(rcode::formerr, "opt_duplicate");
      }
      opt_seen = true;
      if (pos - rr_fixed_bytes - owner != 1 || w[owner] != 0) return fail(rcode::formerr, "opt_not_root");
      std::size_t o = pos;
      while (o < pos + rdlen) {
        if (pos + rdlen - o < 4) return fail(rcode::formerr, "opt_options_malformed");
        const std::size_t olen = get16(w, o + 2);
        if (pos + rdlen - o - 4 < olen) return fail(rcode::formerr, "opt_options_malformed");
        o += 4 + olen;
      }
      opt = edns{klass, static_cast<std::uint8_t>((ttl >> 16) & 0xff), (ttl & edns_do_bit) != 0};
      r.msg.opt = opt;
    }
    pos += rdlen;
  }
  if (pos != w.size()) return fail(rcode::formerr, "trailing_bytes");
  if (opt && opt->version != 0) return fail(rcode::badvers, "edns_version");
  r.status = parse_status::ok;
  r.error = rcode::noerror;
  r.reason = "ok";
  return r;
}

std::size_t udp_limit(const query& q) noexcept {
  if (!q.opt) return classic_udp_payload;
  return std::max<std::size_t>(classic_udp_payload, q.opt->udp_payload);
}

bool names_equal(std::string_view a, std::string_view b) noexcept {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return lower(x) == lower(y);
         });
}

bool name_at_or_under(std::string_view name, std::string_view domain) noexcept {
  // Labels of `name`, right to left, against the labels of `domain`, right to left.
  std::array<std::string_view, 128> labels;  // a 255-byte name has at most 127 labels
  std::size_t n = 0;
  for (std::size_t at = 0; at < name.size() && name[at] != 0 && n < labels.size();) labels[n++] = next_label(name, at);
  std::size_t i = n;
  while (!domain.empty()) {
    const auto dot = domain.rfind('.');
    const std::string_view want = dot == std::string_view::npos ? domain : domain.substr(dot + 1);
    domain = dot == std::string_view::npos ? std::string_view{} : domain.substr(0, dot);
    if (i == 0) return false;
    const std::string_view have = labels[--i];
    if (have.size() != want.size() ||
        !std::equal(have.begin(), have.end(), want.begin(), [](char x, char y) { return lower(x) == lower(y); }))
      return false;
  }
  return true;
}

std::optional<std::string> name_dotted(std::string_view name) {
  std::string out;
  for (std::size_t at = 0; at < name.size() && name[at] != 0;) {
    const std::string_view label = next_label(name, at);
    if (label.find('.') != std::string_view::npos) return std::nullopt;
    if (!out.empty()) out += '.';
    out += label;
  }
  return out;
}

std::string name_presentation(std::string_view name) {
  std::string out;
  for (std::size_t at = 0; at < name.size() && name[at] != 0;) {
    const std::string_view label = next_label(name, at);
    if (!out.empty()) out += '.';
    for (char ch : label) {
      const auto c = static_cast<unsigned char>(ch);
      if (c == '.' || c == '\\') {
        out += '\\';
        out += ch;
      } else if (c <= 0x20 || c >= 0x7f) {
        out += '\\';
        out += static_cast<char>('0' + c / 100);
        out += static_cast<char>('0' + c / 10 % 10);
        out += static_cast<char>('0' + c % 10);
      } else {
        out += lower(ch);
      }
    }
  }
  return out.empty() ? "." : out;
}

std::optional<std::string> encode_name(std::string_view dotted) {
  if (dotted.ends_with('.')) dotted.remove_suffix(1);
  std::string out;
  while (!dotted.empty()) {
    const auto dot = dotted.find('.');
    const std::string_view label = dotted.substr(0, dot);
    if (label.empty() || label.size() > 63) return std::nullopt;
    out += static_cast<char>(label.size());
    out += label;
    dotted = dot == std::string_view::npos ? std::string_view{} : dotted.substr(dot + 1);
    if (dot != std::string_view::npos && dotted.empty()) return std::nullopt;  // "a..": empty label
  }
  out += '\0';
  if (out.size() > max_name_bytes) return std::nullopt;
  return out;
}

namespace {

bool build(std::vector<std::uint8_t>& out, const query& q, rcode rc, std::span<const boost::asio::ip::address> answers,
           std::chrono::seconds ttl, std::size_t limit, bool force_tc) {
  const auto code = static_cast<std::uint16_t>(rc);
  std::uint16_t flags = static_cast<std::uint16_t>(flag_qr | (std::uint16_t{q.opcode} << opcode_shift) | (code & 0xf));
  if (q.rd) flags |= flag_rd;
  if (q.cd) flags |= flag_cd;
  if (rc == rcode::noerror || rc == rcode::nxdomain) flags |= flag_aa;
  const std::size_t opt_bytes = q.opt ? 11 : 0;
  std::size_t size = header_bytes + (q.q ? q.q->name.size() + 4 : 0) + opt_bytes;
  const std::size_t fixed = size;
  std::uint16_t ancount = 0;
  if (q.q)
    for (const auto& a : answers) {
      size += 2 + rr_fixed_bytes + (a.is_v4() ? 4 : 16);
      ++ancount;
    }
  const bool truncated = force_tc || (size > limit && ancount > 0);
  if (truncated) {
    flags |= flag_tc;
    ancount = 0;
    size = fixed;
  }
  out.clear();
  out.reserve(size);
  put_header(out, q.id, flags, q.q ? 1 : 0, ancount, 0, q.opt ? 1 : 0);
  if (q.q) put_question(out, *q.q);
  const auto ttl_s = static_cast<std::uint32_t>(std::clamp<std::chrono::seconds::rep>(ttl.count(), 0, 0x7fffffff));
  if (ancount > 0)
    for (const auto& a : answers) {
      put16(out, static_cast<std::uint16_t>(0xc000 | header_bytes));  // a pointer to the question name
      put16(out, a.is_v4() ? type_a : type_aaaa);
      put16(out, class_in);
      put32(out, ttl_s);
      if (a.is_v4()) {
        const auto b = a.to_v4().to_bytes();
        put16(out, static_cast<std::uint16_t>(b.size()));
        out.insert(out.end(), b.begin(), b.end());
      } else {
        const auto b = a.to_v6().to_bytes();
        put16(out, static_cast<std::uint16_t>(b.size()));
        out.insert(out.end(), b.begin(), b.end());
      }
    }
  if (q.opt) put_opt(out, advertised_udp_payload, static_cast<std::uint8_t>(code >> 4), q.opt->dnssec_ok);
  return truncated;
}

}  // namespace

bool build_response(std::vector<std::uint8_t>& out, const query& q, rcode rc,
                    std::span<const boost::asio::ip::address> answers, std::chrono::seconds ttl, std::size_t limit) {
  return build(out, q, rc, answers, ttl, limit, false);
}

void build_truncated(std::vector<std::uint8_t>& out, const query& q, rcode rc) {
  build(out, q, rc, {}, {}, 65535, true);
}

void build_forward_query(std::vector<std::uint8_t>& out, const query& q, std::uint16_t id, std::uint16_t udp_payload) {
  std::uint16_t flags = 0;  // QR=0, OPCODE QUERY
  if (q.rd) flags |= flag_rd;
  if (q.cd) flags |= flag_cd;
  out.clear();
  put_header(out, id, flags, 1, 0, 0, q.opt ? 1 : 0);
  put_question(out, *q.q);
  if (q.opt) put_opt(out, udp_payload, 0, q.opt->dnssec_ok);
}

bool is_response_to(byte_span w, std::uint16_t id, const question& q) noexcept {
  if (w.size() < header_bytes) return false;
  const std::uint16_t flags = get16(w, 2);
  if (get16(w, 0) != id || !(flags & flag_qr) || ((flags >> opcode_shift) & opcode_mask) != opcode_query ||
      get16(w, 4) != 1)
    return false;
  std::size_t pos = header_bytes;
  // The question name is never compressed (a pointer could only point into the header),
  // so comparing in place needs no copy.
  const std::size_t start = pos;
  if (!read_name(w, pos, nullptr).empty() || w.size() - pos < 4) return false;
  const std::string_view got(reinterpret_cast<const char*>(w.data() + start), pos - start);
  return names_equal(got, q.name) && get16(w, pos) == q.type && get16(w, pos + 2) == q.klass;
}

void set_id(std::span<std::uint8_t> wire, std::uint16_t id) noexcept {
  wire[0] = static_cast<std::uint8_t>(id >> 8);
  wire[1] = static_cast<std::uint8_t>(id & 0xff);
}

}  // namespace egress::proxy::dns
