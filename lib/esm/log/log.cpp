// Minimal console implementation; replaced by the Boost.Log sinks.
#include "esm/log/log.hpp"

#include <cstdio>
#include <ctime>

#include "esm/util/duration.hpp"

namespace esm::log {
namespace {
level g_level = level::info;
}

field::field(std::string_view k, double v) : key(k), value(std::to_string(v)) {}
field::field(std::string_view k, std::chrono::nanoseconds v)
    : key(k), value(util::format_go_duration(v)) {}

std::optional<level> parse_level(std::string_view t) {
  std::string u;
  for (char c : t) u += char(c >= 'a' && c <= 'z' ? c - 32 : c);
  if (u == "TRACE") return level::trace;
  if (u == "DEBUG") return level::debug;
  if (u == "INFO") return level::info;
  if (u == "WARN") return level::warn;
  if (u == "ERR" || u == "ERROR") return level::error;
  return std::nullopt;
}

std::string_view level_name(level l) {
  static constexpr std::string_view names[] = {"TRACE", "DEBUG", "INFO", "WARN", "ERROR"};
  return names[int(l)];
}

void init(const settings& s) { g_level = s.min_level; }
void set_level(level l) { g_level = l; }
level current_level() { return g_level; }
bool enabled(level l) { return l >= g_level; }

void write(level l, std::string_view message, std::initializer_list<field> fields) {
  if (!enabled(l)) return;
  std::string line = "[" + std::string(level_name(l)) + "] esmd: " + std::string(message);
  if (fields.size() != 0) line += ":";
  for (auto& f : fields) line += " " + std::string(f.key) + "=" + f.value;
  std::fprintf(stdout, "%s\n", line.c_str());
  std::fflush(stdout);
}

}  // namespace esm::log
