// A small metric model and its text renderers: Prometheus text exposition 0.0.4 and
// OpenMetrics 1.0. The daemon's metrics are collected into this model at scrape (or sink
// flush) time from the stats structs each part keeps (collect.hpp), so no hot path calls a
// registry.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace esm::telemetry {

// `untyped` (OpenMetrics: unknown) exists for consul-esm's counters, whose names have no
// `_total` suffix: typed as counters they would be renamed by OpenMetrics and flagged by
// promtool, while PromQL treats them alike.
enum class metric_type { gauge, counter, histogram, summary, untyped };
std::string_view to_string(metric_type t);  // 0.0.4's word ("untyped")

// What go-metrics calls a value, which decides how the statsd-type sinks send it (a gauge
// `|g` with the host name, a counter delta `|c` without). It is kept apart from the
// exposition type because that one bends to Prometheus' naming rules: `esm.checks.count` is
// untyped on /metrics (a summary's reserved `_count` suffix) but a gauge to go-metrics, and
// consul-esm's untyped counters are counters. `from_type`: what the exposition type says.
enum class go_kind { from_type, gauge, counter };

struct label {
  std::string name, value;
};

struct histogram_value {
  // (upper bound, count of observations <= bound), cumulative, ascending, without +Inf
  // (that is `count`).
  std::vector<std::pair<double, std::uint64_t>> buckets;
  double sum = 0;
  std::uint64_t count = 0;
};

struct summary_value {
  std::vector<std::pair<double, double>> quantiles;  // (quantile, value)
  double sum = 0;
  std::uint64_t count = 0;
};

struct sample {
  std::vector<label> labels;
  double value = 0;                          // gauge, counter, untyped
  std::optional<histogram_value> histogram;  // histogram
  std::optional<summary_value> summary;      // summary
};

struct metric_family {
  std::string name;  // the Prometheus name; a counter's includes `_total` when it has one
  std::string help;
  metric_type type = metric_type::gauge;
  std::vector<sample> samples;
  // The dotted key the prefix filter and the statsd-type sinks see. For consul-esm's metrics
  // it is the go-metrics key without service name and host (`esm.agent.isLeader`,
  // `check.txn`) and `go_metrics` is set; for esmd's own it is the Prometheus name.
  std::string key;
  bool go_metrics = false;
  go_kind kind = go_kind::from_type;
};

// The type the statsd-type sinks send `f` as: gauge or counter for a family whose go-metrics
// kind is set, else its exposition type, with untyped sent as a gauge (its value as it is: a
// delta would assume it only grows).
metric_type sink_type(const metric_family& f);

enum class exposition_format { prometheus_text, openmetrics };

inline constexpr std::string_view prometheus_content_type = "text/plain; version=0.0.4; charset=utf-8";
inline constexpr std::string_view openmetrics_content_type =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";
std::string_view content_type(exposition_format f);

// The format for an HTTP `Accept` header value: OpenMetrics when the client accepts
// `application/openmetrics-text` with a quality at least that of any text/plain or */* it
// also accepts; otherwise (empty header included) the 0.0.4 text format.
exposition_format choose_format(std::string_view accept);

// The exposition of `families` in `f` (OpenMetrics output ends with `# EOF`). Families with
// no samples are written with their HELP and TYPE only.
std::string render(const std::vector<metric_family>& families, exposition_format f);

// Escaping: label values (`\`, `"`, newline), HELP text (0.0.4: `\` and newline; OpenMetrics
// also `"`). A number as the formats write it (`+Inf`, `-Inf`, `NaN`; integers without a
// fraction; otherwise the shortest text that reads back the same double).
std::string escape_label_value(std::string_view v);
std::string escape_help(std::string_view v, exposition_format f);
std::string format_number(double v);

// A Prometheus metric name from a go-metrics key: the parts joined with `_`, every character
// outside [a-zA-Z0-9_] replaced by `_` (`esm.agent.isLeader` -> `esm_agent_isLeader`).
std::string prometheus_name(std::string_view dotted_key);

}  // namespace esm::telemetry
