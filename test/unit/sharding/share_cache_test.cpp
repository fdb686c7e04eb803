// The worker's share cache, step by step: what the sink holds, when it is handed over, and how
// an assignment change is caught up with. No network, no io_context: the test plays Consul.
#include <doctest/doctest.h>

#include <map>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "esm/sharding/share_cache.hpp"

using namespace esm::sharding;
namespace consul = esm::consul;
using delivery = share_cache::delivery;
using catch_up = share_cache::catch_up;
using indexes = share_cache::indexes;
using names = std::vector<std::string>;

namespace {

consul::node node(std::string name, std::uint64_t modify_index = 10) {
  consul::node n;
  n.name = std::move(name);
  n.address = "10.0.0.1";
  n.meta = {{"external-node", "true"}};
  n.modify_index = modify_index;
  return n;
}

consul::health_check check(std::string node, std::string id, std::uint64_t modify_index = 10) {
  consul::health_check c;
  c.node = std::move(node);
  c.check_id = std::move(id);
  c.status = "passing";
  c.modify_index = modify_index;
  return c;
}

assignment assigned(names nodes, names probes = {}) { return {std::move(nodes), std::move(probes)}; }

names names_of(const std::vector<consul::node>& v) {
  names out;
  for (auto& n : v) out.push_back(n.name);
  return out;
}

names ids_of(const std::vector<consul::health_check>& v) {
  names out;
  for (auto& c : v) out.push_back(c.node + "/" + c.check_id);
  return out;
}

names ids_of(const std::vector<shared_check>& v) {
  names out;
  for (auto& c : v) out.push_back(c->node + "/" + c->check_id);
  return out;
}

constexpr delivery none{false, false};
constexpr delivery both{true, true};
constexpr delivery nodes_only{true, false};
constexpr delivery checks_only{false, true};

// A cache that holds {a, b} (b a probe) with a check each, as of indexes 100 and 200.
share_cache following_a_b() {
  share_cache sc;
  REQUIRE(sc.assign(assigned({"a"}, {"b"})));
  auto p = sc.apply_assignment();
  REQUIRE(p.next == catch_up::from_scratch);
  REQUIRE(sc.on_nodes({node("a"), node("b")}, 100) == nodes_only);
  REQUIRE(sc.on_checks({check("a", "ca"), check("b", "cb")}, 200) == checks_only);
  REQUIRE(sc.resume_from() == indexes{100, 200});
  return sc;
}

}  // namespace

TEST_CASE("share cache: the first assignment hands over the empty share at once, then reads it all") {
  share_cache sc;
  CHECK_FALSE(sc.assigned());
  CHECK_FALSE(sc.resume_from().has_value());

  CHECK(sc.assign(assigned({"a", "c"}, {"b"})));
  REQUIRE(sc.assigned());
  CHECK(sc.work().health_nodes == std::set<std::string>{"a", "b", "c"});
  auto p = sc.apply_assignment();
  // The sink learns at once that it holds nothing yet, even though nothing changed for it.
  CHECK(p.drop == both);
  CHECK(sc.nodes().empty());
  CHECK(sc.checks().empty());
  // Nothing known yet: the whole share, from index 0.
  CHECK(p.next == catch_up::from_scratch);
  CHECK(p.added.empty());
  CHECK(sc.followed() == names{"a", "b", "c"});
  CHECK_FALSE(sc.resume_from().has_value());

  // One answer is not enough to resume from: both queries must have answered.
  CHECK(sc.on_nodes({node("c"), node("a"), node("b")}, 100) == nodes_only);
  CHECK_FALSE(sc.resume_from().has_value());
  CHECK(sc.on_checks({check("a", "ca")}, 200) == checks_only);
  CHECK(sc.resume_from() == indexes{100, 200});
}

TEST_CASE("share cache: an assignment with the same work changes nothing") {
  share_cache sc;
  CHECK(sc.assign(assigned({"a", "c"}, {"b"})));
  // Another order, duplicates, as a Go leader or a hand-written value may have it.
  CHECK_FALSE(sc.assign(assigned({"c", "a", "a"}, {"b"})));
  CHECK(sc.work().health_nodes == std::set<std::string>{"a", "b", "c"});
  CHECK(sc.work().ping_nodes == std::set<std::string>{"b"});
  // The same health nodes with another probe do change the work.
  CHECK(sc.assign(assigned({"a", "b"}, {"c"})));
  // Even an empty first assignment is a change: the sink must learn it holds nothing.
  share_cache empty;
  CHECK(empty.assign(assignment{}));
  CHECK_FALSE(empty.assign(assignment{}));
}

