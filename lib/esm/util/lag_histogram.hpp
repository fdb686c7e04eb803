// Lateness of scheduled work (a check run, a ping) against its due time, in 1 ms buckets up to
// 10 s: exact percentiles for benchmarks and the status page without keeping samples.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace esm::util {

struct lag_histogram {
  static constexpr std::size_t buckets = 10'001;  // last: 10 s and more
  std::vector<std::uint64_t> counts = std::vector<std::uint64_t>(buckets, 0);
  std::uint64_t total = 0;

  void add(std::chrono::steady_clock::duration lag) {
    auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(lag).count();
    if (ms < 0) ms = 0;
    auto b = std::min<std::size_t>(static_cast<std::size_t>(ms), buckets - 1);
    ++counts[b];
    ++total;
  }
  // The smallest bucket bound (ms) at or below which a fraction q of the samples lies.
  double quantile_ms(double q) const {
    if (total == 0) return 0;
    auto want = static_cast<std::uint64_t>(q * static_cast<double>(total));
    if (want == 0) want = 1;
    std::uint64_t seen = 0;
    for (std::size_t b = 0; b < buckets; ++b) {
      seen += counts[b];
      if (seen >= want) return static_cast<double>(b + 1);  // the bucket's upper bound
    }
    return static_cast<double>(buckets);
  }
  void clear() {
    std::fill(counts.begin(), counts.end(), 0);
    total = 0;
  }
};

}  // namespace esm::util
