// How to reach Consul: the resolved form of consul-esm's http_addr / token / TLS keys and the
// CONSUL_* environment variables. Plain data, no I/O; the configuration area fills it in.
#pragma once

#include <chrono>
#include <string>

namespace esm::consul {

struct tls_options {
  std::string ca_file;      // ca_file / CONSUL_CACERT
  std::string ca_path;      // ca_path / CONSUL_CAPATH (directory of PEM certificates)
  std::string cert_file;    // cert_file / CONSUL_CLIENT_CERT
  std::string key_file;     // key_file / CONSUL_CLIENT_KEY
  std::string server_name;  // tls_server_name / CONSUL_TLS_SERVER_NAME (port stripped)
  bool verify = true;       // false only with CONSUL_HTTP_SSL_VERIFY=false
};

struct connection_options {
  // "http", "https" or "unix".
  std::string scheme = "http";
  // host:port for http(s) ("127.0.0.1:8500"), the socket path for unix.
  std::string address = "127.0.0.1:8500";
  // Path prefix in front of /v1 (from https://host/prefix), without a trailing '/'.
  std::string path_prefix;
  tls_options tls;

  std::string token;       // X-Consul-Token on every request; never logged
  std::string http_auth;   // CONSUL_HTTP_AUTH "user[:pass]"; never logged
  std::string datacenter;  // dc= on every request when set
  std::string partition;   // partition= on every request when set
  std::string name_space;  // ns= on every request that sets none (CONSUL_NAMESPACE)

  // Per-request timeout for ordinary requests; blocking queries get wait + margin.
  std::chrono::milliseconds request_timeout{10'000};
  // Idle keep-alive connections kept per endpoint.
  std::size_t max_idle_connections = 8;
  // Connections open at once per endpoint (in use + idle); requests beyond wait their turn.
  std::size_t max_connections = 64;
};

}  // namespace esm::consul
