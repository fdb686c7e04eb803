// Go's time.Duration text form: consul-esm's configuration and Consul's check definitions
// both use it ("300ms", "1h2m3.5s", "72h0m0s").
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <string_view>

namespace esm::util {

// Parses like Go's time.ParseDuration: an optional sign, then one or more decimal numbers
// (with optional fraction) each followed by a unit (ns, us, µs, μs, ms, s, m, h). "0" alone is
// zero. On failure returns nullopt and, if `error` is given, stores Go's message, e.g.
// `time: invalid duration "1d"`.
std::optional<std::chrono::nanoseconds> parse_go_duration(std::string_view text,
                                                          std::string* error = nullptr);

// Formats like Go's Duration.String(): "0s", "1.5µs", "300ms", "45s", "1m0s", "72h0m0s".
std::string format_go_duration(std::chrono::nanoseconds d);

}  // namespace esm::util
