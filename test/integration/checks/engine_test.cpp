// The check engine end to end: real Consul 1.8.7 dev agent, real targets on 127.0.0.1.
#include <doctest/doctest.h>

#include <algorithm>
#include <memory>
#include <set>
#include <sstream>

#include <boost/asio/ssl/context.hpp>

#include "../probe/support.hpp"
#include "esm/log/log.hpp"
#include "esm/util/async.hpp"

#include "engine_support.hpp"
#include "tcp_proxy.hpp"

using namespace engine_test;
using esm::checks::engine_settings;

namespace {

engine_settings fast_settings() {
  engine_settings s;
  s.plans.min_interval = 50ms;
  s.batch_flush_interval = 0ms;
  s.check_update_interval = 0ms;
  s.retry_base = 50ms;
  s.retry_cap = 500ms;
  s.reap_interval = 200ms;
  return s;
}

std::string unique(const std::string& prefix) {
  static int n = 0;
  return prefix + "-" + std::to_string(++n);
}

// The log's console into a string for the test's scope (text format, INFO).
struct log_capture {
  std::shared_ptr<std::ostringstream> out = std::make_shared<std::ostringstream>();
  log_capture() {
    esm::log::settings s;
    s.console = out;
    esm::log::init(s);
  }
  ~log_capture() { esm::log::init(esm::log::settings{}); }
  std::size_t count(const std::string& text) const {
    auto all = out->str();
    std::size_t n = 0;
    for (auto at = all.find(text); at != std::string::npos; at = all.find(text, at + 1)) ++n;
    return n;
  }
};

}  // namespace

TEST_CASE("HTTP check: passing, warning and critical are written with Consul's output texts") {
  log_capture log;
  asio::io_context io;
  switch_server target(io);
  running_engine e(io, fast_settings());
  auto node = unique("http");
  e.nodes = {node};
  register_node(io, e.client, node, {http_check(node, "web", target.url())});

  target.set(200, "hello");
  REQUIRE(e.wait_status(node, "web", "passing"));
  CHECK(e.catalog(node, "web").output == "HTTP GET " + target.url() + ": 200 X Output: hello");
  // The definition survives the write (full object written back).
  CHECK(e.catalog(node, "web").definition.http == target.url());

  target.set(429, "slow down");
  REQUIRE(e.wait_status(node, "web", "warning"));
  CHECK(e.catalog(node, "web").output == "HTTP GET " + target.url() + ": 429 X Output: slow down");

  target.set(500, "boom");
  REQUIRE(e.wait_status(node, "web", "critical"));
  CHECK(e.catalog(node, "web").output == "HTTP GET " + target.url() + ": 500 X Output: boom");
  CHECK(e.engine.stats().transactions >= 3);
  CHECK(e.engine.stats().write_failures == 0);
  // An operator follows each change at INFO: node, check, old and new status, the output.
  INFO(log.out->str());
  CHECK(log.count("Check status changed: node=" + node + " check=web from=critical to=passing output=\"HTTP GET " +
                  target.url() + ": 200 X Output: hello\"") == 1);
  CHECK(log.count("check=web from=passing to=warning") == 1);
  CHECK(log.count("check=web from=warning to=critical") == 1);
}

TEST_CASE("HTTPS with a test CA and a client certificate") {
  asio::io_context io;
  probe_test::test_pki pki;
  auto tls = probe_test::server_tls(pki, true);
  probe_test::http_server srv(io, tls.get());
  esm::probe::tls_files files;
  files.ca_file = pki.ca_pem;
  files.cert_file = pki.client_pem;
  files.key_file = pki.client_key;
  running_engine with_cert(io, fast_settings(), files);
  esm::probe::tls_files ca_only;
  ca_only.ca_file = pki.ca_pem;
  running_engine without_cert(io, fast_settings(), ca_only);
  auto node = unique("https");
  with_cert.nodes = {node};
  auto url = "https://127.0.0.1:" + std::to_string(srv.port()) + "/ok";
  auto a = http_check(node, "with-cert", url);
  auto b = http_check(node, "without-cert", url);
  b.status = "passing";
  register_node(io, with_cert.client, node, {a, b});
  // Each engine holds one of the two checks (as two instances would).
  with_cert.feed_only(node, "with-cert");
  without_cert.feed_only(node, "without-cert");
  CHECK(run_until(io, [&] {
    return with_cert.engine.stats().write_ops >= 1 && without_cert.engine.stats().write_ops >= 1;
  }));
  CHECK(with_cert.catalog(node, "with-cert").status == "passing");
  CHECK(with_cert.catalog(node, "with-cert").output == "HTTP GET " + url + ": 200 OK Output: hello");
  CHECK(with_cert.catalog(node, "without-cert").status == "critical");
}

