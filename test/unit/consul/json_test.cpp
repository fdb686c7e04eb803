#include <doctest/doctest.h>

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value_from.hpp>
#include <boost/json/value_to.hpp>

#include "esm/consul/json.hpp"

using namespace esm::consul;
using namespace std::chrono_literals;
namespace json = boost::json;

TEST_CASE("a health check with its definition decodes, durations as strings or nanoseconds") {
  auto v = json::parse(R"({
    "Node": "ext1", "CheckID": "c1", "Name": "web", "Status": "passing", "Notes": "",
    "Output": "ok", "ServiceID": "web1", "ServiceName": "web", "ServiceTags": ["a"],
    "Type": "http", "Namespace": "ns1", "Partition": "p1",
    "Definition": {"HTTP": "http://x/", "Header": {"A": ["1", "2"]}, "Method": "PUT",
                   "Interval": "10s", "TimeoutDuration": 2000000000,
                   "DeregisterCriticalServiceAfter": "1m30s", "TLSSkipVerify": true,
                   "SuccessBeforePassing": 3},
    "CreateIndex": 5, "ModifyIndex": 9, "ExposedPort": 0
  })");
  auto c = json::value_to<health_check>(v);
  CHECK(c.node == "ext1");
  CHECK(c.check_id == "c1");
  CHECK(c.service_tags == std::vector<std::string>{"a"});
  CHECK(c.name_space == "ns1");
  CHECK(c.partition == "p1");
  CHECK(c.definition.http == "http://x/");
  CHECK(c.definition.header.values("A") == std::vector<std::string>{"1", "2"});
  CHECK(c.definition.interval == 10s);
  CHECK(c.definition.timeout == 2s);
  CHECK(c.definition.deregister_critical_service_after == 90s);
  CHECK(c.definition.tls_skip_verify);
  CHECK(c.modify_index == 9);
  // Members esmd does not model survive a round trip, so a CAS never drops them.
  auto back = json::value_from(c).as_object();
  CHECK(back.at("ExposedPort") == 0);
  CHECK(back.at("Definition").at("SuccessBeforePassing") == 3);
  CHECK(back.at("Definition").at("Interval") == "10s");
  CHECK(back.at("Definition").at("Timeout") == "2s");
  CHECK(back.at("Definition").at("DeregisterCriticalServiceAfter") == "1m30s");
  CHECK_FALSE(back.at("Definition").as_object().contains("TimeoutDuration"));
  CHECK(back.at("ModifyIndex") == 9);
  CHECK(json::value_to<health_check>(json::value(back)).definition == c.definition);
}

TEST_CASE("a malformed type is an error, not a crash") {
  CHECK_THROWS(json::value_to<health_check>(json::parse(R"({"CheckID": 5})")));
  CHECK_THROWS(json::value_to<node>(json::parse(R"([1, 2])")));
}

