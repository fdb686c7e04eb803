#include <doctest/doctest.h>

#include "esm/config/config.hpp"
#include "helpers.hpp"

using namespace esm::config;
using esm::config::test::error_of;
using esm::config::test::fake_env;
using esm::config::test::load_text;
using esm::config::test::temp_dir;

namespace {

bool contains(const std::string& s, std::string_view part) {
  return s.find(part) != std::string::npos;
}

esm::consul::connection_options conn(std::map<std::string, std::string> env,
                                     std::string_view file = "") {
  return load_text(file, "test.hcl", fake_env(std::move(env))).consul;
}

}  // namespace

TEST_CASE("environment: nothing set gives the Consul API client's defaults") {
  auto o = conn({});
  CHECK(o.scheme == "http");
  CHECK(o.address == "127.0.0.1:8500");
  CHECK(o.path_prefix.empty());
  CHECK(o.token.empty());
  CHECK(o.http_auth.empty());
  CHECK(o.datacenter.empty());
  CHECK(o.partition.empty());
  CHECK(o.name_space.empty());
  CHECK(o.tls.verify);
  CHECK(o.tls.ca_file.empty());
}

TEST_CASE("environment: every CONSUL_* variable is read") {
  auto o = conn({{"CONSUL_HTTP_ADDR", "consul.local:8501"},
                 {"CONSUL_HTTP_TOKEN", "env-token"},
                 {"CONSUL_HTTP_AUTH", "user:pass"},
                 {"CONSUL_HTTP_SSL", "true"},
                 {"CONSUL_HTTP_SSL_VERIFY", "false"},
                 {"CONSUL_CACERT", "/ca.pem"},
                 {"CONSUL_CAPATH", "/ca.d"},
                 {"CONSUL_CLIENT_CERT", "/c.pem"},
                 {"CONSUL_CLIENT_KEY", "/k.pem"},
                 {"CONSUL_TLS_SERVER_NAME", "consul.example:8501"},
                 {"CONSUL_NAMESPACE", "ns1"},
                 {"CONSUL_PARTITION", "p1"}});
  CHECK(o.scheme == "https");
  CHECK(o.address == "consul.local:8501");
  CHECK(o.token == "env-token");
  CHECK(o.http_auth == "user:pass");
  CHECK_FALSE(o.tls.verify);
  CHECK(o.tls.ca_file == "/ca.pem");
  CHECK(o.tls.ca_path == "/ca.d");
  CHECK(o.tls.cert_file == "/c.pem");
  CHECK(o.tls.key_file == "/k.pem");
  CHECK(o.tls.server_name == "consul.example");  // port stripped
  CHECK(o.name_space == "ns1");
  CHECK(o.partition == "p1");
}

TEST_CASE("environment: non-empty file values override it; empty ones do not") {
  std::map<std::string, std::string> env{{"CONSUL_HTTP_ADDR", "env:1"},
                                         {"CONSUL_HTTP_TOKEN", "env-token"},
                                         {"CONSUL_PARTITION", "env-part"},
                                         {"CONSUL_CACERT", "/env-ca"},
                                         {"CONSUL_CAPATH", "/env-capath"},
                                         {"CONSUL_CLIENT_CERT", "/env-cert"},
                                         {"CONSUL_CLIENT_KEY", "/env-key"},
                                         {"CONSUL_TLS_SERVER_NAME", "env-name"}};
  auto o = conn(env, R"(
http_addr = "file:2"
token = "file-token"
datacenter = "dc9"
partition = "file-part"
ca_file = "/file-ca"
ca_path = "/file-capath"
cert_file = "/file-cert"
key_file = "/file-key"
tls_server_name = "file-name"
)");
  CHECK(o.address == "file:2");
  CHECK(o.token == "file-token");
  CHECK(o.datacenter == "dc9");
  CHECK(o.partition == "file-part");
  CHECK(o.tls.ca_file == "/file-ca");
  CHECK(o.tls.ca_path == "/file-capath");
  CHECK(o.tls.cert_file == "/file-cert");
  CHECK(o.tls.key_file == "/file-key");
  CHECK(o.tls.server_name == "file-name");
  auto e = conn(env, "token = \"\"\npartition = \"\"\nhttp_addr = \"\"");
  CHECK(e.address == "env:1");
  CHECK(e.token == "env-token");
  CHECK(e.partition == "env-part");
  // Empty environment values count as unset.
  CHECK(conn({{"CONSUL_HTTP_ADDR", ""}}).address == "127.0.0.1:8500");
}

TEST_CASE("environment: CONSUL_HTTP_TOKEN_FILE beats the token key and CONSUL_HTTP_TOKEN") {
  temp_dir d;
  auto file = d.write("token", "  file-token\n");
  auto o = conn({{"CONSUL_HTTP_TOKEN_FILE", file}, {"CONSUL_HTTP_TOKEN", "env-token"}},
                R"(token = "config-token")");
  CHECK(o.token == "file-token");
  // An empty token file leaves the other sources in charge.
  auto empty = d.write("empty", "\n");
  CHECK(conn({{"CONSUL_HTTP_TOKEN_FILE", empty}}, R"(token = "config-token")").token ==
        "config-token");
  auto e = error_of([] { conn({{"CONSUL_HTTP_TOKEN_FILE", "/nonexistent/token"}}); });
  CHECK(contains(e, "/nonexistent/token"));
  CHECK(contains(e, "CONSUL_HTTP_TOKEN_FILE"));
}