TEST_CASE("TCP, TCP with TLS, UDP, gRPC serving and not serving, and H2PING") {
  asio::io_context io;
  probe_test::test_pki pki;
  auto tls = probe_test::server_tls(pki, false);
  probe_test::http_server plain(io);
  probe_test::http_server secure(io, tls.get());
  probe_test::udp_server udp(io, true);
  probe_test::child_process grpc({GRPC_HEALTH_SERVER, "--serving=", "--not-serving=down"});
  REQUIRE(!grpc.first_line().empty());
  std::string grpc_addr = "127.0.0.1:" + grpc.first_line();
  esm::probe::tls_files files;
  files.ca_file = pki.ca_pem;
  running_engine e(io, fast_settings(), files);
  auto node = unique("kinds");
  e.nodes = {node};
  auto refused = std::to_string(probe_test::refused_tcp_port());
  auto closed_udp = std::to_string(probe_test::refused_udp_port());

  std::vector<esm::consul::health_check> checks;
  auto add = [&](std::string id, auto fill) {
    esm::consul::health_check c;
    c.node = node;
    c.check_id = id;
    c.name = id;
    c.status = "warning";  // neither outcome: every check must be written
    c.definition.interval = 300ms;
    c.definition.timeout = 2s;
    fill(c.definition);
    checks.push_back(c);
  };
  auto tcp_addr = "127.0.0.1:" + std::to_string(plain.port());
  auto tls_addr = "127.0.0.1:" + std::to_string(secure.port());
  auto udp_addr = "127.0.0.1:" + std::to_string(udp.port());
  add("tcp", [&](auto& d) { d.tcp = tcp_addr; });
  add("tcp-refused", [&](auto& d) { d.tcp = "127.0.0.1:" + refused; });
  add("grpc", [&](auto& d) { d.grpc = grpc_addr; });
  add("grpc-down", [&](auto& d) { d.grpc = grpc_addr + "/down"; });
  // Consul 1.8.7 predates UDP (1.11), H2PING (1.10) and TCPUseTLS (1.16) and drops those
  // fields from stored definitions: these checks are registered without them and their
  // definitions completed as a newer Consul would deliver them.
  add("tcp-tls", [&](auto&) {});
  add("tcp-tls-on-plain", [&](auto&) {});
  add("udp", [&](auto&) {});
  add("udp-closed", [&](auto&) {});
  add("h2ping", [&](auto&) {});
  add("h2ping-refused", [&](auto&) {});
  e.patch = [&](std::vector<esm::consul::health_check>& all) {
    for (auto& c : all) {
      auto& d = c.definition;
      if (c.check_id == "tcp-tls") {
        d.tcp = tls_addr;
        d.tcp_use_tls = true;
      } else if (c.check_id == "tcp-tls-on-plain") {
        d.tcp = tcp_addr;  // no TLS there: the handshake fails
        d.tcp_use_tls = true;
      } else if (c.check_id == "udp") {
        d.udp = udp_addr;
      } else if (c.check_id == "udp-closed") {
        d.udp = "127.0.0.1:" + closed_udp;
      } else if (c.check_id == "h2ping") {
        d.h2ping = grpc_addr;
        d.h2ping_use_tls = false;
      } else if (c.check_id == "h2ping-refused") {
        d.h2ping = "127.0.0.1:" + refused;
        d.h2ping_use_tls = false;
      }
    }
  };
  add("script", [&](auto& d) { d.script_args = {"/bin/true"}; });
  register_node(io, e.client, node, checks);

  REQUIRE(e.wait_status(node, "h2ping", "passing"));
  REQUIRE(e.wait_status(node, "grpc-down", "critical"));
  REQUIRE(e.wait_status(node, "tcp-refused", "critical"));
  REQUIRE(e.wait_status(node, "udp", "passing"));
  // Each check's first run is at a random point of its interval: wait for each one's write.
  REQUIRE(e.wait_status(node, "tcp", "passing"));
  CHECK(e.catalog(node, "tcp").output == "TCP connect " + tcp_addr + ": Success");
  REQUIRE(e.wait_status(node, "tcp-tls", "passing"));
  CHECK(e.catalog(node, "tcp-tls").output == "TCP+TLS connect " + tls_addr + ": Success");
  REQUIRE(e.wait_status(node, "tcp-tls-on-plain", "critical"));
  CHECK(e.catalog(node, "tcp-refused").output ==
        "dial tcp 127.0.0.1:" + refused + ": connect: connection refused");
  CHECK(e.catalog(node, "udp").output == "UDP connect " + udp_addr + ": Success");
  REQUIRE(e.wait_status(node, "grpc", "passing"));
  CHECK(e.catalog(node, "grpc").output == "gRPC check " + grpc_addr + ": success");
  CHECK(e.catalog(node, "grpc-down").output ==
        "gRPC " + grpc_addr + "/down serving status: NOT_SERVING");
  CHECK(e.catalog(node, "h2ping").output == "HTTP2 ping was successful");
  REQUIRE(e.wait_status(node, "udp-closed", "critical"));
  CHECK(e.catalog(node, "udp-closed").output.view().find("read: connection refused") != std::string::npos);
  REQUIRE(e.wait_status(node, "h2ping-refused", "critical"));
  CHECK(e.catalog(node, "h2ping-refused").output.view().find("connection refused") != std::string::npos);
  // Consul 1.8.7's transaction endpoint strips a GRPC definition; the engine restored it
  // and writes these checks by registration, so the catalog keeps the definition.
  REQUIRE(run_until(io, [&] { return e.catalog(node, "grpc").definition.grpc == grpc_addr; }, 5s));
  CHECK(e.catalog(node, "grpc-down").definition.grpc == grpc_addr + "/down");
  CHECK(e.catalog(node, "grpc").status == "passing");
  CHECK(e.engine.stats().definitions_restored >= 2);
  // HTTP and TCP definitions survive the compare-and-set writes untouched.
  CHECK(e.catalog(node, "tcp").definition.tcp == tcp_addr);
  CHECK_FALSE(e.engine.find(node, "tcp")->runnable == false);
  // Unsupported kinds are held but never run or written.
  CHECK(e.catalog(node, "script").status == "warning");
  auto v = e.engine.find(node, "script");
  REQUIRE(v);
  CHECK_FALSE(v->runnable);
  CHECK(v->runs == 0);
  for (std::string id : {"tcp", "tcp-refused", "grpc", "grpc-down", "tcp-tls", "tcp-tls-on-plain",
                         "udp", "udp-closed", "h2ping", "h2ping-refused"}) {
    INFO(id);
    CHECK(e.engine.find(node, id)->runnable);
  }
  CHECK(e.engine.stats().unsupported == 1);
  CHECK(e.engine.stats().write_failures == 0);
}