TEST_CASE("a definition's Header round-trips, a name without values included; a malformed one is an error") {
  auto d = json::value_to<check_definition>(json::parse(
      R"({"HTTP": "http://x/", "Header": {"X-B": ["2", ""], "Accept": ["a/b"], "X-None": []}})"));
  CHECK(d.header.size() == 3);
  CHECK(d.header.values("X-B") == std::vector<std::string>{"2", ""});
  CHECK(d.header.contains("X-None"));
  CHECK(d.header.values("X-None").empty());
  auto back = json::value_from(d).as_object();
  CHECK(json::serialize(back.at("Header")) == R"({"Accept":["a/b"],"X-B":["2",""],"X-None":[]})");
  CHECK(json::value_to<check_definition>(json::value(back)) == d);
  // Absent, null and {} leave no Header, and none is written back.
  for (auto text : {R"({"HTTP": "http://x/"})", R"({"Header": null})", R"({"Header": {}})"}) {
    auto e = json::value_to<check_definition>(json::parse(text));
    CHECK(e.header.empty());
    CHECK_FALSE(json::value_from(e).as_object().contains("Header"));
  }
  // What value_to<std::map<std::string, std::vector<std::string>>> refused, refused alike.
  for (auto text : {R"({"Header": []})", R"({"Header": {"X": "v"}})", R"({"Header": {"X": [1]}})",
                    R"({"Header": {"X": [null]}})", R"({"Header": {"X": null}})"}) {
    INFO(text);
    CHECK_THROWS_AS(json::value_to<check_definition>(json::parse(text)), boost::system::system_error);
  }
}

TEST_CASE("a check definition's malformed duration is kept verbatim, not an error for the whole list") {
  // One odd check must not stop an instance from reading its share; the engine reports it
  // (plan_check) and a write-back sends the member as it came.
  auto c = json::value_to<health_check>(
      json::parse(R"({"CheckID": "x", "Definition": {"HTTP": "http://h/", "Interval": "10x", "Timeout": {"a": 1}}})"));
  CHECK(c.definition.interval.count() == 0);
  CHECK(c.definition.extra.at("Interval") == "10x");
  CHECK(c.definition.extra.at("Timeout").is_object());
  auto back = json::value_from(c).as_object().at("Definition").as_object();
  CHECK(back.at("Interval") == "10x");
  CHECK(back.at("HTTP") == "http://h/");
}

TEST_CASE("KV pairs decode base64 values, null as empty") {
  auto p = json::value_to<kv_pair>(json::parse(
      R"({"Key": "k", "Value": "eyJOb2RlcyI6bnVsbH0=", "Flags": 3304740253564472344,
          "Session": "s", "LockIndex": 1, "CreateIndex": 2, "ModifyIndex": 3})"));
  CHECK(p.value == R"({"Nodes":null})");
  CHECK(p.flags == lock_flag_value);
  CHECK(p.session == "s");
  CHECK(p.lock_index == 1);
  auto empty = json::value_to<kv_pair>(json::parse(R"({"Key": "k", "Value": null})"));
  CHECK(empty.value.empty());
  CHECK_THROWS(json::value_to<kv_pair>(json::parse(R"({"Key": "k", "Value": "***"})")));
}

TEST_CASE("transaction operations encode as Consul expects") {
  txn_op kv;
  kv.kv = txn_kv_op{"check-session", "esm/leader", {}, 0, 0, "sess", {}, {}};
  txn_op set;
  set.kv = txn_kv_op{"set", "esm/agents/a", std::string("{}"), 0, 0, {}, "part", {}};
  txn_op chk;
  chk.check = txn_check_op{"cas", health_check{}};
  chk.check->check.node = "n";
  chk.check->check.check_id = "c";
  chk.check->check.modify_index = 7;
  txn_op del;
  del.node = txn_node_op{"delete-cas", node{}};
  del.node->node.name = "n";
  del.node->node.modify_index = 4;
  auto v = json::value_from(std::vector<txn_op>{kv, set, chk, del});
  auto& a = v.as_array();
  CHECK(a[0].at("KV").at("Verb") == "check-session");
  CHECK(a[0].at("KV").at("Session") == "sess");
  CHECK_FALSE(a[0].at("KV").as_object().contains("Value"));
  CHECK(a[1].at("KV").at("Value") == "e30=");
  CHECK(a[1].at("KV").at("Partition") == "part");
  CHECK(a[2].at("Check").at("Verb") == "cas");
  CHECK(a[2].at("Check").at("Check").at("ModifyIndex") == 7);
  CHECK(a[3].at("Node").at("Node").at("Node") == "n");
  CHECK(a[3].at("Node").at("Node").at("ModifyIndex") == 4);
  auto round = json::value_to<std::vector<txn_op>>(v);
  CHECK(round[1].kv->value == "{}");
  CHECK(round[2].check->check.check_id == "c");
}

TEST_CASE("transaction results and errors decode") {
  auto results = json::value_to<std::vector<txn_result>>(json::parse(
      R"([{"KV": {"Key": "a", "Value": null, "ModifyIndex": 5}},
          {"Check": {"Node": "n", "CheckID": "c", "Status": "passing"}},
          {"Node": {"Node": "n", "ModifyIndex": 3}}])"));
  REQUIRE(results.size() == 3);
  CHECK(results[0].kv->modify_index == 5);
  CHECK(results[1].check->status == "passing");
  CHECK(results[2].node->modify_index == 3);
  auto errors = json::value_to<std::vector<txn_error>>(json::parse(
      R"([{"OpIndex": 2, "What": "failed to set check \"c\" on node \"n\", index is stale"}])"));
  CHECK(errors[0].op_index == 2);
  CHECK(errors[0].what.find("index is stale") != std::string::npos);
}

TEST_CASE("sessions encode their request and decode LockDelay in nanoseconds") {
  session_request r;
  r.name = "lock";
  r.node = "n";
  r.ttl = 30s;
  r.lock_delay = 15s;
  r.behavior = "release";
  r.node_checks = {"c"};
  auto o = json::value_from(r).as_object();
  CHECK(o.at("TTL") == "30s");
  CHECK(o.at("LockDelay") == "15s");
  CHECK(o.at("NodeChecks").as_array().size() == 1);
  CHECK_FALSE(o.contains("Checks"));  // unset: Consul's default (serfHealth)
  r.checks = std::vector<std::string>{};
  CHECK(json::value_from(r).as_object().at("Checks").as_array().empty());
  session_request d;
  CHECK_FALSE(json::value_from(d).as_object().contains("LockDelay"));

  auto s = json::value_to<session>(json::parse(
      R"({"ID": "x", "Name": "lock", "Node": "n", "LockDelay": 15000000000,
          "Behavior": "release", "TTL": "30s", "Checks": ["serfHealth"], "CreateIndex": 1})"));
  CHECK(s.lock_delay == 15s);
  CHECK(s.ttl == 30s);
  CHECK(s.checks == std::vector<std::string>{"serfHealth"});
  auto no_ttl = json::value_to<session>(json::parse(R"({"ID": "y", "TTL": ""})"));
  CHECK(no_ttl.ttl == 0s);
}

TEST_CASE("agent self: version, coordinates; a non-string version is reported empty") {
  auto s = json::value_to<agent_self>(json::parse(
      R"({"Config": {"Datacenter": "dc1", "NodeName": "a", "Version": "1.8.7", "Server": true},
          "Coord": {"Vec": [0,0,0,0,0,0,0,0], "Error": 1.5, "Adjustment": 0, "Height": 1e-05},
          "Member": {"Addr": "127.0.0.1"}})"));
  CHECK(s.version == "1.8.7");
  CHECK(s.server);
  REQUIRE(s.coord);
  CHECK(s.coord->error == doctest::Approx(1.5));
  CHECK(s.member_addr == "127.0.0.1");
  auto odd = json::value_to<agent_self>(json::parse(R"({"Config": {"Version": 187}})"));
  CHECK(odd.version.empty());
}

TEST_CASE("registrations encode only what is set") {
  agent_check_registration c;
  c.id = "consul-esm:i:agent-ttl";
  c.name = "Consul External Service Monitor Alive";
  c.service_id = "consul-esm:i";
  c.ttl = 30s;
  c.status = "passing";
  c.deregister_critical_service_after = 30min;
  auto o = json::value_from(c).as_object();
  CHECK(o.at("TTL") == "30s");
  CHECK(o.at("DeregisterCriticalServiceAfter") == "30m0s");
  CHECK_FALSE(o.contains("Partition"));

  catalog_registration r;
  r.node = "consul-esm:i:node";
  r.address = "esm-consul-esm:i";
  agent_service s;
  s.id = "consul-esm:i";
  s.service = "consul-esm";
  s.meta = {{"external-source", "consul-esm"}};
  r.service = s;
  auto ro = json::value_from(r).as_object();
  CHECK(ro.at("Service").at("Meta").at("external-source") == "consul-esm");
  CHECK_FALSE(ro.contains("Checks"));
  CHECK_FALSE(ro.contains("NodeMeta"));
}

namespace {
// What decode_array gives for `text`: the checks, or "error".
std::string decoded_or_error(std::string_view text) {
  try {
    auto checks = decode_array<health_check>(text);
    std::string out;
    for (auto& c : checks) out += json::serialize(json::value_from(c)) + "\n";
    return out;
  } catch (const std::exception&) {
    return "error";
  }
}
std::string reference(std::string_view text) {
  try {
    auto checks = json::value_to<std::vector<health_check>>(json::parse(text));
    std::string out;
    for (auto& c : checks) out += json::serialize(json::value_from(c)) + "\n";
    return out;
  } catch (const std::exception&) {
    return "error";
  }
}
}  // namespace

TEST_CASE("a large array decodes element by element as the whole DOM would") {
  std::string deep_ok = "[{\"CheckID\": \"d\", \"X\": " + std::string(30, '[') + std::string(30, ']') + "}]";
  std::string too_deep = "[{\"CheckID\": \"d\", \"X\": " + std::string(31, '[') + std::string(31, ']') + "}]";
  std::vector<std::string> texts = {
           R"([])", R"( [ ] )", R"([{"CheckID": "a", "Output": "x]}\"[{,"},
               {"CheckID": "b", "Definition": {"HTTP": "http://h/", "Interval": "10s", "Foo": [1, {"a": "]"}]},
                "Extra": {"k": [true, null]}}])",
           R"([{"CheckID": "a"},])", R"([,])", R"([{"CheckID": "a"} {"CheckID": "b"}])",
           R"([{"CheckID": "a"}] x)", R"([})", R"([{"CheckID": "a"}})", R"([[}])", R"([{"CheckID": "a"})", R"([{"CheckID": "a\"}])",
           R"([{"CheckID": "a"]})", R"([{"CheckID": 5}])", R"([1])", R"(null)", R"({})", R"()",
           R"([{"CheckID": "a\)", R"([{"CheckID": "\u00e9\ud83d\ude00"}])",
           deep_ok, too_deep};
  for (const auto& text : texts) {
    CAPTURE(text);
    CHECK(decoded_or_error(text) == reference(text));
  }
  CHECK(reference(deep_ok) != "error");
  CHECK(reference(too_deep) == "error");
  // What an element keeps beyond the modelled members lives in default storage, not in the
  // arena that held the element's DOM (it is released before the next element).
  auto checks = decode_array<health_check>(
      R"([{"CheckID": "a", "Extra": {"k": [1, 2]}, "Definition": {"Foo": "bar", "Interval": "x"}}, {"CheckID": "b"}])");
  REQUIRE(checks.size() == 2);
  REQUIRE(checks[0].extra.members());
  CHECK(checks[0].extra.members()->storage().get() == json::storage_ptr().get());
  CHECK(checks[0].extra.at("Extra").storage().get() == json::storage_ptr().get());
  CHECK(checks[0].extra.at("Extra").at("k").storage().get() == json::storage_ptr().get());
  CHECK(checks[0].definition.extra.at("Foo").storage().get() == json::storage_ptr().get());
  CHECK(checks[0].definition.extra.at("Interval").storage().get() == json::storage_ptr().get());
  CHECK(checks[0].extra.at("Extra") == json::parse(R"({"k": [1, 2]})"));
}

