// What each instance receives from Consul when one check's status changes and when one node is
// added: esmd's sharding (leader + workers reading only their own share, server-side filtered)
// next to consul-esm's approach (every instance re-reads all external checks through
// /v1/health/state/any?node-meta=..., and after an assignment rewrite all external nodes
// through /v1/catalog/nodes), both measured in one run against the same Consul dev agent.
// Bytes are counted on the wire (headers included) by a TCP proxy in front of each instance.
//
// Also prints the cost of the ways a worker can read its share (the choice documented in
// lib/esm/sharding/worker.hpp). Environment: BENCH_NODES (default 10000), BENCH_INSTANCES (5).
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <numeric>
#include <optional>

#include <boost/asio/io_context.hpp>

#include "async.hpp"
#include "consul_fixture.hpp"
#include "sharding_support.hpp"
#include "tcp_proxy.hpp"
#include "esm/log/log.hpp"
#include "esm/consul/watch.hpp"
#include "esm/sharding/kv_plan.hpp"

namespace asio = boost::asio;
namespace consul = esm::consul;
namespace sh = esm::sharding;
using namespace esm::test::sharding;
using esm::test::tcp_proxy;
using namespace std::chrono_literals;
using clk = std::chrono::steady_clock;

namespace {

int env_int(const char* name, int dflt) {
  const char* v = std::getenv(name);
  return v && *v ? std::atoi(v) : dflt;
}

const std::map<std::string, std::string> ext_meta{{"external-node", "true"}};
std::vector<std::pair<std::string, std::string>> meta_pairs() { return {ext_meta.begin(), ext_meta.end()}; }

std::string node_name(int i) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "ext-%05d", i);
  return buf;
}

// consul-esm's follower, for the traffic it causes: a blocking read of every external check
// (node-meta filter only, wait 45 s in consul-esm; here the same wait as esmd's).
struct go_follower {
  go_follower(asio::io_context& io, const std::string& address)
      : client(io.get_executor(), options_for(address)) {}
  consul::client client;
  std::vector<consul::health_check> checks;
  std::uint64_t wakes = 0;
  std::optional<task> t;

  asio::awaitable<void> run(std::chrono::milliseconds wait) {
    consul::query_options q;
    q.node_meta = meta_pairs();
    q.timeout = wait + wait / 16 + consul::blocking_margin;
    consul::watch<std::vector<consul::health_check>> w(
        [this](const consul::query_options& o) { return client.health_state("any", o); }, q, wait);
    for (;;) {
      auto r = co_await w.next();
      if (!r) {
        if (r.error().is_cancelled()) co_return;
        co_await sleep(200ms);
        continue;
      }
      ++wakes;
      checks = std::move(r->value);
    }
  }
};

struct esm_instance {
  esm_instance(asio::io_context& io, const std::string& address, std::string id_)
      : id(std::move(id_)), client(io.get_executor(), options_for(address)) {}
  std::string id;
  consul::client client;
  recording_sink sink;
  sh::worker_stats stats;
  std::optional<task> t;
};

struct snapshot {
  std::vector<std::uint64_t> bytes, requests;
};

template <class Proxies, class Clients>
snapshot take(const Proxies& proxies, const Clients& clients) {
  snapshot s;
  for (auto& p : proxies) s.bytes.push_back(p->count().to_client);
  for (auto* c : clients) s.requests.push_back(c->http().stats().requests);
  return s;
}

struct diff {
  std::uint64_t req_total = 0, req_max = 0, bytes_total = 0, bytes_max = 0;
};

diff operator-(const snapshot& a, const snapshot& b) {
  diff d;
  for (std::size_t i = 0; i < a.bytes.size(); ++i) {
    auto by = a.bytes[i] - b.bytes[i];
    d.bytes_total += by;
    d.bytes_max = std::max(d.bytes_max, by);
  }
  for (std::size_t i = 0; i < a.requests.size(); ++i) {
    auto r = a.requests[i] - b.requests[i];
    d.req_total += r;
    d.req_max = std::max(d.req_max, r);
  }
  return d;
}

