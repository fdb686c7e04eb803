#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <map>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "esm/sharding/assignment.hpp"
#include "esm/sharding/stable_hash.hpp"

using namespace esm::sharding;

namespace {

std::vector<external_node> make_nodes(std::size_t n, double probe_share, std::mt19937_64& rng,
                                      std::string_view prefix = "node-") {
  std::bernoulli_distribution is_probe(probe_share);
  std::vector<external_node> out;
  out.reserve(n);
  for (std::size_t i = 0; i < n; ++i)
    out.push_back({std::string(prefix) + std::to_string(i), is_probe(rng)});
  return out;
}

std::string instance_id(std::size_t i) { return "consul-esm:instance-" + std::to_string(i); }

std::vector<std::string> make_ids(std::size_t k, std::size_t first = 0) {
  std::vector<std::string> out;
  for (std::size_t i = first; i < first + k; ++i) out.push_back(instance_id(i));
  return out;
}

std::size_t ceil_div(std::size_t a, std::size_t b) { return (a + b - 1) / b; }

struct spread {
  std::size_t min = SIZE_MAX, max = 0;
  void add(std::size_t v) { min = std::min(min, v), max = std::max(max, v); }
};

// Every node exactly once, in the list its probe flag says, every instance present, lists
// sorted. Returns the owner of each node.
std::map<std::string, std::string> check_partition(const std::vector<external_node>& nodes,
                                                   const std::vector<std::string>& ids,
                                                   const assignment_map& result) {
  std::map<std::string, bool> want;
  for (const auto& n : nodes) want[n.name] = want[n.name] || n.probe;
  std::set<std::string> want_ids(ids.begin(), ids.end());
  std::map<std::string, std::string> owner;
  REQUIRE(result.size() == want_ids.size());
  for (const auto& [id, a] : result) {
    REQUIRE(want_ids.contains(id));
    CHECK(std::is_sorted(a.nodes.begin(), a.nodes.end()));
    CHECK(std::is_sorted(a.probes.begin(), a.probes.end()));
    for (const auto* list : {&a.nodes, &a.probes}) {
      for (const auto& name : *list) {
        auto it = want.find(name);
        REQUIRE_MESSAGE(it != want.end(), "unknown node " << name);
        CHECK(it->second == (list == &a.probes));
        REQUIRE_MESSAGE(owner.emplace(name, id).second, "node assigned twice: " << name);
      }
    }
  }
  CHECK(owner.size() == want.size());
  return owner;
}

void check_balanced(const assignment_map& result) {
  spread plain, probes, total;
  for (const auto& [id, a] : result) {
    plain.add(a.nodes.size());
    probes.add(a.probes.size());
    total.add(a.size());
  }
  if (result.empty()) return;
  CHECK(plain.max - plain.min <= 1);
  CHECK(probes.max - probes.min <= 1);
  CHECK(total.max - total.min <= 1);
}

std::size_t count_probes(const std::vector<external_node>& nodes) {
  return static_cast<std::size_t>(
      std::count_if(nodes.begin(), nodes.end(), [](const auto& n) { return n.probe; }));
}

}  // namespace

TEST_CASE("stable hash: FNV-1a and SplitMix64 test vectors") {
  CHECK(fnv1a64("") == 0xcbf29ce484222325ULL);
  CHECK(fnv1a64("a") == 0xaf63dc4c8601ec8cULL);
  CHECK(fnv1a64("foobar") == 0x85944171f73967e8ULL);
  // SplitMix64's first output for seed 0 is mix64(golden gamma).
  CHECK(mix64(0x9e3779b97f4a7c15ULL) == 0xe220a8397b1dcdafULL);
}

