// The daemon's metrics (lib/esm/telemetry/collect.hpp) from a hand-filled status registry:
// consul-esm's names with and without metrics_prefix, the prefix filter, esmd's own metrics,
// the statsd line format (statsd.hpp), and promtool's verdict on the exposition.
#include <doctest/doctest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>

#include <boost/asio/io_context.hpp>

#include "esm/checks/engine.hpp"
#include "esm/probe/probe.hpp"
#include "esm/telemetry/collect.hpp"
#include "esm/telemetry/statsd.hpp"

using namespace esm;
using namespace esm::telemetry;

namespace {

const metric_family* find(const std::vector<metric_family>& fs, std::string_view name) {
  for (auto& f : fs)
    if (f.name == name) return &f;
  return nullptr;
}

double value_of(const std::vector<metric_family>& fs, std::string_view name) {
  auto* f = find(fs, name);
  REQUIRE_MESSAGE(f, "no family " << name);
  REQUIRE(!f->samples.empty());
  return f->samples.front().value;
}

bool contains(const std::string& hay, const std::string& needle) { return hay.find(needle) != std::string::npos; }

struct fixture {
  daemon::daemon_status st;
  checks::engine_stats engine;
  ping::prober_stats prober;
  consul::client_stats consul;
  telemetry_settings s;
  fixture() {
    st.version = "0.1.0";
    st.consul_version = "1.16.0";
    st.instance.election.is_leader = true;
    st.instance.election.leadership_changes = 3;
    st.leader.instances = 4;
    st.leader.rebalances = 7;
    st.leader.nodes_moved = 40;
    st.leader.failures = 2;
    st.leader.lease_refusals = 1;
    st.worker.nodes = 12;
    st.worker.checks = 30;
    engine.runs = 100;
    engine.transactions = 9;
    engine.stale_retries = 2;
    engine.last_batch_size = 5;
    engine.write_ops = 40;
    engine.lag.add(std::chrono::milliseconds(3));
    engine.lag.add(std::chrono::milliseconds(700));
    engine.durations.add(0, 0, std::chrono::milliseconds(20));
    engine.durations.add(1, 2, std::chrono::seconds(3));
    prober.transactions = 6;
    prober.pings = 50;
    prober.replies = 48;
    prober.lateness.add(std::chrono::milliseconds(1));
    consul.requests = 20;
    consul.failures = 1;
    consul.errors = 2;
    consul.by_endpoint[{"/v1/txn", "200"}].add(0.004);
    consul.by_endpoint[{"/v1/kv", "error"}].add(2.0);
    st.engine = &engine;
    st.prober = &prober;
    st.consul = &consul;
    s.host_name = "esm-host-1";
    s.max_concurrent_probes = 100;
  }
};

}  // namespace

TEST_CASE("consul-esm's names and values") {
  fixture f;
  auto fs = collect(f.st, f.s);
  CHECK(value_of(fs, "esm_agent_isLeader") == 1);
  CHECK(value_of(fs, "esm_agents_healthy") == 4);
  CHECK(value_of(fs, "esm_nodes_monitored") == 12);
  CHECK(value_of(fs, "esm_checks_count") == 30);  // no engine object: the worker's count
  CHECK(value_of(fs, "check_txn") == 9);
  CHECK(find(fs, "check_txn")->type == metric_type::untyped);
  CHECK(value_of(fs, "check_txn_retry") == 2);
  CHECK(value_of(fs, "check_txn_batch_size") == 5);
  CHECK(value_of(fs, "coord_txn") == 6);
  CHECK(find(fs, "esm_services_monitored"));
  CHECK(find(fs, "esm_checks_healthy"));
  CHECK(find(fs, "esm_checks_unhealthy"));

  SUBCASE("a follower shows no healthy-agents count") {
    f.st.instance.election.is_leader = false;
    auto fs2 = collect(f.st, f.s);
    CHECK(value_of(fs2, "esm_agent_isLeader") == 0);
    CHECK(value_of(fs2, "esm_agents_healthy") == 0);
  }
  SUBCASE("metrics_prefix is prepended as go-metrics' service name") {
    f.s.metrics_prefix = "consul-esm";
    auto fs2 = collect(f.st, f.s);
    CHECK(value_of(fs2, "consul_esm_esm_agent_isLeader") == 1);
    CHECK(value_of(fs2, "consul_esm_check_txn") == 9);
    CHECK_FALSE(find(fs2, "esm_agent_isLeader"));
    CHECK(find(fs2, "esmd_check_runs_total"));  // esmd's own names keep their namespace
  }
  SUBCASE("Prometheus never carries the host name") {
    for (auto& fam : fs) CHECK_FALSE(contains(fam.name, "esm_host_1"));
  }
}

