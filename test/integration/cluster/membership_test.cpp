// Self-registration and the whole instance lifecycle against a real Consul dev agent: agent
// mode (service, TTL check, re-registration, duplicate refusal, graceful stop even when Consul
// is unreachable) and agentless mode on Consul 1.8.7 (health session drives the check, the
// leader reaps crashed instances, a crashed instance's ID can be used again), and a fleet of
// both modes (an agent-mode leader reaps a crashed agentless instance).
#include <doctest/doctest.h>

#include "async.hpp"
#include "consul_fixture.hpp"
#include "election_support.hpp"
#include "esm/cluster/instance.hpp"
#include "result_string.hpp"
#include "tcp_proxy.hpp"

using namespace esm::test;
namespace cluster = esm::cluster;
namespace consul = esm::consul;

namespace {

consul_dev_agent& agent() {
  static consul_dev_agent a;
  return a;
}

std::string fmt_ms(clock::duration d) {
  return std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(d).count()) + " ms";
}

cluster::membership_options member(const std::string& service, const std::string& id, bool agentless) {
  cluster::membership_options o(cluster::instance_names(service, id, service + "/"));
  o.tag = "esm-tag";
  o.agentless = agentless;
  o.deregister_after = 3s;
  o.timing = test_election("x").timing;
  return o;
}

cluster::election_options election_for(const cluster::membership_options& m) {
  auto e = test_election(m.names.leader_key());
  if (m.agentless) {
    e.session_node = m.names.node_name();
    e.session_checks = std::vector<std::string>{};
  }
  return e;
}

// A whole instance run in the background with its own stop signal.
struct instance {
  instance(asio::io_context& io, const std::string& address, cluster::membership_options m)
      : client(io.get_executor(), opts_for(address)), mo(std::move(m)) {}
  consul::client client;
  cluster::membership_options mo;
  cluster::instance_status status;
  asio::cancellation_signal signal;
  std::optional<cluster::run_outcome> outcome;
  std::string error;
  bool started = false;

  void start(asio::io_context& io) {
    started = true;
    asio::co_spawn(io, cluster::run_instance(client, mo, election_for(mo), cluster::instance_hooks{}, status),
                   asio::bind_cancellation_slot(signal.slot(), [this](std::exception_ptr e, cluster::run_outcome o) {
                     if (e) {
                       try {
                         std::rethrow_exception(e);
                       } catch (const std::exception& ex) {
                         error = ex.what();
                       }
                     }
                     outcome = std::move(o);
                   }));
  }
  bool done() const { return outcome.has_value() || !error.empty(); }
  void stop() {
    if (!done()) signal.emit(asio::cancellation_type::terminal);
  }
};

asio::awaitable<std::optional<consul::health_check>> check_of(consul::client& c, std::string node, std::string id) {
  auto r = co_await c.health_node(node);
  if (r)
    for (auto& h : r->value)
      if (h.check_id == id) co_return h;
  co_return std::nullopt;
}

// An instance registered with register_instance and kept alive by keep_registered in the
// background, until crash(): the keeper stops without deregistering, as a killed process's
// would (agentless: its health session lives on until destroyed or expired).
struct kept_instance {
  kept_instance(asio::io_context& io, consul::client& c, cluster::membership_options m)
      : io(io), c(c), mo(std::move(m)) {}
  asio::io_context& io;
  consul::client& c;
  cluster::membership_options mo;
  cluster::membership_status st;
  asio::cancellation_signal keeper_stop;
  bool keeper_done = false;

  // Registers and starts the keeper; true once registered (agentless: with its health session).
  asio::awaitable<bool> start() {
    auto reg = co_await cluster::register_instance(c, mo, st);
    if (reg.code) co_return false;
    asio::co_spawn(io, cluster::keep_registered(c, mo, st),
                   asio::bind_cancellation_slot(keeper_stop.slot(), [this](std::exception_ptr) { keeper_done = true; }));
    bool ready = !mo.agentless || co_await eventually([this] { return !st.health_session.empty(); }, 5s);
    co_return ready;
  }
  // The keeper stops without deregistering; true once it has.
  asio::awaitable<bool> crash() {
    keeper_stop.emit(asio::cancellation_type::terminal);
    bool stopped = co_await eventually([this] { return keeper_done; }, 5s);
    co_return stopped;
  }
};

