// Which instance monitors which external node: the leader's decision, without I/O.
//
// Inputs are the external nodes (name, and whether node meta `external-probe` is exactly
// `true`) and the service IDs (`S:I`) of the healthy instances. The output gives every
// healthy instance an `assignment`: the nodes whose checks it runs (`nodes`) and the nodes it
// also pings (`probes`; their checks are run too). This is the value consul-esm stores at
// `K/agents/S:I` (see kv_codec.hpp).
//
// Two algorithms:
//
// * `round_robin_assignment` is consul-esm's (leader.go `nodeLists`), kept so that mixed
//   Go/C++ fleets can be reasoned about and tested: node at sorted index i goes to instance
//   i mod k of the sorted instance IDs. Balanced in total, but not in probes, and adding or
//   removing one node or instance moves most nodes.
//
// * `balanced_assignment` is esmd's. With k instances, P probe nodes and N plain nodes:
//
//   Balance (exact, for every input): every instance gets floor(P/k) or ceil(P/k) probes,
//   floor(N/k) or ceil(N/k) plain nodes, and floor((P+N)/k) or ceil((P+N)/k) nodes in total,
//   so max - min <= 1 for each of the three counts.
//
//   Movement: the previous assignment is an input. A node stays with its previous owner
//   whenever that owner is still healthy and has not exceeded its quota, so the only nodes
//   that move are those of departed instances, new nodes, and an instance's overflow beyond
//   its new quota. Which instances get the "+1" of a quota is chosen to avoid overflow: an
//   instance that already holds more than base nodes of a class gets that class's +1 when
//   it can. Given a previous assignment that this function produced for the same nodes:
//   - one instance joining k moves at most ceil(P/(k+1)) + ceil(N/(k+1)) + 2k nodes: the
//     joiner's share, plus the old instances' shortfall below a new quota, at most one per
//     old instance and class (only when a quota floor does not change and the classes'
//     +1s conflict);
//   - one of k instances leaving moves at most ceil(P/k) + ceil(N/k) + 2(k - 1): its share,
//     plus the survivors' excess over a new quota, at most one per survivor and class;
//   - adding or removing a node moves at most a few others (quota +1s shifting).
//   Measured (test/unit/sharding): over 750 random joins and leaves (n from 0 to 3200, k from
//   1 to 40) the slack term was 0 every time, i.e. exactly the joiner's or leaver's share
//   moved; over 900 steps of 1-3 node additions/removals, 0.27 other nodes moved per step on
//   average, at most 3. A cold start (no previous assignment: first leader, or a wiped KV
//   tree) is a pure function of the node and instance names; between two cold starts k and
//   k+1 about 1.1x (k=5) to 1.6x (k=50) of the joiner's share moves.
//
//   Placement of the nodes that must move (all of them on a cold start) is rendezvous
//   (highest random weight) hashing with bounded load: each node has a weight for each
//   instance, `rendezvous_weight(fnv1a64(node), mix64(fnv1a64(instance)))` (stable_hash.hpp),
//   and the nodes are matched to the instances' free slots by deferred acceptance (Gale and
//   Shapley): nodes ask instances in decreasing weight order, a full instance keeps the
//   nodes that weigh most for it. Since both sides rank a pair by the same weight, the
//   matching is the unique stable one: it does not depend on processing order. The nodes an
//   overfull instance gives up are those with the lowest weight for it.
//
//   Determinism: the result depends only on the set of node names (with probe flags), the
//   set of instance IDs and the previous assignment; input order and duplicates do not
//   matter (a duplicated node is one node, a probe node if any copy says so). A node the
//   previous assignment lists under several instances is considered owned by the one with
//   the highest weight. Previous entries for unknown nodes or instances are ignored.
//
//   Cost: O(n k) weight computations plus O(n log n) sorting by name; 100 000 nodes over 50
//   instances take about 0.1-0.2 s on the project's (shared, 2-core) machines, cold or from
//   a previous assignment (the test prints the figure).
//
// Zero instances give an empty map (the caller writes nothing and retries, as consul-esm
// does); zero nodes give every instance an empty assignment. Every healthy instance has an
// entry, even an empty one, because consul-esm writes a value for each.
#pragma once

#include <cstddef>
#include <iosfwd>
#include <map>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace esm::sharding {

// Node meta that opts a node into pinging: key `external-probe`, value exactly `true`.
inline constexpr std::string_view probe_meta_key = "external-probe";
inline constexpr std::string_view probe_meta_value = "true";

struct external_node {
  std::string name;
  bool probe = false;  // node meta external-probe == "true"

  friend bool operator==(const external_node&, const external_node&) = default;
};

// One instance's share. Both lists are sorted by node name (byte order) and disjoint in
// everything this library produces; decoded values from KV may be in any order.
struct assignment {
  std::vector<std::string> nodes;   // checks only
  std::vector<std::string> probes;  // checks and pings

  bool empty() const noexcept { return nodes.empty() && probes.empty(); }
  std::size_t size() const noexcept { return nodes.size() + probes.size(); }
  friend bool operator==(const assignment&, const assignment&) = default;
};

// For logs and test failure messages: `nodes [n1 n3] probes [p1]`.
std::ostream& operator<<(std::ostream& os, const assignment& a);

// Keyed by instance service ID (`S:I`), sorted.
using assignment_map = std::map<std::string, assignment>;

// consul-esm's positional round robin over the nodes sorted by name and the instances sorted
// by ID (the order consul-esm's watches deliver them in). Not deduplicated: a model of the Go
// code, not a recommendation.
assignment_map round_robin_assignment(std::span<const external_node> nodes,
                                      std::span<const std::string> instances);

// esmd's balanced, minimal-movement assignment (see above).
assignment_map balanced_assignment(std::span<const external_node> nodes,
                                   std::span<const std::string> instances,
                                   const assignment_map& previous = {});

// Number of nodes that have an owner in both maps and a different owner in `after`: the
// nodes whose checks (and pings) change hands. Nodes present in only one map are not
// counted. A node listed under several instances in `before` counts as moved unless `after`
// gives it to one of them.
std::size_t count_moved(const assignment_map& before, const assignment_map& after);

// What an instance does with its own assignment (consul-esm `watchNodeList`): run the checks
// of `health_nodes` = nodes ∪ probes, and ping `ping_nodes` = probes.
struct follower_work {
  std::set<std::string> health_nodes;
  std::set<std::string> ping_nodes;

  friend bool operator==(const follower_work&, const follower_work&) = default;
};

follower_work follower_sets(const assignment& mine);

}  // namespace esm::sharding