TEST_CASE("timeouts, refused ports and endless bodies are critical with bounded output") {
  asio::io_context io;
  probe_test::silent_tcp_server silent(io);
  probe_test::http_server srv(io);
  running_engine e(io, fast_settings());
  auto node = unique("bad");
  e.nodes = {node};
  auto silent_url = "http://127.0.0.1:" + std::to_string(silent.port()) + "/";
  auto refused_url = "http://127.0.0.1:" + std::to_string(probe_test::refused_tcp_port()) + "/";
  auto hang = http_check(node, "hang", silent_url, 1s);
  hang.definition.timeout = 500ms;
  hang.status = "passing";
  auto refused = http_check(node, "refused", refused_url, 1s);
  refused.status = "passing";
  auto stream = http_check(node, "stream", srv.url("/stream"), 1s);
  stream.definition.timeout = 20s;
  register_node(io, e.client, node, {hang, refused, stream});

  auto start = clock::now();
  REQUIRE(e.wait_status(node, "hang", "critical"));
  CHECK(clock::now() - start < 5s);
  CHECK(e.catalog(node, "hang").output ==
        "Get \"" + silent_url + "\": context deadline exceeded (Client.Timeout exceeded while awaiting headers)");
  REQUIRE(e.wait_status(node, "refused", "critical"));
  CHECK(e.catalog(node, "refused").output.view().find("connection refused") != std::string::npos);
  REQUIRE(e.wait_status(node, "stream", "passing"));
  CHECK(e.catalog(node, "stream").output ==
        "HTTP GET " + srv.url("/stream") + ": 200 OK Output: " + std::string(4096, 'x'));
}

TEST_CASE("thresholds are counted once (consul mode) and twice in legacy mode") {
  asio::io_context io;
  switch_server consul_target(io), legacy_target(io);
  auto s = fast_settings();
  s.plans.critical_threshold = 2;
  running_engine consul_mode(io, s);
  s.plans.legacy_thresholds = true;
  running_engine legacy_mode(io, s);
  auto node = unique("thresholds");
  auto a = http_check(node, "consul", consul_target.url(), 400ms);
  auto b = http_check(node, "legacy", legacy_target.url(), 400ms);
  register_node(io, consul_mode.client, node, {a, b});
  consul_mode.feed_only(node, "consul");
  legacy_mode.feed_only(node, "legacy");
  // Steady passing first.
  REQUIRE(run_until(io, [&] {
    return consul_target.answered(200) >= 4 && legacy_target.answered(200) >= 4 &&
           consul_mode.catalog(node, "consul").status == "passing" &&
           legacy_mode.catalog(node, "legacy").status == "passing";
  }));
  consul_target.set(500);
  legacy_target.set(500);
  // Poll the catalog; when each flips, count the failing answers its target gave.
  int consul_failures = -1, legacy_failures = -1;
  run_until(io, [&] {
    if (consul_failures < 0 && consul_mode.catalog(node, "consul").status == "critical")
      consul_failures = consul_target.answered(500);
    if (legacy_failures < 0 && legacy_mode.catalog(node, "legacy").status == "critical")
      legacy_failures = legacy_target.answered(500);
    return consul_failures >= 0 && legacy_failures >= 0;
  }, 30s);
  CHECK(consul_failures == 2);  // critical_threshold consecutive failures
  CHECK(legacy_failures == 4);  // consul-esm: 2 x critical_threshold from a steady state
}

