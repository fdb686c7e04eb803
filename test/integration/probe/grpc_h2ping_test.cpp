// gRPC health and H2PING probes against a real grpc++ server (a child process on
// 127.0.0.1), plaintext and TLS.

#include <doctest/doctest.h>

#include <boost/asio/ssl/context.hpp>

#include "support.hpp"

using namespace probe_test;
using esm::probe::check_status;
using esm::probe::grpc_spec;
using esm::probe::h2ping_spec;
using esm::probe::probe_context;

namespace {

std::string start_args_port(child_process& p) {
  REQUIRE_MESSAGE(!p.first_line().empty(), "the gRPC server did not start");
  return p.first_line();
}

}  // namespace

TEST_CASE("grpc: serving, not serving and unknown services over h2c") {
  child_process server({GRPC_HEALTH_SERVER, "--serving=", "--serving=up", "--not-serving=down"});
  std::string addr = "127.0.0.1:" + start_args_port(server);
  asio::io_context ioc;
  probe_context ctx;

  grpc_spec whole{.target = addr};
  auto r = run_one(ioc, whole, ctx);
  CHECK(r.status == check_status::passing);
  CHECK(r.output == "gRPC check " + addr + ": success");

  grpc_spec up{.target = addr + "/up"};
  r = run_one(ioc, up, ctx);
  CHECK(r.status == check_status::passing);
  CHECK(r.output == "gRPC check " + addr + "/up: success");

  grpc_spec down{.target = addr + "/down"};
  r = run_one(ioc, down, ctx);
  CHECK(r.status == check_status::critical);
  CHECK(r.output == "gRPC " + addr + "/down serving status: NOT_SERVING");

  grpc_spec unknown{.target = addr + "/nope"};
  r = run_one(ioc, unknown, ctx);
  CHECK(r.status == check_status::critical);
  // grpc++'s own text, carried in grpc-message.
  CHECK(r.output == "rpc error: code = NotFound desc = service name unknown");
}

TEST_CASE("grpc: the whole server not serving") {
  child_process server({GRPC_HEALTH_SERVER, "--not-serving="});
  std::string addr = "127.0.0.1:" + start_args_port(server);
  asio::io_context ioc;
  probe_context ctx;
  grpc_spec whole{.target = addr};
  auto r = run_one(ioc, whole, ctx);
  CHECK(r.status == check_status::critical);
  CHECK(r.output == "gRPC " + addr + " serving status: NOT_SERVING");
}

TEST_CASE("grpc over TLS (ALPN h2): trusted, untrusted, skip-verify") {
  test_pki pki;
  child_process server({GRPC_HEALTH_SERVER, "--tls", pki.server_pem, pki.server_key,
                        "--serving=", "--not-serving=down"});
  std::string addr = "127.0.0.1:" + start_args_port(server);
  asio::io_context ioc;
  probe_context trusting({.ca_file = pki.ca_pem});
  grpc_spec s{.target = addr, .use_tls = true};
  auto r = run_one(ioc, s, trusting);
  CHECK(r.status == check_status::passing);
  CHECK(r.output == "gRPC check " + addr + ": success");

  grpc_spec down{.target = addr + "/down", .use_tls = true, .tls_server_name = "localhost"};
  r = run_one(ioc, down, trusting);
  CHECK(r.status == check_status::critical);
  CHECK(r.output == "gRPC " + addr + "/down serving status: NOT_SERVING");

  probe_context other({.ca_file = pki.other_ca_pem});
  r = run_one(ioc, s, other);
  CHECK(r.status == check_status::critical);
  CHECK(r.output ==
        "rpc error: code = Unavailable desc = connection error: desc = \"transport: authentication "
        "handshake failed: tls: failed to verify certificate: x509: certificate signed by unknown authority\"");
  grpc_spec skip{.target = addr, .use_tls = true, .tls_skip_verify = true};
  CHECK(run_one(ioc, skip, other).status == check_status::passing);
}

