#include "esm/checks/write_plan.hpp"

namespace esm::checks {

write_decision decide_write(const reported_change& c, std::chrono::milliseconds check_update_interval,
                            write_clock::time_point now) {
  if (!c.differs) return {};
  if (c.status_differs || c.first || check_update_interval <= std::chrono::milliseconds::zero())
    return {write_timing::now, {}};
  if (c.output_armed) return {write_timing::armed, {}};
  return {write_timing::deferred, now + check_update_interval};
}

std::optional<write_clock::time_point> flush_time(std::size_t queued,
                                                  write_clock::time_point first_queued,
                                                  std::chrono::milliseconds batch_flush_interval,
                                                  std::size_t max_ops, write_clock::time_point now) {
  if (queued == 0) return std::nullopt;
  if (queued >= max_ops) return now;
  return first_queued + batch_flush_interval;
}

rollback_plan plan_rollback(std::size_t ops, const std::vector<rolled_back_op>& errors, int attempt) {
  rollback_plan p;
  p.refused.assign(ops, false);
  for (auto& e : errors) {
    if (e.op_index < 0 || static_cast<std::size_t>(e.op_index) >= ops) continue;
    auto k = static_cast<std::size_t>(e.op_index);
    if (e.stale)
      p.stale.push_back(k);
    else
      p.refused[k] = true;
  }
  for (std::size_t k = 0; k < ops; ++k)
    if (!p.refused[k]) p.unwritten.push_back(k);
  p.retry_now = attempt == 0 && !p.unwritten.empty();
  return p;
}

}  // namespace esm::checks
