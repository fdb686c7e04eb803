// The check engine: runs the health checks of this instance's share on the one thread, and
// writes their results back to the catalog (reference §6; DESIGN "Decisions" §5-§7).
//
// Scheduling. One binary heap of (due time, check, generation) and ONE steady_timer for all
// checks: a check costs a heap entry and its slot, not a coroutine or timer of its own. A
// check's first run is at a uniformly random point of its interval; each later run is due
// `interval` after the previous run ended, less that run's lateness up to half the interval
// (so that checks bunched by a stall spread out again: run_schedule::next_due). Due checks join a FIFO queue, from which at most
// `max_concurrent` probes run at once, so an overloaded engine delays every check equally
// instead of starving some. A check never runs twice at once. A changed plan (definition,
// interval, timeout, thresholds) restarts that check alone, cancelling a run in progress; an
// unchanged check keeps its counters; a removed check's run is cancelled at once.
//
// Results pass the thresholds (thresholds.hpp) and become the check's *desired* status and
// output (kept only while it differs from the catalog copy, so a steady check holds its
// output once). A desired state that differs from the catalog copy in its status is queued for
// writing at once; one that differs only in its output waits `check_update_interval` (0: at
// once), and a status change in the meantime supersedes it. The first result after a check
// (re)starts is written at once even when only its output differs: a check registered with no
// output must not stay without one for minutes. (The decisions are in write_plan.hpp.)
//
// Writing. Queued checks are written by compare-and-set transactions (`Check` verb `cas`,
// the full catalog object with the new Status and Output and the ModifyIndex the watch
// delivered: no read before a write), at most 64 operations each, flushed
// `batch_flush_interval` after the first queued change (0: as soon as possible) or at once
// when 64 are queued. A check is queued once however often it changes before the flush, and
// the flush writes its newest desired state, so an older result is never written over a newer
// one. A transaction rolled back because an index was stale re-reads those nodes once and
// is retried once with the fresh indexes (checks that vanished are dropped); failures are
// retried with capped backoff, never dropped. A write's answer is applied by the identity of
// the check it was sent for (slot incarnation), never to a check that reused its slot while
// the write was in flight. A stop flushes the queue before run() returns. Catalog copies delivered by the worker replace
// the engine's only when their ModifyIndex is newer, so a late read cannot undo a write.
//
// Consul before 1.1x copies only the HTTP and TCP fields of a check's Definition in its
// transaction endpoint, so a compare-and-set write of a gRPC (or UDP, H2PING, TCP+TLS) check
// would strip its definition (consul-esm has this bug). The engine notices when its own write
// came back with fewer definition fields, restores the definition by a catalog registration
// and writes that check by registration from then on (not compare-and-set: the newest desired
// state is still what is written).
//
// Services are deregistered after their check stayed critical longer than the definition's
// DeregisterCriticalServiceAfter (checked every `reap_interval`, once per node and service),
// as Consul's agent would do for a local service (§6.8). Namespace and partition of each check
// are carried in its writes and its node re-reads.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/steady_timer.hpp>

#include "esm/checks/plan.hpp"
#include "esm/checks/schedule.hpp"
#include "esm/checks/thresholds.hpp"
#include "esm/consul/types.hpp"
#include "esm/probe/probe.hpp"
#include "esm/sharding/worker.hpp"
#include "esm/util/lag_histogram.hpp"

namespace esm::consul {
class client;
}
namespace esm::async {
class stop_handle;
}

