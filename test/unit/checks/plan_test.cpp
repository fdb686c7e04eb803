// Mapping catalog health checks onto probe plans (reference §6.2, §6.4).
#include <doctest/doctest.h>

#include <memory>

#include <boost/json/value.hpp>

#include "esm/checks/engine.hpp"
#include "esm/checks/plan.hpp"
#include "esm/checks/slot.hpp"

using namespace esm::checks;
using namespace std::chrono_literals;
using esm::consul::health_check;

namespace {

health_check http_check(std::string url) {
  health_check c;
  c.node = "n1";
  c.check_id = "web";
  c.definition.http = std::move(url);
  return c;
}

}  // namespace

TEST_CASE("HTTP definition: every field Consul's HTTP check uses is carried") {
  auto c = http_check("https://10.0.0.1/health");
  c.definition.method = "POST";
  c.definition.header = {{"X-A", {"1", "2"}}};
  c.definition.body = "{}";
  c.definition.tls_server_name = "svc.example";
  c.definition.tls_skip_verify = true;
  c.definition.disable_redirects = true;
  c.definition.interval = 15s;
  c.definition.timeout = 2s;
  auto r = plan_check(c, plan_settings{});
  REQUIRE(std::holds_alternative<check_plan>(r));
  auto& p = std::get<check_plan>(r);
  auto& h = std::get<esm::probe::http_spec>(p.spec);
  CHECK(h.url == "https://10.0.0.1/health");
  CHECK(h.method == "POST");
  CHECK(h.headers.values("X-A") == std::vector<std::string>{"1", "2"});
  CHECK(h.body == "{}");
  CHECK(h.tls_server_name == "svc.example");
  CHECK(h.tls_skip_verify);
  CHECK(h.disable_redirects);
  CHECK(h.timeout == 2s);
  CHECK(p.interval == 15s);
  CHECK(p.timeout == 2s);
  CHECK_FALSE(p.interval_raised);
}

TEST_CASE("interval: 30 s when unset, raised to min_check_interval when below") {
  plan_settings s;
  s.min_interval = 1s;
  auto c = http_check("http://127.0.0.1/");
  auto p = std::get<check_plan>(plan_check(c, s));
  CHECK(p.interval == 30s);
  CHECK(p.timeout == 10s);  // Consul's default timeout
  c.definition.interval = 200ms;
  p = std::get<check_plan>(plan_check(c, s));
  CHECK(p.interval == 1s);
  CHECK(p.interval_raised);
  s.min_interval = 100ms;
  p = std::get<check_plan>(plan_check(c, s));
  CHECK(p.interval == 200ms);
  CHECK_FALSE(p.interval_raised);
}

TEST_CASE("TCP with TLS, UDP, gRPC with TLS and H2PING map to their probes") {
  health_check c;
  c.definition.tcp = "127.0.0.1:443";
  c.definition.tcp_use_tls = true;
  c.definition.tls_server_name = "x";
  auto t = std::get<esm::probe::tcp_spec>(std::get<check_plan>(plan_check(c, {})).spec);
  CHECK(t.address == "127.0.0.1:443");
  CHECK(t.use_tls);
  CHECK(t.tls_server_name == "x");

  health_check u;
  u.definition.udp = "127.0.0.1:53";
  CHECK(std::get<esm::probe::udp_spec>(std::get<check_plan>(plan_check(u, {})).spec).address ==
        "127.0.0.1:53");

  health_check g;
  g.definition.grpc = "127.0.0.1:50051/my.Service";
  g.definition.grpc_use_tls = true;
  auto gs = std::get<esm::probe::grpc_spec>(std::get<check_plan>(plan_check(g, {})).spec);
  CHECK(gs.target == "127.0.0.1:50051/my.Service");
  CHECK(gs.use_tls);

  health_check h;
  h.definition.h2ping = "127.0.0.1:8443";
  auto hs = std::get<esm::probe::h2ping_spec>(std::get<check_plan>(plan_check(h, {})).spec);
  CHECK(hs.use_tls);  // Consul's default H2PingUseTLS
  h.definition.h2ping_use_tls = false;
  hs = std::get<esm::probe::h2ping_spec>(std::get<check_plan>(plan_check(h, {})).spec);
  CHECK_FALSE(hs.use_tls);
}

