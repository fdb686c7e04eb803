#include <doctest/doctest.h>

#include <chrono>

#include "esm/ping/node_health.hpp"

using namespace esm::ping;
using namespace std::chrono;
using steady = steady_clock::time_point;

namespace {

const sys_nanoseconds wall0 = sys_nanoseconds(seconds(1'800'000'000));
const steady t0 = steady(hours(1000));

health_timing timing() {
  health_timing t;
  t.refresh = hours(1);
  t.reconnect_timeout = minutes(30);
  return t;
}

probe_key key_since(sys_nanoseconds since, std::uint64_t index = 7) {
  probe_key k;
  k.exists = true;
  k.modify_index = index;
  k.since = since;
  return k;
}

}  // namespace

TEST_CASE("node health: the first outcome is written either way") {
  auto alive = decide_health(true, {}, {}, timing(), wall0, t0);
  CHECK(alive.write_check);
  CHECK(alive.status == node_status::alive);
  CHECK(alive.key == key_action::none);
  CHECK_FALSE(alive.reap);

  auto dead = decide_health(false, {}, {}, timing(), wall0, t0);
  CHECK(dead.write_check);
  CHECK(dead.status == node_status::dead);
  CHECK(dead.key == key_action::create);  // the outage starts now, persisted with the check
  CHECK(dead.since == wall0);
  CHECK_FALSE(dead.reap);
}

TEST_CASE("node health: unchanged statuses are rewritten only after the refresh interval") {
  health_record rec{node_status::alive, t0, {}};
  CHECK_FALSE(decide_health(true, rec, {}, timing(), wall0, t0 + minutes(59)).write_check);
  CHECK(decide_health(true, rec, {}, timing(), wall0, t0 + hours(1)).write_check);
  // A change is written at once.
  auto d = decide_health(false, rec, {}, timing(), wall0, t0 + seconds(1));
  CHECK(d.write_check);
  CHECK(d.key == key_action::create);

  health_record dead{node_status::dead, t0, {}};
  auto still = decide_health(false, dead, key_since(wall0), timing(), wall0 + minutes(5), t0 + minutes(5));
  CHECK_FALSE(still.write_check);
  CHECK(still.key == key_action::none);
  CHECK_FALSE(still.reap);
}

TEST_CASE("node health: recovery removes the key even when the check need not be written") {
  health_record rec{node_status::alive, t0, {}};  // e.g. written alive, then a key left by another instance
  auto d = decide_health(true, rec, key_since(wall0), timing(), wall0, t0 + seconds(1));
  CHECK_FALSE(d.write_check);
  CHECK(d.key == key_action::remove);

  health_record dead{node_status::dead, t0, {}};
  auto back = decide_health(true, dead, key_since(wall0), timing(), wall0, t0 + seconds(1));
  CHECK(back.write_check);
  CHECK(back.status == node_status::alive);
  CHECK(back.key == key_action::remove);
}

TEST_CASE("node health: reaping counts from the persisted critical-since, at every failure") {
  health_record dead{node_status::dead, t0, {}};
  // A restarted process (no record) with a key 29 minutes old: critical, not yet reaped.
  auto d = decide_health(false, {}, key_since(wall0), timing(), wall0 + minutes(29), t0);
  CHECK(d.write_check);
  CHECK_FALSE(d.reap);
  CHECK(d.key == key_action::none);  // the count is not restarted
  // Just over the timeout, well inside the refresh interval: reaped (consul-esm would wait
  // for its hourly debounce).
  auto r = decide_health(false, dead, key_since(wall0), timing(), wall0 + minutes(30) + seconds(1), t0 + minutes(1));
  CHECK(r.reap);
  CHECK_FALSE(r.write_check);
  // Exactly at the timeout: not yet (consul-esm compares with >).
  CHECK_FALSE(decide_health(false, dead, key_since(wall0), timing(), wall0 + minutes(30), t0).reap);
}

TEST_CASE("node health: an undecodable key is replaced and the outage counted from now") {
  probe_key bad;
  bad.exists = true;
  bad.modify_index = 9;
  auto d = decide_health(false, {}, bad, timing(), wall0, t0);
  CHECK(d.key_undecodable);
  CHECK(d.key == key_action::replace);
  CHECK(d.since == wall0);
  CHECK(d.write_check);
  CHECK_FALSE(d.reap);
  // A live node removes it like any other.
  CHECK(decide_health(true, {}, bad, timing(), wall0, t0).key == key_action::remove);
}

TEST_CASE("node health: a zero reconnect timeout reaps at the first failure after the key") {
  auto t = timing();
  t.reconnect_timeout = milliseconds(0);
  auto first = decide_health(false, {}, {}, t, wall0, t0);
  CHECK_FALSE(first.reap);  // the key does not exist yet
  CHECK(decide_health(false, health_record{node_status::dead, t0, {}}, key_since(wall0), t, wall0 + nanoseconds(1), t0).reap);
}

TEST_CASE("node health: a key older than the newest reply is replaced, not counted from") {
  // Alive at wall0 + 1 h; a key from wall0 (its removal was lost) must not reap the node.
  health_record rec{node_status::alive, t0, {}};
  rec.alive_at = wall0 + hours(1);
  auto later = wall0 + hours(1) + seconds(10);
  auto d = decide_health(false, rec, key_since(wall0), timing(), later, t0 + seconds(10));
  CHECK_FALSE(d.reap);
  CHECK(d.key == key_action::replace);
  CHECK(d.since == later);
  CHECK_FALSE(d.key_undecodable);
  CHECK(d.write_check);
  // A key written after the newest reply is this outage's: counted from.
  auto cur = decide_health(false, rec, key_since(wall0 + hours(1) + seconds(1)), timing(),
                           wall0 + hours(2), t0 + minutes(2));
  CHECK(cur.reap);
}
