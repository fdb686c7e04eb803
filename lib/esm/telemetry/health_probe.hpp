// `esmd -healthcheck`: a one-shot GET of the running daemon's /healthz, for container health
// checks that have no shell or curl (the image is FROM scratch).
#pragma once

#include <chrono>
#include <ostream>
#include <string>
#include <string_view>

namespace esm::telemetry {

// Where to connect for an admin server listening on `client_address` ("host:port",
// "[v6]:port", ":port"): an unspecified host (empty, 0.0.0.0, [::]) is reached on loopback.
// Empty when the address cannot be parsed.
struct probe_target {
  std::string host;  // an address or a name, without brackets
  std::string port;
};
probe_target health_probe_target(std::string_view client_address);

// GET http://<target>/healthz within `timeout` (connect, request and response together):
// 0 when the answer is 200, 1 otherwise (also for an empty client_address: no admin server
// to ask). Says why on `err` when it is not 0; prints nothing on success.
int probe_health(std::string_view client_address, std::chrono::milliseconds timeout, std::ostream& err);

}  // namespace esm::telemetry
