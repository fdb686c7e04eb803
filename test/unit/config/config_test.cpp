#include <doctest/doctest.h>

#include <sys/resource.h>

#include <algorithm>
#include <string>

#include "esm/config/config.hpp"
#include "helpers.hpp"

using namespace std::chrono_literals;
using namespace esm::config;
using esm::config::test::error_of;
using esm::config::test::fake_env;
using esm::config::test::load_text;
using esm::config::test::temp_dir;

namespace {

bool contains(const std::string& s, std::string_view part) {
  return s.find(part) != std::string::npos;
}

}  // namespace

TEST_CASE("defaults: every key has consul-esm's default (or esmd's documented one)") {
  config c = load_config({}, fake_env());
  CHECK(c.log_level == "INFO");
  CHECK_FALSE(c.log_json);
  CHECK(c.log_file.empty());
  CHECK(c.log_rotate_bytes == 0);
  CHECK(c.log_rotate_duration == 0s);
  CHECK(c.log_rotate_max_files == 0);
  CHECK_FALSE(c.enable_syslog);
  CHECK(c.syslog_facility.empty());
  CHECK_FALSE(c.enable_debug);
  CHECK_FALSE(c.enable_agentless);
  CHECK(c.instance_id.size() == 36);
  CHECK(c.instance_id[8] == '-');
  CHECK(c.instance_id[13] == '-');
  CHECK(c.instance_id[18] == '-');
  CHECK(c.instance_id[23] == '-');
  CHECK(c.consul_service == "consul-esm");
  CHECK(c.consul_service_tag.empty());
  CHECK(c.consul_kv_path == "consul-esm/");
  CHECK(c.external_node_meta == std::map<std::string, std::string>{{"external-node", "true"}});
  CHECK(c.partition.empty());
  CHECK(c.node_reconnect_timeout == 72h);
  CHECK(c.node_probe_interval == 10s);
  CHECK(c.node_health_refresh_interval == 1h);
  CHECK(c.batch_flush_interval == 500ms);
  CHECK(c.http_addr.empty());
  CHECK(c.token.empty());
  CHECK(c.datacenter.empty());
  CHECK(c.ca_file.empty());
  CHECK(c.ca_path.empty());
  CHECK(c.cert_file.empty());
  CHECK(c.key_file.empty());
  CHECK(c.tls_server_name.empty());
  CHECK(c.https_ca_file.empty());
  CHECK(c.https_ca_path.empty());
  CHECK(c.https_cert_file.empty());
  CHECK(c.https_key_file.empty());
  CHECK(c.client_address.empty());
  CHECK(c.ping_type == "udp");
  CHECK(c.ping() == ping_kind::udp);
  CHECK_FALSE(c.disable_coordinate_updates);
  CHECK_FALSE(c.stale_read_nodes);
  CHECK(c.passing_threshold == 0);
  CHECK(c.critical_threshold == 0);
  CHECK(c.telemetry == telemetry_config{});
  CHECK(c.session_ttl == 30s);
  CHECK(c.lock_delay == 15s);
  CHECK(c.lock_monitor_retries == 6);
  CHECK(c.lock_monitor_retry_time == 2s);
  CHECK(c.check_update_interval == 5min);
  CHECK(c.instance_deregister_after == 30min);
  CHECK(c.blocking_query_wait == 45s);
  CHECK(c.retry_interval == 10s);
  CHECK(c.min_check_interval == 1s);
  CHECK(c.max_concurrent_probes == default_max_concurrent_probes());
  CHECK(c.threshold_mode == "consul");
  CHECK(c.thresholds() == threshold_kind::consul);
  CHECK(c.warnings.empty());
  CHECK(c.origins.empty());
  CHECK(c.consul.scheme == "http");
  CHECK(c.consul.address == "127.0.0.1:8500");
}

TEST_CASE("defaults: a fresh random instance id on every load") {
  CHECK(load_config({}, fake_env()).instance_id != load_config({}, fake_env()).instance_id);
}

TEST_CASE("defaults: max_concurrent_probes is sized to the open-file limit") {
  rlimit rl{};
  REQUIRE(getrlimit(RLIMIT_NOFILE, &rl) == 0);
  if (rl.rlim_cur != RLIM_INFINITY) {
    auto expected = std::max<std::int64_t>((std::int64_t(rl.rlim_cur) - 64) / 2, 1);
    CHECK(default_max_concurrent_probes() == expected);
  }
  CHECK(default_max_concurrent_probes() >= 1);
}

