// The check engine's schedule, without I/O: when each check runs next and which due run may
// start, stepped by the engine's driver (engine.cpp) and by unit tests with times they choose.
//
// One binary heap of (due time, check, generation) for every check: a check costs a heap entry,
// not a coroutine or a timer of its own, and the driver needs one timer for the heap's front.
// A check's first run is at a uniformly random point of its interval (spread()), each later one
// `interval` after the previous run ended, less that run's lateness up to half the interval
// (next_due(); the driver pushes it when the run ends). Stopping or restarting a
// check bumps its generation (the engine's slot), which voids its entries without searching
// the heap: the driver drops popped entries whose generation is not the check's. Due runs wait
// in one FIFO queue for one of `max_concurrent` probe slots, so an overloaded engine delays
// every check alike instead of starving some.
//
// Wake-ups are coalesced: the driver wakes at the earliest entry's due time and takes every
// entry due within `slack` after it, so entries due close together start in one wake-up, a
// little early (by at most the slack), never late. A wake-up of the thread costs more than a
// TCP check's connect and close at low rates (a sleeping thread's caches and the VM's idle
// exit), and a check whose interval is seconds does not care about 20 ms.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <deque>
#include <optional>
#include <random>
#include <vector>

namespace esm::checks {

class run_schedule {
 public:
  using clock = std::chrono::steady_clock;
  struct entry {
    clock::time_point due;
    std::uint32_t index = 0;       // the engine's slot
    std::uint32_t generation = 0;  // the slot's generation when pushed
    bool output_write = false;     // a deferred output-only write, not a probe run
  };

  run_schedule(std::size_t max_concurrent, std::uint64_t seed,
               clock::duration slack = clock::duration::zero())
      : max_concurrent_(max_concurrent ? max_concurrent : 1),
        slack_(slack > clock::duration::zero() ? slack : clock::duration::zero()),
        rng_(seed) {}

  // A first run: a uniformly random point of [now, now + interval), in microseconds.
  clock::time_point spread(clock::time_point now, std::chrono::milliseconds interval);

  // The due time of a check's next run after one that was due at `due`, started at `started`
  // and ended at `ended`: `interval` after its end, as consul-esm runs checks, less the
  // lateness of its start, at most half the interval. A run on time (the normal case, a few
  // ms late) is followed one interval after its end; a check that a stall or a backlog made
  // late gets back to its own place in the interval instead of keeping the delay for good.
  // Without the pull-back, the checks that were due during a stall of S all run in the
  // burst after it, and stay in that burst run after run (an S-long hole in every interval
  // and the burst at the engine's full rate, measured by bench_engine --stall). At half the
  // interval at most, the next run never comes less than half an interval after the end; under
  // a sustained overload every check keeps about the same lateness (runs each get the same
  // share, in FIFO order), larger by up to half the interval than without the pull-back.
  static clock::time_point next_due(clock::time_point due, clock::time_point started,
                                    clock::time_point ended, std::chrono::milliseconds interval) {
    clock::duration late = started > due ? started - due : clock::duration::zero();
    clock::duration back = std::min<clock::duration>(late, interval / 2);
    return ended + interval - back;
  }

  // Adds an entry; true when it became the earliest (the driver re-arms its timer).
  bool push(const entry& e) {
    bool earliest = heap_.empty() || e.due < heap_.front().due;
    heap_.push_back(e);
    std::push_heap(heap_.begin(), heap_.end(), later);
    return earliest;
  }
  // The earliest entry's due time; nullopt when there is none.
  std::optional<clock::time_point> next_due() const {
    if (heap_.empty()) return std::nullopt;
    return heap_.front().due;
  }
  // Pops the earliest entry when it is due at `now` plus the slack; entries come out in due
  // order. The driver pops until nullopt at each wake-up (at next_due()).
  std::optional<entry> pop_due(clock::time_point now) {
    if (heap_.empty() || heap_.front().due > now + slack_) return std::nullopt;
    std::pop_heap(heap_.begin(), heap_.end(), later);
    auto e = heap_.back();
    heap_.pop_back();
    return e;
  }
  std::size_t entries() const { return heap_.size(); }

  // The queue of due runs waiting for a probe slot.
  void enqueue(std::uint32_t index) { ready_.push_back(index); }
  // The next queued run when a probe slot is free (nullopt: none queued, or all slots busy).
  // The caller either starts it (run_started) or drops it (a check stopped meanwhile).
  std::optional<std::uint32_t> take_ready() {
    if (in_flight_ >= max_concurrent_ || ready_.empty()) return std::nullopt;
    auto i = ready_.front();
    ready_.pop_front();
    return i;
  }
  void run_started() { ++in_flight_; }
  void run_ended() {
    if (in_flight_ > 0) --in_flight_;
  }
  std::size_t in_flight() const { return in_flight_; }
  std::size_t queued() const { return ready_.size(); }
  std::size_t max_concurrent() const { return max_concurrent_; }

  // Forgets every entry and queued run (runs in flight are still counted).
  void clear();

 private:
  // Inline: called once or twice per check run (10 000 times a second at full load).
  static bool later(const entry& a, const entry& b) { return a.due > b.due; }
  std::size_t max_concurrent_;
  clock::duration slack_;
  std::size_t in_flight_ = 0;
  std::vector<entry> heap_;  // a min-heap on `due`
  std::deque<std::uint32_t> ready_;
  std::mt19937_64 rng_;
};

}  // namespace esm::checks