TEST_CASE("script, docker, OSService, alias, TTL and empty definitions are not run, with a reason") {
  health_check s;
  s.definition.script_args = {"/bin/true"};
  auto r = plan_check(s, {});
  REQUIRE(std::holds_alternative<std::string>(r));
  CHECK(std::get<std::string>(r).find("script") != std::string::npos);

  health_check ttl;
  ttl.definition.ttl = 30s;
  ttl.definition.http = "http://127.0.0.1/";  // TTL wins, as in Consul
  CHECK(std::get<std::string>(plan_check(ttl, {})).find("ttl") != std::string::npos);

  health_check d;
  d.definition.docker_container_id = "abc";
  CHECK(std::holds_alternative<std::string>(plan_check(d, {})));
  health_check o;
  o.definition.os_service = "sshd";
  CHECK(std::holds_alternative<std::string>(plan_check(o, {})));
  health_check a;
  a.definition.alias_service = "web";
  CHECK(std::holds_alternative<std::string>(plan_check(a, {})));
  health_check none;
  CHECK(std::get<std::string>(plan_check(none, {})).find("no HTTP") != std::string::npos);
}

TEST_CASE("per-check thresholds from the definition override the global keys; legacy ignores them") {
  auto c = http_check("http://127.0.0.1/");
  c.definition.extra["SuccessBeforePassing"] = 4;
  c.definition.extra["FailuresBeforeCritical"] = 5;
  c.definition.extra["FailuresBeforeWarning"] = 2;
  plan_settings s;
  s.passing_threshold = 1;
  s.critical_threshold = 3;
  auto p = std::get<check_plan>(plan_check(c, s));
  CHECK(p.limits.success_before_passing == 4);
  CHECK(p.limits.failures_before_critical == 5);
  CHECK(p.limits.failures_before_warning == 2);
  s.legacy_thresholds = true;
  p = std::get<check_plan>(plan_check(c, s));
  CHECK(p.limits.success_before_passing == 1);
  CHECK(p.limits.failures_before_critical == 3);
  CHECK(p.limits.failures_before_warning == 3);
  // Garbage in the definition is ignored, not a crash.
  c.definition.extra["SuccessBeforePassing"] = "many";
  s.legacy_thresholds = false;
  p = std::get<check_plan>(plan_check(c, s));
  CHECK(p.limits.success_before_passing == 1);
}

TEST_CASE("equal definitions give equal plans; any probe field change gives a different plan") {
  auto a = http_check("http://127.0.0.1/a");
  auto b = a;
  b.status = "critical";  // status and output are not part of the plan
  b.output = "x";
  b.modify_index = 99;
  CHECK(std::get<check_plan>(plan_check(a, {})) == std::get<check_plan>(plan_check(b, {})));
  b.definition.header = {{"X", {"y"}}};
  CHECK_FALSE(std::get<check_plan>(plan_check(a, {})) == std::get<check_plan>(plan_check(b, {})));
  auto c = a;
  c.definition.interval = 11s;
  CHECK_FALSE(std::get<check_plan>(plan_check(a, {})) == std::get<check_plan>(plan_check(c, {})));
}

