// The status writer's decisions (write_plan.hpp), stepped with made-up times.
#include <doctest/doctest.h>

#include "esm/checks/write_plan.hpp"

using namespace esm::checks;
using namespace std::chrono_literals;

namespace {

const write_clock::time_point t0 = write_clock::time_point{} + 1000h;

reported_change change(bool differs, bool status_differs, bool first, bool armed = false) {
  reported_change c;
  c.differs = differs;
  c.status_differs = status_differs;
  c.first = first;
  c.output_armed = armed;
  return c;
}

}  // namespace

TEST_CASE("decide_write: nothing to write when the catalog already says the same") {
  CHECK(decide_write(change(false, false, true), 60s, t0).timing == write_timing::none);
  CHECK(decide_write(change(false, false, false), 60s, t0).timing == write_timing::none);
}

TEST_CASE("decide_write: a status change is written at once, never deferred") {
  CHECK(decide_write(change(true, true, false), 300s, t0).timing == write_timing::now);
  CHECK(decide_write(change(true, true, false, true), 300s, t0).timing == write_timing::now);
}

TEST_CASE("decide_write: the first result after a start is written at once, output only or not") {
  // A check registered critical with no output, failing with "connection refused".
  CHECK(decide_write(change(true, false, true), 300s, t0).timing == write_timing::now);
}

TEST_CASE("decide_write: a later output-only change waits check_update_interval") {
  auto d = decide_write(change(true, false, false), 300s, t0);
  CHECK(d.timing == write_timing::deferred);
  CHECK(d.due == t0 + 300s);
  // A further one while the write is armed does not push the deadline back.
  CHECK(decide_write(change(true, false, false, true), 300s, t0 + 10s).timing ==
        write_timing::armed);
  // check_update_interval 0: at once.
  CHECK(decide_write(change(true, false, false), 0s, t0).timing == write_timing::now);
}

TEST_CASE("flush_time: empty, partial and full queues") {
  CHECK_FALSE(flush_time(0, t0, 500ms, 64, t0 + 1s));
  CHECK(*flush_time(1, t0, 500ms, 64, t0 + 100ms) == t0 + 500ms);
  CHECK(*flush_time(63, t0, 500ms, 64, t0 + 100ms) == t0 + 500ms);
  CHECK(*flush_time(64, t0, 500ms, 64, t0 + 100ms) == t0 + 100ms);  // a full batch: now
  CHECK(*flush_time(1, t0, 0ms, 64, t0) == t0);                      // 0: as soon as possible
  CHECK(*flush_time(1, t0, 30s, 64, t0 + 1s) == t0 + 30s);
}

TEST_CASE("plan_rollback: stale ops are re-read and the whole transaction retried once") {
  auto p = plan_rollback(4, {{1, true}, {3, false}}, 0);
  CHECK(p.stale == std::vector<std::size_t>{1});
  CHECK(p.refused == std::vector<bool>{false, false, false, true});
  // Ops 0 and 2 did not fail but were rolled back with the rest: they are retried as well.
  CHECK(p.unwritten == std::vector<std::size_t>{0, 1, 2});
  CHECK(p.retry_now);
}

TEST_CASE("plan_rollback: stale again after the re-read leaves everything queued") {
  auto p = plan_rollback(3, {{0, true}}, 1);
  CHECK_FALSE(p.retry_now);
  CHECK(p.unwritten == std::vector<std::size_t>{0, 1, 2});  // none lost
}

TEST_CASE("plan_rollback: out-of-range indexes are ignored; all refused leaves nothing") {
  auto p = plan_rollback(2, {{-1, true}, {7, false}, {0, false}, {1, false}}, 0);
  CHECK(p.stale.empty());
  CHECK(p.unwritten.empty());
  CHECK_FALSE(p.retry_now);
}
