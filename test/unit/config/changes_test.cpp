#include <doctest/doctest.h>

#include <boost/json/parse.hpp>

#include <algorithm>

#include "esm/config/config.hpp"
#include "helpers.hpp"

using namespace std::chrono_literals;
using namespace esm::config;
using esm::config::test::fake_env;
using esm::config::test::load_text;
using esm::config::test::temp_dir;

TEST_CASE("describe_changes: nothing changed") {
  temp_dir d;
  auto f = d.write("a.hcl", "instance_id = \"i\"");
  CHECK(describe_changes(load_config({f}, fake_env()), load_config({f}, fake_env())).empty());
}

TEST_CASE("describe_changes: names changed keys, nested ones with a dotted path") {
  config a, b;
  a.instance_id = b.instance_id = "i";
  b.log_level = "DEBUG";
  b.telemetry.statsd_address = "s:1";
  b.session_ttl = 40s;
  b.token = "new-secret";
  b.external_node_meta = {{"x", "y"}};
  b.consul.address = "other:8500";
  auto changes = describe_changes(a, b);
  // In the order of the -validate output.
  CHECK(changes == std::vector<std::string>{"log_level", "external_node_meta", "token",
                                            "telemetry.statsd_address", "session_ttl",
                                            "consul.address"});
}

TEST_CASE("applies_at_runtime: only log_level") {
  CHECK(applies_at_runtime("log_level"));
  CHECK_FALSE(applies_at_runtime("log_json"));
  CHECK_FALSE(applies_at_runtime("session_ttl"));
  CHECK_FALSE(applies_at_runtime("telemetry.statsd_address"));
}

TEST_CASE("reload_config keeps the instance id unless a file sets one") {
  temp_dir d;
  auto f = d.write("a.hcl", "log_level = \"INFO\"");
  auto first = load_config({f}, fake_env());
  d.write("a.hcl", "log_level = \"DEBUG\"");
  auto second = reload_config({f}, fake_env(), first);
  CHECK(second.instance_id == first.instance_id);
  auto changes = describe_changes(first, second);
  CHECK(changes == std::vector<std::string>{"log_level"});
  CHECK(std::all_of(changes.begin(), changes.end(), applies_at_runtime));
  d.write("a.hcl", "instance_id = \"fixed\"");
  CHECK(reload_config({f}, fake_env(), first).instance_id == "fixed");
}

TEST_CASE("to_json: valid JSON with every key, durations in Go form, empty secrets stay empty") {
  auto c = load_text("");
  auto text = to_json(c);
  auto v = boost::json::parse(text);
  const auto& o = v.as_object();
  CHECK(o.at("log_level").as_string() == "INFO");
  CHECK(o.at("node_probe_interval").as_string() == "10s");
  CHECK(o.at("check_update_interval").as_string() == "5m0s");
  CHECK(o.at("token").as_string() == "");
  CHECK(o.at("passing_threshold").as_int64() == 0);
  CHECK(o.at("external_node_meta").as_object().at("external-node").as_string() == "true");
  CHECK(o.at("telemetry").as_object().at("dogstatsd_tags").as_array().empty());
  CHECK(o.at("consul").as_object().at("address").as_string() == "127.0.0.1:8500");
  CHECK(o.at("consul").as_object().at("tls_verify").as_bool());
  // 49 keys, the external_node_meta and telemetry blocks, and the effective "consul" block.
  CHECK(o.size() == 52);
}
