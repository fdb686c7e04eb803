#include <doctest/doctest.h>

#include <cstdio>
#include <map>
#include <random>
#include <string>

#include "esm/sharding/kv_codec.hpp"
#include "esm/sharding/kv_plan.hpp"

using namespace esm::sharding;

namespace {

std::size_t op_count(const std::vector<kv_txn>& txns) {
  std::size_t n = 0;
  for (const auto& t : txns) n += t.size();
  return n;
}

std::vector<kv_write> flat(const std::vector<kv_txn>& txns) {
  std::vector<kv_write> out;
  for (const auto& t : txns) out.insert(out.end(), t.begin(), t.end());
  return out;
}

// Applies the plan to a KV image, as Consul would.
void apply_plan(std::map<std::string, std::string>& kv, const std::vector<kv_txn>& txns) {
  for (const auto& t : txns) {
    for (const auto& op : t) {
      if (op.verb == "set") {
        kv[op.key] = op.value;
      } else {
        REQUIRE(op.verb == "delete");
        kv.erase(op.key);
      }
    }
  }
}

}  // namespace

TEST_CASE("KV keys follow consul-esm's layout") {
  CHECK(normalize_kv_path("consul-esm") == "consul-esm/");
  CHECK(normalize_kv_path("consul-esm/") == "consul-esm/");
  CHECK(normalize_kv_path("") == "/");
  CHECK(assignments_dir("consul-esm/") == "consul-esm/agents/");
  CHECK(assignment_key("consul-esm", "consul-esm:abc") == "consul-esm/agents/consul-esm:abc");
  CHECK(probe_key("team/esm/", "web-1") == "team/esm/probes/web-1");
  CHECK(service_id_of_key("consul-esm/", "consul-esm/agents/consul-esm:abc") == "consul-esm:abc");
  CHECK_FALSE(service_id_of_key("consul-esm/", "consul-esm/agents/").has_value());
  CHECK_FALSE(service_id_of_key("consul-esm/", "consul-esm/leader").has_value());
  CHECK_FALSE(service_id_of_key("consul-esm/", "other/agents/x").has_value());
}

TEST_CASE("plan: unchanged instances produce no operation") {
  assignment_map a;
  a["esm:1"] = {{"n1", "n3"}, {}};
  a["esm:2"] = {{}, {"n2"}};
  a["esm:3"] = {};
  CHECK(plan_assignment_writes_from("consul-esm/", a, a).empty());

  // A Go leader's value for the same content, in another order or with [] instead of null,
  // is not rewritten either.
  std::map<std::string, std::string> stored{
      {"consul-esm/agents/esm:1", R"({"Nodes":["n3","n1"],"Probes":[]})"},
      {"consul-esm/agents/esm:2", R"({"Probes":["n2"]})"},
      {"consul-esm/agents/esm:3", R"({"Nodes":null,"Probes":null})"}};
  CHECK(plan_assignment_writes("consul-esm/", stored, a).empty());
}