TEST_CASE("share cache: node answers are filtered to the share, sorted, and handed over only on change") {
  share_cache sc;
  sc.assign(assigned({"a", "c"}, {"b"}));
  sc.apply_assignment();

  // Server-side filtering is trusted for bytes, not for correctness.
  CHECK(sc.on_nodes({node("c"), node("x"), node("b"), node("a")}, 100) == nodes_only);
  CHECK(names_of(sc.nodes()) == names{"a", "b", "c"});
  CHECK(names_of(sc.ping_nodes()) == names{"b"});

  // A blocking query returning the same objects (another node of the table changed, or the
  // wait expired) is no delivery; the index still moves.
  CHECK(sc.on_nodes({node("a"), node("b"), node("c")}, 110) == none);
  CHECK(sc.resume_from() == std::nullopt);  // no checks answer yet
  sc.on_checks(std::vector<consul::health_check>{}, 50);
  CHECK(sc.resume_from() == indexes{110, 50});

  SUBCASE("a moved ModifyIndex") {
    CHECK(sc.on_nodes({node("a"), node("b", 11), node("c")}, 120) == nodes_only);
    CHECK(sc.nodes()[1].modify_index == 11);
  }
  SUBCASE("a new address") {
    auto b = node("b");
    b.address = "10.0.0.2";
    CHECK(sc.on_nodes({node("a"), b, node("c")}, 120) == nodes_only);
    CHECK(sc.ping_nodes()[0].address == "10.0.0.2");
  }
  SUBCASE("new meta") {
    auto c = node("c");
    c.meta["rack"] = "r1";
    CHECK(sc.on_nodes({node("a"), node("b"), c}, 120) == nodes_only);
  }
  SUBCASE("new tagged addresses") {
    auto a = node("a");
    a.tagged_addresses["lan"] = "10.0.0.9";
    CHECK(sc.on_nodes({a, node("b"), node("c")}, 120) == nodes_only);
  }
  SUBCASE("a node removed from the catalog") {
    CHECK(sc.on_nodes({node("a"), node("c")}, 120) == nodes_only);
    CHECK(names_of(sc.nodes()) == names{"a", "c"});
    CHECK(sc.ping_nodes().empty());
  }
  CHECK(sc.resume_from() == indexes{120, 50});
}

TEST_CASE("share cache: a packed node unpacks to the object it was packed from") {
  consul::node n;
  n.id = "0b0e7a4c-6c43-4f37-9a50-3c1b0f1e2d3a";
  n.name = "a-node-name-longer-than-the-small-string-buffer.example.com";
  n.address = "2001:db8::1";
  n.datacenter = "dc1";
  n.partition = "p\xc3\xa9";
  n.tagged_addresses = {{"lan", "10.0.0.1"}, {"wan", "198.51.100.7"}, {"empty", ""}};
  n.meta = {{"external-node", "true"}, {"external-probe", "true"}, {"", "an empty key"}};
  n.create_index = 7;
  n.modify_index = 0xffffffffffffull;
  packed_node p(n);
  auto u = p.unpack();
  CHECK(p.name() == n.name);
  CHECK(u.id == n.id);
  CHECK(u.name == n.name);
  CHECK(u.address == n.address);
  CHECK(u.datacenter == n.datacenter);
  CHECK(u.partition == n.partition);
  CHECK(u.tagged_addresses == n.tagged_addresses);
  CHECK(u.meta == n.meta);
  CHECK(u.create_index == n.create_index);
  CHECK(u.modify_index == n.modify_index);

  packed_node empty{consul::node{}};
  auto e = empty.unpack();
  CHECK(empty.name().empty());
  CHECK(e.name.empty());
  CHECK(e.id.empty());
  CHECK(e.meta.empty());
  CHECK(e.tagged_addresses.empty());
  CHECK(e.modify_index == 0);
}

