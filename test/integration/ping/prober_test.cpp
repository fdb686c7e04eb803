// The node prober end to end: a real Consul dev agent, real ICMP (raw sockets as root on the
// host's loopback; unprivileged ICMP inside a network namespace the test made), and a node that
// never answers on a veth pair into a namespace the test made.
#include <doctest/doctest.h>

#include <chrono>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

#include "async.hpp"
#include "consul_fixture.hpp"
#include "esm/consul/client.hpp"
#include "esm/ping/go_time.hpp"
#include "esm/ping/prober.hpp"
#include "esm/util/async.hpp"
#include "netns.hpp"
#include "tcp_proxy.hpp"

namespace asio = boost::asio;
using namespace std::chrono_literals;
using sclock = std::chrono::steady_clock;
using esm::ping::node_prober;
using esm::ping::prober_settings;

namespace {

esm::test::consul_dev_agent& agent() {
  static esm::test::consul_dev_agent a;
  return a;
}

esm::consul::connection_options options(const std::string& address) {
  esm::consul::connection_options o;
  o.address = address;
  o.request_timeout = 10s;
  return o;
}

std::string unique(const std::string& prefix) {
  static int n = 0;
  return prefix + "-" + std::to_string(++n);
}

prober_settings fast(const std::string& kv_path) {
  prober_settings s;
  s.kv_path = kv_path;
  s.kind = esm::ping::socket_kind::raw;
  s.interval = 1s;
  s.timeout = 400ms;
  s.batch_flush_interval = 100ms;
  s.reopen_interval = 500ms;
  s.retry_base = 50ms;
  s.retry_cap = 500ms;
  s.health.reconnect_timeout = 72h;
  return s;
}

// Registers an external node that opts in to pings, and returns the catalog's node object
// (with its ModifyIndex, which the reaping delete-cas needs).
esm::consul::node register_node(asio::io_context& io, esm::consul::client& c, const std::string& name,
                                const std::string& address) {
  esm::consul::catalog_registration r;
  r.node = name;
  r.address = address;
  r.node_meta["external-node"] = "true";
  r.node_meta["external-probe"] = "true";
  auto res = esm::test::run(io, c.catalog_register(r));
  if (!res) throw std::runtime_error("register failed: " + res.error().to_string());
  auto info = esm::test::run(io, c.catalog_node_info(name));
  if (!info || !info->value) throw std::runtime_error("registered node not found: " + name);
  return info->value->node;
}

asio::awaitable<std::optional<esm::consul::health_check>> node_check(esm::consul::client& c, std::string node) {
  std::optional<esm::consul::health_check> out;
  auto r = co_await c.health_node(node);
  if (r)
    for (auto& chk : r->value)
      if (chk.check_id == "externalNodeHealth") out = chk;
  co_return out;
}

// Waits until the node's externalNodeHealth has `status`; the check (or nullopt on timeout).
asio::awaitable<std::optional<esm::consul::health_check>> wait_status(esm::consul::client& c, std::string node,
                                                                      std::string status,
                                                                      std::chrono::milliseconds timeout) {
  auto end = sclock::now() + timeout;
  std::optional<esm::consul::health_check> found;
  while (sclock::now() < end) {
    auto chk = co_await node_check(c, node);
    if (chk && chk->status == status) {
      found = chk;
      break;
    }
    co_await esm::async::sleep_for(100ms);
  }
  co_return found;
}

asio::awaitable<std::optional<esm::consul::kv_pair>> get_key(esm::consul::client& c, std::string key) {
  std::optional<esm::consul::kv_pair> out;
  auto r = co_await c.kv_get(key);
  if (r && r->value) out = *r->value;
  co_return out;
}

// Asks `probe` every `period` until it says yes (true) or `timeout` passes (false).
asio::awaitable<bool> poll_until(std::function<asio::awaitable<bool>()> probe, std::chrono::milliseconds timeout,
                                 std::chrono::milliseconds period = 100ms) {
  auto end = sclock::now() + timeout;
  bool reached = false;
  while (sclock::now() < end) {
    reached = co_await probe();
    if (reached) break;
    co_await esm::async::sleep_for(period);
  }
  co_return reached;
}

// Waits until the key exists (true) or is absent (false) as asked; whether it came to be.
asio::awaitable<bool> wait_key(esm::consul::client& c, std::string key, bool present,
                               std::chrono::milliseconds timeout) {
  return poll_until([&c, key, present]() -> asio::awaitable<bool> {
    auto kv = co_await get_key(c, key);
    co_return kv.has_value() == present;
  }, timeout);
}

asio::awaitable<bool> wait_node_gone(esm::consul::client& c, std::string node, std::chrono::milliseconds timeout) {
  return poll_until([&c, node]() -> asio::awaitable<bool> {
    auto r = co_await c.catalog_node_info(node);
    co_return r && !r->value;
  }, timeout);
}

asio::awaitable<bool> wait_coordinate(esm::consul::client& c, std::string node, std::chrono::milliseconds timeout) {
  return poll_until([&c, node]() -> asio::awaitable<bool> {
    auto r = co_await c.coordinate_node(node);
    co_return r && !r->value.empty();
  }, timeout, 200ms);
}

void pause(asio::io_context& io, std::chrono::milliseconds d) {
  esm::test::run(io, esm::async::sleep_for(d), d + 5s);
}

// The prober running on the test's io_context, stopped (and waited for) on destruction.
struct running_prober {
  running_prober(asio::io_context& io, esm::consul::client& c, prober_settings s)
      : io(io), prober(io.get_executor(), &c, std::move(s)) {}
  ~running_prober() { stop(); }
  void start() { run.emplace(io, prober.run()); }
  void stop() {
    if (!run) return;
    run->cancel();
    auto end = sclock::now() + 10s;
    while (!run->done() && sclock::now() < end) {
      io.restart();
      io.run_one_for(100ms);
    }
    REQUIRE(run->done());
    run.reset();
  }
  asio::io_context& io;
  node_prober prober;
  std::optional<esm::test::task> run;
};

}  // namespace

