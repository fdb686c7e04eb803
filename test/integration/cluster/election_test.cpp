// Leader election against a real Consul dev agent, several instances in-process on one
// io_context: one leader at a time, handover after a graceful stop without lock-delay,
// takeover after an abrupt session loss after the lock-delay, fenced writes of a deposed
// leader, a lock monitor that rides out a short outage, and self-fencing when cut off.
#include <doctest/doctest.h>

#include <thread>
#include <vector>

#include "async.hpp"
#include "consul_fixture.hpp"
#include "election_support.hpp"
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

// Stops every elector and waits (bounded) until each has finished its cleanup.
asio::awaitable<void> stop_list(std::vector<elector*> es) {
  for (auto* e : es)
    if (e->running) e->stop();
  for (auto* e : es) {
    if (!e->running) continue;
    bool finished = co_await eventually([e] { return e->done; }, 6s);
    CHECK_MESSAGE(finished, e->name << " did not finish after stop");
    CHECK_MESSAGE(e->error.empty(), e->name << ": " << e->error);
  }
}

// Variadic rather than initializer lists: g++ 12 rejects a braced list inside a coroutine
// lambda ("array used as initializer").
template <class... E>
asio::awaitable<void> stop_all(E&... es) {
  std::vector<elector*> v;
  (v.push_back(&es), ...);
  co_await stop_list(std::move(v));
}

template <class... E>
int leaders(const E&... es) {
  return ((es.status.is_leader ? 1 : 0) + ...);
}

elector* leader_of(elector& a, elector& b) { return a.status.is_leader ? &a : b.status.is_leader ? &b : nullptr; }

// A KV write fenced by `fence`: committed only while its session holds the lock key.
asio::awaitable<consul::result<consul::txn_response>> fenced_write(consul::client& c, const consul::txn_op& fence,
                                                                   const std::string& key) {
  std::vector<consul::txn_op> ops;
  ops.push_back(fence);
  consul::txn_op set;
  set.kv = consul::txn_kv_op{"set", key, std::string("{\"Nodes\":null,\"Probes\":null}"), 0, 0, {}, {}, {}};
  ops.push_back(set);
  co_return co_await c.txn(ops);
}

}  // namespace

TEST_CASE("two instances: exactly one leads; a graceful stop hands over at once and releases everything") {
  auto log = capture_log();
  asio::io_context io;
  auto key = std::string("t1/leader");
  elector a(io, "a", agent().http_address(), test_election(key));
  elector b(io, "b", agent().http_address(), test_election(key));
  consul::client direct(io.get_executor(), opts_for(agent().http_address()));
  run(io, [&]() -> asio::awaitable<void> {
    a.start(io);
    b.start(io);
    REQUIRE(co_await eventually([&] { return leaders(a, b) == 1; }, 15s));
    // Exactly one for a while, not just at one instant.
    for (int i = 0; i < 75; ++i) {
      CHECK(leaders(a, b) == 1);
      co_await pause(20ms);
    }
    auto* l = leader_of(a, b);
    auto* o = l == &a ? &b : &a;
    REQUIRE(l);
    CHECK(l->work_runs == 1);
    CHECK(o->work_runs == 0);
    CHECK(l->status.leadership_changes == 1);
    CHECK(l->sessions.at(0) == l->status.session_id);

    auto kv = co_await direct.kv_get(key);
    REQUIRE(kv);
    REQUIRE(kv->value);
    CHECK(kv->value->session == l->status.session_id);
    CHECK(kv->value->flags == consul::lock_flag_value);
    auto old_session = l->status.session_id;
    auto old_fence = l->fences.at(0);

    auto t_stop = clock::now();
    l->stop();
    REQUIRE(co_await eventually([&] { return o->status.is_leader; }, 10s));
    auto handover = clock::now() - t_stop;
    MESSAGE("handover after a graceful stop: " << fmt_ms(handover));
    CHECK(handover < 3s);  // the key was released before the session was destroyed: no lock-delay
    REQUIRE(co_await eventually([&] { return l->done; }, 5s));
    CHECK(*l->done_at - t_stop < 3s);
    CHECK(l->work_cancelled);
    CHECK_FALSE(l->status.is_leader);
    CHECK(l->status.leadership_changes == 2);
    CHECK(l->status.session_id.empty());
    CHECK(*l->work_cancelled <= *o->work_started);  // never two leader works at once

    auto gone = co_await direct.session_info(old_session);
    REQUIRE(gone);
    CHECK_FALSE(gone->value);  // destroyed on the way out
    auto late = co_await fenced_write(direct, old_fence, "t1/agents/x");
    REQUIRE(late);
    CHECK_FALSE(late->committed);
    auto ok = co_await fenced_write(direct, o->fences.at(0), "t1/agents/x");
    REQUIRE(ok);
    CHECK(ok->committed);

    co_await stop_all(a, b);
    auto after = co_await direct.kv_get(key);
    REQUIRE(after);
    REQUIRE(after->value);
    CHECK(after->value->session.empty());  // released
  }(), 60s);
  CHECK(count_of(log->str(), "already held") == 0);
}