TEST_CASE("balanced assignment pins its output for a fixed input (same on every build)") {
  std::vector<external_node> nodes{{"web-1", false}, {"web-2", true}, {"db-1", false},
                                   {"db-2", true},   {"cache", false}, {"queue", false}};
  std::vector<std::string> ids{"consul-esm:a", "consul-esm:b", "consul-esm:c"};
  const auto r = balanced_assignment(nodes, ids);
  std::ostringstream text;
  for (const auto& [id, a] : r) {
    text << id << ":";
    for (const auto& n : a.nodes) text << " " << n;
    text << " |";
    for (const auto& n : a.probes) text << " " << n;
    text << "\n";
  }
  // Recorded once; a change here means a fresh cluster would place nodes differently.
  CHECK(text.str() ==
        "consul-esm:a: cache | web-2\n"
        "consul-esm:b: queue web-1 |\n"
        "consul-esm:c: db-1 | db-2\n");
}

TEST_CASE("zero instances give an empty result; zero nodes give empty shares") {
  std::mt19937_64 rng(1);
  const auto nodes = make_nodes(10, 0.5, rng);
  CHECK(balanced_assignment(nodes, {}).empty());
  CHECK(round_robin_assignment(nodes, {}).empty());
  CHECK(balanced_assignment({}, {}).empty());

  const auto ids = make_ids(3);
  for (const auto& r : {balanced_assignment({}, ids), round_robin_assignment({}, ids)}) {
    REQUIRE(r.size() == 3);
    for (const auto& [id, a] : r) CHECK(a.empty());
  }
}

TEST_CASE("balanced assignment: a partition, balanced in plain, probe and total counts") {
  std::mt19937_64 rng(42);
  std::uniform_int_distribution<std::size_t> n_dist(0, 400), k_dist(1, 40);
  std::uniform_real_distribution<double> share(0.0, 1.0);
  for (int round = 0; round < 300; ++round) {
    const std::size_t n = n_dist(rng), k = k_dist(rng);
    const auto nodes = make_nodes(n, round % 5 == 0 ? 0.0 : share(rng), rng);
    const auto ids = make_ids(k);
    CAPTURE(n);
    CAPTURE(k);
    const auto cold = balanced_assignment(nodes, ids);
    check_partition(nodes, ids, cold);
    check_balanced(cold);
    // Exact quotas: floor or ceil of the fair share.
    for (const auto& [id, a] : cold) {
      CHECK(a.size() >= n / k);
      CHECK(a.size() <= ceil_div(n, k));
    }
  }
}

TEST_CASE("balanced assignment stays balanced from any previous assignment") {
  std::mt19937_64 rng(7);
  std::uniform_int_distribution<std::size_t> n_dist(0, 300), k_dist(1, 30);
  for (int round = 0; round < 200; ++round) {
    const auto nodes = make_nodes(n_dist(rng), 0.3, rng);
    const auto ids = make_ids(k_dist(rng));
    // A lopsided previous: everything on one instance, plus a departed instance and nodes
    // that no longer exist, and one node listed twice.
    assignment_map previous;
    for (const auto& n : nodes) (n.probe ? previous[ids[0]].probes : previous[ids[0]].nodes).push_back(n.name);
    previous["consul-esm:gone"].nodes = {"node-0", "ghost-1"};
    previous[ids.back()].nodes.push_back("ghost-2");
    const auto r = balanced_assignment(nodes, ids, previous);
    check_partition(nodes, ids, r);
    check_balanced(r);
    // Starting from round robin (a Go leader's output) too.
    const auto from_rr = balanced_assignment(nodes, ids, round_robin_assignment(nodes, ids));
    check_partition(nodes, ids, from_rr);
    check_balanced(from_rr);
  }
}

