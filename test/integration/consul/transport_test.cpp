// The client's transports against a real Consul: HTTPS (CA verification, server name, client
// certificate required by Consul) and a unix socket.
#include <doctest/doctest.h>

#include <cstdlib>
#include <fstream>

#include <boost/asio/io_context.hpp>

#include "async.hpp"
#include "consul_fixture.hpp"
#include "esm/consul/client.hpp"
#include "result_string.hpp"

namespace asio = boost::asio;
using namespace esm::consul;
using namespace std::chrono_literals;
using esm::test::run;

namespace {

// A CA, a server certificate for 127.0.0.1 / server.dc1.consul, and a client certificate.
struct test_pki {
  esm::test::temp_dir dir;
  std::string ca, server_cert, server_key, client_cert, client_key;

  test_pki() {
    auto d = dir.path();
    ca = d + "/ca.pem";
    server_cert = d + "/server.pem";
    server_key = d + "/server.key";
    client_cert = d + "/client.pem";
    client_key = d + "/client.key";
    std::ofstream(d + "/server.ext") << "subjectAltName=DNS:server.dc1.consul,DNS:localhost,IP:127.0.0.1\n";
    std::ofstream(d + "/client.ext") << "extendedKeyUsage=clientAuth\n";
    std::string q = " >/dev/null 2>&1";
    std::string cmds =
        "cd '" + d + "' && "
        "openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 -subj '/CN=esmd test CA'" + q + " && "
        "openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj '/CN=server.dc1.consul'" + q + " && "
        "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 2 -extfile server.ext" + q + " && "
        "openssl req -newkey rsa:2048 -nodes -keyout client.key -out client.csr -subj '/CN=esmd'" + q + " && "
        "openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out client.pem -days 2 -extfile client.ext" + q;
    if (std::system(cmds.c_str()) != 0) throw std::runtime_error("openssl could not make the test certificates");
  }
};

test_pki& pki() {
  static test_pki p;
  return p;
}

struct tls_agent {
  int https_port = esm::test::free_port();
  esm::test::temp_dir sock_dir;
  std::string sock = sock_dir.path() + "/consul.sock";
  esm::test::consul_dev_agent agent;

  tls_agent()
      : agent({"-hcl=ports { https = " + std::to_string(https_port) + " } " +
               "addresses { http = \"127.0.0.1 unix://" + sock + "\" } " +
               "key_file = \"" + pki().server_key + "\" cert_file = \"" + pki().server_cert +
               "\" ca_file = \"" + pki().ca + "\" verify_incoming_https = true"}) {}
};

tls_agent& agent() {
  static tls_agent a;
  return a;
}

connection_options https_options() {
  connection_options o;
  o.scheme = "https";
  o.address = "127.0.0.1:" + std::to_string(agent().https_port);
  o.tls.ca_file = pki().ca;
  o.tls.cert_file = pki().client_cert;
  o.tls.key_file = pki().client_key;
  o.request_timeout = 5s;
  return o;
}

}  // namespace

TEST_CASE("HTTPS with a verified server certificate and a client certificate") {
  asio::io_context io;
  client c(io.get_executor(), https_options());
  run(io, [&]() -> asio::awaitable<void> {
    auto leader = co_await c.status_leader();
    REQUIRE(leader);
    CHECK_FALSE(leader->empty());
    REQUIRE(co_await c.kv_put("tls/k", "v"));
    auto got = co_await c.kv_get("tls/k");
    REQUIRE(got);
    REQUIRE(got->value);
    CHECK(got->value->value == "v");
    CHECK(c.http().stats().connections_opened == 1);  // one TLS session, kept alive
  }());
}

TEST_CASE("HTTPS: the server name is verified; a CA directory works like a CA file") {
  asio::io_context io;
  auto wrong = https_options();
  wrong.tls.server_name = "other.example";
  client bad(io.get_executor(), wrong);
  auto by_name = https_options();
  by_name.tls.server_name = "server.dc1.consul";
  client good(io.get_executor(), by_name);
  esm::test::temp_dir ca_dir;
  std::ifstream in(pki().ca);
  std::ofstream(ca_dir.path() + "/ca.crt") << in.rdbuf();
  auto dir_opts = https_options();
  dir_opts.tls.ca_file.clear();
  dir_opts.tls.ca_path = ca_dir.path();
  client from_dir(io.get_executor(), dir_opts);
  run(io, [&]() -> asio::awaitable<void> {
    auto r = co_await bad.status_leader();
    REQUIRE_FALSE(r);
    CHECK(r.error().to_string().find("TLS handshake") != std::string::npos);
    CHECK(co_await good.status_leader());
    CHECK(co_await from_dir.status_leader());
  }());
}

TEST_CASE("HTTPS: without the CA verification fails, unless verification is disabled") {
  asio::io_context io;
  auto untrusted = https_options();
  untrusted.tls.ca_file.clear();
  client strict(io.get_executor(), untrusted);
  auto insecure = untrusted;
  insecure.tls.verify = false;
  client lax(io.get_executor(), insecure);
  run(io, [&]() -> asio::awaitable<void> {
    auto r = co_await strict.status_leader();
    REQUIRE_FALSE(r);
    CHECK_FALSE(r.error().is_cancelled());
    CHECK(co_await lax.status_leader());
  }());
}

TEST_CASE("HTTPS: Consul refuses a client without a certificate") {
  asio::io_context io;
  auto no_cert = https_options();
  no_cert.tls.cert_file.clear();
  no_cert.tls.key_file.clear();
  client c(io.get_executor(), no_cert);
  run(io, [&]() -> asio::awaitable<void> {
    auto r = co_await c.status_leader();
    CHECK_FALSE(r);
  }());
}

TEST_CASE("a unix socket address") {
  asio::io_context io;
  connection_options o;
  o.scheme = "unix";
  o.address = agent().sock;
  client c(io.get_executor(), o);
  run(io, [&]() -> asio::awaitable<void> {
    auto leader = co_await c.status_leader();
    REQUIRE(leader);
    CHECK_FALSE(leader->empty());
    REQUIRE(co_await c.kv_put("unix/k", "v"));
    auto got = co_await c.kv_get("unix/k");
    REQUIRE(got);
    REQUIRE(got->value);
    CHECK(got->value->value == "v");
  }());
}
