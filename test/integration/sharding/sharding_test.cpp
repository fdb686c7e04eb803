// The sharding drivers against a real Consul dev agent: the leader's fenced, minimal writes of
// the assignment, the workers' filtered reads of their own nodes and checks, reactions to
// instances and nodes coming and going, fencing, and interoperation with consul-esm's values.
// All instances run in-process on one io_context; each has its own client (connections).
// Every test case uses its own node meta, service name and KV path, so they do not interfere.
#include <doctest/doctest.h>

#include <algorithm>
#include <optional>
#include <stdexcept>

#include <boost/asio/io_context.hpp>

#include "async.hpp"
#include "consul_fixture.hpp"
#include "result_string.hpp"
#include "sharding_support.hpp"
#include "esm/sharding/kv_codec.hpp"
#include "esm/sharding/kv_plan.hpp"

namespace asio = boost::asio;
using namespace esm::test::sharding;
using namespace std::chrono_literals;
using esm::test::run;
namespace consul = esm::consul;
namespace sh = esm::sharding;

namespace {

esm::test::consul_dev_agent& agent() {
  static esm::test::consul_dev_agent a;
  return a;
}

// One scenario's names, disjoint from every other scenario's.
struct scenario {
  explicit scenario(const std::string& name)
      : meta{{"external-node", "true"}, {"suite", name}},
        service("esm-" + name),
        kv_path("esm-" + name + "/") {}
  std::map<std::string, std::string> meta;
  std::string service;
  std::string kv_path;

  sh::leader_settings leader() const {
    sh::leader_settings s;
    s.kv_path = kv_path;
    s.service = service;
    s.node_meta.assign(meta.begin(), meta.end());
    s.wait = 10s;
    s.retry_cap = 1s;
    return s;
  }
  sh::worker_settings worker(const std::string& id) const {
    sh::worker_settings s;
    s.kv_path = kv_path;
    s.service_id = service + ":" + id;
    s.node_meta.assign(meta.begin(), meta.end());
    s.wait = 10s;
    s.retry_cap = 1s;
    return s;
  }
};

// A worker with its own client and sink.
struct worker_instance {
  worker_instance(asio::io_context& io, const scenario& sc, std::string id_)
      : id(std::move(id_)), client(io.get_executor(), options_for(agent().http_address())),
        t(io, sh::run_assignment_worker(client, sc.worker(id), sink, stats)) {}
  ~worker_instance() { t.cancel(); }
  std::string id;
  consul::client client;
  recording_sink sink;
  sh::worker_stats stats;
  task t;
};

struct leader_instance {
  leader_instance(asio::io_context& io, const scenario& sc, consul::txn_op fence, esm::util::lease lease = {})
      : client(io.get_executor(), options_for(agent().http_address())),
        t(io, sh::run_assignment_leader(client, sc.leader(), std::move(fence), std::move(lease), stats)) {}
  ~leader_instance() { t.cancel(); }
  consul::client client;
  sh::leader_stats stats;
  task t;
};

// Cancels the tasks and lets them finish (bounded).
void stop_all(asio::io_context& io, std::vector<task*> tasks) {
  for (auto* t : tasks) t->cancel();
  auto end = std::chrono::steady_clock::now() + 10s;
  auto all_done = [&] {
    return std::all_of(tasks.begin(), tasks.end(), [](task* t) { return t->done(); });
  };
  while (!all_done() && std::chrono::steady_clock::now() < end)
    io.run_one_for(std::chrono::milliseconds(50));
  CHECK(all_done());
  for (auto* t : tasks) CHECK_FALSE(t->error());
}

// A session holding `<kv>leader` and the check-session op the election would hand over.
asio::awaitable<consul::txn_op> take_lock(consul::client& c, std::string kv_path,
                                          std::string* session_out = nullptr) {
  consul::session_request req;
  req.ttl = 60s;
  req.lock_delay = 0s;
  auto id = co_await c.session_create(req);
  REQUIRE(id);
  consul::kv_write acquire;
  acquire.flags = consul::lock_flag_value;
  acquire.acquire = *id;
  auto got = co_await c.kv_put(kv_path + "leader", "", acquire);
  REQUIRE(got);
  REQUIRE(*got);
  if (session_out) *session_out = *id;
  consul::txn_kv_op kv;
  kv.verb = "check-session";
  kv.key = kv_path + "leader";
  kv.session = *id;
  consul::txn_op op;
  op.kv = kv;
  co_return op;
}

asio::awaitable<void> register_all(consul::client& c, std::vector<consul::catalog_registration> regs) {
  for (auto& r : regs) {
    auto ok = co_await c.catalog_register(r);
    REQUIRE(ok);
  }
}

// The stored assignment tree, decoded.
asio::awaitable<sh::assignment_map> stored(consul::client& c, std::string kv_path) {
  auto r = co_await c.kv_list(sh::assignments_dir(kv_path));
  REQUIRE(r);
  std::map<std::string, std::string> raw;
  for (auto& kv : r->value) raw.emplace(kv.key, kv.value);
  co_return sh::decode_stored_assignments(kv_path, raw);
}

// Every node of `expected` handed to exactly one of `workers`, each worker holding exactly the
// nodes of its own stored assignment, with their checks (and no others).
bool covers_exactly(const std::vector<worker_instance*>& workers, const std::set<std::string>& expected) {
  std::multiset<std::string> seen;
  for (auto* w : workers) {
    auto names = w->sink.node_names();
    seen.insert(names.begin(), names.end());
  }
  return std::set<std::string>(seen.begin(), seen.end()) == expected && seen.size() == expected.size();
}

std::set<std::string> expected_checks(const std::set<std::string>& nodes, int per_node) {
  std::set<std::string> out;
  for (auto& n : nodes)
    for (int i = 0; i < per_node; ++i) out.insert(n + "/" + n + "-c" + std::to_string(i));
  return out;
}

}  // namespace