TEST_CASE("a flapping target gives exactly one write per effective change") {
  asio::io_context io;
  switch_server target(io);
  auto s = fast_settings();
  s.plans.passing_threshold = 3;
  s.plans.critical_threshold = 3;
  running_engine e(io, s);
  auto node = unique("flap");
  e.nodes = {node};
  auto c = http_check(node, "flap", target.url(), 100ms);
  c.status = "passing";
  c.output = "HTTP GET " + target.url() + ": 200 X Output: ok";
  register_node(io, e.client, node, {c});
  e.feed();
  // The first result (passing, same output) needs no write.
  REQUIRE(run_until(io, [&] { return target.requests() >= 3; }));
  CHECK(e.engine.stats().write_ops == 0);
  // Alternating answers never reach a threshold: no write at all.
  int before = target.requests();
  int flips = 0;
  run_until(io, [&] {
    if (target.requests() > before) {
      before = target.requests();
      target.set(target.requests() % 2 ? 500 : 200);
      ++flips;
    }
    return flips >= 12;
  }, 20s);
  CHECK(flips >= 12);
  CHECK(e.engine.stats().write_ops == 0);
  // Three failures in a row: one write; three successes: one more.
  target.set(500);
  REQUIRE(e.wait_status(node, "flap", "critical"));
  target.set(200);
  REQUIRE(e.wait_status(node, "flap", "passing"));
  run_for(io, 500ms);
  CHECK(e.engine.stats().write_ops == 2);
}

TEST_CASE("a burst of 1000 status changes costs at most 20 transactions") {
  log_capture log;
  asio::io_context io;
  switch_server target(io);
  auto s = fast_settings();
  s.batch_flush_interval = 500ms;
  running_engine e(io, s);
  std::vector<std::string> nodes;
  for (int n = 0; n < 10; ++n) {
    auto node = unique("burst");
    nodes.push_back(node);
    std::vector<esm::consul::health_check> checks;
    for (int k = 0; k < 100; ++k)
      checks.push_back(http_check(node, "c" + std::to_string(k), target.url(), 1s));
    register_node(io, e.client, node, checks);
  }
  e.nodes = nodes;
  e.feed();
  REQUIRE(e.engine.size() == 1000);
  REQUIRE(run_until(io, [&] { return e.engine.stats().write_ops >= 1000; }, 30s));
  auto first = e.engine.stats().transactions;
  MESSAGE("1000 changes (critical to passing) written in " << first << " transactions");
  CHECK(first <= 20);
  CHECK(e.engine.stats().write_ops == 1000);
  // Summarised, not 1000 lines: a transaction of more than 10 changes logs one summary line,
  // one of at most 10 (the burst's first or last flush can be that small, depending on when
  // the runs end against the flush interval) one line per check. So the per-check lines come
  // from the transactions that logged no summary, at most 10 each.
  const std::size_t summaries = log.count("Check statuses changed:");
  const std::size_t per_check = log.count("Check status changed:");
  CHECK(summaries >= 1);
  CHECK(summaries <= first);
  CHECK(per_check <= 10 * (first - std::min<std::size_t>(summaries, first)));
  // And back: the catalog's copies came from the engine's own writes, no re-read needed.
  target.set(500, "down");
  REQUIRE(run_until(io, [&] { return e.engine.stats().write_ops >= 2000; }, 30s));
  auto second = e.engine.stats().transactions - first;
  MESSAGE("1000 changes (passing to critical) written in " << second << " transactions");
  CHECK(second <= 20);
  CHECK(e.engine.stats().stale_retries == 0);
  int critical = 0;
  for (auto& n : nodes) {
    auto r = esm::test::run(io, e.client.health_node(n));
    for (auto& c : r->value) critical += c.status == "critical";
  }
  CHECK(critical == 1000);
}

TEST_CASE("a status someone else forced is corrected by the next run; a stale index is re-read once") {
  asio::io_context io;
  switch_server target(io);
  running_engine e(io, fast_settings());
  auto node = unique("forced");
  e.nodes = {node};
  register_node(io, e.client, node, {http_check(node, "web", target.url(), 300ms)});
  REQUIRE(e.wait_status(node, "web", "passing"));
  auto writes = e.engine.stats().write_ops;

  // Someone forces it critical (a re-registration, which moves its ModifyIndex).
  auto forced = http_check(node, "web", target.url(), 300ms);
  forced.status = "critical";
  forced.output = "forced";
  register_node(io, e.client, node, {forced});
  // Without handing the new copy over, the engine's next write carries a stale index: it
  // must re-read the node and retry once. But the engine only writes on a difference from
  // its copy, so make its result differ: switch the target's body.
  target.set(200, "changed");
  REQUIRE(run_until(io, [&] { return e.engine.stats().stale_retries >= 1; }));
  REQUIRE(e.wait_status(node, "web", "passing"));
  CHECK(e.catalog(node, "web").output == "HTTP GET " + target.url() + ": 200 X Output: changed");
  CHECK(e.engine.stats().node_rereads >= 1);
  CHECK(e.engine.stats().write_ops > writes);

  // Forced again, this time the engine sees it through the watch: corrected by the next run.
  register_node(io, e.client, node, {forced});
  e.feed();
  CHECK(e.engine.find(node, "web")->catalog_status == "critical");
  REQUIRE(e.wait_status(node, "web", "passing", 5s));
}