TEST_CASE("environment: address schemes and path prefix") {
  auto o = conn({{"CONSUL_HTTP_ADDR", "https://consul.example:8501/prefix/"}});
  CHECK(o.scheme == "https");
  CHECK(o.address == "consul.example:8501");
  CHECK(o.path_prefix == "/prefix");
  o = conn({}, R"(http_addr = "https://h/a/b")");
  CHECK(o.path_prefix == "/a/b");
  o = conn({}, R"(http_addr = "http://h:1")");
  CHECK(o.scheme == "http");
  CHECK(o.address == "h:1");
  CHECK(o.path_prefix.empty());
  o = conn({}, R"(http_addr = "unix:///var/run/consul.sock")");
  CHECK(o.scheme == "unix");
  CHECK(o.address == "/var/run/consul.sock");
  CHECK(o.path_prefix.empty());
  // No scheme: http unless CONSUL_HTTP_SSL=true.
  CHECK(conn({}, R"(http_addr = "h:1")").scheme == "http");
  CHECK(conn({{"CONSUL_HTTP_SSL", "1"}}, R"(http_addr = "h:1")").scheme == "https");
  CHECK(conn({{"CONSUL_HTTP_SSL", "false"}}, R"(http_addr = "h:1")").scheme == "http");
  // http:// never turns off TLS that CONSUL_HTTP_SSL asked for (Consul API client rule).
  CHECK(conn({{"CONSUL_HTTP_SSL", "true"}}, R"(http_addr = "http://h:1")").scheme == "https");
  auto e = error_of([] { conn({}, R"(http_addr = "ftp://h:1")"); });
  CHECK(contains(e, "http_addr: unknown protocol scheme \"ftp\""));
  e = error_of([] { conn({{"CONSUL_HTTP_ADDR", "gopher://x"}}); });
  CHECK(contains(e, "CONSUL_HTTP_ADDR: unknown protocol scheme"));
  e = error_of([] { conn({}, R"(http_addr = "https://")"); });
  CHECK(contains(e, "http_addr: no host or socket path given"));
}

TEST_CASE("environment: tls server name loses its port, IPv6 brackets too") {
  CHECK(conn({}, R"(tls_server_name = "name")").tls.server_name == "name");
  CHECK(conn({}, R"(tls_server_name = "name:443")").tls.server_name == "name");
  CHECK(conn({}, R"(tls_server_name = "[::1]:443")").tls.server_name == "::1");
  CHECK(conn({}, R"(tls_server_name = "::1")").tls.server_name == "::1");
}

TEST_CASE("environment: booleans use Go's ParseBool; a typo is an error, not a silent downgrade") {
  for (auto v : {"1", "t", "T", "TRUE", "true", "True"})
    CHECK(conn({{"CONSUL_HTTP_SSL", v}}).scheme == "https");
  for (auto v : {"0", "f", "F", "FALSE", "false", "False"}) {
    CHECK(conn({{"CONSUL_HTTP_SSL", v}}).scheme == "http");
    CHECK_FALSE(conn({{"CONSUL_HTTP_SSL_VERIFY", v}}).tls.verify);
  }
  CHECK(conn({{"CONSUL_HTTP_SSL_VERIFY", "true"}}).tls.verify);
  auto e = error_of([] { conn({{"CONSUL_HTTP_SSL_VERIFY", "no"}}); });
  CHECK(contains(e, "CONSUL_HTTP_SSL_VERIFY: invalid boolean value \"no\""));
  e = error_of([] { conn({{"CONSUL_HTTP_SSL", "yes"}}); });
  CHECK(contains(e, "CONSUL_HTTP_SSL: invalid boolean value \"yes\""));
}

TEST_CASE("environment: CONSUL_ENABLEAGENTLESS works unless the file sets enable_agentless") {
  CHECK(load_text("", "t.hcl", fake_env({{"CONSUL_ENABLEAGENTLESS", "true"}})).enable_agentless);
  CHECK(load_text("", "t.hcl", fake_env({{"CONSUL_ENABLEAGENTLESS", "1"}})).enable_agentless);
  CHECK_FALSE(load_text("", "t.hcl", fake_env({{"CONSUL_ENABLEAGENTLESS", "false"}})).enable_agentless);
  CHECK_FALSE(load_text("enable_agentless = false", "t.hcl",
                        fake_env({{"CONSUL_ENABLEAGENTLESS", "true"}}))
                  .enable_agentless);
  CHECK(load_text("enable_agentless = true", "t.hcl",
                  fake_env({{"CONSUL_ENABLEAGENTLESS", "false"}}))
            .enable_agentless);
  auto e = error_of([] { load_text("", "t.hcl", fake_env({{"CONSUL_ENABLEAGENTLESS", "on"}})); });
  CHECK(contains(e, "CONSUL_ENABLEAGENTLESS: invalid boolean value \"on\""));
}

TEST_CASE("environment: the process environment adapter reads real variables") {
  auto env = process_environment();
  CHECK(env("PATH").has_value());
  CHECK_FALSE(env("ESM_CONFIG_TEST_SURELY_UNSET_VARIABLE").has_value());
}
