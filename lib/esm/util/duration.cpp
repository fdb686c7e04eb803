#include "esm/util/duration.hpp"

#include <cstdint>
#include <limits>

namespace esm::util {
namespace {

constexpr std::uint64_t max_ns = std::uint64_t(std::numeric_limits<std::int64_t>::max());

std::optional<std::uint64_t> unit_ns(std::string_view u) {
  if (u == "ns") return 1;
  if (u == "us" || u == "\xC2\xB5s" /* µ U+00B5 */ || u == "\xCE\xBCs" /* μ U+03BC */)
    return 1'000;
  if (u == "ms") return 1'000'000;
  if (u == "s") return 1'000'000'000;
  if (u == "m") return 60'000'000'000;
  if (u == "h") return 3'600'000'000'000;
  return std::nullopt;
}

bool fail(std::string* error, std::string msg) {
  if (error) *error = std::move(msg);
  return false;
}

std::string quote(std::string_view s) { return "\"" + std::string(s) + "\""; }

}  // namespace

std::optional<std::chrono::nanoseconds> parse_go_duration(std::string_view orig,
                                                          std::string* error) {
  std::string_view s = orig;
  bool neg = false;
  if (!s.empty() && (s.front() == '-' || s.front() == '+')) {
    neg = s.front() == '-';
    s.remove_prefix(1);
  }
  if (s == "0") return std::chrono::nanoseconds{0};
  if (s.empty()) {
    fail(error, "time: invalid duration " + quote(orig));
    return std::nullopt;
  }
  std::uint64_t total = 0;
  while (!s.empty()) {
    // Integer part.
    std::uint64_t v = 0;
    bool pre = false, overflow = false;
    while (!s.empty() && s.front() >= '0' && s.front() <= '9') {
      pre = true;
      if (v > (max_ns - 9) / 10) overflow = true;
      else v = v * 10 + std::uint64_t(s.front() - '0');
      s.remove_prefix(1);
    }
    if (overflow) {
      fail(error, "time: invalid duration " + quote(orig));
      return std::nullopt;
    }
    // Fraction: keep digits while they still add precision, like Go's leadingFraction.
    std::uint64_t frac = 0;
    double scale = 1;
    bool post = false;
    if (!s.empty() && s.front() == '.') {
      s.remove_prefix(1);
      bool frac_overflow = false;
      while (!s.empty() && s.front() >= '0' && s.front() <= '9') {
        post = true;
        if (!frac_overflow) {
          if (frac > (max_ns - 9) / 10) frac_overflow = true;
          else {
            frac = frac * 10 + std::uint64_t(s.front() - '0');
            scale *= 10;
          }
        }
        s.remove_prefix(1);
      }
    }
    if (!pre && !post) {
      fail(error, "time: invalid duration " + quote(orig));
      return std::nullopt;
    }
    // Unit: everything up to the next digit or '.'.
    std::size_t i = 0;
    while (i < s.size() && s[i] != '.' && !(s[i] >= '0' && s[i] <= '9')) ++i;
    if (i == 0) {
      fail(error, "time: missing unit in duration " + quote(orig));
      return std::nullopt;
    }
    auto unit = unit_ns(s.substr(0, i));
    if (!unit) {
      fail(error, "time: unknown unit " + quote(s.substr(0, i)) + " in duration " + quote(orig));
      return std::nullopt;
    }
    s.remove_prefix(i);
    if (v > max_ns / *unit) {
      fail(error, "time: invalid duration " + quote(orig));
      return std::nullopt;
    }
    v *= *unit;
    if (frac > 0) {
      v += std::uint64_t(double(frac) * (double(*unit) / scale));
      if (v > max_ns) {
        fail(error, "time: invalid duration " + quote(orig));
        return std::nullopt;
      }
    }
    total += v;
    if (total > max_ns) {
      fail(error, "time: invalid duration " + quote(orig));
      return std::nullopt;
    }
  }
  auto n = std::int64_t(total);
  return std::chrono::nanoseconds{neg ? -n : n};
}

namespace {

// Writes v's fractional digits (prec of them) with trailing zeros removed, after a '.',
// and returns v / 10^prec, as Go's fmtFrac.
std::uint64_t append_frac(std::string& out, std::uint64_t v, int prec) {
  std::string digits;
  bool print = false;
  for (int i = 0; i < prec; ++i) {
    auto digit = v % 10;
    print = print || digit != 0;
    if (print) digits.insert(digits.begin(), char('0' + digit));
    v /= 10;
  }
  if (print) out = "." + digits + out;
  return v;
}

}  // namespace

std::string format_go_duration(std::chrono::nanoseconds d) {
  std::int64_t n = d.count();
  if (n == 0) return "0s";
  bool neg = n < 0;
  std::uint64_t u = neg ? std::uint64_t(0) - std::uint64_t(n) : std::uint64_t(n);
  std::string out;  // built right to left, like Go
  if (u < 1'000'000'000) {
    int prec = 0;
    if (u < 1'000) {
      out = "ns";
    } else if (u < 1'000'000) {
      prec = 3;
      out = "\xC2\xB5s";
    } else {
      prec = 6;
      out = "ms";
    }
    u = append_frac(out, u, prec);
    out = std::to_string(u) + out;
  } else {
    out = "s";
    u = append_frac(out, u, 9);
    out = std::to_string(u % 60) + out;
    u /= 60;
    if (u > 0) {
      out = std::to_string(u % 60) + "m" + out;
      u /= 60;
      if (u > 0) out = std::to_string(u) + "h" + out;
    }
  }
  return neg ? "-" + out : out;
}

}  // namespace esm::util