TEST_CASE("balanced assignment is deterministic and independent of input order and duplicates") {
  std::mt19937_64 rng(3);
  for (int round = 0; round < 30; ++round) {
    auto nodes = make_nodes(200, 0.25, rng);
    auto ids = make_ids(7);
    const auto a = balanced_assignment(nodes, ids);
    const auto previous = balanced_assignment(nodes, make_ids(6, 1));
    const auto with_prev = balanced_assignment(nodes, ids, previous);

    std::shuffle(nodes.begin(), nodes.end(), rng);
    std::shuffle(ids.begin(), ids.end(), rng);
    auto nodes_dup = nodes;
    nodes_dup.insert(nodes_dup.end(), nodes.begin(), nodes.begin() + 20);
    auto ids_dup = ids;
    ids_dup.push_back(ids.front());

    CHECK(balanced_assignment(nodes, ids) == a);
    CHECK(balanced_assignment(nodes_dup, ids_dup) == a);
    CHECK(balanced_assignment(nodes, ids, previous) == with_prev);
    // The previous map's list order does not matter either.
    auto shuffled_prev = previous;
    for (auto& [id, x] : shuffled_prev) std::shuffle(x.nodes.begin(), x.nodes.end(), rng);
    CHECK(balanced_assignment(nodes, ids, shuffled_prev) == with_prev);
  }
}

TEST_CASE("cold start: the result is the stable matching of rendezvous weights per class") {
  // No blocking pair: a node never prefers (higher weight) another instance that holds a node
  // of the same class it values less than this one.
  std::mt19937_64 rng(21);
  for (int round = 0; round < 40; ++round) {
    const auto nodes = make_nodes(rng() % 120, 0.3, rng);
    const auto ids = make_ids(1 + rng() % 12);
    const auto r = balanced_assignment(nodes, ids);
    auto weight = [](const std::string& node, const std::string& id) {
      return rendezvous_weight(fnv1a64(node), mix64(fnv1a64(id)));
    };
    for (bool probe : {false, true}) {
      const std::size_t class_size = probe ? count_probes(nodes) : nodes.size() - count_probes(nodes);
      // Lowest weight each instance accepted in this class.
      std::map<std::string, std::uint64_t> worst_held;
      for (const auto& [id, a] : r)
        for (const auto& n : probe ? a.probes : a.nodes)
          if (!worst_held.contains(id) || weight(n, id) < worst_held[id])
            worst_held[id] = weight(n, id);
      for (const auto& [id, a] : r) {
        for (const auto& n : probe ? a.probes : a.nodes) {
          for (const auto& other : ids) {
            if (other == id || weight(n, other) <= weight(n, id)) continue;
            // n prefers `other`; `other` must hold only nodes it values more than n, or have
            // a quota of 0 in this class (fewer nodes of the class than instances).
            if (worst_held.contains(other)) {
              CHECK(worst_held[other] > weight(n, other));
            } else {
              CHECK(class_size < ids.size());
            }
          }
        }
      }
    }
  }
}

TEST_CASE("a duplicated node is a probe node if any copy says so") {
  std::vector<external_node> nodes{{"n1", false}, {"n1", true}, {"n2", false}};
  const auto r = balanced_assignment(nodes, std::vector<std::string>{"consul-esm:a"});
  CHECK(r.at("consul-esm:a").probes == std::vector<std::string>{"n1"});
  CHECK(r.at("consul-esm:a").nodes == std::vector<std::string>{"n2"});
}

TEST_CASE("an unchanged input with its own result as previous moves nothing") {
  std::mt19937_64 rng(11);
  for (int round = 0; round < 50; ++round) {
    const auto nodes = make_nodes(rng() % 500, 0.4, rng);
    const auto ids = make_ids(1 + rng() % 20);
    const auto first = balanced_assignment(nodes, ids);
    CHECK(balanced_assignment(nodes, ids, first) == first);
  }
}

TEST_CASE("a node listed under two instances in the previous assignment stays with one of them") {
  std::vector<external_node> nodes{{"n1", false}, {"n2", false}};
  std::vector<std::string> ids{"consul-esm:a", "consul-esm:b"};
  assignment_map previous;
  previous["consul-esm:a"].nodes = {"n1"};
  previous["consul-esm:b"].nodes = {"n1", "n2"};
  const auto r = balanced_assignment(nodes, ids, previous);
  check_partition(nodes, ids, r);
  CHECK(r.at("consul-esm:b").nodes == std::vector<std::string>{"n2"});
  CHECK(r.at("consul-esm:a").nodes == std::vector<std::string>{"n1"});
}

