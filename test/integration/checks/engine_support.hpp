// Test support for the check engine: a real Consul dev agent shared by the tests of one
// binary, an HTTP target whose answer the test switches at will, and an engine running on the
// test's io_context with a feeder that hands it the catalog's checks (as the worker does).
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/streambuf.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

#include "async.hpp"
#include "consul_fixture.hpp"
#include "esm/checks/engine.hpp"
#include "esm/consul/client.hpp"

namespace engine_test {

namespace asio = boost::asio;
using namespace std::chrono_literals;
using clock = std::chrono::steady_clock;

inline esm::test::consul_dev_agent& agent() {
  static esm::test::consul_dev_agent a;
  return a;
}

inline esm::consul::connection_options options() {
  esm::consul::connection_options o;
  o.address = agent().http_address();
  o.request_timeout = 10s;
  return o;
}

// HTTP/1.1 on 127.0.0.1 answering every request with the current status and body
// ("Connection: close"). `body_counter` appends the request number, so each answer differs.
class switch_server {
 public:
  explicit switch_server(asio::io_context& io) : st_(std::make_shared<state>(io)) {
    auto s = st_;
    asio::co_spawn(io, accept(s), asio::detached);
  }
  ~switch_server() {
    boost::system::error_code ec;
    st_->acceptor.close(ec);
  }
  unsigned short port() const { return st_->acceptor.local_endpoint().port(); }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port()) + "/health"; }
  void set(int status, std::string body = "ok") {
    st_->status = status;
    st_->body = std::move(body);
  }
  void body_counter(bool on) { st_->counter = on; }
  int requests() const { return st_->requests; }
  int answered(int status) const {
    auto it = st_->by_status.find(status);
    return it == st_->by_status.end() ? 0 : it->second;
  }

 private:
  struct state {
    explicit state(asio::io_context& io)
        : acceptor(io, asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0)) {}
    asio::ip::tcp::acceptor acceptor;
    int status = 200;
    std::string body = "ok";
    bool counter = false;
    int requests = 0;
    std::map<int, int> by_status;
  };
  static asio::awaitable<void> serve(std::shared_ptr<state> s, asio::ip::tcp::socket sock) {
    asio::streambuf buf;
    auto [ec, n] = co_await asio::async_read_until(sock, buf, "\r\n\r\n",
                                                   asio::as_tuple(asio::use_awaitable));
    if (ec) co_return;
    ++s->requests;
    ++s->by_status[s->status];
    std::string body = s->body;
    if (s->counter) body += " " + std::to_string(s->requests);
    std::string reply = "HTTP/1.1 " + std::to_string(s->status) + " X\r\nContent-Length: " +
                        std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body;
    co_await asio::async_write(sock, asio::buffer(reply), asio::as_tuple(asio::use_awaitable));
    boost::system::error_code ignored;
    sock.shutdown(asio::ip::tcp::socket::shutdown_both, ignored);
  }
  static asio::awaitable<void> accept(std::shared_ptr<state> s) {
    for (;;) {
      auto [ec, sock] = co_await s->acceptor.async_accept(asio::as_tuple(asio::use_awaitable));
      if (ec) co_return;
      asio::co_spawn(s->acceptor.get_executor(), serve(s, std::move(sock)), asio::detached);
    }
  }
  std::shared_ptr<state> st_;
};

using esm::test::task;

// Runs the io_context until pred() holds or `limit` passed; returns pred().
inline bool run_until(asio::io_context& io, const std::function<bool()>& pred,
                      clock::duration limit = 20s) {
  auto end = clock::now() + limit;
  io.restart();
  while (!pred() && clock::now() < end) io.run_one_for(10ms);
  return pred();
}

inline void run_for(asio::io_context& io, clock::duration d) {
  run_until(io, [] { return false; }, d);
}

inline esm::consul::health_check http_check(const std::string& node, const std::string& id,
                                            const std::string& url,
                                            std::chrono::milliseconds interval = 200ms) {
  esm::consul::health_check c;
  c.node = node;
  c.check_id = id;
  c.name = id;
  c.status = "critical";
  c.definition.http = url;
  c.definition.interval = interval;
  c.definition.timeout = 2s;
  return c;
}

// An engine on the test's io_context, with its own client, fed from the catalog: every
// `feed()` (and, when `follow` is on, every 100 ms) reads the checks of `nodes` and hands them
// over, like the worker's watch.
struct running_engine {
  running_engine(asio::io_context& io_, esm::checks::engine_settings s,
                 esm::probe::tls_files tls = {},
                 esm::consul::connection_options to_consul = options())
      : io(io_),
        client(io_.get_executor(), to_consul),
        probes(tls),
        engine(io_.get_executor(), &client, probes, std::move(s)),
        run(io_, engine.run()) {}
  ~running_engine() {
    run.cancel();
    run_until(io, [&] { return run.done(); }, 10s);
  }

  // Reads the checks of `nodes` from Consul and hands them to the engine.
  void feed() {
    std::vector<esm::consul::health_check> all;
    for (auto& n : nodes) {
      auto r = esm::test::run(io, client.health_node(n));
      if (!r) throw std::runtime_error("health_node failed: " + r.error().to_string());
      for (auto& c : r->value) all.push_back(std::move(c));
    }
    if (patch) patch(all);
    engine.on_checks(esm::sharding::make_shared_checks(std::move(all)));
  }
  // Hands over only the check `id` of `node` (as an instance that owns just that check).
  void feed_only(const std::string& node, const std::string& id) {
    auto all = esm::test::run(io, client.health_node(node));
    if (!all) throw std::runtime_error("health_node failed: " + all.error().to_string());
    std::vector<esm::consul::health_check> mine;
    for (auto& c : all->value)
      if (c.check_id == id) mine.push_back(c);
    engine.on_checks(esm::sharding::make_shared_checks(std::move(mine)));
  }

  // Applied to what feed() read before handing it over (to stand in for a newer Consul).
  std::function<void(std::vector<esm::consul::health_check>&)> patch;

  esm::consul::health_check catalog(const std::string& node, const std::string& id) {
    auto r = esm::test::run(io, client.health_node(node));
    if (!r) throw std::runtime_error("health_node failed: " + r.error().to_string());
    for (auto& c : r->value)
      if (c.check_id == id) return c;
    throw std::runtime_error("no check " + id + " on " + node);
  }

  // Waits (feeding every 100 ms) until the catalog shows `status` for the check.
  bool wait_status(const std::string& node, const std::string& id, const std::string& status,
                   clock::duration limit = 20s) {
    auto end = clock::now() + limit;
    while (clock::now() < end) {
      if (catalog(node, id).status == status) return true;
      feed();
      run_for(io, 100ms);
    }
    return false;
  }

  asio::io_context& io;
  esm::consul::client client;
  esm::probe::probe_context probes;
  esm::checks::check_engine engine;
  std::vector<std::string> nodes;
  task run;
};

// Registers an external node with these checks (replacing what the node had).
inline void register_node(asio::io_context& io, esm::consul::client& c, const std::string& node,
                          std::vector<esm::consul::health_check> checks,
                          std::optional<esm::consul::agent_service> service = std::nullopt) {
  esm::consul::catalog_registration r;
  r.node = node;
  r.address = "127.0.0.1";
  r.node_meta["external-node"] = "true";
  r.service = std::move(service);
  r.checks = std::move(checks);
  auto res = esm::test::run(io, c.catalog_register(r));
  if (!res) throw std::runtime_error("register failed: " + res.error().to_string());
}

}  // namespace engine_test
