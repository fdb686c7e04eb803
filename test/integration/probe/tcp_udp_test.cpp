// TCP, TCP+TLS and UDP probes against real sockets on 127.0.0.1, and cancellation.

#include <doctest/doctest.h>

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>

#include "support.hpp"

using namespace probe_test;
using esm::probe::check_status;
using esm::probe::probe_context;
using esm::probe::tcp_spec;
using esm::probe::udp_spec;

TEST_CASE("tcp: a listening port passes, a refused one is critical with Go's dial error") {
  asio::io_context ioc;
  silent_tcp_server srv(ioc);
  probe_context ctx;
  std::string addr = "127.0.0.1:" + std::to_string(srv.port());
  tcp_spec ok{.address = addr};
  auto r = run_one(ioc, ok, ctx);
  CHECK(r.status == check_status::passing);
  CHECK(r.output == "TCP connect " + addr + ": Success");

  auto port = std::to_string(refused_tcp_port());
  tcp_spec refused{.address = "127.0.0.1:" + port};
  r = run_one(ioc, refused, ctx);
  CHECK(r.status == check_status::critical);
  CHECK(r.output == "dial tcp 127.0.0.1:" + port + ": connect: connection refused");

  tcp_spec v6{.address = "[::1]:" + port};
  r = run_one(ioc, v6, ctx);
  CHECK(r.status == check_status::critical);
  // Loopback IPv6 may be disabled on the test machine; either way the text is Go's form.
  CHECK(r.output.rfind("dial tcp [::1]:" + port + ": connect: ", 0) == 0);

  // A name (from /etc/hosts: no DNS traffic); every address is tried, as Go does.
  tcp_spec named{.address = "localhost:" + std::to_string(srv.port())};
  r = run_one(ioc, named, ctx);
  CHECK(r.status == check_status::passing);
  CHECK(r.output == "TCP connect localhost:" + std::to_string(srv.port()) + ": Success");

  tcp_spec noport{.address = "127.0.0.1"};
  r = run_one(ioc, noport, ctx);
  CHECK(r.status == check_status::critical);
  CHECK(r.output == "dial tcp: address 127.0.0.1: missing port in address");
}

TEST_CASE("tcp+tls: handshake success, unknown authority, and a plain server") {
  test_pki pki;
  asio::io_context ioc;
  auto server_ctx = server_tls(pki, false);
  silent_tcp_server tls_srv(ioc, server_ctx.get());
  silent_tcp_server plain_srv(ioc);
  std::string addr = "127.0.0.1:" + std::to_string(tls_srv.port());

  probe_context trusting({.ca_file = pki.ca_pem});
  tcp_spec s{.address = addr, .use_tls = true};
  auto r = run_one(ioc, s, trusting);
  CHECK(r.status == check_status::passing);
  CHECK(r.output == "TCP+TLS connect " + addr + ": Success");

  probe_context other({.ca_file = pki.other_ca_pem});
  r = run_one(ioc, s, other);
  CHECK(r.status == check_status::critical);
  CHECK(r.output == "tls: failed to verify certificate: x509: certificate signed by unknown authority");
  tcp_spec skip{.address = addr, .use_tls = true, .tls_skip_verify = true};
  CHECK(run_one(ioc, skip, other).status == check_status::passing);

  // A plain server that never speaks TLS: the handshake runs into the timeout.
  tcp_spec plain{.address = "127.0.0.1:" + std::to_string(plain_srv.port()), .use_tls = true,
                 .timeout = 1s};
  std::chrono::steady_clock::duration took{};
  r = run_one(ioc, plain, trusting, &took);
  CHECK(r.status == check_status::critical);
  CHECK(r.output == "context deadline exceeded");
  CHECK(took < 1s + 5s);
}

