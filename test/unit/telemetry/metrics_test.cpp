// The metric model's renderers (lib/esm/telemetry/metrics.hpp): Prometheus text 0.0.4 and
// OpenMetrics 1.0, escaping, names, and the choice of format from an Accept header.
#include <doctest/doctest.h>

#include <limits>
#include <string>

#include "esm/telemetry/metrics.hpp"

using namespace esm::telemetry;

namespace {

metric_family fam(std::string name, metric_type t, double v, std::vector<label> l = {}) {
  metric_family f;
  f.name = std::move(name);
  f.help = "help of " + f.name;
  f.type = t;
  sample s;
  s.labels = std::move(l);
  s.value = v;
  f.samples.push_back(s);
  return f;
}

bool contains(const std::string& hay, const std::string& needle) { return hay.find(needle) != std::string::npos; }

}  // namespace

TEST_CASE("numbers are written as the formats expect") {
  CHECK(format_number(0) == "0");
  CHECK(format_number(42) == "42");
  CHECK(format_number(-3) == "-3");
  CHECK(format_number(0.25) == "0.25");
  CHECK(format_number(1e300) == "1e+300");
  CHECK(format_number(std::numeric_limits<double>::infinity()) == "+Inf");
  CHECK(format_number(-std::numeric_limits<double>::infinity()) == "-Inf");
  CHECK(format_number(std::numeric_limits<double>::quiet_NaN()) == "NaN");
}

TEST_CASE("label values and help texts are escaped") {
  CHECK(escape_label_value("a\"b\\c\nd") == "a\\\"b\\\\c\\nd");
  CHECK(escape_help("x\\y\n\"z\"", exposition_format::prometheus_text) == "x\\\\y\\n\"z\"");
  CHECK(escape_help("x\\y\n\"z\"", exposition_format::openmetrics) == "x\\\\y\\n\\\"z\\\"");
  auto out = render({fam("esmd_x", metric_type::gauge, 1, {{"endpoint", "/v1/kv\"\n"}})},
                    exposition_format::prometheus_text);
  CHECK(contains(out, "esmd_x{endpoint=\"/v1/kv\\\"\\n\"} 1\n"));
}

TEST_CASE("go-metrics keys become Prometheus names") {
  CHECK(prometheus_name("esm.agent.isLeader") == "esm_agent_isLeader");
  CHECK(prometheus_name("my-prefix.check.txn") == "my_prefix_check_txn");
  CHECK(prometheus_name("a b/c=d:e") == "a_b_c_d_e");
}

TEST_CASE("Prometheus text 0.0.4") {
  std::vector<metric_family> fs;
  fs.push_back(fam("esmd_runs_total", metric_type::counter, 7));
  fs.push_back(fam("check_txn", metric_type::untyped, 3));
  fs.push_back(fam("esm_agent_isLeader", metric_type::gauge, 1));
  metric_family h;
  h.name = "esmd_lag_seconds";
  h.help = "lag";
  h.type = metric_type::histogram;
  sample s;
  s.labels = {{"kind", "http"}};
  histogram_value hv;
  hv.buckets = {{0.1, 2}, {1, 5}};
  hv.sum = 1.5;
  hv.count = 6;
  s.histogram = hv;
  h.samples.push_back(s);
  fs.push_back(h);
  auto out = render(fs, exposition_format::prometheus_text);
  CHECK(contains(out, "# HELP esmd_runs_total help of esmd_runs_total\n# TYPE esmd_runs_total counter\nesmd_runs_total 7\n"));
  CHECK(contains(out, "# TYPE check_txn untyped\ncheck_txn 3\n"));
  CHECK(contains(out, "esm_agent_isLeader 1\n"));
  CHECK(contains(out, "esmd_lag_seconds_bucket{kind=\"http\",le=\"0.1\"} 2\n"));
  CHECK(contains(out, "esmd_lag_seconds_bucket{kind=\"http\",le=\"1\"} 5\n"));
  CHECK(contains(out, "esmd_lag_seconds_bucket{kind=\"http\",le=\"+Inf\"} 6\n"));
  CHECK(contains(out, "esmd_lag_seconds_sum{kind=\"http\"} 1.5\n"));
  CHECK(contains(out, "esmd_lag_seconds_count{kind=\"http\"} 6\n"));
  CHECK_FALSE(contains(out, "# EOF"));
}

TEST_CASE("OpenMetrics 1.0: counter families without _total, unknown type, float bounds, EOF") {
  std::vector<metric_family> fs;
  fs.push_back(fam("esmd_runs_total", metric_type::counter, 7));
  fs.push_back(fam("check_txn", metric_type::untyped, 3));
  metric_family h;
  h.name = "esmd_lag_seconds";
  h.help = "lag";
  h.type = metric_type::histogram;
  sample s;
  histogram_value hv;
  hv.buckets = {{1, 5}};
  hv.count = 5;
  s.histogram = hv;
  h.samples.push_back(s);
  fs.push_back(h);
  auto out = render(fs, exposition_format::openmetrics);
  CHECK(contains(out, "# HELP esmd_runs help of esmd_runs_total\n# TYPE esmd_runs counter\nesmd_runs_total 7\n"));
  CHECK(contains(out, "# TYPE check_txn unknown\ncheck_txn 3\n"));
  CHECK(contains(out, "esmd_lag_seconds_bucket{le=\"1.0\"} 5\n"));
  CHECK(out.size() >= 6);
  CHECK(out.substr(out.size() - 6) == "# EOF\n");
}

TEST_CASE("the format follows the Accept header") {
  CHECK(choose_format("") == exposition_format::prometheus_text);
  CHECK(choose_format("text/plain") == exposition_format::prometheus_text);
  CHECK(choose_format("application/openmetrics-text; version=1.0.0") == exposition_format::openmetrics);
  // Prometheus 2.x's scrape header.
  CHECK(choose_format("application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
                      "text/plain;version=0.0.4;q=0.5,*/*;q=0.1") == exposition_format::openmetrics);
  CHECK(choose_format("text/plain;q=1, application/openmetrics-text;q=0.5") == exposition_format::prometheus_text);
  CHECK(choose_format("application/openmetrics-text;q=0") == exposition_format::prometheus_text);
  CHECK(content_type(exposition_format::prometheus_text) == "text/plain; version=0.0.4; charset=utf-8");
  CHECK(content_type(exposition_format::openmetrics) == "application/openmetrics-text; version=1.0.0; charset=utf-8");
}

TEST_CASE("the statsd sinks' type is go-metrics' kind when set, apart from the exposition type") {
  auto f = fam("esm_checks_count", metric_type::untyped, 30);
  f.kind = go_kind::gauge;  // untyped on /metrics for its `_count` suffix, a gauge to go-metrics
  CHECK(sink_type(f) == metric_type::gauge);
  f.kind = go_kind::counter;  // consul-esm's counters: untyped on /metrics, no `_total`
  CHECK(sink_type(f) == metric_type::counter);
  f.kind = go_kind::from_type;
  CHECK(sink_type(f) == metric_type::gauge);  // an untyped value is sent as it is
  CHECK(sink_type(fam("esmd_runs_total", metric_type::counter, 1)) == metric_type::counter);
  CHECK(sink_type(fam("esmd_x", metric_type::gauge, 1)) == metric_type::gauge);
  CHECK(sink_type(fam("esmd_h", metric_type::histogram, 0)) == metric_type::histogram);
  // The kind changes nothing in the exposition.
  auto out = render({f}, exposition_format::prometheus_text);
  CHECK(contains(out, "# TYPE esm_checks_count untyped\nesm_checks_count 30\n"));
}
