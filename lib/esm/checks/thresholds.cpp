#include "esm/checks/thresholds.hpp"

namespace esm::checks {

thresholds effective_thresholds(int passing_threshold, int critical_threshold,
                                std::optional<int> success_before_passing,
                                std::optional<int> failures_before_warning,
                                std::optional<int> failures_before_critical) {
  thresholds t;
  t.success_before_passing = passing_threshold > 0 ? passing_threshold : 0;
  t.failures_before_critical = critical_threshold > 0 ? critical_threshold : 0;
  t.failures_before_warning = t.failures_before_critical;
  if (success_before_passing && *success_before_passing > 0)
    t.success_before_passing = *success_before_passing;
  if (failures_before_critical && *failures_before_critical > 0) {
    t.failures_before_critical = *failures_before_critical;
    t.failures_before_warning = t.failures_before_critical;
  }
  if (failures_before_warning && *failures_before_warning > 0)
    t.failures_before_warning = *failures_before_warning;
  return t;
}

}  // namespace esm::checks
