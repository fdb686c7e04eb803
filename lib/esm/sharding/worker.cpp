#include "esm/sharding/worker.hpp"

#include <cctype>
#include <optional>
#include <set>

#include <boost/asio/this_coro.hpp>

#include "esm/util/backoff.hpp"
#include "esm/consul/watch.hpp"
#include "esm/log/log.hpp"
#include "esm/sharding/kv_codec.hpp"
#include "esm/sharding/kv_plan.hpp"
#include "esm/sharding/share_cache.hpp"
#include "esm/util/async.hpp"
#include "esm/util/heap.hpp"

namespace esm::sharding {

namespace asio = boost::asio;

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

std::vector<shared_check> make_shared_checks(std::vector<consul::health_check> checks) {
  std::vector<shared_check> out;
  out.reserve(checks.size());
  for (auto& c : checks) out.push_back(std::make_shared<const consul::health_check>(std::move(c)));
  return out;
}

void logging_sink::on_checks(const std::vector<shared_check>& checks) {
  auto l = checks.size() == last_checks_ ? log::level::debug : log::level::info;
  last_checks_ = checks.size();
  log::write(l, "Health checks of the assigned nodes", {{"checks", checks.size()}});
}

namespace {

// The driver's state: the decisions live in `cache`.
struct worker_state {
  explicit worker_state(asio::any_io_executor ex) : changed(ex) {}
  share_cache cache;
  async::event changed;  // the cache took a new assignment
};

// Hands over what the cache says changed.
void deliver(const share_cache& cache, share_cache::delivery d, assignment_sink& sink,
             worker_stats& stats) {
  if (d.nodes) {
    ++stats.node_deliveries;
    stats.nodes = cache.node_count();
    sink.on_nodes(cache.nodes(), cache.ping_nodes());
  }
  if (d.checks) {
    ++stats.check_deliveries;
    stats.checks = cache.checks().size();
    sink.on_checks(cache.checks());
  }
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
    stats.assigned = value.has_value();
    if (!st.cache.assign(next)) return;
    log::info("Updated assignment", {{"nodes", st.cache.health_node_count()},
                                      {"probes", st.cache.ping_node_count()}});
    stats.current = std::move(next);  // the one copy of the assignment in force
    ++stats.assignments;
    st.changed.set();
  };
  co_await follow(std::move(w), apply, "Error watching the assignment", "key", key, s, stats);
}

consul::query_options share_query(const worker_settings& s, const std::vector<std::string>& names) {
  consul::query_options q;
  q.node_meta = s.node_meta;
  q.partition = s.partition;
  q.filter = node_name_filter(names);
  if (s.stale_reads) q.mode = consul::consistency::stale;
  // A large share takes Consul a while to filter and encode (2 000 of 10 000 nodes: about
  // 0.2-0.3 s on an idle dev agent, many seconds when every instance starts at once), so
  // even a non-blocking read gets the blocking deadline rather than the short request
  // timeout; otherwise a loaded Consul times every instance out again and again.
  q.timeout = s.wait + s.wait / 16 + consul::blocking_margin;
  return q;
}

// Follows the node objects and checks of the followed nodes, from the indexes the cache is
// current as of when it has them, else from scratch. Returns only when cancelled (a new
// assignment, or the worker's end).
asio::awaitable<void> follow_share(consul::client& c, worker_settings s, worker_state& st,
                                   assignment_sink& sink, worker_stats& stats) {
  // The filter names every followed node (about 11 B per node), and each watch keeps its own
  // copy for as long as it follows: the second takes this one rather than a third copy staying
  // in this frame.
  auto q = share_query(s, st.cache.followed());
  consul::watch<std::vector<consul::node>> nodes_w(
      [&c](const consul::query_options& o) { return c.catalog_nodes(o); }, q, s.wait);
  // A check read again at the same ModifyIndex is not decoded: the held object stands for it,
  // the cache's or, for a version the cache has not seen yet, the sink's (its own write).
  consul::watch<std::vector<shared_check>> checks_w(
      [&c, &st, &sink](const consul::query_options& o) {
        return c.health_state_shared("any", o, [&st, &sink](const consul::check_key& k) {
          if (auto h = st.cache.held_check(k)) return h;
          return sink.held_check(k);
        });
      },
      std::move(q), s.wait);
  if (auto from = st.cache.resume_from()) {
    // Resume: the first call blocks on the index the cache is current as of.
    nodes_w.tracker().on_result(from->nodes, std::chrono::milliseconds::max());
    checks_w.tracker().on_result(from->checks, std::chrono::milliseconds::max());
  }
  // Once an answer is applied, what was read and not kept is garbage: a large one's freed
  // blocks go back to the system (util/heap.hpp) rather than staying resident.
  auto on_nodes = [&st, &sink, &stats](consul::query_result<std::vector<consul::node>> r) {
    auto read = r.value.size();
    deliver(st.cache, st.cache.on_nodes(std::move(r.value), r.meta.last_index), sink, stats);
    util::trim_heap_after(read);
  };
  auto on_checks = [&st, &sink, &stats](consul::query_result<std::vector<shared_check>> r) {
    auto read = r.value.size();
    deliver(st.cache, st.cache.on_checks(std::move(r.value), r.meta.last_index), sink, stats);
    util::trim_heap_after(read);
  };
  std::vector<asio::awaitable<void>> branches;
  branches.push_back(follow(std::move(nodes_w), on_nodes, "Error watching the assigned nodes",
                            "what", "nodes", s, stats));
  branches.push_back(follow(std::move(checks_w), on_checks, "Error watching the assigned nodes",
                            "what", "checks", s, stats));
  co_await async::first_of(std::move(branches));
}

// Reads the nodes a new assignment added (non-blocking, filtered to just them) and merges them
// into the cache; on a failure the cache is invalidated, and follow_share reads the whole share.
// Honours terminal cancellation.
asio::awaitable<void> read_added(consul::client& c, const worker_settings& s, worker_state& st,
                                 std::set<std::string> added, assignment_sink& sink,
                                 worker_stats& stats) {
  auto q = share_query(s, std::vector<std::string>(added.begin(), added.end()));
  // No co_await inside a conditional expression: g++ 12 mishandles its temporaries.
  auto failed = [&st, &stats](const consul::error& e) {
    if (!e.is_cancelled()) {
      ++stats.errors;
      log::warn("Error reading the added nodes: reading the whole share", {{"error", e.to_string()}});
    }
    st.cache.invalidate();
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
  ++stats.added_reads;
  auto read = nodes->value.size() + checks->value.size();
  auto d = st.cache.on_added(std::move(nodes->value), std::move(checks->value),
                             {nodes->meta.last_index, checks->meta.last_index});
  deliver(st.cache, d, sink, stats);
  util::trim_heap_after(read);
}

// Applies each new assignment as the cache plans it: drops what left at once, reads what
// arrived, and follows the share. Returns when cancelled; an exception (a bug, or a sink's)
// ends the worker.
asio::awaitable<void> apply_assignments(consul::client& c, worker_settings s, worker_state& st,
                                        assignment_sink& sink, worker_stats& stats) {
  using catch_up = share_cache::catch_up;
  for (;;) {
    if (!co_await st.changed.wait()) co_return;
    st.changed.reset();
    auto p = st.cache.apply_assignment();
    // Departed nodes and their checks leave what the sink holds before anything is fetched.
    deliver(st.cache, p.drop, sink, stats);
    if (p.next == catch_up::nothing) continue;
    if (p.next == catch_up::read_added) {
      {
        std::vector<asio::awaitable<void>> branches;
        branches.push_back(until_set(st.changed));
        branches.push_back(read_added(c, s, st, std::move(p.added), sink, stats));
        co_await async::first_of(std::move(branches));
      }
      if (async::is_cancelled(co_await asio::this_coro::cancellation_state)) co_return;
      if (st.changed.is_set()) {  // superseded while reading: the merge may be partial
        st.cache.invalidate();
        continue;
      }
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