// The bound the header documents, given a previous result for the same nodes:
// joining:  ceil(P/k') + ceil(N/k') + 2 k_old, leaving: ceil(P/k_old) + ceil(N/k_old) + 2 k'.
// The fair share is the part no algorithm can avoid; the slack is measured and printed.
TEST_CASE("movement under random joins and leaves stays within the documented bound") {
  std::mt19937_64 rng(2024);
  std::size_t steps = 0, slack_total = 0, slack_max = 0, moved_total = 0, share_total = 0;
  double worst_fraction_over_ideal = 0;
  // Runs 0-11 have many nodes per instance; runs 12-29 have few (n < k^2), where quota
  // floors often do not change on a join or leave and the slack term can appear.
  for (int run = 0; run < 30; ++run) {
    const std::size_t n = run < 12 ? 200 + rng() % 3000 : rng() % 150;
    const auto nodes = make_nodes(n, 0.1 + 0.1 * static_cast<double>(run % 5), rng);
    const std::size_t p = count_probes(nodes), plain = n - p;
    std::vector<std::string> ids = make_ids(1 + rng() % 10);
    std::size_t next_id = 1000;
    auto current = balanced_assignment(nodes, ids);
    for (int step = 0; step < 25; ++step) {
      const std::size_t k_old = ids.size();
      const bool join = k_old == 1 || (k_old < 40 && rng() % 2 == 0);
      if (join) {
        ids.push_back(instance_id(next_id++));
      } else {
        ids.erase(ids.begin() + static_cast<std::ptrdiff_t>(rng() % k_old));
      }
      const std::size_t k_new = ids.size();
      auto next = balanced_assignment(nodes, ids, current);
      check_balanced(next);
      const std::size_t moved = count_moved(current, next);
      // The unavoidable part: the joiner's share, or the leaver's share.
      std::size_t share = 0;
      if (join) {
        share = next.at(ids.back()).size();
      } else {
        for (const auto& [id, a] : current)
          if (!next.contains(id)) share = a.size();
      }
      const std::size_t bound = join ? ceil_div(p, k_new) + ceil_div(plain, k_new) + 2 * k_old
                                     : ceil_div(p, k_old) + ceil_div(plain, k_old) + 2 * k_new;
      CAPTURE(n);
      CAPTURE(k_old);
      CAPTURE(k_new);
      CHECK(moved >= share);
      CHECK(moved <= bound);
      const std::size_t slack = moved - std::min(moved, share);
      slack_total += slack;
      slack_max = std::max(slack_max, slack);
      moved_total += moved;
      share_total += share;
      const double ideal = 1.0 / static_cast<double>(std::max(k_old, k_new));
      worst_fraction_over_ideal = std::max(
          worst_fraction_over_ideal, static_cast<double>(moved) / static_cast<double>(n) - ideal);
      ++steps;
      current = std::move(next);
    }
  }
  MESSAGE("joins/leaves: " << steps << " steps, moved " << moved_total << " nodes, unavoidable "
                           << share_total << ", slack total " << slack_total << " (max "
                           << slack_max << " in one step); worst moved/n - 1/max(k,k') = "
                           << worst_fraction_over_ideal);
  // Far inside the proven bound (measured: 0). Choosing quota +1s without looking at the
  // previous counts gives 0.18 % and up to 9 per step on these seeds: this catches that.
  CHECK(slack_total * 1000 <= moved_total);
  CHECK(slack_max <= 2);
}

