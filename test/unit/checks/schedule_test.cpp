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
