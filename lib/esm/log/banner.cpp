#include "esm/log/banner.hpp"

#include <ostream>
#include <string_view>

#include "esm/log/format.hpp"
#include "esm/util/duration.hpp"

namespace esm::log {
namespace {

// consul-esm pads its labels by hand to the longest one, "Node Reconnect Timeout".
void line(std::ostream& out, std::string_view label, std::string_view value) {
  constexpr std::size_t width = 22;
  if (label.size() < width) out << std::string(width - label.size(), ' ');
  out << label << ": " << value << '\n';
}

}  // namespace

void print_banner(std::ostream& out, const banner_info& info) {
  using detail::go_quote;
  std::string version = info.version;
  if (version.empty() || version.front() != 'v') version = "v" + version;
  out << "esmd " << version << " running!\n";
  line(out, "Datacenter", info.datacenter.empty() ? "(default)" : go_quote(info.datacenter));
  line(out, "Partition", go_quote(info.partition));
  line(out, "Service", go_quote(info.service));
  line(out, "Service Tag", go_quote(info.service_tag));
  line(out, "Service ID", go_quote(info.service_id));
  line(out, "Node Reconnect Timeout", go_quote(util::format_go_duration(info.node_reconnect_timeout)));
  line(out, "Disable coordinates", info.disable_coordinates ? "true" : "false");
  line(out, "Statsd address", info.statsd_address);
  line(out, "Metrics prefix", info.metrics_prefix);
  out << "\nLog data will now stream in as it occurs:\n\n";
  out.flush();
}

}  // namespace esm::log
