// Capped exponential backoff with jitter (decisions only; unit-tested with a fixed random
// source). consul/retry.hpp and every retry loop sleep the delays it gives.
#pragma once

#include <chrono>
#include <cstdint>
#include <random>

namespace esm::util {

class backoff {
 public:
  backoff(std::chrono::milliseconds base, std::chrono::milliseconds cap,
          std::uint64_t seed = std::random_device{}())
      : base_(base), cap_(cap), rng_(seed) {}

  // The next delay: uniformly random in [d/2, d] with d = min(cap, base * 2^attempt)
  // ("equal jitter"), so retries of many instances spread out but never exceed the cap.
  std::chrono::milliseconds next() {
    auto d = ceiling();
    if (attempt_ < 62) ++attempt_;
    std::uniform_int_distribution<std::int64_t> dist(d.count() / 2, d.count());
    return std::chrono::milliseconds(dist(rng_));
  }
  // The upper bound of the next delay.
  std::chrono::milliseconds ceiling() const {
    auto d = base_;
    for (unsigned i = 0; i < attempt_ && d < cap_; ++i) d *= 2;
    return d < cap_ ? d : cap_;
  }
  void reset() { attempt_ = 0; }
  unsigned attempts() const { return attempt_; }

 private:
  std::chrono::milliseconds base_, cap_;
  unsigned attempt_ = 0;
  std::mt19937_64 rng_;
};

}  // namespace esm::util
