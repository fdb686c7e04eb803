// Structured logging for esmd. Callers pass a message and key/value fields; the sinks
// (console, file, syslog; text or JSON) are configured once by init() and the level can be
// changed at run time (SIGHUP).
//
// The output reproduces what consul-esm's go-hclog writes, so operators' parsers keep working:
//   2026-11-26T10:20:30.123Z [INFO]  esmd: message: key=value other="with spaces"
//   {"@level":"info","@message":"message","@module":"esmd","@timestamp":"...","key":"value"}
// Timestamps are local time with the zone offset (as hclog; "Z" when the offset is zero, which
// is what containers without TZ show).
//
// Secrets: this library has no field type for tokens and never logs configuration; callers
// must never pass an ACL token, a TLS key or a password as a field or inside a message. The
// logger cannot tell a secret from any other string, so this is a rule for every call site.
//
// Thread safety: write() may be called from any thread; init() may be called while other
// threads log (the sinks are swapped as a whole). set_level() takes effect for the next call.
#pragma once

#include <chrono>
#include <concepts>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <iosfwd>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include <boost/system/error_code.hpp>

namespace esm::log {

enum class level : int { trace = 0, debug = 1, info = 2, warn = 3, error = 4 };

// Case-insensitive TRACE, DEBUG, INFO, WARN, ERR, ERROR.
std::optional<level> parse_level(std::string_view text);
std::string_view level_name(level l);  // "TRACE", "DEBUG", "INFO", "WARN", "ERROR"

// How a field's value is typed in JSON output (hclog keeps Go's types: numbers stay numbers).
enum class field_kind : unsigned char { string, integer, boolean, real };

// One key=value pair of a log line. Values are rendered to text when the field is built.
struct field {
  std::string_view key;
  std::string value;  // the text form, as hclog prints it in text mode
  field_kind kind = field_kind::string;
  double real = 0;  // kind == real only: JSON renders the number, not the text

  field(std::string_view k, std::string_view v) : key(k), value(v) {}
  field(std::string_view k, const char* v) : key(k), value(v) {}
  field(std::string_view k, std::string v) : key(k), value(std::move(v)) {}
  field(std::string_view k, bool v)
      : key(k), value(v ? "true" : "false"), kind(field_kind::boolean) {}
  template <std::integral T>
    requires(!std::same_as<T, bool>)
  field(std::string_view k, T v) : key(k), value(std::to_string(v)), kind(field_kind::integer) {}
  field(std::string_view k, double v);                    // Go %v text ("1.5", "1e+06")
  // Go duration text ("1m30s"), also in JSON, where hclog would write Go's integer
  // nanoseconds: the text is what operators read and what the config files use.
  field(std::string_view k, std::chrono::nanoseconds v);
  template <class Rep, class Period>
    requires(!std::same_as<std::chrono::duration<Rep, Period>, std::chrono::nanoseconds>)
  field(std::string_view k, std::chrono::duration<Rep, Period> v)
      : field(k, std::chrono::duration_cast<std::chrono::nanoseconds>(v)) {}
  field(std::string_view k, const boost::system::error_code& ec) : key(k), value(ec.message()) {}
};

// When log_file ends with '/', the file inside that directory. consul-esm inherited Consul's
// "consul.log"; esmd keeps it so log shippers configured for consul-esm still find the file.
inline constexpr std::string_view default_file_name = "consul.log";

struct settings {
  level min_level = level::info;
  bool json = false;
  std::string name = "esmd";  // @module / the name after the level
  std::string file;           // log_file; empty: console only
  std::int64_t rotate_bytes = 0;                // log_rotate_bytes; <= 0: no size rotation
  std::chrono::nanoseconds rotate_duration{0};  // log_rotate_duration; <= 0 with a file: 24h
  int rotate_max_files = 0;  // log_rotate_max_files: 0 keep all archives, -1 none, N newest N
  bool syslog = false;          // enable_syslog
  std::string syslog_facility;  // "" means LOCAL0, as Consul

  // Test hooks. `console` replaces stdout; `clock` replaces system_clock::now for timestamps
  // and file rotation; `syslog_socket` replaces the usual /dev/log, /var/run/syslog,
  // /var/run/log search.
  std::shared_ptr<std::ostream> console;
  std::function<std::chrono::system_clock::time_point()> clock;
  std::string syslog_socket;
};

// Sets up the sinks. Throws std::runtime_error with a clear message naming the key and the
// file or facility at fault when a sink cannot be used, e.g.
//   log_file: cannot open "/nonexistent/x.log": No such file or directory
// May be called again to reconfigure; on failure the previous configuration stays in place.
// Without init(), records go to stdout in text form at INFO.
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

// For hot paths: the fields are only built when the level is enabled, e.g.
//   ESM_LOG_TRACE("probe done", {{"check", id}, {"output", out}});
// The plain functions above build their fields before the level can be checked.
#define ESM_LOG_AT(lvl, ...)                                             \
  do {                                                                   \
    if (::esm::log::enabled(lvl)) ::esm::log::write(lvl, __VA_ARGS__);   \
  } while (false)
#define ESM_LOG_TRACE(...) ESM_LOG_AT(::esm::log::level::trace, __VA_ARGS__)
#define ESM_LOG_DEBUG(...) ESM_LOG_AT(::esm::log::level::debug, __VA_ARGS__)