// consul-esm config_test.go TestDecodeMergeConfig: a full sample merges to the expected values.
TEST_CASE("consul-esm TestDecodeMergeConfig: full HCL sample") {
  config c = load_text(R"(
log_level = "INFO"
enable_debug = true
enable_syslog = true
instance_id = "test-instance-id"
consul_service = "service"
consul_service_tag = "asdf"
consul_kv_path = "custom-esm/"
node_reconnect_timeout = "22s"
node_health_refresh_interval = "23s"
node_probe_interval = "12s"
external_node_meta {
	a = "1"
	b = "2"
}
http_addr = "localhost:4949"
token = "qwerasdf"
datacenter = "dc3"
ca_file = "ca.pem"
ca_path = "ca/"
cert_file = "cert.pem"
key_file = "key.pem"
tls_server_name = "example.io"
https_ca_file = "CA-cert.pem"
https_ca_path = "CAPath/"
https_cert_file = "server-cert.pem"
https_key_file = "server-key.pem"
disable_coordinate_updates = true
client_address = "127.0.0.1:8080"
ping_type = "socket"
telemetry {
	circonus_api_app = "circonus_api_app"
 	circonus_api_token = "circonus_api_token"
 	circonus_api_url = "www.circonus.com"
 	circonus_broker_id = "1234"
 	circonus_broker_select_tag = "circonus_broker_select_tag"
 	circonus_check_display_name = "circonus_check_display_name"
 	circonus_check_force_metric_activation = "circonus_check_force_metric_activation"
 	circonus_check_id = "5678"
 	circonus_check_instance_id = "abcd"
 	circonus_check_search_tag = "circonus_check_search_tag"
 	circonus_check_tags = "circonus_check_tags"
 	circonus_submission_interval = "5s"
 	circonus_submission_url = "www.example.com"
 	disable_hostname = true
 	dogstatsd_addr = "1.2.3.4"
 	dogstatsd_tags = ["dogstatsd"]
 	filter_default = true
 	prefix_filter = ["+good", "-bad", "+better", "-worse", "wrong", ""]
 	metrics_prefix = "test"
 	prometheus_retention_time = "5h"
 	statsd_address = "example.io:8888"
 	statsite_address = "5.6.7.8"
}
passing_threshold = 3
critical_threshold = 2
log_json = true
)");
  CHECK(c.log_level == "INFO");
  CHECK(c.enable_debug);
  CHECK(c.enable_syslog);
  CHECK(c.instance_id == "test-instance-id");
  CHECK(c.consul_service == "service");
  CHECK(c.consul_service_tag == "asdf");
  CHECK(c.consul_kv_path == "custom-esm/");
  CHECK(c.node_reconnect_timeout == 22s);
  CHECK(c.node_health_refresh_interval == 23s);
  CHECK(c.node_probe_interval == 12s);
  CHECK(c.external_node_meta == std::map<std::string, std::string>{{"a", "1"}, {"b", "2"}});
  CHECK(c.http_addr == "localhost:4949");
  CHECK(c.token == "qwerasdf");
  CHECK(c.datacenter == "dc3");
  CHECK(c.ca_file == "ca.pem");
  CHECK(c.ca_path == "ca/");
  CHECK(c.cert_file == "cert.pem");
  CHECK(c.key_file == "key.pem");
  CHECK(c.tls_server_name == "example.io");
  CHECK(c.https_ca_file == "CA-cert.pem");
  CHECK(c.https_ca_path == "CAPath/");
  CHECK(c.https_cert_file == "server-cert.pem");
  CHECK(c.https_key_file == "server-key.pem");
  CHECK(c.disable_coordinate_updates);
  CHECK(c.client_address == "127.0.0.1:8080");
  CHECK(c.ping() == ping_kind::socket);
  const auto& t = c.telemetry;
  CHECK(t.circonus_api_app == "circonus_api_app");
  CHECK(t.circonus_api_token == "circonus_api_token");
  CHECK(t.circonus_api_url == "www.circonus.com");
  CHECK(t.circonus_broker_id == "1234");
  CHECK(t.circonus_broker_select_tag == "circonus_broker_select_tag");
  CHECK(t.circonus_check_display_name == "circonus_check_display_name");
  CHECK(t.circonus_check_force_metric_activation == "circonus_check_force_metric_activation");
  CHECK(t.circonus_check_id == "5678");
  CHECK(t.circonus_check_instance_id == "abcd");
  CHECK(t.circonus_check_search_tag == "circonus_check_search_tag");
  CHECK(t.circonus_check_tags == "circonus_check_tags");
  CHECK(t.circonus_submission_interval == "5s");
  CHECK(t.circonus_submission_url == "www.example.com");
  CHECK(t.disable_hostname);
  CHECK(t.dogstatsd_addr == "1.2.3.4");
  CHECK(t.dogstatsd_tags == std::vector<std::string>{"dogstatsd"});
  CHECK(t.filter_default);
  CHECK(t.allowed_prefixes == std::vector<std::string>{"good", "better"});
  CHECK(t.blocked_prefixes == std::vector<std::string>{"bad", "worse"});
  CHECK(t.metrics_prefix == "test");
  CHECK(t.prometheus_retention_time == 5h);
  CHECK(t.statsd_address == "example.io:8888");
  CHECK(t.statsite_address == "5.6.7.8");
  CHECK(c.passing_threshold == 3);
  CHECK(c.critical_threshold == 2);
  CHECK(c.log_json);
  // The two bad prefix rules are reported, not fatal.
  REQUIRE(c.warnings.size() == 2);
  CHECK(contains(c.warnings[0], "\"wrong\""));
  CHECK(contains(c.warnings[1], "empty filter rule"));
}

