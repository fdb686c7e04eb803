// The configuration mapped onto each part's settings (lib/esm/daemon/settings.hpp).
#include <doctest/doctest.h>

#include "esm/daemon/settings.hpp"

using namespace esm::daemon;
using namespace std::chrono_literals;

TEST_CASE("agent mode: lock on <kv>leader, session on the agent's node with Consul's default checks") {
  esm::config::config cfg;
  cfg.instance_id = "i1";
  cfg.consul_kv_path = "esm/";
  cfg.session_ttl = 12s;
  cfg.lock_delay = 2s;
  cfg.lock_monitor_retries = 4;
  cfg.lock_monitor_retry_time = 500ms;
  cfg.blocking_query_wait = 20s;
  cfg.retry_interval = 3s;
  cfg.consul.request_timeout = 4000ms;
  auto e = make_election_options(cfg);
  CHECK(e.key == "esm/leader");
  CHECK(e.session_name == "consul-esm leader lock");
  CHECK(e.session_node.empty());
  CHECK_FALSE(e.session_checks);
  CHECK(e.timing.session_ttl == 12s);
  CHECK(e.timing.lock_delay == 2s);
  CHECK(e.timing.monitor_retries == 4);
  CHECK(e.timing.monitor_retry_time == 500ms);
  CHECK(e.timing.blocking_wait == 20s);
  CHECK(e.timing.retry_interval == 3s);
  CHECK(e.timing.request_timeout == 4s);

  auto m = make_membership_options(cfg);
  CHECK(m.names.service_id == "consul-esm:i1");
  CHECK_FALSE(m.agentless);
  CHECK(m.deregister_after == 30min);
  CHECK(m.timing.session_ttl == 12s);
}

TEST_CASE("agentless: session on S:I:node bound to no check (the synthetic node has no serfHealth)") {
  esm::config::config cfg;
  cfg.instance_id = "i2";
  cfg.consul_service = "esm";
  cfg.enable_agentless = true;
  cfg.instance_deregister_after = 5min;
  cfg.consul_service_tag = "t";
  cfg.partition = "p1";
  auto e = make_election_options(cfg);
  CHECK(e.key == "consul-esm/leader");
  CHECK(e.session_node == "esm:i2:node");
  REQUIRE(e.session_checks);
  CHECK(e.session_checks->empty());
  auto m = make_membership_options(cfg);
  CHECK(m.agentless);
  CHECK(m.names.node_name() == "esm:i2:node");
  CHECK(m.tag == "t");
  CHECK(m.partition == "p1");
  CHECK(m.deregister_after == 5min);
}

TEST_CASE("driver settings from the configuration") {
  esm::config::config cfg;
  cfg.consul_kv_path = "esm/";
  cfg.consul_service = "mon";
  cfg.consul_service_tag = "dc1";
  cfg.instance_id = "abc";
  cfg.external_node_meta = {{"a", "1"}, {"b", "2"}};
  cfg.partition = "p1";
  cfg.blocking_query_wait = 30s;
  cfg.retry_interval = 5s;
  cfg.stale_read_nodes = true;

  auto l = make_leader_settings(cfg);
  CHECK(l.kv_path == "esm/");
  CHECK(l.service == "mon");
  CHECK(l.service_tag == "dc1");
  CHECK(l.node_meta == std::vector<std::pair<std::string, std::string>>{{"a", "1"}, {"b", "2"}});
  CHECK(l.partition == "p1");
  CHECK(l.wait == 30s);
  CHECK(l.retry_cap == 5s);
  CHECK(l.debounce < 1s);

  auto w = make_worker_settings(cfg);
  CHECK(w.kv_path == "esm/");
  CHECK(w.service_id == "mon:abc");
  CHECK(w.node_meta == l.node_meta);
  CHECK(w.partition == "p1");
  CHECK(w.stale_reads);
  CHECK(w.wait == 30s);
  CHECK(w.retry_cap == 5s);

  cfg.external_node_meta.clear();
  CHECK(make_leader_settings(cfg).node_meta.empty());
}

TEST_CASE("engine settings from the configuration") {
  esm::config::config cfg;
  cfg.min_check_interval = 2s;
  cfg.passing_threshold = 3;
  cfg.critical_threshold = 4;
  cfg.max_concurrent_probes = 17;
  cfg.batch_flush_interval = 250ms;
  cfg.check_update_interval = 1min;
  cfg.retry_interval = 100ms;
  auto e = make_engine_settings(cfg);
  CHECK(e.plans.min_interval == 2s);
  CHECK(e.plans.passing_threshold == 3);
  CHECK(e.plans.critical_threshold == 4);
  CHECK(e.max_concurrent == 17);
  CHECK(e.batch_flush_interval == 250ms);
  CHECK(e.check_update_interval == 1min);
  CHECK(e.retry_cap == 100ms);
  CHECK(e.retry_base <= e.retry_cap);
}