TEST_CASE("three workers and one leader share 30 external nodes; instances leave and join") {
  asio::io_context io;
  scenario sc("share");
  consul::client admin(io.get_executor(), options_for(agent().http_address()));

  std::set<std::string> all, probes;
  std::vector<consul::catalog_registration> regs;
  for (int i = 0; i < 30; ++i) {
    auto name = "share-n" + std::to_string(i);
    bool probe = i % 3 == 0;
    all.insert(name);
    if (probe) probes.insert(name);
    auto r = external_node(name, sc.meta, probe, 2);
    if (probe) {  // the prober's own check: never handed to the check runner
      consul::health_check h;
      h.node = name;
      h.check_id = "externalNodeHealth";
      h.name = "External Node Status";
      h.status = "passing";
      r.checks.push_back(h);
    }
    regs.push_back(r);
  }
  // A node without the scenario's meta is not external here.
  regs.push_back(external_node("share-other", {{"external-node", "true"}, {"suite", "elsewhere"}}, false, 1));
  for (auto id : {"a", "b", "c"}) regs.push_back(instance(sc.service, id, "passing"));
  run(io, register_all(admin, regs), 60s);

  consul::txn_op fence = run(io, take_lock(admin, sc.kv_path), 20s);
  auto leader = std::make_unique<leader_instance>(io, sc, fence);
  auto wa = std::make_unique<worker_instance>(io, sc, "a");
  auto wb = std::make_unique<worker_instance>(io, sc, "b");
  auto wc = std::make_unique<worker_instance>(io, sc, "c");
  std::vector<worker_instance*> abc{wa.get(), wb.get(), wc.get()};

  run(io, [&]() -> asio::awaitable<void> {
    // Every node handed to exactly one worker, ten each, probes as probes, checks exactly the
    // checks of the worker's nodes.
    bool ok = co_await eventually([&] {
      return covers_exactly(abc, all) &&
             std::all_of(abc.begin(), abc.end(), [](worker_instance* w) {
               return w->sink.checks.size() == 2 * w->sink.nodes.size();
             });
    }, 10s);
    REQUIRE(ok);
    auto kv = co_await stored(admin, sc.kv_path);
    REQUIRE(kv.size() == 3);
    for (auto* w : abc) {
      auto& mine = kv.at(sc.service + ":" + w->id);
      CHECK(mine.size() == 10);
      std::set<std::string> kv_nodes(mine.nodes.begin(), mine.nodes.end());
      std::set<std::string> kv_probes(mine.probes.begin(), mine.probes.end());
      kv_nodes.insert(kv_probes.begin(), kv_probes.end());
      CHECK(w->sink.node_names() == kv_nodes);
      CHECK(w->sink.ping_names() == kv_probes);
      for (auto& p : kv_probes) CHECK(probes.count(p) == 1);
      for (auto& n : mine.nodes) CHECK(probes.count(n) == 0);
      CHECK(w->sink.check_keys() == expected_checks(w->sink.node_names(), 2));
      CHECK(w->stats.malformed == 0);
    }
    CHECK(leader->stats.instances == 3);
    CHECK(leader->stats.nodes == 30);
    CHECK(leader->stats.nodes_moved == 0);  // nothing was assigned before

    // Instance b fails its health check: its nodes go to a and c, its key is deleted, and its
    // sink ends up empty.
    auto b_nodes = wb->sink.node_names();
    REQUIRE_FALSE(b_nodes.empty());
    auto moved_before = leader->stats.nodes_moved;
    REQUIRE(co_await admin.catalog_register(instance(sc.service, "b", "critical")));
    std::chrono::milliseconds took{0};
    ok = co_await eventually([&] {
      std::vector<worker_instance*> ac{wa.get(), wc.get()};
      return covers_exactly(ac, all) && wb->sink.nodes.empty() && wb->sink.checks.empty() &&
             wa->sink.checks.size() + wc->sink.checks.size() == 60;
    }, 5s, &took);
    REQUIRE(ok);
    MESSAGE("instance left: its nodes handed to the others after " << took.count() << " ms");
    kv = co_await stored(admin, sc.kv_path);
    CHECK(kv.size() == 2);
    CHECK(kv.count(sc.service + ":b") == 0);
    CHECK(leader->stats.nodes_moved - moved_before == b_nodes.size());  // only b's nodes moved
    // a and c read only the nodes they received, not their whole share again.
    CHECK(wa->stats.added_reads >= 1);
    CHECK(wc->stats.added_reads >= 1);

    // Instance b comes back and d joins: each takes about a third of the nodes; the
    // movement bound of balanced_assignment for one join (k=2 -> 3, 10 probes, 20 plain) is
    // ceil(10/3) + ceil(20/3) + 2*2 = 15.
    moved_before = leader->stats.nodes_moved;
    REQUIRE(co_await admin.catalog_register(instance(sc.service, "b", "passing")));
    ok = co_await eventually([&] { return covers_exactly(abc, all) && wb->sink.nodes.size() == 10; }, 5s, &took);
    REQUIRE(ok);
    MESSAGE("instance joined: nodes handed over after " << took.count() << " ms");
    auto moved = leader->stats.nodes_moved - moved_before;
    CHECK(moved >= 10);
    CHECK(moved <= 15);

    auto wd = std::make_unique<worker_instance>(io, sc, "d");
    moved_before = leader->stats.nodes_moved;
    REQUIRE(co_await admin.catalog_register(instance(sc.service, "d", "passing")));
    std::vector<worker_instance*> abcd{wa.get(), wb.get(), wc.get(), wd.get()};
    ok = co_await eventually([&] {
      return covers_exactly(abcd, all) && wd->sink.nodes.size() >= 7 &&
             wd->sink.checks.size() == 2 * wd->sink.nodes.size();
    }, 5s);
    REQUIRE(ok);
    moved = leader->stats.nodes_moved - moved_before;
    // k=3 -> 4: ceil(10/4) + ceil(20/4) + 2*3 = 14, and at least d's share (7 or 8).
    CHECK(moved >= 7);
    CHECK(moved <= 14);
    for (auto* w : abcd) CHECK(w->sink.nodes.size() >= 7);
    CHECK(leader->stats.failures == 0);
    CHECK_FALSE(leader->stats.fenced_out);
    co_await sleep(100ms);
    wd->t.cancel();
    co_await sleep(100ms);
    CHECK(wd->t.done());
  }(), 60s);

  stop_all(io, {&leader->t, &wa->t, &wb->t, &wc->t});
}

