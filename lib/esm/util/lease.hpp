// A leader's right to act, checked right before each leader write.
//
// The leader election dates its term by the last confirmed session renewal; past the fencing
// deadline (session_ttl minus a margin after it) Consul may have invalidated the session and
// another instance may lead. A process paused for longer than that (SIGSTOP, a frozen VM, a
// swap storm) resumes with I/O completions queued ahead of the election's timer: a read the
// leader work had in flight completes first and its coroutine would go on to write before
// the election notices the deadline and ends the term. Consul's check-session still refuses
// the write of an invalidated session, but a leader that knows its term may be over must not
// send it at all; valid() is that check, made with the clock, not with Consul.
#pragma once

#include <functional>
#include <utility>

namespace esm::util {

class lease {
 public:
  lease() = default;  // always valid (leader work run outside an election, in tests)
  explicit lease(std::function<bool()> valid) : valid_(std::move(valid)) {}
  bool valid() const { return !valid_ || valid_(); }

 private:
  std::function<bool()> valid_;
};

}  // namespace esm::util
