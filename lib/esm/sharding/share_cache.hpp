// The worker's share cache: what the assignment sink holds and every decision about it,
// without I/O (DESIGN "Decisions" §4; see worker.hpp for how the share is read). The worker
// (worker.cpp) is the driver: it reads Consul, feeds each answer in, and calls the sink when a
// step returns a delivery.
//
// What it decides:
//  - whether a newly read assignment changes anything (the same work in another order or
//    encoding does not);
//  - what the sink holds: the node objects and checks of the share, sorted, externalNodeHealth
//    excluded; a step delivers only when that changed (a node object by name, ModifyIndex,
//    address, meta, tagged addresses, or which of them are pinged; a check by (node, check ID,
//    ModifyIndex), since any change of a check in Consul moves its ModifyIndex);
//  - which check objects are kept: one shared object per check version (see shared_check in
//    worker.hpp); a check read again with the same ModifyIndex keeps the object held, and the
//    one just read is dropped, so that the sink's copy and the cache's stay one;
//  - after an assignment change, how to catch up: the departed nodes leave at once, and while
//    the cache is current for every followed node as of both blocking indexes, only the added
//    nodes are read and the blocking queries resume from the lower of the two states
//    (min of the indexes), so an instance receiving a few nodes does not download its share
//    again; otherwise the whole share is read from scratch.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "esm/consul/types.hpp"
#include "esm/sharding/assignment.hpp"
#include "esm/sharding/worker.hpp"

namespace esm::sharding {

// One node object held by the cache, packed into one allocation of its bytes (the strings,
// the maps' entries, the indexes, each string with its length): a lean external node (name,
// address, datacenter, one meta entry) takes 119 B this way with its handle in the cache's
// vector, against 384 B as a consul::node (272 B inline, the meta map's entry 112 B; both
// from bench_engine --share-memory). The cache needs the objects only to tell a change and to
// hand them over, so it keeps them packed and unpacks on delivery. A moved-from packed_node
// holds nothing and may only be destroyed or assigned to.
class packed_node {
 public:
  explicit packed_node(const consul::node& n);
  consul::node unpack() const;
  std::string_view name() const noexcept;
  // Whether `n` is the same node for the cache's purpose (name, ModifyIndex, address, meta,
  // tagged addresses), compared in place: every answer of the share's node watch is compared
  // with every node held, and unpacking them would allocate a few strings per node each time.
  bool same_as(const consul::node& n) const noexcept;

 private:
  std::unique_ptr<char[]> p_;
};

class share_cache {
 public:
  // The blocking indexes of the share's last answers: the cache holds every followed node and
  // its checks as of them.
  struct indexes {
    std::uint64_t nodes = 0;
    std::uint64_t checks = 0;
    friend bool operator==(const indexes&, const indexes&) = default;
  };

  // What to hand to the sink after a step, nodes first: `nodes`: on_nodes(nodes(),
  // ping_nodes()); `checks`: on_checks(checks()).
  struct delivery {
    bool nodes = false;
    bool checks = false;
    friend bool operator==(const delivery&, const delivery&) = default;
  };

  // How to catch up after an assignment change.
  enum class catch_up {
    nothing,       // nothing assigned: follow nothing until the next assignment
    read_added,    // read `added` (non-blocking), on_added(), then follow from resume_from()
    resume,        // follow the share from resume_from(): nothing new to read
    from_scratch,  // follow the whole share from index 0
  };
  struct plan {
    delivery drop;  // the departed nodes and their checks: hand over before reading anything
    catch_up next = catch_up::nothing;
    std::set<std::string> added;  // the nodes to read first, for read_added (else empty)
  };