TEST_CASE("a definition change restarts only that check; a removed check stops at once") {
  asio::io_context io;
  switch_server target(io);
  probe_test::silent_tcp_server silent(io);
  running_engine e(io, fast_settings());
  auto node = unique("change");
  e.nodes = {node};
  auto keep = http_check(node, "keep", target.url(), 200ms);
  auto change = http_check(node, "change", target.url(), 200ms);
  auto hang = http_check(node, "hang", "http://127.0.0.1:" + std::to_string(silent.port()) + "/", 200ms);
  hang.definition.timeout = 10s;
  register_node(io, e.client, node, {keep, change, hang});
  e.feed();
  REQUIRE(run_until(io, [&] {
    return e.engine.find(node, "keep")->runs >= 3 && e.engine.find(node, "hang")->running;
  }));
  auto keep_runs = e.engine.find(node, "keep")->runs;
  change.definition.http = target.url() + "?v=2";
  register_node(io, e.client, node, {keep, change, hang});
  e.feed();
  CHECK(e.engine.find(node, "keep")->starts == 1);
  CHECK(e.engine.find(node, "change")->starts == 2);
  CHECK(e.engine.find(node, "hang")->starts == 1);
  CHECK(e.engine.stats().updated == 1);
  run_for(io, 600ms);
  CHECK(e.engine.find(node, "keep")->runs > keep_runs);

  // Remove the check whose probe hangs (10 s timeout): its run is cancelled at once.
  REQUIRE(e.engine.find(node, "hang")->running);
  auto cancelled = e.engine.stats().cancelled_runs;
  esm::consul::catalog_deregistration gone;
  gone.node = node;
  gone.check_id = "hang";
  REQUIRE(esm::test::run(io, e.client.catalog_deregister(gone)));
  auto removed_at = clock::now();
  e.feed();
  CHECK_FALSE(e.engine.find(node, "hang"));
  REQUIRE(run_until(io, [&] { return e.engine.stats().cancelled_runs > cancelled; }, 5s));
  CHECK(clock::now() - removed_at < 1s);
}

TEST_CASE("at most max_concurrent probes run at once; the rest wait their turn") {
  asio::io_context io;
  probe_test::silent_tcp_server silent(io);
  auto s = fast_settings();
  s.max_concurrent = 5;
  running_engine e(io, s);
  auto node = unique("bounded");
  e.nodes = {node};
  std::vector<esm::consul::health_check> checks;
  for (int k = 0; k < 20; ++k) {
    auto c = http_check(node, "c" + std::to_string(k),
                        "http://127.0.0.1:" + std::to_string(silent.port()) + "/", 100ms);
    c.definition.timeout = 1s;
    checks.push_back(c);
  }
  register_node(io, e.client, node, checks);
  e.feed();
  run_for(io, 3s);
  CHECK(e.engine.stats().max_in_flight == 5);
  CHECK(e.engine.stats().max_queued >= 10);
  // Fair: every check ran in those 3 s (5 slots x 1 s timeouts = 15 runs at most).
  int ran = 0;
  for (int k = 0; k < 20; ++k) ran += e.engine.find(node, "c" + std::to_string(k))->runs > 0;
  CHECK(ran >= 10);
}

TEST_CASE("a check whose interval is below the schedule's slack still runs once per interval") {
  // The slack (20 ms by default) lets a wake-up start runs due a little later; the engine cuts
  // it to a tenth of min_check_interval. Without the cut, an HTTP check of 10 ms (its run
  // suspends, so its end re-arms the schedule's timer, and the new entry is within the slack)
  // started again the moment its run ended. A TCP check to this host never suspends: its next
  // entry is pushed before the timer is armed, and it kept its interval either way.
  asio::io_context io;
  probe_test::http_server srv(io);
  auto s = fast_settings();
  s.plans.min_interval = 10ms;
  s.schedule_slack = 20ms;
  running_engine e(io, s);
  auto node = unique("short-interval");
  e.nodes = {node};
  auto c = http_check(node, "http", srv.url("/ok"), 10ms);
  c.status = "passing";
  c.definition.timeout = 1s;
  register_node(io, e.client, node, {c});
  e.feed();
  REQUIRE(run_until(io, [&] { return e.engine.find(node, "http") && e.engine.find(node, "http")->runs > 0; }, 5s));
  auto before = e.engine.find(node, "http")->runs;
  run_for(io, 1s);
  auto runs = e.engine.find(node, "http")->runs - before;
  MESSAGE("runs of a 10 ms HTTP check in 1 s: " << runs);
  // About 100 (an interval after each end); without the cut, 16 000 (every end started the next).
  CHECK(runs >= 20);
  CHECK(runs <= 130);
}

TEST_CASE("output-only changes wait check_update_interval; status changes do not") {
  asio::io_context io;
  switch_server target(io);
  auto s = fast_settings();
  s.check_update_interval = 2s;
  running_engine e(io, s);
  auto node = unique("output");
  e.nodes = {node};
  target.body_counter(true);
  register_node(io, e.client, node, {http_check(node, "web", target.url(), 200ms)});
  REQUIRE(e.wait_status(node, "web", "passing"));
  auto written = e.catalog(node, "web").output;
  auto at = clock::now();
  run_for(io, 1s);
  CHECK(e.catalog(node, "web").output == written);  // newer outputs held back
  REQUIRE(run_until(io, [&] { return e.catalog(node, "web").output != written; }, 5s));
  CHECK(clock::now() - at >= 1500ms);
  target.set(500, "down");
  auto changed = clock::now();
  REQUIRE(e.wait_status(node, "web", "critical", 3s));
  CHECK(clock::now() - changed < 1500ms);
}

