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
#include <cstdint>
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

// What the check engine keeps of a plan for each check: all of check_plan but the probe's
// strings (URL, headers, body, address), which stay in the catalog object the engine holds
// for the check anyway; spec_of() builds the probe_spec from that object for each run. With
// the strings copied into a plan of its own, a lean HTTP check cost about 290 B more (the plan
// object, its control block, the URL copy) and one with three headers about 700 B more.
struct run_plan {
  std::chrono::milliseconds interval{0};  // after the default and the floor
  std::chrono::milliseconds timeout{0};   // the definition's, else 10 s
  thresholds limits{};
  std::uint8_t kind = 0;  // the probe_spec alternative: 0 http, 1 tcp, 2 udp, 3 grpc, 4 h2ping
  bool interval_raised = false;  // the definition asked for less than min_interval
  bool operator==(const run_plan&) const = default;
};

// A plan, or the reason the check is not run (unsupported kind, or a definition that cannot
// be run, e.g. an HTTP URL that is not http(s)). Never throws.
std::variant<check_plan, std::string> plan_check(const consul::health_check& c,
                                                 const plan_settings& s);
// The same without the probe_spec.
std::variant<run_plan, std::string> plan_run(const consul::health_check& c, const plan_settings& s);
// The probe_spec of `p` (the plan of a check with this definition): a copy of the strings it
// needs, owning them. plan_check's spec is spec_of(c.definition, its run_plan).
probe::probe_spec spec_of(const consul::check_definition& d, const run_plan& p);

}  // namespace esm::checks
