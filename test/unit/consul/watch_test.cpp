#include <doctest/doctest.h>

#include "esm/util/backoff.hpp"
#include "esm/consul/watch.hpp"

using namespace esm::consul;
using namespace std::chrono_literals;

TEST_CASE("index rules: first result, moves, backwards resets, never 0") {
  index_tracker t(100ms);
  CHECK(t.index() == 0);  // the first call is not blocking
  auto d = t.on_result(10, 5ms);
  CHECK(d.changed);
  CHECK(t.index() == 10);

  d = t.on_result(10, 45s);  // wait expired, nothing new
  CHECK_FALSE(d.changed);
  CHECK(d.pause == 0ms);

  d = t.on_result(12, 1s);
  CHECK(d.changed);
  CHECK(t.index() == 12);

  d = t.on_result(3, 1ms);  // went backwards: deliver, then restart from 0
  CHECK(d.changed);
  CHECK(t.index() == 0);
  d = t.on_result(3, 1ms);
  CHECK_FALSE(d.changed);  // same state as just delivered
  CHECK(t.index() == 3);

  index_tracker z;
  z.on_result(0, 1ms);
  CHECK(z.index() == 1);  // 0 is never sent as a blocking index
}

TEST_CASE("a watch that returns fast without a change is rate limited") {
  index_tracker t(100ms);
  t.on_result(7, 1ms);
  auto d = t.on_result(7, 20ms);
  CHECK_FALSE(d.changed);
  CHECK(d.pause == 80ms);
}

TEST_CASE("backoff grows exponentially to its cap, with jitter in [d/2, d]") {
  esm::util::backoff b(100ms, 1s, 42);
  std::vector<std::chrono::milliseconds> ceilings;
  for (int i = 0; i < 6; ++i) {
    auto ceiling = b.ceiling();
    auto d = b.next();
    CHECK(d >= ceiling / 2);
    CHECK(d <= ceiling);
    ceilings.push_back(ceiling);
  }
  CHECK(ceilings == std::vector<std::chrono::milliseconds>{100ms, 200ms, 400ms, 800ms, 1s, 1s});
  b.reset();
  CHECK(b.ceiling() == 100ms);
  // Different instances spread out.
  esm::util::backoff x(1s, 10s, 1), y(1s, 10s, 2);
  bool differ = false;
  for (int i = 0; i < 5; ++i) differ = differ || x.next() != y.next();
  CHECK(differ);
}