TEST_CASE("live and dead nodes: exact outputs, a Go-format probes key, coordinates for live nodes only") {
  asio::io_context io;
  esm::consul::client c(io.get_executor(), options(agent().http_address()));
  esm::test::silent_host silent("prb");
  auto kv = unique("probe-a") + "/";
  std::vector<esm::consul::node> nodes{
      register_node(io, c, unique("live4"), "127.0.0.1"),
      register_node(io, c, unique("live6"), "::1"),
      register_node(io, c, unique("named"), "localhost"),
      register_node(io, c, unique("dead"), silent.address()),
  };
  auto before = std::chrono::system_clock::now();
  running_prober p(io, c, fast(kv));
  p.prober.set_nodes(nodes);
  p.start();

  for (int i = 0; i < 3; ++i) {
    auto chk = esm::test::run(io, wait_status(c, nodes[i].name, "passing", 10s), 15s);
    REQUIRE_MESSAGE(chk, nodes[i].name);
    CHECK(chk->output == "Node alive or reachable");
    CHECK(chk->name == "External Node Status");
    CHECK(chk->service_id.empty());
  }
  auto dead = esm::test::run(io, wait_status(c, nodes[3].name, "critical", 10s), 15s);
  REQUIRE(dead);
  CHECK(dead->output == "Node not live or unreachable");
  CHECK(dead->name == "External Node Status");

  // The critical-since key: 15 bytes of Go's MarshalBinary, UTC, the time of the first failure.
  auto key = esm::test::run(io, get_key(c, kv + "probes/" + nodes[3].name));
  REQUIRE(key);
  REQUIRE(key->value.size() == 15);
  CHECK(static_cast<unsigned char>(key->value[0]) == 1);
  CHECK(static_cast<unsigned char>(key->value[13]) == 0xff);
  CHECK(static_cast<unsigned char>(key->value[14]) == 0xff);
  auto since = esm::ping::decode_go_time(key->value);
  REQUIRE(since);
  CHECK(*since >= before - 1s);
  CHECK(*since <= std::chrono::system_clock::now());
  for (int i = 0; i < 3; ++i) CHECK_FALSE(esm::test::run(io, get_key(c, kv + "probes/" + nodes[i].name)));

  // Coordinates: written for live nodes (Consul applies them in batches, every few seconds).
  CHECK(esm::test::run(io, wait_coordinate(c, nodes[0].name, 20s), 25s));
  CHECK(esm::test::run(io, wait_coordinate(c, nodes[1].name, 20s), 25s));
  auto dead_coord = esm::test::run(io, c.coordinate_node(nodes[3].name));
  REQUIRE(dead_coord.has_value());
  CHECK(dead_coord->value.empty());

  auto& st = p.prober.stats();
  CHECK(st.nodes == 4);
  CHECK(st.alive == 3);
  CHECK(st.dead == 1);
  CHECK(st.unavailable.empty());
  CHECK(st.nodes_reaped == 0);
  auto view = p.prober.find(nodes[3].name);
  REQUIRE(view);
  CHECK(view->key_exists);
  CHECK_FALSE(view->coord);
}