TEST_CASE("esmd's own metrics") {
  fixture f;
  auto fs = collect(f.st, f.s);
  CHECK(value_of(fs, "esmd_check_runs_total") == 100);
  CHECK(value_of(fs, "esmd_leadership_changes_total") == 3);
  CHECK(value_of(fs, "esmd_leader_rebalances_total") == 7);
  CHECK(value_of(fs, "esmd_leader_nodes_moved_total") == 40);
  CHECK(value_of(fs, "esmd_leader_failures_total") == 2);
  CHECK(value_of(fs, "esmd_leader_lease_refusals_total") == 1);
  CHECK(value_of(fs, "esmd_pings_total") == 50);
  CHECK(value_of(fs, "esmd_max_concurrent_probes") == 100);
  auto* d = find(fs, "esmd_check_duration_seconds");
  REQUIRE(d);
  REQUIRE(d->samples.size() == 2);  // only the series observed
  CHECK(d->samples[0].labels[0].value == "http");
  CHECK(d->samples[0].labels[1].value == "passing");
  CHECK(d->samples[1].labels[0].value == "tcp");
  CHECK(d->samples[1].labels[1].value == "critical");
  CHECK(d->samples[1].histogram->count == 1);
  CHECK(d->samples[1].histogram->sum == doctest::Approx(3.0));
  auto* lag = find(fs, "esmd_schedule_lag_seconds");
  REQUIRE(lag);
  auto& h = *lag->samples[0].histogram;
  CHECK(h.count == 2);
  CHECK(h.buckets.front().first == doctest::Approx(0.001));
  CHECK(h.buckets.front().second == 0);
  CHECK(h.buckets[1].second == 1);  // <= 5 ms
  CHECK(h.buckets.back().second == 2);
  auto* req = find(fs, "esmd_consul_request_duration_seconds");
  REQUIRE(req);
  CHECK(req->samples.size() == 2);
  auto* err = find(fs, "esmd_consul_errors_total");
  REQUIRE(err);
  CHECK(err->samples.size() == 2);
  CHECK(value_of(fs, "process_cpu_seconds_total") >= 0);
  CHECK(value_of(fs, "process_resident_memory_bytes") > 0);
  CHECK(value_of(fs, "process_open_fds") > 0);
  CHECK(value_of(fs, "process_start_time_seconds") > 1.5e9);
}

TEST_CASE("the prefix filter works as go-metrics' does") {
  fixture f;
  SUBCASE("no rule: everything, whatever filter_default says") {
    f.s.filter_default = false;
    CHECK(allow_metric(f.s, "esm.agent.isLeader"));
  }
  SUBCASE("longest prefix decides; unmatched: filter_default") {
    f.s.allowed_prefixes = {"esm.checks"};
    f.s.blocked_prefixes = {"esm", "esm.checks.unhealthy"};
    f.s.filter_default = true;
    CHECK(allow_metric(f.s, "esm.checks.count"));
    CHECK_FALSE(allow_metric(f.s, "esm.checks.unhealthy"));
    CHECK_FALSE(allow_metric(f.s, "esm.agent.isLeader"));
    CHECK_FALSE(allow_metric(f.s, "esmd_pings_total"));  // a byte prefix, as go-metrics'
    CHECK(allow_metric(f.s, "check.txn"));
    f.s.filter_default = false;
    CHECK_FALSE(allow_metric(f.s, "check.txn"));
    auto fs = collect(f.st, f.s);
    CHECK(find(fs, "esm_checks_count"));
    CHECK_FALSE(find(fs, "esm_checks_unhealthy"));
    CHECK_FALSE(find(fs, "check_txn"));
    CHECK_FALSE(find(fs, "esmd_check_runs_total"));
  }
  SUBCASE("a rule listed both ways blocks") {
    f.s.allowed_prefixes = {"check.txn"};
    f.s.blocked_prefixes = {"check.txn"};
    CHECK_FALSE(allow_metric(f.s, "check.txn"));
  }
  SUBCASE("the filter sees the metrics_prefix") {
    f.s.metrics_prefix = "svc";
    f.s.allowed_prefixes = {"svc.esm.agent"};
    auto fs = collect(f.st, f.s);
    CHECK(find(fs, "svc_esm_agent_isLeader"));
    CHECK_FALSE(find(fs, "svc_esm_nodes_monitored"));
  }
}