TEST_CASE("share cache: a packed node compares in place by name, ModifyIndex, address, meta and tagged addresses") {
  consul::node n;
  n.id = "id";
  n.name = "n1";
  n.address = "10.0.0.1";
  n.datacenter = "dc1";
  n.tagged_addresses = {{"lan", "10.0.0.1"}, {"wan", "198.51.100.7"}};
  n.meta = {{"external-node", "true"}};
  n.create_index = 3;
  n.modify_index = 9;
  packed_node p(n);
  CHECK(p.same_as(n));
  // Fields the cache ignores: still the same.
  auto other = n;
  other.id = "another";
  other.datacenter = "dc2";
  other.partition = "p";
  other.create_index = 4;
  CHECK(p.same_as(other));
  // Each compared field, changed alone.
  auto changed = [&](auto edit) {
    auto m = n;
    edit(m);
    return !p.same_as(m);
  };
  CHECK(changed([](consul::node& m) { m.name = "n2"; }));
  CHECK(changed([](consul::node& m) { m.name = "n"; }));
  CHECK(changed([](consul::node& m) { m.modify_index = 10; }));
  CHECK(changed([](consul::node& m) { m.address = "10.0.0.2"; }));
  CHECK(changed([](consul::node& m) { m.meta["external-probe"] = "true"; }));
  CHECK(changed([](consul::node& m) { m.meta.clear(); }));
  CHECK(changed([](consul::node& m) { m.meta["external-node"] = "false"; }));
  CHECK(changed([](consul::node& m) { m.tagged_addresses.erase("wan"); }));
  CHECK(changed([](consul::node& m) { m.tagged_addresses["lan"] = "10.0.0.9"; }));
  CHECK(changed([](consul::node& m) { m.tagged_addresses = {{"lan", "10.0.0.1"}, {"wan2", "198.51.100.7"}}; }));
  // A meta change must not be hidden by the tagged addresses before it.
  auto both = n;
  both.meta = {{"external-node", "true"}, {"z", ""}};
  CHECK_FALSE(p.same_as(both));
}

TEST_CASE("share cache: the nodes handed over carry every field; a change the delivery ignores keeps the held object") {
  share_cache sc;
  sc.assign(assigned({"a"}, {"b"}));
  sc.apply_assignment();
  auto a = node("a", 10);
  a.id = "id-a";
  a.datacenter = "dc1";
  a.create_index = 3;
  a.tagged_addresses = {{"lan", "10.0.0.1"}};
  CHECK(sc.on_nodes({a, node("b")}, 100) == nodes_only);
  auto held = sc.nodes();
  REQUIRE(held.size() == 2);
  CHECK(held[0].id == "id-a");
  CHECK(held[0].datacenter == "dc1");
  CHECK(held[0].create_index == 3);
  CHECK(held[0].tagged_addresses == a.tagged_addresses);
  CHECK(held[0].meta == a.meta);
  CHECK(sc.node_count() == 2);
  // Name, ModifyIndex, address, meta and tagged addresses tell a change; another ID alone
  // does not, and the object held stays as it was.
  auto a2 = a;
  a2.id = "id-other";
  CHECK(sc.on_nodes({a2, node("b")}, 110) == none);
  CHECK(sc.nodes()[0].id == "id-a");
}

TEST_CASE("share cache: checks exclude externalNodeHealth and other nodes, and are handed over when a ModifyIndex moves") {
  share_cache sc;
  sc.assign(assigned({"a"}, {"b"}));
  sc.apply_assignment();

  std::vector<consul::health_check> answer{
      check("b", "web"), check("a", "z"), check("b", "externalNodeHealth"), check("x", "web"),
      check("a", "m")};
  CHECK(sc.on_checks(answer, 200) == checks_only);
  CHECK(ids_of(sc.checks()) == names{"a/m", "a/z", "b/web"});

  // The same checks in another order: nothing to hand over.
  std::vector<consul::health_check> shuffled{check("a", "m"), check("b", "web"), check("a", "z")};
  CHECK(sc.on_checks(shuffled, 210) == none);
  // externalNodeHealth is the prober's own: its changes are not the check runner's.
  shuffled.push_back(check("b", "externalNodeHealth", 99));
  CHECK(sc.on_checks(shuffled, 220) == none);
  // Any change of a check in Consul moves its ModifyIndex: that alone is compared.
  auto same_index = shuffled;
  same_index[0].output = "changed, but not in Consul's eyes";
  CHECK(sc.on_checks(same_index, 225) == none);
  CHECK(sc.on_checks({check("a", "m", 11), check("b", "web"), check("a", "z")}, 230) == checks_only);
  CHECK(sc.checks()[0]->modify_index == 11);
  CHECK(sc.on_checks({check("a", "m", 11), check("a", "z")}, 240) == checks_only);
  CHECK(ids_of(sc.checks()) == names{"a/m", "a/z"});
  CHECK(sc.on_checks({check("a", "m", 11), check("a", "z"), check("a", "new")}, 250) == checks_only);
  CHECK(ids_of(sc.checks()) == names{"a/m", "a/new", "a/z"});
  sc.on_nodes({}, 1);
  CHECK(sc.resume_from() == indexes{1, 250});
}

