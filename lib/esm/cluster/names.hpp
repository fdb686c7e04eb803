// consul-esm's identifiers for one instance (reference §1): esmd and consul-esm instances must
// find each other's registrations, sessions and locks, so these strings are an interop contract.
#pragma once

#include <string>

namespace esm::cluster {

struct instance_names {
  std::string service;     // S: consul_service
  std::string service_id;  // S:I
  std::string kv_path;     // K: consul_kv_path, ends in '/'

  instance_names(std::string service_name, const std::string& instance_id, std::string kv)
      : service(std::move(service_name)), service_id(service + ":" + instance_id), kv_path(std::move(kv)) {
    if (kv_path.empty() || kv_path.back() != '/') kv_path += '/';
  }

  std::string leader_key() const { return kv_path + "leader"; }
  std::string agent_ttl_check_id() const { return service_id + ":agent-ttl"; }
  std::string node_name() const { return service_id + ":node"; }          // agentless
  std::string node_address() const { return "esm-" + service_id; }        // agentless
  std::string session_check_id() const { return service_id + ":session-check"; }
  std::string health_session_name() const { return service_id + ":health-session"; }
  std::string assignment_key() const { return kv_path + "agents/" + service_id; }
};

inline constexpr const char* alive_check_name = "Consul External Service Monitor Alive";
inline constexpr const char* agent_ttl_check_notes =
    "This check is updated by the Consul ESM process while it is running.";
inline constexpr const char* leader_session_name = "consul-esm leader lock";

}  // namespace esm::cluster