// consul-esm config_test.go TestValidateConfig.
TEST_CASE("consul-esm TestValidateConfig") {
  CHECK(contains(error_of([] { load_text(R"(ping_type = "invalid")"); }),
                 R"(ping_type must be one of either "udp" or "socket")"));
  CHECK(error_of([] { load_text(R"(ping_type = "socket")"); }).empty());
  CHECK(contains(error_of([] { load_text(R"(node_probe_interval = "500ms")"); }),
                 "node_probe_interval cannot be lower than 1 second"));
}

// consul-esm config_test.go TestDecodeConfig.
TEST_CASE("consul-esm TestDecodeConfig") {
  SUBCASE("hcl parsing error") {
    CHECK(contains(error_of([] { load_text("{config}"); }), "Error loading config: "));
  }
  SUBCASE("map decode error") {
    CHECK(contains(error_of([] { load_text(R"(stuff = "stuff")"); }), "stuff: unknown key"));
  }
  SUBCASE("multiple telemetry blocks error") {
    auto e = error_of([] {
      load_text("telemetry {\n metrics_prefix = \"test\"\n}\ntelemetry {\n metrics_prefix = \"test2\"\n}");
    });
    CHECK(contains(e, "only one telemetry block allowed"));
    CHECK(contains(e, "test.hcl:4:11"));
  }
  SUBCASE("multiple node-meta blocks error") {
    auto e = error_of([] { load_text("external_node_meta {\n a = \"1\"\n}\nexternal_node_meta {\n b = \"2\"\n}"); });
    CHECK(contains(e, "only one node_meta block allowed"));
  }
}

// consul-esm config_test.go TestConvertTelemetry.
TEST_CASE("consul-esm TestConvertTelemetry") {
  SUBCASE("happy path") {
    auto t = load_text(R"(telemetry { prefix_filter = ["+allow", "-deny"]
                                      prometheus_retention_time = "1m" })").telemetry;
    CHECK(t.allowed_prefixes == std::vector<std::string>{"allow"});
    CHECK(t.blocked_prefixes == std::vector<std::string>{"deny"});
    CHECK(t.prometheus_retention_time == 1min);
  }
  SUBCASE("empty prefix rule gets ignored") {
    auto c = load_text(R"(telemetry { prefix_filter = [""] })");
    CHECK(c.telemetry.allowed_prefixes.empty());
    CHECK(c.telemetry.blocked_prefixes.empty());
    CHECK(c.warnings.size() == 1);
  }
  SUBCASE("invalid prefix rule gets ignored") {
    auto c = load_text(R"(telemetry { prefix_filter = ["*test"] })");
    CHECK(c.telemetry.allowed_prefixes.empty());
    CHECK(c.telemetry.blocked_prefixes.empty());
    REQUIRE(c.warnings.size() == 1);
    CHECK(contains(c.warnings[0], "filter rule must begin with either '+' or '-': \"*test\""));
  }
  SUBCASE("invalid prometheus retention error") {
    auto e = error_of([] { load_text(R"(telemetry { prometheus_retention_time = "invalid" })"); });
    CHECK(contains(e, "prometheus_retention_time: invalid duration: \"invalid\": "
                      "time: invalid duration \"invalid\""));
    CHECK(contains(e, "test.hcl:1:41"));
  }
}

// consul-esm config_test.go TestPartition.
TEST_CASE("consul-esm TestPartition") {
  CHECK(load_text("").partition.empty());
  CHECK(load_text(R"(partition = "")").partition.empty());
  CHECK(load_text(R"(partition = "default")").partition == "default");
  CHECK(load_text(R"(partition = "admin")").partition == "admin");
}

// consul-esm config_test.go TestStaleReadNodesConfig.
TEST_CASE("consul-esm TestStaleReadNodesConfig") {
  CHECK_FALSE(load_text("").stale_read_nodes);
  CHECK_FALSE(load_text("stale_read_nodes = false").stale_read_nodes);
  CHECK(load_text("stale_read_nodes = true").stale_read_nodes);
}

