// The leader lock's decisions with a fake clock: fencing deadline, renew schedule, lock
// monitor failure counting, key classification, error classification, names.
#include <doctest/doctest.h>

#include <boost/asio/error.hpp>

#include "esm/cluster/lock_policy.hpp"
#include "esm/cluster/names.hpp"

using namespace esm::cluster;
using namespace std::chrono_literals;
namespace consul = esm::consul;

namespace {

const clock::time_point t0 = clock::time_point(1000s);

consul::error http_error(unsigned status) {
  return consul::error{consul::make_error_code(status == 404 ? consul::errc::not_found : consul::errc::http_status),
                       status, "x"};
}

consul::kv_pair lock_key(std::string session, std::uint64_t flags = consul::lock_flag_value) {
  consul::kv_pair kv;
  kv.key = "consul-esm/leader";
  kv.flags = flags;
  kv.session = std::move(session);
  return kv;
}

}  // namespace

TEST_CASE("names follow consul-esm's layout") {
  instance_names n("consul-esm", "abc", "consul-esm");
  CHECK(n.service_id == "consul-esm:abc");
  CHECK(n.kv_path == "consul-esm/");
  CHECK(n.leader_key() == "consul-esm/leader");
  CHECK(n.agent_ttl_check_id() == "consul-esm:abc:agent-ttl");
  CHECK(n.node_name() == "consul-esm:abc:node");
  CHECK(n.node_address() == "esm-consul-esm:abc");
  CHECK(n.session_check_id() == "consul-esm:abc:session-check");
  CHECK(n.health_session_name() == "consul-esm:abc:health-session");
  CHECK(n.assignment_key() == "consul-esm/agents/consul-esm:abc");
}

TEST_CASE("timing: margin, lock-delay poll and monitor wait") {
  lock_timing t;
  CHECK(t.fence_margin() == 3s);  // TTL 30 s
  CHECK(t.renew_interval() == 15s);
  CHECK(t.lock_delay_poll() == 1s);  // 15 s lock-delay, capped
  CHECK(t.monitor_wait() == 30s);    // blocking wait 45 s, at most a TTL
  t.session_ttl = 10s;
  t.lock_delay = 1s;
  t.blocking_wait = 5s;
  CHECK(t.fence_margin() == 1s);
  CHECK(t.lock_delay_poll() == 100ms);
  CHECK(t.monitor_wait() == 5s);
  t.session_ttl = 2s;  // tiny TTL: the deadline stays after the first renew at TTL/2
  CHECK(t.fence_margin() < t.session_ttl / 2);
}

TEST_CASE("fence: deadline from the send time of the last confirmation, latest send wins") {
  session_fence f(10s, 1s);
  CHECK_FALSE(f.confirmed());
  CHECK(f.expired(t0));  // never confirmed: nothing to trust
  f.confirm(t0);
  CHECK(f.deadline() == t0 + 9s);
  CHECK(f.earliest_expiry() == t0 + 10s);
  CHECK_FALSE(f.expired(t0 + 8999ms));
  CHECK(f.expired(t0 + 9s));
  CHECK(f.time_left(t0 + 4s) == 5s);
  CHECK(f.time_left(t0 + 20s) == 0s);

  f.confirm(t0 + 5s);
  CHECK(f.deadline() == t0 + 14s);
  f.confirm(t0 + 3s);  // an older renew answered late: does not move the deadline back
  CHECK(f.deadline() == t0 + 14s);
  CHECK(f.last_confirmed() == t0 + 5s);
}

TEST_CASE("fence: request timeouts never outlast the deadline") {
  session_fence f(10s, 1s);
  f.confirm(t0);
  CHECK(f.cap(5000ms, t0) == 5000ms);
  CHECK(f.cap(5000ms, t0 + 6s) == 3000ms);
  CHECK(f.cap(5000ms, t0 + 9s) == 0ms);
  CHECK(f.cap(5000ms, t0 + 30s) == 0ms);
}

TEST_CASE("renew schedule: TTL/2 after the send of a success, 1 s after a failure") {
  lock_timing t;
  t.session_ttl = 10s;
  renew_schedule s(t);
  CHECK(s.after_success(t0) == t0 + 5s);
  CHECK(s.after_failure(t0 + 5s) == t0 + 6s);
  CHECK(s.after_failure(t0 + 6s) == t0 + 7s);
  CHECK(s.consecutive_failures() == 2);
  CHECK(s.after_success(t0 + 7s) == t0 + 12s);
  CHECK(s.consecutive_failures() == 0);
}

