// The daemon's status registry: one place where every part's figures live, owned by the
// daemon and outliving every coroutine, for the admin endpoint and the metrics to read (one
// thread: plain fields, read between awaits).
#pragma once

#include <chrono>
#include <optional>
#include <string>

#include "esm/checks/engine.hpp"
#include "esm/cluster/instance.hpp"
#include "esm/consul/client.hpp"
#include "esm/ping/prober.hpp"
#include "esm/sharding/leader.hpp"
#include "esm/sharding/worker.hpp"

namespace esm::daemon {

enum class phase {
  starting,    // checking TLS material, waiting for Consul and its leader
  running,     // the children run
  stopping,    // a stop was asked for: clean exits within the grace period
  stopped,
};
inline std::string_view to_string(phase p) {
  switch (p) {
    case phase::starting: return "starting";
    case phase::running: return "running";
    case phase::stopping: return "stopping";
    case phase::stopped: return "stopped";
  }
  return "unknown";
}

struct daemon_status {
  phase state = phase::starting;
  std::chrono::system_clock::time_point started_at = std::chrono::system_clock::now();
  std::string instance_id;  // consul_service:instance_id
  bool agentless = false;
  std::string consul_leader;   // as Consul named it at startup
  std::string last_error;      // why the daemon stopped by itself, if it did
  cluster::instance_status instance;   // registration and election
  sharding::leader_stats leader;       // the assignment, while leading
  sharding::worker_stats worker;       // this instance's share
  const checks::engine_stats* engine = nullptr;  // set while the check engine exists
  const ping::prober_stats* prober = nullptr;    // set while the node prober exists
  // The parts themselves, for per-check and per-node views (null while they do not exist).
  const checks::check_engine* checks = nullptr;
  const ping::node_prober* nodes = nullptr;
  const consul::client_stats* consul = nullptr;  // set while the Consul client exists
  std::string version;                           // esmd's
  std::string consul_version;                    // the local agent's, as verified at startup
  std::chrono::steady_clock::time_point heartbeat = std::chrono::steady_clock::now();  // loop alive
};

}  // namespace esm::daemon