namespace {

enum class type { string, boolean, integer, duration, string_list };

struct key_case {
  std::string key;
  type t;
};

const key_case all_keys[] = {
    {"log_level", type::string},
    {"log_json", type::boolean},
    {"log_file", type::string},
    {"log_rotate_bytes", type::integer},
    {"log_rotate_duration", type::duration},
    {"log_rotate_max_files", type::integer},
    {"enable_syslog", type::boolean},
    {"syslog_facility", type::string},
    {"enable_debug", type::boolean},
    {"enable_agentless", type::boolean},
    {"instance_id", type::string},
    {"consul_service", type::string},
    {"consul_service_tag", type::string},
    {"consul_kv_path", type::string},
    {"partition", type::string},
    {"node_reconnect_timeout", type::duration},
    {"node_probe_interval", type::duration},
    {"node_health_refresh_interval", type::duration},
    {"node_probe_timeout", type::duration},
    {"batch_flush_interval", type::duration},
    {"http_addr", type::string},
    {"token", type::string},
    {"datacenter", type::string},
    {"ca_file", type::string},
    {"ca_path", type::string},
    {"cert_file", type::string},
    {"key_file", type::string},
    {"tls_server_name", type::string},
    {"https_ca_file", type::string},
    {"https_ca_path", type::string},
    {"https_cert_file", type::string},
    {"https_key_file", type::string},
    {"client_address", type::string},
    {"ping_type", type::string},
    {"disable_coordinate_updates", type::boolean},
    {"stale_read_nodes", type::boolean},
    {"passing_threshold", type::integer},
    {"critical_threshold", type::integer},
    {"session_ttl", type::duration},
    {"lock_delay", type::duration},
    {"lock_monitor_retries", type::integer},
    {"lock_monitor_retry_time", type::duration},
    {"check_update_interval", type::duration},
    {"instance_deregister_after", type::duration},
    {"blocking_query_wait", type::duration},
    {"retry_interval", type::duration},
    {"min_check_interval", type::duration},
    {"max_concurrent_probes", type::integer},
    {"threshold_mode", type::string},
    {"telemetry.circonus_api_app", type::string},
    {"telemetry.circonus_api_token", type::string},
    {"telemetry.circonus_api_url", type::string},
    {"telemetry.circonus_broker_id", type::string},
    {"telemetry.circonus_broker_select_tag", type::string},
    {"telemetry.circonus_check_display_name", type::string},
    {"telemetry.circonus_check_force_metric_activation", type::string},
    {"telemetry.circonus_check_id", type::string},
    {"telemetry.circonus_check_instance_id", type::string},
    {"telemetry.circonus_check_search_tag", type::string},
    {"telemetry.circonus_check_tags", type::string},
    {"telemetry.circonus_submission_interval", type::string},
    {"telemetry.circonus_submission_url", type::string},
    {"telemetry.disable_hostname", type::boolean},
    {"telemetry.dogstatsd_addr", type::string},
    {"telemetry.dogstatsd_tags", type::string_list},
    {"telemetry.filter_default", type::boolean},
    {"telemetry.prefix_filter", type::string_list},
    {"telemetry.metrics_prefix", type::string},
    {"telemetry.prometheus_retention_time", type::duration},
    {"telemetry.statsd_address", type::string},
    {"telemetry.statsite_address", type::string},
};

// `key = value` at the top level or inside a telemetry block; the value starts at column
// 1 + len("key = ") on line 1 either way (telemetry keys go on line 2).
std::string setting(const std::string& key, const std::string& value) {
  if (key.starts_with("telemetry."))
    return "telemetry {\n" + key.substr(10) + " = " + value + "\n}\n";
  return key + " = " + value + "\n";
}

}  // namespace

TEST_CASE("every key: accepted with its type, rejected with another type naming file:line:col and key") {
  for (const auto& k : all_keys) {
    CAPTURE(k.key);
    std::string good, wrong1, wrong2, expected;
    switch (k.t) {
      case type::string:
        good = k.key == "ping_type" ? "\"socket\""
               : k.key == "threshold_mode" ? "\"legacy\""
               : k.key == "log_level" ? "\"debug\""
               : "\"x\"";
        wrong1 = "1";
        wrong2 = "true";
        expected = "expected a string";
        break;
      case type::boolean:
        good = "true";
        wrong1 = "\"true\"";
        wrong2 = "1";
        expected = "expected a boolean";
        break;
      case type::integer:
        good = "7";
        wrong1 = "\"7\"";
        wrong2 = "7.5";
        expected = "expected an integer";
        break;
      case type::duration:
        good = "\"11s\"";
        wrong1 = "11";
        wrong2 = "true";
        expected = "expected a duration string";
        break;
      case type::string_list:
        good = "[\"a\", \"b\"]";
        wrong1 = "\"a\"";
        wrong2 = "[1]";
        expected = "expected a list of strings";
        break;
    }
    std::string text = setting(k.key, good);
    CAPTURE(text);
    config c;
    CHECK_NOTHROW(c = load_text(text));
    CHECK(c.origins.contains(k.key));
    std::string line = k.key.starts_with("telemetry.") ? "2" : "1";
    std::string bare = k.key.starts_with("telemetry.") ? k.key.substr(10) : k.key;
    std::string col = std::to_string(bare.size() + 4);
    if (k.t == type::string_list) {
      // The wrong element inside the list is named.
      auto e = error_of([&] { load_text(setting(k.key, wrong2)); });
      CHECK(contains(e, "test.hcl:" + line + ":" + std::to_string(bare.size() + 5) + ": " + k.key +
                            ": " + expected));
    }
    for (const auto& wrong : {wrong1, wrong2}) {
      if (k.t == type::string_list && wrong == wrong2) continue;
      auto e = error_of([&] { load_text(setting(k.key, wrong)); });
      CAPTURE(wrong);
      CHECK(contains(e, "Error loading config: "));
      CHECK(contains(e, "test.hcl:" + line + ":" + col + ": " + k.key + ": " + expected));
    }
  }
}

