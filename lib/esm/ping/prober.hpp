// The node prober (reference §7; DESIGN "Decisions"): pings every node of this instance's
// `Probes` share about once per `node_probe_interval`, keeps its externalNodeHealth check and
// its network coordinate in Consul, and reaps nodes that stayed unreachable for
// `node_reconnect_timeout`. One more child of the daemon, fed by the worker (set_nodes).
//
// Pings. One ICMP socket per address family for all nodes (pinger.hpp). Each node's first
// ping is spread over the interval (nodes that arrive together are placed evenly, a few that
// join later within a second), then one every interval from its due time, so the rate stays
// even. At most one ping per node is in flight (a node still waiting for its reply skips its
// turn) and at most `max_in_flight` in total (the rest wait, late, in due order). Names are
// resolved asynchronously, each lookup waited for at most the ping timeout, and kept for a
// minute (a failure for 10 s). A node removed from the share is dropped at once, with its ping
// in flight and its unwritten state; a node reaped and registered again starts fresh. A ping
// this host could not send (a firewall refusing it, no buffers) gives no outcome at all.
//
// Permissions. If the sockets cannot be opened (no `net.ipv4.ping_group_range` for the
// process group, no CAP_NET_RAW), the reason is logged once, kept in stats().unavailable for
// the status endpoint, nothing is written for any node (consul-esm reports every node alive
// then, W18), and the sockets are retried every `reopen_interval` (IPv6 too when only IPv4
// opened).
//
// Writes (reference §7.3, §7.4; decisions in node_health.hpp). A ping's outcome queues the
// node; the queue is flushed like the check engine's (checks/write_plan.hpp: flush_time,
// plan_rollback): `batch_flush_interval` after the first queued node or at once when 64
// operations are queued, in transactions of at most 64 operations, a node's operations
// always in the same one. What is written is decided at send time from the node's newest
// outcome and the prober's copy of its probes key: the check `set` (the prober owns
// externalNodeHealth on its nodes), the key created only if absent (cas 0) or removed at its
// index (delete-cas), the node reaped by a node delete-cas at its catalog ModifyIndex. A
// rolled-back transaction re-reads the probes keys (and, for a stale reap, the node) of the
// operations that failed and is retried once; a conflict never overwrites another
// instance's critical-since. A transaction whose outcome is unknown (a timeout) makes the
// keys it touched unknown: they are read again before the next decision. Nothing is written
// while nodes that joined wait for the key list that covers them.
//
// Requests. The probes keys are listed once at start and again when nodes join the share;
// the agent's coordinate is read every `agent_coordinate_refresh`; node coordinates are read
// once at start (one read per node that joins later, before its first write) and then kept
// from what the prober writes, and a coordinate is written only when it moved 1 ms or more
// (rate-limited: Consul's servers drop updates beyond about 128 per second). In the steady state that is far below one request per ping (consul-esm: 3-5).
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <unordered_map>
#include <vector>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/ip/udp.hpp>
#include <boost/asio/steady_timer.hpp>

#include "esm/consul/types.hpp"
#include "esm/ping/node_health.hpp"
#include "esm/ping/pinger.hpp"
#include "esm/ping/vivaldi.hpp"
#include "esm/util/lag_histogram.hpp"

namespace esm::consul {
class client;
}