TEST_CASE("settings from the telemetry block") {
  config::telemetry_config t;
  t.metrics_prefix = "p";
  t.disable_hostname = true;
  t.allowed_prefixes = {"a"};
  t.blocked_prefixes = {"b"};
  t.statsd_address = "127.0.0.1:8125";
  t.dogstatsd_tags = {"env:test"};
  auto s = make_telemetry_settings(t, 7);
  CHECK(s.metrics_prefix == "p");
  CHECK(s.disable_hostname);
  CHECK(s.max_concurrent_probes == 7);
  CHECK(s.statsd_address == "127.0.0.1:8125");
  CHECK(s.dogstatsd_tags.size() == 1);
  CHECK_FALSE(s.host_name.empty());  // the system's
  CHECK_FALSE(circonus_configured(t));
  t.circonus_api_token = "x";
  CHECK(circonus_configured(t));
}

TEST_CASE("statsd lines: host name in gauges, counter deltas, timers, tags") {
  fixture f;
  f.s.metrics_prefix = "esmp";
  flush_state prev;
  auto fs = collect_all(f.st, f.s);
  auto lines = format_lines(fs, f.s, sink_kind::statsd, prev);
  auto all = [&] {
    std::string a;
    for (auto& l : lines) a += l;
    return a;
  };
  CHECK(contains(all(), "esmp.esm-host-1.esm.agent.isLeader:1.000000|g\n"));
  CHECK(contains(all(), "esmp.check.txn:9.000000|c\n"));
  // go-metrics' kinds, whatever /metrics types them: esm.checks.count is untyped there but a
  // gauge here (host name, |g); the untyped counters stay counters without the host name.
  CHECK(find(fs, "esmp_esm_checks_count")->type == metric_type::untyped);
  CHECK(contains(all(), "esmp.esm-host-1.esm.checks.count:30.000000|g\n"));
  CHECK_FALSE(contains(all(), "esmp.esm.checks.count"));
  CHECK_FALSE(contains(all(), "checks.count:30.000000|c"));
  CHECK(contains(all(), "esmp.check.txn.retry:2.000000|c\n"));
  CHECK(contains(all(), "esmp.coord.txn:6.000000|c\n"));
  CHECK(contains(all(), "esmp.esm-host-1.check.txn.batch_size:5.000000|g\n"));
  CHECK(contains(all(), "esmd_check_runs_total:100.000000|c\n"));
  CHECK(contains(all(), "esm-host-1.esmd_probes_in_flight.checks:0.000000|g\n"));  // esmd's own: no prefix
  CHECK(contains(all(), "esmd_check_duration_seconds.tcp.critical:3000.000000|ms\n"));
  // Second flush: unchanged counters send nothing, changed ones their delta.
  f.engine.transactions = 12;
  fs = collect_all(f.st, f.s);
  lines = format_lines(fs, f.s, sink_kind::statsd, prev);
  CHECK(contains(all(), "esmp.check.txn:3.000000|c\n"));
  CHECK_FALSE(contains(all(), "esmp.check.txn.retry"));
  CHECK(contains(all(), "esmp.esm-host-1.esm.checks.count:30.000000|g\n"));  // a gauge: sent again
  CHECK_FALSE(contains(all(), "|ms"));

  SUBCASE("disable_hostname") {
    f.s.disable_hostname = true;
    flush_state p2;
    lines = format_lines(collect_all(f.st, f.s), f.s, sink_kind::statsd, p2);
    CHECK(contains(all(), "esmp.esm.agent.isLeader:1.000000|g\n"));
  }
  SUBCASE("DogStatsD: no host name in keys, labels and global tags as tags") {
    f.s.dogstatsd_tags = {"env:test", "dc1"};
    flush_state p2;
    lines = format_lines(collect_all(f.st, f.s), f.s, sink_kind::dogstatsd, p2);
    CHECK(contains(all(), "esmp.esm.agent.isLeader:1|g|#env:test,dc1\n"));
    CHECK(contains(all(), "esmp.esm.checks.count:30|g|#env:test,dc1\n"));
    CHECK(contains(all(), "esmp.check.txn:12|c|#env:test,dc1\n"));
    CHECK(contains(all(), "esmd_consul_errors_total:1|c|#env:test,dc1,kind:no_answer\n"));
  }
  SUBCASE("the filter sees the host name in gauge keys") {
    f.s.allowed_prefixes = {"esmp.esm.agent"};
    f.s.filter_default = false;
    flush_state p2;
    lines = format_lines(collect_all(f.st, f.s), f.s, sink_kind::statsd, p2);
    CHECK_FALSE(contains(all(), "isLeader"));  // esmp.esm-host-1.esm...: no rule matches
    f.s.allowed_prefixes = {"esmp.esm-host-1.esm.agent"};
    lines = format_lines(collect_all(f.st, f.s), f.s, sink_kind::statsd, p2);
    CHECK(contains(all(), "isLeader"));
  }
}