TEST_CASE("share cache: a check read again with the same ModifyIndex keeps the object held, which the sink shares") {
  share_cache sc;
  sc.assign(assigned({"a", "b"}));
  sc.apply_assignment();
  REQUIRE(sc.on_checks({check("a", "m"), check("a", "z"), check("b", "web")}, 200) == checks_only);
  auto first = sc.checks();  // what a sink keeps: handles to the cache's objects
  REQUIRE(first.size() == 3);

  // a/z moved (a new object); a/m and b/web did not (the objects held), though read anew.
  auto z = check("a", "z", 11);
  z.output = "new";
  REQUIRE(sc.on_checks({check("b", "web"), z, check("a", "m")}, 210) == checks_only);
  REQUIRE(sc.checks().size() == 3);
  CHECK(sc.checks()[0] == first[0]);
  CHECK(sc.checks()[1] != first[1]);
  CHECK(sc.checks()[1]->output == "new");
  CHECK(first[1]->modify_index == 10);  // a sink's handle still holds the version it got
  CHECK(sc.checks()[2] == first[2]);

  // Nothing moved: the objects held stay, the ones read are dropped.
  auto same = check("a", "m");
  same.output = "changed, but not in Consul's eyes";
  CHECK(sc.on_checks({same, z, check("b", "web")}, 220) == none);
  CHECK(sc.checks()[0] == first[0]);
  CHECK(sc.checks()[0]->output.empty());

  // ModifyIndex 0 tells nothing: such a check is taken as read whenever the share is handed
  // over.
  REQUIRE(sc.on_checks({check("a", "m", 0), z, check("b", "web")}, 230) == checks_only);
  auto zero = sc.checks()[0];
  REQUIRE(sc.on_checks({check("a", "m", 0), check("a", "z", 12), check("b", "web")}, 240) == checks_only);
  CHECK(sc.checks()[0] != zero);
  CHECK(sc.checks()[2] == first[2]);

  // A departed node's checks leave the cache; the others keep their objects.
  sc.assign(assigned({"b"}));
  CHECK(sc.apply_assignment().drop == checks_only);
  REQUIRE(sc.checks().size() == 1);
  CHECK(sc.checks()[0] == first[2]);
}

