// The typed Consul HTTP API that esmd uses. Every call is a coroutine returning
// result<...>: a non-2xx answer is an error carrying the status and Consul's text. Each call
// honours the caller's cancellation slot (terminal/partial/total all abort the request and
// close its connection) and a deadline: the client's request timeout, or for a blocking query
// its wait plus wait/16 (Consul's jitter) plus a margin, so a connection a load balancer
// dropped silently cannot hang a watch. Parameters are taken by value: the returned awaitable
// is lazy, and a caller may start it after its own temporaries are gone.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>

#include "esm/consul/error.hpp"
#include "esm/consul/options.hpp"
#include "esm/consul/transport.hpp"
#include "esm/consul/types.hpp"

namespace esm::consul {

using boost::asio::awaitable;

enum class consistency { default_mode, stale, consistent };

// Option structs have a user-provided constructor on purpose: g++ 12 destroys a
// brace-initialised aggregate temporary twice when it is an argument in a co_await expression
// (`co_await c.kv_get(k, {})`); non-aggregates are handled correctly.
struct query_options {
  query_options() {}
  std::string datacenter;  // overrides the client's
  std::string partition;   // overrides the client's
  std::string name_space;  // overrides the client's; "*" for every namespace
  std::string filter;      // Consul's filter expression
  std::vector<std::pair<std::string, std::string>> node_meta;  // ANDed node-meta=k:v
  consistency mode = consistency::default_mode;
  std::uint64_t index = 0;            // > 0 makes a blocking query
  std::chrono::milliseconds wait{0};  // blocking query's wait; 0: Consul's default (5 min)
  std::chrono::milliseconds timeout{0};  // 0: derived as described above
};

struct write_options {
  write_options() {}
  std::string datacenter;
  std::string partition;
  std::string name_space;
  std::chrono::milliseconds timeout{0};
};

template <class T>
struct query_result {
  T value;
  query_meta meta;
};

struct kv_write {
  kv_write() {}
  std::uint64_t flags = 0;
  std::optional<std::uint64_t> cas;  // check-and-set on ModifyIndex (0: only if absent)
  std::string acquire;               // session to acquire the key with
  std::string release;               // session to release the key from
};

// Margin added to a blocking query's wait for its deadline.
inline constexpr std::chrono::milliseconds blocking_margin{5'000};

// Request durations in seconds, in fixed buckets (upper bounds; the last one is +Inf).
struct request_histogram {
  static constexpr std::array<double, 12> bounds{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                                 0.1,   0.25,   0.5,   1.0,  2.5,   10.0};
  std::array<std::uint64_t, bounds.size() + 1> counts{};  // not cumulative
  double sum = 0;
  std::uint64_t count = 0;
  void add(double seconds);
};

// Every request's outcome, for the admin endpoint and the metrics (one thread: plain fields).
struct client_stats {
  std::uint64_t requests = 0;
  std::uint64_t failures = 0;  // no HTTP answer (connection, timeout); cancellations not counted
  std::uint64_t errors = 0;    // an answer other than 2xx
  std::optional<std::chrono::steady_clock::time_point> last_answer;   // any HTTP answer
  // An answer that shows Consul serving: 2xx, or 404 (a key or node that does not exist);
  // not 403 (ACL denied) or 5xx (no cluster leader).
  std::optional<std::chrono::steady_clock::time_point> last_ok;
  std::optional<std::chrono::steady_clock::time_point> last_failure;  // no answer
  std::string last_error;      // of the last failure or error answer (no secrets: no headers)
  // By endpoint ("/v1/txn", "/v1/health/state", "/v1/kv": at most two path segments, no
  // names) and status ("200", "409", ... or "error" when there was no answer).
  std::map<std::pair<std::string, std::string>, request_histogram> by_endpoint;
};

// The endpoint label of a request target ("/v1/health/node/web-1?index=3" -> "/v1/health/node").
std::string endpoint_of(std::string_view target);

class client {
 public:
  // Throws std::runtime_error (naming the file) when TLS material cannot be loaded.
  client(boost::asio::any_io_executor ex, connection_options opts);

  const connection_options& options() const { return transport_.options(); }
  transport& http() { return transport_; }
  const client_stats& stats() const { return stats_; }

  // Raw call: path under /v1 with its query string; used by the typed calls below.
  awaitable<result<http_response>> call(method m, std::string path_and_query, std::string body,
                                        std::chrono::milliseconds timeout);

  // --- status and agent
  awaitable<result<std::string>> status_leader();
  awaitable<result<agent_self>> agent_self_info();
  awaitable<result<std::map<std::string, agent_service>>> agent_services(query_options q = {});
  awaitable<result<std::optional<agent_service>>> agent_service_by_id(std::string id, query_options q = {});
  awaitable<result<void>> agent_service_register(agent_service_registration r, write_options w = {});
  awaitable<result<void>> agent_service_deregister(std::string id, write_options w = {});
  awaitable<result<void>> agent_check_register(agent_check_registration r, write_options w = {});
  awaitable<result<void>> agent_check_update(std::string id, std::string status,
                                             std::string output, write_options w = {});
  awaitable<result<void>> agent_check_deregister(std::string id, write_options w = {});

  // --- catalog
  awaitable<result<query_result<std::vector<node>>>> catalog_nodes(query_options q = {});
  // value is nullopt when the node does not exist.
  awaitable<result<query_result<std::optional<catalog_node>>>> catalog_node_info(std::string name, query_options q = {});
  awaitable<result<query_result<std::vector<catalog_service>>>> catalog_service_instances(
      std::string service, std::string tag = {}, query_options q = {});
  awaitable<result<void>> catalog_register(catalog_registration r, write_options w = {});
  awaitable<result<void>> catalog_deregister(catalog_deregistration d, write_options w = {});

  // --- health
  awaitable<result<query_result<std::vector<service_entry>>>> health_service(
      std::string service, std::string tag = {}, bool passing_only = false,
      query_options q = {});
  awaitable<result<query_result<std::vector<health_check>>>> health_node(std::string node, query_options q = {});
  // state: "any", "passing", "warning", "critical".
  awaitable<result<query_result<std::vector<health_check>>>> health_state(std::string state, query_options q = {});
  // The same answer as shared immutable objects, for a caller that holds most of them from
  // the previous answer (the worker's share): `held` is asked for each element's key (read
  // without decoding the element) and may give the object it holds for exactly that version,
  // which then stands for the element, undecoded; else (or when `held` is empty) the element
  // is decoded into a new object. Decoding a large share in full on every answer left most of
  // it as free space in the heap.
  using shared_check = consul::shared_check;
  using held_check_fn = std::function<shared_check(const check_key&)>;
  awaitable<result<query_result<std::vector<shared_check>>>> health_state_shared(
      std::string state, query_options q, held_check_fn held);

  // --- KV
  awaitable<result<query_result<std::optional<kv_pair>>>> kv_get(std::string key, query_options q = {});
  awaitable<result<query_result<std::vector<kv_pair>>>> kv_list(std::string prefix, query_options q = {});
  // Returns Consul's true/false (false: a CAS, acquire or release that did not apply).
  awaitable<result<bool>> kv_put(std::string key, std::string value, kv_write how = {}, write_options w = {});
  awaitable<result<bool>> kv_delete(std::string key, bool recurse = false,
                                    std::optional<std::uint64_t> cas = std::nullopt, write_options w = {});

  // --- sessions
  awaitable<result<std::string>> session_create(session_request r, write_options w = {});
  // nullopt: the session no longer exists (404), so renewing is pointless.
  awaitable<result<std::optional<session>>> session_renew(std::string id, write_options w = {});
  awaitable<result<bool>> session_destroy(std::string id, write_options w = {});
  awaitable<result<query_result<std::optional<session>>>> session_info(std::string id, query_options q = {});
  awaitable<result<query_result<std::vector<session>>>> session_list(query_options q = {});

  // --- transactions: 200 gives committed=true; 409 gives committed=false with Consul's
  // errors (OpIndex, What); anything else (413 for more than 64 operations) is an error.
  awaitable<result<txn_response>> txn(std::vector<txn_op> ops, write_options w = {});

  // --- coordinates
  awaitable<result<query_result<std::vector<coordinate_entry>>>> coordinate_node(std::string node, query_options q = {});
  // Every node's coordinate in the datacenter (one entry per node and segment).
  awaitable<result<query_result<std::vector<coordinate_entry>>>> coordinate_nodes(query_options q = {});
  awaitable<result<void>> coordinate_update(coordinate_entry e, write_options w = {});

  // Query strings, exposed for tests: path + '?' + parameters from the options and defaults.
  std::string build_query(std::string path, const query_options& q,
                          std::vector<std::pair<std::string, std::string>> extra = {}) const;
  std::string build_write(std::string path, const write_options& w,
                          std::vector<std::pair<std::string, std::string>> extra = {}) const;
  std::chrono::milliseconds query_timeout(const query_options& q) const;

 private:
  // decode<T> of a body (client.cpp), get_json's default decoder.
  template <class T>
  struct json_body;
  // GET `target`; a 200 answer's body is given to `decode` (result<T>(const std::string&)),
  // other answers and transport failures are errors.
  template <class T, class Decode = json_body<T>>
  awaitable<result<query_result<T>>> get_json(std::string target, std::chrono::milliseconds timeout,
                                              Decode decode = {});

  transport transport_;
  client_stats stats_;
};

// Percent-encoding for query values and path segments ('/' kept in paths).
std::string url_encode(std::string_view s, bool keep_slash = false);

}  // namespace esm::consul
