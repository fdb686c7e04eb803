#include "esm/cluster/reaper_policy.hpp"

#include <set>

namespace esm::cluster {

bool is_health_session_of(const consul::session& s, const std::string& service_id) {
  return s.name == service_id + ":health-session" && s.node == service_id + ":node";
}

std::vector<reaper_instance> agentless_instances(const std::vector<consul::catalog_service>& rows,
                                                 const std::vector<consul::session>& sessions) {
  std::vector<reaper_instance> out;
  for (auto& r : rows) {
    if (!is_agentless_row(r)) continue;
    bool alive = false;
    for (auto& s : sessions) alive = alive || is_health_session_of(s, r.service_id);
    out.push_back(reaper_instance{r.service_id, r.node, alive});
  }
  return out;
}

reaper_plan reaper_policy::step(const std::vector<reaper_instance>& seen, clock::time_point now) {
  reaper_plan plan;
  std::set<std::string> present;
  for (auto& i : seen) {
    // A service ID listed twice would otherwise get its writes twice in one round.
    if (!present.insert(i.service_id).second) continue;
    if (i.session_alive) {
      // Recovered (its instance made a new session): a later death counts from scratch.
      if (dead_.erase(i.service_id)) plan.forgotten.push_back(i.service_id);
      continue;
    }
    auto& m = dead_.try_emplace(i.service_id, memory{now, false}).first->second;
    if (now - m.dead_since >= deregister_after_)
      plan.deregister.push_back(i);  // marked or not: removal makes the mark moot
    else if (!m.marked)
      plan.mark_critical.push_back(i);
  }
  // Vanished (deregistered by someone else, or by us and the feedback was lost): if the ID
  // comes back, it is a new registration whose check its instance wrote, so it must be judged,
  // and marked, afresh.
  for (auto it = dead_.begin(); it != dead_.end();) {
    if (present.count(it->first)) {
      ++it;
      continue;
    }
    plan.forgotten.push_back(it->first);
    it = dead_.erase(it);
  }
  return plan;
}

void reaper_policy::marked(const std::string& service_id) {
  if (auto it = dead_.find(service_id); it != dead_.end()) it->second.marked = true;
}

void reaper_policy::deregistered(const std::string& service_id) { dead_.erase(service_id); }

std::optional<clock::time_point> reaper_policy::dead_since(const std::string& service_id) const {
  auto it = dead_.find(service_id);
  if (it == dead_.end()) return std::nullopt;
  return it->second.dead_since;
}

bool reaper_policy::is_marked(const std::string& service_id) const {
  auto it = dead_.find(service_id);
  return it != dead_.end() && it->second.marked;
}

}  // namespace esm::cluster
