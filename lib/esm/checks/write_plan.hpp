// The status writer's decisions, without I/O (DESIGN "Decisions" §5): when a reported result
// is written (output deferral), when the queue is flushed (batching), and what follows a
// rolled-back transaction (stale-index re-read and retry). The engine's writer only carries
// them out; the clock is a parameter, so unit tests step them with made-up times.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <vector>

namespace esm::checks {

using write_clock = std::chrono::steady_clock;

// A result the thresholds reported, compared with the engine's catalog copy.
struct reported_change {
  bool differs = false;         // status or output differs from the catalog copy
  bool status_differs = false;  // the status does
  bool first = false;           // the first result reported since the check (re)started
  bool output_armed = false;    // a deferred output write is already scheduled
};

enum class write_timing {
  none,      // the catalog says the same: nothing to write
  now,       // queue for the next flush
  deferred,  // output only: write at `due` (with the newest output then)
  armed,     // output only, and a deferred write is already scheduled: it will carry this one
};

struct write_decision {
  write_timing timing = write_timing::none;
  write_clock::time_point due{};  // for `deferred`
};

// A status change is never delayed. An output-only change waits `check_update_interval`
// (0: at once), except the first result after a (re)start: the catalog's output may be empty
// or stale for any length of time, and the deferral exists to spare Consul repeated output
// churn, not to hide the first observation.
write_decision decide_write(const reported_change& c, std::chrono::milliseconds check_update_interval,
                            write_clock::time_point now);

// When the queue must be flushed: nullopt when it is empty; `now` or earlier when a full
// transaction is queued; else `batch_flush_interval` after the first queued change.
std::optional<write_clock::time_point> flush_time(std::size_t queued,
                                                  write_clock::time_point first_queued,
                                                  std::chrono::milliseconds batch_flush_interval,
                                                  std::size_t max_ops, write_clock::time_point now);

// The failed operations of a rolled-back transaction, as Consul reported them.
struct rolled_back_op {
  std::ptrdiff_t op_index = -1;  // may be out of range in a malformed answer: ignored
  bool stale = false;            // "index is stale"; anything else refuses that op for good
};

struct rollback_plan {
  std::vector<bool> refused;         // per op: dropped (the check cannot be written so)
  std::vector<std::size_t> stale;    // ops whose node is re-read before the retry
  // Every op not refused: a rollback undoes the ops that did not fail as well.
  std::vector<std::size_t> unwritten;
  // Retry now (after the re-reads), or leave `unwritten` queued for a later flush: stale again
  // right after a re-read means someone writes these checks concurrently, so at most one
  // immediate retry.
  bool retry_now = false;
};

rollback_plan plan_rollback(std::size_t ops, const std::vector<rolled_back_op>& errors, int attempt);

}  // namespace esm::checks