TEST_CASE("share cache: held_check gives the object held for exactly a check's key and ModifyIndex") {
  share_cache sc;
  sc.assign(assigned({"a", "b"}));
  sc.apply_assignment();
  auto svc = check("a", "m");
  svc.service_id = "web";
  auto ns = check("b", "m", 12);
  ns.name_space = "team";
  REQUIRE(sc.on_checks({check("a", "m"), svc, check("a", "z"), check("b", "m"), ns}, 200) == checks_only);
  REQUIRE(sc.checks().size() == 5);
  auto key = [](const consul::health_check& c) {
    return consul::check_key{c.node, c.check_id, c.service_id.view(), c.name_space.view(),
                             c.partition.view(), c.modify_index};
  };
  for (auto& held : sc.checks()) CHECK(sc.held_check(key(*held)) == held);
  auto k = key(*sc.checks()[0]);
  k.modify_index = 11;  // another version
  CHECK(sc.held_check(k) == nullptr);
  k = key(svc);
  k.service_id = "db";  // another check on the node with the same ID
  CHECK(sc.held_check(k) == nullptr);
  auto other_ns = check("b", "m", 12);  // b/m at 12 exists only in namespace "team"
  CHECK(sc.held_check(key(other_ns)) == nullptr);
  auto unknown_node = check("c", "m"), first_node = check("0", "m");  // (the keys view into them)
  CHECK(sc.held_check(key(unknown_node)) == nullptr);
  CHECK(sc.held_check(key(first_node)) == nullptr);  // before every check held

  // Shared objects read (as client::health_state_shared gives them): the held ones stay, also
  // when the read made new objects of them; a moved one is taken.
  auto first = sc.checks();
  auto moved = std::make_shared<const consul::health_check>(check("a", "z", 13));
  std::vector<shared_check> read{first[0], std::make_shared<const consul::health_check>(*first[1]),
                                 moved, first[3], first[4]};
  REQUIRE(sc.on_checks(read, 210) == checks_only);
  CHECK(sc.checks()[0] == first[0]);
  CHECK(sc.checks()[1] == first[1]);
  CHECK(sc.checks()[2] == moved);
  CHECK(sc.held_check(key(*moved)) == moved);
  CHECK(sc.held_check(key(*first[2])) == nullptr);
  CHECK(sc.on_checks(sc.checks(), 220) == none);
}

TEST_CASE("share cache: a grown assignment reads only the added nodes and resumes from the lower indexes") {
  auto sc = following_a_b();
  CHECK(sc.assign(assigned({"a", "d"}, {"b", "c"})));
  auto p = sc.apply_assignment();
  CHECK(p.drop == none);  // nobody left
  CHECK(p.next == catch_up::read_added);
  CHECK(p.added == std::set<std::string>{"c", "d"});
  CHECK(sc.followed() == names{"a", "b", "c", "d"});
  CHECK(sc.resume_from() == indexes{100, 200});

  SUBCASE("read at a later state: the share queries resume from the cache's and return at once") {
    auto d = sc.on_added({node("d"), node("c")}, {check("c", "cc"), check("d", "cd")}, {150, 250});
    CHECK(d == both);
    CHECK(names_of(sc.nodes()) == names{"a", "b", "c", "d"});
    CHECK(names_of(sc.ping_nodes()) == names{"b", "c"});
    CHECK(ids_of(sc.checks()) == names{"a/ca", "b/cb", "c/cc", "d/cd"});
    CHECK(sc.resume_from() == indexes{100, 200});
  }
  SUBCASE("read at an earlier state (a stale server): resume from that") {
    sc.on_added({node("c")}, {check("c", "cc")}, {90, 180});
    CHECK(sc.resume_from() == indexes{90, 180});
  }
  SUBCASE("added nodes the catalog does not have yet: nothing to hand over, indexes merged") {
    // An index of 0 must not read as "no state".
    CHECK(sc.on_added({}, {}, {0, 0}) == none);
    CHECK(sc.resume_from() == indexes{1, 1});
    CHECK(names_of(sc.nodes()) == names{"a", "b"});
  }
}

TEST_CASE("share cache: a shrunk assignment drops the departed nodes at once and resumes without reading") {
  auto sc = following_a_b();
  CHECK(sc.assign(assigned({"a"})));
  auto p = sc.apply_assignment();
  CHECK(p.drop == both);
  CHECK(names_of(sc.nodes()) == names{"a"});
  CHECK(sc.ping_nodes().empty());
  CHECK(ids_of(sc.checks()) == names{"a/ca"});
  CHECK(p.next == catch_up::resume);
  CHECK(p.added.empty());
  CHECK(sc.followed() == names{"a"});
  CHECK(sc.resume_from() == indexes{100, 200});

  // A node that left and comes back is read again: the cache forgot it.
  CHECK(sc.assign(assigned({"a", "b"})));
  p = sc.apply_assignment();
  CHECK(p.drop == none);
  CHECK(p.next == catch_up::read_added);
  CHECK(p.added == std::set<std::string>{"b"});
}

