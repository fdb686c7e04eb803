// What one probe run needs to know, as plain values. The check engine maps Consul's check
// Definition onto these; nothing here depends on the Consul client.
#pragma once

#include <chrono>
#include <map>
#include <string>
#include <variant>
#include <vector>

#include "esm/util/header_block.hpp"

namespace esm::probe {

// Consul's default when a definition has no timeout.
inline constexpr std::chrono::milliseconds default_timeout{10'000};

// Consul CheckHTTP: Definition.HTTP, Method, Header, Body, TLSServerName, TLSSkipVerify,
// DisableRedirects, Timeout.
struct http_spec {
  std::string url{};
  std::string method{};  // empty: GET
  util::header_block headers{};  // a copy of the Definition's: one allocation
  std::string body{};
  std::string tls_server_name{};
  bool tls_skip_verify = false;
  bool disable_redirects = false;
  std::chrono::milliseconds timeout{0};  // 0: default_timeout
  bool operator==(const http_spec&) const = default;
};

// Consul CheckTCP: Definition.TCP (host:port), TCPUseTLS (+ TLSServerName, TLSSkipVerify).
struct tcp_spec {
  std::string address{};
  bool use_tls = false;
  std::string tls_server_name{};
  bool tls_skip_verify = false;
  std::chrono::milliseconds timeout{0};
  bool operator==(const tcp_spec&) const = default;
};

// Consul CheckUDP: Definition.UDP (host:port). An empty datagram is sent, as Consul does.
struct udp_spec {
  std::string address{};
  std::chrono::milliseconds timeout{0};
  bool operator==(const udp_spec&) const = default;
};

// Consul CheckGRPC: Definition.GRPC (host:port[/service]), GRPCUseTLS.
struct grpc_spec {
  std::string target{};
  bool use_tls = false;
  std::string tls_server_name{};
  bool tls_skip_verify = false;
  std::chrono::milliseconds timeout{0};
  bool operator==(const grpc_spec&) const = default;
};

// Consul CheckH2PING: Definition.H2PING (host:port), H2PingUseTLS (Consul's default: true).
struct h2ping_spec {
  std::string address{};
  bool use_tls = true;
  std::string tls_server_name{};
  bool tls_skip_verify = false;
  std::chrono::milliseconds timeout{0};
  bool operator==(const h2ping_spec&) const = default;
};

using probe_spec = std::variant<http_spec, tcp_spec, udp_spec, grpc_spec, h2ping_spec>;

// The effective timeout of a definition: its own, or Consul's 10 s default.
constexpr std::chrono::milliseconds effective_timeout(std::chrono::milliseconds t) noexcept {
  return t > std::chrono::milliseconds::zero() ? t : default_timeout;
}

}  // namespace esm::probe
