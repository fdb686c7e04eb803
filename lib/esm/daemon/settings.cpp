#include "esm/daemon/settings.hpp"

#include <algorithm>

namespace esm::daemon {

using std::chrono::duration_cast;
using std::chrono::milliseconds;

cluster::lock_timing make_lock_timing(const config::config& cfg) {
  cluster::lock_timing t;
  t.session_ttl = cfg.session_ttl;
  t.lock_delay = cfg.lock_delay;
  t.monitor_retries = cfg.lock_monitor_retries;
  t.monitor_retry_time = cfg.lock_monitor_retry_time;
  t.blocking_wait = cfg.blocking_query_wait;
  t.retry_interval = cfg.retry_interval;
  t.request_timeout = cfg.consul.request_timeout;
  return t;
}

cluster::election_options make_election_options(const config::config& cfg) {
  cluster::instance_names n(cfg.consul_service, cfg.instance_id, cfg.consul_kv_path);
  cluster::election_options o;
  o.key = n.leader_key();
  o.timing = make_lock_timing(cfg);
  if (cfg.enable_agentless) {
    o.session_node = n.node_name();
    o.session_checks = std::vector<std::string>{};
  }
  return o;
}

cluster::membership_options make_membership_options(const config::config& cfg) {
  cluster::membership_options o(cluster::instance_names(cfg.consul_service, cfg.instance_id, cfg.consul_kv_path));
  o.tag = cfg.consul_service_tag;
  o.agentless = cfg.enable_agentless;
  o.datacenter = cfg.datacenter;
  o.partition = cfg.partition;
  o.deregister_after = cfg.instance_deregister_after;
  o.timing.session_ttl = cfg.session_ttl;
  o.timing.lock_delay = cfg.lock_delay;
  o.timing.retry_interval = cfg.retry_interval;
  o.timing.request_timeout = cfg.consul.request_timeout;
  o.duplicate_wait = cluster::duplicate_wait_for(o);
  return o;
}

sharding::leader_settings make_leader_settings(const config::config& cfg) {
  sharding::leader_settings s;
  s.kv_path = cfg.consul_kv_path;
  s.service = cfg.consul_service;
  s.service_tag = cfg.consul_service_tag;
  s.node_meta.assign(cfg.external_node_meta.begin(), cfg.external_node_meta.end());
  s.partition = cfg.partition;
  s.wait = duration_cast<milliseconds>(cfg.blocking_query_wait);
  s.retry_cap = std::max(duration_cast<milliseconds>(cfg.retry_interval), s.retry_base);
  return s;
}

sharding::worker_settings make_worker_settings(const config::config& cfg) {
  sharding::worker_settings s;
  s.kv_path = cfg.consul_kv_path;
  s.service_id = cfg.consul_service + ":" + cfg.instance_id;
  s.node_meta.assign(cfg.external_node_meta.begin(), cfg.external_node_meta.end());
  s.partition = cfg.partition;
  s.stale_reads = cfg.stale_read_nodes;
  s.wait = duration_cast<milliseconds>(cfg.blocking_query_wait);
  s.retry_cap = std::max(duration_cast<milliseconds>(cfg.retry_interval), s.retry_base);
  return s;
}

checks::engine_settings make_engine_settings(const config::config& cfg) {
  auto ms_of = [](std::chrono::nanoseconds d) { return duration_cast<milliseconds>(d); };
  checks::engine_settings s;
  s.plans.min_interval = ms_of(cfg.min_check_interval);
  s.plans.passing_threshold = cfg.passing_threshold;
  s.plans.critical_threshold = cfg.critical_threshold;
  s.plans.legacy_thresholds = cfg.thresholds() == config::threshold_kind::legacy;
  auto max = cfg.max_concurrent_probes > 0 ? cfg.max_concurrent_probes
                                           : config::default_max_concurrent_probes();
  s.max_concurrent = static_cast<std::size_t>(std::max<std::int64_t>(1, max));
  s.batch_flush_interval = ms_of(cfg.batch_flush_interval);
  s.check_update_interval = ms_of(cfg.check_update_interval);
  s.retry_cap = ms_of(cfg.retry_interval);
  if (s.retry_cap < s.retry_base) s.retry_base = s.retry_cap;
  return s;
}

ping::prober_settings make_prober_settings(const config::config& cfg) {
  auto ms_of = [](std::chrono::nanoseconds d) { return duration_cast<milliseconds>(d); };
  ping::prober_settings s;
  s.kv_path = cfg.consul_kv_path;
  s.partition = cfg.partition;
  s.kind = cfg.ping() == config::ping_kind::socket ? ping::socket_kind::raw : ping::socket_kind::udp;
  s.interval = ms_of(cfg.node_probe_interval);
  s.timeout = ms_of(cfg.node_probe_timeout);
  s.health.refresh = ms_of(cfg.node_health_refresh_interval);
  s.health.reconnect_timeout = ms_of(cfg.node_reconnect_timeout);
  s.batch_flush_interval = ms_of(cfg.batch_flush_interval);
  s.coordinates = !cfg.disable_coordinate_updates;
  s.retry_cap = ms_of(cfg.retry_interval);
  if (s.retry_cap < s.retry_base) s.retry_base = s.retry_cap;
  return s;
}

telemetry::admin_settings make_admin_settings(const config::config& cfg) {
  telemetry::admin_settings s;
  s.address = cfg.client_address;
  s.enable_debug = cfg.enable_debug;
  // Longer than a blocking query's wait: a quiet share gets Consul's answers only that often.
  s.consul_fresh = telemetry::consul_fresh_for(duration_cast<milliseconds>(cfg.blocking_query_wait));
  return s;
}

telemetry::telemetry_settings make_telemetry_settings(const config::config& cfg) {
  auto max = cfg.max_concurrent_probes > 0 ? cfg.max_concurrent_probes : config::default_max_concurrent_probes();
  return telemetry::make_telemetry_settings(cfg.telemetry, max);
}

}  // namespace esm::daemon
