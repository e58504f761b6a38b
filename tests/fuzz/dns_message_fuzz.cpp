// libFuzzer target for the DNS responder's wire format (proxy/include/egress/proxy/
// dns_message.hpp) and its policy (check_dns_question): every input is parsed as a
// query, judged and answered. Seeds: tests/data/dns_message/ (queries of each kind: A,
// AAAA with EDNS, HTTPS in mixed case, a cluster name with an EDNS option, BADVERS,
// QDCOUNT 2, NOTIFY, a compressed additional owner, a pointer loop, the root).
//
// Invariants checked (abort on failure):
// - drop only for input shorter than a header or with QR set; ok always has a question;
//   the question name is at most 255 bytes, ends with the root label and equals itself
//   ignoring case; a name without '.' bytes in labels normalises like the policy sees it;
// - every response built (direct answer, error, truncated stand-in) is a response to
//   the query (same ID and question, QR=1, RA=0), at most the client's UDP limit when a
//   limit applies and TC is then set exactly when answer records had to go;
// - the forwarded query parses back as a standard query with the same question;
// - the policy's reason is one of the documented words.

#include "egress/proxy/acl.hpp"
#include "egress/proxy/dns_message.hpp"

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <span>
#include <string_view>
#include <vector>

namespace {

namespace dns = egress::proxy::dns;
using namespace egress;

void require(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "invariant broken: %s\n", what);
    std::abort();
  }
}

const common::config& policy_config() {
  static const common::config cfg = [] {
    common::config c;
    c.has_proxy = true;
    c.proxy.capture = common::capture_mode::dns;
    c.proxy.dns.answer_ipv4 = boost::asio::ip::make_address("127.0.0.1");
    c.proxy.dns.answer_ipv6 = boost::asio::ip::make_address("::1");
    c.proxy.dns.cluster_dns = {"10.96.0.10"};
    for (const char* p : {"www.wikidata.org", "*.wikimedia.org", "185.15.59.224"}) {
      common::allow_entry e;
      e.pattern = *common::parse_host_pattern(p);
      e.ports = {443};
      c.allowlist.push_back(e);
    }
    return c;
  }();
  return cfg;
}

unsigned flags_of(const std::vector<std::uint8_t>& b) { return (unsigned{b[2]} << 8) | b[3]; }

void check_response(const std::vector<std::uint8_t>& out, const dns::query& q) {
  require(out.size() >= dns::header_bytes, "response shorter than a header");
  require(((unsigned{out[0]} << 8) | out[1]) == q.id, "response ID differs");
  const unsigned flags = flags_of(out);
  require((flags & 0x8000) != 0, "response without QR");
  require((flags & 0x0080) == 0, "response with RA");
  if (q.q) require(dns::is_response_to(out, q.id, *q.q), "response does not answer the question");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::span<const std::uint8_t> in(data, size);
  const auto r = dns::parse_query(in);
  if (r.status == dns::parse_status::drop) {
    require(size < dns::header_bytes || (data[2] & 0x80) != 0, "dropped a query");
    return 0;
  }
  require(size >= dns::header_bytes && (data[2] & 0x80) == 0, "answered a response");
  const dns::query& q = r.msg;
  std::vector<std::uint8_t> out;
  const std::size_t limit = dns::udp_limit(q);
  require(limit >= dns::classic_udp_payload, "UDP limit below 512");

  if (q.q) {
    const auto& name = q.q->name;
    require(!name.empty() && name.size() <= dns::max_name_bytes && name.back() == '\0', "question name shape");
    require(dns::names_equal(name, name), "name differs from itself");
    require(!dns::name_presentation(name).empty(), "empty presentation");
    if (auto dotted = dns::name_dotted(name)) {
      require(dotted->empty() ? name.size() == 1 : dotted->size() + 2 == name.size(), "dotted form length");
      const auto again = dns::encode_name(*dotted);
      require(again && *again == name, "dotted form does not encode back to the name");
    }
  }

  if (r.status == dns::parse_status::reply) {
    require(r.error == dns::rcode::formerr || r.error == dns::rcode::notimp || r.error == dns::rcode::badvers ||
                r.error == dns::rcode::servfail,
            "unexpected error rcode");
    require(r.error != dns::rcode::badvers || q.opt, "BADVERS without OPT");
    require(r.error != dns::rcode::notimp || !q.q, "NOTIMP with a question");
    dns::build_response(out, q, r.error, {}, {}, limit);
    check_response(out, q);
    return 0;
  }

  require(q.q.has_value(), "ok without a question");
  const auto d = proxy::check_dns_question(policy_config(), *q.q);
  static constexpr std::array<std::string_view, 7> reasons{
      "allowlisted", "allowlisted_nodata", "https_record_withheld", "cluster_forward",
      "name_not_allowed", "class_not_in", "zone_transfer_refused"};
  bool known = false;
  for (auto w : reasons) known = known || w == d.reason;
  require(known, "undocumented policy reason");

  // A direct answer with many records, so truncation is exercised near every limit.
  std::vector<boost::asio::ip::address> answers;
  const std::size_t n = size % 48;
  for (std::size_t i = 0; i < n; ++i)
    answers.push_back(i % 2 ? boost::asio::ip::address(boost::asio::ip::address_v6::loopback())
                            : boost::asio::ip::address(boost::asio::ip::address_v4::loopback()));
  const bool truncated = dns::build_response(out, q, dns::rcode::noerror, answers, std::chrono::seconds(5), limit);
  check_response(out, q);
  require(((flags_of(out) & 0x0200) != 0) == truncated, "TC and the truncation result disagree");
  require(!truncated || out.size() <= limit, "truncated answer still over the limit");
  require(truncated || n == 0 || out.size() <= limit, "answer over the limit without TC");

  dns::build_truncated(out, q, dns::rcode::nxdomain);
  check_response(out, q);
  require((flags_of(out) & 0x0200) != 0, "truncated stand-in without TC");

  dns::build_forward_query(out, q, 0x4242, 1232);
  const auto f = dns::parse_query(out);
  require(f.status == dns::parse_status::ok && f.msg.id == 0x4242 && f.msg.q == q.q, "forwarded query differs");
  require(f.msg.opt.has_value() == q.opt.has_value(), "forwarded query lost or gained EDNS");
  return 0;
}
