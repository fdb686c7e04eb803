// The admin HTTP server (lib/esm/telemetry/admin_server.hpp) on 127.0.0.1:0, on its own
// io_context in a second thread, with a hand-filled status registry (no Consul): every
// endpoint's status and body shape, /healthz after the loop was blocked, malformed, oversized,
// slow and idle clients, more connections than the limit (idle keep-alive ones make room),
// per-peer limits, accepts out of descriptors, no check output without enable_debug, the
// paged /debug views, and the status page in headless Chromium. The clients are plain blocking sockets in the test thread.
//
// The screenshot and DOM of the page go to $ESMD_TEST_LOG_DIR (meson sets it to the build
// directory's meson-logs/), else to the current directory. $CHROMIUM names the browser
// (default /usr/bin/chromium, Debian's `chromium` package).
#include <doctest/doctest.h>

#include <fcntl.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/write.hpp>
#include <boost/json/parse.hpp>

#include "esm/checks/engine.hpp"
#include "esm/probe/probe.hpp"
#include "esm/telemetry/admin_server.hpp"
#include "process.hpp"

using namespace std::chrono_literals;
namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using steady = std::chrono::steady_clock;

namespace {

const std::string failing_output = "dial tcp 10.0.0.9:80: connect: connection refused";

esm::consul::health_check check(std::string node, std::string id, std::string status, std::string output) {
  esm::consul::health_check c;
  c.node = std::move(node);
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

// A server on a second thread. Everything the server reads is touched only before the thread
// starts, after it ended, or through on_io().
struct fixture {
  asio::io_context io;
  esm::daemon::daemon_status st;
  esm::consul::client_stats consul;
  esm::ping::prober_stats prober;
  esm::probe::probe_context probes;
  esm::checks::check_engine engine{io.get_executor(), nullptr, probes, {}};
  std::unique_ptr<esm::telemetry::admin_server> server;
  asio::cancellation_signal stop;
  std::promise<void> ended;
  std::thread thread;
  unsigned short port = 0;

  explicit fixture(bool debug = true, std::function<void(esm::telemetry::admin_settings&)> adjust = {}) {
    st.state = esm::daemon::phase::running;
    st.instance_id = "esm-1";
    st.version = "0.1.0";
    st.consul_version = "1.21.0";
    st.instance.membership.registered = true;
    st.instance.election.is_leader = true;
    st.leader.instances = 2;
    st.worker.assignments = 1;
    st.worker.assigned = true;
    st.worker.current.nodes = {"n1"};
    st.worker.current.probes = {"p1"};
    consul.requests = 4;
    consul.last_answer = steady::now() + 3600s;  // stays fresh for the whole test
    consul.last_ok = consul.last_answer;
    st.consul = &consul;
    prober.nodes = 1;
    prober.alive = 1;
    st.prober = &prober;
    engine.on_checks(esm::sharding::make_shared_checks({check("n1", "web", "passing", "HTTP GET http://10.0.0.8/: 200 OK"),
                      check("n1", "api", "critical", failing_output)}));
    st.checks = &engine;
    st.engine = &engine.stats();

    esm::telemetry::admin_settings s;
    s.address = "127.0.0.1:0";
    s.enable_debug = debug;
    s.max_connections = 8;
    s.max_connections_per_peer = 100;  // every client is 127.0.0.1; the per-peer test lowers it
    s.read_timeout = 2s;
    s.idle_timeout = 2s;
    s.heartbeat_interval = 100ms;
    s.stall_threshold = 1s;
    if (adjust) adjust(s);
    server = std::make_unique<esm::telemetry::admin_server>(
        io.get_executor(), st, s, [](std::string_view accept) {
          if (accept.find("application/openmetrics-text") != std::string_view::npos)
            return std::pair<std::string, std::string>("esmd_up 1\n# EOF\n",
                                                       "application/openmetrics-text; version=1.0.0; charset=utf-8");
          return std::pair<std::string, std::string>("esmd_up 1\n", "text/plain; version=0.0.4; charset=utf-8");
        });
    auto err = server->bind();
    REQUIRE(err.empty());
    port = server->local_endpoint().port();
    REQUIRE(port != 0);
    asio::co_spawn(io, server->run(),
                   asio::bind_cancellation_slot(stop.slot(), [this](std::exception_ptr e) {
                     if (e) ended.set_exception(e);
                     else ended.set_value();
                   }));
    thread = std::thread([this] { io.run(); });
  }

  // Runs f on the server's thread and waits for it.
  template <class F>
  auto on_io(F f) {
    std::packaged_task<decltype(f())()> task(std::move(f));
    auto result = task.get_future();
    asio::post(io, [&task] { task(); });
    if (result.wait_for(30s) != std::future_status::ready) {
      FAIL_CHECK("the server's thread did not run a posted function");
      std::abort();
    }
    return result.get();
  }

  // Stops the server by a cancellation of `type` and waits for it to end (bounded).
  void shutdown(asio::cancellation_type type = asio::cancellation_type::total) {
    if (!thread.joinable()) return;
    asio::post(io, [this, type] { stop.emit(type); });
    auto f = ended.get_future();
    if (f.wait_for(20s) != std::future_status::ready) {
      std::fputs("the admin server did not stop when cancelled\n", stderr);
      std::abort();
    }
    thread.join();
    f.get();
  }
  ~fixture() {
    if (thread.joinable()) shutdown();
  }
};

// A blocking client with receive and send timeouts.
struct client {
  asio::io_context io;
  tcp::socket s{io};
  // `from`: the source address (any of 127.0.0.0/8 reaches the server: a second peer).
  explicit client(unsigned short port, std::chrono::seconds timeout = 15s, const char* from = nullptr) {
    if (from) {
      s.open(tcp::v4());
      s.bind(tcp::endpoint(asio::ip::make_address(from), 0));
    }
    s.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port));
    timeval tv{static_cast<time_t>(timeout.count()), 0};
    ::setsockopt(s.native_handle(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ::setsockopt(s.native_handle(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  }
  void send(std::string_view data) { asio::write(s, asio::buffer(data)); }
  // Everything until the server closes (or an error or the timeout).
  std::string read_all() {
    std::string out;
    char buf[16384];
    for (;;) {
      boost::system::error_code ec;
      auto n = s.read_some(asio::buffer(buf), ec);
      out.append(buf, n);
      if (ec) break;
    }
    return out;
  }
  // One response with a Content-Length body (keep-alive).
  std::string read_response() {
    std::string out;
    char buf[16384];
    for (;;) {
      auto end = out.find("\r\n\r\n");
      if (end != std::string::npos) {
        auto cl = out.find("Content-Length: ");
        std::size_t length = cl == std::string::npos ? 0 : std::stoul(out.substr(cl + 16));
        if (out.size() >= end + 4 + length) return out;
      }
      boost::system::error_code ec;
      auto n = s.read_some(asio::buffer(buf), ec);
      out.append(buf, n);
      if (ec) return out;
    }
  }
  // Whether the server closed the connection (without waiting).
  bool closed_by_peer() {
    pollfd p{s.native_handle(), POLLIN, 0};
    if (::poll(&p, 1, 0) <= 0) return false;
    char c;
    auto n = ::recv(s.native_handle(), &c, 1, MSG_DONTWAIT);
    return n <= 0;
  }
};

std::string roundtrip(unsigned short port, std::string_view request) {
  client c(port);
  c.send(request);
  return c.read_all();
}
std::string get(unsigned short port, std::string_view path, std::string_view extra = {}) {
  return roundtrip(port, "GET " + std::string(path) + " HTTP/1.1\r\nHost: x\r\n" + std::string(extra) +
                            "Connection: close\r\n\r\n");
}
int status_of(const std::string& response) {
  if (response.size() < 12 || !response.starts_with("HTTP/1.")) return 0;
  return std::stoi(response.substr(9, 3));
}
std::string body_of(const std::string& response) {
  auto end = response.find("\r\n\r\n");
  return end == std::string::npos ? std::string() : response.substr(end + 4);
}
std::string header_of(const std::string& response, const std::string& name) {
  auto at = response.find("\r\n" + name + ": ");
  if (at == std::string::npos) return {};
  auto start = at + name.size() + 4;
  return response.substr(start, response.find("\r\n", start) - start);
}

}  // namespace

TEST_CASE("admin server: every endpoint's status and body") {
  fixture f;

  auto r = get(f.port, "/healthz");
  CHECK(status_of(r) == 200);
  CHECK(body_of(r) == "ok\n");

  r = get(f.port, "/readyz");
  CHECK(status_of(r) == 200);
  CHECK(body_of(r) == "ready\n");
  f.on_io([&] { f.st.worker.assignments = 0; });
  r = get(f.port, "/readyz");
  CHECK(status_of(r) == 503);
  CHECK(body_of(r) == "not ready: no share received from the leader yet\n");
  f.on_io([&] { f.st.worker.assignments = 1; });

  r = get(f.port, "/metrics");
  CHECK(status_of(r) == 200);
  CHECK(header_of(r, "Content-Type") == "text/plain; version=0.0.4; charset=utf-8");
  CHECK(body_of(r) == "esmd_up 1\n");
  r = get(f.port, "/metrics", "Accept: application/openmetrics-text; version=1.0.0\r\n");
  CHECK(header_of(r, "Content-Type").starts_with("application/openmetrics-text"));
  CHECK(body_of(r).ends_with("# EOF\n"));

  r = get(f.port, "/v1/status?pretty");
  CHECK(status_of(r) == 200);
  CHECK(header_of(r, "Content-Type") == "application/json");
  auto v = boost::json::parse(body_of(r));
  CHECK(v.at("instance_id").as_string() == "esm-1");
  CHECK(v.at("mode").as_string() == "agent");
  CHECK(v.at("leader").as_bool());
  CHECK(v.at("healthy_instances").to_number<int>() == 2);
  CHECK(v.at("share").at("probes").to_number<int>() == 1);
  CHECK(v.at("checks").at("by_status").at("critical").to_number<int>() == 1);
  CHECK(v.at("checks").at("by_type").at("http").to_number<int>() == 2);
  CHECK(v.at("version").as_string() == "0.1.0");
  CHECK(v.at("ready").as_bool());

  r = get(f.port, "/debug/checks");
  CHECK(status_of(r) == 200);
  auto checks = boost::json::parse(body_of(r));
  REQUIRE(checks.at("checks").as_array().size() == 2);
  CHECK(checks.at("checks").as_array()[0].at("output").as_string() == failing_output);
  CHECK(checks.at("total").to_number<int>() == 2);
  CHECK(checks.at("limit").to_number<int>() == 1000);
  r = get(f.port, "/debug/checks?limit=1&offset=1");
  CHECK(status_of(r) == 200);
  checks = boost::json::parse(body_of(r));
  CHECK(checks.at("total").to_number<int>() == 2);
  CHECK(checks.at("offset").to_number<int>() == 1);
  REQUIRE(checks.at("checks").as_array().size() == 1);
  CHECK(checks.at("checks").as_array()[0].at("check_id").as_string() == "web");
  r = get(f.port, "/debug/checks?limit=1000000");
  CHECK(boost::json::parse(body_of(r)).at("limit").to_number<int>() == 10000);  // the maximum
  r = get(f.port, "/debug/checks?limit=ten");
  CHECK(status_of(r) == 400);
  CHECK(body_of(r) == "limit must be a non-negative integer\n");
  CHECK(status_of(get(f.port, "/debug/nodes?offset=-1")) == 400);
  r = get(f.port, "/debug/nodes");
  CHECK(status_of(r) == 200);
  CHECK(boost::json::parse(body_of(r)).at("nodes").is_array());
  CHECK(boost::json::parse(body_of(r)).at("total").to_number<int>() == 0);

  r = get(f.port, "/");
  CHECK(status_of(r) == 200);
  CHECK(header_of(r, "Content-Type") == "text/html; charset=utf-8");
  CHECK(body_of(r).find("<title>esmd esm-1</title>") != std::string::npos);
  CHECK(body_of(r).find(failing_output) != std::string::npos);

  r = get(f.port, "/nothing-here");
  CHECK(status_of(r) == 404);
  r = roundtrip(f.port, "POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi");
  CHECK(status_of(r) == 405);
  CHECK(header_of(r, "Allow") == "GET, HEAD");
  r = roundtrip(f.port, "DELETE / HTTP/1.1\r\nHost: x\r\n\r\n");
  CHECK(status_of(r) == 405);

  // HEAD: the headers of a GET, no body.
  r = roundtrip(f.port, "HEAD /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  CHECK(status_of(r) == 200);
  CHECK(header_of(r, "Content-Length") == "3");
  CHECK(body_of(r).empty());

  // Keep-alive: two requests on one connection; a small body is read and ignored.
  {
    client c(f.port);
    c.send("GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello");
    auto first = c.read_response();
    CHECK(status_of(first) == 200);
    c.send("GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n");
    auto second = c.read_response();
    CHECK(status_of(second) == 200);
    CHECK(body_of(second) == "ready\n");
  }
  auto stats = f.on_io([&] { return f.server->stats(); });
  CHECK(stats.requests == 19);
  CHECK(stats.handler_errors == 0);
}

TEST_CASE("admin server: /debug and check outputs are off without enable_debug") {
  fixture f(false);
  CHECK(status_of(get(f.port, "/debug/checks")) == 404);
  CHECK(status_of(get(f.port, "/debug/nodes")) == 404);
  auto r = get(f.port, "/v1/status");
  CHECK(status_of(r) == 200);
  CHECK(body_of(r).find(failing_output) == std::string::npos);
  CHECK(body_of(r).find("10.0.0.8") == std::string::npos);
  // The page lists the checks and their statuses, not their outputs (HTTP bodies, URLs).
  r = get(f.port, "/");
  CHECK(status_of(r) == 200);
  auto page = body_of(r);
  CHECK(page.find(failing_output) == std::string::npos);
  CHECK(page.find("10.0.0.8") == std::string::npos);
  CHECK(page.find(">api<") != std::string::npos);
  CHECK(page.find("badge critical") != std::string::npos);
}

TEST_CASE("admin server: a bind failure names the address") {
  fixture f;
  esm::telemetry::admin_settings s;
  s.address = "127.0.0.1:" + std::to_string(f.port);
  esm::daemon::daemon_status other;
  asio::io_context io;
  esm::telemetry::admin_server second(io.get_executor(), other, s);
  auto err = second.bind();
  CHECK(err == "cannot listen on 127.0.0.1:" + std::to_string(f.port) + ": Address already in use");
  s.address = "no-port";
  esm::telemetry::admin_server third(io.get_executor(), other, s);
  CHECK(third.bind() == "cannot listen on no-port: not a host:port address");
}

TEST_CASE("admin server: /healthz is 503 after the loop was blocked, then 200 again") {
  fixture f;
  CHECK(status_of(get(f.port, "/healthz")) == 200);
  std::promise<void> blocking;
  asio::post(f.io, [&] {
    blocking.set_value();
    std::this_thread::sleep_for(2500ms);  // over the 1 s threshold of the test's settings
  });
  blocking.get_future().wait();
  auto r = get(f.port, "/healthz");  // answered after the block
  CHECK(status_of(r) == 503);
  CHECK(body_of(r).starts_with("event loop stalled"));
  MESSAGE("after the block: " << body_of(r));
  std::this_thread::sleep_for(1500ms);
  r = get(f.port, "/healthz");
  CHECK(status_of(r) == 200);
}

TEST_CASE("admin server: malformed, oversized, slow and idle clients get a 4xx or are cut off") {
  fixture f;
  SUBCASE("malformed requests: 400") {
    for (const std::string& bad : std::vector<std::string>{"GARBAGE\r\n\r\n", "GET / HTTX/1.1\r\nHost: x\r\n\r\n", "G(T / HTTP/1.1\r\n\r\n",
                            "GET / HTTP/1.1\r\nBad header line\r\n\r\n", "GET / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
                            "GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", std::string("\0\1\2\3\r\n\r\n", 8)}) {
      auto r = roundtrip(f.port, bad);
      CHECK_MESSAGE(status_of(r) == 400, "request " << doctest::toString(bad) << " got " << r.substr(0, 40));
    }
  }
  SUBCASE("a header block over the limit: 431") {
    auto r = roundtrip(f.port, "GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + std::string(10'000, 'a') + "\r\n\r\n");
    CHECK(status_of(r) == 431);
    r = roundtrip(f.port, "GET /" + std::string(9'000, 'p') + " HTTP/1.1\r\n\r\n");
    CHECK(status_of(r) == 431);
  }
  SUBCASE("1000 headers, and 100 small ones: 431") {
    std::string many = "GET / HTTP/1.1\r\n";
    for (int i = 0; i < 1000; ++i) many += "X-H" + std::to_string(i) + ": v\r\n";
    CHECK(status_of(roundtrip(f.port, many + "\r\n")) == 431);
    std::string hundred = "GET / HTTP/1.1\r\n";
    for (int i = 0; i < 100; ++i) hundred += "a: b\r\n";
    CHECK(status_of(roundtrip(f.port, hundred + "\r\n")) == 431);
  }
  SUBCASE("a body over the limit: 413") {
    auto r = roundtrip(f.port, "GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n" + std::string(100'000, 'b'));
    CHECK(status_of(r) == 413);
    std::string chunked = "GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
    for (int i = 0; i < 20; ++i) chunked += "1000\r\n" + std::string(4096, 'c') + "\r\n";
    chunked += "0\r\n\r\n";
    CHECK(status_of(roundtrip(f.port, chunked)) == 413);
  }
  SUBCASE("a slowloris client is cut off at the read timeout") {
    client c(f.port);
    std::string request = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    auto start = steady::now();
    bool cut = false;
    for (char ch : request) {
      boost::system::error_code ec;
      asio::write(c.s, asio::buffer(&ch, 1), ec);
      if (ec || c.closed_by_peer()) {
        cut = true;
        break;
      }
      std::this_thread::sleep_for(300ms);  // 36 bytes: 11 s in all, over the 2 s read timeout
    }
    auto elapsed = steady::now() - start;
    CHECK(cut);
    CHECK(elapsed > 1500ms);
    CHECK(elapsed < 4s);
  }
  SUBCASE("a client that connects and never sends is closed at the read timeout") {
    client c(f.port, 10s);
    auto start = steady::now();
    auto got = c.read_all();
    auto elapsed = steady::now() - start;
    CHECK(got.empty());
    CHECK(elapsed > 1500ms);
    CHECK(elapsed < 4s);
  }
  SUBCASE("more connections than the limit: the extra ones are closed at once") {
    std::vector<std::unique_ptr<client>> idle;
    for (int i = 0; i < 8; ++i) idle.push_back(std::make_unique<client>(f.port));
    for (int i = 0; i < 100; ++i) {
      if (f.on_io([&] { return f.server->stats().active; }) == 8) break;
      std::this_thread::sleep_for(10ms);
    }
    CHECK(f.on_io([&] { return f.server->stats().active; }) == 8);
    {
      client extra(f.port, 5s);
      auto start = steady::now();
      boost::system::error_code ignored;  // the server may have closed it already
      asio::write(extra.s, asio::buffer(std::string_view("GET /healthz HTTP/1.1\r\n\r\n")), ignored);
      auto got = extra.read_all();
      CHECK(status_of(got) == 0);  // closed, unanswered
      CHECK(steady::now() - start < 1s);
    }
    CHECK(f.on_io([&] { return f.server->stats().refused; }) >= 1);
    idle.clear();
  }
  // After each of them the server still answers.
  for (int i = 0; i < 100 && f.on_io([&] { return f.server->stats().active; }) != 0; ++i)
    std::this_thread::sleep_for(20ms);
  auto r = get(f.port, "/healthz");
  CHECK(status_of(r) == 200);
  CHECK(body_of(r) == "ok\n");
}

// Waits until the server holds `n` connections.
void wait_active(fixture& f, std::size_t n) {
  for (int i = 0; i < 200 && f.on_io([&] { return f.server->stats().active; }) != n; ++i)
    std::this_thread::sleep_for(10ms);
  CHECK(f.on_io([&] { return f.server->stats().active; }) == n);
}

TEST_CASE("admin server: a full table of idle keep-alive connections does not block a probe") {
  fixture f;  // 8 connections
  std::vector<std::unique_ptr<client>> idle;
  for (int i = 0; i < 8; ++i) {
    idle.push_back(std::make_unique<client>(f.port));
    idle.back()->send("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    CHECK(status_of(idle.back()->read_response()) == 200);  // now idle, kept alive
    std::this_thread::sleep_for(5ms);  // distinct idle times: the first is the oldest
  }
  wait_active(f, 8);
  auto r = get(f.port, "/healthz");
  CHECK(status_of(r) == 200);
  CHECK(f.on_io([&] { return f.server->stats().evicted; }) == 1);
  CHECK(f.on_io([&] { return f.server->stats().refused; }) == 0);
  CHECK(idle[0]->read_all().empty());  // the oldest idle one was closed
  // The others are still served.
  idle[7]->send("GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n");
  CHECK(status_of(idle[7]->read_response()) == 200);
}

TEST_CASE("admin server: connections per peer address are capped") {
  fixture f(true, [](esm::telemetry::admin_settings& s) { s.max_connections_per_peer = 3; });
  SUBCASE("a peer with its limit and nothing idle: its next connection is closed, others get in") {
    std::vector<std::unique_ptr<client>> busy;  // connected, never sending: not idle
    for (int i = 0; i < 3; ++i) busy.push_back(std::make_unique<client>(f.port));
    wait_active(f, 3);
    {
      client extra(f.port, 5s);
      boost::system::error_code ignored;
      asio::write(extra.s, asio::buffer(std::string_view("GET /healthz HTTP/1.1\r\n\r\n")), ignored);
      CHECK(status_of(extra.read_all()) == 0);  // closed, unanswered
    }
    CHECK(f.on_io([&] { return f.server->stats().refused_per_peer; }) == 1);
    client other(f.port, 5s, "127.0.0.2");
    other.send("GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    CHECK(status_of(other.read_all()) == 200);
  }
  SUBCASE("a peer with its limit: its own oldest idle connection makes room") {
    std::vector<std::unique_ptr<client>> idle;
    for (int i = 0; i < 3; ++i) {
      idle.push_back(std::make_unique<client>(f.port, 15s, "127.0.0.2"));
      idle.back()->send("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
      CHECK(status_of(idle.back()->read_response()) == 200);
      std::this_thread::sleep_for(5ms);
    }
    client mine(f.port, 5s);  // another peer's connection is not touched
    wait_active(f, 4);
    client next(f.port, 5s, "127.0.0.2");
    next.send("GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    CHECK(status_of(next.read_all()) == 200);
    CHECK(f.on_io([&] { return f.server->stats().evicted; }) == 1);
    CHECK(idle[0]->read_all().empty());
    CHECK_FALSE(mine.closed_by_peer());
  }
}

TEST_CASE("admin server: out of descriptors (EMFILE): counted, retried, served again") {
  fixture f;
  // The client's socket first, then every free descriptor of a lowered limit taken, then the
  // connection: the server's accept finds no descriptor.
  asio::io_context cio;
  tcp::socket s(cio);
  s.open(tcp::v4());
  rlimit old{};
  REQUIRE(::getrlimit(RLIMIT_NOFILE, &old) == 0);
  int highest = 0;
  for (auto& e : std::filesystem::directory_iterator("/proc/self/fd"))
    highest = std::max(highest, std::stoi(e.path().filename().string()));
  rlimit low = old;
  low.rlim_cur = static_cast<rlim_t>(highest + 16);
  REQUIRE(::setrlimit(RLIMIT_NOFILE, &low) == 0);
  std::vector<int> filler;
  for (;;) {
    int fd = ::open("/dev/null", O_RDONLY);
    if (fd < 0) break;
    filler.push_back(fd);
  }
  s.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), f.port));
  asio::write(s, asio::buffer(std::string_view("GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")));
  auto during = f.on_io([&] { return f.server->stats(); });
  for (int i = 0; i < 300 && during.accept_errors < 3; ++i) {  // a retry every 100 ms
    std::this_thread::sleep_for(10ms);
    during = f.on_io([&] { return f.server->stats(); });
  }
  for (int fd : filler) ::close(fd);
  ::setrlimit(RLIMIT_NOFILE, &old);
  CHECK(during.accept_failing);
  CHECK(during.accept_errors >= 2);
  MESSAGE("failed accepts: " << during.accept_errors << " (one warning logged)");
  timeval tv{5, 0};
  ::setsockopt(s.native_handle(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  std::string got;
  char buf[4096];
  for (;;) {
    boost::system::error_code ec;
    auto n = s.read_some(asio::buffer(buf), ec);
    got.append(buf, n);
    if (ec) break;
  }
  CHECK(status_of(got) == 200);
  auto after = f.on_io([&] { return f.server->stats(); });
  CHECK_FALSE(after.accept_failing);
  CHECK(after.connections >= 1);
}

TEST_CASE("admin server: a stop of any type ends it with connections open") {
  for (auto type : {asio::cancellation_type::terminal, asio::cancellation_type::partial,
                    asio::cancellation_type::total}) {
    fixture f;
    client idle(f.port);
    client half(f.port);
    half.send("GET /healthz HTTP/1.1\r\n");
    for (int i = 0; i < 100 && f.on_io([&] { return f.server->stats().active; }) != 2; ++i)
      std::this_thread::sleep_for(10ms);
    auto start = steady::now();
    f.shutdown(type);
    CHECK(steady::now() - start < 1s);
    CHECK(idle.read_all().empty());
  }
}

TEST_CASE("admin server: the status page loads in headless Chromium") {
  const char* browser_env = std::getenv("CHROMIUM");
  std::string browser = browser_env ? browser_env : "/usr/bin/chromium";
  REQUIRE_MESSAGE(std::filesystem::exists(browser),
                  browser << " is missing: install Debian's chromium package (deploy/dev/test does)");
  const char* dir_env = std::getenv("ESMD_TEST_LOG_DIR");
  std::filesystem::path dir = dir_env ? dir_env : std::filesystem::current_path().string();
  std::filesystem::create_directories(dir);
  auto shot = dir / "integration_admin_status_page.png";
  auto dom = dir / "integration_admin_status_page.dom.txt";
  std::filesystem::remove(shot);
  auto profile = std::filesystem::temp_directory_path() / ("esmd-chromium-" + std::to_string(::getpid()));
  std::filesystem::remove_all(profile);

  fixture f;
  auto url = "http://127.0.0.1:" + std::to_string(f.port) + "/";
  esm::test::child_process chromium(
      {browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
       "--user-data-dir=" + profile.string(), "--window-size=1280,1600", "--screenshot=" + shot.string(), "--dump-dom",
       url},
      {}, dom.string());
  auto rc = chromium.wait(60s);
  if (!rc) {
    chromium.signal(SIGKILL);  // by its pid; the destructor waits for it
    FAIL("chromium did not finish within 60 s");
  }
  auto out = chromium.output();
  std::filesystem::remove_all(profile);
  MESSAGE("screenshot: " << shot.string() << ", DOM and browser log: " << dom.string());
  CHECK(*rc == 0);
  CHECK(out.find("<title>esmd esm-1</title>") != std::string::npos);
  CHECK(out.find(failing_output) != std::string::npos);
  CHECK(out.find("leader") != std::string::npos);
  CHECK(std::filesystem::exists(shot));
  if (std::filesystem::exists(shot)) CHECK(std::filesystem::file_size(shot) > 1000);
  // The browser asked for nothing the server does not have (no favicon, no asset).
  auto stats = f.on_io([&] { return f.server->stats(); });
  CHECK(stats.client_errors == 0);
  CHECK(stats.requests >= 1);
}
