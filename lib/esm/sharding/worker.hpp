// The follower's side of work sharding (reference §5.3, §6.1), run by every instance including
// the leader: watch this instance's assignment at `K/agents/S:I`, and keep the node objects and
// the health checks of exactly its own nodes current, handing them to a sink (the check runner
// and the node prober implement it).
//
// How the share is read (DESIGN "Decisions" §4; W19, W20, W23). consul-esm lists every external
// node on each assignment change and downloads every external check in the datacenter on each
// check change anywhere, filtering locally. Here, two blocking queries per instance carry a
// server-side filter naming exactly this instance's nodes (`Node matches "^(a|b|...)$"`;
// Consul 1.8 has no `Node in [...]`):
//   GET /v1/catalog/nodes?node-meta=...&filter=Node matches "^(...)$"&index=&wait=
//   GET /v1/health/state/any?node-meta=...&filter=Node matches "^(...)$"&index=&wait=
// A check change anywhere still wakes the checks query (its index is the checks table's), but
// the answer holds only this instance's checks: about 1/k of consul-esm's bytes with k
// instances.
//
// Options measured by test/bench/sharding (bench_sharding) on Consul 1.8.7 (dev agent, shared
// 2-core machine, so times are for orientation; bytes are exact), 10 000 external nodes with 2
// checks each, 5 instances, one share = 2 000 nodes:
//   read of one share                                   body bytes   time
//   health/state/any, node-meta only (consul-esm)        9 595 755   0.56-1.7 s
//   health/state/any, node-meta + Node matches regex     1 919 139   0.17-0.30 s   <- chosen
//   catalog/nodes, node-meta only (consul-esm)           2 823 879   0.09-0.34 s
//   catalog/nodes, node-meta + Node matches regex          625 571   0.06-0.07 s   <- chosen
//   health/node/<n>, one per node                      955 x 2 000   0.2-0.5 ms each
// The regex filter is cheaper for Consul than the unfiltered list (fewer bytes to encode).
// Per event, all 5 instances together (wire bytes incl. headers):
//   one check's status changes: esmd 5 requests, 9.6 MB (1.9 MB each);
//                               consul-esm 5 requests, 48.0 MB (9.6 MB each);
//   one node added:             esmd 18 requests, 15.4 MB (the leader's instance 5.5 MB: its
//                               node watch lists all external nodes, as consul-esm's does);
//                               consul-esm 21 requests, 112.9 MB (24.8 MB each), because it
//                               rewrites every assignment key and every follower re-reads all
//                               nodes and all checks.
// Rejected:
//   * per-node `/v1/health/node/<n>` blocking queries: a check change would wake only its
//     node's query (about 1 KB), but 2 000 long-lived requests per instance exceed the
//     client's connection cap (64) and Consul's http_max_conns_per_client (200), and every
//     one of them returns at each wait expiry;
//   * a delta filter (`ModifyIndex > N`): go-bexpr in Consul 1.8 has no ordering operators
//     (a parse error, verified), and deletions would not show in a delta anyway;
//   * `Node in [...]`: not supported by Consul 1.8 (HTTP 500).
//
// Latency and cost of an assignment change: departed nodes and their checks are dropped from
// what the sink holds at once; only the added nodes are read (non-blocking, filtered to just
// them), and the blocking queries resume from the index the cache is current as of, so an
// instance that receives a few nodes does not download its share again. A check registered on
// an assigned node arrives with the blocking query's return (tens of milliseconds).
//
// Those decisions (what the sink holds, when to deliver, which nodes to read, from which
// indexes) are share_cache's (share_cache.hpp), without I/O; the worker carries them out.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <boost/asio/awaitable.hpp>

#include "esm/consul/client.hpp"
#include "esm/consul/types.hpp"
#include "esm/sharding/assignment.hpp"

