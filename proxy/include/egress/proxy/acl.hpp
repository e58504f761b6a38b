#pragma once
/// The proxy's policy decisions as values (verdict + stable reason), free of sockets:
/// target host/port against the allowlist, resolved addresses against the address
/// policy, the ClientHello's SNI against the CONNECT host, and what the DNS responder
/// does with a question.

#include "egress/common/cidr.hpp"
#include "egress/common/config.hpp"
#include "egress/common/host_name.hpp"
#include "egress/proxy/client_hello.hpp"
#include "egress/proxy/dns_message.hpp"

#include <boost/asio/ip/address.hpp>

#include <cstdint>
#include <string_view>
#include <vector>

namespace egress::proxy {

/// A decision: allowed, or refused with a stable snake_case reason shared by logs,
/// metrics, the `X-Egress-Denied` response header and tests.
struct decision {
  bool allowed = false;
  std::string_view reason;  ///< "allowed" when allowed; static storage

  static decision allow() noexcept { return {true, "allowed"}; }
  static decision deny(std::string_view why) noexcept { return {false, why}; }
};

/// The HTTP status a refusal reason maps to: 400 malformed request (request-head and
/// host syntax reasons), 403 policy (host, port, address, SNI, Host header), 408 header
/// timeout, 431 headers too large, 502 DNS failure, connection refused or a bad upstream
/// response, 503 draining or over the connection limit, 504 DNS, connect or upstream
/// timeout, 505 HTTP/2+. Unknown reasons map to 403 (fail closed).
int status_for(std::string_view reason) noexcept;

/// The request-target check against the allowlist.
///
/// Names match an entry by `host_pattern::matches` (exact, or `*.suffix` on a label
/// boundary); IP literals only when an entry names that very address. The port must be in
/// the matching entry's ports (default 443; CONNECT and absolute-form alike).
/// Reasons: "host_not_allowed", "ip_literal_not_allowed", "port_not_allowed".
/// Cost: linear in the allowlist (names are compared as normalised strings).
decision check_target(const std::vector<common::allow_entry>& allowlist, const common::host& host,
                      std::uint16_t port) noexcept;

/// The addresses of a resolved (or literal) target that may be dialled, in the given
/// order, and the first refusal reason when none may.
struct address_filter_result {
  std::vector<boost::asio::ip::address> allowed;
  std::string_view first_reason;  ///< "address_denied" / "address_not_allowed"; empty if none refused
  boost::asio::ip::address first_refused;
};

/// Applies `policy` to every address; keeps the order of `addresses`.
address_filter_result filter_addresses(const common::upstream_policy& policy,
                                       const std::vector<boost::asio::ip::address>& addresses);

/// The SNI check after a CONNECT: the ClientHello (complete or invalid) against the
/// normalised CONNECT host.
///
/// Reasons: the parser's own reject reasons ("not_tls", "client_hello_malformed",
/// "client_hello_too_large", "sni_invalid"); "ech_present" when an
/// encrypted_client_hello extension is present and `allow_ech` is false; "sni_missing"
/// when there is no server_name and `allow_missing_sni` is false; "sni_ip_literal" when
/// the name is an IP literal (RFC 6066 §3 forbids them); "sni_mismatch" when the
/// normalised SNI differs from the CONNECT host. Source: RFC 6066 §3, RFC 8446 §4.1.2.
decision check_sni(const hello_result& hello, const common::host& connect_host, bool allow_missing_sni,
                   bool allow_ech);

/// True when the normalised name `host` is matched by the pattern of any allowlist entry,
/// whatever its ports (`host_pattern::matches`, the matcher `check_target` uses). False
/// for IP literals: a DNS question never names an address.
bool name_allowlisted(const std::vector<common::allow_entry>& allowlist, const common::host& host) noexcept;

/// What the DNS responder does with a question.
enum class dns_action {
  answer,    ///< the proxy's address for the question's family (A: answer_ipv4, AAAA: answer_ipv6)
  nodata,    ///< NOERROR without answer records
  forward,   ///< relay to the cluster DNS and answer as it answers
  nxdomain,  ///< NXDOMAIN, nothing sent anywhere
  refused,   ///< REFUSED, nothing sent anywhere
};

/// A DNS verdict: the action, whether it counts as allowed, and a stable reason word
/// (static storage) for the `dns` log line and `egress_proxy_dns_queries_total`.
struct dns_decision {
  dns_action action = dns_action::nxdomain;
  bool allowed = false;
  std::string_view reason;
  friend bool operator==(const dns_decision&, const dns_decision&) = default;
};

/// The DNS responder's policy for one question under `cfg` (the snapshot current when
/// the query arrived), checked in this order:
///  1. QCLASS other than IN: refused, "class_not_in".
///  2. QTYPE AXFR or IXFR: refused, "zone_transfer_refused" (never forwarded either).
///  3. Name at or under one of `proxy.dns.cluster_domains` (label by label, any case):
///     forward, allowed, "cluster_forward". Before the allowlist, so a search-list
///     expansion of an allowlisted name ("www.wikidata.org.ns.svc.cluster.local") goes
///     to the cluster DNS and is answered as it answers there.
///  4. Name allowlisted by any entry (`name_allowlisted`; the name through
///     `normalize_host`, so case and the root label fold exactly as for CONNECT):
///     A with `answer_ipv4` set, AAAA with `answer_ipv6` set: answer, allowed,
///     "allowlisted"; HTTPS (65) and SVCB (64): nodata, denied, "https_record_withheld"
///     (no ECH configs or alternative endpoints reach the client, RFC 9460); any other
///     type, or a family without an answer address: nodata, allowed, "allowlisted_nodata".
///  5. The root, or a name above an allowlisted name or a cluster domain ("wikidata.org"
///     when only "www.wikidata.org" is listed, "local" for "cluster.local"): nodata, denied,
///     "name_not_allowed": it exists as an empty non-terminal, and NXDOMAIN would tell
///     an RFC 8020 cache that nothing below it exists either.
///  6. Anything else (a name that is not a host name, an IP literal, every other name):
///     nxdomain, denied, "name_not_allowed".
/// Cost: linear in the allowlist and the cluster domains.
dns_decision check_dns_question(const common::config& cfg, const dns::question& q) noexcept;

}  // namespace egress::proxy
