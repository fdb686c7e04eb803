// Election and membership options derived from the configuration (no network).
#include <doctest/doctest.h>

#include "esm/cluster/election.hpp"
#include "esm/cluster/membership.hpp"
#include "esm/config/config.hpp"

using namespace esm::cluster;
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

TEST_CASE("duplicate message and error category") {
  CHECK(duplicate_message("consul-esm:x") == "ESM instance with service id 'consul-esm:x' is already registered with Consul");
  boost::system::error_code ec = cluster_errc::duplicate_instance;
  CHECK(ec == cluster_errc::duplicate_instance);
  CHECK(std::string(ec.category().name()) == "esm.cluster");
  CHECK_FALSE(boost::system::error_code() == cluster_errc::duplicate_instance);
}
