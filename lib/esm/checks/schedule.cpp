#include "esm/checks/schedule.hpp"

#include <algorithm>

namespace esm::checks {

run_schedule::clock::time_point run_schedule::spread(clock::time_point now, std::chrono::milliseconds interval) {
  auto us = std::max<std::int64_t>(1, interval.count() * 1000);
  std::uniform_int_distribution<std::int64_t> d(0, us - 1);
  return now + std::chrono::microseconds(d(rng_));
}

void run_schedule::clear() {
  heap_.clear();
  ready_.clear();
}

}  // namespace esm::checks