TEST_CASE("share cache: a node that becomes a probe, or stops being one, is handed over") {
  auto sc = following_a_b();
  // Same health nodes, other probes: no check and no node object changes, but the prober's
  // list does.
  CHECK(sc.assign(assigned({"b"}, {"a"})));
  auto p = sc.apply_assignment();
  CHECK(p.drop == nodes_only);
  CHECK(names_of(sc.ping_nodes()) == names{"a"});
  CHECK(p.next == catch_up::resume);

  CHECK(sc.assign(assigned({"a", "b"})));
  CHECK(sc.apply_assignment().drop == nodes_only);
  CHECK(sc.ping_nodes().empty());
}

TEST_CASE("share cache: without both indexes the whole share is read from scratch") {
  share_cache sc;
  sc.assign(assigned({"a"}));
  sc.apply_assignment();
  sc.on_nodes({node("a")}, 100);  // the checks query has not answered yet

  CHECK(sc.assign(assigned({"a", "b"})));
  auto p = sc.apply_assignment();
  CHECK(p.drop == none);
  CHECK(p.next == catch_up::from_scratch);
  CHECK(p.added.empty());  // nothing to read apart: the share query brings b as well
  CHECK(sc.followed() == names{"a", "b"});
  // The nodes index is forgotten too: the nodes query starts over with the checks query.
  CHECK_FALSE(sc.resume_from().has_value());
  sc.on_checks(std::vector<consul::health_check>{}, 300);
  CHECK_FALSE(sc.resume_from().has_value());
  sc.on_nodes({node("a"), node("b")}, 310);
  CHECK(sc.resume_from() == indexes{310, 300});
}

TEST_CASE("share cache: a failed or superseded read of the added nodes starts over from scratch") {
  auto sc = following_a_b();
  sc.assign(assigned({"a", "c"}, {"b"}));
  auto p = sc.apply_assignment();
  REQUIRE(p.next == catch_up::read_added);

  SUBCASE("the read failed") {
    sc.invalidate();
    CHECK_FALSE(sc.resume_from().has_value());
    // What the sink holds stays until the share's answers replace it.
    CHECK(names_of(sc.nodes()) == names{"a", "b"});
    CHECK(sc.on_nodes({node("a"), node("b"), node("c")}, 400) == nodes_only);
    CHECK(sc.on_checks({check("a", "ca"), check("b", "cb")}, 410) == none);
    CHECK(sc.resume_from() == indexes{400, 410});
  }
  SUBCASE("a new assignment arrived while reading") {
    // It takes effect for every answer at once, the late read of the added nodes included.
    CHECK(sc.assign(assigned({"a", "d"})));
    CHECK(sc.on_added({node("c")}, {check("c", "cc")}, {150, 250}) == both);
    CHECK(names_of(sc.nodes()) == names{"a"});  // b left, c was never assigned again
    CHECK(ids_of(sc.checks()) == names{"a/ca"});
    // The driver gives up the partial merge; the next plan reads the share from scratch.
    sc.invalidate();
    p = sc.apply_assignment();
    CHECK(p.drop == none);  // already handed over
    CHECK(p.next == catch_up::from_scratch);
    CHECK(sc.followed() == names{"a", "d"});
  }
}

TEST_CASE("share cache: an empty assignment drops everything and follows nothing") {
  auto sc = following_a_b();
  CHECK(sc.assign(assignment{}));
  auto p = sc.apply_assignment();
  CHECK(p.drop == both);
  CHECK(sc.nodes().empty());
  CHECK(sc.ping_nodes().empty());
  CHECK(sc.checks().empty());
  CHECK(p.next == catch_up::nothing);
  CHECK(sc.followed().empty());
  CHECK_FALSE(sc.resume_from().has_value());

  // Back to work: nothing is cached, so the whole share is read.
  CHECK(sc.assign(assigned({"a"})));
  p = sc.apply_assignment();
  CHECK(p.drop == none);  // the sink already holds nothing
  CHECK(p.next == catch_up::from_scratch);
  CHECK(p.added.empty());
}

TEST_CASE("share cache: an answer for the old share after assign() cannot bring back a departed node") {
  auto sc = following_a_b();
  // The assignment changed; the old share's query answers before the driver applies it.
  CHECK(sc.assign(assigned({"a"})));
  CHECK(sc.on_nodes({node("a", 11), node("b", 11)}, 120) == nodes_only);
  CHECK(names_of(sc.nodes()) == names{"a"});
  CHECK(sc.on_checks({check("a", "ca"), check("b", "cb", 11)}, 220) == checks_only);
  CHECK(ids_of(sc.checks()) == names{"a/ca"});
  auto p = sc.apply_assignment();
  CHECK(p.drop == none);
  CHECK(p.next == catch_up::resume);
  CHECK(sc.resume_from() == indexes{120, 220});
}

