// esmd: flags, configuration and logging, then the daemon (lib/esm/daemon) until SIGINT or
// SIGTERM. Exit codes: 0 normal stop, -help, -version, a valid -validate; 11 flag,
// configuration, logging and startup errors (consul-esm's code). -healthcheck exits 0 or 1.
#include <iostream>
#include <span>
#include <string_view>

#include "esm/config/cli.hpp"
#include "esm/config/config.hpp"
#include "esm/daemon/daemon.hpp"
#include "esm/log/log.hpp"
#include "esm/telemetry/health_probe.hpp"
#include "esm/util/heap.hpp"
#include "esmd_version.h"

int main(int argc, char** argv) {
  const auto version = esm::config::version_text(ESMD_VERSION, ESMD_GIT_COMMIT);
  esm::config::config cfg;
  esm::config::cli_options cli;
  try {
    cli = esm::config::parse_cli(std::span<const char* const>(argv, std::size_t(argc)));
    if (auto code = esm::config::handle_early_flags(cli, version, std::cout, std::cerr,
                                                    esm::config::process_environment()))
      return *code;
    cfg = esm::config::load_config(cli.config_paths, esm::config::process_environment());
  } catch (const esm::config::config_error& e) {
    std::cerr << e.what() << "\n";
    // A health check answers 0 or 1 only (Docker reserves other codes), also when its flags
    // did not parse (then `cli` is still empty: look at the arguments).
    bool healthcheck = cli.healthcheck;
    for (int i = 1; i < argc; ++i)
      healthcheck = healthcheck || std::string_view(argv[i]) == "-healthcheck" ||
                    std::string_view(argv[i]) == "--healthcheck";
    return healthcheck ? 1 : esm::config::exit_code_error;
  }
  if (cli.healthcheck) return esm::telemetry::probe_health(cfg.client_address, std::chrono::seconds(3), std::cerr);
  try {
    esm::log::init(esm::config::log_settings(cfg));
  } catch (const std::exception& e) {
    std::cerr << "Error setting up logging: " << e.what() << "\n";
    return esm::config::exit_code_error;
  }
  esm::util::tune_heap();
  return esm::daemon::run(std::move(cfg), cli.config_paths);
}
