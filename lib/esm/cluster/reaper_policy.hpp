// Decisions of the agentless reaper, without I/O: which instances of the service are agentless
// and alive, which dead ones to mark critical, which to remove, and what to remember between
// rounds. The leader's driver (reap_dead_instances) reads Consul, steps the policy with the
// time, carries out its plan, and reports back which writes committed; the policy never
// assumes a write went through, so a failed one is planned again next round.
//
// "Dead" means the instance's health session is gone. Consul before 1.21 has no session-type
// checks, so nobody else turns such an instance critical. The time an instance has been dead is
// counted from the first round this leader saw it dead: a new leader (a new policy) starts
// counting again, which can only delay a removal, never hasten it.
#pragma once

#include <chrono>
#include <cstddef>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "esm/consul/types.hpp"

namespace esm::cluster {

using clock = std::chrono::steady_clock;  // as in lock_policy.hpp
using std::chrono::nanoseconds;

// One agentless instance of the service as a round saw it.
struct reaper_instance {
  std::string service_id;  // S:I
  std::string node;        // S:I:node
  bool session_alive = false;
};

// Whether `s` is the health session of the agentless instance `service_id` (by name and node,
// as consul-esm names it).
bool is_health_session_of(const consul::session& s, const std::string& service_id);

// Whether a catalog row of the ESM service is an agentless instance: registered on its own
// synthetic node `S:I:node` (an agent-mode instance lives on its agent's node).
inline bool is_agentless_row(const consul::catalog_service& r) { return r.node == r.service_id + ":node"; }

// The agentless instances among the service's catalog rows (agent-mode ones live on a real
// node and are the agent's to reap), in catalog order, each with whether its session lives.
std::vector<reaper_instance> agentless_instances(const std::vector<consul::catalog_service>& rows,
                                                 const std::vector<consul::session>& sessions);

// One round's decisions, each list in the order the instances were seen.
struct reaper_plan {
  std::vector<reaper_instance> deregister;     // dead for deregister_after: remove the node
  std::vector<reaper_instance> mark_critical;  // dead and not marked yet: set the check critical
  std::vector<std::string> forgotten;          // service IDs recovered or vanished: memory dropped
};

class reaper_policy {
 public:
  explicit reaper_policy(nanoseconds deregister_after) : deregister_after_(deregister_after) {}

  // One round: `seen` are the agentless instances read at about `now`.
  reaper_plan step(const std::vector<reaper_instance>& seen, clock::time_point now);

  // Feedback from the driver: the write planned for `service_id` committed.
  void marked(const std::string& service_id);
  void deregistered(const std::string& service_id);

  // What the policy remembers, for tests and logs.
  std::optional<clock::time_point> dead_since(const std::string& service_id) const;
  bool is_marked(const std::string& service_id) const;
  std::size_t remembered() const { return dead_.size(); }

 private:
  struct memory {
    clock::time_point dead_since;
    bool marked = false;
  };
  nanoseconds deregister_after_;
  std::map<std::string, memory> dead_;  // only dead instances: a live one costs nothing
};

}  // namespace esm::cluster
