// The check engine's schedule (lib/esm/checks/schedule.hpp), stepped with chosen times.
#include <doctest/doctest.h>

#include <algorithm>
#include <vector>

#include "esm/checks/schedule.hpp"

using esm::checks::run_schedule;
using namespace std::chrono_literals;
using clock_t_ = run_schedule::clock;

namespace {

run_schedule::entry at(clock_t_::time_point due, std::uint32_t index, std::uint32_t gen = 0,
                       bool output = false) {
  run_schedule::entry e;
  e.due = due;
  e.index = index;
  e.generation = gen;
  e.output_write = output;
  return e;
}

}  // namespace

TEST_CASE("schedule: first runs are spread over the interval, uniformly") {
  run_schedule s(8, 42);
  auto t0 = clock_t_::time_point{} + 1000s;
  std::vector<int> tenths(10, 0);
  for (int i = 0; i < 10'000; ++i) {
    auto due = s.spread(t0, 10s);
    REQUIRE(due >= t0);
    REQUIRE(due < t0 + 10s);
    ++tenths[static_cast<std::size_t>((due - t0) / 1s)];
  }
  // Each second of the interval gets about a tenth (1000 +- 15 % with this many draws).
  for (auto n : tenths) CHECK((n > 850 && n < 1150));
  // A 1 ms interval still gives a point inside it.
  CHECK(s.spread(t0, 1ms) < t0 + 1ms);
}

TEST_CASE("schedule: entries come out in due order, only once due; push says when the front moved") {
  run_schedule s(8, 1);
  auto t0 = clock_t_::time_point{} + 1000s;
  CHECK_FALSE(s.next_due());
  CHECK(s.push(at(t0 + 5s, 1)));       // first entry: the front
  CHECK_FALSE(s.push(at(t0 + 7s, 2)));  // later: the timer stays
  CHECK(s.push(at(t0 + 3s, 3)));       // earlier: re-arm
  CHECK_FALSE(s.push(at(t0 + 3s, 4)));  // same time as the front: not earlier
  CHECK(*s.next_due() == t0 + 3s);
  CHECK_FALSE(s.pop_due(t0 + 2999ms));
  std::vector<std::uint32_t> order;
  while (auto e = s.pop_due(t0 + 6s)) order.push_back(e->index);
  std::sort(order.begin(), order.begin() + 2);  // 3 and 4 share a due time
  CHECK(order == std::vector<std::uint32_t>{3, 4, 1});
  CHECK(s.entries() == 1);
  CHECK(*s.next_due() == t0 + 7s);
  auto last = s.pop_due(t0 + 7s);
  REQUIRE(last);
  CHECK(last->index == 2);
  CHECK_FALSE(s.next_due());
}

TEST_CASE("schedule: generation and kind travel with an entry (the driver voids stale ones)") {
  run_schedule s(8, 1);
  auto t0 = clock_t_::time_point{} + 1000s;
  s.push(at(t0, 7, 3, false));
  s.push(at(t0 + 1s, 7, 4, true));
  auto a = s.pop_due(t0 + 1s);
  auto b = s.pop_due(t0 + 1s);
  REQUIRE(a);
  REQUIRE(b);
  CHECK(a->generation == 3);
  CHECK_FALSE(a->output_write);
  CHECK(b->generation == 4);
  CHECK(b->output_write);
}

TEST_CASE("schedule: a wake-up takes the entries due within the slack, early by at most the slack") {
  auto t0 = clock_t_::time_point{} + 1000s;
  // Without slack, only what is due.
  run_schedule exact(8, 1);
  exact.push(at(t0, 1));
  exact.push(at(t0 + 10ms, 2));
  REQUIRE(exact.pop_due(t0));
  CHECK_FALSE(exact.pop_due(t0));
  // With 20 ms: the entry 10 ms later comes out at the same wake-up, the one 30 ms later not.
  run_schedule s(8, 1, 20ms);
  s.push(at(t0, 1));
  s.push(at(t0 + 10ms, 2));
  s.push(at(t0 + 20ms, 3));
  s.push(at(t0 + 30ms, 4));
  CHECK_FALSE(s.pop_due(t0 - 21ms));
  std::vector<std::uint32_t> got;
  while (auto e = s.pop_due(t0)) got.push_back(e->index);
  CHECK(got == std::vector<std::uint32_t>{1, 2, 3});
  CHECK(*s.next_due() == t0 + 30ms);  // the driver's next wake-up: the front's own due time

  // The driver's loop (engine.cpp schedule_loop): wake at next_due(), pop until nullopt. 2000
  // entries spread over 10 s (200 runs/s) need at most one wake-up per 20 ms, and none starts
  // late or more than the slack early.
  run_schedule many(8, 7, 20ms);
  for (std::uint32_t i = 0; i < 2000; ++i) many.push(at(many.spread(t0, 10s), i));
  std::size_t wakes = 0, popped = 0;
  auto last_wake = t0 - 1s;
  while (auto next = many.next_due()) {
    auto now = *next;
    REQUIRE(now - last_wake > 20ms);  // the previous wake-up took everything up to +20 ms
    last_wake = now;
    ++wakes;
    while (auto e = many.pop_due(now)) {
      CHECK(e->due >= now);
      CHECK(e->due <= now + 20ms);
      ++popped;
    }
  }
  CHECK(popped == 2000);
  CHECK(wakes <= 10s / 20ms + 1);
  MESSAGE("wake-ups for 2000 runs spread over 10 s with 20 ms slack: " << wakes);
}

