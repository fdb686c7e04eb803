// The push sinks (lib/esm/telemetry/statsd.hpp) against real loopback sockets: a UDP socket
// for statsd and one for DogStatsD, a TCP listener for statsite, and sinks nobody listens on
// or a statsite peer that never reads, while the loop's responsiveness is measured. No Consul.
#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <functional>
#include <memory>
#include <sstream>
#include <string>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ip/udp.hpp>
#include <boost/asio/this_coro.hpp>

#include "async.hpp"
#include "esm/daemon/status.hpp"
#include "esm/log/log.hpp"
#include "esm/telemetry/statsd.hpp"

namespace asio = boost::asio;
using asio::ip::tcp;
using asio::ip::udp;
using esm::async::tuple_awaitable;
using namespace std::chrono_literals;
using namespace esm;
using namespace esm::telemetry;

namespace {

const auto loopback = asio::ip::make_address_v4("127.0.0.1");

std::string address_of(std::uint16_t port) { return "127.0.0.1:" + std::to_string(port); }

// A loopback port nobody listens on (bound, then closed again).
std::uint16_t dead_udp_port(asio::io_context& io) {
  udp::socket s(io, udp::endpoint(loopback, 0));
  return s.local_endpoint().port();
}
std::uint16_t dead_tcp_port(asio::io_context& io) {
  tcp::acceptor a(io, tcp::endpoint(loopback, 0));
  return a.local_endpoint().port();
}

struct status_fixture {
  daemon::daemon_status st;
  checks::engine_stats engine;
  ping::prober_stats prober;
  consul::client_stats consul;
  explicit status_fixture(int endpoints = 0) {
    st.instance.election.is_leader = true;
    st.leader.instances = 3;
    st.worker.nodes = 5;
    engine.transactions = 4;
    engine.durations.add(0, 0, 15ms);
    prober.pings = 9;
    for (int i = 0; i < endpoints; ++i) consul.by_endpoint[{"/v1/endpoint" + std::to_string(i), "200"}].add(0.01);
    st.engine = &engine;
    st.prober = &prober;
    st.consul = &consul;
  }
};

asio::awaitable<std::string> receive_udp_until(udp::socket& s, std::string want) {
  std::string all;
  char buf[65536];
  while (all.find(want) == std::string::npos) {
    udp::endpoint from;
    auto [ec, n] = co_await s.async_receive_from(asio::buffer(buf), from, tuple_awaitable);
    if (ec) break;
    CHECK(n <= 1432);
    CHECK(buf[n - 1] == '\n');
    all.append(buf, n);
  }
  co_return all;
}

asio::awaitable<std::string> receive_tcp_until(tcp::acceptor& a, std::string want) {
  auto [ec, sock] = co_await a.async_accept(tuple_awaitable);
  std::string all;
  if (ec) co_return all;
  char buf[65536];
  while (all.find(want) == std::string::npos) {
    auto [e2, n] = co_await sock.async_read_some(asio::buffer(buf), tuple_awaitable);
    if (e2) break;
    all.append(buf, n);
  }
  co_return all;
}

// The longest gap between 5 ms ticks over `d`.
asio::awaitable<std::chrono::milliseconds> loop_gap(std::chrono::milliseconds d) {
  auto end = std::chrono::steady_clock::now() + d;
  auto last = std::chrono::steady_clock::now();
  std::chrono::steady_clock::duration worst{0};
  while (std::chrono::steady_clock::now() < end) {
    bool ran = co_await async::sleep_for(5ms);
    if (!ran) break;
    auto now = std::chrono::steady_clock::now();
    worst = std::max(worst, now - last - std::chrono::steady_clock::duration(5ms));
    last = now;
  }
  co_return std::chrono::duration_cast<std::chrono::milliseconds>(worst);
}

// Polls `ready` every 5 ms for at most `d`.
asio::awaitable<bool> wait_until(std::function<bool()> ready, std::chrono::milliseconds d) {
  auto end = std::chrono::steady_clock::now() + d;
  while (!ready() && std::chrono::steady_clock::now() < end) {
    bool ran = co_await async::sleep_for(5ms);
    if (!ran) break;
  }
  co_return ready();
}

std::size_t occurrences(const std::string& hay, const std::string& needle) {
  std::size_t n = 0;
  for (auto at = hay.find(needle); at != std::string::npos; at = hay.find(needle, at + 1)) ++n;
  return n;
}

asio::awaitable<bool> wait_done(const esm::test::task& t) {
  for (int i = 0; i < 300 && !t.done(); ++i) {
    bool ran = co_await async::sleep_for(10ms);
    if (!ran) break;
  }
  co_return t.done();
}

}  // namespace

