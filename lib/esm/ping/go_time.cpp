#include "esm/ping/go_time.hpp"

#include <cstdint>
#include <limits>

namespace esm::ping {

std::string encode_go_time(sys_nanoseconds t) {
  auto ns = t.time_since_epoch().count();
  // Floor division: a time before 1970 has negative seconds and positive nanoseconds.
  std::int64_t secs = ns / 1'000'000'000;
  std::int64_t frac = ns % 1'000'000'000;
  if (frac < 0) {
    frac += 1'000'000'000;
    secs -= 1;
  }
  auto internal = static_cast<std::uint64_t>(secs + go_unix_to_internal);
  auto nanos = static_cast<std::uint32_t>(frac);
  std::string out(15, '\0');
  out[0] = 1;
  for (int i = 0; i < 8; ++i) out[1 + i] = static_cast<char>(internal >> (56 - 8 * i));
  for (int i = 0; i < 4; ++i) out[9 + i] = static_cast<char>(nanos >> (24 - 8 * i));
  out[13] = static_cast<char>(0xFF);  // offset -1: UTC
  out[14] = static_cast<char>(0xFF);
  return out;
}

std::optional<sys_nanoseconds> decode_go_time(std::string_view b) {
  if (b.empty()) return std::nullopt;
  auto version = static_cast<unsigned char>(b[0]);
  if (!((version == 1 && b.size() == 15) || (version == 2 && b.size() == 16))) return std::nullopt;
  auto byte = [&](std::size_t i) { return static_cast<std::uint64_t>(static_cast<unsigned char>(b[i])); };
  std::uint64_t internal = 0;
  for (std::size_t i = 1; i <= 8; ++i) internal = (internal << 8) | byte(i);
  std::uint32_t nanos = 0;
  for (std::size_t i = 9; i <= 12; ++i) nanos = (nanos << 8) | static_cast<std::uint32_t>(byte(i));
  if (nanos >= 1'000'000'000) return std::nullopt;
  auto secs = static_cast<std::int64_t>(internal);
  // Unix seconds, within what int64 nanoseconds can hold (years 1678-2262).
  constexpr std::int64_t limit = std::numeric_limits<std::int64_t>::max() / 1'000'000'000 - 1;
  if (secs < std::numeric_limits<std::int64_t>::min() + go_unix_to_internal) return std::nullopt;
  auto unix_secs = secs - go_unix_to_internal;
  if (unix_secs > limit || unix_secs < -limit) return std::nullopt;
  return sys_nanoseconds(std::chrono::nanoseconds(unix_secs * 1'000'000'000 + nanos));
}

}  // namespace esm::ping
