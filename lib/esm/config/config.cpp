// Loading, merging and validating the configuration. The decoder is strict like consul-esm's
// mapstructure setup (ErrorUnused, no weak typing): unknown keys and wrong types are errors,
// durations must be strings. Keys match case-insensitively when no exact match exists, as
// mapstructure does, so files consul-esm accepted keep working.
#include "esm/config/config.hpp"

#include <sys/resource.h>

#include <algorithm>
#include <array>
#include <climits>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <variant>

#include "esm/config/environment.hpp"
#include "esm/config/hcl.hpp"
#include "esm/util/duration.hpp"

namespace esm::config {
namespace {

namespace fs = std::filesystem;

// Configuration files are small; anything bigger is a mistake (a log file, a device).
constexpr std::uintmax_t max_file_size = 16 * 1024 * 1024;

std::string quote(std::string_view s) { return "\"" + std::string(s) + "\""; }

bool iequal(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    char x = a[i], y = b[i];
    if (x >= 'A' && x <= 'Z') x = char(x - 'A' + 'a');
    if (y >= 'A' && y <= 'Z') y = char(y - 'A' + 'a');
    if (x != y) return false;
  }
  return true;
}

bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

std::string random_instance_id() {
  std::random_device rd;
  std::array<unsigned char, 16> b{};
  for (std::size_t i = 0; i < b.size(); i += 4) {
    auto v = rd();
    for (std::size_t j = 0; j < 4; ++j) b[i + j] = static_cast<unsigned char>(v >> (8 * j));
  }
  char out[37];
  std::snprintf(out, sizeof out,
                "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1],
                b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14],
                b[15]);
  return out;
}

// --- Field tables -------------------------------------------------------------------------

template <class S>
using target = std::variant<std::string S::*, bool S::*, int S::*, std::int64_t S::*,
                            duration S::*, std::vector<std::string> S::*>;

template <class S>
struct field {
  std::string_view name;
  target<S> member;
};

const field<config> config_fields[] = {
    {"log_level", &config::log_level},
    {"log_json", &config::log_json},
    {"log_file", &config::log_file},
    {"log_rotate_bytes", &config::log_rotate_bytes},
    {"log_rotate_duration", &config::log_rotate_duration},
    {"log_rotate_max_files", &config::log_rotate_max_files},
    {"enable_syslog", &config::enable_syslog},
    {"syslog_facility", &config::syslog_facility},
    {"enable_debug", &config::enable_debug},
    {"enable_agentless", &config::enable_agentless},
    {"instance_id", &config::instance_id},
    {"consul_service", &config::consul_service},
    {"consul_service_tag", &config::consul_service_tag},
    {"consul_kv_path", &config::consul_kv_path},
    {"partition", &config::partition},
    {"node_reconnect_timeout", &config::node_reconnect_timeout},
    {"node_probe_interval", &config::node_probe_interval},
    {"node_health_refresh_interval", &config::node_health_refresh_interval},
    {"node_probe_timeout", &config::node_probe_timeout},
    {"batch_flush_interval", &config::batch_flush_interval},
    {"http_addr", &config::http_addr},
    {"token", &config::token},
    {"datacenter", &config::datacenter},
    {"ca_file", &config::ca_file},
    {"ca_path", &config::ca_path},
    {"cert_file", &config::cert_file},
    {"key_file", &config::key_file},
    {"tls_server_name", &config::tls_server_name},
    {"https_ca_file", &config::https_ca_file},
    {"https_ca_path", &config::https_ca_path},
    {"https_cert_file", &config::https_cert_file},
    {"https_key_file", &config::https_key_file},
    {"client_address", &config::client_address},
    {"ping_type", &config::ping_type},
    {"disable_coordinate_updates", &config::disable_coordinate_updates},
    {"stale_read_nodes", &config::stale_read_nodes},
    {"passing_threshold", &config::passing_threshold},
    {"critical_threshold", &config::critical_threshold},
    {"session_ttl", &config::session_ttl},
    {"lock_delay", &config::lock_delay},
    {"lock_monitor_retries", &config::lock_monitor_retries},
    {"lock_monitor_retry_time", &config::lock_monitor_retry_time},
    {"check_update_interval", &config::check_update_interval},
    {"instance_deregister_after", &config::instance_deregister_after},
    {"blocking_query_wait", &config::blocking_query_wait},
    {"retry_interval", &config::retry_interval},
    {"min_check_interval", &config::min_check_interval},
    {"max_concurrent_probes", &config::max_concurrent_probes},
    {"threshold_mode", &config::threshold_mode},
};