TEST_CASE("a node that recovers is passing again and its probes key is removed") {
  asio::io_context io;
  esm::consul::client c(io.get_executor(), options(agent().http_address()));
  esm::test::silent_host silent("rec");
  auto kv = unique("probe-r") + "/";
  auto node = register_node(io, c, unique("flaky"), silent.address());
  running_prober p(io, c, fast(kv));
  p.prober.set_nodes({node});
  p.start();
  REQUIRE(esm::test::run(io, wait_status(c, node.name, "critical", 10s), 15s));
  REQUIRE(esm::test::run(io, wait_key(c, kv + "probes/" + node.name, true, 5s), 10s));

  silent.netns().exec("sysctl -qw net.ipv4.icmp_echo_ignore_all=0");
  auto back = esm::test::run(io, wait_status(c, node.name, "passing", 10s), 15s);
  REQUIRE(back);
  CHECK(back->output == "Node alive or reachable");
  CHECK(esm::test::run(io, wait_key(c, kv + "probes/" + node.name, false, 5s), 10s));

  // And down again: a new outage starts a new count.
  auto second = std::chrono::system_clock::now();
  silent.netns().exec("sysctl -qw net.ipv4.icmp_echo_ignore_all=1");
  REQUIRE(esm::test::run(io, wait_status(c, node.name, "critical", 10s), 15s));
  auto key = esm::test::run(io, get_key(c, kv + "probes/" + node.name));
  REQUIRE(key);
  auto since = esm::ping::decode_go_time(key->value);
  REQUIRE(since);
  CHECK(*since >= second - 1s);
}

TEST_CASE("reaping counts from the persisted critical-since, across a restart of the prober") {
  asio::io_context io;
  esm::consul::client c(io.get_executor(), options(agent().http_address()));
  esm::test::silent_host silent("reap");
  auto kv = unique("probe-x") + "/";
  auto doomed = register_node(io, c, unique("doomed"), silent.address());
  auto keeper = register_node(io, c, unique("keeper"), "127.0.0.1");
  auto settings = fast(kv);
  settings.health.reconnect_timeout = 5s;

  std::optional<esm::ping::sys_nanoseconds> since;
  {
    running_prober first(io, c, settings);
    first.prober.set_nodes({doomed, keeper});
    first.start();
    REQUIRE(esm::test::run(io, wait_status(c, doomed.name, "critical", 10s), 15s));
    auto key = esm::test::run(io, get_key(c, kv + "probes/" + doomed.name));
    REQUIRE(key);
    since = esm::ping::decode_go_time(key->value);
    REQUIRE(since);
    pause(io, 1500ms);
  }  // stopped: a restart in the middle of the outage
  pause(io, 500ms);
  running_prober second(io, c, settings);
  second.prober.set_nodes({doomed, keeper});
  second.start();
  REQUIRE(esm::test::run(io, wait_node_gone(c, doomed.name, 15s), 20s));
  auto gone_at = std::chrono::system_clock::now();
  // Not before the timeout counted from the first process's key, and about one probe
  // interval after it (a fresh count in the second process would need 5 s more).
  CHECK(gone_at >= *since + 5s);
  CHECK(gone_at <= *since + 5s + 3s);
  CHECK(esm::test::run(io, wait_key(c, kv + "probes/" + doomed.name, false, 5s), 10s));
  CHECK(second.prober.stats().nodes_reaped == 1);
  // The live node is untouched.
  auto info = esm::test::run(io, c.catalog_node_info(keeper.name));
  REQUIRE(info.has_value());
  CHECK(info->value.has_value());
}

