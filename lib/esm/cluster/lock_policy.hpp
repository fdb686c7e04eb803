// Decisions of the leader lock, without I/O: when to renew the session, when the holder must
// stop trusting its own leadership (the self-fencing deadline), how the lock monitor counts
// failures, what a read of the lock key means, and which errors are worth retrying. Times are
// passed in, so unit tests drive everything with a fake clock.
//
// Safety argument (no split brain). Consul resets a session's TTL when it *processes* a renew,
// which happens after we sent it, and invalidates the session no earlier than TTL after that.
// So if a renew sent at time s succeeded, the session lives at least until s + TTL, and no other
// session can hold the lock before then. The holder counts its leadership as confirmed only
// until s + TTL - margin (the fencing deadline) and cancels its leader work there unless a newer
// renew succeeded. Writes the leader already sent may still reach Consul later; they carry a
// check-session operation on the lock key, so Consul rejects them once the key is not ours.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>

#include "esm/consul/error.hpp"
#include "esm/consul/types.hpp"

namespace esm::cluster {

using clock = std::chrono::steady_clock;
using std::chrono::milliseconds;
using std::chrono::nanoseconds;

// Every timing of the election; consul-esm's values by default, shortened by tests.
struct lock_timing {
  nanoseconds session_ttl = std::chrono::seconds(30);
  nanoseconds lock_delay = std::chrono::seconds(15);
  int monitor_retries = 6;
  nanoseconds monitor_retry_time = std::chrono::seconds(2);
  nanoseconds blocking_wait = std::chrono::seconds(45);
  nanoseconds retry_interval = std::chrono::seconds(10);
  nanoseconds request_timeout = std::chrono::seconds(10);
  nanoseconds renew_retry = std::chrono::seconds(1);  // after a failed renew (api: 1 s)
  // Each shutdown request (release, destroy, deregister): three in a row stay under 2.5 s.
  nanoseconds cleanup_timeout = std::chrono::milliseconds(800);

  // Time kept between the fencing deadline and the earliest moment Consul could expire the
  // session: covers a late timer on a loaded machine. max(1 s, TTL/10), below TTL/2.
  nanoseconds fence_margin() const;
  nanoseconds renew_interval() const { return session_ttl / 2; }
  // Poll period while a lock-delay blocks acquisition: the key does not change when the delay
  // ends, so a blocking query would not return. lock_delay/10 within [100 ms, 1 s].
  nanoseconds lock_delay_poll() const;
  // Wait of the monitor's blocking query: blocking_wait, but at most a TTL, so a monitor read
  // comes back regularly even on a quiet key.
  nanoseconds monitor_wait() const;
};

// What a failed request means for the caller.
enum class failure_kind {
  transient,  // network error, timeout, 5xx, 429: retry
  fatal,      // 4xx other than 429 (ACL denied, bad request), undecodable answer
  cancelled,  // our own cancellation
};
failure_kind classify(const consul::error& e);

// The fencing clock of one session. Confirmation = a successful renew (or the create that
// started the session), dated by when that request was SENT.
class session_fence {
 public:
  session_fence(nanoseconds ttl, nanoseconds margin) : ttl_(ttl), margin_(margin) {}

  // A renew sent at `sent` succeeded. Answers may arrive out of order: the latest send wins.
  void confirm(clock::time_point sent) {
    if (!last_ || sent > *last_) last_ = sent;
  }
  bool confirmed() const { return last_.has_value(); }
  clock::time_point last_confirmed() const { return last_.value_or(clock::time_point::min()); }
  // The earliest moment Consul could invalidate the session.
  clock::time_point earliest_expiry() const { return last_confirmed_plus(ttl_); }
  // Past this, the holder steps down by itself.
  clock::time_point deadline() const { return last_confirmed_plus(ttl_ - margin_); }
  bool expired(clock::time_point now) const { return now >= deadline(); }
  nanoseconds time_left(clock::time_point now) const {
    return expired(now) ? nanoseconds(0) : deadline() - now;
  }
  // A request timeout that ends no later than the deadline (0 when it has passed).
  milliseconds cap(milliseconds timeout, clock::time_point now) const;

 private:
  clock::time_point last_confirmed_plus(nanoseconds d) const {
    return last_ ? *last_ + d : clock::time_point::min();
  }
  nanoseconds ttl_, margin_;
  std::optional<clock::time_point> last_;
};

// When to renew next. After a success: TTL/2 after that renew was sent. After a failure:
// renew_retry later, until the fence gives up.
class renew_schedule {
 public:
  explicit renew_schedule(const lock_timing& t) : interval_(t.renew_interval()), retry_(t.renew_retry) {}
  clock::time_point after_success(clock::time_point sent) {
    failures_ = 0;
    return sent + interval_;
  }
  clock::time_point after_failure(clock::time_point now) {
    ++failures_;
    return now + retry_;
  }
  int consecutive_failures() const { return failures_; }

 private:
  nanoseconds interval_, retry_;
  int failures_ = 0;
};

// The lock key as read.
enum class key_state {
  free,      // absent, or present without a session and with the lock flags
  ours,      // held by our session
  other,     // held by another session
  conflict,  // present with flags other than the lock flags: not a lock (logged, retried)
};
key_state classify_key(const std::optional<consul::kv_pair>& kv, const std::string& session);

// The lock monitor: consistent blocking reads of the key while holding it. Tolerates
// `retries` consecutive transient failures, `retry_time` apart; a successful read that still
// shows our session resets the count (the driver makes the read after a failure non-blocking,
// so it answers as soon as Consul is back). A blocking read on a quiet key returns only after its
// wait, so an outage usually kills a read that Consul had been holding open: such a read (in
// flight for at least `retry_time` before it failed) proves the path worked when it was sent
// and starts a new count, so separate short outages do not add up to a loss.
class monitor_policy {
 public:
  monitor_policy(int retries, nanoseconds retry_time) : retries_(retries), retry_time_(retry_time) {}

  struct verdict {
    bool lost = false;
    nanoseconds pause{0};  // before the next read
    std::string reason;    // when lost
  };
  verdict on_read(const std::optional<consul::kv_pair>& kv, const std::string& session);
  verdict on_error(const consul::error& e, nanoseconds in_flight = nanoseconds(0));
  int failures() const { return failures_; }

 private:
  int retries_;
  nanoseconds retry_time_;
  int failures_ = 0;
};

// The check-session transaction operation that fences a leader's writes: put it first in the
// same transaction and Consul rolls the whole transaction back (409) unless `session` holds
// `key` when it is applied.
consul::txn_op check_session_op(const std::string& key, const std::string& session);

}  // namespace esm::cluster