TEST_CASE("lines are packed into datagrams of whole lines") {
  std::vector<std::string> lines(100, std::string(99, 'x') + "\n");
  auto packets = pack_lines(lines, 1400);
  CHECK(packets.size() == 8);  // 14 lines per packet
  for (auto& p : packets) {
    CHECK(p.size() <= 1400);
    CHECK(p.back() == '\n');
  }
  auto big = pack_lines({std::string(2000, 'y') + "\n", "a:1|g\n"}, 1400);
  CHECK(big.size() == 2);
}

TEST_CASE("check counts from a real engine's checks") {
  boost::asio::io_context io;
  probe::probe_context probes;
  checks::check_engine engine(io.get_executor(), nullptr, probes, {});
  std::vector<consul::health_check> list;
  auto add = [&](std::string node, std::string id, std::string svc, std::string status) {
    consul::health_check c;
    c.node = node;
    c.check_id = id;
    c.name = id;
    c.service_id = svc;
    c.status = status;
    c.definition.tcp = "127.0.0.1:1";
    list.push_back(c);
  };
  add("n1", "a", "web", "passing");
  add("n1", "b", "web", "critical");
  add("n2", "c", "web", "warning");
  add("n2", "d", "", "passing");
  engine.on_checks(esm::sharding::make_shared_checks(list));
  daemon::daemon_status st;
  st.checks = &engine;
  st.engine = &engine.stats();
  auto fs = collect(st, telemetry_settings{});
  CHECK(value_of(fs, "esm_checks_count") == 4);
  CHECK(value_of(fs, "esm_checks_healthy") == 2);
  CHECK(value_of(fs, "esm_checks_unhealthy") == 2);
  CHECK(value_of(fs, "esm_services_monitored") == 2);  // (n1, web), (n2, web)
}