TEST_CASE("check_key_of reads a check's key as the decode does, and refuses what the decode would not take as is") {
  auto key_of = [](const char* text) { return check_key_of(json::parse(text)); };
  auto full = json::parse(R"({"Node": "n1", "CheckID": "c", "ServiceID": "web", "Namespace": "ns",
                              "Partition": "p", "ModifyIndex": 42, "Status": "passing"})");
  auto k = check_key_of(full);
  REQUIRE(k);
  auto c = json::value_to<health_check>(full);
  CHECK(k->node == c.node);
  CHECK(k->check_id == c.check_id);
  CHECK(k->service_id == c.service_id.view());
  CHECK(k->name_space == c.name_space.view());
  CHECK(k->partition == c.partition.view());
  CHECK(k->modify_index == 42);
  // Absent and null read as empty, as the decode leaves them.
  k = key_of(R"({"Node": "n1", "CheckID": "c", "ServiceID": null, "ModifyIndex": 7})");
  REQUIRE(k);
  CHECK(k->service_id.empty());
  CHECK(k->name_space.empty());
  CHECK(k->partition.empty());
  CHECK(key_of(R"({"Node": "n1", "CheckID": "c", "ModifyIndex": 18446744073709551615})")->modify_index ==
        18446744073709551615ull);
  // Decoded in full instead (which reports the fault, or takes a version it cannot tell).
  CHECK_FALSE(key_of(R"([])"));
  CHECK_FALSE(key_of(R"("n1")"));
  CHECK_FALSE(key_of(R"({"Node": 5, "CheckID": "c", "ModifyIndex": 7})"));
  CHECK_FALSE(key_of(R"({"Node": "n1", "CheckID": ["c"], "ModifyIndex": 7})"));
  CHECK_FALSE(key_of(R"({"Node": "n1", "CheckID": "c", "Partition": {}, "ModifyIndex": 7})"));
  CHECK_FALSE(key_of(R"({"Node": "n1", "CheckID": "c"})"));
  CHECK_FALSE(key_of(R"({"Node": "n1", "CheckID": "c", "ModifyIndex": 0})"));
  CHECK_FALSE(key_of(R"({"Node": "n1", "CheckID": "c", "ModifyIndex": -3})"));
  CHECK_FALSE(key_of(R"({"Node": "n1", "CheckID": "c", "ModifyIndex": 7.0})"));
  CHECK_FALSE(key_of(R"({"Node": "n1", "CheckID": "c", "ModifyIndex": "7"})"));
}

