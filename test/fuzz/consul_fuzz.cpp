// libFuzzer target for what esmd reads from Consul and other instances: assignment values in
// KV (written by any esmd or consul-esm leader), health check lists from the catalog (turned
// into probe plans by the check engine), and Go duration strings inside them. Any input must
// give a value or an error (a decode error, or an exception the client maps to
// bad_response), never a crash, a hang or an out-of-bounds read.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value_from.hpp>
#include <boost/json/value_to.hpp>
#include <boost/system/system_error.hpp>

#include "esm/checks/plan.hpp"
#include "esm/consul/json.hpp"
#include "esm/sharding/kv_codec.hpp"
#include "esm/util/duration.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);

  auto a = esm::sharding::decode_assignment(text);
  if (!a && a.error().message.empty()) __builtin_trap();

  std::string err;
  auto d = esm::util::parse_go_duration(text, &err);
  if (!d && err.empty()) __builtin_trap();
  if (d) {
    // What esmd writes back must read back as the same value.
    auto again = esm::util::parse_go_duration(esm::util::format_go_duration(*d));
    if (!again || *again != *d) __builtin_trap();
  }

  // The share's answers are decoded element by element (decode_array): that must accept,
  // reject and decode exactly as the whole DOM does.
  std::optional<std::vector<esm::consul::health_check>> by_element;
  try {
    by_element = esm::consul::decode_array<esm::consul::health_check>(text);
  } catch (const std::exception&) {
  }

  boost::system::error_code ec;
  auto jv = boost::json::parse(text, ec);
  if (ec) {
    if (by_element) __builtin_trap();
    return 0;
  }
  try {
    auto checks = boost::json::value_to<std::vector<esm::consul::health_check>>(jv);
    // Compared as written back: "0e1000" reads as NaN, never equal to itself.
    if (!by_element || boost::json::serialize(boost::json::value_from(*by_element)) !=
                           boost::json::serialize(boost::json::value_from(checks)))
      __builtin_trap();
    // The key read without decoding (health_state_shared's lookup) is the decoded check's.
    const auto& elements = jv.as_array();
    for (std::size_t i = 0; i < checks.size(); ++i) {
      auto k = esm::consul::check_key_of(elements[i]);
      if (!k) continue;
      const auto& c = checks[i];
      if (k->node != c.node || k->check_id != c.check_id || k->service_id != c.service_id.view() ||
          k->name_space != c.name_space.view() || k->partition != c.partition.view() ||
          k->modify_index != c.modify_index)
        __builtin_trap();
    }
    esm::checks::plan_settings s;
    for (auto& c : checks) {
      auto p = esm::checks::plan_check(c, s);
      if (auto* plan = std::get_if<esm::checks::check_plan>(&p)) {
        if (plan->interval < s.min_interval || plan->timeout.count() <= 0) __builtin_trap();
      }
      (void)boost::json::value_from(c);  // what a compare-and-set would send
    }
  } catch (const std::exception&) {
    // A type mismatch: the client catches it and reports bad_response.
    if (by_element) __builtin_trap();
  }
  return 0;
}
