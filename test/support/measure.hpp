// What the benchmarks measure about processes: CPU time and resident memory from /proc,
// malloc'd bytes, elapsed time. Header-only; Linux.
#pragma once

#include <malloc.h>
#include <sys/types.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>

#include "esm/util/duration.hpp"

namespace esm::test::measure {

inline double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

inline std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

inline std::size_t malloc_in_use() { return mallinfo2().uordblks; }

// Resident bytes of this process (/proc/self/statm, second field).
inline long long self_rss() {
  long long size = 0, resident = 0;
  std::istringstream in(read_file("/proc/self/statm"));
  in >> size >> resident;
  return resident * ::sysconf(_SC_PAGESIZE);
}

// utime + stime of another process, in ms (/proc/PID/stat fields 14 and 15, clock ticks).
inline double proc_cpu_ms(pid_t pid) {
  auto text = read_file("/proc/" + std::to_string(pid) + "/stat");
  auto close = text.rfind(')');
  if (close == std::string::npos) return 0;
  std::istringstream in(text.substr(close + 2));
  std::string field;
  unsigned long long utime = 0, stime = 0;
  for (int i = 3; i <= 15 && in >> field; ++i) {
    if (i == 14) utime = std::stoull(field);
    if (i == 15) stime = std::stoull(field);
  }
  return double(utime + stime) * 1000.0 / double(::sysconf(_SC_CLK_TCK));
}

// VmRSS of another process, in bytes.
inline long long proc_rss(pid_t pid) {
  std::istringstream in(read_file("/proc/" + std::to_string(pid) + "/status"));
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("VmRSS:", 0) == 0) return std::atoll(line.c_str() + 6) * 1024;
  return 0;
}

// A benchmark's duration argument: a bare number is seconds ("10"), else a Go duration
// ("500ms", "1m30s").
inline std::chrono::milliseconds parse_duration(const std::string& s) {
  if (!s.empty() && s.find_first_not_of("0123456789.") == std::string::npos)
    return std::chrono::milliseconds(static_cast<long long>(std::stod(s) * 1000));
  auto d = util::parse_go_duration(s);
  if (!d) throw std::runtime_error("bad duration: " + s);
  return std::chrono::duration_cast<std::chrono::milliseconds>(*d);
}

}  // namespace esm::test::measure
