#include <doctest/doctest.h>

#include "esm/consul/compat.hpp"

using namespace esm::consul;

TEST_CASE("Consul version strings") {
  CHECK(parse_version("1.8.7") == version{1, 8, 7});
  CHECK(parse_version("1.10.0-beta1") == version{1, 10, 0});
  CHECK(parse_version("1.9.3+ent") == version{1, 9, 3});
  CHECK(parse_version("v1.4.1") == version{1, 4, 1});
  CHECK(parse_version("1.9") == version{1, 9, 0});
  CHECK_FALSE(parse_version(""));
  CHECK_FALSE(parse_version("banana"));
  CHECK_FALSE(parse_version("1"));
  CHECK_FALSE(parse_version("1.x.3"));
  CHECK_FALSE(parse_version("1.2.3.4"));
}

TEST_CASE("version constraint >= 1.4.1, as consul-esm's TestCheckConsulVersions") {
  CHECK(check_consul_versions({}, "0.1.0"));  // nothing to check is an error
  CHECK_FALSE(check_consul_versions({"1.4.1"}, "0.1.0"));
  CHECK_FALSE(check_consul_versions({"1.4.1-beta", "1.8.7+ent"}, "0.1.0"));
  auto old = check_consul_versions({"1.4.0"}, "0.1.0");
  REQUIRE(old);
  CHECK(old->find("1.4.0") != std::string::npos);
  CHECK(old->find("esmd v0.1.0") != std::string::npos);
  auto mixed = check_consul_versions({"1.8.7", "1.3.0", "1.9.0"}, "0.1.0");
  REQUIRE(mixed);
  CHECK(mixed->find("1.3.0") != std::string::npos);
  CHECK(mixed->find("1.8.7") == std::string::npos);
  auto odd = check_consul_versions({"1.8.7", "weird"}, "0.1.0");  // a message, never a crash
  REQUIRE(odd);
  CHECK(odd->find("\"weird\" (not a version)") != std::string::npos);
}
