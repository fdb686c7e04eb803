// Helpers shared by the log tests: a fixed clock, a time zone switch, a temporary directory,
// and a fixture that restores the default logging configuration afterwards.
#pragma once

#include <stdlib.h>
#include <time.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>

#include "esm/log/log.hpp"

namespace esm::log::test {

using namespace std::chrono_literals;

// 2026-11-26T10:20:30.123456789Z
inline std::chrono::system_clock::time_point fixed_time() {
  using namespace std::chrono;
  return sys_days{year{2026} / 11 / 26} + 10h + 20min + 30s + 123456789ns;
}

// Sets TZ for the scope (POSIX rules, so no tzdata is needed).
class time_zone {
 public:
  explicit time_zone(const char* tz) {
    if (const char* old = ::getenv("TZ")) old_ = old, had_ = true;
    ::setenv("TZ", tz, 1);
    ::tzset();
  }
  ~time_zone() {
    if (had_)
      ::setenv("TZ", old_.c_str(), 1);
    else
      ::unsetenv("TZ");
    ::tzset();
  }

 private:
  std::string old_;
  bool had_ = false;
};

class temp_dir {
 public:
  temp_dir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "esm-log-XXXXXX").string();
    path_ = ::mkdtemp(tmpl.data());
  }
  ~temp_dir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

inline std::string read_file(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// Directs the console to a string stream with a settable clock; puts the defaults back when
// the test ends so no later test writes into a finished test's state.
struct capture {
  std::shared_ptr<std::ostringstream> out = std::make_shared<std::ostringstream>();
  std::shared_ptr<std::chrono::system_clock::time_point> now =
      std::make_shared<std::chrono::system_clock::time_point>(fixed_time());
  std::shared_ptr<int> clock_calls = std::make_shared<int>(0);
  time_zone tz{"UTC0"};

  settings make(level min = level::trace) const {
    settings s;
    s.min_level = min;
    s.console = out;
    s.clock = [now = now, calls = clock_calls] {
      ++*calls;
      return *now;
    };
    return s;
  }
  std::string take() {
    std::string s = out->str();
    out->str("");
    return s;
  }
  ~capture() { init(settings{}); }
};

}  // namespace esm::log::test
