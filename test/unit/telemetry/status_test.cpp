// The admin server's decisions and bodies (lib/esm/telemetry/status_json.hpp, status_page.hpp)
// from a hand-filled status registry: readiness, liveness, the /v1/status and /debug bodies,
// and the page's escaping and order. No network: the check engine is built but never run.
#include <doctest/doctest.h>

#include <cstdio>

#include <boost/asio/io_context.hpp>
#include <boost/json/parse.hpp>

#include "esm/checks/engine.hpp"
#include "esm/probe/probe.hpp"
#include "esm/telemetry/status_json.hpp"
#include "esm/telemetry/status_page.hpp"

using namespace std::chrono_literals;
namespace telemetry = esm::telemetry;
using esm::daemon::daemon_status;
using esm::daemon::phase;
using steady = std::chrono::steady_clock;

namespace {

// A registry of a running, registered instance with a share and a fresh Consul answer.
struct ready_status {
  steady::time_point now = steady::now();
  esm::consul::client_stats consul;
  daemon_status st;
  ready_status() {
    st.state = phase::running;
    st.instance_id = "esm-1";
    consul.last_answer = now - 1s;
    consul.last_ok = now - 1s;
    st.consul = &consul;
    st.instance.membership.registered = true;
    st.worker.assignments = 1;
    st.worker.assigned = true;
    st.heartbeat = now;
  }
};

esm::consul::health_check check(std::string node, std::string id, std::string status, std::string output) {
  esm::consul::health_check c;
  c.node = std::move(node);
  c.check_id = std::move(id);
  c.name = c.check_id + " name";
  c.status = std::move(status);
  c.output = std::move(output);
  c.type = "http";
  c.definition.http = "http://127.0.0.1:1/";
  c.definition.interval = 10s;
  c.definition.timeout = 1s;
  c.modify_index = 5;
  return c;
}

}  // namespace

