#include "esm/telemetry/metrics.hpp"

#include <charconv>
#include <cmath>
#include <cstdlib>

namespace esm::telemetry {

std::string_view to_string(metric_type t) {
  switch (t) {
    case metric_type::gauge: return "gauge";
    case metric_type::counter: return "counter";
    case metric_type::histogram: return "histogram";
    case metric_type::summary: return "summary";
    case metric_type::untyped: return "untyped";
  }
  return "untyped";
}

metric_type sink_type(const metric_family& f) {
  switch (f.kind) {
    case go_kind::gauge: return metric_type::gauge;
    case go_kind::counter: return metric_type::counter;
    case go_kind::from_type: break;
  }
  return f.type == metric_type::untyped ? metric_type::gauge : f.type;
}

std::string_view content_type(exposition_format f) {
  return f == exposition_format::openmetrics ? openmetrics_content_type : prometheus_content_type;
}

namespace {

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    auto x = a[i], y = b[i];
    if (x >= 'A' && x <= 'Z') x = static_cast<char>(x - 'A' + 'a');
    if (y >= 'A' && y <= 'Z') y = static_cast<char>(y - 'A' + 'a');
    if (x != y) return false;
  }
  return true;
}

}  // namespace

exposition_format choose_format(std::string_view accept) {
  double om = -1, text = -1;
  while (!accept.empty()) {
    auto comma = accept.find(',');
    auto range = accept.substr(0, comma);
    accept = comma == std::string_view::npos ? std::string_view{} : accept.substr(comma + 1);
    auto semi = range.find(';');
    auto type = trim(range.substr(0, semi));
    double q = 1;
    while (semi != std::string_view::npos) {
      range = range.substr(semi + 1);
      semi = range.find(';');
      auto param = trim(range.substr(0, semi));
      if (param.size() > 2 && (param[0] == 'q' || param[0] == 'Q') && param[1] == '=') {
        std::string v(param.substr(2));
        char* end = nullptr;
        double d = std::strtod(v.c_str(), &end);
        if (end != v.c_str()) q = d;
      }
    }
    if (iequals(type, "application/openmetrics-text")) om = std::max(om, q);
    else if (iequals(type, "text/plain") || iequals(type, "text/*") || type == "*/*")
      text = std::max(text, q);
  }
  return om > 0 && om >= text ? exposition_format::openmetrics : exposition_format::prometheus_text;
}

std::string escape_label_value(std::string_view v) {
  std::string out;
  out.reserve(v.size());
  for (char c : v) {
    if (c == '\\') out += "\\\\";
    else if (c == '"') out += "\\\"";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

std::string escape_help(std::string_view v, exposition_format f) {
  std::string out;
  out.reserve(v.size());
  for (char c : v) {
    if (c == '\\') out += "\\\\";
    else if (c == '\n') out += "\\n";
    else if (c == '"' && f == exposition_format::openmetrics) out += "\\\"";
    else out += c;
  }
  return out;
}

std::string format_number(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  if (v == std::floor(v) && std::fabs(v) < 1e15) {
    char buf[32];
    auto [p, ec] = std::to_chars(buf, buf + sizeof buf, static_cast<long long>(v));
    return std::string(buf, p);
  }
  char buf[64];
  auto [p, ec] = std::to_chars(buf, buf + sizeof buf, v);
  return std::string(buf, p);
}

std::string prometheus_name(std::string_view dotted_key) {
  std::string out(dotted_key);
  for (auto& c : out) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
    if (!ok) c = '_';
  }
  return out;
}

namespace {

// OpenMetrics wants bucket bounds and quantiles as floats ("1.0", not "1").
std::string format_bound(double v, exposition_format f) {
  auto s = format_number(v);
  if (f == exposition_format::openmetrics && std::isfinite(v) &&
      s.find_first_of(".eE") == std::string::npos)
    s += ".0";
  return s;
}

void write_labels(std::string& out, const std::vector<label>& labels, const label* extra) {
  if (labels.empty() && !extra) return;
  out += '{';
  bool first = true;
  auto one = [&](const label& l) {
    if (!first) out += ',';
    first = false;
    out += l.name;
    out += "=\"";
    out += escape_label_value(l.value);
    out += '"';
  };
  for (auto& l : labels) one(l);
  if (extra) one(*extra);
  out += '}';
}

void write_line(std::string& out, std::string_view name, std::string_view suffix,
                const std::vector<label>& labels, const label* extra, std::string_view value) {
  out += name;
  out += suffix;
  write_labels(out, labels, extra);
  out += ' ';
  out += value;
  out += '\n';
}

}  // namespace

std::string render(const std::vector<metric_family>& families, exposition_format f) {
  bool om = f == exposition_format::openmetrics;
  std::string out;
  out.reserve(families.size() * 160);
  for (auto& fam : families) {
    // OpenMetrics names a counter family without `_total`; its sample carries the suffix.
    std::string_view family_name = fam.name;
    std::string_view sample_suffix;
    if (om && fam.type == metric_type::counter) {
      if (family_name.size() > 6 && family_name.substr(family_name.size() - 6) == "_total")
        family_name.remove_suffix(6);
      sample_suffix = "_total";
    }
    std::string_view type = to_string(fam.type);
    if (om && fam.type == metric_type::untyped) type = "unknown";
    out += "# HELP ";
    out += family_name;
    out += ' ';
    out += escape_help(fam.help, f);
    out += "\n# TYPE ";
    out += family_name;
    out += ' ';
    out += type;
    out += '\n';
    for (auto& s : fam.samples) {
      switch (fam.type) {
        case metric_type::histogram: {
          histogram_value empty;
          const auto& h = s.histogram ? *s.histogram : empty;
          for (auto& [bound, n] : h.buckets) {
            label le{"le", format_bound(bound, f)};
            write_line(out, family_name, "_bucket", s.labels, &le, format_number(static_cast<double>(n)));
          }
          label inf{"le", "+Inf"};
          write_line(out, family_name, "_bucket", s.labels, &inf, format_number(static_cast<double>(h.count)));
          write_line(out, family_name, "_sum", s.labels, nullptr, format_number(h.sum));
          write_line(out, family_name, "_count", s.labels, nullptr, format_number(static_cast<double>(h.count)));
          break;
        }
        case metric_type::summary: {
          summary_value empty;
          const auto& q = s.summary ? *s.summary : empty;
          for (auto& [quantile, v] : q.quantiles) {
            label ql{"quantile", format_bound(quantile, f)};
            write_line(out, family_name, "", s.labels, &ql, format_number(v));
          }
          write_line(out, family_name, "_sum", s.labels, nullptr, format_number(q.sum));
          write_line(out, family_name, "_count", s.labels, nullptr, format_number(static_cast<double>(q.count)));
          break;
        }
        default:
          write_line(out, family_name, sample_suffix, s.labels, nullptr, format_number(s.value));
      }
    }
  }
  if (om) out += "# EOF\n";
  return out;
}

}  // namespace esm::telemetry