TEST_CASE("rare_string: one pointer, empty when all zero; copies, moves, compares and converts") {
  static_assert(sizeof(rare_string) == sizeof(void*));
  rare_string a;
  CHECK(a.empty());
  CHECK(a.size() == 0);
  CHECK(a == "");
  a = "10.0.0.1:80";
  CHECK_FALSE(a.empty());
  CHECK(a.size() == 11);
  CHECK(a == std::string("10.0.0.1:80"));
  rare_string b = a;  // a copy of its own
  a = std::string("other");
  CHECK(b == "10.0.0.1:80");
  CHECK(a == "other");
  rare_string c = std::move(b);
  CHECK(c == "10.0.0.1:80");
  CHECK(b.empty());  // NOLINT: moved-from is empty
  c = c;             // self-assignment keeps it
  CHECK(c == "10.0.0.1:80");
  std::string s;
  s = c;  // through string_view
  CHECK(s == "10.0.0.1:80");
  CHECK("tcp " + c + "!" == "tcp 10.0.0.1:80!");
  c = "";
  CHECK(c.empty());
  a.clear();
  CHECK(a.empty());
  CHECK(a == c);
}

TEST_CASE_TEMPLATE("compact_string: up to Bytes - 1 bytes inline, longer on the heap; every length round-trips",
                   S, rare_string, name_string) {
  // A NUL and a high byte; long enough that half of it is on the heap for both widths.
  constexpr char raw[] = "p\0assing\xff-critical-maintenance-warning-passing";
  const std::string bytes(raw, sizeof raw - 1);
  for (std::size_t n = 0; n <= bytes.size(); ++n) {
    CAPTURE(n);
    const std::string_view want(bytes.data(), n);
    S a(want);
    // Up to Bytes - 1 bytes the string's bytes are inside the object, longer ones are not.
    auto inside = [](const S& s) {
      auto* p = reinterpret_cast<const unsigned char*>(s.view().data());
      auto* o = reinterpret_cast<const unsigned char*>(&s);
      return std::less_equal<>()(o, p) && std::less<>()(p, o + sizeof s);
    };
    CHECK(inside(a) == (n > 0 && n <= S::inline_capacity));
    CHECK(a.size() == n);
    CHECK(a.view() == want);
    CHECK(a.empty() == (n == 0));
    S copy = a;
    CHECK(copy == a);
    S moved = std::move(copy);
    CHECK(moved.view() == want);
    CHECK(copy.empty());  // NOLINT: moved-from is empty
    // Assigned from a view of its own bytes (inline ones too): the new value is built first.
    a = a.view().substr(n / 2);
    CHECK(a.view() == want.substr(n / 2));
    a = moved.view();
    CHECK(a == moved);
    // Across the inline bound in both directions, with no stale length or bytes.
    S b("longer than any inline string");
    b = want;
    CHECK(b.view() == want);
    b = "longer than any inline string";
    CHECK(b == "longer than any inline string");
    b = want;
    CHECK(b.view() == want);
    // Move assignment in the four combinations of inline and heap: a swap, no leak (ASan).
    for (std::string_view other : {std::string_view("ok"), std::string_view("a value of the heap kind!")}) {
      S target(other), source(want);
      target = std::move(source);
      CHECK(target.view() == want);
      CHECK(source.view() == other);  // NOLINT: moved-from holds the target's old value
    }
    S self(want);
    auto& alias = self;
    self = std::move(alias);
    CHECK(self.view() == want);
  }
  S cleared("some value that is long enough");
  cleared = {};  // as for std::string: empty, no null strlen
  CHECK(cleared.empty());
  S status("passing"), kind("http"), method("GET");
  CHECK(status == "passing");
  CHECK(kind.size() == 4);
  CHECK(method.view() == "GET");
  CHECK((status <=> S("warning")) < 0);
  CHECK((S("critical-for-a-long-while") <=> S("crit")) > 0);  // heap against inline
  CHECK("node " + S("web-01") == "node web-01");
}

