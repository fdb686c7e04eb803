#include "esm/telemetry/collect.hpp"

#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <utility>

namespace esm::telemetry {

telemetry_settings make_telemetry_settings(const config::telemetry_config& t,
                                           std::int64_t max_concurrent_probes,
                                           std::string host_name) {
  telemetry_settings s;
  s.metrics_prefix = t.metrics_prefix;
  s.disable_hostname = t.disable_hostname;
  s.filter_default = t.filter_default;
  s.allowed_prefixes = t.allowed_prefixes;
  s.blocked_prefixes = t.blocked_prefixes;
  s.prometheus_retention = t.prometheus_retention_time;
  s.max_concurrent_probes = max_concurrent_probes;
  s.statsd_address = t.statsd_address;
  s.statsite_address = t.statsite_address;
  s.dogstatsd_address = t.dogstatsd_addr;
  s.dogstatsd_tags = t.dogstatsd_tags;
  if (host_name.empty()) {
    char buf[256] = {};
    if (gethostname(buf, sizeof buf - 1) == 0) host_name = buf;
  }
  s.host_name = std::move(host_name);
  return s;
}

bool allow_metric(const telemetry_settings& s, std::string_view key) {
  if (s.allowed_prefixes.empty() && s.blocked_prefixes.empty()) return true;  // see collect.hpp
  // go-metrics' radix tree: the longest matching prefix decides; a prefix listed both ways
  // is blocked (the blocked rules are inserted last).
  std::size_t best = 0;
  bool found = false, allowed = false;
  auto consider = [&](const std::vector<std::string>& rules, bool allow) {
    for (auto& p : rules) {
      if (key.substr(0, p.size()) != p) continue;
      if (!found || p.size() > best || (p.size() == best && !allow)) {
        best = p.size();
        allowed = allow;
        found = true;
      }
    }
  };
  consider(s.allowed_prefixes, true);
  consider(s.blocked_prefixes, false);
  return found ? allowed : s.filter_default;
}

std::string sink_key(const metric_family& f, const telemetry_settings& s, bool with_host) {
  // go-metrics' kind, not the exposition type: `esm.checks.count` is untyped on /metrics but
  // a gauge, so it carries the host name as every gauge does.
  bool host = with_host && sink_type(f) == metric_type::gauge && !s.disable_hostname && !s.host_name.empty();
  std::string k;
  if (f.go_metrics && !s.metrics_prefix.empty()) k = s.metrics_prefix + ".";
  if (host) k += s.host_name + ".";
  k += f.key;
  return k;
}

namespace {

using labels = std::vector<label>;

metric_family family(std::string name, std::string help, metric_type t) {
  metric_family f;
  f.key = name;
  f.name = std::move(name);
  f.help = std::move(help);
  f.type = t;
  return f;
}

// `kind` is what go-metrics calls it (statsd sinks); `t` the exposition type (/metrics).
metric_family go_family(const telemetry_settings& s, std::string key, std::string help, metric_type t,
                        go_kind kind) {
  metric_family f;
  f.key = std::move(key);
  f.go_metrics = true;
  f.help = std::move(help);
  f.type = t;
  f.kind = kind;
  f.name = prometheus_name(sink_key(f, s, false));
  return f;
}

void add(metric_family& f, double v, labels l = {}) {
  sample x;
  x.labels = std::move(l);
  x.value = v;
  f.samples.push_back(std::move(x));
}

void add_histogram(metric_family& f, histogram_value h, labels l = {}) {
  sample x;
  x.labels = std::move(l);
  x.histogram = std::move(h);
  f.samples.push_back(std::move(x));
}

// A fixed-bucket histogram with non-cumulative counts whose last entry is +Inf.
template <class Bounds, class Counts>
histogram_value cumulative(const Bounds& bounds, const Counts& counts, double sum, std::uint64_t count) {
  histogram_value h;
  std::uint64_t seen = 0;
  for (std::size_t b = 0; b < bounds.size(); ++b) {
    seen += counts[b];
    h.buckets.emplace_back(static_cast<double>(bounds[b]), seen);
  }
  h.sum = sum;
  h.count = count;
  return h;
}

// util::lag_histogram (1 ms buckets, the last one 10 s and more) in a few bounds; its sum is
// not kept, so _sum is estimated from the bucket midpoints (within 0.5 ms per sample).
histogram_value from_lag(const util::lag_histogram& l) {
  static constexpr std::array<std::size_t, 10> bounds_ms{1, 5, 10, 25, 50, 100, 250, 1000, 5000, 10000};
  histogram_value h;
  std::uint64_t seen = 0;
  double sum = 0;
  std::size_t b = 0;
  for (auto bound : bounds_ms) {
    for (; b < bound && b < l.counts.size(); ++b) {
      seen += l.counts[b];
      sum += static_cast<double>(l.counts[b]) * (static_cast<double>(b) + 0.5) / 1000.0;
    }
    h.buckets.emplace_back(static_cast<double>(bound) / 1000.0, seen);
  }
  for (; b < l.counts.size(); ++b) sum += static_cast<double>(l.counts[b]) * static_cast<double>(b) / 1000.0;
  h.sum = sum;
  h.count = l.total;
  return h;
}

struct process_figures {
  bool ok = false;
  double cpu_seconds = 0, start_time = 0, virtual_bytes = 0, resident_bytes = 0;
  double open_fds = -1, max_fds = -1;
};

process_figures read_process() {
  process_figures p;
  std::ifstream stat("/proc/self/stat");
  std::string line;
  if (std::getline(stat, line)) {
    auto close = line.rfind(')');
    if (close != std::string::npos) {
      std::istringstream in(line.substr(close + 2));
      std::vector<std::string> f;  // f[0] is field 3 (state)
      std::string w;
      while (in >> w) f.push_back(w);
      if (f.size() > 21) {
        double tick = static_cast<double>(sysconf(_SC_CLK_TCK));
        double page = static_cast<double>(sysconf(_SC_PAGESIZE));
        p.cpu_seconds = (std::stod(f[11]) + std::stod(f[12])) / tick;  // utime, stime
        double start_ticks = std::stod(f[19]);
        p.virtual_bytes = std::stod(f[20]);
        p.resident_bytes = std::stod(f[21]) * page;
        std::ifstream sys("/proc/stat");
        std::string key;
        double btime = 0;
        while (sys >> key) {
          if (key == "btime") {
            sys >> btime;
            break;
          }
          std::getline(sys, key);
        }
        p.start_time = btime + start_ticks / tick;
        p.ok = true;
      }
    }
  }
  std::error_code ec;
  double n = 0;
  for (std::filesystem::directory_iterator it("/proc/self/fd", ec), end; !ec && it != end; it.increment(ec)) ++n;
  if (!ec) p.open_fds = n;
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) p.max_fds = static_cast<double>(rl.rlim_cur);
  return p;
}

constexpr std::array<std::string_view, 5> kinds{"http", "tcp", "udp", "grpc", "h2ping"};
constexpr std::array<std::string_view, 3> results{"passing", "warning", "critical"};

}  // namespace