const field<telemetry_config> telemetry_fields[] = {
    {"circonus_api_app", &telemetry_config::circonus_api_app},
    {"circonus_api_token", &telemetry_config::circonus_api_token},
    {"circonus_api_url", &telemetry_config::circonus_api_url},
    {"circonus_broker_id", &telemetry_config::circonus_broker_id},
    {"circonus_broker_select_tag", &telemetry_config::circonus_broker_select_tag},
    {"circonus_check_display_name", &telemetry_config::circonus_check_display_name},
    {"circonus_check_force_metric_activation",
     &telemetry_config::circonus_check_force_metric_activation},
    {"circonus_check_id", &telemetry_config::circonus_check_id},
    {"circonus_check_instance_id", &telemetry_config::circonus_check_instance_id},
    {"circonus_check_search_tag", &telemetry_config::circonus_check_search_tag},
    {"circonus_check_tags", &telemetry_config::circonus_check_tags},
    {"circonus_submission_interval", &telemetry_config::circonus_submission_interval},
    {"circonus_submission_url", &telemetry_config::circonus_submission_url},
    {"disable_hostname", &telemetry_config::disable_hostname},
    {"dogstatsd_addr", &telemetry_config::dogstatsd_addr},
    {"dogstatsd_tags", &telemetry_config::dogstatsd_tags},
    {"filter_default", &telemetry_config::filter_default},
    {"prefix_filter", &telemetry_config::prefix_filter},
    {"metrics_prefix", &telemetry_config::metrics_prefix},
    {"prometheus_retention_time", &telemetry_config::prometheus_retention_time},
    {"statsd_address", &telemetry_config::statsd_address},
    {"statsite_address", &telemetry_config::statsite_address},
};

template <class S, std::size_t N>
const field<S>* find_field(const field<S> (&table)[N], std::string_view name) {
  for (const auto& f : table)
    if (f.name == name) return &f;
  for (const auto& f : table)
    if (iequal(f.name, name)) return &f;
  return nullptr;
}

// --- Decoding -----------------------------------------------------------------------------

class decoder {
 public:
  decoder(config& c, std::string file) : cfg_(c), file_(std::move(file)) {}

  void decode_root(const hcl::node& root) {
    check_single_block(root, "external_node_meta", "only one node_meta block allowed");
    check_single_block(root, "telemetry", "only one telemetry block allowed");
    for (const auto& m : root.members) {
      if (iequal(m.key, "external_node_meta")) {
        decode_node_meta(m);
      } else if (iequal(m.key, "telemetry")) {
        decode_telemetry(m);
      } else if (const auto* f = find_field(config_fields, m.key)) {
        if (m.value.kind == hcl::kind::null) continue;  // JSON null: as if absent
        assign(cfg_, *f, m.value, std::string(f->name));
        cfg_.origins[std::string(f->name)] = where(m.key_pos);
      } else {
        fail(m.key_pos, m.key, "unknown key");
      }
    }
  }

 private:
  [[noreturn]] void fail(hcl::position p, std::string_view key, std::string_view message) const {
    std::string text = "Error loading config: " + file_ + ":" + std::to_string(p.line) + ":" +
                       std::to_string(p.column) + ": ";
    if (!key.empty()) text += std::string(key) + ": ";
    text += message;
    throw config_error(text);
  }

  origin where(hcl::position p) const { return origin{file_, p.line, p.column}; }

  // A block is an object; in JSON (and HCL) a list of objects counts as that many blocks, as
  // hashicorp/hcl v1 flattens them.
  std::vector<const hcl::node*> blocks(const hcl::member& m, std::string_view key) const {
    std::vector<const hcl::node*> out;
    if (m.value.kind == hcl::kind::object) {
      out.push_back(&m.value);
    } else if (m.value.kind == hcl::kind::list) {
      for (const auto& e : m.value.elements) {
        if (e.kind != hcl::kind::object)
          fail(e.pos, key, std::string("expected a block, got ") + std::string(kind_name(e.kind)));
        out.push_back(&e);
      }
    } else if (m.value.kind != hcl::kind::null) {
      fail(m.value.pos, key,
           std::string("expected a block, got ") + std::string(kind_name(m.value.kind)));
    }
    return out;
  }