TEST_CASE("a service whose check stays critical past DeregisterCriticalServiceAfter is reaped") {
  asio::io_context io;
  switch_server target(io);
  target.set(500);
  running_engine e(io, fast_settings());
  auto node = unique("reap");
  e.nodes = {node};
  esm::consul::agent_service svc;
  svc.id = "api-1";
  svc.service = "api";
  auto c = http_check(node, "api-check", target.url(), 200ms);
  c.service_id = "api-1";
  c.definition.deregister_critical_service_after = 1s;
  register_node(io, e.client, node, {c}, svc);
  e.feed();
  auto has_service = [&] {
    auto r = esm::test::run(io, e.client.catalog_node_info(node));
    return r && r->value && r->value->services.count("api-1") > 0;
  };
  REQUIRE(has_service());
  REQUIRE(run_until(io, [&] { return !has_service(); }, 10s));
  // Consul applies the deregistration before the engine reads its answer: the
  // catalog can show the service gone while the reaper's reply is still queued.
  CHECK(run_until(io, [&] { return e.engine.stats().services_reaped >= 1; }, 2s));
  run_for(io, 1200ms);  // more reaper passes, the check still held: nothing to deregister
  CHECK(e.engine.stats().services_reaped == 1);
  // Registered again (a new check under the same key, as the worker would feed it): it is
  // reaped again once critical for long enough.
  register_node(io, e.client, node, {c}, svc);
  auto registered = clock::now();
  e.feed();
  REQUIRE(has_service());
  REQUIRE(run_until(io, [&] { return !has_service(); }, 10s));
  CHECK(run_until(io, [&] { return e.engine.stats().services_reaped >= 2; }, 2s));
  // Counted from the new check's own first critical result, not from the old one's: it is
  // not removed before DeregisterCriticalServiceAfter (1 s) has passed again.
  CHECK(clock::now() - registered >= 1s);
}

TEST_CASE("stopping the engine cancels the probes in flight; a new run resumes every check") {
  asio::io_context io;
  probe_test::silent_tcp_server silent(io);
  switch_server target(io);
  running_engine e(io, fast_settings());
  auto node = unique("restart");
  e.nodes = {node};
  auto hang = http_check(node, "hang", "http://127.0.0.1:" + std::to_string(silent.port()) + "/", 200ms);
  hang.definition.timeout = 10s;
  register_node(io, e.client, node, {hang, http_check(node, "web", target.url(), 200ms)});
  e.feed();
  REQUIRE(run_until(io, [&] { return e.engine.find(node, "hang")->running; }));
  auto stopped_at = clock::now();
  e.run.cancel();
  REQUIRE(run_until(io, [&] { return e.run.done(); }, 5s));
  CHECK(clock::now() - stopped_at < 1s);  // not the 10 s probe timeout
  CHECK(e.engine.stats().in_flight == 0);
  auto runs = e.engine.find(node, "web")->runs;
  run_for(io, 500ms);
  CHECK(e.engine.find(node, "web")->runs == runs);  // nothing runs while stopped

  task again(io, e.engine.run());
  REQUIRE(run_until(io, [&] { return e.engine.find(node, "web")->runs >= runs + 2; }, 5s));
  CHECK(e.engine.find(node, "hang")->running);
  again.cancel();
  REQUIRE(run_until(io, [&] { return again.done(); }, 5s));
}

TEST_CASE("a write's result is not applied to a check that took over its slot during the write") {
  asio::io_context io;
  switch_server target(io);
  // The engine talks to Consul through a proxy that holds its requests: its transaction stays
  // in flight while the test changes the engine's checks. The test itself reads directly.
  esm::test::tcp_proxy proxy(io, agent().http_address());
  auto via = options();
  via.address = proxy.address();
  running_engine e(io, fast_settings(), {}, via);
  esm::consul::client direct(io.get_executor(), options());
  auto node = unique("reuse");
  // A long interval: once its result is sent, `a` does not run again during the test, so its
  // slot is free the moment it is removed.
  auto a = http_check(node, "a", target.url(), 2s);
  esm::consul::health_check b;
  b.node = node;
  b.check_id = "b";
  b.name = "b";
  b.status = "warning";
  b.output = "b's own";
  b.definition.script_args = {"/bin/true"};  // never run: its slot just holds its copy
  register_node(io, direct, node, {a, b});
  auto held = esm::test::run(io, direct.health_node(node));
  REQUIRE(held.has_value());
  std::vector<esm::consul::health_check> only_a, only_b;
  for (auto& c : held->value) {
    if (c.check_id == "a") only_a.push_back(c);
    if (c.check_id == "b") only_b.push_back(c);
  }
  REQUIRE(only_a.size() == 1);
  REQUIRE(only_b.size() == 1);
  auto b_index = only_b[0].modify_index;

  e.engine.on_checks(esm::sharding::make_shared_checks(only_a));
  proxy.set_delay(1500ms);
  REQUIRE(run_until(io, [&] { return e.engine.stats().transactions >= 1; }, 5s));
  // While a's write is in flight: a leaves this instance's share, then b joins it (two
  // deliveries of the share, so b reuses the slot a had).
  e.engine.on_checks({});
  e.engine.on_checks(esm::sharding::make_shared_checks(only_b));
  auto a_written = [&] {
    auto r = esm::test::run(io, direct.health_node(node));
    for (auto& c : r->value)
      if (c.check_id == "a") return c.status == "passing";
    return false;
  };
  REQUIRE(run_until(io, a_written, 10s));  // committed; its answer follows at once
  run_for(io, 500ms);
  auto v = e.engine.find(node, "b");
  REQUIRE(v);
  CHECK(v->catalog_status == "warning");
  CHECK(v->catalog_output == "b's own");
  CHECK(v->modify_index == b_index);
  CHECK_FALSE(e.engine.find(node, "a"));
}