namespace esm::ping {

struct prober_settings {
  prober_settings() {}  // not an aggregate: see the g++ 12 note in consul/client.hpp
  std::string kv_path = "consul-esm/";  // consul_kv_path, ends in '/'
  std::string partition;                // carried on every write; empty: the client's
  socket_kind kind = socket_kind::udp;  // ping_type
  std::chrono::milliseconds interval{10'000};  // node_probe_interval
  std::chrono::milliseconds timeout{5'000};    // node_probe_timeout
  health_timing health;                        // refresh and reconnect timeout
  std::chrono::milliseconds batch_flush_interval{500};
  bool coordinates = true;                     // !disable_coordinate_updates
  std::size_t max_in_flight = 10'000;
  std::chrono::milliseconds reopen_interval{30'000};
  std::chrono::milliseconds agent_coordinate_refresh{300'000};
  double coordinate_writes_per_second = 50;
  std::chrono::milliseconds retry_base{250};
  std::chrono::milliseconds retry_cap{10'000};  // retry_interval
};

// One thread: plain fields, read by tests, benchmarks and the status endpoint.
struct prober_stats {
  std::size_t nodes = 0;                 // probe nodes held
  std::size_t alive = 0, dead = 0;       // by their newest outcome
  std::uint64_t pings = 0, replies = 0, failures = 0;
  std::uint64_t skipped_busy = 0;        // turns skipped: the previous ping still waited
  std::uint64_t local_errors = 0;        // pings this host could not send (no outcome)
  std::string last_local_error;
  std::size_t in_flight = 0, max_in_flight = 0;
  std::uint64_t transactions = 0;        // write transactions sent (retries included)
  std::uint64_t check_writes = 0, key_creates = 0, key_deletes = 0;
  std::uint64_t write_failures = 0, conflicts = 0, refused = 0;
  std::uint64_t nodes_reaped = 0;
  std::uint64_t coordinate_writes = 0, coordinate_skips = 0, coordinate_failures = 0;
  std::uint64_t coordinate_refusals = 0;  // of coordinate_failures: HTTP 403 (the token's policy)
  std::uint64_t consul_reads = 0;        // key lists and re-reads, coordinates, agent self
  std::string unavailable;               // why no ping can be sent; empty when they can
  std::string unavailable_v6;            // why IPv6 nodes cannot be pinged; empty when they can
  util::lag_histogram lateness;          // ping start minus its due time
  std::uint64_t consul_requests() const { return transactions + consul_reads + coordinate_writes + coordinate_failures;
  }
};

class node_prober {
 public:
  // `consul` may be null: pings only, nothing written (benchmarks of the prober alone).
  node_prober(boost::asio::any_io_executor ex, consul::client* consul, prober_settings s);
  ~node_prober();
  node_prober(const node_prober&) = delete;
  node_prober& operator=(const node_prober&) = delete;

  // The complete set of nodes to ping (the worker's ping_nodes). Cheap for unchanged nodes.
  void set_nodes(const std::vector<consul::node>& nodes);

  // Pings and writes until cancelled (any type with `terminal`); then stops the pings, writes
  // what is queued (bounded by the client's request timeout; a second cancellation cuts it
  // short) and returns once every ping's coroutine has ended. Never throws for Consul or
  // network failures; a stop never unwinds it by an exception.
  boost::asio::awaitable<void> run();

  const prober_stats& stats() const noexcept { return stats_; }
  const pinger_stats& ping_stats() const { return pinger_.stats(); }

  struct node_view {
    node_status outcome = node_status::unknown;   // newest ping outcome
    node_status written = node_status::unknown;   // last status written
    bool key_exists = false;
    std::optional<sys_nanoseconds> since;
    std::optional<coordinate> coord;              // as written to (or read from) Consul
    std::uint64_t pings = 0;
    std::chrono::nanoseconds last_rtt{0};        // of the newest reply
    bool in_flight = false, queued = false;
  };
  std::optional<node_view> find(const std::string& node) const;
  // Every probe node, for the status endpoint and /debug/nodes (no order).
  void visit_nodes(const std::function<void(const std::string& name, const std::string& address,
                                            const node_view&)>& f) const;

 private:
  struct slot;
  struct slot_ref {
    std::uint32_t index;
    std::uint64_t incarnation;
  };
  struct due_entry {
    std::chrono::steady_clock::time_point due;
    std::uint32_t index;
    std::uint64_t incarnation;
    bool operator>(const due_entry& o) const { return due > o.due; }
  };

  static node_view view_of(const slot& s);
  bool usable_coordinate(const coordinate& c) const;
  slot* holder(slot_ref r);
  slot_ref ref_of(std::uint32_t i) const;
  std::uint32_t allocate();
  void release(std::uint32_t i);
  void schedule(std::uint32_t i, std::chrono::steady_clock::time_point due);
  void dispatch(std::chrono::steady_clock::time_point now);
  void start_ping(std::uint32_t i, std::chrono::steady_clock::time_point due);
  void apply_outcome(std::uint32_t i, const ping_outcome& o);
  void queue_write(std::uint32_t i);
  // Queues the node for the coordinate loop: a read of Consul's copy while it is unknown,
  // else a write of the step next_coordinate computes then.
  void queue_coordinate(std::uint32_t i);
  std::optional<coordinate> next_coordinate(const slot& s);
  void respread(std::chrono::steady_clock::time_point now);
  void compact();

  boost::asio::awaitable<void> ping_node(slot_ref r);
  boost::asio::awaitable<void> schedule_loop();
  boost::asio::awaitable<void> writer_loop();
  boost::asio::awaitable<void> coordinate_loop();
  boost::asio::awaitable<void> upkeep_loop();
  boost::asio::awaitable<bool> open_sockets();
  boost::asio::awaitable<bool> list_keys();
  boost::asio::awaitable<void> read_coordinates();
  boost::asio::awaitable<void> read_agent_coordinate();
  boost::asio::awaitable<bool> flush();
  boost::asio::awaitable<bool> write_chunk(std::vector<slot_ref> chunk);
  boost::asio::awaitable<void> reread_key(std::string node);
  boost::asio::awaitable<void> reread_node(std::string node);
  void requeue(const std::vector<slot_ref>& refs);

  std::string key_of(const std::string& node) const { return settings_.kv_path + "probes/" + node; }

  boost::asio::any_io_executor ex_;
  consul::client* consul_;
  prober_settings settings_;
  prober_stats stats_;
  pinger pinger_;
  vivaldi_config vivaldi_;
  std::mt19937_64 rng_;
  boost::asio::ip::udp::resolver resolver_;

  std::vector<std::unique_ptr<slot>> slots_;
  std::vector<std::uint32_t> free_;
  std::unordered_map<std::string, std::uint32_t> index_;
  std::vector<due_entry> heap_;  // min-heap on due
  std::vector<std::uint32_t> write_queue_;
  std::chrono::steady_clock::time_point first_queued_{};
  std::deque<slot_ref> coordinate_queue_;
  std::optional<coordinate> local_;        // the agent's coordinate
  std::uint64_t incarnations_ = 0;
  bool open_ = false, stopping_ = false, keys_listed_ = false;
  bool relist_keys_ = false;               // nodes joined since the last key list
  bool listing_ = false;                   // a key list is on its way
  bool started_ = false;                   // the first set of nodes was placed
  bool coordinates_read_ = false;          // the node coordinates were read once
  bool agent_coordinate_missing_logged_ = false;
  std::chrono::steady_clock::time_point next_coordinate_warning_{};  // refusals: one WARN a minute
  std::uint64_t write_epoch_ = 0;          // counts the prober's own key changes

  boost::asio::steady_timer schedule_wake_;
  boost::asio::steady_timer writer_wake_;
  boost::asio::steady_timer coordinate_wake_;
  boost::asio::steady_timer upkeep_wake_;
  boost::asio::steady_timer drained_;
};

}  // namespace esm::ping