  void check_single_block(const hcl::node& root, std::string_view name,
                          std::string_view message) const {
    std::size_t seen = 0;
    for (const auto& m : root.members) {
      if (!iequal(m.key, name)) continue;
      auto b = blocks(m, name);
      for (const auto* n : b) {
        if (++seen > 1) fail(n->pos, {}, message);
      }
    }
  }

  void decode_node_meta(const hcl::member& m) {
    auto b = blocks(m, "external_node_meta");
    if (b.empty()) return;
    std::map<std::string, std::string> meta;
    for (const auto& kv : b.front()->members) {
      std::string path = "external_node_meta." + kv.key;
      if (kv.value.kind != hcl::kind::string)
        fail(kv.value.pos, path,
             std::string("expected a string, got ") + std::string(kind_name(kv.value.kind)));
      meta[kv.key] = kv.value.text;
    }
    // Replaces the previous map whole: the default external-node=true goes away.
    cfg_.external_node_meta = std::move(meta);
    cfg_.origins["external_node_meta"] = where(m.key_pos);
  }

  void decode_telemetry(const hcl::member& m) {
    auto b = blocks(m, "telemetry");
    if (b.empty()) return;
    telemetry_config t;
    std::map<std::string, origin> origins;
    for (const auto& kv : b.front()->members) {
      const auto* f = find_field(telemetry_fields, kv.key);
      std::string path = "telemetry." + kv.key;
      if (!f) fail(kv.key_pos, path, "unknown key");
      if (kv.value.kind == hcl::kind::null) continue;
      path = "telemetry." + std::string(f->name);
      assign(t, *f, kv.value, path);
      origins[path] = where(kv.key_pos);
    }
    for (const auto& rule : t.prefix_filter) {
      if (rule.empty()) {
        cfg_.warnings.push_back(file_ + ": telemetry.prefix_filter: empty filter rule ignored");
      } else if (rule[0] == '+') {
        t.allowed_prefixes.push_back(rule.substr(1));
      } else if (rule[0] == '-') {
        t.blocked_prefixes.push_back(rule.substr(1));
      } else {
        cfg_.warnings.push_back(file_ +
                                ": telemetry.prefix_filter: filter rule must begin with either "
                                "'+' or '-': " +
                                quote(rule) + " ignored");
      }
    }
    // A later telemetry block discards every earlier telemetry key.
    cfg_.telemetry = std::move(t);
    std::erase_if(cfg_.origins, [](const auto& kv) { return kv.first.starts_with("telemetry."); });
    cfg_.origins.merge(origins);
    cfg_.origins["telemetry"] = where(m.key_pos);
  }

  std::string got(const hcl::node& n) const {
    return ", got " + std::string(kind_name(n.kind));
  }

  template <class S>
  void assign(S& s, const field<S>& f, const hcl::node& v, const std::string& path) const {
    std::visit(
        [&](auto member) {
          using T = std::remove_reference_t<decltype(s.*member)>;
          s.*member = convert<T>(v, path);
        },
        f.member);
  }

  template <class T>
  T convert(const hcl::node& v, const std::string& path) const {
    if constexpr (std::is_same_v<T, std::string>) {
      if (v.kind != hcl::kind::string) fail(v.pos, path, "expected a string" + got(v));
      return v.text;
    } else if constexpr (std::is_same_v<T, bool>) {
      if (v.kind != hcl::kind::boolean)
        fail(v.pos, path, "expected a boolean (true or false, unquoted)" + got(v));
      return v.boolean;
    } else if constexpr (std::is_same_v<T, int> || std::is_same_v<T, std::int64_t>) {
      if (v.kind != hcl::kind::integer) fail(v.pos, path, "expected an integer" + got(v));
      if constexpr (std::is_same_v<T, int>) {
        if (v.integer < INT_MIN || v.integer > INT_MAX) fail(v.pos, path, "integer out of range");
      }
      return T(v.integer);
    } else if constexpr (std::is_same_v<T, duration>) {
      if (v.kind != hcl::kind::string)
        fail(v.pos, path,
             "expected a duration string in Go syntax such as \"10s\" or \"1h30m\"" + got(v));
      std::string err;
      auto d = esm::util::parse_go_duration(v.text, &err);
      if (!d) fail(v.pos, path, "invalid duration: " + quote(v.text) + ": " + err);
      return *d;
    } else {
      static_assert(std::is_same_v<T, std::vector<std::string>>);
      if (v.kind != hcl::kind::list) fail(v.pos, path, "expected a list of strings" + got(v));
      T out;
      for (const auto& e : v.elements) {
        if (e.kind != hcl::kind::string) fail(e.pos, path, "expected a list of strings" + got(e));
        out.push_back(e.text);
      }
      return out;
    }
  }

