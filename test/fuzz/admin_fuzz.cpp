// libFuzzer target: what a client sends the admin HTTP server (lib/esm/telemetry/
// admin_server.cpp). A real admin_server listens on 127.0.0.1 with a hand-filled status
// registry (two checks, as in the integration test) and its default limits; each input is
// written on a new connection (whole or in pieces), the client's side is then shut down and
// everything the server answers is read until it closes. That drives the Beast request parser
// with the server's head, field-count and body limits, keep-alive and pipelining up to 100
// requests, the method and path dispatch, and the /debug views' ?limit=&offset= parsing.
//
// Options (first byte): bit 0 enable_debug off (the /debug views 404); bits 4-5 the request
// cut into writes (fuzz_net::piece).
//
// Asserted: the server closes the connection well within its read timeout (the client sent
// everything and shut down), answers at most max_requests_per_connection requests, every
// answer starts with a status line among those it is meant to send (200, 400, 404, 405, 413,
// 431, 503; never 500: no handler throws here), and the total answered is bounded.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/tcp_stream.hpp>

#include "esm/checks/engine.hpp"
#include "esm/probe/probe.hpp"
#include "esm/telemetry/admin_server.hpp"
#include "loopback.hpp"

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
using asio::ip::tcp;
using namespace std::chrono_literals;
constexpr auto token = asio::as_tuple(asio::use_awaitable);
constexpr auto read_timeout = 2s;

esm::consul::health_check check(std::string id, std::string status, std::string output) {
  esm::consul::health_check c;
  c.node = "n1";
  c.check_id = std::move(id);
  c.name = c.check_id;
  c.status = std::move(status);
  c.output = std::move(output);
  c.type = "http";
  c.definition.http = "http://10.0.0.9/";
  c.definition.interval = 10s;
  c.definition.timeout = 1s;
  c.modify_index = 7;
  return c;
}

struct state {
  asio::io_context io;
  esm::daemon::daemon_status st;
  esm::consul::client_stats consul;
  esm::ping::prober_stats prober;
  esm::probe::probe_context probes;
  esm::checks::check_engine engine{io.get_executor(), nullptr, probes, {}};
  std::unique_ptr<esm::telemetry::admin_server> servers[2];  // enable_debug on, off
};
state* s = nullptr;

std::unique_ptr<esm::telemetry::admin_server> start(bool debug) {
  esm::telemetry::admin_settings a;
  a.address = "127.0.0.1:0";
  a.enable_debug = debug;
  a.max_connections_per_peer = 64;
  a.read_timeout = read_timeout;
  a.idle_timeout = read_timeout;
  auto srv = std::make_unique<esm::telemetry::admin_server>(
      s->io.get_executor(), s->st, a, [](std::string_view accept) {
        if (accept.find("application/openmetrics-text") != std::string_view::npos)
          return std::pair<std::string, std::string>("esmd_up 1\n# EOF\n", "application/openmetrics-text; version=1.0.0; charset=utf-8");
        return std::pair<std::string, std::string>("esmd_up 1\n", "text/plain; version=0.0.4; charset=utf-8");
      });
  if (!srv->bind().empty()) std::abort();
  asio::co_spawn(s->io, srv->run(), asio::detached);
  return srv;
}

asio::awaitable<void> client(unsigned short port, std::string request, unsigned pieces, std::string& got,
                             bool& done) {
  beast::tcp_stream c(s->io);
  c.expires_after(10s);
  auto [cec] = co_await c.async_connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port), token);
  if (cec) std::abort();  // the server must accept
  boost::system::error_code nd;
  c.socket().set_option(tcp::no_delay(true), nd);  // small writes go out as they are
  for (std::size_t at = 0; at < request.size();) {
    const std::size_t n = fuzz_net::piece(pieces, at, request.size() - at);
    auto [ec, w] = co_await asio::async_write(c, asio::buffer(request.data() + at, n), token);
    (void)w;
    if (ec) break;  // the server refused and closed: fine
    at += n;
  }
  boost::system::error_code ignored;
  c.socket().shutdown(tcp::socket::shutdown_send, ignored);
  char buf[16384];
  for (;;) {
    auto [ec, n] = co_await c.async_read_some(asio::buffer(buf), token);
    got.append(buf, n);
    if (ec) break;
  }
  done = true;
}

bool allowed_status(std::string_view code) {
  for (auto c : {"200", "400", "404", "405", "413", "431", "503"})
    if (code == c) return true;
  return false;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fuzz_net::enter_private_network();  // private ports
  s = new state;                      // never freed: reachable from a global, so not a leak
  auto& st = s->st;
  st.state = esm::daemon::phase::running;
  st.instance_id = "esm-1";
  st.version = "0.1.0";
  st.consul_version = "1.21.0";
  st.instance.membership.registered = true;
  st.worker.assigned = true;
  st.worker.current.nodes = {"n1"};
  s->consul.last_answer = std::chrono::steady_clock::now() + 24h * 365;
  s->consul.last_ok = s->consul.last_answer;
  st.consul = &s->consul;
  st.prober = &s->prober;
  s->engine.on_checks(esm::sharding::make_shared_checks({check("web", "passing", "HTTP GET http://10.0.0.8/: 200 OK"),
                       check("api", "critical", "dial tcp 10.0.0.9:80: connect: connection refused")}));
  st.checks = &s->engine;
  st.engine = &s->engine.stats();
  s->servers[0] = start(true);
  s->servers[1] = start(false);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  const std::uint8_t opt = data[0];
  auto& srv = *s->servers[opt & 1];
  const auto requests_before = srv.stats().requests;
  std::string got;
  bool done = false;
  const auto start_time = std::chrono::steady_clock::now();
  asio::co_spawn(s->io,
                 client(srv.local_endpoint().port(), std::string(reinterpret_cast<const char*>(data) + 1, size - 1),
                        (opt >> 4) & 3u, got, done),
                 [](std::exception_ptr e) {
                   if (e) __builtin_trap();
                 });
  if (!fuzz_net::run_until(s->io, [&] { return done; }, read_timeout + 5s)) __builtin_trap();
  // Everything was sent and the client's side shut down: no wait for a timeout may happen.
  if (std::chrono::steady_clock::now() - start_time > read_timeout) __builtin_trap();
  // The server ends the connection's coroutine once it closed it.
  if (!fuzz_net::run_until(s->io, [&] { return srv.stats().active == 0; }, 3s)) __builtin_trap();
  const auto answered = srv.stats().requests - requests_before;
  if (answered > srv.settings().max_requests_per_connection) __builtin_trap();
  if (srv.stats().handler_errors != 0) __builtin_trap();
  if (got.size() < 12) {
    // A reset can cut what was read short; what arrived is still the start of a status line.
    const std::size_t n = std::min<std::size_t>(got.size(), 7);
    if (std::string_view("HTTP/1.").substr(0, n) != std::string_view(got).substr(0, n)) __builtin_trap();
  } else {
    if (got.compare(0, 7, "HTTP/1.") != 0) __builtin_trap();
    if (!allowed_status(std::string_view(got).substr(9, 3))) __builtin_trap();
    if (answered == 0) __builtin_trap();
  }
  // The largest answer here is the status page or a /debug view of two checks.
  if (got.size() > answered * 64 * 1024) __builtin_trap();
  return 0;
}