TEST_CASE("a probes key written by consul-esm (Go) is honoured") {
  asio::io_context io;
  esm::consul::client c(io.get_executor(), options(agent().http_address()));
  esm::test::silent_host silent("gokey");
  auto kv = unique("probe-g") + "/";
  auto old_dead = register_node(io, c, unique("old-dead"), silent.address());
  auto recovered = register_node(io, c, unique("recovered"), "127.0.0.1");
  // time.Date(2024, 1, 2, 3, 4, 5, 123456000, time.UTC).MarshalBinary(), as consul-esm writes.
  const std::string go_bytes("\x01\x00\x00\x00\x0e\xdd\x25\x74\x25\x07\x5b\xca\x00\xff\xff", 15);
  for (auto* n : {&old_dead, &recovered}) {
    auto put = esm::test::run(io, c.kv_put(kv + "probes/" + n->name, go_bytes));
    REQUIRE(put.has_value());
  }
  running_prober p(io, c, fast(kv));  // node_reconnect_timeout 72 h: 2024 is long ago
  p.prober.set_nodes({old_dead, recovered});
  p.start();
  // Down since 2024: reaped at its first failed ping, never written critical first.
  REQUIRE(esm::test::run(io, wait_node_gone(c, old_dead.name, 10s), 15s));
  CHECK(esm::test::run(io, wait_key(c, kv + "probes/" + old_dead.name, false, 5s), 10s));
  // Alive: the old count is removed.
  REQUIRE(esm::test::run(io, wait_status(c, recovered.name, "passing", 10s), 15s));
  CHECK(esm::test::run(io, wait_key(c, kv + "probes/" + recovered.name, false, 5s), 10s));
}

TEST_CASE("steady state: at most 0.2 Consul requests per ping, counted through a proxy") {
  asio::io_context io;
  esm::test::tcp_proxy proxy(io, agent().http_address());
  esm::consul::client c(io.get_executor(), options(proxy.address()));
  esm::consul::client direct(io.get_executor(), options(agent().http_address()));
  auto kv = unique("probe-n") + "/";
  std::vector<esm::consul::node> nodes;
  for (int i = 0; i < 20; ++i)
    nodes.push_back(register_node(io, direct, unique("n"), "127.0.9." + std::to_string(i + 1)));
  running_prober p(io, c, fast(kv));
  p.prober.set_nodes(nodes);
  p.start();
  for (auto& n : nodes) REQUIRE(esm::test::run(io, wait_status(direct, n.name, "passing", 10s), 15s));
  pause(io, 2s);  // the first coordinates are written
  auto requests0 = proxy.count().requests;
  auto pings0 = p.prober.stats().pings;
  pause(io, 8s);
  auto requests = proxy.count().requests - requests0;
  auto pings = p.prober.stats().pings - pings0;
  MESSAGE("steady state: " << requests << " requests for " << pings << " pings");
  REQUIRE(pings >= 100);  // 20 nodes at 1 s for 8 s
  CHECK(static_cast<double>(requests) / static_cast<double>(pings) <= 0.2);
  // The proxy saw every request the prober counted.
  CHECK(proxy.count().requests >= p.prober.stats().consul_requests());
}

