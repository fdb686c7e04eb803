// What the admin server says about the daemon, computed from the status registry alone: the
// liveness and readiness decisions (pure functions of the registry and a time, unit-tested),
// the bodies of /v1/status, /debug/checks and /debug/nodes, and the check rows the status page
// shows. One thread: the registry is read between awaits, and nothing here keeps a pointer
// into it past the call.
#pragma once

#include <algorithm>
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

// How recent Consul's last successful answer must be for the daemon to count as connected,
// when nothing else is known (tests). The daemon sets admin_settings::consul_fresh from
// consul_fresh_for(blocking_query_wait): a quiet share's blocking queries answer only once per
// wait, so a window shorter than the wait would flap.
inline constexpr std::chrono::seconds consul_fresh_default{30};
// max(30 s, wait * 17/16 + 5 s): Consul adds up to wait/16 of jitter to a blocking query, and
// 5 s covers the round trip and the client's re-issue.
inline std::chrono::milliseconds consul_fresh_for(std::chrono::milliseconds blocking_wait) {
  auto w = blocking_wait * 17 / 16 + std::chrono::milliseconds(5'000);
  return std::max<std::chrono::milliseconds>(consul_fresh_default, w);
}

// Ready while: the daemon runs (not starting or stopping); Consul answered successfully (2xx,
// or 404: client_stats::last_ok; a 403 ACL denial or a 5xx without a cluster leader does not
// count) within `consul_fresh` of `now`, and no request failed without an answer after that;
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
// Worst first: "critical" 0, "warning" 1, "passing" 2, "maintenance" 3, anything else 4.
int status_rank(std::string_view status);

struct check_counts {
  std::size_t total = 0;
  // std::less<>: counted by string_view lookups, without a string per check.
  std::map<std::string, std::size_t, std::less<>> by_status, by_kind;
};

inline constexpr std::size_t all_rows = static_cast<std::size_t>(-1);

// The checks the engine holds (none while there is no engine) in this order: critical, then
// warning, then the rest, each by node, check ID, namespace and partition. Only the rows
// [offset, offset + limit) of that order are copied, and their outputs only with `outputs`;
// the counts are of every check. One pass over the engine, no copy of a check that is not
// returned, and a bounded selection (a heap of offset + limit entries), so that a page of a
// large engine (100 000 checks) costs little more than counting it.
struct check_selection {
  check_counts counts;
  std::vector<check_row> rows;
};
check_selection select_checks(const daemon::daemon_status& st, std::size_t offset = 0,
                              std::size_t limit = all_rows, bool outputs = true);
// Every check, in that order (small engines and tests).
std::vector<check_row> collect_checks(const daemon::daemon_status& st);
// Counted in place: no row is copied.
check_counts count_checks(const daemon::daemon_status& st);
check_counts count_checks(const std::vector<check_row>& rows);

struct node_row {
  std::string name, address;
  std::string outcome, written;  // "alive", "dead", "unknown"
  bool key_exists = false, in_flight = false, queued = false;
  std::uint64_t pings = 0;
  std::chrono::nanoseconds last_rtt{0};
  std::optional<std::chrono::system_clock::time_point> since;  // of the probes key
  std::optional<ping::coordinate> coord;  // filled with `coordinates` only (/debug/nodes)
};
// The probe nodes (none while there is no prober), dead first, then by name: the rows
// [offset, offset + limit) of that order, selected like select_checks'; `total` is of all.
struct node_selection {
  std::size_t total = 0;
  std::vector<node_row> rows;
};
node_selection select_nodes(const daemon::daemon_status& st, std::size_t offset = 0,
                            std::size_t limit = all_rows, bool coordinates = false);
std::vector<node_row> collect_nodes(const daemon::daemon_status& st);

// ---- bodies -----------------------------------------------------------------------------

// /v1/status: instance, mode, phase, leadership, the healthy instances the leader sees, the
// share, checks by status and type (counted, no check output), probe nodes, Consul's last
// error, versions, readiness.
// Steady times are given as ages in seconds before `now`. One JSON object, no trailing newline.
std::string status_json(const daemon::daemon_status& st, steady::time_point now,
                        steady::duration consul_fresh = consul_fresh_default);
// /debug/checks and /debug/nodes are paged, so that no answer grows with the engine: at most
// `limit` rows from `offset` (admin_server parses ?limit= and ?offset=, default 1000, at most
// 10 000).
inline constexpr std::size_t debug_limit_default = 1000, debug_limit_max = 10'000;
// /debug/checks: {"total":N,"offset":o,"limit":l,"checks":[{...}, ...]} in collect_checks'
// order, with outputs (debug only).
std::string debug_checks_json(const daemon::daemon_status& st, steady::time_point now,
                              std::size_t offset = 0, std::size_t limit = debug_limit_default);
// /debug/nodes: {"total":N,"offset":o,"limit":l,"nodes":[{...}, ...]} in collect_nodes' order,
// each with its coordinate (null while none is known).
std::string debug_nodes_json(const daemon::daemon_status& st, std::size_t offset = 0,
                             std::size_t limit = debug_limit_default);

// "12s", "1m30s", "2h3m": coarse ages for the page and the reasons.
std::string age_text(steady::duration d);

}  // namespace esm::telemetry
