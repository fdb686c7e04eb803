// The log file with Consul's rotation rules (consul-esm uses Consul's logging package):
// the active file keeps its configured name and is appended to; when it has reached
// `max_bytes` or is `duration` old, it is renamed to `<stem>-<unix nanoseconds><ext>` (ext
// ".log" when the name has none) and a new active file is started; then archives beyond
// `max_archives` are deleted (0 keeps all, -1 deletes all, N keeps the N newest).
//
// Differences from Consul, all deliberate: the size of an existing file counts towards
// max_bytes after a restart (Consul starts at 0, so a daemon restarted often never
// rotates by size); only names whose middle part is all digits count as archives (Consul's
// glob would also delete e.g. "consul-old.log"); a failed rotation does not lose records
// (the active file is reopened and the failure reported once on stderr).
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace esm::log::detail {

// log_file as configured -> the active file: a value ending with '/' names a directory,
// in which default_file_name is used.
std::filesystem::path resolve_log_file_path(std::string_view configured);

class rotating_file {
 public:
  using clock_fn = std::function<std::chrono::system_clock::time_point()>;

  struct options {
    std::filesystem::path path;
    std::int64_t max_bytes = 0;  // <= 0: no size rotation
    std::chrono::nanoseconds duration = std::chrono::hours(24);  // <= 0: 24h
    int max_archives = 0;
    clock_fn clock;  // empty: system_clock::now
  };

  // Prunes archives and opens the active file. Throws std::runtime_error naming log_file
  // and the path, e.g. `log_file: cannot open "/x/y.log": No such file or directory`.
  explicit rotating_file(options o);
  ~rotating_file();
  rotating_file(const rotating_file&) = delete;
  rotating_file& operator=(const rotating_file&) = delete;

  // Writes one formatted record, rotating first when due. Never throws.
  void write(std::string_view data);

  // Archives of this file, oldest first.
  std::vector<std::filesystem::path> archives() const;
  const std::filesystem::path& path() const { return opts_.path; }

 private:
  std::chrono::system_clock::time_point now() const;
  void open();  // throws std::system_error
  void rotate();
  void prune();
  void report(std::string_view what, int err);

  options opts_;
  std::string stem_;  // file name without extension, then "-"
  std::string ext_;   // extension with its dot; ".log" when the name has none
  int fd_ = -1;
  std::int64_t bytes_ = 0;
  std::chrono::system_clock::time_point created_;
  bool reported_ = false;
};

}  // namespace esm::log::detail