TEST_CASE("nodes and checks registered or removed reach the right worker within seconds") {
  asio::io_context io;
  scenario sc("churn");
  consul::client admin(io.get_executor(), options_for(agent().http_address()));
  std::vector<consul::catalog_registration> regs;
  std::set<std::string> all;
  for (int i = 0; i < 12; ++i) {
    auto name = "churn-n" + std::to_string(i);
    all.insert(name);
    regs.push_back(external_node(name, sc.meta, i % 4 == 0, 1));
  }
  for (auto id : {"a", "b", "c"}) regs.push_back(instance(sc.service, id, "passing"));
  run(io, register_all(admin, regs), 60s);

  consul::txn_op fence = run(io, take_lock(admin, sc.kv_path), 20s);
  auto leader = std::make_unique<leader_instance>(io, sc, fence);
  auto wa = std::make_unique<worker_instance>(io, sc, "a");
  auto wb = std::make_unique<worker_instance>(io, sc, "b");
  auto wc = std::make_unique<worker_instance>(io, sc, "c");
  std::vector<worker_instance*> abc{wa.get(), wb.get(), wc.get()};

  run(io, [&]() -> asio::awaitable<void> {
    REQUIRE(co_await eventually([&] { return covers_exactly(abc, all); }, 10s));

    // A new node: assigned to one worker, its node object and check handed over.
    std::chrono::milliseconds took{0};
    REQUIRE(co_await admin.catalog_register(external_node("churn-new", sc.meta, true, 1)));
    all.insert("churn-new");
    bool ok = co_await eventually([&] {
      if (!covers_exactly(abc, all)) return false;
      for (auto* w : abc)
        if (w->sink.node_names().count("churn-new"))
          return w->sink.check_keys().count("churn-new/churn-new-c0") == 1 &&
                 w->sink.ping_names().count("churn-new") == 1;
      return false;
    }, 3s, &took);
    CHECK(ok);
    MESSAGE("registered node handed over after " << took.count() << " ms");

    // A check added to an assigned node.
    worker_instance* owner = nullptr;
    for (auto* w : abc)
      if (w->sink.node_names().count("churn-n5")) owner = w;
    REQUIRE(owner);
    auto reg = external_node("churn-n5", sc.meta, false, 2);  // adds churn-n5-c1
    REQUIRE(co_await admin.catalog_register(reg));
    ok = co_await eventually([&] { return owner->sink.check_keys().count("churn-n5/churn-n5-c1") == 1; }, 3s, &took);
    CHECK(ok);
    MESSAGE("new check handed over after " << took.count() << " ms");
    for (auto* w : abc)
      if (w != owner) CHECK(w->sink.check_keys().count("churn-n5/churn-n5-c1") == 0);

    // A check status written by someone else (the check runner) reaches its owner only.
    auto before = owner->sink.check_calls;
    reg.checks.resize(1);
    reg.checks[0].status = "passing";
    reg.checks[0].output = "ok";
    REQUIRE(co_await admin.catalog_register(reg));
    ok = co_await eventually([&] {
      for (auto& c : owner->sink.checks)
        if (c->check_id == "churn-n5-c0") return c->status == "passing";
      return false;
    }, 3s);
    CHECK(ok);
    CHECK(owner->sink.check_calls > before);

    // A deregistered node leaves its worker: node and checks.
    worker_instance* holder = nullptr;
    for (auto* w : abc)
      if (w->sink.node_names().count("churn-n7")) holder = w;
    REQUIRE(holder);
    consul::catalog_deregistration d;
    d.node = "churn-n7";
    REQUIRE(co_await admin.catalog_deregister(d));
    all.erase("churn-n7");
    ok = co_await eventually([&] {
      return covers_exactly(abc, all) && holder->sink.check_keys().count("churn-n7/churn-n7-c0") == 0;
    }, 3s, &took);
    CHECK(ok);
    MESSAGE("deregistered node dropped after " << took.count() << " ms");
  }(), 60s);

  stop_all(io, {&leader->t, &wa->t, &wb->t, &wc->t});
}