TEST_CASE("abrupt session loss: the other instance leads after the lock-delay; the old session's writes are fenced") {
  auto log = capture_log();
  asio::io_context io;
  auto key = std::string("t2/leader");
  elector a(io, "a", agent().http_address(), test_election(key));
  elector b(io, "b", agent().http_address(), test_election(key));
  consul::client direct(io.get_executor(), opts_for(agent().http_address()));
  run(io, [&]() -> asio::awaitable<void> {
    a.start(io);
    REQUIRE(co_await eventually([&] { return a.status.is_leader; }, 15s));
    b.start(io);
    co_await pause(300ms);
    CHECK_FALSE(b.status.is_leader);
    auto old_session = a.status.session_id;
    auto old_fence = a.fences.at(0);
    auto before = co_await fenced_write(direct, old_fence, "t2/agents/x");
    REQUIRE(before);
    CHECK(before->committed);

    // kill -9 plus TTL expiry, compressed: Consul invalidates the session (starting the
    // lock-delay) and the process is gone (its cleanup finds nothing to release).
    auto t_kill = clock::now();
    REQUIRE(co_await direct.session_destroy(old_session));
    a.stop();
    REQUIRE(co_await eventually([&] { return b.status.is_leader; }, 15s));
    auto takeover = clock::now() - t_kill;
    MESSAGE("takeover after an abrupt session loss (lock-delay 1 s): " << fmt_ms(takeover));
    CHECK(takeover < a.opts.timing.lock_delay + 4s);

    auto late = co_await fenced_write(direct, old_fence, "t2/agents/x");
    REQUIRE(late);
    CHECK_FALSE(late->committed);
    REQUIRE_FALSE(late->errors.empty());
    CHECK(late->errors[0].op_index == 0);
    auto ok = co_await fenced_write(direct, b.fences.at(0), "t2/agents/x");
    REQUIRE(ok);
    CHECK(ok->committed);
    co_await stop_all(a, b);
  }(), 60s);
}

TEST_CASE("a leader whose session is invalidated steps down at once and starts a new term, no 'already held'") {
  auto log = capture_log();
  log->str("");
  asio::io_context io;
  auto key = std::string("t3/leader");
  elector a(io, "a", agent().http_address(), test_election(key));
  elector watcher(io, "w", agent().http_address(), test_election("t3/other"));
  consul::client direct(io.get_executor(), opts_for(agent().http_address()));
  run(io, [&]() -> asio::awaitable<void> {
    a.start(io);
    REQUIRE(co_await eventually([&] { return a.status.is_leader; }, 15s));
    auto first = a.status.session_id;
    auto t_kill = clock::now();
    REQUIRE(co_await direct.session_destroy(first));
    REQUIRE(co_await eventually([&] { return !a.status.is_leader; }, 5s));
    auto step_down = clock::now() - t_kill;
    MESSAGE("step-down after the session was invalidated: " << fmt_ms(step_down));
    CHECK(step_down < 2s);
    CHECK(a.work_cancelled);
    REQUIRE(co_await eventually([&] { return a.status.is_leader; }, 10s));
    auto again = clock::now() - t_kill;
    MESSAGE("leading again with a new session after: " << fmt_ms(again));
    CHECK(again < a.opts.timing.lock_delay + 4s);
    CHECK(a.status.session_id != first);
    CHECK(a.status.leadership_changes == 3);
    CHECK(a.work_runs == 2);
    co_await stop_all(a);
  }(), 60s);
  auto text = log->str();
  CHECK(count_of(text, "Obtained leadership") == 2);
  CHECK(count_of(text, "Lost leadership") == 1);
  CHECK(count_of(text, "Trying to obtain leadership...") == 2);
  CHECK(count_of(text, "already held") == 0);
}

TEST_CASE("a key with foreign flags is an error logged and retried; the lock is taken once it is fixed") {
  auto log = capture_log();
  log->str("");
  asio::io_context io;
  auto key = std::string("t4/leader");
  elector a(io, "a", agent().http_address(), test_election(key));
  consul::client direct(io.get_executor(), opts_for(agent().http_address()));
  run(io, [&]() -> asio::awaitable<void> {
    consul::kv_write plain;
    plain.flags = 7;
    REQUIRE(co_await direct.kv_put(key, std::string("not a lock"), plain));
    a.start(io);
    co_await pause(1500ms);
    CHECK_FALSE(a.status.is_leader);
    CHECK(count_of(log->str(), "Existing key does not match lock use") >= 2);  // retried
    REQUIRE(co_await direct.kv_delete(key));
    REQUIRE(co_await eventually([&] { return a.status.is_leader; }, 5s));
    co_await stop_all(a);
  }(), 60s);
}