TEST_CASE("statsd, statsite and DogStatsD receive the flush") {
  asio::io_context io;
  status_fixture f;
  udp::socket statsd(io, udp::endpoint(loopback, 0));
  udp::socket dog(io, udp::endpoint(loopback, 0));
  tcp::acceptor site(io, tcp::endpoint(loopback, 0));
  telemetry_settings s;
  s.host_name = "h1";
  s.metrics_prefix = "esmp";
  s.statsd_address = address_of(statsd.local_endpoint().port());
  s.dogstatsd_address = address_of(dog.local_endpoint().port());
  s.statsite_address = address_of(site.local_endpoint().port());
  s.dogstatsd_tags = {"env:test"};
  sink_options o;
  o.interval = 100ms;
  sink_stats ss;
  esm::test::task sinks(io, run_statsd_sinks(io.get_executor(), f.st, s, o, &ss));

  auto got_statsd = esm::test::run(io, receive_udp_until(statsd, "esmp.check.txn:4.000000|c\n"), 10s);
  CHECK(got_statsd.find("esmp.h1.esm.agent.isLeader:1.000000|g\n") != std::string::npos);
  CHECK(got_statsd.find("esmp.h1.esm.agents.healthy:3.000000|g\n") != std::string::npos);
  CHECK(got_statsd.find("esmp.h1.esm.nodes.monitored:5.000000|g\n") != std::string::npos);
  CHECK(got_statsd.find("esmd_pings_total:9.000000|c\n") != std::string::npos);

  auto got_dog = esm::test::run(io, receive_udp_until(dog, "esmp.esm.agent.isLeader:1|g|#env:test\n"), 10s);
  CHECK(got_dog.find("esmp.esm.agent.isLeader:1|g|#env:test\n") != std::string::npos);

  auto got_site = esm::test::run(io, receive_tcp_until(site, "esmp.h1.esm.agent.isLeader:1.000000|g\n"), 10s);
  CHECK(got_site.find("esmp.h1.esm.agent.isLeader:1.000000|g\n") != std::string::npos);
  CHECK(ss.statsite_connects == 1);

  // Counters send deltas: a change is sent as such.
  f.engine.transactions = 10;
  auto later = esm::test::run(io, receive_udp_until(statsd, "esmp.check.txn:6.000000|c\n"), 10s);
  CHECK(later.find("esmp.check.txn:6.000000|c\n") != std::string::npos);

  sinks.cancel();
  CHECK(esm::test::run(io, wait_done(sinks), 5s));
  CHECK(ss.flushes >= 2);
  CHECK(ss.packets >= 4);
  CHECK(ss.lookups == 0);  // literal IP addresses never go to the resolver
}

TEST_CASE("host names are looked up once; a name that does not resolve neither stalls nor holds the stop") {
  asio::io_context io;
  status_fixture f;
  udp::socket statsd(io, udp::endpoint(loopback, 0));
  tcp::acceptor site(io, tcp::endpoint(loopback, 0));
  telemetry_settings s;
  s.host_name = "h1";
  s.statsd_address = "localhost:" + std::to_string(statsd.local_endpoint().port());
  s.statsite_address = "localhost:" + std::to_string(site.local_endpoint().port());
  s.dogstatsd_address = "esmd-test.invalid:8125";  // RFC 6761: never resolves
  sink_options o;
  o.interval = 50ms;
  o.lookup_timeout = 500ms;
  sink_stats ss;
  esm::test::task sinks(io, run_statsd_sinks(io.get_executor(), f.st, s, o, &ss));
  auto got = esm::test::run(io, receive_udp_until(statsd, "check.txn:4.000000|c\n"), 10s);
  CHECK(got.find("h1.esm.agent.isLeader:1.000000|g\n") != std::string::npos);
  auto got_site = esm::test::run(io, receive_tcp_until(site, "h1.esm.agent.isLeader:1.000000|g\n"), 10s);
  CHECK(got_site.find("h1.esm.agent.isLeader:1.000000|g\n") != std::string::npos);
  CHECK(esm::test::run(io, wait_until([&] { return ss.flushes >= 5; }, 10s), 15s));
  MESSAGE(ss.lookups << " lookups, " << ss.resolve_failures << " failed, " << ss.lookup_timeouts << " timed out");
  CHECK(ss.resolve_failures >= 1);  // the .invalid name, retried at each flush
  CHECK(ss.statsite_connects == 1);
  auto stop_asked = std::chrono::steady_clock::now();
  sinks.cancel();
  CHECK(esm::test::run(io, wait_done(sinks), 5s));
  auto stop_took = std::chrono::steady_clock::now() - stop_asked;
  MESSAGE("stop took " << std::chrono::duration<double, std::milli>(stop_took).count() << " ms");
  // Prompt, whatever the lookups do. (This resolver fails the .invalid name at once, so the
  // stop does not land inside a lookup wait here; await_lookup's wait is a cancellable timer.)
  CHECK(stop_took < 400ms);
}

