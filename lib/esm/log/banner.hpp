// The startup banner consul-esm prints on stdout before the log stream (not in JSON mode):
//
//   esmd v0.1.0 running!
//               Datacenter: (default)
//                Partition: ""
//                  Service: "consul-esm"
//              Service Tag: ""
//               Service ID: "consul-esm:5e3b..."
//   Node Reconnect Timeout: "72h0m0s"
//      Disable coordinates: false
//           Statsd address:
//           Metrics prefix:
//
//   Log data will now stream in as it occurs:
//
// (labels right-aligned to 22 columns; shown indented here). Two deliberate differences from
// consul-esm: the first line names esmd and its version instead of "Consul ESM running!"
// (scripts waiting for the banner should match "running!"), and the "Metrix prefix" typo is
// fixed to "Metrics prefix".
#pragma once

#include <chrono>
#include <iosfwd>
#include <string>

namespace esm::log {

struct banner_info {
  std::string version;  // "0.1.0" or "v0.1.0"; printed with a leading 'v'
  std::string datacenter;
  std::string partition;
  std::string service;
  std::string service_tag;
  std::string service_id;
  std::chrono::nanoseconds node_reconnect_timeout{std::chrono::hours(72)};
  bool disable_coordinates = false;
  std::string statsd_address;
  std::string metrics_prefix;
};

void print_banner(std::ostream& out, const banner_info& info);

}  // namespace esm::log
