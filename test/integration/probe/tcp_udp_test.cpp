// TCP, TCP+TLS and UDP probes against real sockets on 127.0.0.1, and cancellation.

#include <doctest/doctest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <optional>
#include <utility>
#include <vector>

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

namespace {

// A listener whose accept queue is full: the kernel drops further SYNs, so a connect to it
// stays in flight (SYN_SENT, retransmitted after 1 s) instead of completing inside
// connect(). The only way to make the probes' reactor wait for a handshake on loopback.
struct full_listener {
  int fd = -1;
  std::vector<int> queued;  // connected (accepted or not)
  int stuck = -1;            // the filler whose SYN was dropped
  unsigned short port = 0;
  full_listener() {
    fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    REQUIRE(fd >= 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    REQUIRE(::listen(fd, 0) == 0);
    socklen_t len = sizeof a;
    REQUIRE(::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0);
    port = ntohs(a.sin_port);
    // Fill the queue: connect until a connection stays in flight (bounded).
    for (int i = 0; i < 16; ++i) {
      int c = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
      REQUIRE(c >= 0);
      int rc = ::connect(c, reinterpret_cast<sockaddr*>(&a), sizeof a);
      pollfd p{c, POLLOUT, 0};
      bool done = rc == 0 || ::poll(&p, 1, 100) == 1;
      if (!done) {  // dropped: the queue is full, the next SYN is dropped too
        stuck = c;
        return;
      }
      queued.push_back(c);
    }
    FAIL("the accept queue never filled");
  }
  // Accepts what is queued, making room for the probe's retransmitted SYN (the stuck filler
  // is closed, so that its own retransmission cannot take that room).
  void drain() {
    if (stuck >= 0) ::close(std::exchange(stuck, -1));
    for (int i = 0; i < 16; ++i) {
      pollfd p{fd, POLLIN, 0};
      if (::poll(&p, 1, 0) != 1) break;
      int c = ::accept4(fd, nullptr, nullptr, SOCK_CLOEXEC);
      if (c >= 0) queued.push_back(c);
    }
  }
  ~full_listener() {
    for (int c : queued) ::close(c);
    if (stuck >= 0) ::close(stuck);
    if (fd >= 0) ::close(fd);
  }
};

}  // namespace

TEST_CASE("tcp: a handshake still in flight is waited for, up to the timeout, and can be cancelled") {
  asio::io_context ioc;
  probe_context ctx;
  full_listener l;
  const std::string addr = "127.0.0.1:" + std::to_string(l.port);

  // Dropped SYNs: the wait ends at the deadline with Go's text.
  std::chrono::steady_clock::duration took{};
  auto r = run_one(ioc, tcp_spec{.address = addr, .timeout = 500ms}, ctx, &took);
  CHECK(r.status == check_status::critical);
  CHECK(r.output == "dial tcp " + addr + ": i/o timeout");
  CHECK(took >= 450ms);

  // Cancelled while the handshake is in flight.
  {
    esm::probe::probe_spec spec = tcp_spec{.address = addr, .timeout = 60s};
    asio::cancellation_signal signal;
    std::optional<probe_result> out;
    asio::co_spawn(ioc, esm::probe::run_probe(spec, ctx),
                   asio::bind_cancellation_slot(signal.slot(), [&](std::exception_ptr, probe_result res) {
                     out = std::move(res);
                     ioc.stop();
                   }));
    asio::steady_timer t(ioc, 300ms);
    t.async_wait([&](boost::system::error_code) { signal.emit(asio::cancellation_type::terminal); });
    ioc.restart();
    ioc.run_for(20s);
    REQUIRE(out.has_value());
    CHECK(out->output == "operation was canceled");
    ioc.restart();
  }

  // Room made while the SYN is being retransmitted: the connection completes in the wait.
  // (HTTP too: its dial keeps the socket, registered with the reactor after the wait.)
  asio::steady_timer t(ioc, 300ms);
  t.async_wait([&](boost::system::error_code) { l.drain(); });
  r = run_one(ioc, tcp_spec{.address = addr, .timeout = 8s}, ctx, &took);
  CHECK(r.status == check_status::passing);
  CHECK(r.output == "TCP connect " + addr + ": Success");
  CHECK(took < 8s);
}
