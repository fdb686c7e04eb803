// The check engine's schedule, result handling and reconciliation; the writer and the reaper
// are in writer.cpp. See engine.hpp for the design.
#include "esm/checks/engine.hpp"

#include <algorithm>
#include <exception>

#include <boost/system/system_error.hpp>

#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/this_coro.hpp>

#include "esm/log/log.hpp"
#include "esm/checks/slot.hpp"
#include "esm/checks/write_plan.hpp"
#include "esm/util/async.hpp"

namespace esm::checks {

namespace asio = boost::asio;
using namespace asio::experimental::awaitable_operators;
using clock = std::chrono::steady_clock;
using std::chrono::milliseconds;
using async::tuple_awaitable;

namespace {

}  // namespace

// Fields of `had` that `got` lacks or changed (a definition that went through Consul's
// transaction endpoint of a version that does not carry them).
bool definition_lost(const consul::check_definition& had, const consul::check_definition& got) {
  auto lost = [](std::string_view a, std::string_view b) { return !a.empty() && a != b; };
  return lost(had.http, got.http) || lost(had.tcp, got.tcp) || lost(had.udp, got.udp) ||
         lost(had.grpc, got.grpc) || lost(had.h2ping, got.h2ping) ||
         lost(had.tls_server_name, got.tls_server_name) || lost(had.method, got.method) ||
         lost(had.body, got.body) || (had.tcp_use_tls && !got.tcp_use_tls) ||
         (had.grpc_use_tls && !got.grpc_use_tls) ||
         (had.disable_redirects && !got.disable_redirects) ||
         (!had.header.empty() && had.header != got.header);
}

check_engine::check_engine(asio::any_io_executor ex, consul::client* consul,
                           probe::probe_context& probes, engine_settings s)
    : ex_(ex),
      consul_(consul),
      probes_(probes),
      settings_(std::move(s)),
      index_(0, index_hash{this}, index_equal{this}),
      // The slack at most a tenth of the shortest interval a check can have: a check whose
      // interval is within the slack would otherwise start again the moment it ended.
      schedule_(settings_.max_concurrent, std::random_device{}(),
                std::min(settings_.schedule_slack, settings_.plans.min_interval / 10)),
      schedule_wake_(ex, clock::time_point::max()),
      writer_wake_(ex, clock::time_point::max()),
      drained_(ex, clock::time_point::max()) {
}

check_engine::~check_engine() = default;

std::string check_engine::key_of(const consul::health_check& c) {
  // Namespace and partition first: the same node and check ID can exist in several.
  std::string k;
  k.reserve(c.partition.size() + c.name_space.size() + c.node.size() + c.check_id.size() + 3);
  k += c.partition;
  k += '\x1f';
  k += c.name_space;
  k += '\x1f';
  k += c.node;
  k += '\x1f';
  k += c.check_id;
  return k;
}

check_engine::key_view check_engine::key_view_of(const consul::health_check& c) noexcept {
  return {c.partition, c.name_space, c.node, c.check_id};
}

check_engine::key_view check_engine::split_key(std::string_view key) noexcept {
  std::string_view part[4];
  for (int n = 0; n < 3; ++n) {
    auto at = key.find('\x1f');
    part[n] = key.substr(0, at);
    key = at == std::string_view::npos ? std::string_view() : key.substr(at + 1);
  }
  part[3] = key;
  return {part[0], part[1], part[2], part[3]};
}

std::size_t check_engine::index_hash::operator()(const key_view& k) const {
  std::hash<std::string_view> h;
  std::size_t v = h(k.check_id);
  for (auto part : {k.node, k.name_space, k.partition})
    v ^= h(part) + 0x9e3779b97f4a7c15ULL + (v << 6) + (v >> 2);
  return v;
}

std::size_t check_engine::index_hash::operator()(std::uint32_t i) const {
  return (*this)(key_view_of(*engine->slots_[i]->catalog));
}

bool check_engine::index_equal::operator()(const key_view& k, std::uint32_t i) const noexcept {
  return key_view_of(*engine->slots_[i]->catalog) == k;
}

std::uint32_t check_engine::allocate_slot() {
  if (!free_slots_.empty()) {
    auto i = free_slots_.back();
    free_slots_.pop_back();
    auto gen = slots_[i]->generation + 1;
    *slots_[i] = slot{};
    slots_[i]->generation = gen;
    slots_[i]->incarnation = ++incarnations_;
    return i;
  }
  slots_.push_back(std::make_unique<slot>());
  slots_.back()->incarnation = ++incarnations_;
  return static_cast<std::uint32_t>(slots_.size() - 1);
}

check_engine::slot_ref check_engine::ref_of(std::uint32_t i) const {
  return {i, slots_[i]->incarnation};
}

check_engine::slot* check_engine::holder(slot_ref r) {
  auto& s = *slots_[r.index];
  return s.live && s.incarnation == r.incarnation ? &s : nullptr;
}

void check_engine::release_slot(std::uint32_t i) {
  auto& s = *slots_[i];
  auto gen = s.generation + 1;
  s = slot{};
  s.generation = gen;
  free_slots_.push_back(i);
}

std::optional<check_engine::check_view> check_engine::find(std::string_view node,
                                                           std::string_view check_id,
                                                           std::string_view name_space,
                                                           std::string_view partition) const {
  auto it = find_slot({partition, name_space, node, check_id});
  if (it == index_.end()) return std::nullopt;
  const auto& s = *slots_[*it];
  check_view v;
  v.catalog_status = s.catalog->status;
  v.catalog_output = s.catalog->output;
  v.modify_index = s.catalog->modify_index;
  if (s.desired) v.desired = *s.desired;
  v.runs = s.runs;
  v.starts = s.starts;
  v.running = s.running != nullptr;
  v.runnable = s.plan.has_value();
  v.write_queued = s.write_queued;
  return v;
}

// ---- reconciliation ------------------------------------------------------------------------

sharding::shared_check check_engine::held_check(const consul::check_key& k) const {
  auto it = find_slot({k.partition, k.name_space, k.node, k.check_id});
  if (it == index_.end()) return nullptr;
  const auto& s = *slots_[*it];
  if (s.own_copy_unverified || s.catalog->modify_index != k.modify_index ||
      s.catalog->service_id != k.service_id)
    return nullptr;
  return s.catalog;
}

void check_engine::on_checks(const std::vector<sharding::shared_check>& checks) {
  ++epoch_;
  std::uint64_t added = 0, updated = 0, removed = 0;
  std::vector<std::uint32_t> p_damaged;
  for (const auto& handle : checks) {
    const auto& c = *handle;
    if (c.check_id == sharding::external_node_health_check_id) continue;
    auto it = find_slot(key_view_of(c));
    // Fast path: the copy the engine holds is this very version (the worker hands over the
    // whole share on every change, so most checks are unchanged): the very object taken
    // before (also the engine's own copy after a write, when Consul's answer showed it stored
    // exactly that and the worker took it: held_check), or the same ModifyIndex. Other
    // versions of the engine's own writes take the full path (once), to notice a definition
    // Consul stripped.
    if (it != index_.end()) {
      auto& held = *slots_[*it];
      if (held.catalog == handle) {
        held.seen = epoch_;
        continue;
      }
      if (c.modify_index != 0 && c.modify_index == held.catalog->modify_index &&
          c.modify_index != held.written_index) {
        // The same version in another object (the engine's own, from a node re-read): share
        // the worker's instead, which it keeps anyway.
        if (*held.catalog == c) held.hold(handle, true);
        held.seen = epoch_;
        continue;
      }
    }
    if (it == index_.end()) {
      auto planned = plan_run(c, settings_.plans);
      auto i = allocate_slot();
      auto& s = *slots_[i];
      s.seen = epoch_;
      s.live = true;
      s.hold(handle, true);  // before the index takes it: its key is the catalog object's
      index_.insert(i);
      if (auto* p = std::get_if<run_plan>(&planned)) {
        s.plan = *p;
      } else {
        ++stats_.unsupported;
        log::warn(std::get<std::string>(planned),
                  {{"node", c.node}, {"check", c.check_id}, {"name", c.name}});
      }
      update_critical_since(i);
      if (s.plan) start_check(i);
      ++added;
      continue;
    }
    auto i = *it;
    auto& s = *slots_[i];
    s.seen = epoch_;
    // A late or stale read must not undo a newer copy (e.g. the engine's own write), nor its
    // plan: the plan is always the one of the catalog object held.
    if (c.modify_index < s.catalog->modify_index) continue;
    // The object the current plan's probe fields are read from, until the comparison below.
    auto before = s.catalog;
    if (c.modify_index == s.written_index && definition_lost(s.catalog->definition, c.definition)) {
      // The engine's own transaction stripped the definition: keep ours and restore it
      // (an object of the engine's own until the restored one is read).
      auto merged = std::make_shared<consul::health_check>(c);
      merged->definition = s.catalog->definition;
      s.hold(std::move(merged), false);
      p_damaged.push_back(i);
    } else {
      if (c.create_index != s.catalog->create_index) {
        // Another check under the same key (registered anew, say after the reaper
        // deregistered its service): its time critical starts from its own results.
        s.critical_since.reset();
        s.reaped_create_index.reset();
      }
      s.hold(handle, true);
    }
    if (s.desired && !needs_write(s)) s.desired.reset();
    update_critical_since(i);
    if (replan(i, std::move(before))) ++updated;
  }
  for (auto i : p_damaged) definition_damaged(i);
  for (auto it = index_.begin(); it != index_.end();) {
    auto i = *it;
    auto& s = *slots_[i];
    if (s.seen == epoch_) {
      ++it;
      continue;
    }
    ++removed;
    if (!s.plan) --stats_.unsupported;
    stop_check(i);
    s.live = false;
    it = index_.erase(it);
    if (!s.running) release_slot(i);  // else finish_run releases it
  }
  schedule_started();
  stats_.added += added;
  stats_.updated += updated;
  stats_.removed += removed;
  if (added + updated + removed > 0)
    log::info("Updated checks", {{"count", index_.size()}, {"added", added}, {"updated", updated},
                                 {"removed", removed}});
}

// Plans the check again from the catalog object it now holds, which replaced `before`: a
// changed plan or probe (the spec each run would be given, built here only for a check whose
// object changed) restarts the check; true then. Every path that replaces a slot's object with
// another version calls it (on_checks, the writer's node re-read): each run's probe is built
// from the object held, and must agree with the plan's kind, timing and thresholds.
bool check_engine::replan(std::uint32_t i, sharding::shared_check before) {
  auto& s = *slots_[i];
  auto planned = plan_run(*s.catalog, settings_.plans);
  auto* p = std::get_if<run_plan>(&planned);
  bool same_plan = p ? (s.plan && *s.plan == *p &&
                        spec_of(before->definition, *s.plan) == spec_of(s.catalog->definition, *p))
                     : !s.plan;
  before.reset();
  if (same_plan) return false;
  stop_check(i);
  if (p) {
    if (!s.plan) --stats_.unsupported;
    s.plan = *p;
    log::info("Updating check", {{"node", s.catalog->node}, {"check", s.catalog->check_id}});
    start_check(i);
  } else {
    if (s.plan) ++stats_.unsupported;
    s.plan.reset();
    log::warn(std::get<std::string>(planned),
              {{"node", s.catalog->node}, {"check", s.catalog->check_id}, {"name", s.catalog->name}});
  }
  return true;
}

// (Re)starts a runnable check: counters reset to the plan's thresholds, first run at a random
// point of the interval. A restart keeps the desired state and the catalog copy.
void check_engine::start_check(std::uint32_t i) {
  auto& s = *slots_[i];
  s.live = true;
  s.reported = false;
  ++s.starts;
  s.gate.reset(s.plan->limits);
  s.legacy = legacy_counter{};
  if (s.plan->interval_raised)
    log::warn("Check interval too low", {{"node", s.catalog->node}, {"check", s.catalog->check_id},
                                         {"interval", s.plan->interval}});
  started_.push_back(i);  // first run scheduled by schedule_started()
}

// First runs at random points of each interval, counted from now: after a long
// reconciliation (100 000 new checks take most of a second), checks drawn early in it would
// otherwise all be due at once when it ends, and stay clustered run after run.
void check_engine::schedule_started() {
  auto now = clock::now();
  for (auto i : started_) {
    auto& s = *slots_[i];
    if (!s.live || !s.plan) continue;
    push_heap(schedule_.spread(now, s.plan->interval), i, false);
  }
  started_.clear();
}

// Invalidates the check's heap entries (by generation) and cancels its run in progress.
void check_engine::stop_check(std::uint32_t i) {
  auto& s = *slots_[i];
  ++s.generation;
  s.due_while_running = false;
  s.output_due.reset();  // its heap entry is void now; the next result re-arms it
  if (s.running) s.running->cancel();
}

void check_engine::push_heap(clock::time_point due, std::uint32_t i, bool output_write) {
  run_schedule::entry e;
  e.due = due;
  e.index = i;
  e.generation = slots_[i]->generation;
  e.output_write = output_write;
  if (schedule_.push(e)) schedule_wake_.cancel();  // the loop re-arms its timer for the new front
}

// ---- the schedule --------------------------------------------------------------------------

// Honours any cancellation with `terminal` set: returns at its next wake-up.
asio::awaitable<void> check_engine::schedule_loop() {
  co_await asio::this_coro::throw_if_cancelled(false);  // a stop is seen, never thrown
  for (;;) {
    if (async::is_cancelled(co_await asio::this_coro::cancellation_state)) co_return;
    auto now = clock::now();
    fire_due(now);  // and those due within the slack (schedule.hpp)
    dispatch();
    schedule_wake_.expires_at(schedule_.next_due().value_or(clock::time_point::max()));
    co_await schedule_wake_.async_wait(tuple_awaitable);  // a cancel() re-evaluates the front
  }
}

void check_engine::fire_due(clock::time_point now) {
  while (auto due = schedule_.pop_due(now)) {
    const auto& e = *due;
    auto& s = *slots_[e.index];
    if (e.generation != s.generation || !s.live) continue;  // stopped or restarted since
    if (e.output_write) {
      s.output_due.reset();
      if (needs_write(s)) queue_write(e.index);
      continue;
    }
    if (s.running) {
      s.due_while_running = true;  // cancelled run still ending: start right after it
      continue;
    }
    s.due = e.due;
    s.queued_generation = s.generation;
    schedule_.enqueue(e.index);
  }
  stats_.queued = schedule_.queued();
  stats_.max_queued = std::max(stats_.max_queued, stats_.queued);
}

void check_engine::dispatch() {
  while (!stopping_) {
    auto i = schedule_.take_ready();
    if (!i) break;
    auto& s = *slots_[*i];
    // Stopped, removed, restarted or its slot reused while queued.
    if (!s.live || !s.plan || s.running || s.queued_generation != s.generation) continue;
    start_run(*i);
  }
  stats_.queued = schedule_.queued();
}

void check_engine::start_run(std::uint32_t i) {
  auto& s = *slots_[i];
  auto handle = std::make_shared<async::stop_handle>();
  auto now = clock::now();
  stats_.lag.add(now - s.due);
  schedule_.run_started();
  stats_.in_flight = schedule_.in_flight();
  stats_.max_in_flight = std::max(stats_.max_in_flight, stats_.in_flight);
  auto gen = s.generation;
  // Set before the start: the run may end inside it (a definition refused before any I/O),
  // and finish_run clears it.
  s.running = handle;
  try {
    start_probe(i, gen, handle);
  } catch (...) {
    // Out of memory building the spec, the coroutine or its start: nothing ran, the slot must
    // not stay "running" (stop would wait for it forever), and the check keeps its schedule.
    // (A throw from the body reaches the completion, not here. A body that ended without
    // suspending has its completion posted; if that post is what threw, the run already
    // ended and the slot no longer holds this handle, or it threw and this is its only end.)
    auto e = std::current_exception();
    if (s.running == handle)
      fail_run(i, gen, e, "Check run failed to start");
    else
      log::error("Check run failed after it ended", {{"error", async::what_of(e)}});
  }
}

void check_engine::start_probe(std::uint32_t i, std::uint32_t gen,
                               const std::shared_ptr<async::stop_handle>& handle) {
  auto& s = *slots_[i];
  async::stop_handle::start(handle, ex_, run_probe_of(i, gen, spec_of(s.catalog->definition, *s.plan)),
                            [this, i, gen, run = std::weak_ptr(handle)](std::exception_ptr e) {
    if (!e) return;  // run_probe_of called finish_run itself
    // A bug (the probes turn their failures into results): the check keeps its schedule.
    // The run is ended here unless it already was (finish_run itself threw after ending it;
    // ending it twice would free its probe slot twice).
    // `run` is alive here (the completion holds the handle), and a handle is never reused:
    // the slot still runs this run exactly when it holds this handle.
    auto h = run.lock();
    if (h && slots_[i]->running == h) {
      fail_run(i, gen, e, "Check run failed");
    } else {
      log::error("Check run failed after it ended", {{"error", async::what_of(e)}});
    }
  });
}

void check_engine::fail_run(std::uint32_t i, std::uint32_t gen, std::exception_ptr e,
                            const char* message) {
  auto& s = *slots_[i];
  std::string node = s.catalog->node.str(), check = s.catalog->check_id.str();  // finish_run may free s
  ++stats_.failed_runs;
  finish_run(i, gen, std::nullopt, clock::time_point{}, true);  // next: an interval from now
  log::error(message, {{"node", node}, {"check", check}, {"error", async::what_of(e)}});
}

asio::awaitable<void> check_engine::run_probe_of(std::uint32_t i, std::uint32_t generation,
                                                 probe::probe_spec spec) {
  // This coroutine exists for this one probe: no second coroutine inside run_probe.
  auto started = clock::now();
  auto r = co_await probe::run_probe_in_own_thread(spec, probes_);
  if (async::is_cancelled(co_await asio::this_coro::cancellation_state)) {
    finish_run(i, generation, std::nullopt);
    co_return;
  }
  stats_.durations.add(spec.index(), static_cast<std::size_t>(r.status), clock::now() - started);
  finish_run(i, generation, std::move(r), started);
}

void check_engine::finish_run(std::uint32_t i, std::uint32_t generation,
                              std::optional<probe::probe_result> r, clock::time_point started,
                              bool failed) {
  auto& s = *slots_[i];
  s.running.reset();
  schedule_.run_ended();
  stats_.in_flight = schedule_.in_flight();
  if (stopping_ && stats_.in_flight == 0) drained_.cancel();
  if (!s.live) {
    ++stats_.cancelled_runs;
    release_slot(i);
  } else if (!r || generation != s.generation) {
    if (!failed) ++stats_.cancelled_runs;
    if (s.due_while_running) {
      s.due_while_running = false;
      s.due = clock::now();
      s.queued_generation = s.generation;
      schedule_.enqueue(i);
    } else if (failed && generation == s.generation && !stopping_) {
      push_heap(run_schedule::next_due(s.due, started, clock::now(), s.plan->interval), i, false);
    }
  } else {
    ++stats_.runs;
    ++s.runs;
    try {
      apply_result(i, std::move(*r));
    } catch (...) {
      // A bug or an allocation failure: the result is lost, not the check's schedule.
      ++stats_.failed_runs;
      log::error("Applying a check result failed",
                 {{"node", s.catalog->node}, {"check", s.catalog->check_id},
                  {"error", async::what_of(std::current_exception())}});
    }
    // An interval after the end, less the run's lateness (up to half the interval): checks
    // bunched by a stall or a backlog spread out again (schedule.hpp).
    if (!stopping_)
      push_heap(run_schedule::next_due(s.due, started, clock::now(), s.plan->interval), i, false);
  }
  dispatch();
}

// ---- results -------------------------------------------------------------------------------

void check_engine::definition_damaged(std::uint32_t i) {
  auto& s = *slots_[i];
  if (!s.register_writes)
    log::warn("Consul's transaction endpoint dropped fields of this check's definition; "
              "restoring it and writing this check's status by catalog registration",
              {{"node", s.catalog->node}, {"check", s.catalog->check_id}});
  s.register_writes = true;
  s.restore_definition = true;
  queue_write(i);
}

bool check_engine::needs_write(const slot& s) const {
  if (s.restore_definition) return true;
  if (!s.desired) return false;
  return to_string(s.desired->status) != s.catalog->status || s.desired->output != s.catalog->output;
}

void check_engine::apply_result(std::uint32_t i, probe::probe_result r) {
  auto& s = *slots_[i];
  auto reported = s.gate.feed(r.status);
  if (!reported) return;  // below a threshold: the reported state stays
  r.status = *reported;
  // The state this result would replace: what esmd last reported, else the catalog's.
  std::string_view cur_status = s.desired ? to_string(s.desired->status) : std::string_view(s.catalog->status);
  std::string_view cur_output = s.desired ? std::string_view(s.desired->output) : s.catalog->output.view();
  bool status_changed = to_string(r.status) != cur_status;
  if (settings_.plans.legacy_thresholds) {
    bool same = !status_changed && r.output == cur_output;
    if (!s.legacy.admit(r.status, same, settings_.plans.passing_threshold,
                        settings_.plans.critical_threshold))
      return;
  }
  bool first = !s.reported;
  s.reported = true;
  if (!s.restore_definition && to_string(r.status) == s.catalog->status &&
      r.output == s.catalog->output) {
    // The catalog shows this result already (most runs): nothing to write and no copy to
    // keep, as decide_write would conclude; decided before any allocation.
    s.desired.reset();
    update_critical_since(i);
    return;
  }
  if (s.desired)
    *s.desired = std::move(r);
  else
    s.desired = std::make_unique<probe::probe_result>(std::move(r));
  update_critical_since(i);
  reported_change c;
  c.differs = needs_write(s);
  c.status_differs = to_string(s.desired->status) != s.catalog->status;
  c.first = first;  // see slot::reported
  c.output_armed = s.output_due.has_value();
  auto d = decide_write(c, settings_.check_update_interval, clock::now());
  switch (d.timing) {
    case write_timing::none:
      s.desired.reset();  // the catalog copy says the same: keep one copy of the output
      break;
    case write_timing::now:
      queue_write(i);
      break;
    case write_timing::deferred:  // written then, with the newest output at that time
      push_heap(d.due, i, true);  // first: armed only once the entry exists
      s.output_due = d.due;
      break;
    case write_timing::armed:
      break;
  }
}

void check_engine::update_critical_since(std::uint32_t i) {
  auto& s = *slots_[i];
  bool critical = s.desired ? s.desired->status == check_status::critical
                            : s.catalog->status == "critical";
  if (!critical)
    s.critical_since.reset();
  else if (!s.critical_since)
    s.critical_since = clock::now();
}

void check_engine::queue_write(std::uint32_t i) {
  auto& s = *slots_[i];
  if (s.write_queued || !consul_) return;
  bool first = write_queue_.empty();
  write_queue_.push_back(i);  // first: marked queued only once it is
  s.write_queued = true;
  if (first) first_queued_ = clock::now();
  if (write_queue_.size() == 1 || write_queue_.size() >= consul::max_txn_ops) writer_wake_.cancel();
}

// ---- the whole -----------------------------------------------------------------------------

void check_engine::visit_checks(const std::function<void(const check_info&)>& f) const {
  static constexpr std::string_view kinds[] = {"http", "tcp", "udp", "grpc", "h2ping"};
  for (auto i : index_) {
    const auto& s = *slots_[i];
    check_info c{};
    c.catalog = s.catalog.get();
    c.kind = s.plan ? kinds[s.plan->kind] : std::string_view("unsupported");
    c.desired = s.desired ? &*s.desired : nullptr;
    c.runs = s.runs;
    c.successes = s.gate.successes();
    c.failures = s.gate.failures();
    c.running = s.running && !s.running->done();
    c.write_queued = s.write_queued;
    c.last_due = s.due;
    f(c);
  }
}

asio::awaitable<void> check_engine::run() {
  // The stop is seen by every wait, not thrown: this frame must outlive the probes it
  // cancels, and the flush after the stop must be able to await.
  co_await asio::this_coro::throw_if_cancelled(false);
  if (stopping_) {
    // An earlier run ended: its cancelled runs were not rescheduled. Every runnable check
    // gets a fresh first run in its interval; counters and desired states are kept, and the
    // first result of the new run is written at once (slot::reported), as at a start.
    stopping_ = false;
    schedule_.clear();
    for (auto i : index_) {
      auto& s = *slots_[i];
      ++s.generation;
      s.output_due.reset();
      s.reported = false;
      if (!s.plan) continue;
      push_heap(schedule_.spread(clock::now(), s.plan->interval), i, false);
    }
  }
  std::exception_ptr failure;
  try {
    co_await (schedule_loop() && writer_loop() && reaper_loop());
  } catch (...) {
    failure = std::current_exception();  // a bug: the loops see a stop as a value
  }
  // Stopped: no new run starts; stop the probes.
  stopping_ = true;
  for (auto& s : slots_)
    if (s->running) s->running->cancel();
  // Forget the first stop so that a second one (the daemon's terminal after its grace
  // period) reaches the waits below and cuts the flush short.
  co_await asio::this_coro::reset_cancellation_state();
  // The queued results are written while the cancelled probes end: one that cannot end at
  // once (a name lookup, which Asio 1.81 cannot cancel) must not keep them from the catalog.
  if (!failure && consul_) co_await flush_at_stop();
  // Then wait until every probe's coroutine ended, since they refer to this engine.
  while (stats_.in_flight > 0) {
    drained_.expires_after(std::chrono::milliseconds(100));
    co_await drained_.async_wait(tuple_awaitable);  // finish_run's cancel() wakes it early too
  }
  if (failure) {
    // A bug, not a probe or Consul failure (those are values): stop the daemon (exit 11) so
    // that a supervisor restarts it, rather than run without checks.
    log::error("Check engine stopped by an internal error", {{"error", async::what_of(failure)}});
    std::rethrow_exception(failure);
  }
}

}  // namespace esm::checks
