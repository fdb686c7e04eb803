// Thresholds: when a probe result changes the status esmd reports (reference §6.5, §6.6, W8).
//
// `status_gate` is Consul's agent StatusHandler (agent/checks/check.go), counted ONCE:
// consecutive passing/warning results are counted until SuccessBeforePassing is reached,
// consecutive critical results until FailuresBeforeWarning (then "warning" is reported) and
// FailuresBeforeCritical (then "critical"). Any opposite result resets the other counter.
// Both counters start at their thresholds, so the first result after a (re)start is reported
// at once, as Consul does.
//
// `legacy_gate` reproduces consul-esm for operators who tuned its numbers: the same Consul
// gate in front (with the global thresholds), and behind it consul-esm's second counter,
// which counts forwarded results that differ from the stored status and is decremented by
// results equal to it. From a steady state this needs about 2 x threshold consecutive
// failures to flip the status (6 with critical_threshold = 3), threshold + 1 right after a
// restart.
#pragma once

#include <optional>

#include "esm/probe/result.hpp"

namespace esm::checks {

using probe::check_status;

// Consul's per-check fields; 0 means "report at once".
struct thresholds {
  int success_before_passing = 0;
  int failures_before_warning = 0;
  int failures_before_critical = 0;
  bool operator==(const thresholds&) const = default;
};

// consul-esm's global keys mapped onto Consul's fields: passing_threshold is
// SuccessBeforePassing; critical_threshold is both FailuresBeforeWarning and
// FailuresBeforeCritical (consul-esm builds its StatusHandler this way, so a failing check goes
// straight to critical). Per-check values (> 0) replace the defaults field by field; an unset
// FailuresBeforeWarning follows FailuresBeforeCritical, as in Consul.
thresholds effective_thresholds(int passing_threshold, int critical_threshold,
                                std::optional<int> success_before_passing,
                                std::optional<int> failures_before_warning,
                                std::optional<int> failures_before_critical);

class status_gate {
 public:
  status_gate() noexcept { reset(thresholds{}); }
  explicit status_gate(thresholds t) noexcept { reset(t); }
  void reset(thresholds t) noexcept {
    t_ = t;
    successes_ = t.success_before_passing;
    failures_ = t.failures_before_critical;
  }
  // The status to report for this result, or nullopt while a threshold is not reached.
  std::optional<check_status> feed(check_status s) noexcept {
    if (s != check_status::critical) {
      bump(successes_);
      failures_ = 0;
      if (successes_ >= t_.success_before_passing) return s;
      return std::nullopt;
    }
    bump(failures_);
    successes_ = 0;
    if (failures_ >= t_.failures_before_critical) return check_status::critical;
    if (failures_ >= t_.failures_before_warning) return check_status::warning;
    return std::nullopt;
  }
  int successes() const noexcept { return successes_; }
  int failures() const noexcept { return failures_; }

 private:
  static void bump(int& c) noexcept {
    if (c < (1 << 30)) ++c;  // no overflow on a check that fails for years
  }
  thresholds t_{};
  int successes_ = 0;
  int failures_ = 0;
};

// consul-esm's UpdateCheck counters (§6.6 steps 2-3), applied to what the gate forwarded.
class legacy_counter {
 public:
  // `same`: the forwarded status and output equal the stored ones. Returns whether the result
  // is to be reported.
  bool admit(check_status s, bool same, int passing_threshold, int critical_threshold) noexcept {
    if (same) {
      if (failures_ > 0) --failures_;
      if (successes_ > 0) --successes_;
      return false;
    }
    int& c = s == check_status::critical ? failures_ : successes_;
    int limit = s == check_status::critical ? critical_threshold : passing_threshold;
    if (c < limit) {
      ++c;
      return false;
    }
    c = 0;
    return true;
  }

 private:
  int successes_ = 0;
  int failures_ = 0;
};

}  // namespace esm::checks
