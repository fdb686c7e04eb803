// The configuration mapped onto each part's own settings: the parts (cluster, sharding,
// checks) know nothing of the configuration file, so tests and benchmarks build their
// settings directly and the keys are read in one place.
#pragma once

#include "esm/checks/engine.hpp"
#include "esm/cluster/election.hpp"
#include "esm/cluster/membership.hpp"
#include "esm/config/config.hpp"
#include "esm/ping/prober.hpp"
#include "esm/telemetry/admin_server.hpp"
#include "esm/telemetry/collect.hpp"
#include "esm/sharding/leader.hpp"
#include "esm/sharding/worker.hpp"

namespace esm::daemon {

// session_ttl, lock_delay, lock_monitor_retries, lock_monitor_retry_time, blocking_query_wait,
// retry_interval and the Consul request timeout.
cluster::lock_timing make_lock_timing(const config::config& cfg);

// The lock on <consul_kv_path>leader. Agent mode: session on the local agent's node with its
// serfHealth. Agentless: session on `S:I:node` bound to no check at all (the synthetic node
// has no serfHealth), so it lives by its TTL alone.
cluster::election_options make_election_options(const config::config& cfg);

cluster::membership_options make_membership_options(const config::config& cfg);

// consul_kv_path, consul_service, consul_service_tag, external_node_meta, partition,
// blocking_query_wait, retry_interval.
sharding::leader_settings make_leader_settings(const config::config& cfg);

// The same keys, stale_read_nodes, and service_id = consul_service + ":" + instance_id.
sharding::worker_settings make_worker_settings(const config::config& cfg);

// min_check_interval, passing_threshold, critical_threshold, threshold_mode,
// max_concurrent_probes, batch_flush_interval, check_update_interval, retry_interval.
checks::engine_settings make_engine_settings(const config::config& cfg);

// consul_kv_path, partition, ping_type, node_probe_interval, node_probe_timeout,
// node_health_refresh_interval, node_reconnect_timeout, batch_flush_interval,
// disable_coordinate_updates, retry_interval.
ping::prober_settings make_prober_settings(const config::config& cfg);

// client_address, enable_debug, blocking_query_wait (how long Consul may stay silent).
telemetry::admin_settings make_admin_settings(const config::config& cfg);

// The telemetry block, max_concurrent_probes (for esmd_max_concurrent_probes).
telemetry::telemetry_settings make_telemetry_settings(const config::config& cfg);

}  // namespace esm::daemon
