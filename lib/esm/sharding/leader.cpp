#include "esm/sharding/leader.hpp"

#include <algorithm>
#include <exception>
#include <map>
#include <optional>

#include <boost/asio/this_coro.hpp>

#include "esm/util/backoff.hpp"
#include "esm/consul/watch.hpp"
#include "esm/log/log.hpp"
#include "esm/sharding/assignment.hpp"
#include "esm/sharding/kv_plan.hpp"
#include "esm/util/async.hpp"

namespace esm::sharding {

namespace asio = boost::asio;
using std::chrono::duration_cast;
using std::chrono::milliseconds;


namespace {

// The two inputs, as the watches last saw them; `dirty` wakes the computing branch.
struct leader_state {
  explicit leader_state(asio::any_io_executor ex) : dirty(ex) {}
  std::optional<std::vector<external_node>> nodes;     // sorted by name
  std::optional<std::vector<std::string>> instances;   // sorted service IDs
  async::event dirty;
};

std::vector<external_node> to_external(const std::vector<consul::node>& in) {
  std::vector<external_node> out;
  out.reserve(in.size());
  for (auto& n : in) {
    auto it = n.meta.find(std::string(probe_meta_key));
    out.push_back({n.name, it != n.meta.end() && it->second == probe_meta_value});
  }
  std::sort(out.begin(), out.end(),
            [](const external_node& a, const external_node& b) { return a.name < b.name; });
  return out;
}

std::vector<std::string> to_instances(const std::vector<consul::service_entry>& in) {
  std::vector<std::string> out;
  out.reserve(in.size());
  for (auto& e : in) out.push_back(e.service.id);
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

// Keeps `slot` equal to what the blocking query returns; wakes the computation only when the
// extracted content changed (an index also moves for changes the leader does not care about).
// Honours terminal cancellation; never throws on Consul errors (logged, retried with backoff).
template <class T, class R, class Extract>
asio::awaitable<void> follow(consul::watch<T> w, Extract extract, std::optional<R>& slot,
                             async::event& dirty, const char* what, leader_settings s) {
  util::backoff delays(s.retry_base, s.retry_cap);
  for (;;) {
    auto r = co_await w.next();
    if (!r) {
      if (r.error().is_cancelled()) co_return;
      log::warn("Error watching for the leader", {{"what", what}, {"error", r.error().to_string()}});
      if (!co_await async::sleep_for(delays.next())) co_return;
      continue;
    }
    delays.reset();
    auto v = extract(r->value);
    if (!slot || *slot != v) {
      slot = std::move(v);
      dirty.set();
    }
  }
}

asio::awaitable<void> watch_nodes(consul::client& c, leader_settings s, leader_state& st) {
  consul::query_options q;
  q.node_meta = s.node_meta;
  q.partition = s.partition;
  q.timeout = s.wait + s.wait / 16 + consul::blocking_margin;  // large lists: see worker.cpp
  consul::watch<std::vector<consul::node>> w(
      [&c](const consul::query_options& o) { return c.catalog_nodes(o); }, q, s.wait);
  auto extract = [](const std::vector<consul::node>& v) { return to_external(v); };
  co_await follow(std::move(w), extract, st.nodes, st.dirty, "external nodes", s);
}

asio::awaitable<void> watch_instances(consul::client& c, leader_settings s, leader_state& st) {
  consul::query_options q;
  q.partition = s.partition;
  auto service = s.service;
  auto tag = s.service_tag;
  consul::watch<std::vector<consul::service_entry>> w(
      [&c, service, tag](const consul::query_options& o) {
        return c.health_service(service, tag, true, o);
      },
      q, s.wait);
  auto extract = [](const std::vector<consul::service_entry>& v) { return to_instances(v); };
  co_await follow(std::move(w), extract, st.instances, st.dirty, "healthy instances", s);
}

enum class write_outcome { done, retry, fenced };

// One computation and its writes. Honours terminal cancellation (the request in flight is
// aborted; a transaction either committed or did not).
asio::awaitable<write_outcome> rebalance(consul::client& c, const leader_settings& s,
                                         const consul::txn_op& fence, const util::lease& lease,
                                         leader_state& st, leader_stats& stats) {
  const auto& nodes = *st.nodes;
  const auto& instances = *st.instances;
  stats.nodes = nodes.size();
  stats.instances = instances.size();
  if (instances.empty()) {
    log::warn("No healthy ESM instances: not assigning external nodes", {{"nodes", nodes.size()}});
    co_return write_outcome::done;  // a new instance list wakes us again
  }

  // The stored tree is read each time rather than remembered: it is the truth followers
  // act on, and another leader (or an operator) may have changed it since.
  consul::query_options q;
  q.partition = s.partition;
  auto dir = assignments_dir(s.kv_path);
  auto stored_r = co_await c.kv_list(dir, q);
  if (!stored_r) {
    if (stored_r.error().is_cancelled()) co_return write_outcome::done;
    ++stats.failures;
    log::error("Error reading the stored assignment", {{"error", stored_r.error().to_string()}});
    co_return write_outcome::retry;
  }
  std::map<std::string, std::string> stored;
  for (auto& kv : stored_r->value) stored.emplace(kv.key, std::move(kv.value));

  auto previous = decode_stored_assignments(s.kv_path, stored);
  auto next = balanced_assignment(nodes, instances, previous);
  ++stats.computations;
  auto plan = plan_assignment_writes(s.kv_path, stored, next);
  if (plan.empty()) co_return write_outcome::done;

  std::size_t ops = 0;
  for (auto& txn : plan) {
    std::vector<consul::txn_op> body;
    body.reserve(txn.size() + 1);
    body.push_back(fence);
    for (auto& w : txn) {
      consul::txn_kv_op kv;
      kv.verb = w.verb;
      kv.key = w.key;
      if (w.verb == "set") kv.value = w.value;
      kv.partition = s.partition;
      consul::txn_op op;
      op.kv = std::move(kv);
      body.push_back(std::move(op));
    }
    consul::write_options wo;
    wo.partition = s.partition;
    // No leader write once the loss of leadership (or a shutdown) is known, even if it came
    // while this coroutine was not waiting (then it cancels no request by itself).
    auto cs = co_await asio::this_coro::cancellation_state;
    if (async::is_cancelled(cs)) co_return write_outcome::done;
    // Nor once the term's fencing deadline has passed, though the election has not yet said
    // so (a process resumed after a pause runs this before the election's timer).
    if (!lease.valid()) {
      ++stats.lease_refusals;
      log::warn("Not writing the assignment: the leader session's fencing deadline has passed "
                "(was esmd paused?); stepping down");
      co_return write_outcome::fenced;
    }
    auto r = co_await c.txn(std::move(body), wo);
    if (!r) {
      if (r.error().is_cancelled()) co_return write_outcome::done;
      ++stats.failures;
      log::error("Error writing state to KV store", {{"error", r.error().to_string()}});
      co_return write_outcome::retry;
    }
    if (!r->committed) {
      bool fenced = std::any_of(r->errors.begin(), r->errors.end(),
                                [](const consul::txn_error& e) { return e.op_index == 0; });
      std::string what = r->errors.empty() ? std::string("rolled back") : r->errors.front().what;
      if (fenced) {
        stats.fenced_out = true;
        log::warn("Leadership lost: assignment write refused by the session check",
                  {{"error", what}});
        co_return write_outcome::fenced;
      }
      ++stats.failures;
      log::error("Error writing state to KV store", {{"error", what}});
      co_return write_outcome::retry;
    }
    ++stats.transactions;
    stats.ops += txn.size();
    ops += txn.size();
  }
  auto moved = count_moved(previous, next);
  stats.nodes_moved += moved;
  ++stats.rebalances;
  log::info("Rebalanced external nodes across ESM instances",
            {{"nodes", nodes.size()}, {"instances", instances.size()}, {"moved", moved},
             {"writes", ops}});
  co_return write_outcome::done;
}

// Waits for news, lets a burst settle, computes and writes; retries failures with backoff.
// Returns only when fenced out (or cancelled). An exception (a broken invariant of the
// assignment, for example) is not caught: it ends the leader work, so the election ends the
// term and the daemon stops (exit 11) instead of holding the lock and assigning nothing.
asio::awaitable<void> compute_loop(consul::client& c, leader_settings s, consul::txn_op fence,
                                   util::lease lease, leader_state& st, leader_stats& stats) {
  {
    util::backoff delays(s.retry_base, s.retry_cap);
    for (;;) {
      if (!co_await st.dirty.wait()) co_return;
      if (!st.nodes || !st.instances) {
        st.dirty.reset();  // both inputs are needed; the missing one will set it again
        continue;
      }
      if (!co_await async::sleep_for(s.debounce)) co_return;
      st.dirty.reset();
      auto outcome = co_await rebalance(c, s, fence, lease, st, stats);
      if (outcome == write_outcome::fenced) co_return;
      if (outcome == write_outcome::retry) {
        if (!co_await async::sleep_for(delays.next())) co_return;
        st.dirty.set();
      } else {
        delays.reset();
      }
      if (async::is_cancelled(co_await asio::this_coro::cancellation_state)) co_return;
    }
  }
}

}  // namespace

asio::awaitable<void> run_assignment_leader(consul::client& c, leader_settings s,
                                            consul::txn_op fence, util::lease lease,
                                            leader_stats& stats) {
  leader_state st(co_await asio::this_coro::executor);
  if (s.node_meta.empty())
    log::warn("external_node_meta is empty: every node in the catalog counts as external");
  log::info("Watching external nodes and ESM instances for the assignment",
            {{"service", s.service}, {"kv_path", s.kv_path}});
  // The first branch to end (the computation, when fenced out) stops the other two; an
  // exception of any branch is rethrown (never swallowed), and ends the term.
  std::vector<asio::awaitable<void>> branches;
  branches.push_back(watch_nodes(c, s, st));
  branches.push_back(watch_instances(c, s, st));
  branches.push_back(compute_loop(c, s, std::move(fence), std::move(lease), st, stats));
  co_await async::first_of(std::move(branches));
}

}  // namespace esm::sharding
