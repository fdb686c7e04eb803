// esmd's command line, with Go `flag` semantics as consul-esm's: `-x` or `--x`, `-x=v` or
// `-x v`; parsing stops at the first non-flag argument or at `--`.
#pragma once

#include <iosfwd>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "esm/config/config.hpp"

namespace esm::config {

struct cli_options {
  // -config-file and -config-dir, in command-line order (either may name a file or a directory).
  std::vector<std::string> config_paths;
  bool version = false;   // -version, -v
  bool help = false;      // -help, -h
  bool validate = false;  // -validate
  bool healthcheck = false;  // -healthcheck: probe the own /healthz (app/main.cpp)
};

// `args` is argv as main() receives it (args[0], the program name, is skipped).
// Throws config_error("error parsing flags: ...").
cli_options parse_cli(std::span<const char* const> args);

std::string usage_text();

// "esmd v<version> (<commit>)", without the parenthesis when the commit is unknown. Single
// quotes are dropped, as consul-esm does for its build-time values.
std::string version_text(std::string_view version, std::string_view git_commit);

// Handles -help, -version and -validate completely. Returns the exit code when the process
// should exit now, nullopt to go on and run the daemon. -validate loads the configuration
// (files and environment, never contacting Consul), prints it as JSON with secrets redacted to
// `out` and returns 0, or prints the error to `err` and returns exit_code_error.
std::optional<int> handle_early_flags(const cli_options& cli, std::string_view version_text,
                                      std::ostream& out, std::ostream& err,
                                      const env_lookup& env);

}  // namespace esm::config