TEST_CASE("esm.services.monitored over a large engine: 20 000 checks, 2 000 services") {
  boost::asio::io_context io;
  probe::probe_context probes;
  checks::check_engine engine(io.get_executor(), nullptr, probes, {});
  // 500 nodes with the services svc-0..svc-3 each (the same service ID on other nodes counts
  // apart), 10 checks per service, and a node-level check per node (no service: not counted).
  std::vector<consul::health_check> list;
  list.reserve(20'500);
  std::size_t passing = 0;
  for (int n = 0; n < 500; ++n) {
    auto node = "node-" + std::to_string(n);
    for (int svc = 0; svc < 4; ++svc)
      for (int k = 0; k < 10; ++k) {
        consul::health_check c;
        c.node = node;
        c.service_id = "svc-" + std::to_string(svc);
        c.check_id = c.service_id + "-check-" + std::to_string(k);
        c.name = c.check_id;
        c.status = k % 3 == 0 ? "passing" : "critical";
        if (k % 3 == 0) ++passing;
        c.definition.tcp = "127.0.0.1:1";
        list.push_back(std::move(c));
      }
    consul::health_check c;
    c.node = node;
    c.check_id = "node-check";
    c.name = "node-check";
    c.status = "passing";
    ++passing;
    c.definition.tcp = "127.0.0.1:1";
    list.push_back(std::move(c));
  }
  engine.on_checks(esm::sharding::make_shared_checks(list));
  REQUIRE(engine.size() == 20'500);
  daemon::daemon_status st;
  st.checks = &engine;
  st.engine = &engine.stats();
  telemetry_settings s;
  std::vector<metric_family> fs;
  auto started = std::chrono::steady_clock::now();
  fs = collect(st, s);
  auto took = std::chrono::steady_clock::now() - started;
  MESSAGE("collect() over 20 500 checks / 2 000 services took "
          << std::chrono::duration<double, std::milli>(took).count() << " ms");
  CHECK(value_of(fs, "esm_services_monitored") == 2'000);
  CHECK(value_of(fs, "esm_checks_count") == 20'500);
  CHECK(value_of(fs, "esm_checks_healthy") == static_cast<double>(passing));
  CHECK(value_of(fs, "esm_checks_unhealthy") == static_cast<double>(20'500 - passing));
}

TEST_CASE("DogStatsD counters carry the fraction: 0.3 per flush is sent as 1 every few flushes") {
  telemetry_settings s;
  metric_family cpu;
  cpu.name = cpu.key = "process_cpu_seconds_total";
  cpu.type = metric_type::counter;
  cpu.samples.emplace_back();
  flush_state dog, plain;
  double sent = 0;
  std::vector<int> sent_at;
  for (int flush = 1; flush <= 10; ++flush) {
    cpu.samples[0].value = flush * 3 / 10.0;  // 0.3, 0.6, ... 3.0
    auto lines = format_lines({cpu}, s, sink_kind::dogstatsd, dog);
    for (auto& l : lines) {
      REQUIRE(l.rfind("process_cpu_seconds_total:", 0) == 0);
      REQUIRE(contains(l, "|c\n"));
      sent += std::stod(l.substr(l.find(':') + 1));
      sent_at.push_back(flush);
    }
    // statsd takes fractions: every flush sends its 0.3.
    auto p = format_lines({cpu}, s, sink_kind::statsd, plain);
    REQUIRE(p.size() == 1);
    CHECK(std::stod(p[0].substr(p[0].find(':') + 1)) == doctest::Approx(0.3));
  }
  CHECK(sent == 3);  // all of it, in whole numbers
  CHECK(sent_at == std::vector<int>{4, 7, 10});
  SUBCASE("a restart from zero sends the new value's whole part") {
    cpu.samples[0].value = 1.5;
    auto lines = format_lines({cpu}, s, sink_kind::dogstatsd, dog);
    REQUIRE(lines.size() == 1);
    CHECK(lines[0] == "process_cpu_seconds_total:1|c\n");
  }
}

namespace {

// Runs promtool check metrics on `text`; its output (stdout and stderr) and exit status.
std::pair<int, std::string> promtool(const std::string& text) {
  char in_path[] = "/tmp/esmd-metrics-XXXXXX";
  int fd = mkstemp(in_path);
  REQUIRE(fd >= 0);
  REQUIRE(write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()));
  close(fd);
  std::string cmd = std::string("promtool check metrics < ") + in_path + " 2>&1";
  std::string out;
  FILE* p = popen(cmd.c_str(), "r");
  REQUIRE(p);
  char buf[512];
  while (auto n = fread(buf, 1, sizeof buf, p)) out.append(buf, n);
  int status = pclose(p);
  unlink(in_path);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

}  // namespace

TEST_CASE("promtool check metrics parses the exposition; camelCase names are its only remarks") {
  REQUIRE_MESSAGE(std::system("command -v promtool >/dev/null 2>&1") == 0,
                  "promtool is missing: install Debian's prometheus package (deploy/dev/test does)");
  fixture f;
  f.s.metrics_prefix = "consul_esm";
  auto text = render(collect(f.st, f.s), exposition_format::prometheus_text);
  // Not a structured binding: clang 14 cannot capture one in doctest's INFO.
  auto result = promtool(text);
  int rc = result.first;
  const std::string& out = result.second;
  INFO(out);
  // Exit 3: lint remarks only (1 would be a parse error).
  CHECK((rc == 0 || rc == 3));
  CHECK_FALSE(contains(out, "error"));
  std::size_t remarks = 0, start = 0;
  while (start < out.size()) {
    auto end = out.find('\n', start);
    if (end == std::string::npos) end = out.size();
    auto line = out.substr(start, end - start);
    start = end + 1;
    if (line.empty()) continue;
    ++remarks;
    CHECK_MESSAGE(contains(line, "camelCase"), line);
  }
  CHECK(remarks == 1);  // consul_esm_esm_agent_isLeader
}