// Polls the check `id` on `node` every 100 ms, at most `tries` times, until it has `status`;
// the last copy read (nullopt if never found).
asio::awaitable<std::optional<consul::health_check>> wait_check_status(consul::client& c, std::string node,
                                                                       std::string id, std::string status,
                                                                       int tries) {
  std::optional<consul::health_check> h;
  for (int i = 0; i < tries; ++i) {
    h = co_await check_of(c, node, id);
    if (h && h->status == status) break;
    co_await pause(100ms);
  }
  co_return h;
}

// Polls every 100 ms, at most `tries` times, until `node` is gone from the catalog.
asio::awaitable<bool> wait_node_gone(consul::client& c, std::string node, int tries) {
  bool removed = false;
  for (int i = 0; i < tries && !removed; ++i) {
    auto n = co_await c.catalog_node_info(node);
    removed = n && !n->value;
    if (!removed) co_await pause(100ms);
  }
  co_return removed;
}

}  // namespace

TEST_CASE("agent mode: registration with consul-esm's names, leadership, duplicate refused, re-registration, clean stop") {
  capture_log();
  asio::io_context io;
  consul::client direct(io.get_executor(), opts_for(agent().http_address()));
  instance a(io, agent().http_address(), member("esm-agent", "i1", false));
  instance dup(io, agent().http_address(), member("esm-agent", "i1", false));
  run(io, [&]() -> asio::awaitable<void> {
    a.start(io);
    REQUIRE(co_await eventually([&] { return a.status.election.is_leader; }, 15s));
    auto svc = co_await direct.agent_service_by_id("esm-agent:i1");
    REQUIRE(svc);
    REQUIRE(*svc);
    CHECK((*svc)->service == "esm-agent");
    CHECK((*svc)->meta.at("external-source") == "consul-esm");
    CHECK((*svc)->tags == std::vector<std::string>{"esm-tag"});
    auto chk = co_await check_of(direct, "esmd-test", "esm-agent:i1:agent-ttl");
    REQUIRE(chk);
    CHECK(chk->name == "Consul External Service Monitor Alive");
    CHECK(chk->status == "passing");
    CHECK(chk->service_id == "esm-agent:i1");

    dup.start(io);
    REQUIRE(co_await eventually([&] { return dup.done(); }, 10s));
    CHECK(dup.error.empty());
    CHECK(dup.outcome->code == cluster::cluster_errc::duplicate_instance);
    CHECK(dup.outcome->message == "ESM instance with service id 'esm-agent:i1' is already registered with Consul");
    CHECK(a.status.election.is_leader);  // undisturbed

    // Someone removes the registration: it comes back within a TTL or so.
    REQUIRE(co_await direct.agent_service_deregister("esm-agent:i1"));
    bool back = co_await eventually([&] { return a.status.membership.reregistrations == 1; }, 20s);
    CHECK(back);
    auto again = co_await direct.agent_service_by_id("esm-agent:i1");
    REQUIRE(again);
    CHECK(again->has_value());
    auto chk2 = co_await check_of(direct, "esmd-test", "esm-agent:i1:agent-ttl");
    REQUIRE(chk2);
    CHECK(chk2->status == "passing");

    auto t_stop = clock::now();
    a.stop();
    REQUIRE(co_await eventually([&] { return a.done(); }, 6s));
    MESSAGE("graceful stop took " << fmt_ms(clock::now() - t_stop));
    CHECK(a.error.empty());
    CHECK_FALSE(a.outcome->code);
    CHECK_FALSE(a.status.election.is_leader);
    auto gone = co_await direct.agent_service_by_id("esm-agent:i1");
    REQUIRE(gone);
    CHECK_FALSE(gone->has_value());
    auto key = co_await direct.kv_get("esm-agent/leader");
    REQUIRE(key);
    REQUIRE(key->value);
    CHECK(key->value->session.empty());
  }(), 90s);
}