void row(const char* event, const char* who, const diff& d) {
  std::printf("| %-22s | %-34s | %8llu | %8llu | %14llu | %14llu |\n", event, who,
              static_cast<unsigned long long>(d.req_total), static_cast<unsigned long long>(d.req_max),
              static_cast<unsigned long long>(d.bytes_total), static_cast<unsigned long long>(d.bytes_max));
}

double ms_since(clk::time_point t) {
  return std::chrono::duration<double, std::milli>(clk::now() - t).count();
}

}  // namespace

int main() {
  esm::log::settings ls;
  ls.min_level = esm::log::level::warn;
  esm::log::init(ls);
  const int n_nodes = env_int("BENCH_NODES", 10000);
  const int n_inst = env_int("BENCH_INSTANCES", 5);
  const auto wait = 45s;

  esm::test::consul_dev_agent agent;
  asio::io_context io;
  consul::client admin(io.get_executor(), options_for(agent.http_address()));
  auto host = agent.http_address().substr(0, agent.http_address().find(':'));
  int port = agent.http_port();

  // ---- catalog: n_nodes external nodes with 2 checks each, every 5th opts into probing
  auto t0 = clk::now();
  esm::test::run(io, [&]() -> asio::awaitable<void> {
    int next = 0;
    auto worker = [&]() -> asio::awaitable<void> {
      while (next < n_nodes) {
        int i = next++;
        auto r = co_await admin.catalog_register(external_node(node_name(i), ext_meta, i % 5 == 0, 2));
        if (!r) throw std::runtime_error("register: " + r.error().to_string());
      }
    };
    std::vector<task> ws;
    for (int k = 0; k < 24; ++k) ws.emplace_back(io, worker());
    while (std::any_of(ws.begin(), ws.end(), [](const task& t) { return !t.done(); })) co_await sleep(50ms);
    for (auto& w : ws)
      if (w.error()) std::rethrow_exception(w.error());
    for (int i = 0; i < n_inst; ++i) {
      auto r = co_await admin.catalog_register(instance("consul-esm", "i" + std::to_string(i), "passing"));
      if (!r) throw std::runtime_error("register instance");
    }
  }(), 600s);
  std::printf("registered %d external nodes with 2 checks each in %.1f s; %d instances\n\n", n_nodes,
              ms_since(t0) / 1000, n_inst);

  // ---- ways for one worker to read its share (1/n_inst of the nodes)
  {
    std::vector<std::string> share;
    for (int i = 0; i < n_nodes; i += n_inst) share.push_back(node_name(i));
    auto measure = [&](auto fetch) {
      std::vector<double> ms;
      std::uint64_t bytes = 0;
      for (int k = 0; k < 5; ++k) {
        auto t = clk::now();
        bytes = esm::test::run(io, fetch(), 120s);
        ms.push_back(ms_since(t));
      }
      std::sort(ms.begin(), ms.end());
      return std::pair{bytes, ms[2]};
    };
    auto raw = [&](std::string target) {
      return [&admin, target]() -> asio::awaitable<std::uint64_t> {
        auto r = co_await admin.call(consul::method::get, target, {}, 60s);
        if (!r || r->status != 200) throw std::runtime_error("fetch failed: " + target.substr(0, 80));
        co_return r->body.size();
      };
    };
    consul::query_options all_q;
    all_q.node_meta = meta_pairs();
    consul::query_options share_q = all_q;
    share_q.filter = sh::node_name_filter(share);
    auto all_checks = measure(raw(admin.build_query("/health/state/any", all_q)));
    auto share_checks = measure(raw(admin.build_query("/health/state/any", share_q)));
    auto all_nodes = measure(raw(admin.build_query("/catalog/nodes", all_q)));
    auto share_nodes = measure(raw(admin.build_query("/catalog/nodes", share_q)));
    auto one_node = measure(raw(admin.build_query("/health/node/" + node_name(0), {})));
    std::printf("Reading one instance's share (%zu of %d nodes), response body bytes and median latency of 5:\n",
                share.size(), n_nodes);
    std::printf("| %-58s | %12s | %9s |\n", "request", "bytes", "ms");
    std::printf("|%s|%s|%s|\n", std::string(60, '-').c_str(), std::string(14, '-').c_str(), std::string(11, '-').c_str());
    auto line = [](const char* what, std::pair<std::uint64_t, double> v) {
      std::printf("| %-58s | %12llu | %9.1f |\n", what, static_cast<unsigned long long>(v.first), v.second);
    };
    line("health/state/any, node-meta only (consul-esm, all checks)", all_checks);
    line("health/state/any, node-meta + Node matches regex (esmd)", share_checks);
    line("catalog/nodes, node-meta only (consul-esm, all nodes)", all_nodes);
    line("catalog/nodes, node-meta + Node matches regex (esmd)", share_nodes);
    line("health/node/<one node> (per-node blocking option, x share)", one_node);
    std::printf("per-node option for the share: %zu requests, %llu bytes per full read; "
                "one long-lived request per node\n\n",
                share.size(), static_cast<unsigned long long>(one_node.first * share.size()));
  }

  // ---- esmd fleet, each instance's client behind its own counting proxy
  std::vector<std::unique_ptr<tcp_proxy>> esm_px, go_px;
  for (int i = 0; i < n_inst; ++i) {
    esm_px.push_back(std::make_unique<tcp_proxy>(io, host, port, 65536));
    go_px.push_back(std::make_unique<tcp_proxy>(io, host, port, 65536));
  }
  auto fence = esm::test::run(io, [&]() -> asio::awaitable<consul::txn_op> {
    consul::session_request req;
    req.ttl = 3600s;
    auto id = co_await admin.session_create(req);
    consul::kv_write acquire;
    acquire.flags = consul::lock_flag_value;
    acquire.acquire = *id;
    co_await admin.kv_put("consul-esm/leader", "", acquire);
    consul::txn_kv_op kv;
    kv.verb = "check-session";
    kv.key = "consul-esm/leader";
    kv.session = *id;
    consul::txn_op op;
    op.kv = kv;
    co_return op;
  }(), 20s);

  std::vector<std::unique_ptr<esm_instance>> esm;
  for (int i = 0; i < n_inst; ++i) esm.push_back(std::make_unique<esm_instance>(io, esm_px[i]->address(), "i" + std::to_string(i)));
  consul::client leader_client(io.get_executor(), options_for(esm_px[0]->address()));
  sh::leader_stats lstats;
  sh::leader_settings lset;
  lset.wait = wait;
  t0 = clk::now();
  std::optional<task> leader_task;
  leader_task.emplace(io, sh::run_assignment_leader(leader_client, lset, fence, {}, lstats));
  for (auto& e : esm) {
    sh::worker_settings ws;
    ws.service_id = "consul-esm:" + e->id;
    ws.wait = wait;
    e->t.emplace(io, sh::run_assignment_worker(e->client, ws, e->sink, e->stats));
  }

  auto total_nodes = [&] {
    std::size_t n = 0;
    for (auto& e : esm) n += e->sink.nodes.size();
    return n;
  };
  auto total_checks = [&] {
    std::size_t n = 0;
    for (auto& e : esm) n += e->sink.checks.size();
    return n;
  };
  esm::test::run(io, [&]() -> asio::awaitable<void> {
    bool ok = co_await eventually([&] {
      return total_nodes() == std::size_t(n_nodes) && total_checks() == std::size_t(2 * n_nodes);
    }, 120s);
    if (!ok) throw std::runtime_error("fleet did not converge");
  }(), 180s);
  std::printf("esmd fleet converged in %.0f ms (leader: %llu ops in %llu transactions)\n", ms_since(t0),
              static_cast<unsigned long long>(lstats.ops), static_cast<unsigned long long>(lstats.transactions));

  std::vector<consul::client*> esm_clients;
  for (auto& e : esm) esm_clients.push_back(&e->client);
  // The leader's requests count for instance 0: add its client's counter to instance 0's.
  auto esm_snap = [&] {
    auto s = take(esm_px, esm_clients);
    s.requests[0] += leader_client.http().stats().requests;
    return s;
  };
  auto settle = [&] { esm::test::run(io, sleep(1500ms), 10s); };

  // The two events; `seen` waits until the instances under test have taken each in.
  auto check_status_event = [&](int node, std::function<bool(const std::string&, const std::string&)> seen) {
    auto target = node_name(node);
    auto reg = external_node(target, ext_meta, node % 5 == 0, 2);
    auto t = clk::now();
    esm::test::run(io, [&]() -> asio::awaitable<void> {
      consul::health_check c = reg.checks[0];
      c.status = "passing";
      c.output = "HTTP GET: 200 OK";
      consul::txn_check_op op{"set", c};
      std::vector<consul::txn_op> ops(1);
      ops[0].check = op;
      auto r = co_await admin.txn(ops);
      if (!r || !r->committed) throw std::runtime_error("check update failed");
      if (!co_await eventually([&] { return seen(target, c.check_id.str()); }, 60s))
        throw std::runtime_error("status change not seen");
    }(), 90s);
    return ms_since(t);
  };
  auto node_added_event = [&](int node, std::function<bool()> seen) {
    auto t = clk::now();
    esm::test::run(io, [&]() -> asio::awaitable<void> {
      auto r = co_await admin.catalog_register(external_node(node_name(node), ext_meta, false, 2));
      if (!r) throw std::runtime_error("register failed");
      if (!co_await eventually(seen, 60s)) throw std::runtime_error("new node not seen");
    }(), 90s);
    return ms_since(t);
  };

  std::printf("\nPer event, what the %d instances received from Consul (bytes on the wire, headers included):\n", n_inst);
  std::printf("| %-22s | %-34s | %8s | %8s | %14s | %14s |\n", "event", "approach", "requests", "max/inst",
              "bytes", "max/inst");
  std::printf("|%s|%s|%s|%s|%s|%s|\n", std::string(24, '-').c_str(), std::string(36, '-').c_str(),
              std::string(10, '-').c_str(), std::string(10, '-').c_str(), std::string(16, '-').c_str(),
              std::string(16, '-').c_str());
  std::vector<std::string> notes;
  char note[256];

  // ---- phase 1: esmd alone (leader + workers)
  settle();
  {
    auto e0 = esm_snap();
    double took = check_status_event(7, [&](const std::string& node, const std::string& check) {
      for (auto& e : esm)
        for (auto& ch : e->sink.checks)
          if (ch->node == node && ch->check_id == check && ch->status == "passing") return true;
      return false;
    });
    settle();
    row("one check status", "esmd (share filter)", esm_snap() - e0);
    std::snprintf(note, sizeof note, "esmd: status change handed to its owner after %.0f ms", took);
    notes.push_back(note);
  }
  settle();
  {
    auto e0 = esm_snap();
    double took = node_added_event(n_nodes, [&] {
      return total_nodes() == std::size_t(n_nodes + 1) && total_checks() == std::size_t(2 * n_nodes + 2);
    });
    settle();
    row("one node added", "esmd (share filter)", esm_snap() - e0);
    std::snprintf(note, sizeof note, "esmd: new node and its checks handed to a worker after %.0f ms "
                  "(leader: %llu node(s) moved in total)", took, static_cast<unsigned long long>(lstats.nodes_moved));
    notes.push_back(note);
  }
  leader_task->cancel();
  for (auto& e : esm) e->t->cancel();
  settle();

  // ---- phase 2: consul-esm's followers alone, on the same Consul
  std::vector<std::unique_ptr<go_follower>> go;
  for (int i = 0; i < n_inst; ++i) go.push_back(std::make_unique<go_follower>(io, go_px[i]->address()));
  for (auto& g : go) g->t.emplace(io, g->run(wait));
  esm::test::run(io, [&]() -> asio::awaitable<void> {
    bool ok = co_await eventually([&] {
      return std::all_of(go.begin(), go.end(), [&](auto& g) { return g->checks.size() >= std::size_t(2 * n_nodes + 2); });
    }, 120s);
    if (!ok) throw std::runtime_error("consul-esm followers did not converge");
  }(), 180s);
  std::vector<consul::client*> go_clients;
  for (auto& g : go) go_clients.push_back(&g->client);
  auto go_snap = [&] { return take(go_px, go_clients); };
  auto all_woke = [&](std::vector<std::uint64_t> before) {
    for (std::size_t i = 0; i < go.size(); ++i)
      if (go[i]->wakes == before[i]) return false;
    return true;
  };
  auto wakes = [&] {
    std::vector<std::uint64_t> w;
    for (auto& g : go) w.push_back(g->wakes);
    return w;
  };
  settle();
  {
    auto g0 = go_snap();
    auto w0 = wakes();
    double took = check_status_event(8, [&](const std::string&, const std::string&) { return all_woke(w0); });
    settle();
    row("one check status", "consul-esm (all checks, per inst.)", go_snap() - g0);
    std::snprintf(note, sizeof note, "consul-esm: every follower re-read all checks after %.0f ms", took);
    notes.push_back(note);
  }
  settle();
  {
    auto g0 = go_snap();
    auto w0 = wakes();
    double took = node_added_event(n_nodes + 1, [&] { return all_woke(w0); });
    settle();
    auto go_wake = go_snap() - g0;
    // consul-esm then rewrites every assignment key (delete-tree + one set per instance), and
    // every follower re-reads its key, all external nodes, and all external checks from index
    // 0 (watchNodeList, then watchHealthChecks with a reset index). Emulated here with the
    // same requests; the leader's own catalog/nodes wake-up is counted for instance 0.
    auto g1 = go_snap();
    esm::test::run(io, [&]() -> asio::awaitable<void> {
      consul::query_options nodes_q;
      nodes_q.node_meta = meta_pairs();
      nodes_q.timeout = 60s;
      auto lr = co_await go[0]->client.catalog_nodes(nodes_q);  // the leader's node watch
      if (!lr) throw std::runtime_error("catalog");
      for (auto& g : go) {
        auto kv = co_await g->client.kv_get("consul-esm/agents/consul-esm:x");
        auto nodes = co_await g->client.catalog_nodes(nodes_q);
        auto checks = co_await g->client.health_state("any", nodes_q);
        if (!kv || !nodes || !checks) throw std::runtime_error("emulation read failed");
      }
    }(), 300s);
    auto go_cascade = go_snap() - g1;
    diff go_total = go_wake;
    go_total.req_total += go_cascade.req_total;
    go_total.req_max += go_cascade.req_max;
    go_total.bytes_total += go_cascade.bytes_total;
    go_total.bytes_max += go_cascade.bytes_max;
    row("one node added", "consul-esm: check watch wake", go_wake);
    row("one node added", "consul-esm: + reassignment reads", go_total);
    std::snprintf(note, sizeof note, "consul-esm: every follower re-read all checks after %.0f ms", took);
    notes.push_back(note);
  }
  for (auto& n : notes) std::printf("  %s\n", n.c_str());

  // ---- stop
  for (auto& g : go) g->t->cancel();
  auto end = clk::now() + 10s;
  auto done = [&] {
    if (!leader_task->done()) return false;
    for (auto& e : esm)
      if (!e->t->done()) return false;
    for (auto& g : go)
      if (!g->t->done()) return false;
    return true;
  };
  while (!done() && clk::now() < end) io.run_one_for(50ms);
  return 0;
}
