// Boost.JSON conversions of the Consul API objects (types.hpp). value_to throws
// boost::system::system_error on a type mismatch; the client turns that into
// errc::bad_response.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string_view>
#include <type_traits>
#include <vector>

#include <boost/json/conversion.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/value.hpp>
#include <boost/json/value_to.hpp>

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

// Large answers (the share's checks and nodes: tens of MB at 20 000 checks) decoded one
// element at a time: each element of the array is parsed on its own into an arena that is
// emptied before the next one, so only one element's DOM exists at any time instead of the
// whole answer's (whose many small blocks, once freed, stay in glibc's heap between the
// objects kept and set the process's resident memory). decode_array accepts and rejects
// exactly what json::parse followed by value_to<std::vector<T>> does, and throws what they
// throw (boost::system::system_error for the syntax, the conversions' own exceptions).
//
// for_each_array_element returns false, calling nothing, when `body` is not an array (its
// first character after white space is not '['); else it calls `on_size` once with the number
// of elements, then `fn` for each, and throws on a syntax error before calling `fn` for any
// element after it. The value `fn` is given lives in the arena: neither `fn` nor a T may keep
// a json::value or json::object copy-constructed from it (copy construction keeps the
// source's storage). The conversions of types.hpp build their `extra` objects in default
// storage (rest() in json.cpp), so their results own all they hold.
bool for_each_array_element(std::string_view body, const std::function<void(std::size_t)>& on_size,
                            const std::function<void(const json::value&)>& fn);

// The identity of a check in an answer (check_key in types.hpp), read without decoding the
// rest of it. nullopt when `jv` is not an object, when one of the strings is neither a string
// nor absent nor null, or when ModifyIndex is not a positive integer: a decode tells such an
// element's fault, or (ModifyIndex 0) its version is unknown. The views are into `jv`.
// An element whose key a caller already holds is not decoded at all, so a fault elsewhere in
// it (say a numeric Status) goes unreported: Consul cannot change a check without moving its
// ModifyIndex, so the element is the version held, which was decoded when it was first read.
std::optional<check_key> check_key_of(const json::value& jv);

// The elements of the array `body`, each made by `make(const json::value&)` (a value in the
// arena, see above), in order. A body that is not an array throws what decoding it as a
// std::vector<T> throws.
template <class T, class Make>
auto decode_array_of(std::string_view body, Make make) {
  std::vector<std::decay_t<std::invoke_result_t<Make&, const json::value&>>> out;
  bool array = for_each_array_element(
      body, [&out](std::size_t n) { out.reserve(n); }, [&](const json::value& jv) { out.push_back(make(jv)); });
  if (!array) (void)json::value_to<std::vector<T>>(json::parse(body));  // throws: not an array
  return out;
}

template <class T>
std::vector<T> decode_array(std::string_view body) {
  return decode_array_of<T>(body, [](const json::value& jv) { return json::value_to<T>(jv); });
}

}  // namespace esm::consul
