// The status page at `/` of the admin server: one server-rendered HTML document with inline
// styles, no script and no external asset (the icon is a data: URL, so a browser asks for
// nothing else). Operators would rather look than read JSON: this instance, whether it leads
// and what it sees as leader, its share, the checks by status with the failing ones first
// (with their outputs only when asked: see page_limits::show_outputs), the probe nodes, and
// what keeps pings or Consul from working. Only the rows shown are copied from the engine.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "esm/daemon/status.hpp"
#include "esm/telemetry/status_json.hpp"

namespace esm::telemetry {

// Text for HTML element content and quoted attribute values: & < > " ' escaped.
std::string html_escape(std::string_view text);

struct page_limits {
  std::size_t max_check_rows = 500;  // failing checks first; the rest is counted, not listed
  std::size_t max_node_rows = 200;
  std::size_t max_output_bytes = 4096;  // per check output, cut on a UTF-8 boundary
  // Check outputs are HTTP bodies and may name URLs with credentials in them: the admin
  // server shows them only with enable_debug, as anyone who reaches client_address can read
  // this page. Without, the rows and their statuses are shown, not the outputs.
  bool show_outputs = false;
};

// The page's title is "esmd <instance id>".
std::string status_page(const daemon::daemon_status& st, steady::time_point now,
                        const probe_answer& live, const probe_answer& ready, page_limits limits = {});

}  // namespace esm::telemetry