TEST_CASE("grpc: refused and silent targets") {
  asio::io_context ioc;
  probe_context ctx;
  auto port = std::to_string(refused_tcp_port());
  grpc_spec refused{.target = "127.0.0.1:" + port + "/svc"};
  auto r = run_one(ioc, refused, ctx);
  CHECK(r.status == check_status::critical);
  CHECK(r.output ==
        "rpc error: code = Unavailable desc = connection error: desc = \"transport: Error while "
        "dialing: dial tcp 127.0.0.1:" + port + ": connect: connection refused\"");

  silent_tcp_server silent(ioc);
  grpc_spec quiet{.target = "127.0.0.1:" + std::to_string(silent.port()), .timeout = 1s};
  std::chrono::steady_clock::duration took{};
  r = run_one(ioc, quiet, ctx, &took);
  CHECK(r.status == check_status::critical);
  CHECK(r.output == "rpc error: code = DeadlineExceeded desc = context deadline exceeded");
  CHECK(took >= 900ms);
  CHECK(took < 1s + 5s);
}

TEST_CASE("grpc: an HTTP/1.1 server is not a gRPC server") {
  asio::io_context ioc;
  http_server srv(ioc);
  probe_context ctx;
  grpc_spec s{.target = "127.0.0.1:" + std::to_string(srv.port()), .timeout = 5s};
  auto r = run_one(ioc, s, ctx);
  CHECK(r.status == check_status::critical);
  CHECK(r.output.rfind("rpc error: code = Unavailable desc = ", 0) == 0);
}

TEST_CASE("h2ping: h2c and TLS against the gRPC server") {
  test_pki pki;
  child_process plain({GRPC_HEALTH_SERVER});
  child_process tls({GRPC_HEALTH_SERVER, "--tls", pki.server_pem, pki.server_key});
  std::string plain_addr = "127.0.0.1:" + start_args_port(plain);
  std::string tls_addr = "127.0.0.1:" + start_args_port(tls);
  asio::io_context ioc;
  probe_context ctx({.ca_file = pki.ca_pem});

  h2ping_spec h2c{.address = plain_addr, .use_tls = false};
  auto r = run_one(ioc, h2c, ctx);
  CHECK(r.status == check_status::passing);
  CHECK(r.output == "HTTP2 ping was successful");

  h2ping_spec over_tls{.address = tls_addr};  // H2PingUseTLS defaults to true, as in Consul
  r = run_one(ioc, over_tls, ctx);
  CHECK(r.status == check_status::passing);
  CHECK(r.output == "HTTP2 ping was successful");

  probe_context other({.ca_file = pki.other_ca_pem});
  r = run_one(ioc, over_tls, other);
  CHECK(r.status == check_status::critical);
  CHECK(r.output == "Failed to dial to " + tls_addr +
                        ": tls: failed to verify certificate: x509: certificate signed by unknown authority");
}

TEST_CASE("h2ping: refused, silent and HTTP/1.1 targets") {
  asio::io_context ioc;
  probe_context ctx;
  auto port = std::to_string(refused_tcp_port());
  h2ping_spec refused{.address = "127.0.0.1:" + port, .use_tls = false};
  auto r = run_one(ioc, refused, ctx);
  CHECK(r.status == check_status::critical);
  CHECK(r.output == "Failed to dial to 127.0.0.1:" + port + ": dial tcp 127.0.0.1:" + port +
                        ": connect: connection refused");

  silent_tcp_server silent(ioc);
  h2ping_spec quiet{.address = "127.0.0.1:" + std::to_string(silent.port()), .use_tls = false,
                    .timeout = 1s};
  std::chrono::steady_clock::duration took{};
  r = run_one(ioc, quiet, ctx, &took);
  CHECK(r.status == check_status::critical);
  CHECK(r.output == "HTTP2 ping failed: context deadline exceeded");
  CHECK(took < 1s + 5s);

  http_server srv(ioc);
  h2ping_spec h1{.address = "127.0.0.1:" + std::to_string(srv.port()), .use_tls = false, .timeout = 5s};
  r = run_one(ioc, h1, ctx);
  CHECK(r.status == check_status::critical);
  CHECK(r.output.rfind("HTTP2 ping failed: ", 0) == 0);
}