std::vector<metric_family> collect_all(const daemon::daemon_status& st, const telemetry_settings& s) {
  std::vector<metric_family> out;
  out.reserve(48);
  const auto* engine = st.engine;
  const auto* prober = st.prober;
  const auto& election = st.instance.election;

  // ---- consul-esm's names -------------------------------------------------------------------
  {
    auto f = go_family(s, "esm.agent.isLeader", "1 while this instance holds the ESM leader lock, else 0",
                       metric_type::gauge, go_kind::gauge);
    add(f, election.is_leader ? 1 : 0);
    out.push_back(std::move(f));
  }
  {
    auto f = go_family(s, "esm.agents.healthy",
                       "Healthy ESM instances among which the leader shares the work (0 on followers)",
                       metric_type::gauge, go_kind::gauge);
    add(f, election.is_leader ? static_cast<double>(st.leader.instances) : 0);
    out.push_back(std::move(f));
  }
  {
    auto f = go_family(s, "esm.nodes.monitored", "External nodes in this instance's share", metric_type::gauge,
                       go_kind::gauge);
    add(f, static_cast<double>(st.worker.nodes));
    out.push_back(std::move(f));
  }
  std::size_t total = 0, healthy = 0, services = 0;
  if (st.checks) {
    // Every scrape and flush counts the distinct (node, service ID) pairs on the daemon's only
    // thread, over 100 000 checks and more: one reserved vector of views into the engine's
    // copies (valid while it is not reconciled, i.e. during this call), sorted and
    // de-duplicated, instead of a node-based set allocating per pair.
    std::vector<std::pair<std::string_view, std::string_view>> pairs;
    pairs.reserve(st.checks->size());
    st.checks->visit_checks([&](const checks::check_engine::check_info& c) {
      ++total;
      if (c.catalog->status == "passing") ++healthy;
      if (!c.catalog->service_id.empty()) pairs.emplace_back(c.catalog->node, c.catalog->service_id);
    });
    std::sort(pairs.begin(), pairs.end());
    services = static_cast<std::size_t>(std::unique(pairs.begin(), pairs.end()) - pairs.begin());
  } else {
    total = st.worker.checks;
  }
  {
    auto f = go_family(s, "esm.services.monitored",
                       "Distinct services (node, service ID) among this instance's checks", metric_type::gauge,
                       go_kind::gauge);
    add(f, static_cast<double>(services));
    out.push_back(std::move(f));
  }
  {
    // A gauge, but named with a summary's reserved suffix: untyped on /metrics, like the
    // counters below; still a gauge to the statsd sinks (host name, `|g`), as go-metrics sends it.
    auto f = go_family(s, "esm.checks.count", "Health checks in this instance's share (a gauge)",
                       metric_type::untyped, go_kind::gauge);
    add(f, static_cast<double>(total));
    out.push_back(std::move(f));
    auto h = go_family(s, "esm.checks.healthy", "Checks of this instance's share the catalog has passing",
                       metric_type::gauge, go_kind::gauge);
    add(h, static_cast<double>(healthy));
    out.push_back(std::move(h));
    auto u = go_family(s, "esm.checks.unhealthy",
                       "Checks of this instance's share the catalog has not passing (warning included)",
                       metric_type::gauge, go_kind::gauge);
    add(u, static_cast<double>(total - std::min(total, healthy)));
    out.push_back(std::move(u));
  }
  {
    auto f = go_family(s, "check.txn", "Check status transactions sent (a counter; retries included)",
                       metric_type::untyped, go_kind::counter);
    add(f, engine ? static_cast<double>(engine->transactions) : 0);
    out.push_back(std::move(f));
    auto r = go_family(s, "check.txn.retry", "Check status operations retried after a stale index (a counter)",
                       metric_type::untyped, go_kind::counter);
    add(r, engine ? static_cast<double>(engine->stale_retries) : 0);
    out.push_back(std::move(r));
    auto b = go_family(s, "check.txn.batch_size", "Operations in the last check status transaction",
                       metric_type::gauge, go_kind::gauge);
    add(b, engine ? static_cast<double>(engine->last_batch_size) : 0);
    out.push_back(std::move(b));
    auto c = go_family(s, "coord.txn", "externalNodeHealth transactions sent (a counter)", metric_type::untyped,
                       go_kind::counter);
    add(c, prober ? static_cast<double>(prober->transactions) : 0);
    out.push_back(std::move(c));
  }

  // ---- esmd's own ----------------------------------------------------------------------------
  {
    auto f = family("esmd_build_info", "esmd's version and the local Consul agent's, as a constant 1",
                    metric_type::gauge);
    add(f, 1, {{"version", st.version}, {"consul_version", st.consul_version}});
    out.push_back(std::move(f));
  }
  {
    auto f = family("esmd_is_leader", "1 while this instance is the ESM leader", metric_type::gauge);
    add(f, election.is_leader ? 1 : 0);
    out.push_back(std::move(f));
    auto c = family("esmd_leadership_changes_total", "Leadership gains and losses of this instance",
                    metric_type::counter);
    add(c, static_cast<double>(election.leadership_changes));
    out.push_back(std::move(c));
  }
  {
    // The assignment leader's work, summed over this instance's terms.
    const auto& l = st.leader;
    auto r = family("esmd_leader_rebalances_total", "Assignments written while leading", metric_type::counter);
    add(r, static_cast<double>(l.rebalances));
    out.push_back(std::move(r));
    auto m = family("esmd_leader_nodes_moved_total", "External nodes that changed owner in the assignments written",
                    metric_type::counter);
    add(m, static_cast<double>(l.nodes_moved));
    out.push_back(std::move(m));
    auto f = family("esmd_leader_failures_total",
                    "Failed reads of the stored assignment and failed assignment writes while leading (retried)",
                    metric_type::counter);
    add(f, static_cast<double>(l.failures));
    out.push_back(std::move(f));
    auto q = family("esmd_leader_lease_refusals_total",
                    "Assignment writes refused by the leader itself because its term's fencing deadline had passed (a paused process; a pause during which no write was due is not counted)",
                    metric_type::counter);
    add(q, static_cast<double>(l.lease_refusals));
    out.push_back(std::move(q));
  }
  if (engine) {
    auto runs = family("esmd_check_runs_total", "Probe runs completed", metric_type::counter);
    add(runs, static_cast<double>(engine->runs));
    out.push_back(std::move(runs));
    auto cancelled = family("esmd_check_runs_cancelled_total",
                            "Probe runs cancelled (check removed or changed, shutdown)", metric_type::counter);
    add(cancelled, static_cast<double>(engine->cancelled_runs));
    out.push_back(std::move(cancelled));
    auto failed = family("esmd_check_runs_failed_total",
                         "Probe runs or their results that threw: an internal error, logged; the check runs again an interval later",
                         metric_type::counter);
    add(failed, static_cast<double>(engine->failed_runs));
    out.push_back(std::move(failed));

    auto d = family("esmd_check_duration_seconds", "Probe run duration by check kind and result",
                    metric_type::histogram);
    for (std::size_t k = 0; k < kinds.size(); ++k)
      for (std::size_t r = 0; r < results.size(); ++r) {
        const auto& h = engine->durations.by_kind_status[k][r];
        if (h.count == 0) continue;  // 15 empty series would only cost the scrape
        add_histogram(d, cumulative(checks::run_duration_histogram::bounds, h.counts, h.sum, h.count),
                      {{"kind", std::string(kinds[k])}, {"result", std::string(results[r])}});
      }
    out.push_back(std::move(d));

    auto lag = family("esmd_schedule_lag_seconds", "Check run start minus its due time",
                      metric_type::histogram);
    add_histogram(lag, from_lag(engine->lag));
    out.push_back(std::move(lag));

    auto q = family("esmd_checks_queued", "Due checks waiting for a probe slot", metric_type::gauge);
    add(q, static_cast<double>(engine->queued));
    out.push_back(std::move(q));
    auto uns = family("esmd_checks_unsupported", "Checks held that esmd does not run (script, docker, ...)",
                      metric_type::gauge);
    add(uns, static_cast<double>(engine->unsupported));
    out.push_back(std::move(uns));

    auto w = family("esmd_status_writes_total", "Check statuses written to the catalog, by method",
                    metric_type::counter);
    add(w, static_cast<double>(engine->write_ops), {{"method", "txn"}});
    add(w, static_cast<double>(engine->registration_writes), {{"method", "registration"}});
    out.push_back(std::move(w));
    auto wf = family("esmd_status_write_failures_total",
                     "Check status transactions that failed (retried later)", metric_type::counter);
    add(wf, static_cast<double>(engine->write_failures));
    out.push_back(std::move(wf));
    auto reaped = family("esmd_services_reaped_total",
                         "Services deregistered after DeregisterCriticalServiceAfter", metric_type::counter);
    add(reaped, static_cast<double>(engine->services_reaped));
    out.push_back(std::move(reaped));

    std::uint64_t batches = 0;
    for (auto n : engine->batch_sizes) batches += n;
    auto bs = family("esmd_write_batch_size", "Operations per check status transaction",
                     metric_type::histogram);
    add_histogram(bs, cumulative(checks::engine_stats::batch_bounds, engine->batch_sizes,
                                 static_cast<double>(engine->batch_size_sum), batches));
    out.push_back(std::move(bs));
  }
  {
    auto f = family("esmd_probes_in_flight", "Probes running now, by part", metric_type::gauge);
    add(f, engine ? static_cast<double>(engine->in_flight) : 0, {{"part", "checks"}});
    add(f, prober ? static_cast<double>(prober->in_flight) : 0, {{"part", "nodes"}});
    out.push_back(std::move(f));
  }
  if (prober) {
    auto p = family("esmd_pings_total", "ICMP echo requests sent to external nodes", metric_type::counter);
    add(p, static_cast<double>(prober->pings));
    out.push_back(std::move(p));
    auto r = family("esmd_ping_replies_total", "ICMP echo replies received", metric_type::counter);
    add(r, static_cast<double>(prober->replies));
    out.push_back(std::move(r));
    auto l = family("esmd_ping_lateness_seconds", "Ping start minus its due time", metric_type::histogram);
    add_histogram(l, from_lag(prober->lateness));
    out.push_back(std::move(l));
    auto n = family("esmd_nodes_probed", "External nodes pinged, by their newest outcome", metric_type::gauge);
    add(n, static_cast<double>(prober->alive), {{"state", "alive"}});
    add(n, static_cast<double>(prober->dead), {{"state", "dead"}});
    out.push_back(std::move(n));
    auto c = family("esmd_node_health_writes_total", "externalNodeHealth check writes committed",
                    metric_type::counter);
    add(c, static_cast<double>(prober->check_writes));
    out.push_back(std::move(c));
    auto nr = family("esmd_nodes_reaped_total", "External nodes removed after node_reconnect_timeout",
                     metric_type::counter);
    add(nr, static_cast<double>(prober->nodes_reaped));
    out.push_back(std::move(nr));
    auto cu = family("esmd_coordinate_updates_total",
                     "Node coordinate updates sent to Consul, by result (refused: HTTP 403, the token's policy)",
                     metric_type::counter);
    add(cu, static_cast<double>(prober->coordinate_writes), {{"result", "written"}});
    add(cu, static_cast<double>(prober->coordinate_refusals), {{"result", "refused"}});
    add(cu, static_cast<double>(prober->coordinate_failures - prober->coordinate_refusals), {{"result", "failed"}});
    out.push_back(std::move(cu));
  }
  if (st.consul) {
    const auto& c = *st.consul;
    auto req = family("esmd_consul_requests_total", "Requests sent to Consul", metric_type::counter);
    add(req, static_cast<double>(c.requests));
    out.push_back(std::move(req));
    auto err = family("esmd_consul_errors_total",
                      "Consul requests that failed: no answer (connection, timeout) or a non-2xx answer",
                      metric_type::counter);
    add(err, static_cast<double>(c.failures), {{"kind", "no_answer"}});
    add(err, static_cast<double>(c.errors), {{"kind", "http_status"}});
    out.push_back(std::move(err));
    auto d = family("esmd_consul_request_duration_seconds",
                    "Consul request duration by endpoint and HTTP status (\"error\": no answer)",
                    metric_type::histogram);
    for (auto& [key, h] : c.by_endpoint)
      add_histogram(d, cumulative(consul::request_histogram::bounds, h.counts, h.sum, h.count),
                    {{"endpoint", key.first}, {"status", key.second}});
    out.push_back(std::move(d));
  }
  {
    auto a = family("esmd_assignments_total", "Distinct work assignments this instance applied",
                    metric_type::counter);
    add(a, static_cast<double>(st.worker.assignments));
    out.push_back(std::move(a));
    auto r = family("esmd_registration_renewals_failed_total",
                    "Failed TTL updates of this instance's own registration", metric_type::counter);
    add(r, static_cast<double>(st.instance.membership.check_update_failures));
    out.push_back(std::move(r));
  }

  // ---- the process ---------------------------------------------------------------------------
  auto p = read_process();
  {
    auto m = family("esmd_max_concurrent_probes", "Probes allowed at once (max_concurrent_probes)",
                    metric_type::gauge);
    add(m, static_cast<double>(s.max_concurrent_probes));
    out.push_back(std::move(m));
    if (p.max_fds >= 0 && p.open_fds >= 0) {
      auto b = family("esmd_fd_budget", "File descriptors still available: the soft open-file limit minus those open",
                      metric_type::gauge);
      add(b, p.max_fds - p.open_fds);
      out.push_back(std::move(b));
    }
  }
  if (p.ok) {
    auto cpu = family("process_cpu_seconds_total", "Total user and system CPU time spent in seconds",
                      metric_type::counter);
    add(cpu, p.cpu_seconds);
    out.push_back(std::move(cpu));
    auto rss = family("process_resident_memory_bytes", "Resident memory size in bytes", metric_type::gauge);
    add(rss, p.resident_bytes);
    out.push_back(std::move(rss));
    auto vm = family("process_virtual_memory_bytes", "Virtual memory size in bytes", metric_type::gauge);
    add(vm, p.virtual_bytes);
    out.push_back(std::move(vm));
    auto start = family("process_start_time_seconds", "Start time of the process since unix epoch in seconds",
                        metric_type::gauge);
    add(start, p.start_time);
    out.push_back(std::move(start));
  }
  if (p.open_fds >= 0) {
    auto f = family("process_open_fds", "Number of open file descriptors", metric_type::gauge);
    add(f, p.open_fds);
    out.push_back(std::move(f));
  }
  if (p.max_fds >= 0) {
    auto f = family("process_max_fds", "Maximum number of open file descriptors", metric_type::gauge);
    add(f, p.max_fds);
    out.push_back(std::move(f));
  }
  return out;
}

std::vector<metric_family> collect(const daemon::daemon_status& st, const telemetry_settings& s) {
  auto all = collect_all(st, s);
  std::vector<metric_family> out;
  out.reserve(all.size());
  for (auto& f : all)
    if (allow_metric(s, sink_key(f, s, false))) out.push_back(std::move(f));
  return out;
}

}  // namespace esm::telemetry
