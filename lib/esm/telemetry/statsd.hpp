// Push sinks: statsd (UDP), statsite (TCP, as go-metrics' statsite sink) and DogStatsD (UDP
// with tags), flushed every 10 s from collect_all (collect.hpp), as go-metrics would send them:
//   - gauges `key:value|g` with the host name inserted after the metrics_prefix (esmd's own:
//     first) unless disable_hostname (DogStatsD: never; go-metrics' DogStatsD sink splices it out again);
//   - counters as deltas since the previous flush, `key:delta|c` (none when unchanged);
//     DogStatsD's as whole numbers, the fraction carried to the next flush (below);
//   - gauge or counter as go-metrics calls the value (metric_family::kind), not as /metrics
//     types it: `esm.checks.count` is a gauge here, consul-esm's untyped counters counters;
//   - esmd's histograms as one timer sample per flush, the mean of the flush interval's
//     observations in milliseconds `key:ms|ms` (none when nothing was observed);
//   - labels appended to the key as `.value` parts (statsd, statsite) or sent as DogStatsD
//     tags `name:value` after dogstatsd_tags (`|#tag1,tag2`);
//   - `:` and ` ` in keys replaced by `_`; the prefix filter sees the key as sent.
// UDP datagrams hold whole lines, at most 1400 bytes (go-metrics' statsdMaxLen) or 1432 for
// DogStatsD (datadog-go's optimal UDP payload), sent with non-blocking send_to: a full buffer
// or an absent listener costs a counted error, never a wait. statsite's TCP connection is
// made and written asynchronously with a bounded buffer (what does not fit is dropped and
// counted) and reconnected with capped backoff (5 s doubling to 60 s) after a failure, so a
// slow or absent peer never stalls the loop. Errors are counted, and logged at WARN once per
// change of a sink from working to failing and back, with its address and the error, never
// per packet.
//
// Addresses: a literal IP address is used as it is; a host name is looked up through Asio's
// resolver, whose getaddrinfo (Asio 1.81) cannot be cancelled. Each wait for a lookup is
// bounded by lookup_timeout and ends at once on cancellation; the lookup itself is abandoned
// (its answer, when it comes, lands in state it shares with its handler and is used by the
// next attempt), so a DNS outage never holds up the flush loop or the daemon's stop.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>

#include "esm/config/config.hpp"
#include "esm/daemon/status.hpp"
#include "esm/telemetry/collect.hpp"

namespace esm::telemetry {

struct sink_options {
  sink_options() {}
  std::chrono::milliseconds interval{10'000};  // go-metrics' default for these sinks
  std::size_t statsd_max_packet = 1400;
  std::size_t dogstatsd_max_packet = 1432;
  std::size_t statsite_buffer = 256 * 1024;     // bytes queued for the TCP peer at most
  std::chrono::milliseconds reconnect_min{5'000}, reconnect_max{60'000};
  // Longest wait for a host name's lookup: the flush (every sink's) waits for it, so well
  // under the interval; glibc's own retries with DNS down take 5 s per server and attempt.
  std::chrono::milliseconds lookup_timeout{2'000};
};

// What the sinks did (one thread: plain fields), for tests and the status page.
struct sink_stats {
  std::uint64_t flushes = 0;
  std::uint64_t packets = 0, packet_bytes = 0;  // UDP datagrams handed to the kernel
  std::uint64_t send_errors = 0;                // UDP sends refused (would block, refused, ...)
  std::uint64_t resolve_failures = 0;           // lookups failed or given up (timeouts included)
  std::uint64_t lookups = 0, lookup_timeouts = 0;  // queries handed to the resolver; waits given up
  std::uint64_t statsite_connects = 0, statsite_connect_failures = 0;
  std::uint64_t statsite_bytes = 0, statsite_dropped_bytes = 0;
};

// The lines of one flush for one sink kind (exposed for unit tests). `previous` holds the
// counter values and histogram sums and counts of the previous flush, and is updated; at the
// first flush the counters' whole values are sent (they count from the process start). For
// DogStatsD a counter's remembered value advances by the whole number sent, so the fraction
// left over is sent once it adds up to 1 (0.3 s of CPU per flush: 0, 0, 0, 1, ...).
enum class sink_kind { statsd, statsite, dogstatsd };
struct flush_state {
  std::map<std::string, double> last;  // series id -> value at the previous flush
};
std::vector<std::string> format_lines(const std::vector<metric_family>& families, const telemetry_settings& s,
                                      sink_kind kind, flush_state& previous);

// Batches lines (each ending in '\n') into datagrams of at most `max` bytes (a longer line
// alone in its own).
std::vector<std::string> pack_lines(const std::vector<std::string>& lines, std::size_t max);

// Flushes to every configured sink until cancelled (any type, honoured at the wait between
// flushes); returns at once when none is configured. `st` must outlive the call; so must
// `stats` when given. Never throws for network failures.
boost::asio::awaitable<void> run_statsd_sinks(boost::asio::any_io_executor ex, const daemon::daemon_status& st,
                                              telemetry_settings s, sink_options o = {},
                                              sink_stats* stats = nullptr);

// Whether the telemetry block configures Circonus (a token or a submission URL, as Consul's
// sink decides; any circonus_* key at all counts): esmd has no Circonus sink, and the daemon
// says so at startup.
bool circonus_configured(const config::telemetry_config& t);

}  // namespace esm::telemetry
