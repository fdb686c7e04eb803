// The pure parts of the sharding drivers: the node-name filter expression sent to Consul and
// the settings derived from the configuration.
#include <doctest/doctest.h>

#include "esm/config/config.hpp"
#include "esm/sharding/leader.hpp"
#include "esm/sharding/worker.hpp"

using esm::sharding::node_name_filter;
using namespace std::chrono_literals;

TEST_CASE("node name filter: RE2 escapes doubled for go-bexpr, anchored alternation") {
  CHECK(node_name_filter({"n1"}) == R"(Node matches "^(n1)$")");
  CHECK(node_name_filter({"a", "b-c", "d_e"}) == R"(Node matches "^(a|b-c|d_e)$")");
  // Punctuation is a literal in RE2 once escaped; bexpr turns `\\` into `\`.
  CHECK(node_name_filter({"a.b"}) == R"(Node matches "^(a\\.b)$")");
  CHECK(node_name_filter({"x(1)|y*"}) == R"(Node matches "^(x\\(1\\)\\|y\\*)$")");
  // bexpr has no escape for '"': RE2's \x22 stands for it.
  CHECK(node_name_filter({"q\"x"}) == R"(Node matches "^(q\\x22x)$")");
  CHECK(node_name_filter({"b\\s"}) == R"(Node matches "^(b\\\\s)$")");
  // UTF-8 bytes are not punctuation: they stand for themselves.
  CHECK(node_name_filter({"n\xc3\xa9"}) == "Node matches \"^(n\xc3\xa9)$\"");
  // No names: matches only the empty name, which no node has.
  CHECK(node_name_filter({}) == R"(Node matches "^()$")");
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

  auto l = esm::sharding::make_leader_settings(cfg);
  CHECK(l.kv_path == "esm/");
  CHECK(l.service == "mon");
  CHECK(l.service_tag == "dc1");
  CHECK(l.node_meta == std::vector<std::pair<std::string, std::string>>{{"a", "1"}, {"b", "2"}});
  CHECK(l.partition == "p1");
  CHECK(l.wait == 30s);
  CHECK(l.retry_cap == 5s);
  CHECK(l.debounce < 1s);

  auto w = esm::sharding::make_worker_settings(cfg);
  CHECK(w.kv_path == "esm/");
  CHECK(w.service_id == "mon:abc");
  CHECK(w.node_meta == l.node_meta);
  CHECK(w.partition == "p1");
  CHECK(w.stale_reads);
  CHECK(w.wait == 30s);
  CHECK(w.retry_cap == 5s);

  cfg.external_node_meta.clear();
  CHECK(esm::sharding::make_leader_settings(cfg).node_meta.empty());
}