TEST_CASE("renewing through failures until the fence: the holder steps down before expiry") {
  // Simulates the keeper's loop: renews fail from t0+5s on; the keeper wakes at
  // min(next renew, deadline) and stops when the deadline has passed.
  lock_timing t;
  t.session_ttl = 10s;
  session_fence f(t.session_ttl, t.fence_margin());
  renew_schedule s(t);
  f.confirm(t0);
  auto next = s.after_success(t0);
  clock::time_point now = t0;
  int renews = 0;
  for (int i = 0; i < 100; ++i) {
    now = std::min(next, f.deadline());
    if (f.expired(now)) break;
    ++renews;  // a renew that fails
    CHECK(f.cap(10000ms, now) <= std::chrono::duration_cast<milliseconds>(f.deadline() - now));
    next = s.after_failure(now);
  }
  CHECK(f.expired(now));
  CHECK(now < f.earliest_expiry());  // stepped down before Consul could expire the session
  CHECK(now == t0 + 9s);
  CHECK(renews == 4);  // at 5, 6, 7, 8 s
}

TEST_CASE("error classification: transient, fatal, cancelled") {
  CHECK(classify(http_error(500)) == failure_kind::transient);
  CHECK(classify(http_error(503)) == failure_kind::transient);
  CHECK(classify(http_error(429)) == failure_kind::transient);
  CHECK(classify(http_error(403)) == failure_kind::fatal);
  CHECK(classify(http_error(400)) == failure_kind::fatal);
  CHECK(classify(consul::make_error(consul::make_error_code(consul::errc::timeout))) == failure_kind::transient);
  CHECK(classify(consul::make_error(boost::asio::error::connection_refused)) == failure_kind::transient);
  CHECK(classify(consul::make_error(boost::asio::error::operation_aborted)) == failure_kind::cancelled);
  CHECK(classify(consul::make_error(consul::make_error_code(consul::errc::bad_response))) == failure_kind::fatal);
}

TEST_CASE("key classification") {
  CHECK(classify_key(std::nullopt, "s1") == key_state::free);
  CHECK(classify_key(lock_key(""), "s1") == key_state::free);
  CHECK(classify_key(lock_key("s1"), "s1") == key_state::ours);
  CHECK(classify_key(lock_key("s2"), "s1") == key_state::other);
  CHECK(classify_key(lock_key("", 0), "s1") == key_state::conflict);
  CHECK(classify_key(lock_key("s1", 7), "s1") == key_state::conflict);
}

TEST_CASE("monitor: tolerates N consecutive transient failures, a good read resets the count") {
  monitor_policy m(3, 2s);
  auto held = std::optional<consul::kv_pair>(lock_key("s1"));
  CHECK_FALSE(m.on_read(held, "s1").lost);
  for (int round = 0; round < 2; ++round) {
    for (int i = 0; i < 3; ++i) {
      auto v = m.on_error(http_error(500));
      CHECK_FALSE(v.lost);
      CHECK(v.pause == 2s);
    }
    CHECK(m.failures() == 3);
    CHECK_FALSE(m.on_read(held, "s1").lost);  // reset
    CHECK(m.failures() == 0);
  }
  m.on_error(http_error(429));
  m.on_error(consul::make_error(consul::make_error_code(consul::errc::timeout)));
  m.on_error(http_error(503));
  auto v = m.on_error(http_error(500));  // the fourth in a row
  CHECK(v.lost);
  CHECK(v.reason.find("4 times") != std::string::npos);
}

TEST_CASE("monitor: a blocking read that Consul held open before it failed starts a new count") {
  monitor_policy m(3, 1s);
  for (int round = 0; round < 5; ++round) {
    CHECK_FALSE(m.on_error(http_error(500), 4s).lost);  // the long read killed by an outage
    CHECK_FALSE(m.on_error(http_error(500), 1ms).lost);
    CHECK_FALSE(m.on_error(http_error(500), 2ms).lost);
    CHECK(m.failures() == 3);
  }
  CHECK(m.on_error(http_error(500), 999ms).lost);  // quick failures do add up
}

TEST_CASE("monitor: loss on another holder, a free or missing key, foreign flags, fatal errors") {
  monitor_policy m(6, 2s);
  CHECK(m.on_read(lock_key("s2"), "s1").lost);
  CHECK(m.on_read(lock_key(""), "s1").lost);
  CHECK(m.on_read(std::nullopt, "s1").lost);
  CHECK(m.on_read(lock_key("s1", 1), "s1").lost);
  monitor_policy f(6, 2s);
  CHECK(f.on_error(http_error(403)).lost);
  monitor_policy z(0, 2s);  // consul-esm's agent mode: first error = loss
  CHECK(z.on_error(http_error(500)).lost);
}

TEST_CASE("check-session operation for fenced writes") {
  auto op = check_session_op("consul-esm/leader", "sess-1");
  REQUIRE(op.kv);
  CHECK(op.kv->verb == "check-session");
  CHECK(op.kv->key == "consul-esm/leader");
  CHECK(op.kv->session == "sess-1");
  CHECK_FALSE(op.kv->value);
  CHECK_FALSE(op.check);
  CHECK_FALSE(op.node);
}
