// Renderings of one log record, byte-compatible with go-hclog as consul-esm configures it,
// and the Go quoting rules they rely on. Pure functions without Boost.Log, so the sinks in
// log.cpp and the tests share them.
#pragma once

#include <chrono>
#include <span>
#include <string>
#include <string_view>

#include "esm/log/log.hpp"

namespace esm::log::detail {

struct record {
  level lvl;
  std::chrono::system_clock::time_point time;
  std::string_view name;
  std::string_view message;
  std::span<const field> fields;
};

// Local time (TZ) with hclog's layouts: text "2006-01-02T15:04:05.000Z0700",
// JSON "2006-01-02T15:04:05.000000Z07:00". Fractions are truncated, as Go does.
void append_text_time(std::string& out, std::chrono::system_clock::time_point t);
void append_json_time(std::string& out, std::chrono::system_clock::time_point t);

// "[INFO] ", "[WARN] ", "[DEBUG]", "[TRACE]", "[ERROR]".
std::string_view level_bracket(level l);
std::string_view json_level_name(level l);  // "info", "warn", ...

// One text line with its newline. `header` false leaves out time, level and name: the form
// sent to syslog, which carries those itself.
void append_text(std::string& out, const record& r, bool header = true);
// One JSON object with its newline: keys in byte order (Go marshals a map), a field named
// like a header key replaces it (as in hclog), invalid UTF-8 becomes U+FFFD.
void append_json(std::string& out, const record& r);

// A field value as hclog prints it: unquoted when every byte is in '-'..'~', `""` when
// empty, else double-quoted with hclog's escapes. Unlike hclog, a value with a newline is
// escaped on the same line instead of being spread over indented lines, so one record is
// always one line for grep and log shippers.
void append_text_value(std::string& out, std::string_view v);

// Go's strconv.Quote (fmt's %q for strings).
std::string go_quote(std::string_view s);

// Go's %v for float64 ("1.5", "1e+06") and encoding/json's number form ("1000000").
std::string go_float_text(double v);
std::string go_float_json(double v);

// Go's unicode.IsPrint, approximated without Unicode tables: controls, spaces other than
// U+0020, common format characters, surrogates, private use and noncharacters are not
// printable; unassigned code points count as printable.
bool go_is_print(char32_t r);

}  // namespace esm::log::detail
