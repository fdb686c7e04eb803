#include "esm/checks/schedule.hpp"

#include <algorithm>

namespace esm::checks {

namespace {

bool later(const run_schedule::entry& a, const run_schedule::entry& b) { return a.due > b.due; }

}  // namespace

run_schedule::clock::time_point run_schedule::spread(clock::time_point now, std::chrono::milliseconds interval) {
  auto us = std::max<std::int64_t>(1, interval.count() * 1000);
  std::uniform_int_distribution<std::int64_t> d(0, us - 1);
  return now + std::chrono::microseconds(d(rng_));
}

bool run_schedule::push(const entry& e) {
  bool earliest = heap_.empty() || e.due < heap_.front().due;
  heap_.push_back(e);
  std::push_heap(heap_.begin(), heap_.end(), later);
  return earliest;
}

std::optional<run_schedule::clock::time_point> run_schedule::next_due() const {
  if (heap_.empty()) return std::nullopt;
  return heap_.front().due;
}

std::optional<run_schedule::entry> run_schedule::pop_due(clock::time_point now) {
  if (heap_.empty() || heap_.front().due > now) return std::nullopt;
  std::pop_heap(heap_.begin(), heap_.end(), later);
  auto e = heap_.back();
  heap_.pop_back();
  return e;
}

std::optional<std::uint32_t> run_schedule::take_ready() {
  if (in_flight_ >= max_concurrent_ || ready_.empty()) return std::nullopt;
  auto i = ready_.front();
  ready_.pop_front();
  return i;
}

void run_schedule::clear() {
  heap_.clear();
  ready_.clear();
}

}  // namespace esm::checks