  // Takes an assignment just read from KV; false when it assigns the same work as the one in
  // force (nothing to do). Steps that follow filter by it at once, even before
  // apply_assignment(): an answer for the old share that arrives meanwhile must not bring
  // back a node that left. The assignment itself is not kept (the caller keeps the one in
  // force, worker_stats::current; one copy of the names less per node): only its work.
  bool assign(const assignment& next);
  // Whether assign() has taken an assignment yet.
  bool assigned() const noexcept { return assigned_; }
  // The work of the assignment in force (the empty work until the first assign()), as sets
  // built for each call; its sizes without building them.
  follower_work work() const;
  std::size_t health_node_count() const noexcept { return work_->health.size(); }
  std::size_t ping_node_count() const noexcept { return work_->ping.size(); }

  // Catches up with the assignment in force (once per change, however many assign() calls it
  // stands for). The first call always delivers both lists, empty ones included, so that the
  // sink learns the share is empty.
  plan apply_assignment();

  // The share's blocking queries answered (`index`: X-Consul-Index).
  delivery on_nodes(std::vector<consul::node> fetched, std::uint64_t index);
  delivery on_checks(std::vector<consul::health_check> fetched, std::uint64_t index);
  // The same, read with client::health_state_shared and held_check(): the objects of unchanged
  // checks are those held already (or, where the read could not tell, are made so here).
  delivery on_checks(std::vector<shared_check> fetched, std::uint64_t index);
  // The object held for exactly this version of a check (the same key and ModifyIndex), else
  // null: a check read again need not be decoded (client::health_state_shared).
  shared_check held_check(const consul::check_key& k) const;
  // The added nodes of a read_added plan were read, their nodes at `read_at.nodes` and their
  // checks at `read_at.checks`: merges them, and lowers the indexes to the older state, so
  // that the share queries return at once and bring everything to the newer one.
  delivery on_added(std::vector<consul::node> nodes, std::vector<consul::health_check> checks,
                    indexes read_at);
  // The cache can no longer be trusted to be current for every followed node (a read of the
  // added nodes failed, or a new assignment superseded it midway): the share is read from
  // scratch. What the sink holds is kept until the new answers replace it.
  void invalidate() { indexes_ = {}; }

  // Where the share's blocking queries start: nullopt from scratch.
  std::optional<indexes> resume_from() const;
  // The nodes the share queries select (the health nodes of the last applied assignment),
  // sorted, unique.
  const std::vector<std::string>& followed() const { return followed_->health; }

  // What the sink holds: node objects of the share sorted by name (unpacked: a new vector each
  // call); those of them to ping; every check on them but externalNodeHealth, sorted by (node,
  // check ID, service ID, namespace, partition).
  std::vector<consul::node> nodes() const;
  std::size_t node_count() const noexcept { return nodes_.size(); }
  const std::vector<consul::node>& ping_nodes() const { return ping_; }
  const std::vector<shared_check>& checks() const { return checks_; }

 private:
  bool take_nodes(std::vector<consul::node> fetched);
  // A full answer: the held objects of unchanged checks are kept.
  bool take_checks(std::vector<shared_check> fetched);
  // What the sink is to hold from now on (filtered here, sorted here); false when it holds
  // the same already.
  bool hold_checks(std::vector<shared_check> next);

  bool assigned_ = false;
  // A follower_work as sorted vectors of names: 32 B per name (a std::set's node is 80 B).
  struct names {
    std::vector<std::string> health;  // Nodes and Probes
    std::vector<std::string> ping;    // Probes
    bool operator==(const names&) const = default;
  };
  static bool has(const std::vector<std::string>& sorted, std::string_view name);
  // The work in force and the work last applied (followed()): the same object, not a copy,
  // once apply_assignment() has run. Never null.
  std::shared_ptr<const names> work_ = std::make_shared<const names>();
  std::shared_ptr<const names> followed_ = work_;

  std::vector<packed_node> nodes_;  // the health nodes (see packed_node)
  std::vector<consul::node> ping_;  // the pinged ones among them, as the prober takes them
  std::vector<shared_check> checks_;
  // The first delivery happens whatever it holds; after that, only changes are delivered.
  bool delivered_nodes_ = false;
  bool delivered_checks_ = false;

  indexes indexes_;  // 0: no answer since the last start from scratch
};

}  // namespace esm::sharding
