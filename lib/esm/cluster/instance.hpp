// One esmd instance in the cluster: registration (refusing a live duplicate), liveness, and the
// leader election with its leader work, until the caller's terminal cancellation; then a
// graceful stop within about 3 s even when Consul is unreachable: cancel the leader work,
// release the leader key before destroying the session, deregister.
#pragma once

#include <functional>

#include <boost/asio/awaitable.hpp>

#include "esm/cluster/election.hpp"
#include "esm/cluster/membership.hpp"

namespace esm::cluster {

struct instance_hooks {
  instance_hooks() {}
  // Run while leading (see leader_work_fn). Empty: idle_leader_work. reap_dead_instances
  // runs next to it in either mode (a fleet may mix agent-mode and agentless instances).
  leader_work_fn leader_work;
  // Called once the instance is registered (before the election starts); the daemon tells
  // the service manager it is ready. Not called when registration fails or is stopped.
  std::function<void()> on_registered;
};

// What the admin endpoint and metrics read.
struct instance_status {
  membership_status membership;
  election_status election;
};

// Logs that this instance leads and waits for cancellation (the assignment comes later).
boost::asio::awaitable<void> idle_leader_work(std::string session_id, consul::txn_op check_session,
                                              util::lease lease);

// Returns an empty outcome after a normal stop; a duplicate instance_id gives
// cluster_errc::duplicate_instance with consul-esm's message (esmd exits 11), a refused
// registration cluster_errc::registration_failed. When it returns because of the caller's
// cancellation, the caller's thread is still cancelled: co_return right after it. An
// exception of the election or of its leader work (a bug) is rethrown after the clean stop
// (key released, session destroyed, deregistered).
boost::asio::awaitable<run_outcome> run_instance(consul::client& c, membership_options mo, election_options eo,
                                                 instance_hooks hooks, instance_status& status);

}  // namespace esm::cluster
