// The leader's side of work sharding (reference §5.1, §5.2; DESIGN "Decisions" §3): while
// this instance holds the leader lock, watch the external nodes and the healthy esmd (or
// consul-esm) instances with blocking queries, and after every change publish a balanced,
// minimal-movement assignment at `K/agents/S:I`, writing only the keys whose content changed.
//
// Differences from consul-esm's leader (W20, W23, W24):
//  - blocking queries carry `wait` (no load-balancer idle timeout can hang them; the client's
//    deadline is wait + wait/16 + margin) and are re-issued at once, without consul-esm's 10 s
//    and 1 s pauses, so a change is acted on within the debounce (default 150 ms);
//  - the stored assignment is the previous one: nothing moves that need not move, and an
//    unchanged key is not rewritten (no follower wakes up for nothing);
//  - every transaction starts with the election's `check-session` op on the lock key, so a
//    deposed leader's late write fails; a 409 on that op ends the leader work;
//  - the watches are branches of the leader coroutine and end with it (no leaked goroutines).
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <boost/asio/awaitable.hpp>

#include "esm/consul/client.hpp"
#include "esm/util/lease.hpp"
#include "esm/consul/types.hpp"

namespace esm::sharding {

struct leader_settings {
  leader_settings() {}  // not an aggregate: see the g++ 12 note in consul/client.hpp
  std::string kv_path = "consul-esm/";        // consul_kv_path
  std::string service = "consul-esm";         // consul_service
  std::string service_tag;                    // consul_service_tag
  // external_node_meta as ANDed node-meta filters; empty: every node in the catalog.
  std::vector<std::pair<std::string, std::string>> node_meta{{"external-node", "true"}};
  std::string partition;                      // empty: the client's
  std::chrono::milliseconds wait{45'000};     // blocking_query_wait
  // A burst of changes (a deployment registering many nodes) is handled as one.
  std::chrono::milliseconds debounce{150};
  // Retry of failed reads and writes: capped exponential backoff with jitter.
  std::chrono::milliseconds retry_base{250};
  std::chrono::milliseconds retry_cap{10'000};  // retry_interval
};

// For tests, metrics and the admin endpoint (one thread: plain fields, read between awaits).
struct leader_stats {
  std::uint64_t computations = 0;   // assignments computed
  std::uint64_t rebalances = 0;     // computations that wrote something
  std::uint64_t transactions = 0;   // committed transactions
  std::uint64_t ops = 0;            // set/delete operations committed (fence ops not counted)
  std::uint64_t nodes_moved = 0;    // nodes that changed owner (count_moved), summed
  std::uint64_t failures = 0;       // failed reads of the stored tree and failed writes
  std::size_t nodes = 0;            // external nodes in the last computation
  std::size_t instances = 0;        // healthy instances in the last computation
  bool fenced_out = false;          // a write failed its check-session op: leadership lost
  std::uint64_t lease_refusals = 0;  // writes not sent: the term's fencing deadline had passed
};

// Runs until cancelled (terminal; the election emits it on loss and on shutdown) or until a
// write fails its fencing op (then it returns with stats.fenced_out set: the lock is gone, and
// the election will notice it too). `fence` must be the election's check-session op; it is
// the first op of every transaction. Never throws on Consul errors: they are logged and
// retried with backoff. `stats` must outlive the call.
// `lease` is checked before every transaction: once it is no longer valid the leader writes
// nothing more and returns (as when fenced out by Consul), which ends the term.
boost::asio::awaitable<void> run_assignment_leader(consul::client& c, leader_settings s,
                                                   consul::txn_op fence, util::lease lease,
                                                   leader_stats& stats);

}  // namespace esm::sharding
