#include "esm/sharding/worker.hpp"

#include <algorithm>
#include <iterator>
#include <cctype>
#include <exception>
#include <optional>
#include <set>
#include <tuple>

#include <boost/asio/this_coro.hpp>

#include "esm/util/backoff.hpp"
#include "esm/consul/watch.hpp"
#include "esm/log/log.hpp"
#include "esm/sharding/kv_codec.hpp"
#include "esm/sharding/kv_plan.hpp"
#include "esm/util/async.hpp"

namespace esm::sharding {

namespace asio = boost::asio;
using std::chrono::duration_cast;
using std::chrono::milliseconds;


std::string node_name_filter(const std::vector<std::string>& names) {
  // Consul 1.8's go-bexpr string literal turns `\\` into `\` and has no escape for '"'. So
  // the RE2 pattern escapes ASCII punctuation with '\' ('"' as `\x22`), and every '\' is
  // doubled for bexpr: `a.b` -> `a\\.b`, `q"x` -> `q\\x22x`, `b\s` -> `b\\\\s`. Verified
  // against Consul 1.8.7.
  // Other bytes (letters, digits, UTF-8) stand for themselves.
  std::string re = "^(";
  bool first = true;
  for (auto& n : names) {
    if (!first) re += '|';
    first = false;
    for (char ch : n) {
      auto u = static_cast<unsigned char>(ch);
      if (ch == '"') {
        re += "\\\\x22";
      } else if (ch == '\\') {
        re += "\\\\\\\\";  // RE2 `\\`, each '\' doubled for bexpr
      } else if (u < 0x80 && std::ispunct(u) && ch != '_' && ch != '-') {
        re += "\\\\";
        re += ch;
      } else {
        re += ch;
      }
    }
  }
  re += ")$";
  return "Node matches \"" + re + "\"";
}

void logging_sink::on_nodes(std::vector<consul::node> health_nodes,
                            std::vector<consul::node> ping_nodes) {
  log::info("Assigned external nodes", {{"nodes", health_nodes.size()}, {"probes", ping_nodes.size()}});
  if (log::enabled(log::level::debug)) {
    std::string names;
    for (auto& n : health_nodes) names += (names.empty() ? "" : " ") + n.name;
    log::debug("Assigned node names", {{"nodes", names}});
  }
}

void logging_sink::on_checks(const std::vector<consul::health_check>& checks) {
  auto l = checks.size() == last_checks_ ? log::level::debug : log::level::info;
  last_checks_ = checks.size();
  log::write(l, "Health checks of the assigned nodes", {{"checks", checks.size()}});
}

namespace {

struct worker_state {
  explicit worker_state(asio::any_io_executor ex) : changed(ex) {}
  std::optional<assignment> current;  // nullopt until the key was read once
  async::event changed;                // a new assignment is in `current`

  // What the sink holds, to deliver only changes.
  std::vector<consul::node> nodes;  // node objects of the share, sorted by name
  std::vector<consul::health_check> checks;
  bool delivered_nodes = false;
  bool delivered_checks = false;
  std::vector<std::tuple<std::string, std::string, std::uint64_t>> check_print;

