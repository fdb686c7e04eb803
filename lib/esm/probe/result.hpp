// The outcome of one probe run: a Consul health status and the output text Consul's own
// checks (agent/checks) would write for the same run.
#pragma once

#include <string>
#include <string_view>

namespace esm::probe {

enum class check_status { passing, warning, critical };

// Consul's spelling: "passing", "warning", "critical".
constexpr std::string_view to_string(check_status s) noexcept {
  switch (s) {
    case check_status::passing: return "passing";
    case check_status::warning: return "warning";
    case check_status::critical: return "critical";
  }
  return "critical";
}

struct probe_result {
  check_status status = check_status::critical;
  std::string output;

  friend bool operator==(const probe_result&, const probe_result&) = default;
};

}  // namespace esm::probe
