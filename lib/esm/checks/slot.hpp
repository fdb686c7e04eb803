// The engine's per-check state (private to the checks area). Kept small: with 100 000 checks a
// byte per check is 100 KB. The catalog object is the largest part and is needed for the
// compare-and-set writes (full object, ModifyIndex); it is shared with the worker, not copied.
#pragma once

#include <chrono>
#include <concepts>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>


#include "esm/checks/engine.hpp"
#include "esm/util/async.hpp"

namespace esm::checks {

// std::optional's interface (as the slot uses it) for a value with a sentinel no real one
// takes: 8 bytes where std::optional of a time point or an index takes 16. Only a T is
// assigned (`x = {}` resets, as for std::optional); assigning the sentinel itself resets too.
template <class T, T (*none)()>
class sentinel_optional {
 public:
  explicit operator bool() const noexcept { return v_ != none(); }
  bool has_value() const noexcept { return v_ != none(); }
  const T& operator*() const noexcept { return v_; }
  void reset() noexcept { v_ = none(); }
  template <std::same_as<T> U>
  sentinel_optional& operator=(U v) noexcept {
    v_ = v;
    return *this;
  }

 private:
  T v_ = none();
};
inline constexpr std::chrono::steady_clock::time_point no_time() {
  return std::chrono::steady_clock::time_point::min();  // steady_clock counts up from boot
}
// Consul's indexes are raft indexes, far below 2^64 - 1; a CreateIndex of exactly that (only
// a hostile peer sends it) leaves reaped_create_index empty, and the reaper tries again.
inline constexpr std::uint64_t no_index() { return UINT64_MAX; }
using maybe_time = sentinel_optional<std::chrono::steady_clock::time_point, no_time>;
using maybe_index = sentinel_optional<std::uint64_t, no_index>;

struct check_engine::slot {
  // The newest copy known, never null while held: the worker's object (shared with its cache,
  // see sharding::shared_check), or the engine's own after a write or a re-read until the
  // watch brings that version. Immutable: replaced, never edited, so a coroutine that needs
  // it across a co_await keeps a handle or looks the slot up again.
  sharding::shared_check catalog;
  // Empty: not run (unsupported). The probe's strings are the catalog object's (spec_of): a
  // new catalog object is planned again (on_checks), and its plan replaces this one when it
  // differs, probe fields included.
  std::optional<run_plan> plan;
  // What esmd reports, while the catalog differs: a pointer (8 bytes, not an optional's 48),
  // as a write is pending for few checks at a time.
  std::unique_ptr<probe::probe_result> desired;
  status_gate gate;
  legacy_counter legacy;
  std::shared_ptr<async::stop_handle> running;  // set while a probe runs
  std::chrono::steady_clock::time_point due{};  // when the queued run was due (lag)
  maybe_time output_due;  // deferred output write
  maybe_time critical_since;
  // The CreateIndex of the check when the reaper deregistered its service: the reaper skips
  // the slot until the catalog holds a different check under its key (the service was
  // registered again), instead of deregistering every pass until the worker drops it.
  maybe_index reaped_create_index;
  std::uint64_t seen = 0;    // reconciliation epoch that last listed it
  std::uint64_t runs = 0;
  // Which check this slot holds: set anew each time the slot is allocated, and never changed
  // by a restart (unlike `generation`). A write in flight remembers it, so that its answer is
  // applied only to the check it was sent for, not to one that reused the slot meanwhile.
  std::uint64_t incarnation = 0;
  std::uint64_t written_index = 0;  // ModifyIndex of the engine's last transaction write
  std::uint32_t starts = 0;     // (re)starts of its schedule
  std::uint32_t generation = 0;  // bumped by every stop/restart: voids heap entries
  // The generation the slot had when its run joined the queue for a probe slot: a queued run
  // whose check was restarted, or whose slot was reused, meanwhile is dropped, not started
  // beside the new schedule (which would run the check twice per interval from then on).
  std::uint32_t queued_generation = 0;
  bool live = false;             // held (listed in the index)
  bool write_queued = false;
  // Consul's transaction endpoint dropped definition fields of this check (before Consul
  // 1.1x it carries only the HTTP and TCP ones): its status is written by catalog
  // registration instead, which keeps the whole definition, and a damaged definition is
  // restored once.
  bool register_writes = false;
  // `catalog` is the engine's own object and not known to be Consul's version at its
  // ModifyIndex (a registration write, a restored definition, a write whose answer differed):
  // held_check does not offer it to the worker.
  bool own_copy_unverified = false;

  // Every change of `catalog` goes through here, so the flag above never outlives the object
  // it speaks of. `consuls`: the object is Consul's version at its ModifyIndex.
  void hold(sharding::shared_check c, bool consuls) {
    catalog = std::move(c);
    own_copy_unverified = !consuls;
  }
  bool restore_definition = false;
  bool due_while_running = false;
  // A result has been reported since the check's schedule (re)started. The first one is
  // written at once even when only its output differs: the catalog's output may be empty or
  // years old, and check_update_interval exists to spare Consul repeated output churn, not
  // to hide the first observation for minutes.
  bool reported = false;
};

}  // namespace esm::checks
