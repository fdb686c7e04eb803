// From a catalog health check to what the engine runs: the probe, its interval and timeout,
// and its thresholds (reference §6.2, §6.4, §6.5).
//
// Unlike consul-esm, every field of the Definition that Consul's own checks honour is used:
// Body, DisableRedirects, TCPUseTLS, UDP, H2PING and H2PingUseTLS, and the per-check
// SuccessBeforePassing / FailuresBeforeWarning / FailuresBeforeCritical when the Definition
// carries them (Consul 1.8 does not store them in the catalog; then the global
// passing_threshold / critical_threshold apply). The check's Type field is ignored, dispatch is
// by Consul's precedence over the definition fields (probe/check_kind.hpp).
#pragma once

#include <chrono>
#include <string>
#include <variant>

#include "esm/checks/thresholds.hpp"
#include "esm/consul/types.hpp"
#include "esm/probe/spec.hpp"

namespace esm::checks {

struct plan_settings {
  plan_settings() {}
  std::chrono::milliseconds min_interval{1000};       // min_check_interval
  std::chrono::milliseconds default_interval{30000};  // Consul's default for Interval 0
  int passing_threshold = 0;
  int critical_threshold = 0;
  bool legacy_thresholds = false;  // threshold_mode = "legacy": per-check values ignored
};

struct check_plan {
  probe::probe_spec spec;
  std::chrono::milliseconds interval{0};  // after the default and the floor
  std::chrono::milliseconds timeout{0};   // the definition's, else 10 s
  thresholds limits{};
  bool interval_raised = false;  // the definition asked for less than min_interval
  // Two plans that compare equal keep a running check and its counters.
  bool operator==(const check_plan&) const = default;
};

// A plan, or the reason the check is not run (unsupported kind, or a definition that cannot
// be run, e.g. an HTTP URL that is not http(s)). Never throws.
std::variant<check_plan, std::string> plan_check(const consul::health_check& c,
                                                 const plan_settings& s);

}  // namespace esm::checks
