#include "egress/proxy/acl.hpp"

#include <algorithm>
#include <array>
#include <optional>
#include <utility>

namespace egress::proxy {

int status_for(std::string_view reason) noexcept {
  using entry = std::pair<std::string_view, int>;
  static constexpr std::array<entry, 24> table{{
      {"allowed", 200},
      {"host_not_allowed", 403},
      {"ip_literal_not_allowed", 403},
      {"port_not_allowed", 403},
      {"address_denied", 403},
      {"address_not_allowed", 403},
      {"sni_mismatch", 403},
      {"sni_missing", 403},
      {"ech_present", 403},
      {"headers_too_large", 431},
      {"too_many_fields", 431},
      {"header_timeout", 408},
      {"dns_not_found", 502},
      {"dns_failure", 502},
      {"dns_refused", 502},
      {"connect_failed", 502},
      {"connect_refused", 502},
      {"dns_timeout", 504},
      {"connect_timeout", 504},
      {"draining", 503},
      {"too_many_connections", 503},
      {"version_not_supported", 505},
      {"bad_upstream_response", 502},
      {"upstream_timeout", 504},
  }};
  for (const auto& [r, s] : table)
    if (r == reason) return s;
  // Request-head and host-syntax reasons (request_head.hpp, host_error_reason) are
  // malformed requests; parse_request_head reports its own status, this is the fallback.
  static constexpr std::array<std::string_view, 13> malformed{
      "origin_form",       "asterisk_form",      "userinfo_in_target",       "obs_fold",
      "fragment_in_target", "unsupported_scheme", "https_absolute_form",      "port_missing",
      "version_missing",   "incomplete_head",    "whitespace_before_colon",  "transfer_encoding_http10",
      "connect_with_body"};
  if (reason.starts_with("host_") || reason.starts_with("bad_") || reason.starts_with("duplicate_") ||
      reason == "cl_and_te" || std::find(malformed.begin(), malformed.end(), reason) != malformed.end())
    return 400;
  return 403;
}

decision check_target(const std::vector<common::allow_entry>& allowlist, const common::host& host,
                      std::uint16_t port) noexcept {
  bool name_matched = false;
  for (const auto& e : allowlist) {
    if (!e.pattern.matches(host)) continue;
    name_matched = true;
    if (std::binary_search(e.ports.begin(), e.ports.end(), port)) return decision::allow();
  }
  if (name_matched) return decision::deny("port_not_allowed");
  return decision::deny(host.is_ip() ? "ip_literal_not_allowed" : "host_not_allowed");
}

address_filter_result filter_addresses(const common::upstream_policy& policy,
                                       const std::vector<boost::asio::ip::address>& addresses) {
  address_filter_result out;
  out.allowed.reserve(addresses.size());
  for (const auto& a : addresses) {
    auto v = policy.check(a);
    if (v.allowed) {
      out.allowed.push_back(a);
    } else if (out.first_reason.empty()) {
      out.first_reason = v.reason;
      out.first_refused = a;
    }
  }
  return out;
}

decision check_sni(const hello_result& hello, const common::host& connect_host, bool allow_missing_sni,
                   bool allow_ech) {
  if (hello.state == hello_state::invalid) return decision::deny(hello.reason);
  if (hello.state != hello_state::complete) return decision::deny("client_hello_incomplete");
  if (hello.encrypted_client_hello && !allow_ech) return decision::deny("ech_present");
  // An IP-literal CONNECT target has no SNI to send (RFC 6066 §3); the allowlist named that address.
  if (!hello.server_name)
    return allow_missing_sni || connect_host.is_ip() ? decision::allow() : decision::deny("sni_missing");
  auto sni = common::normalize_host(*hello.server_name, common::host_syntax::bare);
  if (!sni) return decision::deny("sni_invalid");
  if (sni->is_ip()) return decision::deny("sni_ip_literal");
  if (sni->text != connect_host.text || connect_host.is_ip()) return decision::deny("sni_mismatch");
  return decision::allow();
}

bool name_allowlisted(const std::vector<common::allow_entry>& allowlist, const common::host& host) noexcept {
  if (host.is_ip()) return false;
  return std::any_of(allowlist.begin(), allowlist.end(), [&](const common::allow_entry& e) { return e.pattern.matches(host); });
}

namespace {

// `name` (normalised dotted text) is a proper ancestor of `below`: "wikidata.org" of
// "www.wikidata.org", on a label boundary.
bool is_ancestor(std::string_view name, std::string_view below) noexcept {
  return below.size() > name.size() + 1 && below.ends_with(name) && below[below.size() - name.size() - 1] == '.';
}

}  // namespace

dns_decision check_dns_question(const common::config& cfg, const dns::question& q) noexcept {
  const auto& d = cfg.proxy.dns;
  if (q.klass != dns::class_in) return {dns_action::refused, false, "class_not_in"};
  if (q.type == dns::type_axfr || q.type == dns::type_ixfr) return {dns_action::refused, false, "zone_transfer_refused"};
  for (const auto& domain : d.cluster_domains)
    if (dns::name_at_or_under(q.name, domain)) return {dns_action::forward, true, "cluster_forward"};
  const dns_decision not_allowed{dns_action::nxdomain, false, "name_not_allowed"};
  const dns_decision exists{dns_action::nodata, false, "name_not_allowed"};
  std::optional<common::host> host;
  try {
    auto text = dns::name_dotted(q.name);
    if (!text) return not_allowed;
    if (text->empty()) return exists;  // the root
    auto h = common::normalize_host(*text, common::host_syntax::bare);
    if (!h || h->is_ip()) return not_allowed;
    host = std::move(*h);
  } catch (...) {  // std::bad_alloc on a name of at most 253 bytes: fail closed
    return not_allowed;
  }
  if (name_allowlisted(cfg.allowlist, *host)) {
    if (q.type == dns::type_https || q.type == dns::type_svcb) return {dns_action::nodata, false, "https_record_withheld"};
    if ((q.type == dns::type_a && d.answer_ipv4) || (q.type == dns::type_aaaa && d.answer_ipv6))
      return {dns_action::answer, true, "allowlisted"};
    return {dns_action::nodata, true, "allowlisted_nodata"};
  }
  for (const auto& e : cfg.allowlist)
    if (!e.pattern.base.is_ip() && (is_ancestor(host->text, e.pattern.base.text) ||
                                    (e.pattern.wildcard && e.pattern.base.text == host->text)))
      return exists;
  for (const auto& domain : d.cluster_domains)
    if (is_ancestor(host->text, domain)) return exists;
  return not_allowed;
}

}  // namespace egress::proxy