TEST_CASE("the lock monitor and the session renewal ride out a short outage without losing leadership") {
  auto log = capture_log();
  log->str("");
  asio::io_context io;
  auto key = std::string("t5/leader");
  auto port = agent().http_port();
  tcp_proxy proxy(io, "127.0.0.1", port);
  elector a(io, "a", proxy.address(), test_election(key));
  run(io, [&]() -> asio::awaitable<void> {
    a.start(io);
    REQUIRE(co_await eventually([&] { return a.status.is_leader; }, 15s));
    // Three outages of 2.5 s (within 6 retries x 1 s), one of them over a renewal at TTL/2.
    for (int round = 0; round < 3; ++round) {
      proxy.set_mode(tcp_proxy::mode::refuse);
      for (int i = 0; i < 125; ++i) {
        CHECK(a.status.is_leader);
        co_await pause(20ms);
      }
      proxy.set_mode(tcp_proxy::mode::forward);
      co_await pause(1500ms);
    }
    CHECK(a.status.is_leader);
    CHECK(a.status.leadership_changes == 1);
    CHECK(a.work_runs == 1);
    co_await stop_all(a);
  }(), 60s);
  auto text = log->str();
  MESSAGE("monitor retries logged: " << count_of(text, "Lock monitor read failed")
          << ", renew failures logged: " << count_of(text, "Failed to renew the leader session"));
  CHECK(count_of(text, "Lock monitor read failed") >= 2);
  CHECK(count_of(text, "Lost leadership") == 0);
  if (count_of(text, "Lost leadership") != 0) MESSAGE(text);
}

TEST_CASE("cut off from Consul: the leader steps down before its session can expire; the other takes over after expiry; the old leader's write is fenced") {
  auto log = capture_log();
  asio::io_context io;
  auto key = std::string("t6/leader");
  tcp_proxy proxy(io, "127.0.0.1", agent().http_port());
  elector a(io, "a", proxy.address(), test_election(key));
  elector b(io, "b", agent().http_address(), test_election(key));
  consul::client direct(io.get_executor(), opts_for(agent().http_address()));
  run(io, [&]() -> asio::awaitable<void> {
    a.start(io);
    REQUIRE(co_await eventually([&] { return a.status.is_leader; }, 15s));
    b.start(io);
    co_await pause(2s);
    REQUIRE(a.status.is_leader);
    auto old_fence = a.fences.at(0);
    auto old_lease = a.leases.at(0);
    CHECK(old_lease.valid());  // the term's lease holds while its session is renewed
    auto ttl = a.opts.timing.session_ttl;

    auto t_cut = clock::now();
    proxy.set_mode(tcp_proxy::mode::blackhole);
    // Sample: never two leaders.
    bool overlap = false;
    bool stepped = false;
    for (int i = 0; i < 2000 && !b.status.is_leader; ++i) {
      overlap = overlap || leaders(a, b) > 1;
      stepped = stepped || !a.status.is_leader;
      co_await pause(20ms);
    }
    CHECK_FALSE(overlap);
    REQUIRE(stepped);
    REQUIRE(b.status.is_leader);
    REQUIRE(a.work_cancelled);
    REQUIRE(a.status.last_confirmed);
    auto confirmed = *a.status.last_confirmed;
    MESSAGE("cut off at +0; last confirmed renew sent at " << fmt_ms(confirmed - t_cut) << "; work cancelled at "
            << fmt_ms(*a.work_cancelled - t_cut) << "; the other leads from " << fmt_ms(*b.work_started - t_cut));
    // Stepped down before Consul could possibly have expired the session.
    CHECK(*a.work_cancelled < confirmed + ttl);
    CHECK(*a.status.last_step_down < confirmed + ttl);
    // Consul keeps a session at least a TTL after its last renew: the takeover comes later.
    CHECK(*b.work_started >= confirmed + ttl);
    CHECK(*a.work_cancelled < *b.work_started);
    CHECK(a.status.last_loss_reason.find("fencing deadline") != std::string::npos);
    CHECK_FALSE(old_lease.valid());  // past the deadline: leader work would write nothing

    // The deposed leader's write, arriving late: rolled back.
    auto late = co_await fenced_write(direct, old_fence, "t6/agents/x");
    REQUIRE(late);
    CHECK_FALSE(late->committed);

    proxy.set_mode(tcp_proxy::mode::refuse);  // drop the hung connections
    proxy.set_mode(tcp_proxy::mode::forward);
    co_await pause(1s);
    CHECK(b.status.is_leader);
    CHECK_FALSE(a.status.is_leader);
    co_await stop_all(a, b);
  }(), 90s);
}

