// Which kind of Consul check a definition describes, and whether esmd runs it.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace esm::probe {

enum class check_kind { http, tcp, udp, grpc, h2ping, script, docker, os_service, alias, ttl, none };

// "http", "tcp", "udp", "grpc", "h2ping", "script", "docker", "os_service", "alias", "ttl",
// "none".
std::string_view to_string(check_kind k) noexcept;

// The fields of a Consul check definition that decide its kind.
struct definition_kind_fields {
  std::string http{};
  std::string tcp{};
  std::string udp{};
  std::string grpc{};
  std::string h2ping{};
  std::string os_service{};
  std::vector<std::string> script_args{};
  std::string script{};  // the old single-string form
  std::string docker_container_id{};
  std::string alias_node{};
  std::string alias_service{};
  std::chrono::nanoseconds ttl{0};
};

// Consul's precedence (agent.go addCheck): TTL, HTTP, TCP, UDP, gRPC, Docker, OSService,
// script, H2PING, alias.
check_kind classify(const definition_kind_fields& d) noexcept;

// Empty for the kinds esmd runs; otherwise the reason to log once per check, e.g.
// `check type "script" is not supported by esmd; it is not run`.
std::optional<std::string> unsupported_reason(check_kind k);

}  // namespace esm::probe