TEST_CASE("every key: a value set in a file is the value loaded") {
  auto c = load_text(R"(
log_level = "warn"
log_rotate_bytes = 1048576
log_rotate_duration = "1h"
log_rotate_max_files = -1
syslog_facility = "LOCAL3"
enable_agentless = true
batch_flush_interval = "0"
session_ttl = "1m"
lock_delay = "0s"
lock_monitor_retries = 0
lock_monitor_retry_time = "500ms"
check_update_interval = "0"
instance_deregister_after = "2h"
blocking_query_wait = "5m"
retry_interval = "1s"
min_check_interval = "2s"
max_concurrent_probes = 10
threshold_mode = "legacy"
)");
  CHECK(c.log_level == "warn");
  CHECK(c.log_rotate_bytes == 1048576);
  CHECK(c.log_rotate_duration == 1h);
  CHECK(c.log_rotate_max_files == -1);
  CHECK(c.syslog_facility == "LOCAL3");  // merged, unlike consul-esm (W14)
  CHECK(c.enable_agentless);
  CHECK(c.batch_flush_interval == 0s);
  CHECK(c.session_ttl == 1min);
  CHECK(c.lock_delay == 0s);
  CHECK(c.lock_monitor_retries == 0);
  CHECK(c.lock_monitor_retry_time == 500ms);
  CHECK(c.check_update_interval == 0s);
  CHECK(c.instance_deregister_after == 2h);
  CHECK(c.blocking_query_wait == 5min);
  CHECK(c.retry_interval == 1s);
  CHECK(c.min_check_interval == 2s);
  CHECK(c.max_concurrent_probes == 10);
  CHECK(c.thresholds() == threshold_kind::legacy);
}

TEST_CASE("durations: Go syntax, invalid text named with Go's message") {
  CHECK(load_text(R"(node_reconnect_timeout = "1.5h")").node_reconnect_timeout == 90min);
  CHECK(load_text(R"(node_reconnect_timeout = "2h45m")").node_reconnect_timeout == 2h + 45min);
  CHECK(load_text(R"(node_reconnect_timeout = "0")").node_reconnect_timeout == 0s);
  auto e = error_of([] { load_text(R"(node_probe_interval = "1d")"); });
  CHECK(contains(e, "test.hcl:1:23: node_probe_interval: invalid duration: \"1d\": "
                    "time: unknown unit \"d\" in duration \"1d\""));
  e = error_of([] { load_text(R"(session_ttl = "")"); });
  CHECK(contains(e, "session_ttl: invalid duration"));
}

TEST_CASE("validation: every rule, with a message naming the key and where it was set") {
  struct rule {
    std::string text;
    std::string message;
  };
  const rule rules[] = {
      {R"(ping_type = "icmp")", R"(ping_type must be one of either "udp" or "socket")"},
      {R"(node_probe_interval = "999ms")", "node_probe_interval cannot be lower than 1 second"},
      {"passing_threshold = -1", "passing_threshold cannot be negative"},
      {"critical_threshold = -1", "critical_threshold cannot be negative"},
      {R"(log_level = "verbose")", "log_level \"verbose\" is not one of TRACE"},
      {"log_rotate_bytes = -1", "log_rotate_bytes cannot be negative"},
      {R"(log_rotate_duration = "-1s")", "log_rotate_duration cannot be negative"},
      {"log_rotate_max_files = -2", "log_rotate_max_files cannot be lower than -1"},
      {R"(instance_id = "")", "instance_id cannot be empty"},
      {R"(consul_service = "")", "consul_service cannot be empty"},
      {R"(node_reconnect_timeout = "-1h")", "node_reconnect_timeout cannot be negative"},
      {R"(node_health_refresh_interval = "-1s")", "node_health_refresh_interval cannot be negative"},
      {R"(session_ttl = "9s")", "session_ttl must be between 10s and 24h"},
      {R"(session_ttl = "25h")", "session_ttl must be between 10s and 24h"},
      {R"(lock_delay = "61s")", "lock_delay must be between 0s and 60s"},
      {R"(lock_delay = "-1s")", "lock_delay must be between 0s and 60s"},
      {"lock_monitor_retries = -1", "lock_monitor_retries cannot be negative"},
      {R"(lock_monitor_retry_time = "0")", "lock_monitor_retry_time must be greater than 0"},
      {R"(check_update_interval = "-1s")", "check_update_interval cannot be negative"},
      {R"(instance_deregister_after = "0")", "instance_deregister_after must be greater than 0"},
      {R"(blocking_query_wait = "0")", "blocking_query_wait must be greater than 0"},
      {R"(blocking_query_wait = "11m")", "blocking_query_wait cannot be above 10m"},
      {R"(retry_interval = "0s")", "retry_interval must be greater than 0"},
      {R"(min_check_interval = "0s")", "min_check_interval must be greater than 0"},
      {"max_concurrent_probes = 0", "max_concurrent_probes must be at least 1"},
      {"max_concurrent_probes = -5", "max_concurrent_probes must be at least 1"},
      {R"(threshold_mode = "strict")", R"(threshold_mode must be one of either "consul" or "legacy")"},
  };
  for (const auto& r : rules) {
    CAPTURE(r.text);
    auto e = error_of([&] { load_text(r.text); });
    CHECK(contains(e, "Error parsing config: "));
    CHECK(contains(e, "/test.hcl:1:1: " + r.message));
  }
  // Limits themselves are valid.
  CHECK(error_of([] { load_text("node_probe_interval = \"1s\"\nsession_ttl = \"10s\"\n"
                                "lock_delay = \"60s\"\nblocking_query_wait = \"10m\"\n"
                                "log_rotate_max_files = -1\nmax_concurrent_probes = 1"); })
            .empty());
  CHECK(load_text(R"(log_level = "err")").log_level == "err");
}

