// Classification of check definitions and the reasons logged for kinds esmd does not run
// (no network).

#include <doctest/doctest.h>

#include "esm/probe/check_kind.hpp"
#include "esm/probe/result.hpp"

using namespace esm::probe;

TEST_CASE("check kinds: Consul's precedence and the reasons for kinds not run") {
  CHECK(classify({.http = "http://x"}) == check_kind::http);
  CHECK(classify({.tcp = "x:1"}) == check_kind::tcp);
  CHECK(classify({.udp = "x:1"}) == check_kind::udp);
  CHECK(classify({.grpc = "x:1"}) == check_kind::grpc);
  CHECK(classify({.h2ping = "x:1"}) == check_kind::h2ping);
  CHECK(classify({.os_service = "sshd"}) == check_kind::os_service);
  CHECK(classify({.script_args = {"/bin/true"}}) == check_kind::script);
  CHECK(classify({.script = "true"}) == check_kind::script);
  CHECK(classify({.script_args = {"true"}, .docker_container_id = "c1"}) == check_kind::docker);
  CHECK(classify({.alias_service = "web"}) == check_kind::alias);
  CHECK(classify({.http = "http://x", .ttl = std::chrono::seconds(10)}) == check_kind::ttl);
  CHECK(classify({.http = "http://x", .tcp = "x:1"}) == check_kind::http);
  CHECK(classify({}) == check_kind::none);

  for (auto k : {check_kind::http, check_kind::tcp, check_kind::udp, check_kind::grpc, check_kind::h2ping})
    CHECK_FALSE(unsupported_reason(k).has_value());
  CHECK(unsupported_reason(check_kind::script) == std::string("check type \"script\" is not supported by esmd; it is not run"));
  CHECK(unsupported_reason(check_kind::docker) == std::string("check type \"docker\" is not supported by esmd; it is not run"));
  CHECK(unsupported_reason(check_kind::os_service) == std::string("check type \"os_service\" is not supported by esmd; it is not run"));
  CHECK(unsupported_reason(check_kind::alias) == std::string("check type \"alias\" is not supported by esmd; it is not run"));
  CHECK(unsupported_reason(check_kind::ttl)->find("check type \"ttl\" is not supported by esmd") == 0);
  CHECK(unsupported_reason(check_kind::none)->find("it is not run") != std::string::npos);
}

TEST_CASE("check status names are Consul's") {
  CHECK(to_string(check_status::passing) == "passing");
  CHECK(to_string(check_status::warning) == "warning");
  CHECK(to_string(check_status::critical) == "critical");
}
