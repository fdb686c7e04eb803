// A child process for tests that run esmd itself: started with posix_spawn, its stdout and
// stderr in a file, signalled and waited for by its own pid, killed on destruction.
#pragma once

#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <sys/types.h>

namespace esm::test {

class child_process {
 public:
  // `env` replaces the environment entirely (PATH and HOME are kept).
  child_process(std::vector<std::string> argv, std::map<std::string, std::string> env,
                std::string output_path);
  ~child_process();
  child_process(const child_process&) = delete;
  child_process& operator=(const child_process&) = delete;

  pid_t pid() const { return pid_; }
  void signal(int sig);
  // The exit code (or 128 + signal), or nullopt if it is still running after `timeout`.
  std::optional<int> wait(std::chrono::milliseconds timeout);
  // Everything the process wrote so far (stdout and stderr interleaved).
  std::string output() const;
  // Waits until output() contains `text`; false after `timeout`.
  bool wait_for_output(const std::string& text, std::chrono::milliseconds timeout) const;

 private:
  pid_t pid_ = -1;
  std::string output_path_;
  std::optional<int> status_;
};

}  // namespace esm::test