TEST_CASE("a leader whose session lost the lock writes nothing and stops") {
  asio::io_context io;
  scenario sc("fence");
  consul::client admin(io.get_executor(), options_for(agent().http_address()));
  std::vector<consul::catalog_registration> regs;
  for (int i = 0; i < 5; ++i) regs.push_back(external_node("fence-n" + std::to_string(i), sc.meta, false, 1));
  regs.push_back(instance(sc.service, "a", "passing"));
  run(io, register_all(admin, regs), 60s);

  SUBCASE("destroyed session") {
    std::string session;
    consul::txn_op fence = run(io, take_lock(admin, sc.kv_path, &session), 20s);
    REQUIRE(run(io, [&]() -> asio::awaitable<bool> {
      auto r = co_await admin.session_destroy(session);
      co_return r && *r;
    }(), 10s));
    leader_instance leader(io, sc, fence);
    run(io, [&]() -> asio::awaitable<void> {
      REQUIRE(co_await eventually([&] { return leader.t.done(); }, 10s));
      CHECK(leader.stats.fenced_out);
      CHECK(leader.stats.transactions == 0);
      CHECK(leader.stats.computations == 1);
      auto kv = co_await stored(admin, sc.kv_path);
      CHECK(kv.empty());
    }(), 30s);
    CHECK_FALSE(leader.t.error());
  }
  SUBCASE("the session still holds the lock but the lease has lapsed (a process resumed after a pause)") {
    // Consul would accept the write (the session is valid and holds the key): only the lease
    // stops it, as it must when the election's clock says the term may be over.
    std::string session;
    consul::txn_op fence = run(io, take_lock(admin, sc.kv_path, &session), 20s);
    int asked = 0;
    leader_instance leader(io, sc, fence, esm::util::lease([&asked] {
      ++asked;
      return false;
    }));
    run(io, [&]() -> asio::awaitable<void> {
      REQUIRE(co_await eventually([&] { return leader.t.done(); }, 10s));
      CHECK(asked >= 1);
      CHECK(leader.stats.lease_refusals == 1);
      CHECK(leader.stats.transactions == 0);
      CHECK(leader.stats.computations == 1);
      CHECK_FALSE(leader.stats.fenced_out);
      auto kv = co_await stored(admin, sc.kv_path);
      CHECK(kv.empty());
      co_await admin.session_destroy(session);  // frees the key for the next subcase
    }(), 30s);
    CHECK_FALSE(leader.t.error());
  }
  SUBCASE("another session holds the lock") {
    consul::txn_op fence = run(io, take_lock(admin, sc.kv_path), 20s);
    // A second session: it does not hold the key.
    consul::session_request req;
    req.ttl = 60s;
    auto other = run(io, admin.session_create(req), 10s);
    REQUIRE(other);
    fence.kv->session = *other;
    leader_instance leader(io, sc, fence);
    run(io, [&]() -> asio::awaitable<void> {
      REQUIRE(co_await eventually([&] { return leader.t.done(); }, 10s));
      CHECK(leader.stats.fenced_out);
      CHECK(leader.stats.transactions == 0);
      auto kv = co_await stored(admin, sc.kv_path);
      CHECK(kv.empty());
    }(), 30s);
  }
}

