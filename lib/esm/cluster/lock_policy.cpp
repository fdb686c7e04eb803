#include "esm/cluster/lock_policy.hpp"

#include <algorithm>

namespace esm::cluster {

using namespace std::chrono_literals;

nanoseconds lock_timing::fence_margin() const {
  nanoseconds m = std::max<nanoseconds>(1s, session_ttl / 10);
  // A TTL of a few seconds (Consul refuses < 10 s, but tests may try): keep the deadline after
  // the first renew at TTL/2.
  return std::min(m, session_ttl / 2 - session_ttl / 10);
}

nanoseconds lock_timing::lock_delay_poll() const {
  return std::clamp<nanoseconds>(lock_delay / 10, 100ms, 1s);
}

nanoseconds lock_timing::monitor_wait() const {
  return std::max<nanoseconds>(1s, std::min(blocking_wait, session_ttl));
}

failure_kind classify(const consul::error& e) {
  if (e.is_cancelled()) return failure_kind::cancelled;
  if (e.is_transient()) return failure_kind::transient;
  return failure_kind::fatal;
}

milliseconds session_fence::cap(milliseconds timeout, clock::time_point now) const {
  auto left = std::chrono::duration_cast<milliseconds>(time_left(now));
  return std::min(timeout, left);
}

key_state classify_key(const std::optional<consul::kv_pair>& kv, const std::string& session) {
  if (!kv) return key_state::free;
  if (kv->flags != consul::lock_flag_value) return key_state::conflict;
  if (kv->session.empty()) return key_state::free;
  return kv->session == session ? key_state::ours : key_state::other;
}

monitor_policy::verdict monitor_policy::on_read(const std::optional<consul::kv_pair>& kv,
                                                const std::string& session) {
  verdict v;
  switch (classify_key(kv, session)) {
    case key_state::ours:
      failures_ = 0;
      return v;
    case key_state::free:
      v.reason = kv ? "the lock key no longer has our session" : "the lock key is gone";
      break;
    case key_state::other:
      v.reason = "the lock key is held by another session";
      break;
    case key_state::conflict:
      v.reason = "the lock key was overwritten with other flags";
      break;
  }
  v.lost = true;
  return v;
}

monitor_policy::verdict monitor_policy::on_error(const consul::error& e, nanoseconds in_flight) {
  verdict v;
  auto kind = classify(e);
  if (in_flight >= retry_time_) failures_ = 0;
  if (kind == failure_kind::transient && failures_ < retries_) {
    ++failures_;
    v.pause = retry_time_;
    return v;
  }
  v.lost = true;
  if (kind == failure_kind::cancelled)
    v.reason = "cancelled";
  else if (kind == failure_kind::transient)
    v.reason = "lock monitor failed " + std::to_string(failures_ + 1) + " times in a row: " + e.to_string();
  else
    v.reason = "lock monitor failed: " + e.to_string();
  return v;
}

consul::txn_op check_session_op(const std::string& key, const std::string& session) {
  consul::txn_op op;
  op.kv = consul::txn_kv_op{"check-session", key, {}, 0, 0, session, {}, {}};
  return op;
}

}  // namespace esm::cluster