  config& cfg_;
  std::string file_;
};

// --- Files and directories -----------------------------------------------------------------

[[noreturn]] void io_fail(std::string_view what, const std::string& path, const std::string& why) {
  throw config_error("Error loading config: " + std::string(what) + " " + quote(path) + ": " + why);
}

void visit_file(config& c, const std::string& path, const std::string& name, bool explicit_file) {
  // consul-esm reads only these, even when a file is named explicitly.
  if (!ends_with(name, ".json") && !ends_with(name, ".hcl")) {
    if (explicit_file)
      c.warnings.push_back("ignored " + quote(path) +
                           ": only files ending in .hcl or .json are read");
    return;
  }
  std::error_code ec;
  auto size = fs::file_size(path, ec);
  if (ec) io_fail("error reading", path, ec.message());
  if (size == 0) return;
  if (size > max_file_size) io_fail("error reading", path, "file larger than 16 MiB");
  std::ifstream in(path, std::ios::binary);
  if (!in) io_fail("error reading", path, "cannot open file");
  std::string text;
  text.resize(static_cast<std::size_t>(size));
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  text.resize(static_cast<std::size_t>(in.gcount()));
  if (in.bad()) io_fail("error reading", path, "read failed");
  if (text.empty()) return;
  merge_text(c, text, path);
}

void visit_path(config& c, const std::string& path) {
  std::error_code ec;
  auto st = fs::status(path, ec);
  if (ec) io_fail("error reading", path, ec.message());
  if (!fs::is_directory(st)) {
    visit_file(c, path, fs::path(path).filename().string(), true);
    return;
  }
  std::vector<std::string> names;
  fs::directory_iterator it(path, ec);
  for (; !ec && it != fs::directory_iterator(); it.increment(ec)) {
    std::error_code dir_ec;
    if (it->is_directory(dir_ec)) continue;  // not recursive
    names.push_back(it->path().filename().string());
  }
  if (ec) io_fail("error listing", path, ec.message());
  std::sort(names.begin(), names.end());  // byte-wise, like Go's sort of file names
  for (const auto& n : names) visit_file(c, (fs::path(path) / n).string(), n, false);
}

config load(const std::vector<std::string>& paths, const env_lookup& env,
            const config* previous) {
  config c;
  c.instance_id = previous ? previous->instance_id : random_instance_id();
  c.max_concurrent_probes = default_max_concurrent_probes();
  for (const auto& p : paths) visit_path(c, p);

  if (!c.consul_kv_path.ends_with('/')) c.consul_kv_path += '/';
  // consul-esm: a negative batch_flush_interval means the default.
  if (c.batch_flush_interval < duration::zero()) c.batch_flush_interval = 500ms;

  // consul-esm documents CONSUL_ENABLEAGENTLESS but never reads it. Here it works, and an
  // explicit enable_agentless in a file wins over it (files are the more specific source).
  if (!c.origins.contains("enable_agentless"))
    c.enable_agentless = env_bool(env, "CONSUL_ENABLEAGENTLESS", c.enable_agentless);

  validate(c);
  c.consul = connection_options(c, env);
  return c;
}

}  // namespace

std::string to_string(const origin& o) {
  return o.file + ":" + std::to_string(o.line) + ":" + std::to_string(o.column);
}

std::int64_t default_max_concurrent_probes() {
  // Each probe may hold a socket and, for TLS or gRPC, a second descriptor; 64 stay for Consul
  // connections, logs and the listener.
  constexpr std::int64_t reserve = 64;
  constexpr std::int64_t ceiling = 1'000'000;
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return 512;
  std::int64_t soft =
      rl.rlim_cur == RLIM_INFINITY ? ceiling * 2 + reserve : static_cast<std::int64_t>(rl.rlim_cur);
  return std::clamp<std::int64_t>((soft - reserve) / 2, 1, ceiling);
}

void merge_text(config& into, std::string_view text, const std::string& name) {
  auto parsed = hcl::parse(text);
  if (parsed.error) {
    throw config_error("Error loading config: " + name + ":" + std::to_string(parsed.error->pos.line) +
                       ":" + std::to_string(parsed.error->pos.column) + ": " +
                       parsed.error->message);
  }
  decoder(into, name).decode_root(parsed.root);
}

