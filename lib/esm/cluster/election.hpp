// Leader election on `<consul_kv_path>leader` with the Consul api lock protocol (KV acquire and
// release with the lock flags), so esmd and consul-esm instances elect one leader between
// them. See lock_policy.hpp for the decisions and the no-split-brain argument.
//
// One term = one session: create it, renew it every TTL/2 (retry every second on errors until
// the fencing deadline; 404 = gone), acquire the key (blocking reads while another session
// holds it, polling while a lock-delay blocks it), then hold it: a consistent blocking monitor
// (tolerates lock_monitor_retries transient failures lock_monitor_retry_time apart) and the
// leader work run until the lock is lost, the session is gone or cannot be confirmed before the
// fencing deadline, or shutdown. On loss: cancel the leader work at once, log `Lost
// leadership`, release the key, destroy the session and start a new term at once. A lock object
// is never reused, so there is no "Lock already held" loop.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <boost/asio/awaitable.hpp>

#include "esm/cluster/lock_policy.hpp"
#include "esm/cluster/names.hpp"
#include "esm/consul/client.hpp"
#include "esm/util/lease.hpp"

namespace esm::cluster {

// Readable by the admin endpoint and metrics (one thread: plain fields).
struct election_status {
  bool is_leader = false;
  std::uint64_t leadership_changes = 0;  // every gain and every loss
  std::uint64_t session_renew_failures = 0;
  std::uint64_t acquire_failures = 0;  // lock acquisitions that failed (refused, timed out)
  std::string session_id;  // the current term's session, empty between terms
  // Send time of the last request that confirmed the session (create or renew).
  std::optional<clock::time_point> last_confirmed;
  std::optional<std::chrono::system_clock::time_point> last_confirmed_wall;
  // When the leader work was last cancelled because leadership ended (loss or shutdown).
  std::optional<clock::time_point> last_step_down;
  std::string last_loss_reason;
};

// Runs while this instance leads. Must honour terminal cancellation promptly (it is emitted
// at once on loss and on shutdown). Every KV write it makes must start its transaction with
// `check_session` so a deposed leader's late write fails with 409, and must be preceded by a
// check of `lease` (util/lease.hpp): false once the term's fencing deadline has passed, which a
// process resumed after a pause sees before the election's own timer has run.
using leader_work_fn = std::function<boost::asio::awaitable<void>(
    std::string session_id, consul::txn_op check_session, util::lease lease)>;

struct election_options {
  election_options() {}
  std::string key = "consul-esm/leader";
  std::string session_name = leader_session_name;
  std::string session_node;  // empty: the local agent's node (agent mode)
  std::optional<std::vector<std::string>> session_checks;  // unset: Consul's default (serfHealth)
  std::vector<std::string> session_node_checks;
  lock_timing timing;
};

// Runs terms until the caller's terminal cancellation; then cancels the leader work, releases
// the key before destroying the session (a successor needs no lock-delay), each with
// timing.cleanup_timeout, and returns. Never throws on Consul errors (they are logged and
// retried). `status` must outlive the call.
boost::asio::awaitable<void> run_leader_election(consul::client& c, election_options opts,
                                                 leader_work_fn work, election_status& status);

}  // namespace esm::cluster
