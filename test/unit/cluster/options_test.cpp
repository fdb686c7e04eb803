// The cluster area's error category and duplicate message (no network).
#include <doctest/doctest.h>

#include "esm/cluster/membership.hpp"

using namespace esm::cluster;

TEST_CASE("duplicate message and error category") {
  CHECK(duplicate_message("consul-esm:x") == "ESM instance with service id 'consul-esm:x' is already registered with Consul");
  boost::system::error_code ec = cluster_errc::duplicate_instance;
  CHECK(ec == cluster_errc::duplicate_instance);
  CHECK(std::string(ec.category().name()) == "esm.cluster");
  CHECK_FALSE(boost::system::error_code() == cluster_errc::duplicate_instance);
}
