// esmd's configuration: every key of consul-esm (same names, types, defaults, merge rules and
// validation messages) plus esmd's own timing keys, loaded from -config-file / -config-dir
// paths and the CONSUL_* environment.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "esm/consul/options.hpp"
#include "esm/log/log.hpp"

namespace esm::config {

using namespace std::chrono_literals;
using duration = std::chrono::nanoseconds;

// consul-esm's ExitCodeError: flag, configuration and startup errors.
inline constexpr int exit_code_error = 11;

// A startup configuration error. what() is the complete message for the user, naming the
// file, line, column and key where there is one.
class config_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Reads one environment variable; nullopt when unset. Injected so tests never touch the real
// environment.
using env_lookup = std::function<std::optional<std::string>(std::string_view)>;
env_lookup process_environment();  // std::getenv

// Where a key was last set.
struct origin {
  std::string file;
  int line = 0;
  int column = 0;
};
std::string to_string(const origin& o);  // "file:line:column"

enum class ping_kind { udp, socket };
enum class threshold_kind { consul, legacy };

// The telemetry block (consul-esm converts it into Consul's lib.TelemetryConfig).
struct telemetry_config {
  std::string circonus_api_app;
  std::string circonus_api_token;  // secret
  std::string circonus_api_url;
  std::string circonus_broker_id;
  std::string circonus_broker_select_tag;
  std::string circonus_check_display_name;
  std::string circonus_check_force_metric_activation;
  std::string circonus_check_id;
  std::string circonus_check_instance_id;
  std::string circonus_check_search_tag;
  std::string circonus_check_tags;
  std::string circonus_submission_interval;
  std::string circonus_submission_url;
  bool disable_hostname = false;
  std::string dogstatsd_addr;
  std::vector<std::string> dogstatsd_tags;
  bool filter_default = false;
  std::vector<std::string> prefix_filter;     // as written
  std::vector<std::string> allowed_prefixes;  // from "+prefix" rules, sign removed
  std::vector<std::string> blocked_prefixes;  // from "-prefix" rules, sign removed
  std::string metrics_prefix;
  duration prometheus_retention_time{0};  // > 0 enables /metrics
  std::string statsd_address;
  std::string statsite_address;

  bool operator==(const telemetry_config&) const = default;
};

struct config {
  // Logging.
  std::string log_level = "INFO";  // validated with esm::log::parse_level
  bool log_json = false;
  std::string log_file;
  std::int64_t log_rotate_bytes = 0;
  duration log_rotate_duration{0};
  int log_rotate_max_files = 0;
  bool enable_syslog = false;
  std::string syslog_facility;  // merged (consul-esm forgets to, see W14)
  bool enable_debug = false;

  // Identity and placement.
  bool enable_agentless = false;
  std::string instance_id;  // random 8-4-4-4-12 hex when not set
  std::string consul_service = "consul-esm";
  std::string consul_service_tag;
  std::string consul_kv_path = "consul-esm/";  // always ends in '/'
  std::map<std::string, std::string> external_node_meta{{"external-node", "true"}};
  std::string partition;

  // Node probing.
  duration node_reconnect_timeout = 72h;
  duration node_probe_interval = 10s;
  duration node_health_refresh_interval = 1h;  // newer consul-esm key
  duration node_probe_timeout = 5s;            // esmd: consul-esm's hard-coded MaxRTT
  duration batch_flush_interval = 500ms;       // 0 disables batching
  std::string ping_type = "udp";               // "udp" or "socket"
  bool disable_coordinate_updates = false;
  bool stale_read_nodes = false;

  // Consul connection as written in the files; `consul` below is the effective result.
  std::string http_addr;
  std::string token;  // secret
  std::string datacenter;
  std::string ca_file;
  std::string ca_path;
  std::string cert_file;
  std::string key_file;
  std::string tls_server_name;

  // TLS material for HTTP and gRPC checks.
  std::string https_ca_file;
  std::string https_ca_path;
  std::string https_cert_file;
  std::string https_key_file;

  std::string client_address;  // host:port of the local HTTP listener; empty: none

  int passing_threshold = 0;
  int critical_threshold = 0;

  telemetry_config telemetry;

  // esmd's keys: consul-esm's hard-coded timings, now configurable.
  duration session_ttl = 30s;
  duration lock_delay = 15s;
  int lock_monitor_retries = 6;
  duration lock_monitor_retry_time = 2s;
  duration check_update_interval = 5min;
  duration instance_deregister_after = 30min;
  duration blocking_query_wait = 45s;
  duration retry_interval = 10s;
  duration min_check_interval = 1s;
  std::int64_t max_concurrent_probes = 0;  // default: sized to the open-file limit
  std::string threshold_mode = "consul";   // "consul" or "legacy"

  // Derived at load time.
  esm::consul::connection_options consul;  // defaults + environment + files
  std::vector<std::string> warnings;       // for the caller to log (e.g. bad prefix_filter rules)
  std::map<std::string, origin> origins;   // key path ("telemetry.statsd_address") -> where set

  ping_kind ping() const { return ping_type == "socket" ? ping_kind::socket : ping_kind::udp; }
  threshold_kind thresholds() const {
    return threshold_mode == "legacy" ? threshold_kind::legacy : threshold_kind::consul;
  }
};

// Loads the configuration as consul-esm does: defaults, then each path in order (a file, or a
// directory whose files are read in byte-wise name order, not recursively; only *.hcl and
// *.json files, empty ones skipped), later files overriding per key, `external_node_meta` and
// `telemetry` blocks replacing earlier ones whole; then the environment; then validation.
// Throws config_error ("Error loading config: ..." or "Error parsing config: ...").
config load_config(const std::vector<std::string>& paths, const env_lookup& env);

// The same for SIGHUP: keeps `previous.instance_id` unless a file sets instance_id, so a
// reload does not invent a new identity.
config reload_config(const std::vector<std::string>& paths, const env_lookup& env,
                     const config& previous);

// Loads one file's text (as if read from a file named `name`) over `into`. For tests and tools;
// load_config is the normal entry. Does not validate. Throws config_error.
void merge_text(config& into, std::string_view text, const std::string& name);

// Validation alone (load_config calls it). Throws config_error("Error parsing config: ...").
void validate(const config& c);

// The effective Consul connection: defaults, then CONSUL_* variables, then non-empty file
// values for address, token, datacenter, partition and the TLS items; CONSUL_HTTP_TOKEN_FILE
// beats every other token source. Reads the token file. Throws config_error.
esm::consul::connection_options connection_options(const config& c, const env_lookup& env);

// Logging settings from the log_* and syslog keys.
esm::log::settings log_settings(const config& c);

// The default of max_concurrent_probes: (soft RLIMIT_NOFILE - 64) / 2, at least 1.
std::int64_t default_max_concurrent_probes();

// The effective configuration as JSON (two-space indented), secrets shown as "<redacted>" when
// set. For -validate.
std::string to_json(const config& c);

// SIGHUP: the keys whose value differs ("log_level", "telemetry.statsd_address",
// "consul.address"), in a stable order. Secrets are compared, never printed.
std::vector<std::string> describe_changes(const config& before, const config& after);

// Whether a change of this key (as named by describe_changes) can be applied without a
// restart. Only log_level can; everything else needs a restart.
bool applies_at_runtime(std::string_view key);

}  // namespace esm::config