TEST_CASE("a sink's failure and its recovery are each logged once at WARN, never per packet") {
  auto console = std::make_shared<std::stringstream>();
  log::settings ls;
  ls.console = console;
  log::init(ls);
  asio::io_context io;
  status_fixture f;
  // A series whose line alone exceeds the largest UDP datagram: each flush that sends it
  // fails (EMSGSIZE) while the other datagrams go out; flushes without it work again.
  auto& big = f.consul.by_endpoint[{std::string(70'000, 'x'), "200"}];
  big.add(0.01);
  udp::socket statsd(io, udp::endpoint(loopback, 0));
  telemetry_settings s;
  s.host_name = "h1";
  s.statsd_address = address_of(statsd.local_endpoint().port());
  sink_options o;
  o.interval = 20ms;
  sink_stats ss;
  esm::test::task sinks(io, run_statsd_sinks(io.get_executor(), f.st, s, o, &ss));
  CHECK(esm::test::run(io, wait_until([&] { return ss.flushes >= 4; }, 10s), 15s));
  big.add(0.02);  // sent (and failing) once more at the next flush
  auto seen = ss.flushes;
  CHECK(esm::test::run(io, wait_until([&] { return ss.flushes >= seen + 4; }, 10s), 15s));
  sinks.cancel();
  CHECK(esm::test::run(io, wait_done(sinks), 5s));
  log::init(log::settings{});
  auto text = console->str();
  INFO(text.substr(0, 2000));
  CHECK(ss.send_errors == 2);
  CHECK(ss.packets >= ss.flushes);  // every flush's other datagram went out, the failing ones' too
  CHECK(occurrences(text, "Error sending metrics") == 2);
  CHECK(occurrences(text, "Sending metrics works again") == 2);
  CHECK(occurrences(text, "[WARN]") == 4);
  CHECK(text.find("address=" + s.statsd_address) != std::string::npos);
  CHECK(text.find("sink=statsd") != std::string::npos);
  CHECK(text.find("error=") != std::string::npos);
}

TEST_CASE("sinks nobody listens on, or a statsite peer that never reads, do not stall the loop") {
  asio::io_context io;
  status_fixture f(3000);  // some 3000 series: ~200 KB per flush
  telemetry_settings s;
  s.host_name = "h1";
  sink_options o;
  o.interval = 20ms;
  o.statsite_buffer = 64 * 1024;
  o.reconnect_min = 50ms;
  o.reconnect_max = 200ms;

  SUBCASE("nobody listens") {
    s.statsd_address = address_of(dead_udp_port(io));
    s.dogstatsd_address = address_of(dead_udp_port(io));
    s.statsite_address = address_of(dead_tcp_port(io));
    sink_stats ss;
    esm::test::task sinks(io, run_statsd_sinks(io.get_executor(), f.st, s, o, &ss));
    auto gap = esm::test::run(io, loop_gap(1500ms), 10s);
    MESSAGE("longest loop gap with dead sinks: " << gap.count() << " ms over " << ss.flushes << " flushes, "
            << ss.packets << " datagrams, " << ss.send_errors << " send errors, "
            << ss.statsite_connect_failures << " statsite connect failures");
    CHECK(ss.flushes >= 20);
    CHECK(ss.statsite_connect_failures >= 2);  // reconnects with backoff
    CHECK(ss.statsite_connects == 0);
    CHECK(gap < 100ms);
    sinks.cancel();
    CHECK(esm::test::run(io, wait_done(sinks), 5s));
  }
  SUBCASE("a statsite peer that accepts and never reads") {
    tcp::acceptor site(io, tcp::endpoint(loopback, 0));
    s.statsite_address = address_of(site.local_endpoint().port());
    tcp::socket peer(io);
    site.async_accept(peer, [](boost::system::error_code) {});
    sink_stats ss;
    esm::test::task sinks(io, run_statsd_sinks(io.get_executor(), f.st, s, o, &ss));
    auto gap = esm::test::run(io, loop_gap(3000ms), 10s);
    MESSAGE("longest loop gap with a stuck statsite peer: " << gap.count() << " ms; " << ss.statsite_bytes
            << " bytes written, " << ss.statsite_dropped_bytes << " dropped");
    CHECK(ss.statsite_connects == 1);
    CHECK(ss.statsite_dropped_bytes > 0);  // the first flush alone exceeds the 64 KiB buffer
    CHECK(gap < 100ms);
    sinks.cancel();
    CHECK(esm::test::run(io, wait_done(sinks), 5s));
  }
}

TEST_CASE("no sink configured: returns at once") {
  asio::io_context io;
  status_fixture f;
  esm::test::run(io, run_statsd_sinks(io.get_executor(), f.st, telemetry_settings{}), 2s);
}