TEST_CASE("batch_flush_interval: negative means the default, as in consul-esm") {
  CHECK(load_text(R"(batch_flush_interval = "-1s")").batch_flush_interval == 500ms);
}

TEST_CASE("consul_kv_path always ends in '/'") {
  CHECK(load_text(R"(consul_kv_path = "a/b")").consul_kv_path == "a/b/");
  CHECK(load_text(R"(consul_kv_path = "a/")").consul_kv_path == "a/");
  CHECK(load_text(R"(consul_kv_path = "")").consul_kv_path == "/");
}

TEST_CASE("external_node_meta: replaces the default whole; empty block means no filter") {
  CHECK(load_text("external_node_meta { role = \"db\" }").external_node_meta ==
        std::map<std::string, std::string>{{"role", "db"}});
  CHECK(load_text("external_node_meta {}").external_node_meta.empty());
  CHECK(load_text("external_node_meta = { \"a b\" = \"c\" }").external_node_meta.at("a b") == "c");
  auto e = error_of([] { load_text("external_node_meta {\n  a = 1\n}"); });
  CHECK(contains(e, "test.hcl:2:7: external_node_meta.a: expected a string, got an integer"));
  e = error_of([] { load_text("external_node_meta = \"x\""); });
  CHECK(contains(e, "external_node_meta: expected a block, got a string"));
}

TEST_CASE("unknown keys are rejected everywhere, also inside telemetry") {
  auto e = error_of([] { load_text("log_level = \"INFO\"\n  bogus = 1"); });
  CHECK(contains(e, "Error loading config: "));
  CHECK(contains(e, "/test.hcl:2:3: bogus: unknown key"));
  e = error_of([] { load_text("telemetry {\n  retry_failed_connection = true\n}"); });
  CHECK(contains(e, "test.hcl:2:3: telemetry.retry_failed_connection: unknown key"));
  e = error_of([] { load_text("telemetry = 1"); });
  CHECK(contains(e, "telemetry: expected a block, got an integer"));
}

TEST_CASE("keys match case-insensitively when not exact, as mapstructure does") {
  auto c = load_text("LOG_LEVEL = \"debug\"\nTelemetry { Statsd_Address = \"s:1\" }");
  CHECK(c.log_level == "debug");
  CHECK(c.telemetry.statsd_address == "s:1");
  CHECK(c.origins.contains("log_level"));
  CHECK(c.origins.contains("telemetry.statsd_address"));
}

TEST_CASE("a key repeated within one file: the last one wins") {
  CHECK(load_text("log_level = \"warn\"\nlog_level = \"debug\"").log_level == "debug");
}

TEST_CASE("JSON files: same keys, blocks as objects or lists of one object") {
  auto c = load_text(R"({
  "log_level": "DEBUG",
  "passing_threshold": 2,
  "enable_debug": true,
  "node_probe_interval": "3s",
  "external_node_meta": {"k": "v"},
  "telemetry": [{"dogstatsd_tags": ["x"], "prometheus_retention_time": "30s"}],
  "token": null
})", "esm.json");
  CHECK(c.log_level == "DEBUG");
  CHECK(c.passing_threshold == 2);
  CHECK(c.enable_debug);
  CHECK(c.node_probe_interval == 3s);
  CHECK(c.external_node_meta == std::map<std::string, std::string>{{"k", "v"}});
  CHECK(c.telemetry.dogstatsd_tags == std::vector<std::string>{"x"});
  CHECK(c.telemetry.prometheus_retention_time == 30s);
  CHECK(c.token.empty());
  auto e = error_of([] { load_text(R"({"telemetry": [{}, {}]})", "esm.json"); });
  CHECK(contains(e, "only one telemetry block allowed"));
  e = error_of([] { load_text("{\n  \"node_probe_interval\": 5\n}", "esm.json"); });
  CHECK(contains(e, "esm.json:2:26: node_probe_interval: expected a duration string"));
  e = error_of([] { load_text("{\n  \"telemetry\": {\"dogstatsd_tags\": \"x\"}\n}", "esm.json"); });
  CHECK(contains(e, "esm.json:2:35: telemetry.dogstatsd_tags: expected a list of strings"));
  e = error_of([] { load_text(R"({"passing_threshold": 1.0})", "esm.json"); });
  CHECK(contains(e, "passing_threshold: expected an integer, got a number with a fraction"));
  e = error_of([] { load_text("{\"a\": }", "esm.json"); });
  CHECK(contains(e, "Error loading config: "));
  CHECK(contains(e, "esm.json:1:7: invalid JSON"));
}

TEST_CASE("file format is chosen by content, as hashicorp/hcl v1 does") {
  CHECK(load_text("log_level = \"debug\"", "hcl-in.json").log_level == "debug");
  CHECK(load_text(R"({"log_level": "debug"})", "json-in.hcl").log_level == "debug");
}

