// What a ping's outcome means for Consul (reference §7.3, §7.4), without I/O: whether the
// node's externalNodeHealth check is written, what happens to its probes key (the persisted
// moment it became unreachable) and whether the node is reaped. The prober carries these out;
// clocks are parameters, so unit tests step them.
//
// Differences from consul-esm, on purpose:
//   * the reconnect timeout is evaluated at every failed ping against the persisted
//     critical-since, not only when the hourly debounce lets a write through (W22): a node is
//     reaped within one probe interval of `node_reconnect_timeout`, and a restart, a
//     reassignment or a leader change does not reset the count;
//   * a probes key that does not decode is replaced by a fresh one (the count starts again,
//     with a warning), instead of failing every later ping of that node;
//   * the key is removed on recovery even when the debounce skips the check write;
//   * a key older than the newest reply this process saw is not this outage's start (a lost
//     removal, a late write of the previous owner): it is replaced, never counted from.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string_view>

#include "esm/ping/go_time.hpp"

namespace esm::ping {

inline constexpr std::string_view node_check_id = "externalNodeHealth";
inline constexpr std::string_view node_check_name = "External Node Status";
inline constexpr std::string_view node_alive_output = "Node alive or reachable";
inline constexpr std::string_view node_dead_output = "Node not live or unreachable";

enum class node_status : std::uint8_t { unknown, alive, dead };

// The prober's knowledge of the node's probes key.
struct probe_key {
  bool exists = false;
  std::uint64_t modify_index = 0;
  std::optional<sys_nanoseconds> since;  // decoded value; nullopt when it does not decode
};

// What this process last wrote for the node's check (unknown: nothing since it took the node).
struct health_record {
  node_status written = node_status::unknown;
  std::chrono::steady_clock::time_point written_at{};
  // The newest reply this process saw (wall clock). A key older than it is left from an outage
  // that ended (its removal was lost, or another instance wrote it late): not this outage's.
  std::optional<sys_nanoseconds> alive_at;
};

enum class key_action : std::uint8_t {
  none,
  create,   // set the key to `since`, only if absent (cas 0): an existing one is another's count
  replace,  // overwrite an undecodable key (cas at its index)
  remove,   // delete-cas at its index
};

struct health_decision {
  bool write_check = false;
  node_status status = node_status::unknown;  // the status to write when write_check
  key_action key = key_action::none;
  sys_nanoseconds since{};  // for create and replace
  bool reap = false;        // delete the node (delete-cas at its ModifyIndex) and its key
  bool key_undecodable = false;  // for the warning
};

struct health_timing {
  std::chrono::milliseconds refresh{3'600'000};            // node_health_refresh_interval
  std::chrono::milliseconds reconnect_timeout{259'200'000};  // node_reconnect_timeout
};

health_decision decide_health(bool alive, const health_record& record, const probe_key& key,
                              const health_timing& timing, sys_nanoseconds wall_now,
                              std::chrono::steady_clock::time_point now);

}  // namespace esm::ping
