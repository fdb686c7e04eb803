// `esmd -healthcheck`'s address handling and its failure answers (the 200 path is exercised
// against the real daemon in integration_esmd).
#include <doctest/doctest.h>

#include <sstream>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>

#include "esm/telemetry/health_probe.hpp"

using esm::telemetry::health_probe_target;
using esm::telemetry::probe_health;
using namespace std::chrono_literals;

TEST_CASE("an admin server on every interface is asked on loopback") {
  CHECK(health_probe_target(":8080").host == "127.0.0.1");
  CHECK(health_probe_target(":8080").port == "8080");
  CHECK(health_probe_target("0.0.0.0:9000").host == "127.0.0.1");
  CHECK(health_probe_target("[::]:9000").host == "::1");
  CHECK(health_probe_target("[::1]:9000").host == "::1");
  CHECK(health_probe_target("10.1.2.3:80").host == "10.1.2.3");
  CHECK(health_probe_target("esmd.local:80").host == "esmd.local");
  CHECK(health_probe_target("no-port").host.empty());
  CHECK(health_probe_target("::1:80").host.empty());  // IPv6 needs brackets
}

TEST_CASE("no admin server, a malformed address or a closed port answer 1 with the reason") {
  std::ostringstream err;
  CHECK(probe_health("", 1s, err) == 1);
  CHECK(err.str().find("client_address is not set") != std::string::npos);
  err.str("");
  CHECK(probe_health("nonsense", 1s, err) == 1);
  CHECK(err.str().find("not a host:port address") != std::string::npos);
  // A port that was just free: nothing listens there.
  unsigned short port;
  {
    boost::asio::io_context io;
    boost::asio::ip::tcp::acceptor a(io, {boost::asio::ip::address_v4::loopback(), 0});
    port = a.local_endpoint().port();
  }
  err.str("");
  CHECK(probe_health("127.0.0.1:" + std::to_string(port), 2s, err) == 1);
  CHECK(err.str().find("no answer from http://127.0.0.1:" + std::to_string(port) + "/healthz") != std::string::npos);
}

TEST_CASE("a peer that accepts and never answers is cut off at the timeout") {
  boost::asio::io_context io;
  boost::asio::ip::tcp::acceptor a(io, {boost::asio::ip::address_v4::loopback(), 0});  // backlog accepts
  std::ostringstream err;
  auto start = std::chrono::steady_clock::now();
  CHECK(probe_health("127.0.0.1:" + std::to_string(a.local_endpoint().port()), 300ms, err) == 1);
  auto took = std::chrono::steady_clock::now() - start;
  CHECK(took < 3s);
  CHECK(err.str().find("no answer") != std::string::npos);
}