TEST_CASE("extra_members: none is empty, copies are deep, members added and read as in an object") {
  extra_members none;
  CHECK(none.empty());
  CHECK(none.members() == nullptr);
  CHECK(none.if_contains("X") == nullptr);
  CHECK_THROWS_AS(none.at("X"), std::out_of_range);
  CHECK(none.object().empty());
  extra_members empty;
  empty = json::object();
  CHECK(empty.members() == nullptr);  // an empty object holds nothing
  CHECK(empty == none);
  extra_members a;
  a["ExposedPort"] = 8080;
  CHECK_FALSE(a.empty());
  CHECK(a.at("ExposedPort") == 8080);
  CHECK_FALSE(a == none);
  extra_members b = a;
  CHECK(b == a);
  b["ExposedPort"] = 9090;  // b's own object
  CHECK(a.at("ExposedPort") == 8080);
  CHECK_FALSE(b == a);
  b = a;
  CHECK(b == a);
  extra_members c = std::move(b);
  CHECK(c == a);
  auto o = c.object();
  o["More"] = true;  // a copy: c is unchanged
  CHECK(c.if_contains("More") == nullptr);
  c = none;  // copied from none: none again
  CHECK(c.members() == nullptr);
  // Compared as json::object compares: the same members in another order are equal.
  extra_members x, y;
  x = json::parse(R"({"A": 1, "B": [2]})").as_object();
  y = json::parse(R"({"B": [2], "A": 1})").as_object();
  CHECK(x == y);
  // A check's unmodelled members and a Definition's round-trip through JSON.
  auto v = json::parse(R"({"Node": "n", "CheckID": "c", "Status": "passing", "ExposedPort": 21500,
                           "Definition": {"HTTP": "http://h/", "Future": [1, "x"]}})");
  auto check = json::value_to<health_check>(v);
  CHECK(check.extra.at("ExposedPort") == 21500);
  CHECK(check.definition.extra.at("Future") == json::parse(R"([1, "x"])"));
  auto back = json::value_from(check).as_object();
  CHECK(back.at("ExposedPort") == 21500);
  CHECK(back.at("Definition").as_object().at("Future") == json::parse(R"([1, "x"])"));
  CHECK(json::value_to<health_check>(json::value(back)) == check);
  auto plain = json::value_to<health_check>(json::parse(R"({"Node": "n", "CheckID": "c"})"));
  CHECK(plain.extra.members() == nullptr);
  CHECK(plain.definition.extra.members() == nullptr);
}