  // The blocking indexes of the share's last answers (0: none yet). While both are set, the
  // cache holds every node of `followed` as of them, so a new assignment only needs the nodes
  // it adds, and the blocking queries resume where they were.
  std::set<std::string> followed;
  std::uint64_t nodes_index = 0;
  std::uint64_t checks_index = 0;
};

bool same_nodes(const std::vector<consul::node>& a, const std::vector<consul::node>& b) {
  return std::equal(a.begin(), a.end(), b.begin(), b.end(),
                    [](const consul::node& x, const consul::node& y) {
                      return x.name == y.name && x.modify_index == y.modify_index &&
                             x.address == y.address && x.meta == y.meta &&
                             x.tagged_addresses == y.tagged_addresses;
                    });
}

// Hands the node objects over when they or the assignment changed.
void deliver_nodes(worker_state& st, assignment_sink& sink, worker_stats& stats,
                   std::vector<consul::node> fetched, bool force) {
  auto work = follower_sets(*st.current);
  std::erase_if(fetched, [&](const consul::node& n) { return !work.health_nodes.count(n.name); });
  std::sort(fetched.begin(), fetched.end(),
            [](const consul::node& a, const consul::node& b) { return a.name < b.name; });
  if (!force && st.delivered_nodes && same_nodes(fetched, st.nodes)) return;
  st.nodes = std::move(fetched);
  st.delivered_nodes = true;
  std::vector<consul::node> ping;
  for (auto& n : st.nodes)
    if (work.ping_nodes.count(n.name)) ping.push_back(n);
  ++stats.node_deliveries;
  stats.nodes = st.nodes.size();
  sink.on_nodes(st.nodes, std::move(ping));
}

void deliver_checks(worker_state& st, assignment_sink& sink, worker_stats& stats,
                    std::vector<consul::health_check> fetched, bool force) {
  auto work = follower_sets(*st.current);
  std::erase_if(fetched, [&](const consul::health_check& c) {
    return !work.health_nodes.count(c.node) || c.check_id == external_node_health_check_id;
  });
  std::sort(fetched.begin(), fetched.end(), [](const consul::health_check& a, const consul::health_check& b) {
    return std::tie(a.node, a.check_id, a.service_id) < std::tie(b.node, b.check_id, b.service_id);
  });
  std::vector<std::tuple<std::string, std::string, std::uint64_t>> print;
  print.reserve(fetched.size());
  for (auto& c : fetched) print.emplace_back(c.node, c.check_id, c.modify_index);
  if (!force && st.delivered_checks && print == st.check_print) return;
  st.check_print = std::move(print);
  st.checks = std::move(fetched);
  st.delivered_checks = true;
  ++stats.check_deliveries;
  stats.checks = st.checks.size();
  sink.on_checks(st.checks);
}

// Keeps one blocking query's answer flowing into `deliver`; failed reads are logged as
// `message` with the field `field`=`value` and retried with backoff. Returns only when
// cancelled.
template <class T, class Deliver>
asio::awaitable<void> follow(consul::watch<T> w, Deliver deliver, const char* message,
                             const char* field, std::string value, worker_settings s,
                             worker_stats& stats) {
  util::backoff delays(s.retry_base, s.retry_cap);
  for (;;) {
    auto r = co_await w.next();
    if (!r) {
      if (r.error().is_cancelled()) co_return;
      ++stats.errors;
      log::warn(message, {{field, value}, {"error", r.error().to_string()}});
      if (!co_await async::sleep_for(delays.next())) co_return;
      continue;
    }
    delays.reset();
    deliver(std::move(*r));
  }
}

// Ends when `e` is set or the caller is cancelled: a branch of async::first_of.
asio::awaitable<void> until_set(async::event& e) { co_await e.wait(); }

// Follows the own key. Honours terminal cancellation; errors are logged and retried.
asio::awaitable<void> watch_own_key(consul::client& c, worker_settings s, worker_state& st,
                                    worker_stats& stats) {
  auto key = assignment_key(s.kv_path, s.service_id);
  consul::query_options q;
  q.partition = s.partition;
  consul::watch<std::optional<consul::kv_pair>> w(
      [&c, key](const consul::query_options& o) { return c.kv_get(key, o); }, q, s.wait);
  auto apply = [&](consul::query_result<std::optional<consul::kv_pair>> r) {
    auto& value = r.value;
    assignment next;  // an absent key: nothing assigned (the leader removed this instance)
    if (value) {
      auto d = decode_assignment(value->value);
      if (!d) {
        ++stats.malformed;
        log::error("Error decoding the assignment: keeping the previous one",
                   {{"key", key}, {"error", d.error().message}});
        return;
      }
      next = std::move(*d);
    }
    if (st.current && follower_sets(*st.current) == follower_sets(next)) return;
    auto work = follower_sets(next);
    log::info("Updated assignment", {{"nodes", work.health_nodes.size()},
                                      {"probes", work.ping_nodes.size()}});
    st.current = std::move(next);
    stats.current = *st.current;
    ++stats.assignments;
    st.changed.set();
  };
  co_await follow(std::move(w), apply, "Error watching the assignment", "key", key, s, stats);
}

consul::query_options share_query(const worker_settings& s, const std::set<std::string>& names) {
  consul::query_options q;
  q.node_meta = s.node_meta;
  q.partition = s.partition;
  q.filter = node_name_filter(std::vector<std::string>(names.begin(), names.end()));
  if (s.stale_reads) q.mode = consul::consistency::stale;
  // A large share takes Consul a while to filter and encode (2 000 of 10 000 nodes: about
  // 0.2-0.3 s on an idle dev agent, many seconds when every instance starts at once), so
  // even a non-blocking read gets the blocking deadline rather than the short request
  // timeout; otherwise a loaded Consul times every instance out again and again.
  q.timeout = s.wait + s.wait / 16 + consul::blocking_margin;
  return q;
}

// Reads and follows the node objects and checks of the current assignment, from the indexes
// in `st` when they are set (the cache is current as of them), else from scratch. Returns only
// when cancelled (a new assignment, or the worker's end).
asio::awaitable<void> follow_share(consul::client& c, worker_settings s, worker_state& st,
                                   assignment_sink& sink, worker_stats& stats) {
  {
    auto q = share_query(s, follower_sets(*st.current).health_nodes);
    consul::watch<std::vector<consul::node>> nodes_w(
        [&c](const consul::query_options& o) { return c.catalog_nodes(o); }, q, s.wait);
    consul::watch<std::vector<consul::health_check>> checks_w(
        [&c](const consul::query_options& o) { return c.health_state("any", o); }, q, s.wait);
    if (st.nodes_index && st.checks_index) {
      // Resume: the first call blocks on the index the cache is current as of.
      nodes_w.tracker().on_result(st.nodes_index, std::chrono::milliseconds::max());
      checks_w.tracker().on_result(st.checks_index, std::chrono::milliseconds::max());
    }
    auto on_nodes = [&st, &sink, &stats](consul::query_result<std::vector<consul::node>> r) {
      st.nodes_index = r.meta.last_index;
      deliver_nodes(st, sink, stats, std::move(r.value), false);
    };
    auto on_checks = [&st, &sink, &stats](consul::query_result<std::vector<consul::health_check>> r) {
      st.checks_index = r.meta.last_index;
      deliver_checks(st, sink, stats, std::move(r.value), false);
    };
    std::vector<asio::awaitable<void>> branches;
    branches.push_back(follow(std::move(nodes_w), on_nodes, "Error watching the assigned nodes",
                              "what", "nodes", s, stats));
    branches.push_back(follow(std::move(checks_w), on_checks, "Error watching the assigned nodes",
                              "what", "checks", s, stats));
    co_await async::first_of(std::move(branches));
  }
}

// After an assignment change: when the cache is current for the nodes kept, reads only the
// added nodes (non-blocking) and merges them, so the instance that receives a few nodes does
// not download its whole share again. Otherwise (no cache yet, or a read failed) clears the
// indexes, and follow_share reads the whole share. Honours terminal cancellation.
asio::awaitable<void> read_added(consul::client& c, const worker_settings& s, worker_state& st,
                                 assignment_sink& sink, worker_stats& stats) {
  auto wanted = follower_sets(*st.current).health_nodes;
  std::set<std::string> added;
  std::set_difference(wanted.begin(), wanted.end(), st.followed.begin(), st.followed.end(),
                      std::inserter(added, added.end()));
  st.followed = wanted;
  if (!st.nodes_index || !st.checks_index) {
    st.nodes_index = st.checks_index = 0;
    co_return;
  }
  if (added.empty()) co_return;
  auto q = share_query(s, added);
  // No co_await inside a conditional expression: g++ 12 mishandles its temporaries.
  auto failed = [&st, &stats](const consul::error& e) {
    if (!e.is_cancelled()) {
      ++stats.errors;
      log::warn("Error reading the added nodes: reading the whole share", {{"error", e.to_string()}});
    }
    st.nodes_index = st.checks_index = 0;
  };
  auto nodes = co_await c.catalog_nodes(q);
  if (!nodes) {
    failed(nodes.error());
    co_return;
  }
  std::string state = "any";
  auto checks = co_await c.health_state(state, q);
  if (!checks) {
    failed(checks.error());
    co_return;
  }
  // Blocking from the lower index: if the added nodes were read at a later state, the share
  // query returns at once and brings everything to that state.
  st.nodes_index = std::min(st.nodes_index, std::max<std::uint64_t>(nodes->meta.last_index, 1));
  st.checks_index = std::min(st.checks_index, std::max<std::uint64_t>(checks->meta.last_index, 1));
  ++stats.added_reads;
  auto all_nodes = st.nodes;
  all_nodes.insert(all_nodes.end(), nodes->value.begin(), nodes->value.end());
  auto all_checks = st.checks;
  all_checks.insert(all_checks.end(), checks->value.begin(), checks->value.end());
  deliver_nodes(st, sink, stats, std::move(all_nodes), false);
  deliver_checks(st, sink, stats, std::move(all_checks), false);
}

// Applies each new assignment: drops what left at once, reads what arrived, and follows the
// share. Returns when cancelled; an exception (a bug, or a sink's) ends the worker.
asio::awaitable<void> apply_assignments(consul::client& c, worker_settings s, worker_state& st,
                                        assignment_sink& sink, worker_stats& stats) {
  {
    for (;;) {
      if (!co_await st.changed.wait()) co_return;
      st.changed.reset();
      // Departed nodes and their checks leave what the sink holds before anything is fetched.
      deliver_nodes(st, sink, stats, st.nodes, !st.delivered_nodes);
      deliver_checks(st, sink, stats, st.checks, !st.delivered_checks);
      if (st.current->empty()) {
        st.followed.clear();
        st.nodes_index = st.checks_index = 0;
        continue;
      }
      {
        std::vector<asio::awaitable<void>> branches;
        branches.push_back(until_set(st.changed));
        branches.push_back(read_added(c, s, st, sink, stats));
        co_await async::first_of(std::move(branches));
      }
      if (async::is_cancelled(co_await asio::this_coro::cancellation_state)) co_return;
      if (st.changed.is_set()) {  // superseded while reading: start over from scratch
        st.nodes_index = st.checks_index = 0;
        continue;
      }
      {
        std::vector<asio::awaitable<void>> branches;
        branches.push_back(until_set(st.changed));
        branches.push_back(follow_share(c, s, st, sink, stats));
        co_await async::first_of(std::move(branches));
      }
      if (async::is_cancelled(co_await asio::this_coro::cancellation_state)) co_return;
    }
  }
}

}  // namespace

asio::awaitable<void> run_assignment_worker(consul::client& c, worker_settings s,
                                            assignment_sink& sink, worker_stats& stats) {
  worker_state st(co_await asio::this_coro::executor);
  log::info("Watching the assignment", {{"key", assignment_key(s.kv_path, s.service_id)}});
  // Both branches return only when cancelled; an exception of either ends the worker (the
  // other is stopped, never left following a share that no longer changes).
  std::vector<asio::awaitable<void>> branches;
  branches.push_back(watch_own_key(c, s, st, stats));
  branches.push_back(apply_assignments(c, s, st, sink, stats));
  co_await async::first_of(std::move(branches));
}

}  // namespace esm::sharding