TEST_CASE("schedule: at most max_concurrent runs at once; the rest wait in FIFO order") {
  run_schedule s(2, 1);
  for (std::uint32_t i = 10; i < 15; ++i) s.enqueue(i);
  CHECK(s.queued() == 5);
  std::vector<std::uint32_t> started;
  while (auto i = s.take_ready()) {
    started.push_back(*i);
    s.run_started();
  }
  CHECK(started == std::vector<std::uint32_t>{10, 11});
  CHECK(s.in_flight() == 2);
  CHECK(s.queued() == 3);
  s.run_ended();
  auto next = s.take_ready();
  REQUIRE(next);
  CHECK(*next == 12);
  // Taken but dropped (its check stopped meanwhile): no slot used, the next one can go.
  auto after = s.take_ready();
  REQUIRE(after);
  CHECK(*after == 13);
  s.run_started();
  CHECK_FALSE(s.take_ready());  // both slots busy
  s.run_ended();
  s.run_ended();
  s.run_ended();  // more ends than starts never wraps
  CHECK(s.in_flight() == 0);
  CHECK(*s.take_ready() == 14);
}

TEST_CASE("schedule: clear forgets entries and queued runs, not the runs in flight") {
  run_schedule s(0, 1);  // 0 means 1: a schedule always makes progress
  CHECK(s.max_concurrent() == 1);
  auto t0 = clock_t_::time_point{} + 1000s;
  s.push(at(t0, 1));
  s.enqueue(2);
  s.enqueue(3);
  REQUIRE(s.take_ready());
  s.run_started();
  s.clear();
  CHECK(s.entries() == 0);
  CHECK(s.queued() == 0);
  CHECK(s.in_flight() == 1);
}

TEST_CASE("schedule: next_due is an interval after the end, less the start's lateness up to half") {
  auto t0 = clock_t_::time_point{} + 1000s;
  using S = run_schedule;
  // On time: one interval after the end, as consul-esm.
  CHECK(S::next_due(t0, t0, t0 + 20ms, 10s) == t0 + 20ms + 10s);
  // Started 300 ms late: the lateness comes back (the check keeps its place in the interval).
  CHECK(S::next_due(t0, t0 + 300ms, t0 + 320ms, 10s) == t0 + 20ms + 10s);
  // 8 s late at 10 s: at most half the interval comes back.
  CHECK(S::next_due(t0, t0 + 8s, t0 + 8s + 5ms, 10s) == t0 + 8s + 5ms + 5s);
  // A start before its due time (never done by the engine) counts as on time.
  CHECK(S::next_due(t0, t0 - 1s, t0 - 1s + 5ms, 10s) == t0 - 1s + 5ms + 10s);
}

namespace {

// The engine's driver with synthetic time, 1 ms steps: fire_due + dispatch + finish_run on one
// "core" that starts at most `per_ms` runs a millisecond (its capacity), each taking `took`;
// during a stall nothing happens (the thread is blocked). `pull_back`: the next run is due at
// next_due(), else one interval after the end (the rule before next_due existed).
struct simulation {
  struct run {
    std::uint32_t index;
    clock_t_::time_point started, ends;
  };
  run_schedule s{1024, 7};
  std::size_t n;
  std::chrono::milliseconds interval;
  int per_ms;
  std::chrono::milliseconds took{1};
  bool pull_back = true;
  clock_t_::time_point now = clock_t_::time_point{} + 1000s;
  std::vector<clock_t_::time_point> due;  // of each check's queued or running run
  std::vector<std::vector<clock_t_::time_point>> starts;
  std::vector<clock_t_::duration> lateness;  // of every start
  std::vector<clock_t_::time_point> start_times;
  std::deque<run> running;  // ends in start order (every run takes `took`)

