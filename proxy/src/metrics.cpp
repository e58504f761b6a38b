// Prometheus text rendering of the proxy's counters, gauges and histograms; the log's
// own counters are read from log.hpp. No I/O.

#include "egress/proxy/metrics.hpp"

#include "egress/proxy/log.hpp"

#include <cstdio>

namespace egress::proxy {
namespace {

std::string number(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.9g", v);
  return buf;
}

void header(std::string& out, std::string_view name, std::string_view help, std::string_view type) {
  out += "# HELP ";
  out += name;
  out += ' ';
  out += help;
  out += "\n# TYPE ";
  out += name;
  out += ' ';
  out += type;
  out += '\n';
}

void sample(std::string& out, std::string_view name, std::string_view labels, const std::string& value) {
  out += name;
  if (!labels.empty()) {
    out += '{';
    out += labels;
    out += '}';
  }
  out += ' ';
  out += value;
  out += '\n';
}

}  // namespace

void histogram::observe(double seconds) noexcept {
  for (std::size_t i = 0; i < bounds.size(); ++i)
    if (seconds <= bounds[i]) ++buckets_[i];
  ++count_;
  sum_ += seconds;
}

void histogram::render(std::string& out, std::string_view name, std::string_view help) const {
  header(out, name, help, "histogram");
  std::string bucket = std::string(name) + "_bucket";
  for (std::size_t i = 0; i < bounds.size(); ++i)
    sample(out, bucket, "le=\"" + number(bounds[i]) + "\"", std::to_string(buckets_[i]));
  sample(out, bucket, "le=\"+Inf\"", std::to_string(count_));
  sample(out, std::string(name) + "_sum", "", number(sum_));
  sample(out, std::string(name) + "_count", "", std::to_string(count_));
}

void metrics::decision(bool allowed, std::string_view reason) { ++decisions_[{allowed, reason}]; }

void metrics::dns_query(bool allowed, std::string_view reason) { ++dns_queries_[{allowed, reason}]; }

std::string metrics::render() const {
  std::string out;
  out.reserve(4096);
  header(out, "egress_proxy_decisions_total", "Decisions by verdict and reason.", "counter");
  for (const auto& [k, v] : decisions_)
    sample(out, "egress_proxy_decisions_total",
           std::string("verdict=\"") + (k.first ? "allow" : "deny") + "\",reason=\"" + std::string(k.second) + "\"",
           std::to_string(v));
  header(out, "egress_proxy_dns_queries_total", "DNS responder queries by verdict and reason.", "counter");
  for (const auto& [k, v] : dns_queries_)
    sample(out, "egress_proxy_dns_queries_total",
           std::string("verdict=\"") + (k.first ? "allow" : "deny") + "\",reason=\"" + std::string(k.second) + "\"",
           std::to_string(v));
  header(out, "egress_proxy_connections", "Client connections open now.", "gauge");
  sample(out, "egress_proxy_connections", "", std::to_string(connections_));
  header(out, "egress_proxy_connections_total", "Client connections accepted.", "counter");
  sample(out, "egress_proxy_connections_total", "", std::to_string(connections_total_));
  header(out, "egress_proxy_active_tunnels", "CONNECT tunnels relaying now.", "gauge");
  sample(out, "egress_proxy_active_tunnels", "", std::to_string(tunnels_));
  header(out, "egress_proxy_tunnels_closed_by_proxy_total",
         "Established tunnels the proxy closed: revoked by a reload, or past max_tunnel_lifetime_ms.", "counter");
  for (const auto& [cause, v] : tunnels_ended_by_)
    sample(out, "egress_proxy_tunnels_closed_by_proxy_total", "cause=\"" + std::string(cause) + "\"", std::to_string(v));
  header(out, "egress_proxy_bytes_total", "Bytes relayed by direction.", "counter");
  sample(out, "egress_proxy_bytes_total", "direction=\"up\"", std::to_string(bytes_up_));
  sample(out, "egress_proxy_bytes_total", "direction=\"down\"", std::to_string(bytes_down_));
  header(out, "egress_proxy_config_reloads_total", "SIGHUP reloads by result.", "counter");
  sample(out, "egress_proxy_config_reloads_total", "result=\"ok\"", std::to_string(reloads_ok_));
  sample(out, "egress_proxy_config_reloads_total", "result=\"failed\"", std::to_string(reloads_failed_));
  header(out, "egress_proxy_log_lines_dropped_total",
         "Log lines dropped because stdout did not take them and the log buffer was full.", "counter");
  sample(out, "egress_proxy_log_lines_dropped_total", "", std::to_string(log_lines_dropped()));
  header(out, "egress_proxy_log_buffered_bytes", "Bytes of log lines waiting for stdout now.", "gauge");
  sample(out, "egress_proxy_log_buffered_bytes", "", std::to_string(log_buffered_bytes()));
  dns_.render(out, "egress_proxy_dns_duration_seconds", "DNS lookup latency (cache misses and hits).");
  connect_.render(out, "egress_proxy_connect_duration_seconds", "Upstream TCP connect latency.");
  return out;
}

}  // namespace egress::proxy