TEST_CASE("share cache: over random assignment changes, catching up always yields the share a full read gives") {
  // A catalog of 24 nodes (two checks each, one of them externalNodeHealth on every third),
  // and 300 random assignments over it: new draws, shrinks of the one in force, empty ones. After each plan is
  // carried out (reading added nodes, or the whole share when told to), the cache must hold
  // exactly the assigned nodes and their checks, and it must not read more than the plan says.
  std::map<std::string, consul::node> catalog_nodes;
  std::vector<consul::health_check> catalog_checks;
  for (int i = 0; i < 24; ++i) {
    auto name = "n" + std::to_string(100 + i);
    catalog_nodes.emplace(name, node(name, 10 + i));
    catalog_checks.push_back(check(name, "svc"));
    if (i % 3 == 0) catalog_checks.push_back(check(name, "externalNodeHealth"));
  }
  auto read = [&](const std::set<std::string>& names) {
    std::pair<std::vector<consul::node>, std::vector<consul::health_check>> out;
    for (auto& n : names) out.first.push_back(catalog_nodes.at(n));
    for (auto& c : catalog_checks)
      if (names.count(c.node.str())) out.second.push_back(c);
    return out;
  };

  std::mt19937 rng(20240611);
  share_cache sc;
  std::uint64_t index = 1000;
  int full_reads = 0, added_reads = 0, resumes = 0, read_nodes = 0;
  std::optional<assignment> in_force;  // the last assignment the cache took
  for (int step = 0; step < 300; ++step) {
    assignment a;
    auto kind = rng() % 10;
    if (kind < 3 && in_force) {
      // A shrink: every instance's share shrinks when one joins.
      for (auto& n : in_force->nodes)
        if (rng() % 4) a.nodes.push_back(n);
      for (auto& n : in_force->probes)
        if (rng() % 4) a.probes.push_back(n);
    } else if (kind != 9) {
      for (auto& [name, n] : catalog_nodes) {
        auto r = rng() % 4;
        if (r == 0) a.nodes.push_back(name);
        if (r == 1) a.probes.push_back(name);
      }
    }
    if (!sc.assign(a)) continue;
    in_force = a;
    auto p = sc.apply_assignment();
    switch (p.next) {
      case catch_up::nothing:
        break;
      case catch_up::read_added: {
        ++added_reads;
        read_nodes += static_cast<int>(p.added.size());
        auto [ns, cs] = read(p.added);
        sc.on_added(ns, cs, {index + 1, index + 2});
        break;
      }
      case catch_up::resume:
        ++resumes;
        break;
      case catch_up::from_scratch: {
        ++full_reads;
        auto [ns, cs] = read(std::set<std::string>(sc.followed().begin(), sc.followed().end()));
        sc.on_nodes(ns, ++index);
        sc.on_checks(cs, ++index);
        break;
      }
    }
    if (step % 7 == 3) sc.invalidate();  // now and then a read of added nodes fails

    auto work = follower_sets(a);
    auto [want_nodes, want_checks] = read(work.health_nodes);
    CHECK(names_of(sc.nodes()) == names_of(want_nodes));
    names want_ping;
    for (auto& n : want_nodes)
      if (work.ping_nodes.count(n.name)) want_ping.push_back(n.name);
    CHECK(names_of(sc.ping_nodes()) == want_ping);
    std::erase_if(want_checks, [](auto& c) { return c.check_id == "externalNodeHealth"; });
    CHECK(ids_of(sc.checks()) == ids_of(want_checks));
    CHECK(sc.followed() == names(work.health_nodes.begin(), work.health_nodes.end()));
  }
  // Every kind of catch-up happened, and reading only added nodes is the common case.
  CHECK(full_reads > 0);
  CHECK(resumes > 0);
  CHECK(added_reads > full_reads);
  MESSAGE("full reads ", full_reads, ", added reads ", added_reads, " (", read_nodes,
          " nodes), resumes ", resumes);
}
