#include "esm/config/cli.hpp"

#include <ostream>

#include "esm/config/environment.hpp"

namespace esm::config {
namespace {

[[noreturn]] void flag_error(const std::string& message) {
  throw config_error("error parsing flags: " + message);
}

std::string quoted(std::string_view s) { return "\"" + std::string(s) + "\""; }

bool* bool_flag(cli_options& o, std::string_view name) {
  if (name == "version" || name == "v") return &o.version;
  if (name == "help" || name == "h") return &o.help;
  if (name == "validate") return &o.validate;
  if (name == "healthcheck") return &o.healthcheck;
  return nullptr;
}

}  // namespace

cli_options parse_cli(std::span<const char* const> args) {
  cli_options o;
  std::size_t i = args.empty() ? 0 : 1;
  while (i < args.size()) {
    std::string_view s = args[i] ? args[i] : "";
    // A lone "-" or anything not starting with '-' ends the flags (Go ignores the rest).
    if (s.size() < 2 || s[0] != '-') break;
    std::size_t minuses = 1;
    if (s[1] == '-') {
      minuses = 2;
      if (s.size() == 2) break;  // "--" terminator
    }
    std::string_view name = s.substr(minuses);
    if (name.empty() || name[0] == '-' || name[0] == '=')
      flag_error("bad flag syntax: " + std::string(s));
    ++i;
    std::optional<std::string_view> value;
    if (auto eq = name.find('='); eq != std::string_view::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
    }
    if (bool* b = bool_flag(o, name)) {
      if (!value) {
        *b = true;
      } else if (auto v = parse_go_bool(*value)) {
        *b = *v;
      } else {
        flag_error("invalid boolean value " + quoted(*value) + " for -" + std::string(name) +
                   ": parse error");
      }
      continue;
    }
    if (name != "config-file" && name != "config-dir")
      flag_error("flag provided but not defined: -" + std::string(name));
    if (!value) {
      if (i >= args.size()) flag_error("flag needs an argument: -" + std::string(name));
      value = args[i] ? args[i] : "";
      ++i;
    }
    o.config_paths.emplace_back(*value);
  }
  return o;
}

std::string usage_text() {
  return R"(Usage: esmd [options]

  Runs the External Service Monitor for Consul: health checks and node probes
  for external nodes registered in Consul's catalog. A drop-in replacement for
  consul-esm: same configuration files, environment variables and Consul data.

Options:

  -config-file=<path>  A configuration file (.hcl or .json) or a directory of
                       them. May be repeated; -config-file and -config-dir are
                       processed in command-line order, later files overriding
                       earlier ones key by key.
  -config-dir=<path>   The same as -config-file.
  -validate            Load and validate the configuration (files and CONSUL_*
                       environment), print it as JSON with secrets redacted and
                       exit 0, or print the error and exit 11. Consul is not
                       contacted.
  -healthcheck         Ask the running esmd's admin server (client_address of
                       the configuration named by the other flags and the
                       environment) for /healthz: exit 0 when it answers 200,
                       1 otherwise, with the reason on stderr. For container
                       health checks (HEALTHCHECK, no shell needed).
  -version, -v         Print the version and exit.
  -help, -h            Print this text and exit.
)";
}

std::string version_text(std::string_view version, std::string_view git_commit) {
  auto clean = [](std::string_view s) {
    std::string r;
    for (char c : s)
      if (c != '\'') r += c;
    return r;
  };
  std::string text = "esmd v" + clean(version);
  if (auto commit = clean(git_commit); !commit.empty()) text += " (" + commit + ")";
  return text;
}

std::optional<int> handle_early_flags(const cli_options& cli, std::string_view version,
                                      std::ostream& out, std::ostream& err,
                                      const env_lookup& env) {
  if (cli.help) {
    out << usage_text();
    return 0;
  }
  if (cli.version) {
    out << version << '\n';
    return 0;
  }
  if (!cli.validate) return std::nullopt;
  try {
    config c = load_config(cli.config_paths, env);
    for (const auto& w : c.warnings) err << "warning: " << w << '\n';
    out << to_json(c);
    return 0;
  } catch (const config_error& e) {
    err << e.what() << '\n';
    return exit_code_error;
  }
}

}  // namespace esm::config
