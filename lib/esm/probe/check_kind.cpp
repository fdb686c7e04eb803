#include "esm/probe/check_kind.hpp"

namespace esm::probe {

std::string_view to_string(check_kind k) noexcept {
  switch (k) {
    case check_kind::http: return "http";
    case check_kind::tcp: return "tcp";
    case check_kind::udp: return "udp";
    case check_kind::grpc: return "grpc";
    case check_kind::h2ping: return "h2ping";
    case check_kind::script: return "script";
    case check_kind::docker: return "docker";
    case check_kind::os_service: return "os_service";
    case check_kind::alias: return "alias";
    case check_kind::ttl: return "ttl";
    case check_kind::none: return "none";
  }
  return "none";
}

check_kind classify(const definition_kind_fields& d) noexcept {
  if (d.ttl > std::chrono::nanoseconds::zero()) return check_kind::ttl;
  if (!d.http.empty()) return check_kind::http;
  if (!d.tcp.empty()) return check_kind::tcp;
  if (!d.udp.empty()) return check_kind::udp;
  if (!d.grpc.empty()) return check_kind::grpc;
  if (!d.docker_container_id.empty()) return check_kind::docker;
  if (!d.os_service.empty()) return check_kind::os_service;
  if (!d.script_args.empty() || !d.script.empty()) return check_kind::script;
  if (!d.h2ping.empty()) return check_kind::h2ping;
  if (!d.alias_node.empty() || !d.alias_service.empty()) return check_kind::alias;
  return check_kind::none;
}

std::optional<std::string> unsupported_reason(check_kind k) {
  switch (k) {
    case check_kind::http:
    case check_kind::tcp:
    case check_kind::udp:
    case check_kind::grpc:
    case check_kind::h2ping:
      return std::nullopt;
    case check_kind::none:
      return std::string(
          "check has no HTTP, TCP, UDP, GRPC or H2PING definition; it is not run");
    case check_kind::ttl:
      return std::string(
          "check type \"ttl\" is not supported by esmd (only the service can update a TTL "
          "check); it is not run");
    default:
      return "check type \"" + std::string(to_string(k)) +
             "\" is not supported by esmd; it is not run";
  }
}

}  // namespace esm::probe
