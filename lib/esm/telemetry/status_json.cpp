#include "esm/telemetry/status_json.hpp"

#include <algorithm>
#include <cstdio>
#include <tuple>
#include <utility>

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
  auto with_error = [&](std::string r) {
    if (st.consul && !st.consul->last_error.empty()) r += ": " + st.consul->last_error;
    return r;
  };
  // Only an answer that shows Consul serving counts: an agent answering 403 (ACL denied) or
  // 500 (no cluster leader) to every request is reachable but useless.
  if (!st.consul || !st.consul->last_ok) {
    if (st.consul && st.consul->last_answer) return {false, with_error("Consul answers only with errors")};
    return {false, with_error("Consul has not answered yet")};
  }
  const auto& c = *st.consul;
  if (c.last_failure && *c.last_failure > *c.last_ok)
    return {false, with_error("the last request to Consul failed")};
  if (now - *c.last_ok > consul_fresh) {
    bool errors = c.last_answer && *c.last_answer > *c.last_ok;
    return {false, errors ? with_error("Consul has answered only with errors for " + age_text(now - *c.last_ok))
                          : "Consul has not answered for " + age_text(now - *c.last_ok)};
  }
  if (!st.instance.membership.registered) return {false, "this instance is not registered in Consul"};
  if (st.worker.assignments == 0) return {false, "no share received from the leader yet"};
  // The key is written for every healthy instance by the leader; without it no leader has
  // assigned work (none could take the lock, say) or this instance was left out.
  if (!st.worker.assigned) return {false, "no share assigned: this instance's assignment key is absent"};
  return {true, {}};
}

int status_rank(std::string_view s) {
  if (s == "critical") return 0;
  if (s == "warning") return 1;
  if (s == "passing") return 2;
  if (s == "maintenance") return 3;
  return 4;
}

namespace {

template <class Map>
void count_in(Map& m, std::string_view key) {
  auto it = m.find(key);
  if (it == m.end()) m.emplace(std::string(key), 1);
  else ++it->second;
}

// Keeps the `keep` smallest of the entries offered, by `less`, in a max-heap (its front is the
// largest kept): O(log keep) per entry and no more than `keep` entries held, whatever the total.
template <class T, class Less>
struct bounded_selection {
  std::size_t keep;
  Less less;
  std::vector<T> heap;
  void offer(T&& e) {
    if (keep == 0) return;
    if (heap.size() < keep) {
      heap.push_back(std::move(e));
      std::push_heap(heap.begin(), heap.end(), less);
    } else if (less(e, heap.front())) {
      std::pop_heap(heap.begin(), heap.end(), less);
      heap.back() = std::move(e);
      std::push_heap(heap.begin(), heap.end(), less);
    }
  }
  // The kept entries in ascending order, the first `skip` of them dropped.
  std::vector<T> take(std::size_t skip) && {
    std::sort_heap(heap.begin(), heap.end(), less);
    if (skip >= heap.size()) heap.clear();
    else heap.erase(heap.begin(), heap.begin() + static_cast<std::ptrdiff_t>(skip));
    return std::move(heap);
  }
};

std::size_t saturating_add(std::size_t a, std::size_t b) { return a > all_rows - b ? all_rows : a + b; }

// A check as the selection holds it: the sort key and the engine's own objects. The pointers
// (and the views into them) point into the engine's slots, which only the engine's members
// change; this is one synchronous call on the daemon's only thread, so they stay valid from
// the visit to the copy of the rows at its end, and no check is copied before it is chosen.
struct check_entry {
  int rank;
  std::string_view status;
  const consul::health_check* catalog;
  const probe::probe_result* desired;
  std::string_view kind;
  std::uint64_t runs;
  int successes, failures;
  bool running, write_queued;
  steady::time_point last_due;
};
struct check_less {
  bool operator()(const check_entry& a, const check_entry& b) const {
    const auto &x = *a.catalog, &y = *b.catalog;
    // std::tie of references: no copy per comparison.
    return std::tie(a.rank, x.node, x.check_id, x.name_space, x.partition) <
           std::tie(b.rank, y.node, y.check_id, y.name_space, y.partition);
  }
};

}  // namespace

