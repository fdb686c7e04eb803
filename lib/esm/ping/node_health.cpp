#include "esm/ping/node_health.hpp"

namespace esm::ping {

namespace {

bool due(const health_record& r, node_status want, std::chrono::milliseconds refresh,
         std::chrono::steady_clock::time_point now) {
  return r.written != want || now - r.written_at >= refresh;
}

}  // namespace

health_decision decide_health(bool alive, const health_record& record, const probe_key& key,
                              const health_timing& timing, sys_nanoseconds wall_now,
                              std::chrono::steady_clock::time_point now) {
  health_decision d;
  if (alive) {
    d.status = node_status::alive;
    d.write_check = due(record, node_status::alive, timing.refresh, now);
    if (key.exists) d.key = key_action::remove;
    return d;
  }
  d.status = node_status::dead;
  if (!key.exists) {
    // The first failure: the count starts now, with the check write in the same transaction.
    d.key = key_action::create;
    d.since = wall_now;
    d.write_check = true;
    return d;
  }
  bool stale = key.since && record.alive_at && *key.since < *record.alive_at;
  if (!key.since || stale) {
    d.key_undecodable = !key.since;
    d.key = key_action::replace;
    d.since = wall_now;
    d.write_check = due(record, node_status::dead, timing.refresh, now);
    return d;
  }
  if (wall_now - *key.since > timing.reconnect_timeout) {
    d.reap = true;  // the node goes with its checks; no check write
    return d;
  }
  d.write_check = due(record, node_status::dead, timing.refresh, now);
  return d;
}

}  // namespace esm::ping
