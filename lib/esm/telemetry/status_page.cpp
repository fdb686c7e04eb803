#include "esm/telemetry/status_page.hpp"

#include <string>

namespace esm::telemetry {

std::string html_escape(std::string_view text) {
  std::string out;
  out.reserve(text.size() + text.size() / 8);
  for (char c : text) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

namespace {

// Cuts `s` to at most `n` bytes without splitting a UTF-8 sequence.
std::string_view cut(std::string_view s, std::size_t n, bool& cut_off) {
  cut_off = s.size() > n;
  if (!cut_off) return s;
  while (n > 0 && (static_cast<unsigned char>(s[n]) & 0xC0) == 0x80) --n;
  return s.substr(0, n);
}

const char* style = R"(
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:1.5em;color:#222;background:#fafafa}
h1{font-size:1.4em;margin:0 0 .3em}h2{font-size:1.1em;margin:1.4em 0 .4em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.3em 0}td,th{padding:.25em .6em;text-align:left;vertical-align:top;border-bottom:1px solid #eee}
th{background:#f0f0f0}.kv th{background:none;font-weight:600}
.badge{display:inline-block;padding:.1em .5em;border-radius:.3em;font-size:.9em;color:#fff}
.critical,.bad,.dead{background:#c0392b}.warning{background:#d68910}.passing,.good,.alive{background:#1e8449}
.maintenance,.unknown,.neutral{background:#7f8c8d}
pre{margin:0;white-space:pre-wrap;word-break:break-word;font-size:.85em;max-width:60em}
.note{color:#666;font-size:.9em}.problem{background:#fdecea;border-left:4px solid #c0392b;padding:.4em .8em;margin:.5em 0}
)";

struct page {
  std::string out;
  page& raw(std::string_view s) {
    out += s;
    return *this;
  }
  page& text(std::string_view s) {
    out += html_escape(s);
    return *this;
  }
  page& num(std::uint64_t n) {
    out += std::to_string(n);
    return *this;
  }
  page& badge(std::string_view cls, std::string_view label) {
    return raw("<span class=\"badge ").text(cls).raw("\">").text(label).raw("</span>");
  }
  page& row(std::string_view key, std::string_view value) {
    return raw("<tr><th>").text(key).raw("</th><td>").text(value).raw("</td></tr>\n");
  }
  page& row_num(std::string_view key, std::uint64_t value) { return row(key, std::to_string(value)); }
};

std::string_view status_class(std::string_view s) {
  if (s == "critical" || s == "warning" || s == "passing" || s == "maintenance") return s;
  return "unknown";
}

}  // namespace

std::string status_page(const daemon::daemon_status& st, steady::time_point now, const probe_answer& live,
                        const probe_answer& ready, page_limits limits) {
  page p;
  p.raw("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n")
      .raw("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n")
      .raw("<link rel=\"icon\" href=\"data:,\">\n")
      .raw("<title>esmd ")
      .text(st.instance_id)
      .raw("</title>\n<style>")
      .raw(style)
      .raw("</style></head><body>\n");

  // ---- this instance
  p.raw("<h1>esmd ").text(st.instance_id).raw("</h1>\n<p>");
  p.badge(live.ok ? "good" : "bad", live.ok ? "live" : "stalled").raw(" ");
  p.badge(ready.ok ? "good" : "bad", ready.ok ? "ready" : "not ready").raw(" ");
  p.badge(st.instance.election.is_leader ? "good" : "neutral", st.instance.election.is_leader ? "leader" : "follower");
  p.raw(" <span class=\"note\">").text(daemon::to_string(st.state)).raw(", ").text(st.agentless ? "agentless" : "agent");
  p.raw(" mode, esmd ").text(st.version.empty() ? "?" : st.version).raw(", Consul ")
      .text(st.consul_version.empty() ? "?" : st.consul_version).raw("</span></p>\n");
  if (!live.ok) p.raw("<div class=\"problem\">").text(live.reason).raw("</div>\n");
  if (!ready.ok) p.raw("<div class=\"problem\">Not ready: ").text(ready.reason).raw("</div>\n");
  if (!st.last_error.empty()) p.raw("<div class=\"problem\">Stopped: ").text(st.last_error).raw("</div>\n");
  if (st.prober && !st.prober->unavailable.empty())
    p.raw("<div class=\"problem\">Node pings cannot be sent: ").text(st.prober->unavailable).raw("</div>\n");
  if (st.consul && !st.consul->last_error.empty()) {
    bool failing = st.consul->last_failure && (!st.consul->last_answer || *st.consul->last_failure > *st.consul->last_answer);
    p.raw(failing ? "<div class=\"problem\">" : "<p class=\"note\">").raw("Last Consul error");
    if (st.consul->last_failure) p.raw(" (").text(age_text(now - *st.consul->last_failure)).raw(" ago)");
    p.raw(": ").text(st.consul->last_error).raw(failing ? "</div>\n" : "</p>\n");
  }

  p.raw("<h2>Instance</h2>\n<table class=\"kv\">\n");
  p.row("Instance ID", st.instance_id);
  p.row("Registered", st.instance.membership.registered ? "yes" : "no");
  p.row("Started", age_text(std::chrono::duration_cast<steady::duration>(std::chrono::system_clock::now() - st.started_at)) + " ago");
  if (!st.consul_leader.empty()) p.row("Consul leader", st.consul_leader);
  if (st.consul) {
    p.row("Consul requests", std::to_string(st.consul->requests) + " (" + std::to_string(st.consul->errors) +
                                 " error answers, " + std::to_string(st.consul->failures) + " without answer)");
    p.row("Last Consul answer", st.consul->last_answer ? age_text(now - *st.consul->last_answer) + " ago" : "never");
  }
  p.raw("</table>\n");

  // ---- leadership: the instances and the whole assignment are known to the leader only
  p.raw("<h2>Leader</h2>\n");
  if (st.instance.election.is_leader) {
    p.raw("<p>This instance leads.</p>\n<table class=\"kv\">\n");
    p.row_num("Healthy instances", st.leader.instances);
    p.row_num("External nodes assigned", st.leader.nodes);
    p.row_num("Assignments computed", st.leader.computations);
    p.row_num("Rebalances written", st.leader.rebalances);
    p.row_num("Nodes moved", st.leader.nodes_moved);
    p.row_num("Failures", st.leader.failures);
    p.raw("</table>\n");
  } else {
    p.raw("<p class=\"note\">Another instance leads; the instances and their shares are shown on the leader's page.</p>\n");
  }

  // ---- the share
  p.raw("<h2>This instance's share</h2>\n<table class=\"kv\">\n");
  p.row_num("Assignments received", st.worker.assignments);
  p.row_num("Nodes (checks only)", st.worker.current.nodes.size());
  p.row_num("Probe nodes (checks and pings)", st.worker.current.probes.size());
  p.row_num("Health checks handed over", st.worker.checks);
  p.raw("</table>\n");

  // ---- checks
  // Counted in place; only the rows shown are copied (outputs only when shown).
  auto sel = select_checks(st, 0, limits.max_check_rows, limits.show_outputs);
  const auto& counts = sel.counts;
  const auto& rows = sel.rows;
  p.raw("<h2>Checks</h2>\n");
  if (!st.checks) {
    p.raw("<p class=\"note\">The check engine is not running.</p>\n");
  } else {
    p.raw("<p>");
    for (std::string_view s : {"critical", "warning", "passing"}) {
      auto it = counts.by_status.find(std::string(s));
      p.badge(s, std::string(s) + " " + std::to_string(it == counts.by_status.end() ? 0 : it->second)).raw(" ");
    }
    for (auto& [s, n] : counts.by_status)
      if (status_rank(s) > 2) p.badge(status_class(s), s + " " + std::to_string(n)).raw(" ");
    p.raw(" <span class=\"note\">").num(counts.total).raw(" checks;");
    for (auto& [k, n] : counts.by_kind) p.raw(" ").text(k).raw(" ").num(n);
    p.raw("</span></p>\n");
    if (!rows.empty()) {
      p.raw("<table><tr><th>Status</th><th>Node</th><th>Check</th><th>Type</th>");
      if (limits.show_outputs) p.raw("<th>Output</th>");
      p.raw("<th>Runs</th></tr>\n");
      for (auto& r : rows) {
        p.raw("<tr><td>").badge(status_class(r.status), r.status);
        if (r.write_pending) p.raw(" <span class=\"note\">(catalog: ").text(r.catalog_status).raw(")</span>");
        p.raw("</td><td>").text(r.node).raw("</td><td>").text(r.name.empty() ? r.check_id : r.name);
        if (!r.name.empty() && r.name != r.check_id) p.raw("<br><span class=\"note\">").text(r.check_id).raw("</span>");
        if (!r.service_id.empty()) p.raw("<br><span class=\"note\">service ").text(r.service_id).raw("</span>");
        p.raw("</td><td>").text(r.kind).raw("</td><td>");
        if (limits.show_outputs) {
          bool cut_off = false;
          auto out = cut(r.output, limits.max_output_bytes, cut_off);
          p.raw("<pre>").text(out);
          if (cut_off) p.raw("…");
          p.raw("</pre></td><td>");
        }
        p.num(r.runs).raw("</td></tr>\n");
      }
      p.raw("</table>\n");
      if (rows.size() < counts.total)
        p.raw("<p class=\"note\">").num(counts.total - rows.size()).raw(" more checks not listed.</p>\n");
      if (!limits.show_outputs)
        p.raw("<p class=\"note\">Check outputs are shown with <code>enable_debug</code>.</p>\n");
    }
  }

  // ---- probe nodes
  p.raw("<h2>Probe nodes</h2>\n");
  if (!st.prober) {
    p.raw("<p class=\"note\">The node prober is not running.</p>\n");
  } else {
    p.raw("<p>").badge("alive", "alive " + std::to_string(st.prober->alive)).raw(" ");
    p.badge("dead", "dead " + std::to_string(st.prober->dead)).raw(" <span class=\"note\">");
    p.num(st.prober->nodes).raw(" nodes, ").num(st.prober->pings).raw(" pings, ").num(st.prober->replies).raw(" replies</span></p>\n");
    auto nodes = select_nodes(st, 0, limits.max_node_rows);
    if (!nodes.rows.empty()) {
      p.raw("<table><tr><th>Node</th><th>Address</th><th>Newest ping</th><th>Written</th><th>Round trip</th></tr>\n");
      for (auto& n : nodes.rows) {
        p.raw("<tr><td>").text(n.name).raw("</td><td>").text(n.address).raw("</td><td>").badge(n.outcome, n.outcome);
        p.raw("</td><td>").text(n.written).raw("</td><td>");
        if (n.last_rtt.count() > 0)
          p.text(std::to_string(std::chrono::duration<double, std::milli>(n.last_rtt).count()).substr(0, 6) + " ms");
        p.raw("</td></tr>\n");
      }
      p.raw("</table>\n");
      if (nodes.rows.size() < nodes.total)
        p.raw("<p class=\"note\">").num(nodes.total - nodes.rows.size()).raw(" more nodes not listed.</p>\n");
    }
  }

  p.raw("<p class=\"note\">JSON: <a href=\"/v1/status\">/v1/status</a>. Probes: <a href=\"/healthz\">/healthz</a>, "
        "<a href=\"/readyz\">/readyz</a>, <a href=\"/metrics\">/metrics</a>.</p>\n");
  p.raw("</body></html>\n");
  return std::move(p.out);
}

}  // namespace esm::telemetry