TEST_CASE("merge: later files override per key") {
  temp_dir d;
  auto a = d.write("a.hcl", "log_level = \"debug\"\nconsul_service = \"one\"\npassing_threshold = 1");
  auto b = d.write("b.hcl", "consul_service = \"two\"");
  auto c = load_config({a, b}, fake_env());
  CHECK(c.log_level == "debug");
  CHECK(c.consul_service == "two");
  CHECK(c.passing_threshold == 1);
  CHECK(c.origins.at("consul_service").file == b);
  CHECK(c.origins.at("log_level").file == a);
  // Order of the paths decides.
  CHECK(load_config({b, a}, fake_env()).consul_service == "one");
}

TEST_CASE("merge: external_node_meta and telemetry blocks replace earlier ones whole") {
  temp_dir d;
  auto a = d.write("a.hcl", R"(
external_node_meta { a = "1", b = "2" }
telemetry {
  statsd_address = "s:1"
  metrics_prefix = "p"
  prefix_filter = ["+x"]
}
)");
  auto b = d.write("b.hcl", R"(
external_node_meta { c = "3" }
telemetry { dogstatsd_addr = "d:1" }
)");
  auto c = load_config({a, b}, fake_env());
  CHECK(c.external_node_meta == std::map<std::string, std::string>{{"c", "3"}});
  CHECK(c.telemetry.dogstatsd_addr == "d:1");
  CHECK(c.telemetry.statsd_address.empty());
  CHECK(c.telemetry.metrics_prefix.empty());
  CHECK(c.telemetry.allowed_prefixes.empty());
  CHECK_FALSE(c.origins.contains("telemetry.statsd_address"));
  CHECK(c.origins.contains("telemetry.dogstatsd_addr"));
  // A file without the blocks keeps them.
  auto e = d.write("e.hcl", "log_level = \"warn\"");
  auto c2 = load_config({a, e}, fake_env());
  CHECK(c2.telemetry.statsd_address == "s:1");
  CHECK(c2.external_node_meta.size() == 2);
}

TEST_CASE("merge: validation runs on the merged result, not per file") {
  temp_dir d;
  auto a = d.write("a.hcl", R"(ping_type = "bad")");
  auto b = d.write("b.hcl", R"(ping_type = "socket")");
  CHECK(load_config({a, b}, fake_env()).ping() == ping_kind::socket);
  auto e = error_of([&] { load_config({b, a}, fake_env()); });
  CHECK(contains(e, "Error parsing config: " + a + ":1:1: ping_type must be one of"));
}

TEST_CASE("directories: byte-wise name order, not recursive, only .hcl/.json, empty files skipped") {
  temp_dir d;
  d.write("conf/b.hcl", "consul_service = \"b\"\nconsul_service_tag = \"b\"");
  d.write("conf/a.json", R"({"consul_service": "a", "consul_service_tag": "a", "datacenter": "a"})");
  d.write("conf/B.hcl", "consul_service = \"B\"\ndatacenter = \"B\"");  // 'B' < 'a' < 'b'
  d.write("conf/c.txt", "this is not configuration");
  d.write("conf/d.hcl.bak", "garbage {");
  d.write("conf/e.HCL", "garbage {");  // the suffix check is case-sensitive
  d.write("conf/z.hcl", "");             // 0 bytes: skipped
  d.write("conf/sub/y.hcl", "consul_service = \"sub\"");
  auto c = load_config({(d.path() / "conf").string()}, fake_env());
  CHECK(c.consul_service == "b");
  CHECK(c.consul_service_tag == "b");
  CHECK(c.datacenter == "a");
  CHECK(c.warnings.empty());  // files skipped inside a directory are not worth a warning
}

TEST_CASE("files and directories in command-line order, interleaved") {
  temp_dir d;
  auto f1 = d.write("one.hcl", "consul_service = \"file1\"\ndatacenter = \"file1\"");
  d.write("dir/x.hcl", "consul_service = \"dir\"\nconsul_service_tag = \"dir\"");
  auto f2 = d.write("two.hcl", "consul_service_tag = \"file2\"");
  auto dir = (d.path() / "dir").string();
  auto c = load_config({f1, dir, f2}, fake_env());
  CHECK(c.consul_service == "dir");
  CHECK(c.consul_service_tag == "file2");
  CHECK(c.datacenter == "file1");
  auto c2 = load_config({f2, dir, f1}, fake_env());
  CHECK(c2.consul_service == "file1");
  CHECK(c2.consul_service_tag == "dir");
}

TEST_CASE("an explicitly named file without .hcl/.json is ignored (with a warning), like consul-esm") {
  temp_dir d;
  auto f = d.write("esm.conf", "not even { valid");
  auto c = load_config({f}, fake_env());
  CHECK(c.consul_service == "consul-esm");
  REQUIRE(c.warnings.size() == 1);
  CHECK(contains(c.warnings[0], "esm.conf"));
  auto empty = d.write("empty.hcl", "");
  CHECK(load_config({empty}, fake_env()).warnings.empty());
}

TEST_CASE("a path that does not exist is an error naming it") {
  auto e = error_of([] { load_config({"/nonexistent/esm.hcl"}, fake_env()); });
  CHECK(contains(e, "Error loading config: error reading \"/nonexistent/esm.hcl\": "));
}