TEST_CASE("the rarely set members (rare_string) decode and encode as strings did") {
  auto v = json::parse(R"({
    "Node": "n", "CheckID": "c", "Status": "critical", "Notes": "runbook: x", "Output": "",
    "ServiceID": "", "ServiceName": "web",
    "Definition": {"TCP": "10.0.0.1:80", "TCPUseTLS": true, "TLSServerName": "svc",
                   "Body": "", "GRPC": null, "UDP": "10.0.0.1:53", "H2PING": "h:1",
                   "H2PingUseTLS": false, "OSService": "sshd", "DockerContainerID": "d",
                   "AliasNode": "an", "AliasService": "as"}
  })");
  auto c = json::value_to<health_check>(v);
  CHECK(c.notes == "runbook: x");
  CHECK(c.service_name == "web");
  CHECK(c.definition.tcp == "10.0.0.1:80");
  CHECK(c.definition.tcp_use_tls);
  CHECK(c.definition.tls_server_name == "svc");
  CHECK(c.definition.body.empty());
  CHECK(c.definition.grpc.empty());
  CHECK(c.definition.udp == "10.0.0.1:53");
  CHECK(c.definition.h2ping == "h:1");
  CHECK_FALSE(c.definition.h2ping_use_tls);
  CHECK(c.definition.os_service == "sshd");
  CHECK(c.definition.docker_container_id == "d");
  CHECK(c.definition.alias_node == "an");
  CHECK(c.definition.alias_service == "as");
  auto back = json::value_from(c).as_object();
  CHECK(back.at("Notes") == "runbook: x");
  CHECK(back.at("ServiceName") == "web");
  auto& d = back.at("Definition").as_object();
  CHECK(d.at("TCP") == "10.0.0.1:80");
  CHECK(d.at("TLSServerName") == "svc");
  CHECK_FALSE(d.contains("Body"));  // empty: left out, as before
  CHECK(json::value_to<health_check>(json::value(back)) == c);
  // A member of the wrong type fails as it did with std::string members.
  auto bad = json::parse(R"({"Node": "n", "CheckID": "c", "Notes": 5})");
  CHECK_THROWS(json::value_to<health_check>(bad));
  auto bad_def = json::parse(R"({"Node": "n", "CheckID": "c", "Definition": {"TCP": []}})");
  CHECK_THROWS(json::value_to<health_check>(bad_def));
}