TEST_CASE("no healthy instance: the leader writes nothing, and writes once one appears") {
  asio::io_context io;
  scenario sc("empty");
  consul::client admin(io.get_executor(), options_for(agent().http_address()));
  std::vector<consul::catalog_registration> regs;
  for (int i = 0; i < 4; ++i) regs.push_back(external_node("empty-n" + std::to_string(i), sc.meta, false, 1));
  regs.push_back(instance(sc.service, "a", "critical"));
  run(io, register_all(admin, regs), 60s);
  consul::txn_op fence = run(io, take_lock(admin, sc.kv_path), 20s);
  leader_instance leader(io, sc, fence);
  run(io, [&]() -> asio::awaitable<void> {
    REQUIRE(co_await eventually([&] { return leader.stats.nodes == 4; }, 5s));
    co_await sleep(500ms);
    CHECK(leader.stats.instances == 0);
    CHECK(leader.stats.transactions == 0);
    CHECK((co_await stored(admin, sc.kv_path)).empty());
    REQUIRE(co_await admin.catalog_register(instance(sc.service, "a", "passing")));
    REQUIRE(co_await eventually([&] { return leader.stats.transactions == 1; }, 3s));
    auto kv = co_await stored(admin, sc.kv_path);
    REQUIRE(kv.size() == 1);
    CHECK(kv.begin()->second.size() == 4);
    // Nothing changes: nothing is rewritten (consul-esm rewrites everything on every trigger).
    auto computations = leader.stats.computations;
    REQUIRE(co_await admin.catalog_register(instance(sc.service, "a", "passing")));
    REQUIRE(co_await admin.catalog_register(external_node("empty-n0", sc.meta, false, 1)));
    co_await sleep(600ms);
    CHECK(leader.stats.transactions == 1);
    CHECK(leader.stats.computations == computations);  // identical inputs: no recomputation
  }(), 60s);
  stop_all(io, {&leader.t});
}