TEST_CASE("leader work that ends by itself ends the term: the key is released and taken again") {
  auto log = capture_log();
  asio::io_context io;
  auto key = std::string("t7/leader");
  elector a(io, "a", agent().http_address(), test_election(key));
  a.mode = elector::work_mode::end_at_once;  // e.g. fenced out: the leader work returned
  run(io, [&]() -> asio::awaitable<void> {
    a.start(io);
    // A term whose work ended must not keep the lock while doing nothing: it releases the
    // key and competes again, so the work runs again in a new session.
    REQUIRE(co_await eventually([&] { return a.work_runs >= 2; }, 15s));
    CHECK(a.sessions.at(0) != a.sessions.at(1));
    CHECK(a.status.leadership_changes >= 3);
    CHECK(a.status.last_loss_reason == "the leader work ended");
    co_await stop_all(a);
  }(), 40s);
  CHECK(a.error.empty());
}

TEST_CASE("leader work that throws: the term ends cleanly, then the election ends with the error") {
  auto log = capture_log();
  asio::io_context io;
  auto key = std::string("t8/leader");
  elector a(io, "a", agent().http_address(), test_election(key));
  a.mode = elector::work_mode::throw_at_once;
  consul::client direct(io.get_executor(), opts_for(agent().http_address()));
  run(io, [&]() -> asio::awaitable<void> {
    a.start(io);
    REQUIRE(co_await eventually([&] { return a.done; }, 10s));
    CHECK(a.error == "leader work bug (test)");
    CHECK(a.work_runs == 1);  // a bug stops the daemon (exit 11); no new term
    CHECK_FALSE(a.status.is_leader);
    auto k = co_await direct.kv_get(key);
    REQUIRE(k);
    // Released before the session was destroyed: no session on the key.
    if (k->value) CHECK(k->value->session.empty());
    CHECK(count_of(log->str(), "Leader work stopped on an internal error") == 1);
  }(), 30s);
}

TEST_CASE("a token that may not write the leader key: acquisition backs off and names the permission") {
  auto log = capture_log();
  // An agent of its own with ACLs on (default deny), and a token that may read keys and
  // create sessions but not write the lock key.
  consul_dev_agent acl_agent({"-hcl=acl { enabled = true default_policy = \"deny\" tokens { master = \"root\" } }"});
  std::string secret;
  for (int attempt = 0; attempt < 50 && secret.empty(); ++attempt) {  // ACLs need a moment
    auto p = http_request("127.0.0.1", acl_agent.http_port(), "PUT", "/v1/acl/policy?token=root",
                          R"({"Name":"no-kv-write","Rules":"key_prefix \"\" { policy = \"read\" }\nsession_prefix \"\" { policy = \"write\" }\nnode_prefix \"\" { policy = \"read\" }"})");
    if (p.status != 200 && p.body.find("already exists") == std::string::npos) {
      std::this_thread::sleep_for(200ms);
      continue;
    }
    auto t = http_request("127.0.0.1", acl_agent.http_port(), "PUT", "/v1/acl/token?token=root",
                          R"({"Policies":[{"Name":"no-kv-write"}]})");
    auto at = t.body.find("\"SecretID\": \"");
    if (t.status == 200 && at != std::string::npos) secret = t.body.substr(at + 13, 36);
  }
  REQUIRE(secret.size() == 36);

  asio::io_context io;
  auto opts = test_election("t9/leader");
  opts.timing.retry_interval = 2s;  // the cap of the backoff
  elector a(io, "a", acl_agent.http_address(), opts, secret);
  run(io, [&]() -> asio::awaitable<void> {
    a.start(io);
    co_await pause(6s);
    // Backing off 250 ms, 500 ms, 1 s, then 2 s (with jitter): at most 7 attempts in 6 s.
    // Before, a successful read before each attempt reset the backoff: about 30.
    MESSAGE("refused acquisitions in 6 s: " << a.status.acquire_failures);
    CHECK(a.status.acquire_failures >= 2);
    CHECK(a.status.acquire_failures <= 8);
    CHECK(a.work_runs == 0);
    auto text = log->str();
    auto line = text.find("may not write");
    REQUIRE(line != std::string::npos);
    MESSAGE(text.substr(line, text.find('\n', line) - line));
    CHECK(text.find(R"(needs="key_prefix \"t9/\" write")") != std::string::npos);  // logfmt quoting
    co_await stop_all(a);
  }(), 30s);
}