TEST_CASE("a stop writes the queued results before run() returns") {
  asio::io_context io;
  switch_server target(io);
  auto s = fast_settings();
  s.batch_flush_interval = 30s;  // nothing would be written before the stop
  running_engine e(io, s);
  auto node = unique("flush");
  e.nodes = {node};
  target.set(200, "up");
  register_node(io, e.client, node, {http_check(node, "web", target.url(), 200ms)});
  e.feed();
  REQUIRE(run_until(io, [&] { return e.engine.find(node, "web")->write_queued; }, 5s));
  REQUIRE(e.catalog(node, "web").status == "critical");
  auto stopped_at = clock::now();
  e.run.cancel();
  REQUIRE(run_until(io, [&] { return e.run.done(); }, 5s));
  CHECK(clock::now() - stopped_at < 2s);
  CHECK_FALSE(e.run.error());
  CHECK(e.catalog(node, "web").status == "passing");
  CHECK(e.catalog(node, "web").output == "HTTP GET " + target.url() + ": 200 X Output: up");
  CHECK_FALSE(e.engine.find(node, "web")->write_queued);

  // Again after a restart, stopped the daemon's way (terminal|total).
  target.set(500, "down");
  auto again = esm::async::child<int>::spawn(io.get_executor(),
                                             esm::async::as_child(e.engine.run()));
  REQUIRE(run_until(io, [&] { return e.engine.find(node, "web")->write_queued; }, 5s));
  again->cancel(asio::cancellation_type::terminal | asio::cancellation_type::total);
  REQUIRE(run_until(io, [&] { return again->done(); }, 5s));
  CHECK_FALSE(again->error());
  CHECK(e.catalog(node, "web").status == "critical");
}

TEST_CASE("a second stop aborts the flush of the first") {
  asio::io_context io;
  switch_server target(io);
  esm::test::tcp_proxy proxy(io, agent().http_address());
  auto via = options();
  via.address = proxy.address();
  auto s = fast_settings();
  s.batch_flush_interval = 30s;
  running_engine e(io, s, {}, via);
  esm::consul::client direct(io.get_executor(), options());
  auto node = unique("abort");
  register_node(io, direct, node, {http_check(node, "web", target.url(), 200ms)});
  auto held = esm::test::run(io, direct.health_node(node));
  REQUIRE(held.has_value());
  e.engine.on_checks(esm::sharding::make_shared_checks(held->value));
  REQUIRE(run_until(io, [&] { return e.engine.find(node, "web")->write_queued; }, 5s));
  proxy.set_delay(30s);  // Consul never answers the flush in time
  e.run.cancel();
  run_for(io, 500ms);
  REQUIRE_FALSE(e.run.done());  // flushing
  auto second_at = clock::now();
  e.run.cancel();
  REQUIRE(run_until(io, [&] { return e.run.done(); }, 5s));
  CHECK(clock::now() - second_at < 1s);
  CHECK_FALSE(e.run.error());
  CHECK(e.engine.stats().in_flight == 0);
}

TEST_CASE("the first result is written at once even when only its output differs") {
  asio::io_context io;
  auto s = fast_settings();
  s.check_update_interval = 60s;
  running_engine e(io, s);
  auto node = unique("first-result");
  e.nodes = {node};
  auto refused = "127.0.0.1:" + std::to_string(probe_test::refused_tcp_port());
  esm::consul::health_check c;
  c.node = node;
  c.check_id = "tcp";
  c.name = "tcp";
  c.status = "critical";  // as registered: the probe agrees on the status, not on the output
  c.definition.tcp = refused;
  c.definition.interval = 200ms;
  c.definition.timeout = 2s;
  register_node(io, e.client, node, {c});
  e.feed();
  auto started = clock::now();
  REQUIRE(run_until(io, [&] { return !e.catalog(node, "tcp").output.empty(); }, 5s));
  CHECK(clock::now() - started < 2s);
  CHECK(e.catalog(node, "tcp").status == "critical");
  CHECK(e.catalog(node, "tcp").output == "dial tcp " + refused + ": connect: connection refused");
}