namespace esm::checks {

struct engine_settings {
  engine_settings() {}
  plan_settings plans;  // plans.legacy_thresholds: threshold_mode = "legacy"
  std::size_t max_concurrent = 1024;                     // max_concurrent_probes
  std::chrono::milliseconds batch_flush_interval{500};   // 0: write as soon as possible
  std::chrono::milliseconds check_update_interval{300'000};  // output-only changes; 0: at once
  std::chrono::milliseconds reap_interval{30'000};
  std::chrono::milliseconds retry_base{250};
  std::chrono::milliseconds retry_cap{10'000};           // retry_interval
  // Runs due within this much after a wake-up of the schedule start in that wake-up, a little
  // early, instead of each waking the thread on its own (see schedule_loop). 0: each at its
  // due time.
  std::chrono::milliseconds schedule_slack{20};
};

// Whether `got` lacks a probe field `had` carried (exposed for unit tests).
bool definition_lost(const consul::check_definition& had, const consul::check_definition& got);

// Schedule lag: run start minus due time.
using lag_histogram = util::lag_histogram;

// Probe run durations by check kind (http, tcp, udp, grpc, h2ping: probe_spec's index) and
// result (passing, warning, critical), in fixed buckets for the metrics: a few adds per run.
struct run_duration_histogram {
  static constexpr std::array<double, 11> bounds{0.001, 0.005, 0.01, 0.025, 0.05, 0.1,
                                                 0.25,  0.5,   1.0,  2.5,   10.0};
  struct series {
    std::array<std::uint64_t, bounds.size() + 1> counts{};  // not cumulative; last: +Inf
    double sum = 0;
    std::uint64_t count = 0;
  };
  std::array<std::array<series, 3>, 5> by_kind_status{};
  void add(std::size_t kind, std::size_t status, std::chrono::steady_clock::duration took) {
    if (kind >= 5 || status >= 3) return;
    double s = std::chrono::duration<double>(took).count();
    auto& h = by_kind_status[kind][status];
    std::size_t b = 0;
    while (b < bounds.size() && s > bounds[b]) ++b;
    ++h.counts[b];
    h.sum += s;
    ++h.count;
  }
};

// One thread: plain fields, read by tests, benchmarks and (later) metrics.
struct engine_stats {
  std::uint64_t runs = 0;             // probe runs completed
  std::uint64_t cancelled_runs = 0;   // runs cancelled (check removed or changed, shutdown)
  std::uint64_t failed_runs = 0;      // runs or results that threw (a bug; logged, rescheduled)
  std::uint64_t added = 0, updated = 0, removed = 0;  // reconciliation counts, cumulative
  std::uint64_t unsupported = 0;      // checks currently held that are not run
  std::size_t in_flight = 0, max_in_flight = 0;
  std::size_t queued = 0, max_queued = 0;  // due checks waiting for a probe slot
  std::uint64_t transactions = 0;     // write transactions sent (retries included)
  std::uint64_t write_ops = 0;        // check operations committed
  std::uint64_t stale_retries = 0;    // operations retried after a stale index
  std::uint64_t write_failures = 0;   // transactions that failed and were retried later
  std::uint64_t dropped_writes = 0;   // writes for checks that vanished from the catalog
  std::uint64_t node_rereads = 0;
  std::uint64_t services_reaped = 0;
  std::uint64_t definitions_restored = 0;  // see slot::register_writes
  std::uint64_t registration_writes = 0;   // status writes by catalog registration
  lag_histogram lag;
  run_duration_histogram durations;  // completed probe runs
  // Operations of the last check-update transaction, and of every one (bounds: ops, upper;
  // not cumulative, last: more). Set by the writer.
  std::size_t last_batch_size = 0;
  static constexpr std::array<std::size_t, 7> batch_bounds{1, 2, 4, 8, 16, 32, 64};
  std::array<std::uint64_t, batch_bounds.size() + 1> batch_sizes{};
  std::uint64_t batch_size_sum = 0;
  void record_batch(std::size_t ops) {
    last_batch_size = ops;
    std::size_t b = 0;
    while (b < batch_bounds.size() && ops > batch_bounds[b]) ++b;
    ++batch_sizes[b];
    batch_size_sum += ops;
  }
};

class check_engine : public sharding::assignment_sink {
 public:
  // `consul` may be null: results are then kept but never written (benchmarks of the
  // scheduler and probes alone). `probes` and `consul` must outlive the engine.
  check_engine(boost::asio::any_io_executor ex, consul::client* consul,
               probe::probe_context& probes, engine_settings s);
  ~check_engine() override;
  check_engine(const check_engine&) = delete;
  check_engine& operator=(const check_engine&) = delete;

  void on_nodes(std::vector<consul::node>, std::vector<consul::node>) override {}
  // Reconciles the checks held with `checks` (the complete share): adds, restarts changed
  // ones, removes the rest. Keeps the handles of new and changed checks (no copy: the object
  // is the worker's too). externalNodeHealth is ignored (the node prober owns it).
  void on_checks(const std::vector<sharding::shared_check>& checks) override;
  // The object held for exactly this version of the check, when it is Consul's version at
  // that ModifyIndex (the worker's object, a re-read, or the engine's copy after a write whose
  // answer showed Consul stored exactly that); null otherwise.
  sharding::shared_check held_check(const consul::check_key& k) const override;

  // Runs the schedule, the writer and the service reaper until cancelled (any type with
  // `terminal` set, e.g. the daemon's terminal|total). That first stop ends scheduling, cancels
  // the probes in flight, writes every queued result (and deferred output), then waits for
  // the probes' coroutines to end before returning: a stop loses no result. Each transaction of that flush is
  // bounded by the client's request timeout, and a second cancellation (terminal) aborts the
  // flush at once. Checks handed over before or during the run are kept across runs. Never
  // throws for Consul or probe failures, and a stop never unwinds it by an exception.
  boost::asio::awaitable<void> run();

  const engine_stats& stats() const noexcept { return stats_; }
  engine_stats& stats() noexcept { return stats_; }
  std::size_t size() const noexcept { return index_.size(); }

  // What the engine holds for one check (tests, diagnostics).
  struct check_view {
    std::string catalog_status, catalog_output;  // the engine's copy of the catalog
    // The reported result while the catalog copy differs from it (a write is due); empty
    // once the catalog says the same (the catalog fields are then the reported state).
    std::optional<probe::probe_result> desired;
    std::uint64_t modify_index = 0;
    std::uint64_t runs = 0;
    std::uint32_t starts = 0;  // schedule (re)starts: 1 until its plan changes
    bool running = false, runnable = false, write_queued = false;
  };
  // Every check held, for the status endpoint and /debug/checks (no order). The pointers are
  // valid during the call only.
  struct check_info {
    const consul::health_check* catalog;  // node, IDs, name, the catalog's status and output
    std::string_view kind;                // "http", "tcp", "udp", "grpc", "h2ping"; "unsupported"
    const probe::probe_result* desired;   // the result waiting to be written, if any
    std::uint64_t runs;
    int successes, failures;              // consecutive, as the thresholds count them
    bool running, write_queued;
    std::chrono::steady_clock::time_point last_due;  // when its latest run was due
  };
  void visit_checks(const std::function<void(const check_info&)>& f) const;

  std::optional<check_view> find(std::string_view node, std::string_view check_id,
                                 std::string_view name_space = {},
                                 std::string_view partition = {}) const;

 private:
  struct slot;
  // A check as the writer saw it when it sent a write: the slot may hold another check by the
  // time the answer comes (removed, then the slot reused by a new one).
  struct slot_ref {
    std::uint32_t index;
    std::uint64_t incarnation;
  };
  slot_ref ref_of(std::uint32_t i) const;
  // The slot when it still holds the check `r` names, else null.
  slot* holder(slot_ref r);

  // A check's identity in the engine: partition, namespace, node, check ID. key_of joins
  // them with \x1f (kept by the writer and the reaper across a co_await); key_view_of and
  // split_key refer to the strings they are given.
  struct key_view {
    std::string_view partition, name_space, node, check_id;
    bool operator==(const key_view&) const = default;
  };
  static std::string key_of(const consul::health_check& c);
  static key_view key_view_of(const consul::health_check& c) noexcept;
  static key_view split_key(std::string_view key) noexcept;
  // The index holds slot numbers only: a live slot's key is its catalog object's, which every
  // object the slot is given keeps (a newer version of the same check). Looked up by a
  // key_view (heterogeneous lookup), so neither the index nor a lookup copies a string. A slot
  // leaves the index before it is released (its catalog object reset).
  // Not noexcept on purpose: libstdc++ then keeps each element's hash in its node (8 B),
  // instead of hashing the slot's strings again whenever it walks a bucket or rehashes.
  struct index_hash {
    using is_transparent = void;
    const check_engine* engine;
    std::size_t operator()(std::uint32_t i) const;
    std::size_t operator()(const key_view& k) const;
  };
  struct index_equal {
    using is_transparent = void;
    const check_engine* engine;
    bool operator()(std::uint32_t a, std::uint32_t b) const noexcept { return a == b; }
    bool operator()(const key_view& k, std::uint32_t i) const noexcept;
    bool operator()(std::uint32_t i, const key_view& k) const noexcept { return (*this)(k, i); }
  };
  using check_index = std::unordered_set<std::uint32_t, index_hash, index_equal>;
  check_index::iterator find_slot(const key_view& k) { return index_.find(k); }
  check_index::const_iterator find_slot(const key_view& k) const { return index_.find(k); }
  std::uint32_t allocate_slot();
  void release_slot(std::uint32_t i);
  bool replan(std::uint32_t i, sharding::shared_check before);
  void start_check(std::uint32_t i);
  void schedule_started();
  void stop_check(std::uint32_t i);
  void push_heap(std::chrono::steady_clock::time_point due, std::uint32_t i, bool output_write);
  void fire_due(std::chrono::steady_clock::time_point now);
  void dispatch();
  void start_run(std::uint32_t i);
  void start_probe(std::uint32_t i, std::uint32_t gen, const std::shared_ptr<async::stop_handle>& handle);
  // A run that threw (or could not start) and is still the slot's: ended, counted in
  // failed_runs, scheduled an interval from now, and logged with `message`.
  void fail_run(std::uint32_t i, std::uint32_t gen, std::exception_ptr e, const char* message);
  // `started`: when the run began (a completed run's next due time gives its lateness back,
  // run_schedule::next_due); unused for a cancelled run. `failed`: no result because the run
  // threw (a bug), not because it was cancelled: the check is scheduled again (with `started`
  // unset, one interval after now).
  void finish_run(std::uint32_t i, std::uint32_t generation, std::optional<probe::probe_result> r,
                  std::chrono::steady_clock::time_point started = {}, bool failed = false);
  void apply_result(std::uint32_t i, probe::probe_result r);
  void update_critical_since(std::uint32_t i);
  void queue_write(std::uint32_t i);
  bool needs_write(const slot& s) const;

  boost::asio::awaitable<void> schedule_loop();
  boost::asio::awaitable<void> writer_loop();
  boost::asio::awaitable<void> reaper_loop();
  // `spec`: spec_of the check's definition and plan at the start, owned by the run.
  boost::asio::awaitable<void> run_probe_of(std::uint32_t i, std::uint32_t generation,
                                            probe::probe_spec spec);
  // Writes the queued checks; false when a failure left some queued for a later attempt.
  boost::asio::awaitable<bool> flush();
  boost::asio::awaitable<bool> write_chunk(std::vector<slot_ref> chunk);
  boost::asio::awaitable<bool> write_by_registration(std::vector<slot_ref> ids);
  // After the stop: writes everything queued (and deferred) once, until done, a failure or a
  // second cancellation.
  boost::asio::awaitable<void> flush_at_stop();
  void definition_damaged(std::uint32_t i);
  // Re-reads one node's checks into the catalog copies; the keys the node still has, or
  // nullopt when the read failed.
  boost::asio::awaitable<std::optional<std::vector<std::string>>> reread_node(
      std::string node, std::string name_space, std::string partition);
  void requeue(const std::vector<slot_ref>& ids);

  boost::asio::any_io_executor ex_;
  consul::client* consul_;
  probe::probe_context& probes_;
  engine_settings settings_;
  engine_stats stats_;

  std::vector<std::unique_ptr<slot>> slots_;
  std::vector<std::uint32_t> free_slots_;
  check_index index_;
  run_schedule schedule_;  // the heap of due times and the queue for probe slots
  std::vector<std::uint32_t> write_queue_;
  std::vector<std::uint32_t> started_;  // (re)started during a reconciliation
  std::chrono::steady_clock::time_point first_queued_{};
  std::uint64_t epoch_ = 0;
  std::uint64_t incarnations_ = 0;  // the last slot::incarnation handed out
  bool stopping_ = false;

  boost::asio::steady_timer schedule_wake_;
  boost::asio::steady_timer writer_wake_;
  boost::asio::steady_timer drained_;
};

}  // namespace esm::checks