TEST_CASE("agent mode: a crashed instance's ID is refused while its TTL check passes and taken over once it is critical") {
  auto log = capture_log();
  asio::io_context io;
  consul::client c(io.get_executor(), opts_for(agent().http_address()));
  auto m = member("esm-crash", "i1", false);
  run(io, [&]() -> asio::awaitable<void> {
    cluster::membership_status st;
    auto first = co_await cluster::register_instance(c, m, st);
    REQUIRE_FALSE(first.code);
    auto t_crash = clock::now();  // no keeper: the instance "crashed" right after registering
    cluster::membership_status st2;
    auto refused = co_await cluster::register_instance(c, m, st2);
    CHECK(refused.code == cluster::cluster_errc::duplicate_instance);
    bool critical = false;
    for (int i = 0; i < 200 && !critical; ++i) {
      auto h = co_await check_of(c, "esmd-test", "esm-crash:i1:agent-ttl");
      critical = h && h->status == "critical";
      if (!critical) co_await pause(100ms);
    }
    REQUIRE(critical);
    MESSAGE("TTL check critical " << fmt_ms(clock::now() - t_crash) << " after the crash");
    cluster::membership_status st3;
    auto again = co_await cluster::register_instance(c, m, st3);
    CHECK_FALSE(again.code);
    CHECK(st3.registered);
    CHECK(count_of(log->str(), "Taking over the registration of a stopped ESM instance") >= 1);
    std::optional<consul::health_check> h;
    auto t_again = clock::now();
    for (int i = 0; i < 100 && !(h && h->status == "passing"); ++i) {
      h = co_await check_of(c, "esmd-test", "esm-crash:i1:agent-ttl");
      if (!(h && h->status == "passing")) co_await pause(100ms);
    }
    REQUIRE(h);
    CHECK(h->status == "passing");  // registered passing again
    MESSAGE("passing in the catalog " << fmt_ms(clock::now() - t_again) << " after the new registration");
    co_await cluster::deregister_instance(c, m);
  }(), 60s);
}

TEST_CASE("graceful stop finishes within about 3 s while Consul is unreachable") {
  capture_log();
  asio::io_context io;
  tcp_proxy proxy(io, "127.0.0.1", agent().http_port());
  instance a(io, proxy.address(), member("esm-cut", "i1", false));
  consul::client direct(io.get_executor(), opts_for(agent().http_address()));
  run(io, [&]() -> asio::awaitable<void> {
    a.start(io);
    REQUIRE(co_await eventually([&] { return a.status.election.is_leader; }, 15s));
    proxy.set_mode(tcp_proxy::mode::blackhole);
    co_await pause(200ms);
    auto t_stop = clock::now();
    a.stop();
    REQUIRE(co_await eventually([&] { return a.done(); }, 8s));
    auto took = clock::now() - t_stop;
    MESSAGE("stop with Consul unreachable took " << fmt_ms(took));
    CHECK(took < 3s);
    CHECK(a.error.empty());
    proxy.set_mode(tcp_proxy::mode::refuse);
    proxy.set_mode(tcp_proxy::mode::forward);
    std::string id = "esm-cut:i1";
    co_await direct.agent_service_deregister(id);
  }(), 60s);
}