TEST_CASE("mixed fleets: the worker follows values a consul-esm leader wrote") {
  asio::io_context io;
  scenario sc("mixed");
  consul::client admin(io.get_executor(), options_for(agent().http_address()));
  std::vector<consul::catalog_registration> regs;
  for (int i = 0; i < 6; ++i) regs.push_back(external_node("mixed-n" + std::to_string(i), sc.meta, i == 4, 1));
  run(io, register_all(admin, regs), 60s);
  auto key = sh::assignment_key(sc.kv_path, sc.service + ":a");

  worker_instance wa(io, sc, "a");
  run(io, [&]() -> asio::awaitable<void> {
    // No key yet: an empty share is handed over.
    REQUIRE(co_await eventually([&] { return wa.sink.node_calls >= 1 && wa.sink.check_calls >= 1; }, 5s));
    CHECK(wa.sink.nodes.empty());

    // consul-esm's round robin over two instances, exactly as Go's json.Marshal writes it
    // (null for an empty list).
    std::vector<sh::external_node> nodes;
    for (int i = 0; i < 6; ++i) nodes.push_back({"mixed-n" + std::to_string(i), i == 4});
    std::vector<std::string> ids{sc.service + ":a", sc.service + ":b"};
    auto rr = sh::round_robin_assignment(nodes, ids);
    auto value = sh::encode_assignment(rr.at(sc.service + ":a"));
    CHECK(value == R"({"Nodes":["mixed-n0","mixed-n2"],"Probes":["mixed-n4"]})");
    REQUIRE(co_await admin.kv_put(key, value));
    bool ok = co_await eventually([&] {
      return wa.sink.node_names() == std::set<std::string>{"mixed-n0", "mixed-n2", "mixed-n4"} &&
             wa.sink.ping_names() == std::set<std::string>{"mixed-n4"} && wa.sink.checks.size() == 3;
    }, 3s);
    CHECK(ok);

    // Nodes only, Probes null; unknown members ignored, as Go does.
    REQUIRE(co_await admin.kv_put(key, R"({"Nodes":["mixed-n1"],"Probes":null,"Extra":1})"));
    ok = co_await eventually([&] {
      return wa.sink.node_names() == std::set<std::string>{"mixed-n1"} && wa.sink.pings.empty() &&
             wa.sink.check_keys() == std::set<std::string>{"mixed-n1/mixed-n1-c0"};
    }, 3s);
    CHECK(ok);

    // A malformed value is logged and skipped: the previous assignment stays in force.
    auto calls = wa.sink.node_calls;
    REQUIRE(co_await admin.kv_put(key, R"({"Nodes":"mixed-n2"})"));
    REQUIRE(co_await eventually([&] { return wa.stats.malformed == 1; }, 3s));
    co_await sleep(200ms);
    CHECK(wa.sink.node_names() == std::set<std::string>{"mixed-n1"});
    CHECK(wa.sink.node_calls == calls);

    // Both lists null, and then the key deleted: nothing assigned.
    REQUIRE(co_await admin.kv_put(key, R"({"Nodes":["mixed-n3"],"Probes":null})"));
    REQUIRE(co_await eventually([&] { return wa.sink.node_names() == std::set<std::string>{"mixed-n3"}; }, 3s));
    REQUIRE(co_await admin.kv_put(key, R"({"Nodes":null,"Probes":null})"));
    REQUIRE(co_await eventually([&] { return wa.sink.nodes.empty() && wa.sink.checks.empty(); }, 3s));
    REQUIRE(co_await admin.kv_put(key, R"({"Nodes":["mixed-n5"],"Probes":null})"));
    REQUIRE(co_await eventually([&] { return wa.sink.node_names() == std::set<std::string>{"mixed-n5"}; }, 3s));
    REQUIRE(co_await admin.kv_delete(key));
    CHECK(co_await eventually([&] { return wa.sink.nodes.empty() && wa.sink.checks.empty(); }, 3s));
  }(), 60s);

  // What esmd's leader writes is what consul-esm's workers read: Go's exact encoding.
  scenario sc2("mixed2");
  std::vector<consul::catalog_registration> regs2;
  for (int i = 0; i < 3; ++i) regs2.push_back(external_node("mixed2-n" + std::to_string(i), sc2.meta, false, 0));
  regs2.push_back(instance(sc2.service, "a", "passing"));
  regs2.push_back(instance(sc2.service, "go", "passing"));
  run(io, register_all(admin, regs2), 60s);
  consul::txn_op fence = run(io, take_lock(admin, sc2.kv_path), 20s);
  leader_instance leader(io, sc2, fence);
  run(io, [&]() -> asio::awaitable<void> {
    REQUIRE(co_await eventually([&] { return leader.stats.transactions >= 1; }, 5s));
    auto r = co_await admin.kv_list(sh::assignments_dir(sc2.kv_path));
    REQUIRE(r);
    REQUIRE(r->value.size() == 2);
    std::size_t total = 0;
    for (auto& kv : r->value) {
      auto d = sh::decode_assignment(kv.value);
      REQUIRE(d);
      CHECK(kv.value == sh::encode_assignment(*d));
      CHECK(kv.value.rfind(R"({"Nodes":)", 0) == 0);
      CHECK(kv.value.find(R"("Probes":null})") != std::string::npos);  // no probe nodes here
      total += d->size();
    }
    CHECK(total == 3);
  }(), 30s);
  stop_all(io, {&leader.t, &wa.t});
}