// The index keeps slot numbers and hashes the strings of each slot's catalog object, and the
// plans keep no strings of their own: the probe's come from the catalog object held. So the
// engine must keep finding a check after its object was replaced by a newer version (the old
// one freed), through removals, re-adds and rehashes, and must not keep replaced objects.
TEST_CASE("the index and the plans follow each check's newest object; replaced ones are freed") {
  asio::io_context io;
  esm::probe::probe_context probes;
  esm::checks::check_engine engine(io.get_executor(), nullptr, probes, fast_settings());
  auto make = [](int n, std::uint64_t index, const std::string& url) {
    esm::consul::health_check c;
    c.node = "idx-" + std::to_string(n % 7);
    c.check_id = "check-with-a-long-id-" + std::to_string(n);  // not in std::string's SSO
    c.name_space = n % 3 ? "" : "ns";
    c.partition = n % 5 ? "" : "part";
    c.status = "critical";
    c.definition.http = url;
    c.definition.interval = 10s;
    c.modify_index = index;
    c.create_index = 1;
    return std::make_shared<const esm::consul::health_check>(std::move(c));
  };
  const int n = 300;
  std::vector<esm::sharding::shared_check> share;
  std::vector<std::weak_ptr<const esm::consul::health_check>> first;
  for (int i = 0; i < n; ++i) {
    share.push_back(make(i, 10, "http://127.0.0.1:1/" + std::to_string(i)));
    first.push_back(share.back());
  }
  engine.on_checks(share);
  REQUIRE(engine.size() == n);
  // A newer version of every check: a new output for the even ones (the same plan), a new URL
  // for the odd ones (a new plan); the first objects are then no one's but the engine's.
  for (int i = 0; i < n; ++i) {
    auto url = "http://127.0.0.1:1/" + std::to_string(i) + (i % 2 ? "?v=2" : "");
    share[i] = make(i, 20, url);
  }
  engine.on_checks(share);
  for (auto& w : first) CHECK(w.expired());
  CHECK(engine.stats().updated == n / 2);
  for (int i = 0; i < n; ++i) {
    auto& c = *share[i];
    auto v = engine.find(c.node, c.check_id, c.name_space, c.partition);
    REQUIRE(v);
    CHECK(v->modify_index == 20);
    CHECK(v->starts == (i % 2 ? 2u : 1u));
    CHECK(v->runnable);
    CHECK_FALSE(engine.find(c.node, c.check_id, c.name_space == "ns" ? "" : "ns", c.partition));
  }
  // A stale version (an older ModifyIndex, another URL) changes neither the object nor the plan.
  {
    auto stale = share;
    stale[1] = make(1, 15, "http://127.0.0.1:1/stale");
    engine.on_checks(stale);
    auto v = engine.find(share[1]->node, share[1]->check_id, share[1]->name_space, share[1]->partition);
    REQUIRE(v);
    CHECK(v->modify_index == 20);
    CHECK(v->starts == 2);
  }
  // Every other check leaves; as many new ones come (rehashing the index); then the first
  // ones come back.
  std::vector<esm::sharding::shared_check> next;
  for (int i = 0; i < n; i += 2) next.push_back(share[i]);
  for (int i = n; i < 4 * n; ++i) next.push_back(make(i, 30, "http://127.0.0.1:1/new"));
  engine.on_checks(next);
  CHECK(engine.size() == next.size());
  for (int i = 1; i < n; i += 2)
    CHECK_FALSE(engine.find(share[i]->node, share[i]->check_id, share[i]->name_space, share[i]->partition));
  for (auto& c : next) CHECK(engine.find(c->node, c->check_id, c->name_space, c->partition));
  engine.on_checks(share);
  CHECK(engine.size() == n);
  std::size_t visited = 0;
  engine.visit_checks([&](const esm::checks::check_engine::check_info& c) {
    ++visited;
    CHECK(c.kind == "http");
    CHECK(engine.find(c.catalog->node, c.catalog->check_id, c.catalog->name_space, c.catalog->partition));
  });
  CHECK(visited == n);
  engine.on_checks({});
  CHECK(engine.size() == 0);
  next.clear();
  for (auto& c : share) CHECK(c.use_count() == 1);  // the engine let go of every object
}

TEST_CASE("after its own write the engine offers its copy for exactly the version Consul stored") {
  asio::io_context io;
  switch_server target(io);
  running_engine e(io, fast_settings());
  auto node = unique("held");
  e.nodes = {node};
  register_node(io, e.client, node, {http_check(node, "web", target.url())});
  target.set(200, "hello");
  e.feed();
  REQUIRE(e.wait_status(node, "web", "passing"));
  auto stored = e.catalog(node, "web");  // Consul's version after the engine's write
  esm::consul::check_key key{stored.node, stored.check_id, stored.service_id.view(),
                             stored.name_space.view(), stored.partition.view(), stored.modify_index};
  // The write's answer reaches the engine just after Consul committed it.
  REQUIRE(run_until(io, [&] { return e.engine.held_check(key) != nullptr; }, 5s));
  auto held = e.engine.held_check(key);
  CHECK(*held == stored);  // what the worker would have decoded, field for field
  auto older = key;
  older.modify_index = stored.modify_index - 1;
  CHECK(e.engine.held_check(older) == nullptr);
  auto other_service = key;
  other_service.service_id = "not-its-service";
  CHECK(e.engine.held_check(other_service) == nullptr);
  auto other_check = key;
  other_check.check_id = "not-held";
  CHECK(e.engine.held_check(other_check) == nullptr);
}