TEST_CASE("without ping permission: the reason is reported, nothing is written, and pings start once allowed") {
  // Unprivileged ICMP is governed by net.ipv4.ping_group_range of the network namespace: in
  // one the test made, forbid it for every group, run Consul and the prober there, then allow it.
  esm::test::scoped_netns ns("perm");
  ns.exec("sysctl -q -w net.ipv4.ping_group_range='1 0'");
  esm::test::enter_netns inside(ns.name());
  esm::test::consul_dev_agent local;
  asio::io_context io;
  esm::consul::client c(io.get_executor(), options(local.http_address()));
  auto node = register_node(io, c, unique("unpinged"), "127.0.0.1");
  auto settings = fast(unique("probe-p") + "/");
  settings.kind = esm::ping::socket_kind::udp;
  running_prober p(io, c, settings);
  p.prober.set_nodes({node});
  p.start();
  pause(io, 3s);
  auto& st = p.prober.stats();
  CHECK(st.unavailable.find("net.ipv4.ping_group_range") != std::string::npos);
  CHECK(st.pings == 0);
  // Never "passing" without a reply (consul-esm's W18), and no critical either: the node is
  // not at fault.
  CHECK_FALSE(esm::test::run(io, node_check(c, node.name)));

  ns.exec("sysctl -q -w net.ipv4.ping_group_range='0 2147483647'");
  auto chk = esm::test::run(io, wait_status(c, node.name, "passing", 10s), 15s);
  REQUIRE(chk);
  CHECK(st.unavailable.empty());
  p.stop();
}

TEST_CASE("a node that joins the share later keeps the coordinate its previous owner built") {
  asio::io_context io;
  esm::consul::client c(io.get_executor(), options(agent().http_address()));
  auto kv = unique("probe-c") + "/";
  auto first = register_node(io, c, unique("first"), "127.0.0.1");
  auto joiner = register_node(io, c, unique("joiner"), "127.0.0.2");
  // The previous owner's coordinate: 50 ms from the origin, with a low error.
  esm::consul::coordinate_entry e;
  e.node = joiner.name;
  e.coord.vec.assign(8, 0.0);
  e.coord.vec[0] = 0.05;
  e.coord.error = 0.2;
  e.coord.height = 1e-5;
  REQUIRE(esm::test::run(io, c.coordinate_update(e)).has_value());
  // Consul applies coordinate updates in batches: wait until it shows.
  REQUIRE(esm::test::run(io, wait_coordinate(c, joiner.name, 20s), 25s));

  running_prober p(io, c, fast(kv));
  p.prober.set_nodes({first});
  p.start();
  REQUIRE(esm::test::run(io, wait_status(c, first.name, "passing", 10s), 15s));
  p.prober.set_nodes({first, joiner});  // a rebalance hands it over
  REQUIRE(esm::test::run(io, wait_status(c, joiner.name, "passing", 10s), 15s));
  pause(io, 3s);
  auto view = p.prober.find(joiner.name);
  REQUIRE(view);
  REQUIRE(view->coord);  // read from Consul, not made up
  // One Vivaldi step of a loopback RTT moves it by micro-seconds, never back to the origin.
  CHECK(view->coord->vec[0] > 0.04);
  auto stored = esm::test::run(io, c.coordinate_node(joiner.name));
  REQUIRE(stored.has_value());
  REQUIRE_FALSE(stored->value.empty());
  CHECK(stored->value.front().coord.vec[0] > 0.04);
}

TEST_CASE("a node reaped and registered again under the same name is pinged afresh") {
  asio::io_context io;
  esm::consul::client c(io.get_executor(), options(agent().http_address()));
  esm::test::silent_host silent("again");
  auto kv = unique("probe-a2") + "/";
  auto name = unique("phoenix");
  auto node = register_node(io, c, name, silent.address());
  auto settings = fast(kv);
  settings.health.reconnect_timeout = 1s;
  running_prober p(io, c, settings);
  p.prober.set_nodes({node});
  p.start();
  REQUIRE(esm::test::run(io, wait_node_gone(c, name, 15s), 20s));
  // Registered again (now answering) before the share drops it: the same name, a new node.
  auto again = register_node(io, c, name, "127.0.0.1");
  p.prober.set_nodes({again});
  auto chk = esm::test::run(io, wait_status(c, name, "passing", 10s), 15s);
  REQUIRE(chk);
  CHECK(p.prober.stats().nodes_reaped == 1);
}
