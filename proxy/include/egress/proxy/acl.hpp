#pragma once
/// The proxy's policy decisions as values (verdict + stable reason), free of sockets:
/// target host/port against the allowlist, resolved addresses against the address
/// policy, and the ClientHello's SNI against the CONNECT host.

#include "egress/common/cidr.hpp"
#include "egress/common/config.hpp"
#include "egress/common/host_name.hpp"
#include "egress/proxy/client_hello.hpp"

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

}  // namespace egress::proxy
