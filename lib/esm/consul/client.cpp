#include "esm/consul/client.hpp"

#include <type_traits>

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value_from.hpp>
#include <boost/json/value_to.hpp>

#include "esm/consul/json.hpp"
#include "esm/util/duration.hpp"

namespace esm::consul {

namespace {

using params = std::vector<std::pair<std::string, std::string>>;

std::string format_ms(std::chrono::milliseconds d) { return std::to_string(d.count()) + "ms"; }

// Consul's error bodies are short plain text; cap what we keep of anything longer.
std::string trimmed(std::string body) {
  while (!body.empty() && (body.back() == '\n' || body.back() == '\r' || body.back() == ' '))
    body.pop_back();
  if (body.size() > 1024) body.resize(1024);
  return body;
}

error status_error(const http_response& r) {
  return error{make_error_code(r.status == 404 ? errc::not_found : errc::http_status), r.status,
               trimmed(r.body)};
}

// The share's answers, decoded element by element (decode_array in json.hpp): at 20 000
// checks their DOM alone took more than the checks decoded from it.
template <class T>
constexpr bool large_array = std::is_same_v<T, std::vector<health_check>> ||
                             std::is_same_v<T, std::vector<node>>;

// fn()'s value, or what it threw as a bad_response error.
template <class Fn>
auto decoding(Fn fn) -> result<decltype(fn())> {
  try {
    return fn();
  } catch (const std::exception& e) {
    return error{make_error_code(errc::bad_response), 0, e.what()};
  }
}

template <class T>
result<T> decode(const std::string& body) {
  return decoding([&]() -> T {
    if constexpr (large_array<T>)
      return decode_array<typename T::value_type>(body);
    else
      return json::value_to<T>(json::parse(body));
  });
}

std::string to_body(const json::value& v) { return json::serialize(v); }

// decode<std::vector<health_check>>, each element as a shared object, the held ones not
// decoded (client::health_state_shared).
result<std::vector<shared_check>> decode_shared_checks(const std::string& body, const client::held_check_fn& held) {
  return decoding([&] {
    return decode_array_of<health_check>(body, [&held](const json::value& jv) -> shared_check {
      if (held) {
        if (auto k = check_key_of(jv)) {
          if (auto h = held(*k)) return h;
        }
      }
      return std::make_shared<const health_check>(json::value_to<health_check>(jv));
    });
  });
}

}  // namespace

std::string url_encode(std::string_view s, bool keep_slash) {
  static constexpr char hex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(s.size());
  for (unsigned char c : s) {
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
        c == '_' || c == '.' || c == '~' || (keep_slash && c == '/')) {
      out += char(c);
    } else {
      out += '%';
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  return out;
}

client::client(boost::asio::any_io_executor ex, connection_options opts)
    : transport_(ex, std::move(opts)) {}

std::string client::build_query(std::string path, const query_options& q, params extra) const {
  auto& o = options();
  params p = std::move(extra);
  auto dc = q.datacenter.empty() ? o.datacenter : q.datacenter;
  if (!dc.empty()) p.emplace_back("dc", dc);
  auto part = q.partition.empty() ? o.partition : q.partition;
  if (!part.empty()) p.emplace_back("partition", part);
  auto ns = q.name_space.empty() ? o.name_space : q.name_space;
  if (!ns.empty()) p.emplace_back("ns", ns);
  for (auto& [k, v] : q.node_meta) p.emplace_back("node-meta", k + ":" + v);
  if (!q.filter.empty()) p.emplace_back("filter", q.filter);
  if (q.mode == consistency::stale) p.emplace_back("stale", "");
  if (q.mode == consistency::consistent) p.emplace_back("consistent", "");
  if (q.index > 0) {
    p.emplace_back("index", std::to_string(q.index));
    if (q.wait.count() > 0) p.emplace_back("wait", format_ms(q.wait));
  }
  std::string out = std::move(path);
  char sep = '?';
  for (auto& [k, v] : p) {
    out += sep;
    sep = '&';
    out += k;
    if (!v.empty()) out += "=" + url_encode(v);
  }
  return out;
}

std::string client::build_write(std::string path, const write_options& w, params extra) const {
  query_options q;
  q.datacenter = w.datacenter;
  q.partition = w.partition;
  q.name_space = w.name_space;
  return build_query(std::move(path), q, std::move(extra));
}

std::chrono::milliseconds client::query_timeout(const query_options& q) const {
  if (q.timeout.count() > 0) return q.timeout;
  if (q.index > 0) {
    // Consul waits up to wait + wait/16 (its jitter); 5 minutes when no wait is given.
    auto wait = q.wait.count() > 0 ? q.wait : std::chrono::milliseconds(std::chrono::minutes(5));
    return wait + wait / 16 + blocking_margin;
  }
  return options().request_timeout;
}

void request_histogram::add(double seconds) {
  std::size_t b = 0;
  while (b < bounds.size() && seconds > bounds[b]) ++b;
  ++counts[b];
  sum += seconds;
  ++count;
}

std::string endpoint_of(std::string_view target) {
  auto q = target.find('?');
  if (q != std::string_view::npos) target = target.substr(0, q);
  // "/v1" and at most two segments after it; KV keys are names, so "/v1/kv" alone.
  std::size_t at = 0;
  int segments = 0;
  int limit = 3;
  while (at < target.size() && segments < limit) {
    auto next = target.find('/', at + 1);
    auto seg = target.substr(at + 1, next == std::string_view::npos ? std::string_view::npos : next - at - 1);
    ++segments;
    if (segments == 2 && seg == "kv") limit = 2;
    at = next == std::string_view::npos ? target.size() : next;
  }
  return std::string(target.substr(0, at));
}

awaitable<result<http_response>> client::call(method m, std::string target, std::string body,
                                              std::chrono::milliseconds timeout) {
  auto path = "/v1" + target;
  auto started = std::chrono::steady_clock::now();
  auto r = co_await transport_.send(m, path, std::move(body), timeout);
  auto ended = std::chrono::steady_clock::now();
  // Statistics after the await: `this` outlives every call (the client owns its transport).
  std::string status = "error";
  ++stats_.requests;
  if (r) {
    status = std::to_string(r->status);
    stats_.last_answer = ended;
    if (r->status / 100 == 2 || r->status == 404) stats_.last_ok = ended;
    if (r->status / 100 != 2) {
      ++stats_.errors;
      stats_.last_error = "HTTP " + status + " from " + endpoint_of(path);
    }
  } else if (!r.error().is_cancelled()) {
    ++stats_.failures;
    stats_.last_failure = ended;
    stats_.last_error = r.error().to_string();
  }
  if (r || !r.error().is_cancelled())
    stats_.by_endpoint[{endpoint_of(path), std::move(status)}].add(
        std::chrono::duration<double>(ended - started).count());
  co_return r;
}

template <class T>
struct client::json_body {
  result<T> operator()(const std::string& body) const { return decode<T>(body); }
};

template <class T, class Decode>
awaitable<result<query_result<T>>> client::get_json(std::string target, std::chrono::milliseconds timeout,
                                                    Decode decode) {
  auto r = co_await call(method::get, std::move(target), {}, timeout);
  if (!r) co_return r.error();
  if (r->status != 200) co_return status_error(*r);
  auto v = decode(r->body);
  std::string().swap(r->body);  // before the caller holds what was decoded
  if (!v) co_return v.error();
  co_return query_result<T>{std::move(*v), r->meta};
}

namespace {
// A write whose answer is just a 2xx status.
awaitable<result<void>> expect_ok(awaitable<result<http_response>> call) {
  auto r = co_await std::move(call);
  if (!r) co_return r.error();
  if (r->status / 100 != 2) co_return status_error(*r);
  co_return result<void>{};
}

awaitable<result<bool>> expect_bool(awaitable<result<http_response>> call) {
  auto r = co_await std::move(call);
  if (!r) co_return r.error();
  if (r->status != 200) co_return status_error(*r);
  co_return trimmed(r->body) == "true";
}
}  // namespace

// --- status and agent ---------------------------------------------------------------------

awaitable<result<std::string>> client::status_leader() {
  auto r = co_await get_json<std::string>("/status/leader", {});
  if (!r) co_return r.error();
  co_return std::move(r->value);
}

awaitable<result<agent_self>> client::agent_self_info() {
  auto r = co_await get_json<agent_self>("/agent/self", {});
  if (!r) co_return r.error();
  co_return std::move(r->value);
}

awaitable<result<std::map<std::string, agent_service>>> client::agent_services(query_options q) {
  auto r = co_await get_json<std::map<std::string, agent_service>>(build_query("/agent/services", q),
                                                                   query_timeout(q));
  if (!r) co_return r.error();
  co_return std::move(r->value);
}

awaitable<result<std::optional<agent_service>>> client::agent_service_by_id(std::string id,
                                                                      query_options q) {
  auto r = co_await get_json<agent_service>(build_query("/agent/service/" + url_encode(id), q),
                                            query_timeout(q));
  if (!r) {
    if (r.error().status == 404) co_return std::optional<agent_service>{};
    co_return r.error();
  }
  co_return std::optional<agent_service>{std::move(r->value)};
}

awaitable<result<void>> client::agent_service_register(agent_service_registration reg,
                                                       write_options w) {
  co_return co_await expect_ok(call(method::put, build_write("/agent/service/register", w),
                                    to_body(json::value_from(reg)), w.timeout));
}

awaitable<result<void>> client::agent_service_deregister(std::string id, write_options w) {
  co_return co_await expect_ok(
      call(method::put, build_write("/agent/service/deregister/" + url_encode(id), w), {}, w.timeout));
}

awaitable<result<void>> client::agent_check_register(agent_check_registration reg,
                                                     write_options w) {
  co_return co_await expect_ok(call(method::put, build_write("/agent/check/register", w),
                                    to_body(json::value_from(reg)), w.timeout));
}

awaitable<result<void>> client::agent_check_update(std::string id, std::string status,
                                                   std::string output, write_options w) {
  json::object body{{"Status", status}, {"Output", output}};
  co_return co_await expect_ok(call(method::put,
                                    build_write("/agent/check/update/" + url_encode(id), w),
                                    to_body(body), w.timeout));
}

awaitable<result<void>> client::agent_check_deregister(std::string id, write_options w) {
  co_return co_await expect_ok(
      call(method::put, build_write("/agent/check/deregister/" + url_encode(id), w), {}, w.timeout));
}

// --- catalog ------------------------------------------------------------------------------

awaitable<result<query_result<std::vector<node>>>> client::catalog_nodes(query_options q) {
  co_return co_await get_json<std::vector<node>>(build_query("/catalog/nodes", q), query_timeout(q));
}

awaitable<result<query_result<std::optional<catalog_node>>>> client::catalog_node_info(
    std::string name, query_options q) {
  // Consul answers 200 with `null` for a node it does not know.
  auto r = co_await get_json<json::value>(build_query("/catalog/node/" + url_encode(name), q),
                                          query_timeout(q));
  if (!r) {
    if (r.error().status == 404) co_return query_result<std::optional<catalog_node>>{{}, {}};
    co_return r.error();
  }
  query_result<std::optional<catalog_node>> out{{}, r->meta};
  if (!r->value.is_null()) {
    try {
      out.value = json::value_to<catalog_node>(r->value);
    } catch (const std::exception& e) {
      co_return error{make_error_code(errc::bad_response), 0, e.what()};
    }
  }
  co_return out;
}

awaitable<result<query_result<std::vector<catalog_service>>>> client::catalog_service_instances(
    std::string service, std::string tag, query_options q) {
  params extra;
  if (!tag.empty()) extra.emplace_back("tag", tag);
  co_return co_await get_json<std::vector<catalog_service>>(
      build_query("/catalog/service/" + url_encode(service), q, std::move(extra)), query_timeout(q));
}

awaitable<result<void>> client::catalog_register(catalog_registration reg, write_options w) {
  co_return co_await expect_ok(call(method::put, build_write("/catalog/register", w),
                                    to_body(json::value_from(reg)), w.timeout));
}

awaitable<result<void>> client::catalog_deregister(catalog_deregistration d, write_options w) {
  co_return co_await expect_ok(call(method::put, build_write("/catalog/deregister", w),
                                    to_body(json::value_from(d)), w.timeout));
}

// --- health -------------------------------------------------------------------------------

awaitable<result<query_result<std::vector<service_entry>>>> client::health_service(
    std::string service, std::string tag, bool passing_only, query_options q) {
  params extra;
  if (passing_only) extra.emplace_back("passing", "1");
  if (!tag.empty()) extra.emplace_back("tag", tag);
  co_return co_await get_json<std::vector<service_entry>>(
      build_query("/health/service/" + url_encode(service), q, std::move(extra)), query_timeout(q));
}

awaitable<result<query_result<std::vector<health_check>>>> client::health_node(std::string n,
                                                                               query_options q) {
  co_return co_await get_json<std::vector<health_check>>(
      build_query("/health/node/" + url_encode(n), q), query_timeout(q));
}

awaitable<result<query_result<std::vector<health_check>>>> client::health_state(std::string state,
                                                                                query_options q) {
  co_return co_await get_json<std::vector<health_check>>(
      build_query("/health/state/" + url_encode(state), q), query_timeout(q));
}

awaitable<result<query_result<std::vector<client::shared_check>>>> client::health_state_shared(
    std::string state, query_options q, held_check_fn held) {
  auto decode = [held = std::move(held)](const std::string& body) { return decode_shared_checks(body, held); };
  co_return co_await get_json<std::vector<shared_check>>(build_query("/health/state/" + url_encode(state), q),
                                                         query_timeout(q), std::move(decode));
}

// --- KV -----------------------------------------------------------------------------------

awaitable<result<query_result<std::optional<kv_pair>>>> client::kv_get(std::string key,
                                                                       query_options q) {
  auto r = co_await call(method::get, build_query("/kv/" + url_encode(key, true), q), {}, query_timeout(q));
  if (!r) co_return r.error();
  query_result<std::optional<kv_pair>> out{{}, r->meta};
  if (r->status == 404) co_return out;  // absent key: the index still drives blocking queries
  if (r->status != 200) co_return status_error(*r);
  auto v = decode<std::vector<kv_pair>>(r->body);
  if (!v) co_return v.error();
  if (!v->empty()) out.value = std::move(v->front());
  co_return out;
}

awaitable<result<query_result<std::vector<kv_pair>>>> client::kv_list(std::string prefix,
                                                                      query_options q) {
  params recurse;
  recurse.emplace_back("recurse", "");
  auto target = build_query("/kv/" + url_encode(prefix, true), q, std::move(recurse));
  auto r = co_await call(method::get, std::move(target), {}, query_timeout(q));
  if (!r) co_return r.error();
  query_result<std::vector<kv_pair>> out{{}, r->meta};
  if (r->status == 404) co_return out;
  if (r->status != 200) co_return status_error(*r);
  auto v = decode<std::vector<kv_pair>>(r->body);
  if (!v) co_return v.error();
  out.value = std::move(*v);
  co_return out;
}

awaitable<result<bool>> client::kv_put(std::string key, std::string value, kv_write how,
                                       write_options w) {
  params extra;
  if (how.flags) extra.emplace_back("flags", std::to_string(how.flags));
  if (how.cas) extra.emplace_back("cas", std::to_string(*how.cas));
  if (!how.acquire.empty()) extra.emplace_back("acquire", how.acquire);
  if (!how.release.empty()) extra.emplace_back("release", how.release);
  co_return co_await expect_bool(call(method::put, build_write("/kv/" + url_encode(key, true), w, std::move(extra)),
                                      std::move(value), w.timeout));
}

awaitable<result<bool>> client::kv_delete(std::string key, bool recurse,
                                          std::optional<std::uint64_t> cas, write_options w) {
  params extra;
  if (recurse) extra.emplace_back("recurse", "");
  if (cas) extra.emplace_back("cas", std::to_string(*cas));
  co_return co_await expect_bool(
      call(method::del, build_write("/kv/" + url_encode(key, true), w, std::move(extra)), {}, w.timeout));
}

// --- sessions -----------------------------------------------------------------------------

awaitable<result<std::string>> client::session_create(session_request req, write_options w) {
  auto r = co_await call(method::put, build_write("/session/create", w), to_body(json::value_from(req)),
                         w.timeout);
  if (!r) co_return r.error();
  if (r->status != 200) co_return status_error(*r);
  try {
    auto v = json::parse(r->body);
    co_return std::string(v.at("ID").as_string());
  } catch (const std::exception& e) {
    co_return error{make_error_code(errc::bad_response), 0, e.what()};
  }
}

awaitable<result<std::optional<session>>> client::session_renew(std::string id, write_options w) {
  auto r = co_await call(method::put, build_write("/session/renew/" + url_encode(id), w), {}, w.timeout);
  if (!r) co_return r.error();
  if (r->status == 404) co_return std::optional<session>{};
  if (r->status != 200) co_return status_error(*r);
  auto v = decode<std::vector<session>>(r->body);
  if (!v) co_return v.error();
  if (v->empty()) co_return std::optional<session>{};
  co_return std::optional<session>{std::move(v->front())};
}

awaitable<result<bool>> client::session_destroy(std::string id, write_options w) {
  co_return co_await expect_bool(
      call(method::put, build_write("/session/destroy/" + url_encode(id), w), {}, w.timeout));
}

awaitable<result<query_result<std::optional<session>>>> client::session_info(std::string id,
                                                                             query_options q) {
  auto r = co_await get_json<json::value>(build_query("/session/info/" + url_encode(id), q), query_timeout(q));
  if (!r) co_return r.error();
  query_result<std::optional<session>> out{{}, r->meta};
  try {
    if (r->value.is_array() && !r->value.get_array().empty())
      out.value = json::value_to<session>(r->value.get_array().front());
  } catch (const std::exception& e) {
    co_return error{make_error_code(errc::bad_response), 0, e.what()};
  }
  co_return out;
}

awaitable<result<query_result<std::vector<session>>>> client::session_list(query_options q) {
  auto r = co_await get_json<json::value>(build_query("/session/list", q), query_timeout(q));
  if (!r) co_return r.error();
  query_result<std::vector<session>> out{{}, r->meta};
  try {
    if (!r->value.is_null()) out.value = json::value_to<std::vector<session>>(r->value);
  } catch (const std::exception& e) {
    co_return error{make_error_code(errc::bad_response), 0, e.what()};
  }
  co_return out;
}

// --- transactions -------------------------------------------------------------------------

awaitable<result<txn_response>> client::txn(std::vector<txn_op> ops, write_options w) {
  auto r = co_await call(method::put, build_write("/txn", w), to_body(json::value_from(ops)), w.timeout);
  if (!r) co_return r.error();
  if (r->status != 200 && r->status != 409) co_return status_error(*r);
  txn_response out;
  out.committed = r->status == 200;
  try {
    auto v = json::parse(r->body);
    auto& o = v.as_object();
    if (auto* res = o.if_contains("Results"); res && res->is_array())
      out.results = json::value_to<std::vector<txn_result>>(*res);
    if (auto* errs = o.if_contains("Errors"); errs && errs->is_array())
      out.errors = json::value_to<std::vector<txn_error>>(*errs);
  } catch (const std::exception& e) {
    co_return error{make_error_code(errc::bad_response), 0, e.what()};
  }
  co_return out;
}

// --- coordinates --------------------------------------------------------------------------

namespace {
// A list of coordinate entries (null: none).
result<query_result<std::vector<coordinate_entry>>> coordinates_of(const query_result<json::value>& r) {
  query_result<std::vector<coordinate_entry>> out{{}, r.meta};
  try {
    if (!r.value.is_null()) out.value = json::value_to<std::vector<coordinate_entry>>(r.value);
  } catch (const std::exception& e) {
    return error{make_error_code(errc::bad_response), 0, e.what()};
  }
  return out;
}
}  // namespace

awaitable<result<query_result<std::vector<coordinate_entry>>>> client::coordinate_node(
    std::string n, query_options q) {
  auto r = co_await get_json<json::value>(build_query("/coordinate/node/" + url_encode(n), q), query_timeout(q));
  if (!r) {
    if (r.error().status == 404) co_return query_result<std::vector<coordinate_entry>>{};
    co_return r.error();
  }
  co_return coordinates_of(*r);
}

awaitable<result<query_result<std::vector<coordinate_entry>>>> client::coordinate_nodes(query_options q) {
  auto r = co_await get_json<json::value>(build_query("/coordinate/nodes", q), query_timeout(q));
  if (!r) co_return r.error();
  co_return coordinates_of(*r);
}

awaitable<result<void>> client::coordinate_update(coordinate_entry e, write_options w) {
  co_return co_await expect_ok(call(method::put, build_write("/coordinate/update", w),
                                    to_body(json::value_from(e)), w.timeout));
}

}  // namespace esm::consul
