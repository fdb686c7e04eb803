// The daemon's metrics, collected at scrape or flush time from the stats structs every part
// keeps (daemon/status.hpp), so no hot path calls a registry.
//
// consul-esm's metrics (reference §8.1) keep their go-metrics keys and meaning: `esm.agent.
// isLeader`, `esm.agents.healthy` (set by the leader only; 0 elsewhere), `esm.nodes.monitored`,
// `esm.services.monitored`, `esm.checks.count|healthy|unhealthy` (catalog statuses: passing
// is healthy), `check.txn`, `check.txn.retry`, `check.txn.batch_size`, `coord.txn`. The
// metrics_prefix is prepended as go-metrics' service name; the Prometheus name is the key
// joined with `_` (non [a-zA-Z0-9_] replaced): `esm_agent_isLeader`, `myprefix_check_txn`.
// consul-esm's names that break Prometheus' naming rules are exposed as `untyped` so that
// the names dashboards depend on stay: its counters (no `_total`; OpenMetrics would rename a
// counter) and the gauge `esm_checks_count` (a summary's reserved `_count` suffix). Only the
// camelCase of `esm_agent_isLeader` remains for promtool to remark on. That type is only for
// the exposition: each family also keeps its go-metrics kind (metric_family::kind), so the
// statsd-type sinks still send `esm.checks.count` as a gauge with the host name and the
// counters as deltas.
//
// Not exposed: consul-esm's timers `esm.checks.fetch_and_update.duration`, `checks.update`
// and `check.batch.flush` (summaries in milliseconds on its /metrics). No part records those
// durations (engine_stats and worker_stats hold counts and probe-run histograms only), and
// collecting at scrape time cannot recover them afterwards.
//
// The host name. go-metrics inserts it after the service name into every gauge key unless
// disable_hostname, so consul-esm's /metrics showed a 0-valued bare definition plus a live
// `<host>_esm_agent_isLeader` series. Prometheus knows the scraped instance (its `instance`
// label), so esmd's /metrics carries the live value under the bare name and never inserts the
// host; the statsd-type sinks (statsd.hpp) insert it into gauge keys as go-metrics does.
//
// The prefix filter works as go-metrics' does: the longest allowed or blocked prefix of the
// dotted key as that sink sees it (for Prometheus `prefix.esm.agent.isLeader`; for statsd
// gauges with the host name: `prefix.host.esm.agent.isLeader`) decides; no matching rule:
// filter_default. It is a byte prefix ("esm" also matches "esmd_..."). esmd's own metrics are
// filtered by their Prometheus name. One deviation: with no rule at all, every metric passes
// whatever filter_default says. go-metrics would block every live value then, and that is
// consul-esm's default configuration (filter_default unset is false), under which its sinks
// received nothing and /metrics showed only 0-valued definitions: no dashboard relies on it.
//
// prometheus_retention_time: kept in the settings but it decides nothing. The admin server
// serves /metrics whenever client_address is set, whatever the retention (consul-esm served
// it only with a retention > 0, reference §8.2): metrics cost nothing until scraped. Series
// do not expire either: go-metrics expires pushed values nobody updated, but collected
// values are current at every scrape.
//
// esmd's own metrics follow Prometheus naming (base units, `_total` counters), under `esmd_`,
// plus the standard `process_*` ones from /proc.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "esm/config/config.hpp"
#include "esm/daemon/status.hpp"
#include "esm/telemetry/metrics.hpp"

namespace esm::telemetry {

struct telemetry_settings {
  telemetry_settings() {}
  std::string metrics_prefix;  // go-metrics service name; "" for none
  std::string host_name;       // inserted into gauge keys of statsd-type sinks
  bool disable_hostname = false;
  bool filter_default = false;
  std::vector<std::string> allowed_prefixes, blocked_prefixes;
  std::chrono::nanoseconds prometheus_retention{0};  // as configured; decides nothing (above)
  std::int64_t max_concurrent_probes = 0;            // as configured (0: unknown)
  // Sinks (statsd.hpp): "host:port"; empty: none.
  std::string statsd_address, statsite_address, dogstatsd_address;
  std::vector<std::string> dogstatsd_tags;
};

// From the configuration; `host_name` empty: the system's host name (gethostname).
telemetry_settings make_telemetry_settings(const config::telemetry_config& t,
                                           std::int64_t max_concurrent_probes = 0,
                                           std::string host_name = {});

// Whether the filter lets the dotted key through (see above).
bool allow_metric(const telemetry_settings& s, std::string_view dotted_key);

// The dotted key a sink sees for a family: `[prefix.][host.]key` for consul-esm's metrics,
// `[host.]name` for esmd's own; the host name only in gauges, when `with_host` and not
// disable_hostname.
std::string sink_key(const metric_family& f, const telemetry_settings& s, bool with_host);

// Every metric, unfiltered (the statsd sinks filter by their own keys).
std::vector<metric_family> collect_all(const daemon::daemon_status& st, const telemetry_settings& s);

// The metrics for /metrics: collect_all filtered by their Prometheus-side keys. Render with
// render(collect(st, s), choose_format(accept)) and send content_type(format).
std::vector<metric_family> collect(const daemon::daemon_status& st, const telemetry_settings& s);

}  // namespace esm::telemetry
