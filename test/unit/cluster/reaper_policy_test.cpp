// The agentless reaper's decisions, round by round with a fake clock: which catalog rows are
// agentless and alive, marking dead instances critical once, removing them after
// deregister_after, retrying writes that did not commit, recovery and vanished instances.
#include <doctest/doctest.h>

#include <algorithm>

#include "esm/cluster/reaper_policy.hpp"

using namespace esm::cluster;
using namespace std::chrono_literals;
namespace consul = esm::consul;

namespace {

const clock::time_point t0 = clock::time_point(1000s);
constexpr auto after = 30s;  // deregister_after

reaper_instance alive(const std::string& id) { return {id, id + ":node", true}; }
reaper_instance dead(const std::string& id) { return {id, id + ":node", false}; }

std::vector<std::string> ids(const std::vector<reaper_instance>& v) {
  std::vector<std::string> out;
  for (auto& i : v) out.push_back(i.service_id);
  return out;
}
using names = std::vector<std::string>;

bool nothing_to_do(const reaper_plan& p) { return p.deregister.empty() && p.mark_critical.empty(); }

consul::catalog_service row(const std::string& service_id, const std::string& node) {
  consul::catalog_service r;
  r.service_id = service_id;
  r.service_name = "esm";
  r.node = node;
  return r;
}
consul::session session(const std::string& name, const std::string& node) {
  consul::session s;
  s.id = "id-" + name;
  s.name = name;
  s.node = node;
  return s;
}

}  // namespace

TEST_CASE("agentless_instances: agent-mode rows skipped, a session counts only by its name and node") {
  std::vector<consul::catalog_service> rows = {
      row("esm:a", "esm:a:node"),  // agentless, its session lives
      row("esm:b", "agent-1"),     // agent mode: the agent reaps it
      row("esm:c", "esm:c:node"),  // agentless, no session
      row("esm:d", "esm:d:node"),  // a session of that name, but on another node
      row("esm:e", "esm:e:node"),  // a session on its node, with another name
  };
  std::vector<consul::session> sessions = {
      session("esm:a:health-session", "esm:a:node"),
      session("esm:d:health-session", "elsewhere"),
      session("consul-esm leader lock", "esm:e:node"),
  };
  auto seen = agentless_instances(rows, sessions);
  REQUIRE(seen.size() == 4);
  CHECK(seen[0].service_id == "esm:a");
  CHECK(seen[0].node == "esm:a:node");
  CHECK(seen[0].session_alive);
  CHECK(seen[1].service_id == "esm:c");
  CHECK_FALSE(seen[1].session_alive);
  CHECK(seen[2].service_id == "esm:d");
  CHECK_FALSE(seen[2].session_alive);
  CHECK(seen[3].service_id == "esm:e");
  CHECK_FALSE(seen[3].session_alive);
  CHECK(is_health_session_of(sessions[0], "esm:a"));
  CHECK_FALSE(is_health_session_of(sessions[0], "esm:b"));
}

TEST_CASE("live instances: nothing to do, nothing remembered") {
  reaper_policy p(after);
  for (int round = 0; round < 3; ++round) {
    auto plan = p.step({alive("esm:a"), alive("esm:b")}, t0 + round * 10s);
    CHECK(nothing_to_do(plan));
    CHECK(plan.forgotten.empty());
  }
  CHECK(p.remembered() == 0);
}

TEST_CASE("a dead instance is marked critical once, then removed after deregister_after") {
  reaper_policy p(after);
  auto plan = p.step({alive("esm:a"), dead("esm:b")}, t0);
  CHECK(plan.deregister.empty());
  CHECK(ids(plan.mark_critical) == names{"esm:b"});
  CHECK(plan.mark_critical[0].node == "esm:b:node");
  CHECK(p.dead_since("esm:b") == t0);
  CHECK_FALSE(p.dead_since("esm:a"));
  p.marked("esm:b");
  CHECK(p.is_marked("esm:b"));

  // Marked: quiet until deregister_after has passed since it was first seen dead.
  CHECK(nothing_to_do(p.step({alive("esm:a"), dead("esm:b")}, t0 + 10s)));
  CHECK(nothing_to_do(p.step({alive("esm:a"), dead("esm:b")}, t0 + after - 1ns)));
  CHECK(p.dead_since("esm:b") == t0);  // not moved by later sightings

  plan = p.step({alive("esm:a"), dead("esm:b")}, t0 + after);  // the bound is inclusive
  CHECK(ids(plan.deregister) == names{"esm:b"});
  CHECK(plan.deregister[0].node == "esm:b:node");
  CHECK(plan.mark_critical.empty());
  p.deregistered("esm:b");
  CHECK(p.remembered() == 0);

  // Gone from the catalog: nothing left to forget.
  plan = p.step({alive("esm:a")}, t0 + after + 10s);
  CHECK(nothing_to_do(plan));
  CHECK(plan.forgotten.empty());
}

TEST_CASE("a mark that did not commit is planned again next round") {
  reaper_policy p(after);
  CHECK(ids(p.step({dead("esm:b")}, t0).mark_critical) == names{"esm:b"});
  // No marked(): the write failed (Consul down, or not leader any more).
  CHECK(ids(p.step({dead("esm:b")}, t0 + 10s).mark_critical) == names{"esm:b"});
  CHECK(p.dead_since("esm:b") == t0);  // a failed write does not restart the count
  p.marked("esm:b");
  CHECK(nothing_to_do(p.step({dead("esm:b")}, t0 + 20s)));
}