TEST_CASE("node names with regex and quote characters are selected exactly by the worker's filter") {
  asio::io_context io;
  scenario sc("odd");
  consul::client admin(io.get_executor(), options_for(agent().http_address()));
  std::vector<std::string> mine{"odd-a.b", "odd-q\"x", "odd-b\\s", "odd-(x|y)*"};
  std::vector<std::string> others{"odd-axb", "odd-b\\\\s", "odd-x", "odd-a.bc"};
  std::vector<consul::catalog_registration> regs;
  for (auto& n : mine) regs.push_back(external_node(n, sc.meta, false, 1));
  for (auto& n : others) regs.push_back(external_node(n, sc.meta, false, 1));
  run(io, register_all(admin, regs), 60s);

  worker_instance wa(io, sc, "a");
  run(io, [&]() -> asio::awaitable<void> {
    sh::assignment a;
    a.nodes = mine;
    REQUIRE(co_await admin.kv_put(sh::assignment_key(sc.kv_path, sc.service + ":a"), sh::encode_assignment(a)));
    std::set<std::string> want(mine.begin(), mine.end());
    bool ok = co_await eventually([&] { return wa.sink.node_names() == want && wa.sink.checks.size() == 4; }, 5s);
    CHECK(ok);
    CHECK(wa.sink.node_names() == want);
    std::set<std::string> check_nodes;
    for (auto& c : wa.sink.checks) check_nodes.insert(c->node.str());
    CHECK(check_nodes == want);
    CHECK(wa.stats.errors == 0);
  }(), 30s);
  stop_all(io, {&wa.t});
}

