// What the admin server says about the daemon, computed from the status registry alone: the
// liveness and readiness decisions (pure functions of the registry and a time, unit-tested),
// the bodies of /v1/status, /debug/checks and /debug/nodes, and the check rows the status page
// shows. One thread: the registry is read between awaits, and nothing here keeps a pointer
// into it past the call.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "esm/daemon/status.hpp"

namespace esm::telemetry {

using steady = std::chrono::steady_clock;

// ---- liveness (/healthz) ----------------------------------------------------------------

// A gap between two heartbeats longer than the stall threshold: the loop was blocked. It is
// remembered for one threshold after it ended, because on one thread the server can only
// answer after the stall, when the next heartbeat may already have run.
struct loop_stall {
  steady::time_point ended;
  steady::duration length{};
};

struct probe_answer {
  bool ok = false;
  std::string reason;  // empty when ok
};

// Alive unless the heartbeat is older than `threshold` at `now`, or a stall longer than
// `threshold` ended less than `threshold` before `now`.
probe_answer liveness(const daemon::daemon_status& st, const std::optional<loop_stall>& last_stall,
                      steady::time_point now, steady::duration threshold);

// ---- readiness (/readyz) ----------------------------------------------------------------

// How recent Consul's last answer must be for the daemon to count as connected.
inline constexpr std::chrono::seconds consul_fresh_default{30};

// Ready while: the daemon runs (not starting or stopping); Consul answered (any HTTP status)
// within `consul_fresh` of `now` and no request failed without an answer after that answer;
// this instance is registered; and at least one share (assignment) was received. The reason
// names the first condition that does not hold.
probe_answer readiness(const daemon::daemon_status& st, steady::time_point now,
                       steady::duration consul_fresh = consul_fresh_default);

// ---- the checks and nodes, as plain rows ------------------------------------------------

struct check_row {
  std::string node, check_id, name, service_id, service_name, name_space, partition;
  std::string kind;     // "http", "tcp", ...; "unsupported"
  std::string status;   // the reported one: the result waiting to be written, else the catalog's
  std::string output;   // likewise
  std::string catalog_status;
  bool write_pending = false;  // the reported result differs from the catalog copy
  bool write_queued = false, running = false;
  std::uint64_t runs = 0;
  int successes = 0, failures = 0;  // consecutive
  std::optional<steady::time_point> last_due;
};
// Every check the engine holds (none while there is no engine), failing first: critical,
// then warning, then the rest, each by node and check ID.
std::vector<check_row> collect_checks(const daemon::daemon_status& st);
// Worst first: "critical" 0, "warning" 1, "passing" 2, "maintenance" 3, anything else 4.
int status_rank(std::string_view status);

struct node_row {
  std::string name, address;
  std::string outcome, written;  // "alive", "dead", "unknown"
  bool key_exists = false, in_flight = false, queued = false;
  std::uint64_t pings = 0;
  std::chrono::nanoseconds last_rtt{0};
  std::optional<std::chrono::system_clock::time_point> since;  // of the probes key
};
// Every probe node (none while there is no prober), dead first, then by name.
std::vector<node_row> collect_nodes(const daemon::daemon_status& st);

struct check_counts {
  std::size_t total = 0;
  std::map<std::string, std::size_t> by_status, by_kind;
};
check_counts count_checks(const std::vector<check_row>& rows);

// ---- bodies -----------------------------------------------------------------------------

// /v1/status: instance, mode, phase, leadership, the healthy instances the leader sees, the
// share, checks by status and type, probe nodes, Consul's last error, versions, readiness.
// Steady times are given as ages in seconds before `now`. One JSON object, no trailing newline.
std::string status_json(const daemon::daemon_status& st, steady::time_point now,
                        steady::duration consul_fresh = consul_fresh_default);
// /debug/checks: {"checks":[{...}, ...]} in collect_checks' order.
std::string debug_checks_json(const daemon::daemon_status& st, steady::time_point now);
// /debug/nodes: {"nodes":[{...}, ...]} in collect_nodes' order.
std::string debug_nodes_json(const daemon::daemon_status& st);

// "12s", "1m30s", "2h3m": coarse ages for the page and the reasons.
std::string age_text(steady::duration d);

}  // namespace esm::telemetry