TEST_CASE("agentless on Consul 1.8.7: healthy by its health session, elected, crashed instances reaped, IDs reusable") {
  auto log = capture_log();
  asio::io_context io;
  consul::client direct(io.get_executor(), opts_for(agent().http_address()));
  instance a(io, agent().http_address(), member("esm-al", "a1", true));
  instance dup(io, agent().http_address(), member("esm-al", "a1", true));
  auto m2 = member("esm-al", "a2", true);
  consul::client c2(io.get_executor(), opts_for(agent().http_address()));
  run(io, [&]() -> asio::awaitable<void> {
    a.start(io);
    REQUIRE(co_await eventually([&] { return a.status.election.is_leader; }, 15s));
    std::optional<consul::health_check> chk;
    for (int i = 0; i < 100 && !(chk && chk->status == "passing"); ++i) {
      chk = co_await check_of(direct, "esm-al:a1:node", "esm-al:a1:session-check");
      co_await pause(100ms);
    }
    REQUIRE(chk);
    CHECK(chk->status == "passing");
    CHECK(chk->name == "Consul External Service Monitor Alive");
    auto node = co_await direct.catalog_node_info("esm-al:a1:node");
    REQUIRE(node);
    REQUIRE(node->value);
    CHECK(node->value->node.address == "esm-esm-al:a1");
    CHECK(node->value->services.at("esm-al:a1").meta.at("external-source") == "consul-esm");
    auto passing = co_await direct.health_service("esm-al", "", true);
    REQUIRE(passing);
    CHECK(passing->value.size() == 1);
    // The leader session lives on the synthetic node, bound to no check.
    auto ls = co_await direct.session_info(a.status.election.session_id);
    REQUIRE(ls);
    REQUIRE(ls->value);
    CHECK(ls->value->node == "esm-al:a1:node");
    CHECK(ls->value->checks.empty());

    dup.start(io);
    REQUIRE(co_await eventually([&] { return dup.done(); }, 10s));
    CHECK(dup.outcome->code == cluster::cluster_errc::duplicate_instance);
    CHECK(dup.outcome->message == "ESM instance with service id 'esm-al:a1' is already registered with Consul");

    // A second instance registers, becomes healthy, then crashes: its keeper stops without
    // deregistering and its health session ends (TTL expiry, compressed).
    kept_instance i2(io, c2, m2);
    REQUIRE(co_await i2.start());
    auto c2chk = co_await wait_check_status(direct, "esm-al:a2:node", "esm-al:a2:session-check", "passing", 50);
    REQUIRE(c2chk);
    CHECK(c2chk->status == "passing");
    REQUIRE(co_await i2.crash());
    auto t_crash = clock::now();
    REQUIRE(co_await direct.session_destroy(i2.st.health_session));

    // The leader marks it critical, then removes it after instance_deregister_after (3 s).
    auto marked = co_await wait_check_status(direct, "esm-al:a2:node", "esm-al:a2:session-check", "critical", 150);
    CHECK((marked && marked->status == "critical"));
    MESSAGE("crashed instance marked critical after " << fmt_ms(clock::now() - t_crash));
    CHECK(co_await wait_node_gone(direct, "esm-al:a2:node", 150));
    auto reaped = clock::now() - t_crash;
    MESSAGE("crashed instance removed after " << fmt_ms(reaped));
    CHECK(reaped >= m2.deregister_after);

    // The same ID registers again; and a crashed-but-not-yet-reaped one is taken over.
    cluster::membership_status st3;
    auto again = co_await cluster::register_instance(c2, m2, st3);
    CHECK_FALSE(again.code);
    cluster::membership_status st4;
    auto takeover = co_await cluster::register_instance(c2, m2, st4);  // no health session: crashed
    CHECK_FALSE(takeover.code);
    CHECK(count_of(log->str(), "Taking over the registration of a stopped ESM instance") >= 1);
    co_await cluster::deregister_instance(c2, m2);

    a.stop();
    REQUIRE(co_await eventually([&] { return a.done(); }, 6s));
    CHECK(a.error.empty());
    auto gone = co_await direct.catalog_node_info("esm-al:a1:node");
    REQUIRE(gone);
    CHECK_FALSE(gone->value);
  }(), 120s);
}

// Found by the chaos suite (an agent-mode instance next to two agentless ones): only agentless
// leaders ran the reaper, so under an agent-mode leader a crashed agentless instance stayed
// passing and kept its nodes.
TEST_CASE("a mixed fleet: an agent-mode leader marks a crashed agentless instance critical and removes it") {
  auto log = capture_log();
  asio::io_context io;
  consul::client direct(io.get_executor(), opts_for(agent().http_address()));
  instance lead(io, agent().http_address(), member("esm-mx", "m1", false));
  auto m2 = member("esm-mx", "m2", true);
  consul::client c2(io.get_executor(), opts_for(agent().http_address()));
  run(io, [&]() -> asio::awaitable<void> {
    lead.start(io);
    REQUIRE(co_await eventually([&] { return lead.status.election.is_leader; }, 15s));

    // An agentless instance registers, becomes healthy, then crashes (its keeper stops without
    // deregistering, and its health session ends).
    kept_instance i2(io, c2, m2);
    REQUIRE(co_await i2.start());
    auto chk = co_await wait_check_status(direct, "esm-mx:m2:node", "esm-mx:m2:session-check", "passing", 50);
    REQUIRE(chk);
    CHECK(chk->status == "passing");
    REQUIRE(co_await i2.crash());
    auto t_crash = clock::now();
    REQUIRE(co_await direct.session_destroy(i2.st.health_session));

    auto marked = co_await wait_check_status(direct, "esm-mx:m2:node", "esm-mx:m2:session-check", "critical", 150);
    CHECK((marked && marked->status == "critical"));
    CHECK(co_await wait_node_gone(direct, "esm-mx:m2:node", 150));
    CHECK(clock::now() - t_crash >= m2.deregister_after);
    CHECK(count_of(log->str(), "Marked a dead ESM instance critical: service_id=esm-mx:m2") == 1);

    lead.stop();
    REQUIRE(co_await eventually([&] { return lead.done(); }, 6s));
    CHECK(lead.error.empty());
  }(), 60s);
}

