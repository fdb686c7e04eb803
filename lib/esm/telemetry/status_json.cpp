#include "esm/telemetry/status_json.hpp"

#include <algorithm>
#include <cstdio>
#include <tuple>

#include <boost/json/array.hpp>
#include <boost/json/object.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>

namespace esm::telemetry {

namespace json = boost::json;
using namespace std::chrono_literals;

namespace {

double seconds_of(steady::duration d) { return std::chrono::duration<double>(d).count(); }

// An age in seconds, or null when the time is unknown.
json::value age_of(const std::optional<steady::time_point>& t, steady::time_point now) {
  if (!t) return nullptr;
  return seconds_of(now - *t);
}

std::string_view node_status_text(ping::node_status s) {
  switch (s) {
    case ping::node_status::alive: return "alive";
    case ping::node_status::dead: return "dead";
    case ping::node_status::unknown: return "unknown";
  }
  return "unknown";
}

std::string rfc3339(std::chrono::system_clock::time_point t) {
  auto secs = std::chrono::floor<std::chrono::seconds>(t);
  auto days = std::chrono::floor<std::chrono::days>(secs);
  std::chrono::year_month_day ymd{days};
  std::chrono::hh_mm_ss hms{secs - days};
  char buf[32];
  std::snprintf(buf, sizeof buf, "%04d-%02u-%02uT%02ld:%02ld:%02ldZ", static_cast<int>(ymd.year()),
                static_cast<unsigned>(ymd.month()), static_cast<unsigned>(ymd.day()),
                static_cast<long>(hms.hours().count()), static_cast<long>(hms.minutes().count()),
                static_cast<long>(hms.seconds().count()));
  return buf;
}

}  // namespace

probe_answer liveness(const daemon::daemon_status& st, const std::optional<loop_stall>& last_stall,
                      steady::time_point now, steady::duration threshold) {
  auto age = now - st.heartbeat;
  if (age > threshold) return {false, "event loop stalled: no heartbeat for " + age_text(age)};
  if (last_stall && last_stall->length > threshold && now - last_stall->ended < threshold)
    return {false, "event loop stalled for " + age_text(last_stall->length) + ", " +
                       age_text(now - last_stall->ended) + " ago"};
  return {true, {}};
}

probe_answer readiness(const daemon::daemon_status& st, steady::time_point now,
                       steady::duration consul_fresh) {
  if (st.state != daemon::phase::running)
    return {false, "esmd is " + std::string(daemon::to_string(st.state))};
  if (!st.consul || !st.consul->last_answer) {
    std::string r = "Consul has not answered yet";
    if (st.consul && !st.consul->last_error.empty()) r += ": " + st.consul->last_error;
    return {false, r};
  }
  const auto& c = *st.consul;
  if (c.last_failure && *c.last_failure > *c.last_answer)
    return {false, "the last request to Consul failed" +
                       (c.last_error.empty() ? std::string() : ": " + c.last_error)};
  if (now - *c.last_answer > consul_fresh)
    return {false, "Consul has not answered for " + age_text(now - *c.last_answer)};
  if (!st.instance.membership.registered) return {false, "this instance is not registered in Consul"};
  if (st.worker.assignments == 0) return {false, "no share received from the leader yet"};
  return {true, {}};
}

int status_rank(std::string_view s) {
  if (s == "critical") return 0;
  if (s == "warning") return 1;
  if (s == "passing") return 2;
  if (s == "maintenance") return 3;
  return 4;
}

std::vector<check_row> collect_checks(const daemon::daemon_status& st) {
  std::vector<check_row> rows;
  if (!st.checks) return rows;
  st.checks->visit_checks([&](const checks::check_engine::check_info& i) {
    check_row r;
    const auto& c = *i.catalog;
    r.node = c.node;
    r.check_id = c.check_id;
    r.name = c.name;
    r.service_id = c.service_id;
    r.service_name = c.service_name;
    r.name_space = c.name_space;
    r.partition = c.partition;
    r.kind = std::string(i.kind);
    r.catalog_status = c.status;
    if (i.desired) {
      r.status = std::string(probe::to_string(i.desired->status));
      r.output = i.desired->output;
      r.write_pending = true;
    } else {
      r.status = c.status;
      r.output = c.output;
    }
    r.write_queued = i.write_queued;
    r.running = i.running;
    r.runs = i.runs;
    r.successes = i.successes;
    r.failures = i.failures;
    if (i.last_due != steady::time_point{}) r.last_due = i.last_due;
    rows.push_back(std::move(r));
  });
  std::sort(rows.begin(), rows.end(), [](const check_row& a, const check_row& b) {
    return std::tuple(status_rank(a.status), a.node, a.check_id, a.name_space, a.partition) <
           std::tuple(status_rank(b.status), b.node, b.check_id, b.name_space, b.partition);
  });
  return rows;
}

std::vector<node_row> collect_nodes(const daemon::daemon_status& st) {
  std::vector<node_row> rows;
  if (!st.nodes) return rows;
  st.nodes->visit_nodes([&](const std::string& name, const std::string& address, const ping::node_prober::node_view& v) {
    node_row r;
    r.name = name;
    r.address = address;
    r.outcome = std::string(node_status_text(v.outcome));
    r.written = std::string(node_status_text(v.written));
    r.key_exists = v.key_exists;
    r.in_flight = v.in_flight;
    r.queued = v.queued;
    r.pings = v.pings;
    r.last_rtt = v.last_rtt;
    if (v.since) r.since = std::chrono::time_point_cast<std::chrono::system_clock::duration>(*v.since);
    rows.push_back(std::move(r));
  });
  std::sort(rows.begin(), rows.end(), [](const node_row& a, const node_row& b) {
    return std::tuple(a.outcome != "dead", a.name) < std::tuple(b.outcome != "dead", b.name);
  });
  return rows;
}

check_counts count_checks(const std::vector<check_row>& rows) {
  check_counts c;
  c.total = rows.size();
  for (auto& r : rows) {
    ++c.by_status[r.status];
    ++c.by_kind[r.kind];
  }
  return c;
}

std::string status_json(const daemon::daemon_status& st, steady::time_point now, steady::duration consul_fresh) {
  json::object o;
  o["instance_id"] = st.instance_id;
  o["mode"] = st.agentless ? "agentless" : "agent";
  o["phase"] = std::string(daemon::to_string(st.state));
  o["started_at"] = rfc3339(st.started_at);
  o["uptime_seconds"] =
      std::chrono::duration<double>(std::chrono::system_clock::now() - st.started_at).count();
  auto ready = readiness(st, now, consul_fresh);
  o["ready"] = ready.ok;
  o["ready_reason"] = ready.reason;
  o["registered"] = st.instance.membership.registered;
  o["leader"] = st.instance.election.is_leader;
  o["consul_leader"] = st.consul_leader;
  // The healthy instances the leader sees: only known while this instance leads.
  if (st.instance.election.is_leader) {
    json::object l;
    l["healthy_instances"] = st.leader.instances;
    l["nodes"] = st.leader.nodes;
    l["computations"] = st.leader.computations;
    l["rebalances"] = st.leader.rebalances;
    l["failures"] = st.leader.failures;
    o["leading"] = std::move(l);
    o["healthy_instances"] = st.leader.instances;
  } else {
    o["leading"] = nullptr;
    o["healthy_instances"] = nullptr;
  }
  json::object share;
  share["assignments"] = st.worker.assignments;
  share["nodes"] = st.worker.current.nodes.size();    // checks only
  share["probes"] = st.worker.current.probes.size();  // checks and pings
  share["health_nodes"] = st.worker.nodes;
  share["checks"] = st.worker.checks;
  o["share"] = std::move(share);

  auto rows = collect_checks(st);
  auto counts = count_checks(rows);
  json::object checks;
  checks["available"] = st.checks != nullptr;
  checks["total"] = counts.total;
  json::object by_status, by_kind;
  for (std::string_view s : {"passing", "warning", "critical"}) by_status[s] = 0;
  for (auto& [k, n] : counts.by_status) by_status[k] = n;
  for (auto& [k, n] : counts.by_kind) by_kind[k] = n;
  checks["by_status"] = std::move(by_status);
  checks["by_type"] = std::move(by_kind);
  if (st.engine) {
    checks["runs"] = st.engine->runs;
    checks["in_flight"] = st.engine->in_flight;
    checks["queued"] = st.engine->queued;
    checks["write_failures"] = st.engine->write_failures;
  }
  o["checks"] = std::move(checks);

  json::object probes;
  probes["available"] = st.prober != nullptr;
  if (st.prober) {
    probes["nodes"] = st.prober->nodes;
    probes["alive"] = st.prober->alive;
    probes["dead"] = st.prober->dead;
    probes["unavailable"] = st.prober->unavailable;
  }
  o["probes"] = std::move(probes);

  json::object consul;
  consul["available"] = st.consul != nullptr;
  if (st.consul) {
    consul["requests"] = st.consul->requests;
    consul["failures"] = st.consul->failures;
    consul["errors"] = st.consul->errors;
    consul["last_answer_seconds_ago"] = age_of(st.consul->last_answer, now);
    consul["last_failure_seconds_ago"] = age_of(st.consul->last_failure, now);
    consul["last_error"] = st.consul->last_error;
  }
  o["consul"] = std::move(consul);
  o["last_error"] = st.last_error;
  o["version"] = st.version;
  o["consul_version"] = st.consul_version;
  o["heartbeat_seconds_ago"] = seconds_of(now - st.heartbeat);
  return json::serialize(o);
}

std::string debug_checks_json(const daemon::daemon_status& st, steady::time_point now) {
  json::array a;
  for (auto& r : collect_checks(st)) {
    json::object c;
    c["node"] = r.node;
    c["check_id"] = r.check_id;
    c["name"] = r.name;
    c["service_id"] = r.service_id;
    c["service_name"] = r.service_name;
    c["namespace"] = r.name_space;
    c["partition"] = r.partition;
    c["type"] = r.kind;
    c["status"] = r.status;
    c["output"] = r.output;
    c["catalog_status"] = r.catalog_status;
    c["write_pending"] = r.write_pending;
    c["write_queued"] = r.write_queued;
    c["running"] = r.running;
    c["runs"] = r.runs;
    c["consecutive_successes"] = r.successes;
    c["consecutive_failures"] = r.failures;
    c["last_due_seconds_ago"] = age_of(r.last_due, now);
    a.push_back(std::move(c));
  }
  json::object o;
  o["checks"] = std::move(a);
  return json::serialize(o);
}

std::string debug_nodes_json(const daemon::daemon_status& st) {
  json::array a;
  for (auto& r : collect_nodes(st)) {
    json::object n;
    n["node"] = r.name;
    n["address"] = r.address;
    n["outcome"] = r.outcome;
    n["written"] = r.written;
    n["key_exists"] = r.key_exists;
    n["since"] = r.since ? json::value(rfc3339(*r.since)) : json::value(nullptr);
    n["pings"] = r.pings;
    n["last_rtt_seconds"] = std::chrono::duration<double>(r.last_rtt).count();
    n["in_flight"] = r.in_flight;
    n["queued"] = r.queued;
    a.push_back(std::move(n));
  }
  json::object o;
  o["nodes"] = std::move(a);
  if (st.prober) o["unavailable"] = st.prober->unavailable;
  return json::serialize(o);
}

std::string age_text(steady::duration d) {
  auto s = std::chrono::duration_cast<std::chrono::seconds>(d).count();
  if (s < 0) s = 0;
  if (s < 60) return std::to_string(s) + "s";
  if (s < 3600) return std::to_string(s / 60) + "m" + std::to_string(s % 60) + "s";
  if (s < 86400) return std::to_string(s / 3600) + "h" + std::to_string(s % 3600 / 60) + "m";
  return std::to_string(s / 86400) + "d" + std::to_string(s % 86400 / 3600) + "h";
}

}  // namespace esm::telemetry