namespace esm::sharding {

// Node-level check that the node prober owns; never handed to the check runner.
inline constexpr std::string_view external_node_health_check_id = "externalNodeHealth";

// One health check of the share as the worker read it: shared and immutable.
//
// Why shared. The check engine keeps every check object of its share for its compare-and-set
// writes (the full object, unknown members included), and the worker keeps the same objects to
// tell what changed between two answers; a copy is about 1 KB plus its strings (Notes,
// Output, the definition's URL and headers: often as much again). So there is one object per
// check version, owned jointly: the worker's cache hands over handles, the engine keeps the
// handle it was given, and an unchanged check (same ModifyIndex) keeps its object from one
// answer to the next. (Rejected: the engine owning the objects and the worker keeping only
// (node, check ID, ModifyIndex): the cache must rebuild the share after an assignment change
// without the engine, and the engine must not depend on the worker's order and filters.)
// Immutable because several hold
// it: a changed check is a new object (a new answer from Consul, or the engine's own after a
// write), never an edit of the shared one, so a holder never sees an object change under it,
// and one that needs an object across a co_await holds a handle, not a reference.
using consul::shared_check;

// Each check in an object of its own: for callers that build a share by hand (tests,
// benchmarks).
std::vector<shared_check> make_shared_checks(std::vector<consul::health_check> checks);

// Receives this instance's share. Called on the worker's executor, never concurrently; the
// implementation must not block. Each call carries the complete current state (not a delta),
// by reference to the worker's own list (valid during the call; the handles in it may be
// kept): a share of 100 000 checks is not copied on every change.
class assignment_sink {
 public:
  virtual ~assignment_sink() = default;
  // health_nodes: the node objects of Nodes ∪ Probes (run their checks); ping_nodes: those of
  // Probes (ping them). Both sorted by name. Nodes of the assignment that the catalog does
  // not have (yet) are absent. Called when the assignment or a node object changed.
  virtual void on_nodes(std::vector<consul::node> health_nodes,
                        std::vector<consul::node> ping_nodes) = 0;
  // Every check on health_nodes except externalNodeHealth, sorted by (node, check ID).
  // Called when a check was added, removed or modified (its ModifyIndex moved), and when the
  // assignment changed. A check whose ModifyIndex did not move since the last call comes in
  // the same object as then.
  virtual void on_checks(const std::vector<shared_check>& checks) = 0;
  // The sink's own object for exactly this version of a check (the key's ModifyIndex), if it
  // holds one the share does not: e.g. the check runner's copy after its write, which Consul
  // confirmed. The share's next answer then takes it instead of decoding the same version
  // again (one object per check, not a second one for the cache). Null: decode it.
  virtual shared_check held_check(const consul::check_key&) const { return nullptr; }
};

// Logs what it receives (counts at INFO when they change, like consul-esm's `Health check
// counts changed`, otherwise at DEBUG; names at DEBUG); for the daemon until the check runner
// and prober exist, and for tests.
class logging_sink : public assignment_sink {
 public:
  void on_nodes(std::vector<consul::node> health_nodes,
                std::vector<consul::node> ping_nodes) override;
  void on_checks(const std::vector<shared_check>& checks) override;

 private:
  std::size_t last_checks_ = static_cast<std::size_t>(-1);
};

struct worker_settings {
  worker_settings() {}  // not an aggregate: see the g++ 12 note in consul/client.hpp
  std::string kv_path = "consul-esm/";  // consul_kv_path
  std::string service_id;               // S:I, this instance's service ID
  std::vector<std::pair<std::string, std::string>> node_meta{{"external-node", "true"}};
  std::string partition;                // empty: the client's
  bool stale_reads = false;             // stale_read_nodes: node and check reads may be stale
  std::chrono::milliseconds wait{45'000};       // blocking_query_wait
  std::chrono::milliseconds retry_base{250};
  std::chrono::milliseconds retry_cap{10'000};  // retry_interval
};

// For tests and metrics (one thread: plain fields).
struct worker_stats {
  std::uint64_t assignments = 0;      // distinct assignments applied (the first one included)
  // The own assignment key exists (a leader assigned this instance a share, maybe empty). An
  // absent key applies as an empty assignment but is not a share: no leader has assigned
  // work yet, or it removed this instance.
  bool assigned = false;
  std::uint64_t malformed = 0;        // assignment values that did not decode (kept the old)
  std::uint64_t node_deliveries = 0;  // on_nodes calls
  std::uint64_t check_deliveries = 0; // on_checks calls
  std::uint64_t errors = 0;           // failed Consul reads (retried)
  std::uint64_t added_reads = 0;      // assignment changes served by reading only added nodes
  assignment current;                 // the assignment in force
  std::size_t nodes = 0;              // health nodes last handed over
  std::size_t checks = 0;             // checks last handed over
};

// Runs until cancelled (terminal). Never throws on Consul errors (logged, retried with
// backoff). `sink` and `stats` must outlive the call.
boost::asio::awaitable<void> run_assignment_worker(consul::client& c, worker_settings s,
                                                   assignment_sink& sink, worker_stats& stats);

// The filter expression selecting exactly `names` by their Node field, for Consul 1.8's
// go-bexpr: `Node matches "^(a|b\\.c)$"` (regex metacharacters escaped for RE2, then the
// string quoted for bexpr). Empty names give an expression that matches nothing. Exposed for
// unit tests.
std::string node_name_filter(const std::vector<std::string>& names);

}  // namespace esm::sharding
