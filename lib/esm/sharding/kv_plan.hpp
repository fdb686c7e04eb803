// Where the assignment lives in KV and which writes bring KV from what it holds to a new
// assignment. consul-esm deletes the whole `K/agents/` tree and rewrites every key on every
// trigger (W20), waking every follower; the leader here writes only what changed.
#pragma once

#include <cstddef>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "esm/sharding/assignment.hpp"

namespace esm::sharding {

// ---- keys ------------------------------------------------------------------------------
// `kv_path` is the configured consul_kv_path; like consul-esm, a missing trailing '/' is
// added (empty becomes "/").

std::string normalize_kv_path(std::string_view kv_path);
// K + "agents/": the directory of all assignment keys.
std::string assignments_dir(std::string_view kv_path);
// K + "agents/" + S:I.
std::string assignment_key(std::string_view kv_path, std::string_view service_id);
// K + "probes/" + node: the probe critical-since time.
std::string probe_key(std::string_view kv_path, std::string_view node);
// The service ID of an assignment key, or nullopt if `key` is not K + "agents/" + a
// non-empty ID.
std::optional<std::string> service_id_of_key(std::string_view kv_path, std::string_view key);

// ---- writes ----------------------------------------------------------------------------

// One KV operation of a Consul transaction, with Consul's verb names.
struct kv_write {
  std::string verb;   // "set" or "delete"
  std::string key;
  std::string value;  // encode_assignment(...) for "set"; empty for "delete"

  friend bool operator==(const kv_write&, const kv_write&) = default;
};

using kv_txn = std::vector<kv_write>;

// Consul accepts 64 operations per transaction; the leader prepends a check-session on its
// lock key to each transaction, so the plan leaves room for it.
inline constexpr std::size_t max_assignment_ops_per_txn = 63;

// Consul also refuses a /v1/txn request body above limits.txn_max_req_len (524 288 bytes by
// default; 413 "Request body too large"), and values travel base64-encoded in it: at 100 000
// nodes over 5 instances the five values are 1.2 MB, a 1.6 MB body in one transaction. The plan
// keeps each transaction's estimated body (txn_op_bytes summed) within this budget, which
// leaves room for the fence and the JSON around it.
inline constexpr std::size_t max_assignment_txn_bytes = 480 * 1024;

// The estimated size of `w` in a /v1/txn body (an upper bound for keys and partitions of
// reasonable length): its value base64-encoded, its key, and 128 bytes of JSON around them.
std::size_t txn_op_bytes(const kv_write& w);

// The transactions that turn `stored` into `next`:
// * `set` of assignment_key(S:I) for every instance of `next` whose stored value is missing,
//   malformed, or has different content (same_assignment: order and duplicates within a
//   list do not count); the value is encode_assignment of next's entry;
// * `delete` of every stored key under assignments_dir that is not the key of an instance
//   of `next` (departed instances, stray keys); keys outside that directory are ignored;
// * nothing for an instance whose stored value has the same content.
// Sets come first, then deletes, each in key order, cut into transactions of at most
// `max_ops` operations (>= 1) and at most `max_bytes` estimated bytes (txn_op_bytes), except
// that an operation larger than `max_bytes` by itself is a transaction of its own (Consul
// refuses it when it passes its limits: a body above txn_max_req_len, or a value above
// kv_max_value_size; with the defaults, a value above about 390 KB, some 30 000 nodes with
// 9-character names in one instance's share). No operations: no transactions.
//
// The transactions are not one atomic change: between two of them a follower may see a node
// in two shares or in none, for the time of one write.
//
// `stored` maps full KV keys to raw values, as a recursive read of assignments_dir returns.
std::vector<kv_txn> plan_assignment_writes(std::string_view kv_path,
                                           const std::map<std::string, std::string>& stored,
                                           const assignment_map& next,
                                           std::size_t max_ops = max_assignment_ops_per_txn,
                                           std::size_t max_bytes = max_assignment_txn_bytes);

// The same from an already decoded previous assignment (keyed by service ID).
std::vector<kv_txn> plan_assignment_writes_from(std::string_view kv_path,
                                                const assignment_map& previous,
                                                const assignment_map& next,
                                                std::size_t max_ops = max_assignment_ops_per_txn,
                                                std::size_t max_bytes = max_assignment_txn_bytes);

// Decodes what a recursive read of assignments_dir returned into the previous assignment
// that balanced_assignment takes. Keys that are not assignment keys and values that do not
// decode are left out (their instances then count as holding nothing; a malformed value is
// rewritten by the next plan).
assignment_map decode_stored_assignments(std::string_view kv_path,
                                         const std::map<std::string, std::string>& stored);

}  // namespace esm::sharding