config load_config(const std::vector<std::string>& paths, const env_lookup& env) {
  return load(paths, env, nullptr);
}

config reload_config(const std::vector<std::string>& paths, const env_lookup& env,
                     const config& previous) {
  return load(paths, env, &previous);
}

void validate(const config& c) {
  auto fail = [&](std::string_view key, std::string message) {
    auto o = c.origins.find(std::string(key));
    std::string text = "Error parsing config: ";
    if (o != c.origins.end()) text += to_string(o->second) + ": ";
    throw config_error(text + message);
  };
  auto positive = [&](std::string_view key, duration d) {
    if (d <= duration::zero()) fail(key, std::string(key) + " must be greater than 0");
  };
  auto not_negative = [&](std::string_view key, auto v, auto zero) {
    if (v < zero) fail(key, std::string(key) + " cannot be negative");
  };

  // consul-esm's rules, with its messages, in its order.
  if (c.ping_type != "udp" && c.ping_type != "socket")
    fail("ping_type", "ping_type must be one of either \"udp\" or \"socket\"");
  if (c.node_probe_interval < 1s)
    fail("node_probe_interval", "node_probe_interval cannot be lower than 1 second");
  if (c.passing_threshold < 0) fail("passing_threshold", "passing_threshold cannot be negative");
  if (c.critical_threshold < 0)
    fail("critical_threshold", "critical_threshold cannot be negative");

  // consul-esm exits without a word on a bad level; say what is wrong instead.
  if (!esm::log::parse_level(c.log_level))
    fail("log_level", "log_level " + quote(c.log_level) +
                          " is not one of TRACE, DEBUG, INFO, WARN, ERR or ERROR");
  not_negative("log_rotate_bytes", c.log_rotate_bytes, std::int64_t{0});
  not_negative("log_rotate_duration", c.log_rotate_duration, duration::zero());
  if (c.log_rotate_max_files < -1)
    fail("log_rotate_max_files",
         "log_rotate_max_files cannot be lower than -1 (0 keeps all, -1 deletes archives)");
  if (c.instance_id.empty()) fail("instance_id", "instance_id cannot be empty");
  if (c.consul_service.empty()) fail("consul_service", "consul_service cannot be empty");
  not_negative("node_reconnect_timeout", c.node_reconnect_timeout, duration::zero());
  not_negative("node_health_refresh_interval", c.node_health_refresh_interval, duration::zero());

  // esmd's keys.
  if (c.session_ttl < 10s || c.session_ttl > 24h)
    fail("session_ttl", "session_ttl must be between 10s and 24h (Consul's session TTL limits)");
  if (c.lock_delay < 0s || c.lock_delay > 60s)
    fail("lock_delay", "lock_delay must be between 0s and 60s (Consul's lock-delay limits)");
  not_negative("lock_monitor_retries", c.lock_monitor_retries, 0);
  positive("lock_monitor_retry_time", c.lock_monitor_retry_time);
  not_negative("check_update_interval", c.check_update_interval, duration::zero());
  positive("instance_deregister_after", c.instance_deregister_after);
  positive("blocking_query_wait", c.blocking_query_wait);
  if (c.blocking_query_wait > 10min)
    fail("blocking_query_wait",
         "blocking_query_wait cannot be above 10m (Consul's maximum wait)");
  positive("retry_interval", c.retry_interval);
  positive("min_check_interval", c.min_check_interval);
  positive("node_probe_timeout", c.node_probe_timeout);
  if (c.max_concurrent_probes < 1)
    fail("max_concurrent_probes", "max_concurrent_probes must be at least 1");
  if (c.threshold_mode != "consul" && c.threshold_mode != "legacy")
    fail("threshold_mode", "threshold_mode must be one of either \"consul\" or \"legacy\"");
}

esm::log::settings log_settings(const config& c) {
  esm::log::settings s;
  s.min_level = esm::log::parse_level(c.log_level).value_or(esm::log::level::info);
  s.json = c.log_json;
  s.file = c.log_file;
  // Consul's logging: a directory (trailing '/') gets the file name consul.log.
  if (!s.file.empty() && s.file.back() == '/') s.file += "consul.log";
  s.rotate_bytes = c.log_rotate_bytes;
  s.rotate_duration = c.log_rotate_duration;
  s.rotate_max_files = c.log_rotate_max_files;
  s.syslog = c.enable_syslog;
  s.syslog_facility = c.syslog_facility;
  return s;
}

}  // namespace esm::config