// A process restarted right after a crash (SIGKILL, OOM) finds its own previous registration
// still looking alive. With duplicate_wait (the daemon's: duplicate_wait_for) it waits for that
// liveness to lapse and takes over at its first start; a live duplicate is still refused, after
// the wait; a stop during the wait ends it at once.
TEST_CASE("duplicate_wait: a live duplicate is refused after the wait, a stop ends the wait, a crashed predecessor is taken over") {
  auto log = capture_log();
  asio::io_context io;
  consul::client c(io.get_executor(), opts_for(agent().http_address()));
  for (bool agentless : {false, true}) {
    CAPTURE(agentless);
    auto m = member("esm-wait", agentless ? "al" : "ag", agentless);
    run(io, [&]() -> asio::awaitable<void> {
      kept_instance first(io, c, m);
      REQUIRE(co_await first.start());

      auto dup = m;
      dup.duplicate_wait = 2s;
      auto t0 = clock::now();
      cluster::membership_status st2;
      auto refused = co_await cluster::register_instance(c, dup, st2);
      auto waited = clock::now() - t0;
      CHECK(refused.code == cluster::cluster_errc::duplicate_instance);
      CHECK(waited >= 2s);
      CHECK(waited < 6s);
      CHECK_FALSE(st2.registration_sent);
      CHECK(count_of(log->str(), agentless ? "its health session is live: waiting for it to lapse"
                                           : "its TTL check is not critical: waiting for it to lapse") >= 1);

      // A stop during the wait: an empty outcome at once, nothing registered.
      dup.duplicate_wait = 60s;
      asio::cancellation_signal stop;
      std::optional<cluster::run_outcome> stopped;
      bool threw = false;
      cluster::membership_status st3;
      asio::co_spawn(io, cluster::register_instance(c, dup, st3),
                     asio::bind_cancellation_slot(stop.slot(), [&](std::exception_ptr e, cluster::run_outcome o) {
                       threw = bool(e);
                       stopped = std::move(o);
                     }));
      co_await pause(1500ms);
      CHECK_FALSE(stopped);
      auto t_stop = clock::now();
      stop.emit(asio::cancellation_type::terminal);
      REQUIRE(co_await eventually([&] { return stopped.has_value(); }, 3s));
      CHECK_FALSE(threw);  // the stop is an empty outcome, not an exception
      CHECK_FALSE(stopped->code);
      CHECK(clock::now() - t_stop < 1s);
      CHECK_FALSE(st3.registration_sent);

      // The instance crashes: its keeper stops without deregistering. A restart with the
      // daemon's wait takes over at its first start.
      REQUIRE(co_await first.crash());
      auto restart = m;
      restart.duplicate_wait = cluster::duplicate_wait_for(restart);
      CHECK(restart.duplicate_wait == (agentless ? 25s : 15s));
      auto t1 = clock::now();
      cluster::membership_status st4;
      auto again = co_await cluster::register_instance(c, restart, st4);
      auto took = clock::now() - t1;
      CHECK_FALSE(again.code);
      CHECK(st4.registered);
      CHECK(took < restart.duplicate_wait);
      MESSAGE(std::string(agentless ? "agentless" : "agent mode") << ": the restart registered " << fmt_ms(took)
                                                       << " after it began (waited for the crashed one's liveness)");
      co_await cluster::deregister_instance(c, m);
    }(), 90s);
  }
}