TEST_CASE("plan: changed, new and malformed values are set; departed keys are deleted") {
  std::map<std::string, std::string> stored{
      {"consul-esm/agents/esm:1", R"({"Nodes":["n1"],"Probes":null})"},    // changes
      {"consul-esm/agents/esm:2", R"({"Nodes":["n2"],"Probes":null})"},    // unchanged
      {"consul-esm/agents/esm:3", R"({"Nodes":["n3"],"Probes":null})"},    // departed
      {"consul-esm/agents/esm:4", "not json"},                             // malformed
      {"consul-esm/agents/", ""},                                          // folder key
      {"consul-esm/leader", ""},                                           // not ours
      {"consul-esm/probes/n1", "x"}};                                      // not ours
  assignment_map next;
  next["esm:1"] = {{"n1", "n3"}, {}};
  next["esm:2"] = {{"n2"}, {}};
  next["esm:4"] = {{}, {"n4"}};
  next["esm:5"] = {};

  const auto txns = plan_assignment_writes("consul-esm", stored, next);
  REQUIRE(txns.size() == 1);
  const std::vector<kv_write> want{
      {"set", "consul-esm/agents/esm:1", R"({"Nodes":["n1","n3"],"Probes":null})"},
      {"set", "consul-esm/agents/esm:4", R"({"Nodes":null,"Probes":["n4"]})"},
      {"set", "consul-esm/agents/esm:5", R"({"Nodes":null,"Probes":null})"},
      {"delete", "consul-esm/agents/", ""},
      {"delete", "consul-esm/agents/esm:3", ""},
  };
  CHECK(txns[0] == want);

  // Applying it gives exactly the new assignment under agents/ and leaves the rest alone.
  auto kv = stored;
  apply_plan(kv, txns);
  CHECK(kv.contains("consul-esm/leader"));
  CHECK(kv.contains("consul-esm/probes/n1"));
  CHECK(decode_stored_assignments("consul-esm/", kv) == next);
  CHECK(plan_assignment_writes("consul-esm/", kv, next).empty());
}

TEST_CASE("plan: transactions hold at most 63 operations, in order") {
  assignment_map previous, next;
  for (int i = 0; i < 200; ++i) {
    const std::string id = "esm:" + std::to_string(1000 + i);
    if (i < 150) next[id].nodes = {"n" + std::to_string(i)};
    if (i >= 20) previous[id].nodes = {"n" + std::to_string(i)};
    if (i >= 20 && i < 30) previous[id].nodes = {"old"};
  }
  // Sets: 0..19 (new) and 20..29 (changed) = 30; deletes: 150..199 = 50.
  const auto txns = plan_assignment_writes_from("k/", previous, next);
  CHECK(op_count(txns) == 80);
  REQUIRE(txns.size() == 2);
  CHECK(txns[0].size() == 63);
  CHECK(txns[1].size() == 17);
  const auto ops = flat(txns);
  for (std::size_t i = 0; i < ops.size(); ++i) CHECK(ops[i].verb == (i < 30 ? "set" : "delete"));
  CHECK(ops.front().key == "k/agents/esm:1000");
  CHECK(ops.back().key == "k/agents/esm:1199");

  // Exactly 63 and 64 operations: one transaction, then two.
  assignment_map many;
  for (int i = 0; i < 63; ++i) many["esm:" + std::to_string(i)] = {};
  CHECK(plan_assignment_writes_from("k/", {}, many).size() == 1);
  many["esm:63"] = {};
  auto two = plan_assignment_writes_from("k/", {}, many);
  REQUIRE(two.size() == 2);
  CHECK(two[0].size() == 63);
  CHECK(two[1].size() == 1);

  // A smaller limit for tests of the leader's driver.
  CHECK(plan_assignment_writes_from("k/", {}, many, 10).size() == 7);
  CHECK_THROWS_AS(plan_assignment_writes_from("k/", {}, many, 0), std::invalid_argument);
}