TEST_CASE("definition_lost: a probe field the stored copy lacks (Consul's txn endpoint before 1.1x)") {
  esm::consul::check_definition had;
  had.grpc = "10.0.0.1:50051";
  had.grpc_use_tls = true;
  had.interval = 10s;
  auto got = had;
  CHECK_FALSE(esm::checks::definition_lost(had, got));
  got.grpc.clear();
  got.grpc_use_tls = false;
  CHECK(esm::checks::definition_lost(had, got));
  esm::consul::check_definition http;
  http.http = "http://10.0.0.1/";
  http.header = {{"X", {"1"}}};
  auto kept = http;
  kept.extra["Extra"] = 1;  // members the engine does not model do not count
  CHECK_FALSE(esm::checks::definition_lost(http, kept));
  auto no_header = http;
  no_header.header = {};
  CHECK(esm::checks::definition_lost(http, no_header));
  esm::consul::check_definition tls;
  tls.tcp = "10.0.0.1:443";
  tls.tcp_use_tls = true;
  auto plain = tls;
  plain.tcp_use_tls = false;
  CHECK(esm::checks::definition_lost(tls, plain));
}

TEST_CASE("a definition with a duration that does not parse is not run, and names the member") {
  auto c = http_check("http://127.0.0.1/");
  c.definition.extra["Interval"] = "10$";  // where the client keeps what it could not parse
  auto r = plan_check(c, {});
  REQUIRE(std::holds_alternative<std::string>(r));
  CHECK(std::get<std::string>(r) == "check definition has an invalid Interval (\"10$\"); it is not run");
}

TEST_CASE("plan_run is plan_check without the strings; spec_of builds the same probe_spec") {
  auto c = http_check("https://10.0.0.1/health");
  c.definition.method = "POST";
  c.definition.header = {{"X-A", {"1"}}};
  c.definition.body = "{}";
  c.definition.tls_server_name = "svc";
  c.definition.interval = 5s;
  c.definition.timeout = 2s;
  health_check t;
  t.definition.tcp = "10.0.0.1:443";
  t.definition.tcp_use_tls = true;
  health_check u;
  u.definition.udp = "10.0.0.1:53";
  health_check g;
  g.definition.grpc = "10.0.0.1:50051";
  health_check h;
  h.definition.h2ping = "10.0.0.1:8443";
  std::uint8_t kind = 0;
  for (const auto* check : {&c, &t, &u, &g, &h}) {
    auto full = std::get<check_plan>(plan_check(*check, {}));
    auto lean = std::get<run_plan>(plan_run(*check, {}));
    CHECK(lean.kind == kind++);
    CHECK(lean.kind == full.spec.index());
    CHECK(lean.interval == full.interval);
    CHECK(lean.timeout == full.timeout);
    CHECK(lean.limits == full.limits);
    CHECK(lean.interval_raised == full.interval_raised);
    CHECK(spec_of(check->definition, lean) == full.spec);
  }
  // The spec owns its strings: it outlives the check it was built from.
  auto lean = std::get<run_plan>(plan_run(c, {}));
  auto spec = [&] {
    auto copy = std::make_unique<health_check>(c);
    return spec_of(copy->definition, lean);
  }();
  auto& hs = std::get<esm::probe::http_spec>(spec);
  CHECK(hs.url == "https://10.0.0.1/health");
  CHECK(hs.body == "{}");
  CHECK(hs.headers.values("X-A") == std::vector<std::string>{"1"});
  CHECK(std::holds_alternative<std::string>(plan_run(health_check{}, {})));
}

TEST_CASE("sentinel_optional: empty by default, holds what is assigned, resets, and = {} resets") {
  using esm::checks::maybe_index;
  using esm::checks::maybe_time;
  static_assert(sizeof(maybe_time) == 8 && sizeof(maybe_index) == 8);
  maybe_time t;
  CHECK_FALSE(t);
  CHECK_FALSE(t.has_value());
  auto now = std::chrono::steady_clock::now();
  t = now;
  REQUIRE(t);
  CHECK(*t == now);
  t.reset();
  CHECK_FALSE(t);
  maybe_index i;
  i = std::uint64_t{0};  // 0 is a value, not none
  REQUIRE(i.has_value());
  CHECK(*i == 0);
  i = {};
  CHECK_FALSE(i.has_value());
  i = std::uint64_t{UINT64_MAX};  // the sentinel: none (no Consul index reaches it)
  CHECK_FALSE(i.has_value());
}
