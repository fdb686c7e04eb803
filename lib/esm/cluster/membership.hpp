// This instance's registration and liveness in Consul, in both modes, with consul-esm's names
// (reference §1, §3.2, §3.3).
//
// Agent mode: service `S:I` on the local agent (Meta external-source=consul-esm, Tags [tag] if
// set) and its TTL check `S:I:agent-ttl`. The check's TTL is session_ttl (consul-esm: a fixed
// 30 s, which is session_ttl's default), so tests and operators shorten both together; it is
// refreshed every TTL/2, re-registered when an update fails, and the agent's services are read
// every TTL to re-register a lost registration. DeregisterCriticalServiceAfter is
// instance_deregister_after. A live registration of the same `S:I` on the agent (its TTL check
// not critical) refuses startup (duplicate instance_id) once it has stayed so for
// duplicate_wait; one whose TTL check is critical (a crashed instance) is taken over.
//
// Agentless mode: node `S:I:node` (address `esm-S:I`) with service `S:I` and the node-level
// check `S:I:session-check` registered in the catalog. Consul before 1.21 has no session-type
// checks, so esmd drives the check itself: the instance holds a TTL session named
// `S:I:health-session` on its node and sets the check passing while that session lives; the
// leader (`reap_dead_instances`) marks instances whose health session is gone critical and
// removes their node after instance_deregister_after. An existing `S:I` whose health session
// lives on for duplicate_wait refuses startup; one whose session is gone (a crashed instance)
// is taken over, so a crashed instance with a fixed instance_id restarts at its first start.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <system_error>

#include <boost/asio/awaitable.hpp>
#include <boost/system/error_code.hpp>

#include "esm/cluster/lock_policy.hpp"
#include "esm/cluster/names.hpp"
#include "esm/consul/client.hpp"
#include "esm/util/lease.hpp"

namespace esm::cluster {

enum class cluster_errc {
  duplicate_instance = 1,  // another live instance has this service ID (exit 11)
  registration_failed,     // Consul refused the registration (ACL, bad request)
};
const boost::system::error_category& cluster_category() noexcept;
inline boost::system::error_code make_error_code(cluster_errc e) noexcept {
  return {static_cast<int>(e), cluster_category()};
}

// How run_instance / register_instance ended: an empty code is a normal stop.
// (Constructors, not an aggregate: g++ 12 mishandles aggregate temporaries in coroutines.)
struct run_outcome {
  run_outcome() {}
  run_outcome(boost::system::error_code c, std::string m) : code(c), message(std::move(m)) {}
  boost::system::error_code code;
  std::string message;  // for the user, e.g. the duplicate text of consul-esm
};

struct membership_options {
  explicit membership_options(instance_names n) : names(std::move(n)) {}
  instance_names names;
  std::string tag;
  bool agentless = false;
  std::string datacenter;
  std::string partition;
  nanoseconds deregister_after = std::chrono::minutes(30);  // instance_deregister_after
  lock_timing timing;  // session_ttl is also the agent check's TTL
  // How long registration waits for a registration of the same `S:I` that still looks alive
  // (health session live; agent mode: TTL check not critical) to prove dead, before it is
  // refused as a duplicate. A process restarted after a crash (SIGKILL, OOM) finds its own
  // previous incarnation so, until Consul expires that session (up to 2 x session_ttl after
  // its last renewal) or the agent turns the check critical (a TTL after its last update).
  // Zero refuses at once, as consul-esm does. The daemon waits duplicate_wait_for(options).
  nanoseconds duplicate_wait{0};
};

// The wait the daemon uses: long enough for a crashed instance's liveness to lapse, so a
// supervisor's restart (systemd, a pod's container restart) succeeds at its first start
// instead of exiting 11 until then: agentless 2 x session_ttl + 5 s, agent mode session_ttl
// + 5 s. A true duplicate (another live process with this ID) is refused after it.
nanoseconds duplicate_wait_for(const membership_options& o);

struct membership_status {
  bool registered = false;
  bool registration_sent = false;  // a register request went out (it may have been applied)
  std::uint64_t reregistrations = 0;
  std::uint64_t check_update_failures = 0;
  std::string health_session;  // agentless
};

// consul-esm's duplicate text.
std::string duplicate_message(const std::string& service_id);

// Registers this instance, after refusing a live duplicate (one still alive after
// duplicate_wait; read again every second, or every retry_interval if shorter, meanwhile).
// Retries transient errors every retry_interval (logged) until it succeeds or the caller's
// terminal cancellation (then an empty outcome). A duplicate or a Consul refusal is returned.
boost::asio::awaitable<run_outcome> register_instance(consul::client& c, membership_options o,
                                                      membership_status& st);

// Keeps the registration alive and passing until terminal cancellation. Agentless: also owns
// the health session (not destroyed on the way out: deregistering the node invalidates it, and
// if that fails it expires by its TTL, so the leader reaps the instance).
boost::asio::awaitable<void> keep_registered(consul::client& c, membership_options o, membership_status& st);

// Removes the registration (agent: the service and its check; agentless: the node with its
// service and check), bounded by cleanup_timeout. Errors are logged.
boost::asio::awaitable<void> deregister_instance(consul::client& c, membership_options o);

// Leader work in either mode: every reap_interval, agentless instances of the service whose
// health session is gone are marked critical, and removed once they have been dead for
// deregister_after. The decisions are reaper_policy's; this reads Consul, steps it and writes.
// Writes are fenced with `check_session`. Returns at the first wait (a sleep or a request) that
// sees a cancellation, without sending another write.
boost::asio::awaitable<void> reap_dead_instances(consul::client& c, membership_options o,
                                                 consul::txn_op check_session, util::lease lease,
                                                 nanoseconds reap_interval);

}  // namespace esm::cluster

namespace boost::system {
template <>
struct is_error_code_enum<esm::cluster::cluster_errc> : std::true_type {};
}  // namespace boost::system
