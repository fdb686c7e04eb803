// Structured logging for esmd. Callers pass a message and key/value fields; the sinks
// (console, file, syslog; text or JSON) are configured once by init() and the level can be
// changed at run time (SIGHUP). Never pass a token or other secret as a field.
#pragma once

#include <chrono>
#include <concepts>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>

#include <boost/system/error_code.hpp>

namespace esm::log {

enum class level : int { trace = 0, debug = 1, info = 2, warn = 3, error = 4 };

// Case-insensitive TRACE, DEBUG, INFO, WARN, ERR, ERROR.
std::optional<level> parse_level(std::string_view text);
std::string_view level_name(level l);  // "TRACE", "DEBUG", "INFO", "WARN", "ERROR"

// One key=value pair of a log line. Values are rendered to text when the field is built.
struct field {
  std::string_view key;
  std::string value;

  field(std::string_view k, std::string_view v) : key(k), value(v) {}
  field(std::string_view k, const char* v) : key(k), value(v) {}
  field(std::string_view k, std::string v) : key(k), value(std::move(v)) {}
  field(std::string_view k, bool v) : key(k), value(v ? "true" : "false") {}
  template <std::integral T>
    requires(!std::same_as<T, bool>)
  field(std::string_view k, T v) : key(k), value(std::to_string(v)) {}
  field(std::string_view k, double v);
  field(std::string_view k, std::chrono::nanoseconds v);  // Go duration text
  template <class Rep, class Period>
    requires(!std::same_as<std::chrono::duration<Rep, Period>, std::chrono::nanoseconds>)
  field(std::string_view k, std::chrono::duration<Rep, Period> v)
      : field(k, std::chrono::duration_cast<std::chrono::nanoseconds>(v)) {}
  field(std::string_view k, const boost::system::error_code& ec) : key(k), value(ec.message()) {}
};

struct settings {
  level min_level = level::info;
  bool json = false;
  std::string name = "esmd";  // @module / the name after the level
  std::string file;           // log_file; empty: console only
  std::int64_t rotate_bytes = 0;
  std::chrono::nanoseconds rotate_duration{0};  // 0 with a file: 24h
  int rotate_max_files = 0;
  bool syslog = false;
  std::string syslog_facility;  // "" means LOCAL0, as Consul
};

// Sets up the sinks. Throws std::runtime_error with a clear message (naming the file or
// facility at fault) when a sink cannot be used. May be called again to reconfigure.
void init(const settings& s);
void set_level(level l);
level current_level();
bool enabled(level l);

void write(level l, std::string_view message, std::initializer_list<field> fields = {});

inline void trace(std::string_view m, std::initializer_list<field> f = {}) { write(level::trace, m, f); }
inline void debug(std::string_view m, std::initializer_list<field> f = {}) { write(level::debug, m, f); }
inline void info(std::string_view m, std::initializer_list<field> f = {}) { write(level::info, m, f); }
inline void warn(std::string_view m, std::initializer_list<field> f = {}) { write(level::warn, m, f); }
inline void error(std::string_view m, std::initializer_list<field> f = {}) { write(level::error, m, f); }

}  // namespace esm::log