TEST_CASE("readiness: ready only while running, Consul answers, registered and with a share") {
  ready_status r;
  auto a = telemetry::readiness(r.st, r.now);
  CHECK(a.ok);
  CHECK(a.reason.empty());

  SUBCASE("starting") {
    r.st.state = phase::starting;
    a = telemetry::readiness(r.st, r.now);
    CHECK_FALSE(a.ok);
    CHECK(a.reason == "esmd is starting");
  }
  SUBCASE("stopping") {
    r.st.state = phase::stopping;
    CHECK(telemetry::readiness(r.st, r.now).reason == "esmd is stopping");
  }
  SUBCASE("no client yet") {
    r.st.consul = nullptr;
    CHECK(telemetry::readiness(r.st, r.now).reason == "Consul has not answered yet");
  }
  SUBCASE("Consul never answered: the last error is named") {
    r.consul.last_answer.reset();
    r.consul.last_ok.reset();
    r.consul.last_failure = r.now - 2s;
    r.consul.last_error = "connection refused";
    a = telemetry::readiness(r.st, r.now);
    CHECK_FALSE(a.ok);
    CHECK(a.reason == "Consul has not answered yet: connection refused");
  }
  SUBCASE("a failure after the last answer") {
    r.consul.last_failure = r.now - 500ms;
    r.consul.last_error = "timed out";
    a = telemetry::readiness(r.st, r.now);
    CHECK_FALSE(a.ok);
    CHECK(a.reason == "the last request to Consul failed: timed out");
  }
  SUBCASE("a failure before the last answer does not matter") {
    r.consul.last_failure = r.now - 5s;
    CHECK(telemetry::readiness(r.st, r.now).ok);
  }
  SUBCASE("an answer older than the freshness bound") {
    r.consul.last_answer = r.now - 31s;
    r.consul.last_ok = r.now - 31s;
    a = telemetry::readiness(r.st, r.now);
    CHECK_FALSE(a.ok);
    CHECK(a.reason == "Consul has not answered for 31s");
    CHECK(telemetry::readiness(r.st, r.now, 60s).ok);
  }
  SUBCASE("403 (ACL denied) or 500 (no leader) to every request is no answer") {
    r.consul.last_ok.reset();
    r.consul.errors = 5;
    r.consul.last_error = "403 Permission denied";
    a = telemetry::readiness(r.st, r.now);
    CHECK_FALSE(a.ok);
    CHECK(a.reason == "Consul answers only with errors: 403 Permission denied");
  }
  SUBCASE("error answers since the last success: ready until the window ends") {
    r.consul.last_ok = r.now - 20s;
    r.consul.last_error = "500 No cluster leader";
    CHECK(telemetry::readiness(r.st, r.now).ok);  // one 500 does not flap readiness
    r.consul.last_ok = r.now - 40s;
    a = telemetry::readiness(r.st, r.now);
    CHECK_FALSE(a.ok);
    CHECK(a.reason == "Consul has answered only with errors for 40s: 500 No cluster leader");
  }
  SUBCASE("a failure after an error answer, before it a success") {
    r.consul.last_ok = r.now - 3s;
    r.consul.last_failure = r.now - 2s;
    r.consul.last_error = "connection reset";
    CHECK(telemetry::readiness(r.st, r.now).reason == "the last request to Consul failed: connection reset");
  }
  SUBCASE("the freshness window exceeds the blocking wait") {
    CHECK(telemetry::consul_fresh_for(5s) == 30s);
    CHECK(telemetry::consul_fresh_for(45s) == 52'812ms);  // 45 s * 17/16 + 5 s
    CHECK(telemetry::consul_fresh_for(10min) == 642'500ms);
    // A quiet share: a blocking query answered 50 s ago with the default 45 s wait.
    r.consul.last_ok = r.consul.last_answer = r.now - 50s;
    CHECK(telemetry::readiness(r.st, r.now, telemetry::consul_fresh_for(45s)).ok);
  }
  SUBCASE("not registered") {
    r.st.instance.membership.registered = false;
    CHECK(telemetry::readiness(r.st, r.now).reason == "this instance is not registered in Consul");
  }
  SUBCASE("no share yet") {
    r.st.worker.assignments = 0;
    CHECK(telemetry::readiness(r.st, r.now).reason == "no share received from the leader yet");
  }
  SUBCASE("the own assignment key is absent: applied as empty, but no leader assigned a share") {
    r.st.worker.assigned = false;  // assignments is 1: the absent key was applied
    CHECK_FALSE(telemetry::readiness(r.st, r.now).ok);
    CHECK(telemetry::readiness(r.st, r.now).reason == "no share assigned: this instance's assignment key is absent");
  }
}

TEST_CASE("liveness: a stale heartbeat or a stall that just ended") {
  ready_status r;
  CHECK(telemetry::liveness(r.st, std::nullopt, r.now + 4s, 5s).ok);
  auto a = telemetry::liveness(r.st, std::nullopt, r.now + 7s, 5s);
  CHECK_FALSE(a.ok);
  CHECK(a.reason == "event loop stalled: no heartbeat for 7s");

  // The heartbeat ran right after a stall of 8 s: remembered for one threshold.
  telemetry::loop_stall stall{r.now, 8s};
  a = telemetry::liveness(r.st, stall, r.now + 1s, 5s);
  CHECK_FALSE(a.ok);
  CHECK(a.reason == "event loop stalled for 8s, 1s ago");
  r.st.heartbeat = r.now + 5s;
  CHECK(telemetry::liveness(r.st, stall, r.now + 6s, 5s).ok);
  // A gap under the threshold is no stall.
  CHECK(telemetry::liveness(r.st, telemetry::loop_stall{r.now + 5s, 3s}, r.now + 5s, 5s).ok);
}

TEST_CASE("age_text") {
  CHECK(telemetry::age_text(0s) == "0s");
  CHECK(telemetry::age_text(-3s) == "0s");
  CHECK(telemetry::age_text(59s) == "59s");
  CHECK(telemetry::age_text(90s) == "1m30s");
  CHECK(telemetry::age_text(2h + 3min + 4s) == "2h3m");
  CHECK(telemetry::age_text(50h) == "2d2h");
}

TEST_CASE("status JSON of a registry without parts") {
  daemon_status st;
  st.instance_id = "esm-\"1\"";
  st.agentless = true;
  st.version = "0.1.0";
  st.consul_version = "1.21.0";
  auto now = steady::now();
  auto v = boost::json::parse(telemetry::status_json(st, now));
  auto& o = v.as_object();
  CHECK(o.at("instance_id").as_string() == "esm-\"1\"");
  CHECK(o.at("mode").as_string() == "agentless");
  CHECK(o.at("phase").as_string() == "starting");
  CHECK(o.at("ready").as_bool() == false);
  CHECK(o.at("ready_reason").as_string() == "esmd is starting");
  CHECK(o.at("leader").as_bool() == false);
  CHECK(o.at("healthy_instances").is_null());
  CHECK(o.at("checks").at("available").as_bool() == false);
  CHECK(o.at("checks").at("total").to_number<std::int64_t>() == 0);
  CHECK(o.at("checks").at("by_status").at("critical").to_number<std::int64_t>() == 0);
  CHECK(o.at("probes").at("available").as_bool() == false);
  CHECK(o.at("consul").at("available").as_bool() == false);
  CHECK(o.at("version").as_string() == "0.1.0");
  CHECK(o.at("consul_version").as_string() == "1.21.0");

  auto d = boost::json::parse(telemetry::debug_checks_json(st, now));
  CHECK(d.at("checks").as_array().empty());
  auto n = boost::json::parse(telemetry::debug_nodes_json(st));
  CHECK(n.at("nodes").as_array().empty());
}

TEST_CASE("status JSON of a leading instance with checks, probes and a Consul error") {
  ready_status r;
  r.st.instance.election.is_leader = true;
  r.st.leader.instances = 3;
  r.st.leader.nodes = 12;
  r.st.worker.current.nodes = {"n1", "n2"};
  r.st.worker.current.probes = {"p1"};
  r.st.worker.checks = 3;
  r.consul.requests = 10;
  r.consul.errors = 1;
  r.consul.last_error = "500 Internal Server Error";
  esm::ping::prober_stats ps;
  ps.nodes = 1;
  ps.dead = 1;
  ps.unavailable = "no permission to open an ICMP socket";
  r.st.prober = &ps;

  boost::asio::io_context io;
  esm::probe::probe_context probes;
  esm::checks::check_engine engine(io.get_executor(), nullptr, probes, {});
  engine.on_checks(esm::sharding::make_shared_checks({check("n2", "web", "passing", "HTTP GET: 200 OK"),
                    check("n1", "api", "critical", "connection <refused>"),
                    check("n1", "db", "warning", "slow")}));
  r.st.checks = &engine;
  r.st.engine = &engine.stats();

  auto v = boost::json::parse(telemetry::status_json(r.st, r.now));
  auto& o = v.as_object();
  CHECK(o.at("ready").as_bool());
  CHECK(o.at("leader").as_bool());
  CHECK(o.at("healthy_instances").to_number<std::int64_t>() == 3);
  CHECK(o.at("leading").at("nodes").to_number<std::int64_t>() == 12);
  CHECK(o.at("share").at("nodes").to_number<std::int64_t>() == 2);
  CHECK(o.at("share").at("probes").to_number<std::int64_t>() == 1);
  CHECK(o.at("share").at("checks").to_number<std::int64_t>() == 3);
  auto& c = o.at("checks").as_object();
  CHECK(c.at("total").to_number<std::int64_t>() == 3);
  CHECK(c.at("by_status").at("critical").to_number<std::int64_t>() == 1);
  CHECK(c.at("by_status").at("warning").to_number<std::int64_t>() == 1);
  CHECK(c.at("by_status").at("passing").to_number<std::int64_t>() == 1);
  CHECK(c.at("by_type").at("http").to_number<std::int64_t>() == 3);
  CHECK(o.at("probes").at("unavailable").as_string() == "no permission to open an ICMP socket");
  CHECK(o.at("consul").at("last_error").as_string() == "500 Internal Server Error");
  CHECK(o.at("consul").at("last_answer_seconds_ago").as_double() == doctest::Approx(1.0).epsilon(0.01));

  // /debug/checks: failing first (critical, warning, passing), with their outputs.
  auto d = boost::json::parse(telemetry::debug_checks_json(r.st, r.now));
  CHECK(d.at("total").to_number<int>() == 3);
  CHECK(d.at("offset").to_number<int>() == 0);
  CHECK(d.at("limit").to_number<int>() == 1000);
  auto& a = d.at("checks").as_array();
  REQUIRE(a.size() == 3);
  CHECK(a[0].at("check_id").as_string() == "api");
  CHECK(a[0].at("status").as_string() == "critical");
  CHECK(a[0].at("output").as_string() == "connection <refused>");
  CHECK(a[0].at("type").as_string() == "http");
  CHECK(a[0].at("consecutive_failures").is_number());
  CHECK(a[1].at("check_id").as_string() == "db");
  CHECK(a[2].at("check_id").as_string() == "web");
  // /v1/status counts the checks and carries none of their outputs.
  auto body = telemetry::status_json(r.st, r.now);
  CHECK(body.find("connection <refused>") == std::string::npos);
  CHECK(body.find("HTTP GET: 200 OK") == std::string::npos);

  // A page of /debug/checks: the rows from offset, the total of all.
  auto p = boost::json::parse(telemetry::debug_checks_json(r.st, r.now, 1, 1));
  CHECK(p.at("total").to_number<int>() == 3);
  CHECK(p.at("offset").to_number<int>() == 1);
  CHECK(p.at("limit").to_number<int>() == 1);
  REQUIRE(p.at("checks").as_array().size() == 1);
  CHECK(p.at("checks").as_array()[0].at("check_id").as_string() == "db");
  auto past = boost::json::parse(telemetry::debug_checks_json(r.st, r.now, 5, 10));
  CHECK(past.at("total").to_number<int>() == 3);
  CHECK(past.at("checks").as_array().empty());
  CHECK(boost::json::parse(telemetry::debug_checks_json(r.st, r.now, 0, 0)).at("checks").as_array().empty());
}

TEST_CASE("a large engine: counted in place, the page and /debug pages chosen by a bounded selection") {
  // 20 000 checks held by a real engine (never run): 1 in 7 critical, 1 in 11 warning, each
  // with an output of 1 KiB. The answers must be right; the times are printed, not asserted.
  constexpr int n = 20'000;
  ready_status r;
  boost::asio::io_context io;
  esm::probe::probe_context probes;
  esm::checks::check_engine engine(io.get_executor(), nullptr, probes, {});
  std::vector<esm::consul::health_check> all;
  all.reserve(n);
  int critical = 0, warning = 0;
  for (int i = 0; i < n; ++i) {
    std::string status = i % 7 == 0 ? "critical" : i % 11 == 0 ? "warning" : "passing";
    critical += status == "critical";
    warning += status == "warning";
    char node[32];
    std::snprintf(node, sizeof node, "node-%05d", n - 1 - i);  // visited in no useful order
    all.push_back(check(node, "c", status, std::string(1024, 'o')));
  }
  engine.on_checks(esm::sharding::make_shared_checks(std::move(all)));
  r.st.checks = &engine;
  r.st.engine = &engine.stats();
  REQUIRE(engine.size() == n);
  auto timed = [](std::string what, auto f) {
    auto start = steady::now();
    auto v = f();
    MESSAGE(what << ": " << std::chrono::duration<double, std::milli>(steady::now() - start).count() << " ms");
    return v;
  };

  auto v = boost::json::parse(timed("/v1/status of 20 000 checks", [&] { return telemetry::status_json(r.st, r.now); }));
  auto& c = v.at("checks");
  CHECK(c.at("total").to_number<int>() == n);
  CHECK(c.at("by_status").at("critical").to_number<int>() == critical);
  CHECK(c.at("by_status").at("warning").to_number<int>() == warning);
  CHECK(c.at("by_status").at("passing").to_number<int>() == n - critical - warning);
  CHECK(c.at("by_type").at("http").to_number<int>() == n);

  auto sel = timed("the page's 500 rows of 20 000", [&] { return telemetry::select_checks(r.st, 0, 500, false); });
  CHECK(sel.counts.total == n);
  REQUIRE(sel.rows.size() == 500);
  // Critical first (critical > 500 here), by node; no output copied.
  for (std::size_t i = 0; i < sel.rows.size(); ++i) {
    CHECK(sel.rows[i].status == "critical");
    CHECK(sel.rows[i].output.empty());
    if (i > 0) CHECK(sel.rows[i - 1].node < sel.rows[i].node);
  }
  // The same order as the whole sort, and pages that join up.
  auto every = timed("every row of 20 000 (collect_checks)", [&] { return telemetry::collect_checks(r.st); });
  REQUIRE(every.size() == static_cast<std::size_t>(n));
  for (std::size_t i = 0; i < 500; ++i) CHECK(every[i].node == sel.rows[i].node);
  CHECK(every[critical].status == "warning");
  CHECK(every[critical + warning].status == "passing");
  auto page = boost::json::parse(timed("/debug/checks?offset=2850&limit=1000", [&] {
    return telemetry::debug_checks_json(r.st, r.now, 2850, 1000);
  }));
  auto& rows = page.at("checks").as_array();
  CHECK(page.at("total").to_number<int>() == n);
  REQUIRE(rows.size() == 1000);
  for (std::size_t i = 0; i < rows.size(); ++i) {
    CHECK(rows[i].at("node").as_string() == every[2850 + i].node);
    CHECK(rows[i].at("status").as_string() == every[2850 + i].status);
  }
  CHECK(rows[0].at("output").as_string().size() == 1024);

  telemetry::page_limits limits;
  auto live = telemetry::probe_answer{true, {}};
  auto html = timed("the status page of 20 000 checks", [&] {
    return telemetry::status_page(r.st, r.now, live, telemetry::readiness(r.st, r.now), limits);
  });
  CHECK(html.find(std::to_string(n - 500) + " more checks not listed") != std::string::npos);
  CHECK(html.find(std::string(1024, 'o')) == std::string::npos);  // outputs off by default
  CHECK(html.find(every[0].node) != std::string::npos);
}

TEST_CASE("html_escape") {
  CHECK(telemetry::html_escape("plain") == "plain");
  CHECK(telemetry::html_escape("<script>alert('x&y')</script>\"") ==
        "&lt;script&gt;alert(&#39;x&amp;y&#39;)&lt;/script&gt;&quot;");
  CHECK(telemetry::html_escape("") == "");
}

TEST_CASE("status page: escaped, failing checks first with their outputs, no external assets") {
  ready_status r;
  r.st.instance_id = "esm<b>1</b>";
  esm::ping::prober_stats ps;
  ps.unavailable = "ping_type udp needs <net.ipv4.ping_group_range>";
  r.st.prober = &ps;
  boost::asio::io_context io;
  esm::probe::probe_context probes;
  esm::checks::check_engine engine(io.get_executor(), nullptr, probes, {});
  engine.on_checks(esm::sharding::make_shared_checks({check("n2", "web", "passing", "all good"),
                    check("n1", "api", "critical", "<img src=x onerror=alert(1)> refused")}));
  r.st.checks = &engine;
  auto live = telemetry::probe_answer{true, {}};
  auto ready = telemetry::readiness(r.st, r.now);
  telemetry::page_limits with_outputs;
  with_outputs.show_outputs = true;  // enable_debug
  auto html = telemetry::status_page(r.st, r.now, live, ready, with_outputs);

  CHECK(html.starts_with("<!DOCTYPE html>"));
  CHECK(html.find("<title>esmd esm&lt;b&gt;1&lt;/b&gt;</title>") != std::string::npos);
  CHECK(html.find("<b>1</b>") == std::string::npos);
  CHECK(html.find("<img") == std::string::npos);
  auto failing = html.find("&lt;img src=x onerror=alert(1)&gt; refused");
  auto passing = html.find("all good");
  REQUIRE(failing != std::string::npos);
  REQUIRE(passing != std::string::npos);
  CHECK(failing < passing);
  CHECK(html.find("ping_type udp needs &lt;net.ipv4.ping_group_range&gt;") != std::string::npos);
  CHECK(html.find("follower") != std::string::npos);
  // Nothing the browser would fetch: no script, no external stylesheet, image or icon.
  CHECK(html.find("<script") == std::string::npos);
  CHECK(html.find("src=\"http") == std::string::npos);
  CHECK(html.find("href=\"http") == std::string::npos);
  CHECK(html.find("<link rel=\"icon\" href=\"data:,\">") != std::string::npos);

  SUBCASE("without enable_debug: the rows and statuses, no output") {
    auto plain = telemetry::status_page(r.st, r.now, live, ready);
    CHECK(plain.find("refused") == std::string::npos);
    CHECK(plain.find("all good") == std::string::npos);
    CHECK(plain.find("<th>Output</th>") == std::string::npos);
    CHECK(plain.find("api name") != std::string::npos);
    CHECK(plain.find("web name") != std::string::npos);
    CHECK(plain.find("badge critical") < plain.find("badge passing"));
    CHECK(plain.find("Check outputs are shown with <code>enable_debug</code>") != std::string::npos);
  }
  SUBCASE("outputs are cut and rows bounded") {
    auto big = check("n1", "api", "critical", std::string(10'000, 'x'));
    big.modify_index = 6;  // a newer catalog copy replaces the engine's
    engine.on_checks(esm::sharding::make_shared_checks({big}));
    telemetry::page_limits limits;
    limits.show_outputs = true;
    limits.max_output_bytes = 100;
    auto cut = telemetry::status_page(r.st, r.now, live, ready, limits);
    CHECK(cut.find(std::string(100, 'x') + "…") != std::string::npos);
    CHECK(cut.find(std::string(101, 'x')) == std::string::npos);
  }
}