TEST_CASE("adding or removing nodes moves almost no other node") {
  std::mt19937_64 rng(99);
  std::size_t steps = 0, moved_total = 0, moved_max = 0;
  for (int run = 0; run < 30; ++run) {
    auto nodes = make_nodes(run < 10 ? 300 + rng() % 2000 : 5 + rng() % 100, 0.3, rng);
    const auto ids = make_ids(2 + rng() % 20);
    auto current = balanced_assignment(nodes, ids);
    std::size_t next_name = 0;
    for (int step = 0; step < 30; ++step) {
      const std::size_t changes = 1 + rng() % 3;
      for (std::size_t c = 0; c < changes; ++c) {
        if (rng() % 2 == 0) {
          nodes.push_back({"added-" + std::to_string(next_name++), rng() % 3 == 0});
        } else {
          nodes.erase(nodes.begin() + static_cast<std::ptrdiff_t>(rng() % nodes.size()));
        }
      }
      auto next = balanced_assignment(nodes, ids, current);
      check_partition(nodes, ids, next);
      check_balanced(next);
      const std::size_t moved = count_moved(current, next);
      // Each added or removed node shifts at most one quota "+1" per class.
      CHECK(moved <= 2 * changes);
      moved_total += moved;
      moved_max = std::max(moved_max, moved);
      ++steps;
      current = std::move(next);
    }
  }
  MESSAGE("node churn: " << steps << " steps of 1-3 node changes moved " << moved_total
                         << " existing nodes (max " << moved_max << " in one step)");
}

TEST_CASE("without a previous assignment, movement is informational only") {
  // A cold start (no previous) is a pure function of the names; print how far it is from the
  // minimum so the figure is on record.
  std::mt19937_64 rng(5);
  const auto nodes = make_nodes(10000, 0.2, rng);
  for (std::size_t k : {5, 20, 50}) {
    const auto before = balanced_assignment(nodes, make_ids(k));
    const auto after = balanced_assignment(nodes, make_ids(k + 1));
    const auto moved = count_moved(before, after);
    MESSAGE("cold start " << k << " -> " << k + 1 << " instances, 10000 nodes: moved " << moved
                          << " (ideal about " << 10000 / (k + 1) << ")");
    CHECK(moved >= 10000 / (k + 1));
  }
}

TEST_CASE("round robin is consul-esm's positional rule") {
  std::mt19937_64 rng(8);
  for (int round = 0; round < 50; ++round) {
    auto nodes = make_nodes(rng() % 100, 0.3, rng);
    auto ids = make_ids(1 + rng() % 9);
    auto sorted_nodes = nodes;
    std::sort(sorted_nodes.begin(), sorted_nodes.end(),
              [](const auto& a, const auto& b) { return a.name < b.name; });
    auto sorted_ids = ids;
    std::sort(sorted_ids.begin(), sorted_ids.end());
    std::shuffle(nodes.begin(), nodes.end(), rng);
    std::shuffle(ids.begin(), ids.end(), rng);

    const auto r = round_robin_assignment(nodes, ids);
    REQUIRE(r.size() == sorted_ids.size());
    assignment_map expect;
    for (const auto& id : sorted_ids) expect[id];
    for (std::size_t i = 0; i < sorted_nodes.size(); ++i) {
      auto& a = expect[sorted_ids[i % sorted_ids.size()]];
      (sorted_nodes[i].probe ? a.probes : a.nodes).push_back(sorted_nodes[i].name);
    }
    CHECK(r == expect);
  }
}