check_selection select_checks(const daemon::daemon_status& st, std::size_t offset, std::size_t limit,
                              bool outputs) {
  check_selection sel;
  if (!st.checks) return sel;
  bounded_selection<check_entry, check_less> best{saturating_add(offset, limit), {}, {}};
  if (best.keep != all_rows) best.heap.reserve(std::min(best.keep, st.checks->size()));
  st.checks->visit_checks([&](const checks::check_engine::check_info& i) {
    std::string_view status = i.desired ? probe::to_string(i.desired->status) : std::string_view(i.catalog->status);
    ++sel.counts.total;
    count_in(sel.counts.by_status, status);
    count_in(sel.counts.by_kind, i.kind);
    best.offer(check_entry{status_rank(status), status, i.catalog, i.desired, i.kind, i.runs,
                           i.successes, i.failures, i.running, i.write_queued, i.last_due});
  });
  auto chosen = std::move(best).take(offset);
  sel.rows.reserve(chosen.size());
  for (auto& e : chosen) {
    check_row r;
    const auto& c = *e.catalog;
    r.node = c.node;
    r.check_id = c.check_id;
    r.name = c.name;
    r.service_id = c.service_id;
    r.service_name = c.service_name;
    r.name_space = c.name_space;
    r.partition = c.partition;
    r.kind = std::string(e.kind);
    r.catalog_status = c.status;
    r.status = std::string(e.status);
    r.write_pending = e.desired != nullptr;
    if (outputs) r.output = e.desired ? e.desired->output : c.output.str();
    r.write_queued = e.write_queued;
    r.running = e.running;
    r.runs = e.runs;
    r.successes = e.successes;
    r.failures = e.failures;
    if (e.last_due != steady::time_point{}) r.last_due = e.last_due;
    sel.rows.push_back(std::move(r));
  }
  return sel;
}

std::vector<check_row> collect_checks(const daemon::daemon_status& st) { return select_checks(st).rows; }

check_counts count_checks(const daemon::daemon_status& st) { return select_checks(st, 0, 0, false).counts; }

namespace {
// A node as the selection holds it: the prober's own strings (its slots, stable during this
// synchronous call, as for check_entry); the view is fetched again for the chosen ones.
struct node_entry {
  bool alive_or_unknown;  // dead first
  const std::string* name;
  const std::string* address;
};
struct node_less {
  bool operator()(const node_entry& a, const node_entry& b) const {
    return std::tie(a.alive_or_unknown, *a.name) < std::tie(b.alive_or_unknown, *b.name);
  }
};
}  // namespace

node_selection select_nodes(const daemon::daemon_status& st, std::size_t offset, std::size_t limit,
                            bool coordinates) {
  node_selection sel;
  if (!st.nodes) return sel;
  bounded_selection<node_entry, node_less> best{saturating_add(offset, limit), {}, {}};
  st.nodes->visit_nodes([&](const std::string& name, const std::string& address, const ping::node_prober::node_view& v) {
    ++sel.total;
    best.offer(node_entry{v.outcome != ping::node_status::dead, &name, &address});
  });
  auto chosen = std::move(best).take(offset);
  sel.rows.reserve(chosen.size());
  for (auto& e : chosen) {
    auto v = st.nodes->find(*e.name);
    if (!v) continue;  // cannot happen: nothing ran since the visit
    node_row r;
    r.name = *e.name;
    r.address = *e.address;
    r.outcome = std::string(node_status_text(v->outcome));
    r.written = std::string(node_status_text(v->written));
    r.key_exists = v->key_exists;
    r.in_flight = v->in_flight;
    r.queued = v->queued;
    r.pings = v->pings;
    r.last_rtt = v->last_rtt;
    if (v->since) r.since = std::chrono::time_point_cast<std::chrono::system_clock::duration>(*v->since);
    if (coordinates) r.coord = std::move(v->coord);
    sel.rows.push_back(std::move(r));
  }
  return sel;
}

std::vector<node_row> collect_nodes(const daemon::daemon_status& st) { return select_nodes(st).rows; }

check_counts count_checks(const std::vector<check_row>& rows) {
  check_counts c;
  c.total = rows.size();
  for (auto& r : rows) {
    count_in(c.by_status, r.status);
    count_in(c.by_kind, r.kind);
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

  auto counts = count_checks(st);  // in place: /v1/status copies no check
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

namespace {
void page_fields(json::object& o, std::size_t total, std::size_t offset, std::size_t limit) {
  o["total"] = total;
  o["offset"] = offset;
  o["limit"] = limit;
}
}  // namespace

std::string debug_checks_json(const daemon::daemon_status& st, steady::time_point now, std::size_t offset,
                              std::size_t limit) {
  auto sel = select_checks(st, offset, limit, true);
  json::array a;
  a.reserve(sel.rows.size());
  for (auto& r : sel.rows) {
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
  page_fields(o, sel.counts.total, offset, limit);
  o["checks"] = std::move(a);
  return json::serialize(o);
}

std::string debug_nodes_json(const daemon::daemon_status& st, std::size_t offset, std::size_t limit) {
  auto sel = select_nodes(st, offset, limit, true);
  json::array a;
  a.reserve(sel.rows.size());
  for (auto& r : sel.rows) {
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
    if (r.coord) {  // as written to (or read from) Consul; Consul's units (seconds)
      json::object c;
      json::array vec;
      for (double x : r.coord->vec) vec.push_back(x);
      c["vec"] = std::move(vec);
      c["error"] = r.coord->error;
      c["adjustment"] = r.coord->adjustment;
      c["height"] = r.coord->height;
      n["coordinate"] = std::move(c);
    } else {
      n["coordinate"] = nullptr;
    }
    a.push_back(std::move(n));
  }
  json::object o;
  page_fields(o, sel.total, offset, limit);
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
