// Startup checks against Consul, as consul-esm makes them: wait until the cluster has a leader,
// then require every Consul version (the local agent's and each server's) to be >= 1.4.1.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include <boost/asio/awaitable.hpp>

namespace esm::consul {

class client;

// Decisions, no I/O. "1.8.7", "1.10.0-beta1" (prerelease cut at the first '-'),
// "1.9.3+ent" (build metadata allowed). nullopt for text that is not a version.
struct version {
  int major = 0, minor = 0, patch = 0;
  auto operator<=>(const version&) const = default;
};
std::optional<version> parse_version(std::string_view text);

inline constexpr version minimum_consul_version{1, 4, 1};

// nullopt when every version is supported; otherwise a message naming esmd's version, the
// constraint and every offending or unparsable version.
std::optional<std::string> check_consul_versions(const std::vector<std::string>& versions,
                                                 std::string_view esmd_version);

// Polls /v1/status/leader every `retry` until it names a leader (HTTP 500 and "" mean "not
// yet"), logging each wait. Returns the leader's address. Honours terminal cancellation
// (returns nullopt).
boost::asio::awaitable<std::optional<std::string>> wait_for_leader(client& c,
                                                                   std::chrono::milliseconds retry);

// consul-esm's VerifyConsulCompatibility: the agent's version from /v1/agent/self and the
// servers' from the `version` meta of /v1/catalog/service/consul (429 answers are retried every
// `retry`). Returns an error message, or nullopt when compatible or cancelled (terminal): the
// caller tells the two apart by its own cancellation state. `agent_version` (optional, must
// outlive the call) receives the agent's version as read, for the status endpoint.
boost::asio::awaitable<std::optional<std::string>> verify_consul_compatibility(
    client& c, std::string esmd_version, std::chrono::milliseconds retry,
    std::string* agent_version = nullptr);

}  // namespace esm::consul
