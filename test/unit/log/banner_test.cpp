#include <doctest/doctest.h>

#include <sstream>

#include "esm/log/banner.hpp"

using namespace esm::log;

TEST_CASE("banner with defaults") {
  banner_info b;
  b.version = "0.1.0";
  b.service = "consul-esm";
  b.service_id = "consul-esm:0f1e2d3c";
  std::ostringstream out;
  print_banner(out, b);
  CHECK(out.str() ==
        "esmd v0.1.0 running!\n"
        "            Datacenter: (default)\n"
        "             Partition: \"\"\n"
        "               Service: \"consul-esm\"\n"
        "           Service Tag: \"\"\n"
        "            Service ID: \"consul-esm:0f1e2d3c\"\n"
        "Node Reconnect Timeout: \"72h0m0s\"\n"
        "   Disable coordinates: false\n"
        "        Statsd address: \n"
        "        Metrics prefix: \n"
        "\n"
        "Log data will now stream in as it occurs:\n"
        "\n");
}

TEST_CASE("banner with every value set; strings quoted like Go's %q") {
  banner_info b;
  b.version = "v1.2.3";
  b.datacenter = "dc\"1";
  b.partition = "part";
  b.service = "esm";
  b.service_tag = "blue";
  b.service_id = "esm:a";
  b.node_reconnect_timeout = std::chrono::minutes(90);
  b.disable_coordinates = true;
  b.statsd_address = "127.0.0.1:8125";
  b.metrics_prefix = "esm";
  std::ostringstream out;
  print_banner(out, b);
  CHECK(out.str() ==
        "esmd v1.2.3 running!\n"
        "            Datacenter: \"dc\\\"1\"\n"
        "             Partition: \"part\"\n"
        "               Service: \"esm\"\n"
        "           Service Tag: \"blue\"\n"
        "            Service ID: \"esm:a\"\n"
        "Node Reconnect Timeout: \"1h30m0s\"\n"
        "   Disable coordinates: true\n"
        "        Statsd address: 127.0.0.1:8125\n"
        "        Metrics prefix: esm\n"
        "\n"
        "Log data will now stream in as it occurs:\n"
        "\n");
}