TEST_CASE("plan: transactions stay within Consul's request body limit") {
  // 100 000 nodes over 5 instances: five values of about 240 KB, which one transaction
  // would carry as a 1.6 MB body (Consul answers 413 above 524 288 bytes).
  assignment_map next;
  for (int i = 0; i < 100000; ++i) {
    char name[16];
    std::snprintf(name, sizeof name, "rb-%06d", i);
    next["esm:i" + std::to_string(i % 5)].nodes.push_back(name);
  }
  const auto txns = plan_assignment_writes_from("k/", {}, next);
  CHECK(op_count(txns) == 5);
  REQUIRE(txns.size() == 5);  // one 320 KB base64 value each: two would pass the budget
  std::size_t total = 0;
  for (const auto& t : txns) {
    std::size_t bytes = 0;
    for (const auto& op : t) {
      bytes += txn_op_bytes(op);
      total += op.value.size();
    }
    CHECK(bytes <= max_assignment_txn_bytes);
  }
  CHECK(total > 1'100'000);

  // Small values share a transaction up to the budget, in order.
  assignment_map small;
  for (int i = 0; i < 40; ++i) small["esm:" + std::to_string(100 + i)].nodes = {std::string(1000, 'x')};
  const kv_write one{"set", "k/agents/esm:100", encode_assignment(small.begin()->second)};
  const std::size_t per_txn = 5000 / txn_op_bytes(one);
  const auto cut = plan_assignment_writes_from("k/", {}, small, max_assignment_ops_per_txn, 5000);
  REQUIRE(per_txn >= 2);
  CHECK(cut.size() == (40 + per_txn - 1) / per_txn);
  for (std::size_t i = 0; i + 1 < cut.size(); ++i) CHECK(cut[i].size() == per_txn);
  const auto ops = flat(cut);
  REQUIRE(ops.size() == 40);
  for (std::size_t i = 0; i < ops.size(); ++i) CHECK(ops[i].key == "k/agents/esm:" + std::to_string(100 + i));

  // An operation above the budget by itself is a transaction of its own.
  const auto alone = plan_assignment_writes_from("k/", {}, small, max_assignment_ops_per_txn, 100);
  CHECK(alone.size() == 40);
  for (const auto& t : alone) CHECK(t.size() == 1);
}

TEST_CASE("plan: only the instances whose share changed are written after a join") {
  std::mt19937_64 rng(4);
  std::vector<external_node> nodes;
  for (int i = 0; i < 3000; ++i) nodes.push_back({"node-" + std::to_string(i), i % 4 == 0});
  std::vector<std::string> ids;
  for (int i = 0; i < 30; ++i) ids.push_back("consul-esm:" + std::to_string(i));
  const auto before = balanced_assignment(nodes, ids);

  std::map<std::string, std::string> kv;
  apply_plan(kv, plan_assignment_writes("consul-esm/", kv, before));
  CHECK(decode_stored_assignments("consul-esm/", kv) == before);

  // The leader reads KV back as its previous assignment.
  const auto previous = decode_stored_assignments("consul-esm/", kv);
  auto ids_after = ids;
  ids_after.push_back("consul-esm:new");
  const auto after = balanced_assignment(nodes, ids_after, previous);
  const auto txns = plan_assignment_writes("consul-esm/", kv, after);
  std::size_t changed = 0;
  for (const auto& [id, a] : after)
    if (!before.contains(id) || !same_assignment(before.at(id), a)) ++changed;
  CHECK(op_count(txns) == changed);
  MESSAGE("join of a 31st instance (3000 nodes): " << changed << " of 31 keys written, "
                                                   << count_moved(before, after) << " nodes moved");
  apply_plan(kv, txns);
  CHECK(decode_stored_assignments("consul-esm/", kv) == after);

  // A leave: the departed key is deleted, and only the receivers are set.
  auto ids_left = ids_after;
  ids_left.erase(ids_left.begin() + 5);
  const auto left = balanced_assignment(nodes, ids_left, after);
  const auto leave_ops = flat(plan_assignment_writes("consul-esm/", kv, left));
  std::size_t deletes = 0;
  for (const auto& op : leave_ops)
    if (op.verb == "delete") {
      ++deletes;
      CHECK(op.key == "consul-esm/agents/" + ids_after[5]);
    }
  CHECK(deletes == 1);
  apply_plan(kv, plan_assignment_writes("consul-esm/", kv, left));
  CHECK(decode_stored_assignments("consul-esm/", kv) == left);
}

TEST_CASE("decode_stored_assignments skips foreign keys and malformed values") {
  std::map<std::string, std::string> stored{
      {"esm/agents/a", R"({"Nodes":["n1"]})"},
      {"esm/agents/b", "{"},
      {"esm/leader", ""},
      {"esm/agents/", ""}};
  const auto m = decode_stored_assignments("esm", stored);
  REQUIRE(m.size() == 1);
  CHECK(m.at("a").nodes == std::vector<std::string>{"n1"});
}
