#include <doctest/doctest.h>

#include <boost/asio/io_context.hpp>

#include "esm/consul/client.hpp"
#include "esm/consul/error.hpp"

using namespace esm::consul;
using namespace std::chrono_literals;

TEST_CASE("query strings carry the client's defaults and each request's options") {
  boost::asio::io_context io;
  connection_options o;
  o.datacenter = "dc2";
  o.partition = "part";
  o.token = "secret-token";
  client c(io.get_executor(), o);

  CHECK(c.build_query("/catalog/nodes", {}) == "/catalog/nodes?dc=dc2&partition=part");

  query_options q;
  q.datacenter = "dc3";
  q.name_space = "*";
  q.node_meta = {{"external-node", "true"}, {"rack", "r 1"}};
  q.filter = "Node matches \"^(a|b)$\"";
  q.mode = consistency::stale;
  q.index = 42;
  q.wait = 45s;
  CHECK(c.build_query("/health/state/any", q) ==
        "/health/state/any?dc=dc3&partition=part&ns=%2A&node-meta=external-node%3Atrue"
        "&node-meta=rack%3Ar%201&filter=Node%20matches%20%22%5E%28a%7Cb%29%24%22&stale"
        "&index=42&wait=45000ms");
  // The token travels only in a header, never in a URL that might be logged.
  CHECK(c.build_query("/kv/x", q).find("secret") == std::string::npos);

  query_options consistent;
  consistent.mode = consistency::consistent;
  CHECK(c.build_query("/kv/k", consistent, {{"recurse", ""}}) == "/kv/k?recurse&dc=dc2&partition=part&consistent");
  write_options w;
  w.partition = "other";
  CHECK(c.build_write("/txn", w) == "/txn?dc=dc2&partition=other");
}

TEST_CASE("deadlines: the request timeout, or a blocking query's wait plus jitter and margin") {
  boost::asio::io_context io;
  connection_options o;
  o.request_timeout = 7s;
  client c(io.get_executor(), o);
  query_options q;
  CHECK(c.query_timeout(q) == 7s);
  q.index = 5;
  q.wait = 16s;
  CHECK(c.query_timeout(q) == 16s + 1s + blocking_margin);
  q.wait = 0s;  // Consul's default wait is 5 minutes
  CHECK(c.query_timeout(q) == std::chrono::milliseconds(300s) + std::chrono::milliseconds(300s) / 16 + blocking_margin);
  q.timeout = 3s;
  CHECK(c.query_timeout(q) == 3s);
}

TEST_CASE("url encoding keeps unreserved characters and, in paths, slashes") {
  CHECK(url_encode("consul-esm:abc/x y") == "consul-esm%3Aabc%2Fx%20y");
  CHECK(url_encode("consul-esm/agents/consul-esm:abc", true) == "consul-esm/agents/consul-esm%3Aabc");
}

TEST_CASE("errors: HTTP status, timeouts and cancellation are told apart") {
  error e500{make_error_code(errc::http_status), 500, "rpc error: No cluster leader"};
  CHECK(e500.is_transient());
  CHECK(e500.to_string() == "Unexpected response code: 500 (rpc error: No cluster leader)");
  error e429{make_error_code(errc::http_status), 429, ""};
  CHECK(e429.is_transient());
  error e403{make_error_code(errc::http_status), 403, "ACL not found"};
  CHECK_FALSE(e403.is_transient());
  error timeout{make_error_code(errc::timeout), 0, "request timed out"};
  CHECK(timeout.is_timeout());
  CHECK_FALSE(timeout.is_cancelled());
  CHECK(timeout.is_transient());
  auto cancelled = make_error(boost::asio::error::operation_aborted);
  CHECK(cancelled.is_cancelled());
  CHECK_FALSE(cancelled.is_timeout());
  CHECK_FALSE(cancelled.is_transient());
  auto refused = make_error(boost::asio::error::connection_refused, "dial tcp 127.0.0.1:1");
  CHECK(refused.is_transient());
  CHECK(refused.to_string().find("dial tcp 127.0.0.1:1") == 0);
}

TEST_CASE("bad TLS material is a startup error naming the file") {
  boost::asio::io_context io;
  connection_options o;
  o.scheme = "https";
  o.tls.ca_file = "/nonexistent/ca.pem";
  CHECK_THROWS_WITH(client(io.get_executor(), o), "ca_file: cannot read \"/nonexistent/ca.pem\"");
  o.tls.ca_file.clear();
  o.tls.cert_file = "/nonexistent/cert.pem";
  CHECK_THROWS_WITH(client(io.get_executor(), o), "cert_file and key_file must be given together");
}

TEST_CASE("endpoint_of: at most two segments after /v1, no names, no query") {
  using esm::consul::endpoint_of;
  CHECK(endpoint_of("/v1/txn") == "/v1/txn");
  CHECK(endpoint_of("/v1/health/state/any?index=3&wait=45000ms") == "/v1/health/state");
  CHECK(endpoint_of("/v1/health/node/web-1") == "/v1/health/node");
  CHECK(endpoint_of("/v1/kv/consul-esm/agents/consul-esm:a") == "/v1/kv");
  CHECK(endpoint_of("/v1/kv?recurse") == "/v1/kv");
  CHECK(endpoint_of("/v1/agent/check/update/x:y") == "/v1/agent/check");
  CHECK(endpoint_of("/v1/status/leader") == "/v1/status/leader");
  CHECK(endpoint_of("/v1/coordinate/nodes?partition=p") == "/v1/coordinate/nodes");
  CHECK(endpoint_of("") == "");
}

TEST_CASE("request_histogram: buckets by upper bound, sum and count") {
  esm::consul::request_histogram h;
  h.add(0.0005);
  h.add(0.001);   // on the bound: that bucket
  h.add(0.003);
  h.add(60);      // beyond the last bound
  CHECK(h.counts[0] == 2);
  CHECK(h.counts[2] == 1);
  CHECK(h.counts.back() == 1);
  CHECK(h.count == 4);
  CHECK(h.sum == doctest::Approx(60.0045));
}