TEST_CASE("udp: an answer passes, silence passes at the timeout, a closed port is critical") {
  asio::io_context ioc;
  probe_context ctx;
  SUBCASE("answering") {
    udp_server srv(ioc, true);
    std::string addr = "127.0.0.1:" + std::to_string(srv.port());
    udp_spec s{.address = addr, .timeout = 20s};
    std::chrono::steady_clock::duration took{};
    auto r = run_one(ioc, s, ctx, &took);
    CHECK(r.status == check_status::passing);
    CHECK(r.output == "UDP connect " + addr + ": Success");
    CHECK(srv.received() == 1);
    CHECK(took < 15s);  // the answer ended the wait, not the timeout
  }
  SUBCASE("silent") {
    udp_server srv(ioc, false);
    std::string addr = "127.0.0.1:" + std::to_string(srv.port());
    udp_spec s{.address = addr, .timeout = 1s};
    std::chrono::steady_clock::duration took{};
    auto r = run_one(ioc, s, ctx, &took);
    CHECK(r.status == check_status::passing);
    CHECK(r.output == "UDP connect " + addr + ": Success");
    CHECK(srv.received() == 1);
    CHECK(took >= 900ms);
    CHECK(took < 1s + 5s);
  }
  SUBCASE("closed port: ICMP port unreachable") {
    auto port = std::to_string(refused_udp_port());
    udp_spec s{.address = "127.0.0.1:" + port, .timeout = 10s};
    auto r = run_one(ioc, s, ctx);
    CHECK(r.status == check_status::critical);
    CHECK(r.output.rfind("read udp 127.0.0.1:", 0) == 0);
    CHECK(r.output.find("->127.0.0.1:" + port + ": read: connection refused") != std::string::npos);
  }
}

TEST_CASE("cancellation: the caller's terminal cancellation ends a probe at once") {
  asio::io_context ioc;
  silent_tcp_server silent(ioc);
  probe_context ctx;
  esm::probe::http_spec s{.url = "http://127.0.0.1:" + std::to_string(silent.port()) + "/",
                          .timeout = 60s};
  esm::probe::probe_spec spec = s;
  asio::cancellation_signal signal;
  std::optional<probe_result> out;
  auto start = std::chrono::steady_clock::now();
  std::chrono::steady_clock::duration took{};
  asio::co_spawn(ioc, esm::probe::run_probe(spec, ctx),
                 asio::bind_cancellation_slot(signal.slot(), [&](std::exception_ptr, probe_result r) {
                   out = std::move(r);
                   took = std::chrono::steady_clock::now() - start;
                   ioc.stop();
                 }));
  // Cancel once the probe is connected and waiting for the answer (bounded wait).
  asio::co_spawn(ioc, [&]() -> asio::awaitable<void> {
    asio::steady_timer timer(ioc);
    for (int i = 0; i < 400 && silent.accepted() == 0; ++i) {
      timer.expires_after(50ms);
      co_await timer.async_wait(asio::use_awaitable);
    }
    signal.emit(asio::cancellation_type::terminal);
  }, asio::detached);
  ioc.run_for(50s);
  REQUIRE(out.has_value());
  CHECK(silent.accepted() == 1);
  CHECK(out->status == check_status::critical);
  CHECK(out->output == "operation was canceled");
  CHECK(took < 40s);  // far below the probe's own 60 s timeout
}

TEST_CASE("cancellation: total cancellation is honoured too (UDP wait)") {
  asio::io_context ioc;
  udp_server srv(ioc, false);
  probe_context ctx;
  esm::probe::probe_spec spec = udp_spec{.address = "127.0.0.1:" + std::to_string(srv.port()), .timeout = 60s};
  asio::cancellation_signal signal;
  std::optional<probe_result> out;
  // The caller (like the check runner) lets total cancellation through to its children.
  auto caller = [&]() -> asio::awaitable<probe_result> {
    co_await asio::this_coro::reset_cancellation_state(asio::enable_total_cancellation());
    co_return co_await esm::probe::run_probe(spec, ctx);
  };
  asio::co_spawn(ioc, caller(),
                 asio::bind_cancellation_slot(signal.slot(), [&](std::exception_ptr, probe_result r) {
                   out = std::move(r);
                   ioc.stop();
                 }));
  asio::steady_timer timer(ioc, 300ms);
  timer.async_wait([&](boost::system::error_code) { signal.emit(asio::cancellation_type::total); });
  ioc.run_for(30s);
  REQUIRE(out.has_value());
  CHECK(out->output == "operation was canceled");
}
