#include <doctest/doctest.h>

#include <sstream>

#include "esm/config/cli.hpp"
#include "helpers.hpp"

using namespace esm::config;
using esm::config::test::error_of;
using esm::config::test::fake_env;
using esm::config::test::temp_dir;

namespace {

cli_options parse(std::vector<const char*> args) {
  args.insert(args.begin(), "esmd");
  return parse_cli(args);
}

bool contains(const std::string& s, std::string_view part) {
  return s.find(part) != std::string::npos;
}

}  // namespace

TEST_CASE("cli: no arguments") {
  auto o = parse({});
  CHECK(o.config_paths.empty());
  CHECK_FALSE(o.version);
  CHECK_FALSE(o.help);
  CHECK_FALSE(o.validate);
  CHECK(parse_cli(std::span<const char* const>{}).config_paths.empty());
}

TEST_CASE("cli: -config-file and -config-dir feed one list in order, every spelling") {
  auto o = parse({"-config-file", "a.hcl", "--config-dir=d1", "-config-file=b.json",
                  "--config-dir", "d2", "-config-file="});
  CHECK(o.config_paths == std::vector<std::string>{"a.hcl", "d1", "b.json", "d2", ""});
}

TEST_CASE("cli: boolean flags") {
  CHECK(parse({"-version"}).version);
  CHECK(parse({"-v"}).version);
  CHECK(parse({"--version"}).version);
  CHECK(parse({"-h"}).help);
  CHECK(parse({"--help"}).help);
  CHECK(parse({"-validate"}).validate);
  CHECK(parse({"-validate=true"}).validate);
  CHECK_FALSE(parse({"-validate=false"}).validate);
  CHECK(parse({"-validate=1"}).validate);
  CHECK(parse({"-healthcheck"}).healthcheck);
  CHECK_FALSE(parse({"-validate"}).healthcheck);
  auto h = parse({"-healthcheck", "-config-dir=/etc/esmd"});
  CHECK(h.healthcheck);
  CHECK(h.config_paths == std::vector<std::string>{"/etc/esmd"});
  // A boolean flag never takes the next argument as its value.
  auto o = parse({"-validate", "false", "-version"});
  CHECK(o.validate);
  CHECK_FALSE(o.version);  // "false" ended the flags
}

TEST_CASE("cli: flag parsing stops at the first non-flag, '-' or '--'") {
  CHECK(parse({"pos", "-version"}).version == false);
  CHECK(parse({"-", "-version"}).version == false);
  auto o = parse({"-config-file=a.hcl", "--", "-config-file=b.hcl"});
  CHECK(o.config_paths == std::vector<std::string>{"a.hcl"});
}

TEST_CASE("cli: errors use Go's flag messages after 'error parsing flags: '") {
  CHECK(error_of([] { parse({"-bogus"}); }) ==
        "error parsing flags: flag provided but not defined: -bogus");
  CHECK(error_of([] { parse({"--bogus=1"}); }) ==
        "error parsing flags: flag provided but not defined: -bogus");
  CHECK(error_of([] { parse({"-config-file"}); }) ==
        "error parsing flags: flag needs an argument: -config-file");
  CHECK(error_of([] { parse({"-version=maybe"}); }) ==
        "error parsing flags: invalid boolean value \"maybe\" for -version: parse error");
  CHECK(error_of([] { parse({"---x"}); }) == "error parsing flags: bad flag syntax: ---x");
  CHECK(error_of([] { parse({"-=x"}); }) == "error parsing flags: bad flag syntax: -=x");
}

TEST_CASE("cli: version text") {
  CHECK(version_text("0.1.0", "abc1234") == "esmd v0.1.0 (abc1234)");
  CHECK(version_text("0.1.0", "") == "esmd v0.1.0");
  CHECK(version_text("'0.1.0'", "'abc'") == "esmd v0.1.0 (abc)");
}

TEST_CASE("cli: -help and -version print and exit 0; nothing else exits early") {
  std::ostringstream out, err;
  auto env = fake_env();
  cli_options help;
  help.help = true;
  CHECK(handle_early_flags(help, "esmd v1", out, err, env) == 0);
  CHECK(out.str() == usage_text());
  CHECK(contains(out.str(), "-config-dir"));
  CHECK(contains(out.str(), "-validate"));
  out.str("");
  cli_options version;
  version.version = true;
  CHECK(handle_early_flags(version, "esmd v1 (abc)", out, err, env) == 0);
  CHECK(out.str() == "esmd v1 (abc)\n");
  CHECK(handle_early_flags(cli_options{}, "esmd v1", out, err, env) == std::nullopt);
  CHECK(err.str().empty());
}

TEST_CASE("cli: -validate prints the effective configuration with secrets redacted") {
  temp_dir d;
  auto f = d.write("esm.hcl", R"(
token = "super-secret-token"
telemetry { circonus_api_token = "circ-secret" prefix_filter = ["bad"] }
consul_service = "svc"
)");
  cli_options o;
  o.validate = true;
  o.config_paths = {f};
  std::ostringstream out, err;
  auto code = handle_early_flags(o, "v", out, err,
                                 fake_env({{"CONSUL_HTTP_AUTH", "user:pw-secret"}}));
  CHECK(code == 0);
  auto json = out.str();
  CHECK(contains(json, "\"consul_service\": \"svc\""));
  CHECK(contains(json, "\"token\": \"<redacted>\""));
  CHECK(contains(json, "\"circonus_api_token\": \"<redacted>\""));
  CHECK(contains(json, "\"http_auth\": \"<redacted>\""));
  CHECK(contains(json, "\"node_reconnect_timeout\": \"72h0m0s\""));
  CHECK_FALSE(contains(json, "super-secret-token"));
  CHECK_FALSE(contains(json, "circ-secret"));
  CHECK_FALSE(contains(json, "pw-secret"));
  CHECK_FALSE(contains(err.str(), "secret"));
  CHECK(contains(err.str(), "warning: "));  // the bad prefix rule
}

TEST_CASE("cli: -validate on a bad configuration prints the error and returns 11") {
  temp_dir d;
  auto f = d.write("esm.hcl", "ping_type = \"tcp\"\ntoken = \"super-secret-token\"");
  cli_options o;
  o.validate = true;
  o.config_paths = {f};
  std::ostringstream out, err;
  CHECK(handle_early_flags(o, "v", out, err, fake_env()) == exit_code_error);
  CHECK(exit_code_error == 11);
  CHECK(out.str().empty());
  CHECK(err.str() == "Error parsing config: " + f +
                         ":1:1: ping_type must be one of either \"udp\" or \"socket\"\n");
}