TEST_CASE("round robin matches consul-esm's TestLeader_rebalanceHealthWatches steps") {
  std::vector<external_node> nodes{{"node1", false}, {"node2", true}, {"node3", false}};
  std::vector<std::string> ids{"esm:1"};
  auto r = round_robin_assignment(nodes, ids);
  CHECK(r.at("esm:1").nodes == std::vector<std::string>{"node1", "node3"});
  CHECK(r.at("esm:1").probes == std::vector<std::string>{"node2"});

  ids.push_back("esm:2");
  r = round_robin_assignment(nodes, ids);
  CHECK(r.at("esm:1").nodes == std::vector<std::string>{"node1", "node3"});
  CHECK(r.at("esm:1").probes.empty());
  CHECK(r.at("esm:2").nodes.empty());
  CHECK(r.at("esm:2").probes == std::vector<std::string>{"node2"});

  ids.push_back("esm:3");
  r = round_robin_assignment(nodes, ids);
  CHECK(r.at("esm:3").nodes == std::vector<std::string>{"node3"});
  CHECK(r.at("esm:1").nodes == std::vector<std::string>{"node1"});

  // Instance 1 leaves: everything shifts by one position.
  ids.erase(ids.begin());
  r = round_robin_assignment(nodes, ids);
  CHECK(r.at("esm:2").nodes == std::vector<std::string>{"node1", "node3"});
  CHECK(r.at("esm:3").probes == std::vector<std::string>{"node2"});

  nodes.push_back({"node4", false});
  r = round_robin_assignment(nodes, ids);
  CHECK(r.at("esm:3").nodes == std::vector<std::string>{"node4"});
}

TEST_CASE("round robin moves most nodes where the balanced assignment moves a share") {
  std::mt19937_64 rng(13);
  const auto nodes = make_nodes(5000, 0.2, rng);
  const auto rr10 = round_robin_assignment(nodes, make_ids(10));
  const auto rr11 = round_robin_assignment(nodes, make_ids(11));
  const auto b10 = balanced_assignment(nodes, make_ids(10));
  const auto b11 = balanced_assignment(nodes, make_ids(11), b10);
  const auto rr_moved = count_moved(rr10, rr11), b_moved = count_moved(b10, b11);
  MESSAGE("10 -> 11 instances, 5000 nodes: round robin moved " << rr_moved << ", balanced moved "
                                                               << b_moved);
  CHECK(rr_moved > 5000 / 2);
  CHECK(b_moved <= ceil_div(5000, 11) + 10);
}

TEST_CASE("count_moved counts owner changes of nodes present in both") {
  assignment_map a, b;
  a["x"].nodes = {"n1", "n2"};
  a["y"].probes = {"n3"};
  b["x"].nodes = {"n1"};
  b["y"].nodes = {"n2"};      // moved
  b["y"].probes = {"n3", "n4"};  // n3 stays, n4 is new
  CHECK(count_moved(a, b) == 1);
  CHECK(count_moved(a, a) == 0);
}

TEST_CASE("follower sets: health = Nodes ∪ Probes, ping = Probes") {
  assignment mine{{"n1", "n3"}, {"p1", "n3"}};
  const auto w = follower_sets(mine);
  CHECK(w.health_nodes == std::set<std::string>{"n1", "n3", "p1"});
  CHECK(w.ping_nodes == std::set<std::string>{"n3", "p1"});
  CHECK(follower_sets({}) == follower_work{});
}

TEST_CASE("timing: 100 000 nodes over 50 instances") {
  std::mt19937_64 rng(100);
  const auto nodes = make_nodes(100000, 0.2, rng);
  const auto ids = make_ids(50);
  using clock = std::chrono::steady_clock;
  auto t0 = clock::now();
  const auto cold = balanced_assignment(nodes, ids);
  auto t1 = clock::now();
  auto ids51 = make_ids(51);
  const auto join = balanced_assignment(nodes, ids51, cold);
  auto t2 = clock::now();
  const auto same = balanced_assignment(nodes, ids, cold);
  auto t3 = clock::now();
  const auto rr = round_robin_assignment(nodes, ids);
  auto t4 = clock::now();
  auto ms = [](auto d) { return std::chrono::duration<double, std::milli>(d).count(); };
  MESSAGE("100000 nodes / 50 instances: cold " << ms(t1 - t0) << " ms; one join (51) from it "
                                               << ms(t2 - t1) << " ms, moved "
                                               << count_moved(cold, join) << "; unchanged "
                                               << ms(t3 - t2) << " ms; round robin "
                                               << ms(t4 - t3) << " ms");
  check_balanced(cold);
  check_balanced(join);
  CHECK(same == cold);
  CHECK(rr.size() == 50);
}