TEST_CASE("an instance never marked is still removed on time, without a mark first") {
  reaper_policy p(after);
  p.step({dead("esm:b")}, t0);
  auto plan = p.step({dead("esm:b")}, t0 + after);
  CHECK(ids(plan.deregister) == names{"esm:b"});
  CHECK(plan.mark_critical.empty());
}

TEST_CASE("a removal that did not commit is planned again next round") {
  reaper_policy p(after);
  p.step({dead("esm:b")}, t0);
  p.marked("esm:b");
  CHECK(ids(p.step({dead("esm:b")}, t0 + after).deregister) == names{"esm:b"});
  auto plan = p.step({dead("esm:b")}, t0 + after + 10s);
  CHECK(ids(plan.deregister) == names{"esm:b"});
  CHECK(plan.mark_critical.empty());  // still marked: no second mark meanwhile
  CHECK(p.is_marked("esm:b"));
}

TEST_CASE("deregister_after of zero removes a dead instance at first sight") {
  reaper_policy p(0s);
  auto plan = p.step({dead("esm:b")}, t0);
  CHECK(ids(plan.deregister) == names{"esm:b"});
  CHECK(plan.mark_critical.empty());
}

TEST_CASE("recovery: a session that reappears clears the memory, a later death counts afresh") {
  reaper_policy p(after);
  p.step({dead("esm:b")}, t0);
  p.marked("esm:b");
  p.step({dead("esm:b")}, t0 + 20s);

  auto plan = p.step({alive("esm:b")}, t0 + 25s);  // its instance made a new health session
  CHECK(nothing_to_do(plan));
  CHECK(plan.forgotten == names{"esm:b"});
  CHECK(p.remembered() == 0);

  // Dead again: marked again, and removed deregister_after after this death, not the first.
  plan = p.step({dead("esm:b")}, t0 + 40s);
  CHECK(ids(plan.mark_critical) == names{"esm:b"});
  CHECK(p.dead_since("esm:b") == t0 + 40s);
  p.marked("esm:b");
  CHECK(nothing_to_do(p.step({dead("esm:b")}, t0 + 40s + after - 1s)));
  CHECK(ids(p.step({dead("esm:b")}, t0 + 40s + after).deregister) == names{"esm:b"});
}

TEST_CASE("vanished: an instance removed by someone else is forgotten, and judged afresh if it returns") {
  reaper_policy p(after);
  p.step({dead("esm:b"), dead("esm:c")}, t0);
  p.marked("esm:b");
  p.marked("esm:c");

  auto plan = p.step({dead("esm:c")}, t0 + 10s);  // esm:b deregistered itself, or an operator did
  CHECK(nothing_to_do(plan));
  CHECK(plan.forgotten == names{"esm:b"});
  CHECK_FALSE(p.dead_since("esm:b"));
  CHECK(p.dead_since("esm:c") == t0);

  // Registered again under the same ID (with its own check status) and dead: a new mark, a
  // new count.
  plan = p.step({dead("esm:b"), dead("esm:c")}, t0 + 20s);
  CHECK(ids(plan.mark_critical) == names{"esm:b"});
  CHECK(p.dead_since("esm:b") == t0 + 20s);
}

TEST_CASE("a removal whose answer was lost: the instance vanishes and is forgotten") {
  reaper_policy p(after);
  p.step({dead("esm:b")}, t0);
  CHECK(ids(p.step({dead("esm:b")}, t0 + after).deregister) == names{"esm:b"});
  // No deregistered(): the request timed out, but Consul applied it.
  auto plan = p.step({}, t0 + after + 10s);
  CHECK(nothing_to_do(plan));
  CHECK(plan.forgotten == names{"esm:b"});
  CHECK(p.remembered() == 0);
}

TEST_CASE("several instances are judged independently, in the order seen") {
  reaper_policy p(after);
  p.step({dead("esm:x")}, t0);
  p.marked("esm:x");
  auto plan = p.step({dead("esm:y"), alive("esm:a"), dead("esm:x"), dead("esm:z")}, t0 + after);
  CHECK(ids(plan.deregister) == names{"esm:x"});
  CHECK(ids(plan.mark_critical) == names{"esm:y", "esm:z"});
  CHECK(p.dead_since("esm:y") == t0 + after);
  CHECK(p.dead_since("esm:z") == t0 + after);
}

TEST_CASE("an ID listed twice in one round is planned once") {
  reaper_policy p(after);
  auto plan = p.step({dead("esm:b"), dead("esm:b")}, t0);
  CHECK(ids(plan.mark_critical) == names{"esm:b"});
}

TEST_CASE("feedback for an instance the policy does not remember changes nothing") {
  reaper_policy p(after);
  p.marked("esm:q");
  p.deregistered("esm:q");
  CHECK(p.remembered() == 0);
  CHECK_FALSE(p.is_marked("esm:q"));
  // A new policy (a new leader) counts from its own first sighting.
  reaper_policy next(after);
  CHECK(ids(next.step({dead("esm:b")}, t0 + 100s).mark_critical) == names{"esm:b"});
  CHECK(next.dead_since("esm:b") == t0 + 100s);
}
