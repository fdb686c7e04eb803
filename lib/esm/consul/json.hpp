// Boost.JSON conversions of the Consul API objects (types.hpp). value_to throws
// boost::system::system_error on a type mismatch; the client turns that into
// errc::bad_response.
#pragma once

#include <boost/json/conversion.hpp>
#include <boost/json/value.hpp>

#include "esm/consul/types.hpp"

namespace esm::consul {

namespace json = boost::json;

#define ESM_CONSUL_JSON_CONVERSIONS(T)                                  \
  void tag_invoke(json::value_from_tag, json::value& jv, const T& v); \
  T tag_invoke(json::value_to_tag<T>, const json::value& jv);

ESM_CONSUL_JSON_CONVERSIONS(node)
ESM_CONSUL_JSON_CONVERSIONS(check_definition)
ESM_CONSUL_JSON_CONVERSIONS(health_check)
ESM_CONSUL_JSON_CONVERSIONS(agent_service)
ESM_CONSUL_JSON_CONVERSIONS(catalog_service)
ESM_CONSUL_JSON_CONVERSIONS(service_entry)
ESM_CONSUL_JSON_CONVERSIONS(catalog_node)
ESM_CONSUL_JSON_CONVERSIONS(kv_pair)
ESM_CONSUL_JSON_CONVERSIONS(session)
ESM_CONSUL_JSON_CONVERSIONS(coordinate_vec)
ESM_CONSUL_JSON_CONVERSIONS(coordinate_entry)
ESM_CONSUL_JSON_CONVERSIONS(txn_op)
ESM_CONSUL_JSON_CONVERSIONS(txn_result)
ESM_CONSUL_JSON_CONVERSIONS(txn_error)

#undef ESM_CONSUL_JSON_CONVERSIONS

// Request bodies (written only).
void tag_invoke(json::value_from_tag, json::value& jv, const session_request& v);
void tag_invoke(json::value_from_tag, json::value& jv, const agent_service_registration& v);
void tag_invoke(json::value_from_tag, json::value& jv, const agent_check_registration& v);
void tag_invoke(json::value_from_tag, json::value& jv, const catalog_registration& v);
void tag_invoke(json::value_from_tag, json::value& jv, const catalog_deregistration& v);

// Answers (read only).
agent_self tag_invoke(json::value_to_tag<agent_self>, const json::value& jv);

}  // namespace esm::consul
