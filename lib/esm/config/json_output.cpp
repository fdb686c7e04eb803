// The effective configuration as JSON (for -validate) and the SIGHUP change list. Both walk
// one JSON rendering of the configuration, so a key added to the rendering is automatically
// compared on reload.
#include <boost/json/object.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>

#include <algorithm>

#include "esm/config/config.hpp"
#include "esm/util/duration.hpp"

namespace esm::config {
namespace {

namespace json = boost::json;

constexpr std::string_view redacted = "<redacted>";

json::value secret(const std::string& s, bool redact) {
  if (redact && !s.empty()) return json::string(redacted);
  return json::string(s);
}

json::value dur(duration d) { return json::string(esm::util::format_go_duration(d)); }

json::array strings(const std::vector<std::string>& v) {
  json::array a;
  for (const auto& s : v) a.emplace_back(json::string(s));
  return a;
}

json::object render(const config& c, bool redact) {
  json::object o;
  o["log_level"] = c.log_level;
  o["log_json"] = c.log_json;
  o["log_file"] = c.log_file;
  o["log_rotate_bytes"] = c.log_rotate_bytes;
  o["log_rotate_duration"] = dur(c.log_rotate_duration);
  o["log_rotate_max_files"] = c.log_rotate_max_files;
  o["enable_syslog"] = c.enable_syslog;
  o["syslog_facility"] = c.syslog_facility;
  o["enable_debug"] = c.enable_debug;
  o["enable_agentless"] = c.enable_agentless;
  o["instance_id"] = c.instance_id;
  o["consul_service"] = c.consul_service;
  o["consul_service_tag"] = c.consul_service_tag;
  o["consul_kv_path"] = c.consul_kv_path;
  json::object meta;
  for (const auto& [k, v] : c.external_node_meta) meta[k] = v;
  o["external_node_meta"] = std::move(meta);
  o["partition"] = c.partition;
  o["node_reconnect_timeout"] = dur(c.node_reconnect_timeout);
  o["node_probe_interval"] = dur(c.node_probe_interval);
  o["node_health_refresh_interval"] = dur(c.node_health_refresh_interval);
  o["node_probe_timeout"] = dur(c.node_probe_timeout);
  o["batch_flush_interval"] = dur(c.batch_flush_interval);
  o["http_addr"] = c.http_addr;
  o["token"] = secret(c.token, redact);
  o["datacenter"] = c.datacenter;
  o["ca_file"] = c.ca_file;
  o["ca_path"] = c.ca_path;
  o["cert_file"] = c.cert_file;
  o["key_file"] = c.key_file;
  o["tls_server_name"] = c.tls_server_name;
  o["https_ca_file"] = c.https_ca_file;
  o["https_ca_path"] = c.https_ca_path;
  o["https_cert_file"] = c.https_cert_file;
  o["https_key_file"] = c.https_key_file;
  o["client_address"] = c.client_address;
  o["ping_type"] = c.ping_type;
  o["disable_coordinate_updates"] = c.disable_coordinate_updates;
  o["stale_read_nodes"] = c.stale_read_nodes;
  o["passing_threshold"] = c.passing_threshold;
  o["critical_threshold"] = c.critical_threshold;

  const auto& t = c.telemetry;
  json::object tel;
  tel["circonus_api_app"] = t.circonus_api_app;
  tel["circonus_api_token"] = secret(t.circonus_api_token, redact);
  tel["circonus_api_url"] = t.circonus_api_url;
  tel["circonus_broker_id"] = t.circonus_broker_id;
  tel["circonus_broker_select_tag"] = t.circonus_broker_select_tag;
  tel["circonus_check_display_name"] = t.circonus_check_display_name;
  tel["circonus_check_force_metric_activation"] = t.circonus_check_force_metric_activation;
  tel["circonus_check_id"] = t.circonus_check_id;
  tel["circonus_check_instance_id"] = t.circonus_check_instance_id;
  tel["circonus_check_search_tag"] = t.circonus_check_search_tag;
  tel["circonus_check_tags"] = t.circonus_check_tags;
  tel["circonus_submission_interval"] = t.circonus_submission_interval;
  tel["circonus_submission_url"] = t.circonus_submission_url;
  tel["disable_hostname"] = t.disable_hostname;
  tel["dogstatsd_addr"] = t.dogstatsd_addr;
  tel["dogstatsd_tags"] = strings(t.dogstatsd_tags);
  tel["filter_default"] = t.filter_default;
  tel["prefix_filter"] = strings(t.prefix_filter);
  tel["metrics_prefix"] = t.metrics_prefix;
  tel["prometheus_retention_time"] = dur(t.prometheus_retention_time);
  tel["statsd_address"] = t.statsd_address;
  tel["statsite_address"] = t.statsite_address;
  o["telemetry"] = std::move(tel);

  o["session_ttl"] = dur(c.session_ttl);
  o["lock_delay"] = dur(c.lock_delay);
  o["lock_monitor_retries"] = c.lock_monitor_retries;
  o["lock_monitor_retry_time"] = dur(c.lock_monitor_retry_time);
  o["check_update_interval"] = dur(c.check_update_interval);
  o["instance_deregister_after"] = dur(c.instance_deregister_after);
  o["blocking_query_wait"] = dur(c.blocking_query_wait);
  o["retry_interval"] = dur(c.retry_interval);
  o["min_check_interval"] = dur(c.min_check_interval);
  o["max_concurrent_probes"] = c.max_concurrent_probes;
  o["threshold_mode"] = c.threshold_mode;

  // What esmd will actually use to reach Consul, after the environment.
  const auto& k = c.consul;
  json::object con;
  con["scheme"] = k.scheme;
  con["address"] = k.address;
  con["path_prefix"] = k.path_prefix;
  con["token"] = secret(k.token, redact);
  con["http_auth"] = secret(k.http_auth, redact);
  con["datacenter"] = k.datacenter;
  con["partition"] = k.partition;
  con["namespace"] = k.name_space;
  con["tls_ca_file"] = k.tls.ca_file;
  con["tls_ca_path"] = k.tls.ca_path;
  con["tls_cert_file"] = k.tls.cert_file;
  con["tls_key_file"] = k.tls.key_file;
  con["tls_server_name"] = k.tls.server_name;
  con["tls_verify"] = k.tls.verify;
  o["consul"] = std::move(con);
  return o;
}

void pretty(std::string& out, const json::value& v, int indent) {
  auto pad = [&](int n) { out.append(std::size_t(n) * 2, ' '); };
  if (v.is_object()) {
    const auto& o = v.get_object();
    if (o.empty()) {
      out += "{}";
      return;
    }
    out += "{\n";
    bool first = true;
    for (const auto& kv : o) {
      if (!first) out += ",\n";
      first = false;
      pad(indent + 1);
      out += json::serialize(json::string_view(kv.key()));
      out += ": ";
      pretty(out, kv.value(), indent + 1);
    }
    out += "\n";
    pad(indent);
    out += "}";
  } else if (v.is_array()) {
    const auto& a = v.get_array();
    if (a.empty()) {
      out += "[]";
      return;
    }
    out += "[\n";
    for (std::size_t i = 0; i < a.size(); ++i) {
      if (i) out += ",\n";
      pad(indent + 1);
      pretty(out, a[i], indent + 1);
    }
    out += "\n";
    pad(indent);
    out += "]";
  } else {
    out += json::serialize(v);
  }
}

void diff(const json::object& a, const json::object& b, const std::string& prefix,
          std::vector<std::string>& out) {
  for (const auto& kv : a) {
    std::string key = prefix + std::string(kv.key());
    const json::value* other = b.if_contains(kv.key());
    // external_node_meta is one setting (its map replaces whole), the other objects are groups.
    if (other && kv.value().is_object() && other->is_object() && key != "external_node_meta") {
      diff(kv.value().get_object(), other->get_object(), key + ".", out);
    } else if (!other || *other != kv.value()) {
      out.push_back(key);
    }
  }
}

}  // namespace

std::string to_json(const config& c) {
  std::string out;
  pretty(out, render(c, true), 0);
  out += '\n';
  return out;
}

std::vector<std::string> describe_changes(const config& before, const config& after) {
  std::vector<std::string> out;
  diff(render(before, false), render(after, false), "", out);
  return out;
}

bool applies_at_runtime(std::string_view key) { return key == "log_level"; }

}  // namespace esm::config