TEST_CASE("a burst of catalog changes is written as one rebalance") {
  asio::io_context io;
  scenario sc("burst");
  consul::client admin(io.get_executor(), options_for(agent().http_address()));
  std::vector<consul::catalog_registration> regs;
  for (int i = 0; i < 4; ++i) regs.push_back(external_node("burst-n" + std::to_string(i), sc.meta, false, 0));
  for (auto id : {"a", "b"}) regs.push_back(instance(sc.service, id, "passing"));
  run(io, register_all(admin, regs), 60s);
  consul::txn_op fence = run(io, take_lock(admin, sc.kv_path), 20s);

  // A long debounce, so the burst below (five registrations at once) lands inside it even on a
  // loaded machine.
  auto settings = sc.leader();
  settings.debounce = 2s;
  consul::client leader_client(io.get_executor(), options_for(agent().http_address()));
  sh::leader_stats stats;
  task leader(io, sh::run_assignment_leader(leader_client, settings, fence, {}, stats));
  run(io, [&]() -> asio::awaitable<void> {
    REQUIRE(co_await eventually([&] { return stats.rebalances == 1; }, 10s));
    std::vector<task> burst;
    for (int i = 4; i < 9; ++i)
      burst.emplace_back(io, register_all(admin, {external_node("burst-n" + std::to_string(i), sc.meta, false, 0)}));
    REQUIRE(co_await eventually([&] {
      return std::all_of(burst.begin(), burst.end(), [](const task& t) { return t.done(); });
    }, 10s));
    for (auto& t : burst) CHECK_FALSE(t.error());
    REQUIRE(co_await eventually([&] { return stats.rebalances == 2; }, 10s));
    co_await sleep(2500ms);
    CHECK(stats.rebalances == 2);
    CHECK(stats.nodes == 9);
    auto kv = co_await stored(admin, sc.kv_path);
    std::size_t total = 0;
    for (auto& [id, a] : kv) total += a.size();
    CHECK(total == 9);
  }(), 60s);
  stop_all(io, {&leader});
}

TEST_CASE("a sink that throws ends the worker with its exception; nothing keeps following") {
  // Before, the `||` of the worker's branches swallowed the exception while the other branch
  // kept following a share that no longer reached the sink: a silently dead worker.
  struct throwing_sink : recording_sink {
    void on_checks(const std::vector<esm::sharding::shared_check>& c) override {
      recording_sink::on_checks(c);
      if (!c.empty()) throw std::runtime_error("sink failed (test)");
    }
  };
  asio::io_context io;
  scenario sc("throwing");
  consul::client admin(io.get_executor(), options_for(agent().http_address()));
  std::vector<consul::catalog_registration> regs;
  for (int i = 0; i < 3; ++i) regs.push_back(external_node("throwing-n" + std::to_string(i), sc.meta, false, 1));
  regs.push_back(instance(sc.service, "a", "passing"));
  run(io, register_all(admin, regs), 60s);
  consul::txn_op fence = run(io, take_lock(admin, sc.kv_path), 20s);
  leader_instance leader(io, sc, fence);
  consul::client wc(io.get_executor(), options_for(agent().http_address()));
  throwing_sink sink;
  sh::worker_stats stats;
  task worker(io, sh::run_assignment_worker(wc, sc.worker("a"), sink, stats));
  run(io, [&]() -> asio::awaitable<void> {
    REQUIRE(co_await eventually([&] { return worker.done(); }, 20s));
  }(), 30s);
  CHECK(sink.check_calls >= 1);
  REQUIRE(worker.error());
  try {
    std::rethrow_exception(worker.error());
  } catch (const std::runtime_error& e) {
    CHECK(std::string(e.what()) == "sink failed (test)");
  }
  stop_all(io, {&leader.t});
}
