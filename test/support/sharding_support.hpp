// A fleet of in-process esmd sharding instances on one io_context against a real Consul dev
// agent: one client per instance (its own connections, as separate processes would have), a
// recording sink per worker, the leader with a real fencing session, and helpers to register
// external nodes and instances in the catalog. Shared by the integration tests and the bench.
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "async.hpp"
#include "esm/consul/client.hpp"
#include "esm/sharding/leader.hpp"
#include "esm/sharding/worker.hpp"

namespace esm::test::sharding {

namespace asio = boost::asio;
using namespace std::chrono_literals;

using esm::test::task;

// What a worker handed over last, and when.
struct recording_sink : esm::sharding::assignment_sink {
  std::vector<consul::node> nodes, pings;
  std::vector<esm::sharding::shared_check> checks;  // kept as a sink keeps them: the handles
  unsigned node_calls = 0, check_calls = 0;

  void on_nodes(std::vector<consul::node> h, std::vector<consul::node> p) override {
    nodes = std::move(h);
    pings = std::move(p);
    ++node_calls;
  }
  void on_checks(const std::vector<esm::sharding::shared_check>& c) override {
    checks = c;
    ++check_calls;
  }
  std::set<std::string> node_names() const {
    std::set<std::string> out;
    for (auto& n : nodes) out.insert(n.name);
    return out;
  }
  std::set<std::string> ping_names() const {
    std::set<std::string> out;
    for (auto& n : pings) out.insert(n.name);
    return out;
  }
  // "node/check" of every check handed over.
  std::set<std::string> check_keys() const {
    std::set<std::string> out;
    for (auto& c : checks) out.insert(c->node + "/" + c->check_id);
    return out;
  }
};

inline asio::awaitable<void> sleep(std::chrono::milliseconds d) {
  asio::steady_timer t(co_await asio::this_coro::executor, d);
  co_await t.async_wait(asio::as_tuple(asio::use_awaitable));
}

// Polls `pred` every 20 ms until it holds or `limit` passes; returns whether it held and
// stores the time it took.
inline asio::awaitable<bool> eventually(std::function<bool()> pred, std::chrono::milliseconds limit,
                                        std::chrono::milliseconds* took = nullptr) {
  auto start = std::chrono::steady_clock::now();
  for (;;) {
    auto elapsed = std::chrono::duration_cast<std::chrono::milliseconds>(
        std::chrono::steady_clock::now() - start);
    if (pred()) {
      if (took) *took = elapsed;
      co_return true;
    }
    if (elapsed > limit) co_return false;
    co_await sleep(20ms);
  }
}

inline consul::connection_options options_for(const std::string& address) {
  consul::connection_options o;
  o.address = address;
  o.request_timeout = 10s;
  return o;
}

// An external node with a node meta set, optional external-probe, and `checks` service-level
// checks (IDs "<node>-c<i>") on a service "svc-<node>".
inline consul::catalog_registration external_node(const std::string& name,
                                                  const std::map<std::string, std::string>& meta,
                                                  bool probe, int checks) {
  consul::catalog_registration r;
  r.node = name;
  r.address = "10.0.0.1";
  r.node_meta = {meta.begin(), meta.end()};
  if (probe) r.node_meta["external-probe"] = "true";
  consul::agent_service s;
  s.id = "svc-" + name;
  s.service = "web";
  s.port = 80;
  r.service = s;
  for (int i = 0; i < checks; ++i) {
    consul::health_check c;
    c.node = name;
    c.check_id = name + "-c" + std::to_string(i);
    c.name = "web tcp";
    c.service_id = s.id;
    c.status = "critical";
    c.definition.tcp = "10.0.0.1:80";
    c.definition.interval = 10s;
    c.definition.timeout = 2s;
    r.checks.push_back(c);
  }
  return r;
}

// An instance of `service` with ID `service:id` on its own catalog node, with one check in
// `status` (health_service?passing=1 lists it only while that is "passing").
inline consul::catalog_registration instance(const std::string& service, const std::string& id,
                                             const std::string& status) {
  consul::catalog_registration r;
  r.node = "esm-host-" + id;
  r.address = "127.0.0.1";
  consul::agent_service s;
  s.id = service + ":" + id;
  s.service = service;
  s.meta = {{"external-source", "consul-esm"}};
  r.service = s;
  consul::health_check c;
  c.node = r.node;
  c.check_id = service + ":" + id + ":agent-ttl";
  c.name = "Consul External Service Monitor Alive";
  c.service_id = s.id;
  c.status = status;
  r.checks.push_back(c);
  return r;
}

}  // namespace esm::test::sharding
