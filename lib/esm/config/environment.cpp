// The CONSUL_* environment, read as the Consul API client consul-esm links reads it, combined
// with the configuration file into the connection options of the Consul client.
#include "esm/config/environment.hpp"

#include <cstdlib>
#include <fstream>
#include <sstream>

namespace esm::config {
namespace {

std::string quote(std::string_view s) { return "\"" + std::string(s) + "\""; }

std::optional<std::string> nonempty(const env_lookup& env, std::string_view name) {
  if (!env) return std::nullopt;
  auto v = env(name);
  if (!v || v->empty()) return std::nullopt;
  return v;
}

std::string strip_port(const std::string& address) {
  if (!address.empty() && address.front() == '[') {
    auto end = address.find(']');
    if (end != std::string::npos) return address.substr(1, end - 1);
    return address;
  }
  auto colon = address.find(':');
  if (colon != std::string::npos && address.find(':', colon + 1) == std::string::npos)
    return address.substr(0, colon);
  return address;
}

std::string trim(std::string_view s) {
  auto is_space = [](char ch) {
    return ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r' || ch == '\v' || ch == '\f';
  };
  while (!s.empty() && is_space(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_space(s.back())) s.remove_suffix(1);
  return std::string(s);
}

}  // namespace

// Go's strconv.ParseBool: the Consul API client's reading of CONSUL_HTTP_SSL(_VERIFY) and the
// flag package's reading of -flag=value.
std::optional<bool> parse_go_bool(std::string_view s) {
  if (s == "1" || s == "t" || s == "T" || s == "TRUE" || s == "true" || s == "True") return true;
  if (s == "0" || s == "f" || s == "F" || s == "FALSE" || s == "false" || s == "False")
    return false;
  return std::nullopt;
}

bool env_bool(const env_lookup& env, std::string_view name, bool fallback) {
  auto v = nonempty(env, name);
  if (!v) return fallback;
  auto b = parse_go_bool(*v);
  // consul-esm only warns here; for CONSUL_HTTP_SSL_VERIFY an unparsable value even turns
  // verification off. A typo in a security setting must stop the start instead.
  if (!b)
    throw config_error("Error in environment: " + std::string(name) + ": invalid boolean value " +
                       quote(*v) + " (use true or false)");
  return *b;
}

env_lookup process_environment() {
  return [](std::string_view name) -> std::optional<std::string> {
    const char* v = std::getenv(std::string(name).c_str());
    if (!v) return std::nullopt;
    return std::string(v);
  };
}

esm::consul::connection_options connection_options(const config& c, const env_lookup& env) {
  esm::consul::connection_options o;
  std::string address = o.address;
  std::string address_source = "default";
  if (auto v = nonempty(env, "CONSUL_HTTP_ADDR")) {
    address = *v;
    address_source = "CONSUL_HTTP_ADDR";
  }
  auto token_file = nonempty(env, "CONSUL_HTTP_TOKEN_FILE");
  if (auto v = nonempty(env, "CONSUL_HTTP_TOKEN")) o.token = *v;
  if (auto v = nonempty(env, "CONSUL_HTTP_AUTH")) o.http_auth = *v;
  bool ssl = env_bool(env, "CONSUL_HTTP_SSL", false);
  if (auto v = nonempty(env, "CONSUL_TLS_SERVER_NAME")) o.tls.server_name = *v;
  if (auto v = nonempty(env, "CONSUL_CACERT")) o.tls.ca_file = *v;
  if (auto v = nonempty(env, "CONSUL_CAPATH")) o.tls.ca_path = *v;
  if (auto v = nonempty(env, "CONSUL_CLIENT_CERT")) o.tls.cert_file = *v;
  if (auto v = nonempty(env, "CONSUL_CLIENT_KEY")) o.tls.key_file = *v;
  o.tls.verify = env_bool(env, "CONSUL_HTTP_SSL_VERIFY", true);
  if (auto v = nonempty(env, "CONSUL_NAMESPACE")) o.name_space = *v;
  if (auto v = nonempty(env, "CONSUL_PARTITION")) o.partition = *v;

  // Non-empty file values win over the environment.
  if (!c.http_addr.empty()) {
    address = c.http_addr;
    address_source = "http_addr";
  }
  if (!c.token.empty()) o.token = c.token;
  if (!c.datacenter.empty()) o.datacenter = c.datacenter;
  if (!c.partition.empty()) o.partition = c.partition;
  if (!c.ca_file.empty()) o.tls.ca_file = c.ca_file;
  if (!c.ca_path.empty()) o.tls.ca_path = c.ca_path;
  if (!c.cert_file.empty()) o.tls.cert_file = c.cert_file;
  if (!c.key_file.empty()) o.tls.key_file = c.key_file;
  if (!c.tls_server_name.empty()) o.tls.server_name = c.tls_server_name;
  o.tls.server_name = strip_port(o.tls.server_name);

  // CONSUL_HTTP_TOKEN_FILE beats both the token key and CONSUL_HTTP_TOKEN, as in the Consul
  // API client; an empty file leaves the token as it was.
  if (token_file) {
    std::ifstream in(*token_file, std::ios::binary);
    if (!in)
      throw config_error("Error loading token file " + quote(*token_file) +
                         " (CONSUL_HTTP_TOKEN_FILE): cannot open file");
    std::ostringstream ss;
    ss << in.rdbuf();
    if (auto t = trim(ss.str()); !t.empty()) o.token = t;
  }

  o.scheme = ssl ? "https" : "http";
  if (auto sep = address.find("://"); sep != std::string::npos) {
    std::string scheme = address.substr(0, sep);
    std::string rest = address.substr(sep + 3);
    if (scheme == "unix") {
      o.scheme = "unix";
      o.address = rest;
    } else if (scheme == "http" || scheme == "https") {
      // http:// never turns off TLS requested by CONSUL_HTTP_SSL (Consul API client rule).
      if (scheme == "https") o.scheme = "https";
      if (auto slash = rest.find('/'); slash != std::string::npos) {
        std::string prefix = rest.substr(slash + 1);
        while (!prefix.empty() && prefix.back() == '/') prefix.pop_back();
        o.path_prefix = prefix.empty() ? "" : "/" + prefix;
        rest.resize(slash);
      }
      o.address = rest;
    } else {
      throw config_error("Error parsing config: " + address_source + ": unknown protocol scheme " +
                         quote(scheme) + " (use http://, https:// or unix://)");
    }
  } else {
    o.address = address;
  }
  if (o.address.empty())
    throw config_error("Error parsing config: " + address_source +
                       ": no host or socket path given");
  return o;
}

}  // namespace esm::config