TEST_CASE("syntax errors name the file, line and column") {
  temp_dir d;
  auto f = d.write("bad.hcl", "log_level = \"INFO\"\ntelemetry {\n  statsd_address = \n}\n");
  auto e = error_of([&] { load_config({f}, fake_env()); });
  CHECK(e == "Error loading config: " + f + ":4:1: expected a value, got '}'");
}

TEST_CASE("the complete example configuration, every key set, as documented") {
  config c = load_text(R"(// Example esmd / consul-esm configuration: every key set.
log_level = "DEBUG"
log_json = false
log_file = "/var/log/esm/"
log_rotate_bytes = 10485760
log_rotate_duration = "12h"
log_rotate_max_files = 5
enable_syslog = true
syslog_facility = "LOCAL0"
enable_debug = false
enable_agentless = false
instance_id = "esm-1"
consul_service = "consul-esm"
consul_service_tag = "primary"
consul_kv_path = "consul-esm/"
external_node_meta {
  "external-node" = "true"
}
partition = ""
node_reconnect_timeout = "72h"
node_probe_interval = "10s"
node_health_refresh_interval = "1h"
node_probe_timeout = "5s"
batch_flush_interval = "500ms"
http_addr = "localhost:8500"
token = "secret-token"
datacenter = "dc1"
ca_file = "/etc/consul/ca.pem"
ca_path = "/etc/consul/ca.d"
cert_file = "/etc/consul/cert.pem"
key_file = "/etc/consul/key.pem"
tls_server_name = "consul.example.com:8501"
https_ca_file = "/etc/esm/ca.pem"
https_ca_path = "/etc/esm/ca.d"
https_cert_file = "/etc/esm/cert.pem"
https_key_file = "/etc/esm/key.pem"
client_address = "127.0.0.1:8080"
ping_type = "udp"
disable_coordinate_updates = false
stale_read_nodes = true
telemetry {
  circonus_api_app = ""
  circonus_api_token = ""
  circonus_api_url = ""
  circonus_broker_id = ""
  circonus_broker_select_tag = ""
  circonus_check_display_name = ""
  circonus_check_force_metric_activation = ""
  circonus_check_id = ""
  circonus_check_instance_id = ""
  circonus_check_search_tag = ""
  circonus_check_tags = ""
  circonus_submission_interval = ""
  circonus_submission_url = ""
  disable_hostname = false
  dogstatsd_addr = ""
  dogstatsd_tags = []
  filter_default = false
  prefix_filter = []
  metrics_prefix = ""
  prometheus_retention_time = "0"
  statsd_address = ""
  statsite_address = ""
}
passing_threshold = 0
critical_threshold = 0
/* esmd's additions */
session_ttl = "30s"
lock_delay = "15s"
lock_monitor_retries = 6
lock_monitor_retry_time = "2s"
check_update_interval = "5m"
instance_deregister_after = "30m"
blocking_query_wait = "45s"
retry_interval = "10s"
min_check_interval = "1s"
max_concurrent_probes = 4096
threshold_mode = "consul"
)");
  CHECK(c.log_level == "DEBUG");
  CHECK(c.log_file == "/var/log/esm/");
  CHECK(c.log_rotate_duration == 12h);
  CHECK(c.instance_id == "esm-1");
  CHECK(c.external_node_meta.at("external-node") == "true");
  CHECK(c.stale_read_nodes);
  CHECK(c.telemetry == telemetry_config{});
  CHECK(c.max_concurrent_probes == 4096);
  CHECK(c.consul.address == "localhost:8500");
  CHECK(c.consul.token == "secret-token");
  CHECK(c.consul.tls.server_name == "consul.example.com");
  CHECK(c.warnings.empty());
  // Every key was recorded as set.
  for (const auto& k : all_keys) {
    CAPTURE(k.key);
    CHECK(c.origins.contains(k.key));
  }
  CHECK(c.origins.contains("external_node_meta"));
  CHECK(c.origins.contains("telemetry"));
  CHECK(c.origins.size() == std::size(all_keys) + 2);
}

TEST_CASE("log_settings maps the log keys") {
  auto c = load_text(R"(
log_level = "warn"
log_json = true
log_file = "/var/log/esm/"
log_rotate_bytes = 100
log_rotate_duration = "1h"
log_rotate_max_files = 3
enable_syslog = true
syslog_facility = "LOCAL5"
)");
  auto s = log_settings(c);
  CHECK(s.min_level == esm::log::level::warn);
  CHECK(s.json);
  CHECK(s.file == "/var/log/esm/consul.log");
  CHECK(s.rotate_bytes == 100);
  CHECK(s.rotate_duration == 1h);
  CHECK(s.rotate_max_files == 3);
  CHECK(s.syslog);
  CHECK(s.syslog_facility == "LOCAL5");
  CHECK(log_settings(load_text(R"(log_file = "/tmp/x.log")")).file == "/tmp/x.log");
  CHECK(log_settings(load_text(R"(log_level = "ERR")")).min_level == esm::log::level::error);
}