  simulation(std::size_t n_, std::chrono::milliseconds interval_, int per_ms_)
      : n(n_), interval(interval_), per_ms(per_ms_), due(n_), starts(n_) {
    for (std::uint32_t i = 0; i < n; ++i) s.push(at(s.spread(now, interval), i));
  }
  void step() {
    while (!running.empty() && running.front().ends <= now) {
      auto r = running.front();
      running.pop_front();
      s.run_ended();
      auto next = pull_back ? run_schedule::next_due(due[r.index], r.started, now, interval)
                            : now + interval;
      s.push(at(next, r.index));
    }
    while (auto e = s.pop_due(now)) {
      due[e->index] = e->due;
      s.enqueue(e->index);
    }
    for (int k = 0; k < per_ms; ++k) {
      auto i = s.take_ready();
      if (!i) break;
      s.run_started();
      starts[*i].push_back(now);
      start_times.push_back(now);
      lateness.push_back(now - due[*i]);
      running.push_back({*i, now, now + took});
    }
    now += 1ms;
  }
  void advance(clock_t_::duration d) {
    auto end = now + d;
    while (now < end) step();
  }
  void stall(clock_t_::duration d) { now += d; }  // the blocked thread: time passes, nothing runs

  // Starts per 100 ms over [from, from + length).
  std::vector<int> per_100ms(clock_t_::time_point from, clock_t_::duration length) const {
    std::vector<int> out(static_cast<std::size_t>(length / 100ms), 0);
    for (auto t : start_times)
      if (t >= from && t < from + length) ++out[static_cast<std::size_t>((t - from) / 100ms)];
    return out;
  }
};

}  // namespace

TEST_CASE("schedule: after a stall the checks spread out again instead of staying bunched") {
  // 20 000 checks at 10 s: 2 runs due a millisecond, capacity 3 (the engine's spare third).
  for (bool pull_back : {true, false}) {
    CAPTURE(pull_back);
    simulation sim(20'000, 10s, 3);
    sim.pull_back = pull_back;
    sim.advance(20s);
    auto before = sim.per_100ms(sim.now - 10s, 10s);
    sim.stall(3s);  // 6 000 runs fall due meanwhile
    auto stall_end = sim.now;
    sim.advance(40s);
    // The backlog drains at the spare rate (about 6 s); two intervals later the runs are due
    // where they were before the stall, or stay where the burst put them.
    auto later = sim.per_100ms(stall_end + 20s, 10s);
    auto [lo, hi] = std::minmax_element(later.begin(), later.end());
    auto [blo, bhi] = std::minmax_element(before.begin(), before.end());
    CHECK(*blo > 120);  // before: about 200 every 100 ms
    CHECK(*bhi < 280);
    if (pull_back) {
      CHECK(*lo > 120);
      CHECK(*hi < 280);
    } else {
      CHECK(*lo < 50);   // the hole the stall left, an interval later
      CHECK(*hi >= 290); // and the burst at the full rate (3 a millisecond: 300 per 100 ms)
    }
    // Either way no run is lost: every check ran in the last interval.
    for (std::size_t i = 0; i < sim.n; ++i) {
      REQUIRE(!sim.starts[i].empty());
      CHECK(sim.starts[i].back() >= sim.now - 10s - 1s);
    }
  }
}

TEST_CASE("schedule: a sustained overload delays every check alike and starves none") {
  // 20 000 checks at 5 s: 4 runs due a millisecond, capacity 3.
  simulation sim(20'000, 5s, 3);
  sim.advance(40s);  // to the steady state of the overload
  auto from = sim.now;
  auto first_late = sim.lateness.size();
  sim.advance(40s);
  std::size_t fewest = SIZE_MAX, most = 0;
  clock_t_::duration widest{};
  for (std::size_t i = 0; i < sim.n; ++i) {
    std::size_t runs = 0;
    auto prev = from;
    for (auto t : sim.starts[i]) {
      if (t < from) continue;
      ++runs;
      widest = std::max(widest, t - prev);
      prev = t;
    }
    widest = std::max(widest, sim.now - prev);
    fewest = std::min(fewest, runs);
    most = std::max(most, runs);
  }
  // The core runs 3 a millisecond: each check every 20 000 / 3 ms = 6.7 s, 40 s / 6.7 s = 6.
  CHECK(fewest >= 5);
  CHECK(most - fewest <= 2);  // 6 each, give or take one at either end of the window
  CHECK(widest < 7500ms);  // nobody waits much more than its share of the core
  // The lateness settles (6.7 s per run less half the 5 s interval) instead of growing.
  // Every start in the window is late by about the same (delayed alike).
  auto [late_min, late_max] =
      std::minmax_element(sim.lateness.begin() + std::ptrdiff_t(first_late), sim.lateness.end());
  CHECK(*late_max < 4500ms);
  CHECK(*late_min > 3500ms);
}
