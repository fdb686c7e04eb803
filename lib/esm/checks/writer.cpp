// The check engine's status writer (batched compare-and-set transactions) and service reaper.
// See engine.hpp for the rules.
#include <algorithm>
#include <map>
#include <set>
#include <tuple>
#include <unordered_set>

#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>

#include "esm/checks/engine.hpp"
#include "esm/checks/slot.hpp"
#include "esm/checks/write_plan.hpp"
#include "esm/util/async.hpp"
#include "esm/util/backoff.hpp"
#include "esm/consul/client.hpp"
#include "esm/log/log.hpp"

namespace esm::checks {

namespace asio = boost::asio;
using clock = std::chrono::steady_clock;
using async::tuple_awaitable;

namespace {

asio::awaitable<bool> stopped() {
  co_return async::is_cancelled(co_await asio::this_coro::cancellation_state);
}

bool is_stale(const consul::txn_error& e) {
  return e.what.find("index is stale") != std::string::npos;
}

// Status changes an operator follows at INFO: one line per check, or one summary line per
// transaction when more than `per_line_limit` change at once (a burst must not flood the log).
struct status_change {
  std::string node, check, from, to, output;
};
constexpr std::size_t per_line_limit = 10;

std::string first_line(std::string_view s) {
  auto end = s.find_first_of("\r\n");
  auto line = s.substr(0, end);
  if (line.size() > 200) return std::string(line.substr(0, 200)) + "...";
  return std::string(line);
}

void log_status_changes(const std::vector<status_change>& changes) {
  if (changes.empty()) return;
  if (changes.size() <= per_line_limit) {
    for (auto& c : changes)
      log::info("Check status changed", {{"node", c.node}, {"check", c.check}, {"from", c.from},
                                         {"to", c.to}, {"output", c.output}});
    return;
  }
  std::size_t passing = 0, warning = 0, critical = 0;
  for (auto& c : changes) {
    passing += c.to == "passing";
    warning += c.to == "warning";
    critical += c.to == "critical";
  }
  auto& f = changes.front();
  log::info("Check statuses changed", {{"checks", changes.size()}, {"passing", passing}, {"warning", warning},
                                        {"critical", critical},
                                        {"first", f.node + "/" + f.check + " " + f.from + "->" + f.to}});
}

}  // namespace

// Only checks still held by the same slot: a slot reused meanwhile holds another check, whose
// own changes queue it themselves.
void check_engine::requeue(const std::vector<slot_ref>& ids) {
  for (auto r : ids) {
    auto* s = holder(r);
    if (s && needs_write(*s)) queue_write(r.index);
  }
}

// Honours any cancellation with `terminal` set: a transaction in flight is abandoned (its
// checks stay queued for run()'s flush after the stop) and the loop returns.
asio::awaitable<void> check_engine::writer_loop() {
  co_await asio::this_coro::throw_if_cancelled(false);  // a stop is seen, never thrown
  util::backoff retry(settings_.retry_base, settings_.retry_cap);
  asio::steady_timer pause(ex_);
  for (;;) {
    bool stop_now = co_await stopped();  // named: see async.hpp on g++ 12
    if (stop_now) co_return;
    auto now = clock::now();
    auto flush_at = flush_time(write_queue_.size(), first_queued_, settings_.batch_flush_interval,
                               consul::max_txn_ops, now);
    if (!flush_at || now < *flush_at) {
      // queue_write cancels the wait when the queue gets its first entry or fills a batch.
      writer_wake_.expires_at(flush_at.value_or(clock::time_point::max()));
      co_await writer_wake_.async_wait(tuple_awaitable);
      continue;
    }
    if (co_await flush()) {
      retry.reset();
      continue;
    }
    pause.expires_after(retry.next());
    co_await pause.async_wait(tuple_awaitable);
  }
}

// A cancellation ends it after the transaction in flight; what it did not write stays queued.
asio::awaitable<bool> check_engine::flush() {
  std::vector<std::uint32_t> batch;
  batch.swap(write_queue_);
  std::vector<slot_ref> todo;
  todo.reserve(batch.size());
  for (auto i : batch) {
    auto& s = *slots_[i];
    if (!s.write_queued) continue;  // a duplicate (slot reused)
    s.write_queued = false;
    if (s.live && needs_write(s)) todo.push_back(ref_of(i));
  }
  bool ok = true;
  std::vector<slot_ref> registered;
  std::erase_if(todo, [&](slot_ref r) {
    if (!slots_[r.index]->register_writes) return false;
    registered.push_back(r);
    return true;
  });
  if (!registered.empty() && !co_await write_by_registration(std::move(registered))) ok = false;
  for (std::size_t at = 0; at < todo.size(); at += consul::max_txn_ops) {
    auto end = std::min(todo.size(), at + consul::max_txn_ops);
    std::vector<slot_ref> chunk(todo.begin() + static_cast<std::ptrdiff_t>(at),
                                todo.begin() + static_cast<std::ptrdiff_t>(end));
    bool stop_now = co_await stopped();  // named: see async.hpp on g++ 12
    if (stop_now) {
      requeue(chunk);  // the rest too, chunk by chunk
      ok = false;
      continue;
    }
    if (!co_await write_chunk(std::move(chunk))) ok = false;
  }
  co_return ok;
}

asio::awaitable<void> check_engine::flush_at_stop() {
  // Every result not yet in the catalog is written: deferred output-only changes too (the next
  // process would start from the older output and defer its own for another
  // check_update_interval), and any a restart during the stop left unqueued. Queued after the
  // status changes already queued, so those go first if the flush is cut short.
  for (auto i : index_) {
    auto& s = *slots_[i];
    if (needs_write(s)) queue_write(i);  // queue_write ignores ones already queued
    s.output_due.reset();
  }
  auto queued = write_queue_.size();
  // Each round writes what the previous one queued (a restored definition, say). A failure is
  // not retried: the daemon's grace period is short, and the next process re-runs every check.
  for (;;) {
    if (write_queue_.empty()) break;
    bool stop_now = co_await stopped();
    if (stop_now) break;
    bool flushed = co_await flush();
    if (!flushed) break;
  }
  std::size_t left = 0;
  for (auto i : write_queue_) left += slots_[i]->write_queued;
  if (left > 0)
    log::warn("Stopped with check statuses not written",
              {{"checks", left}, {"queued_at_stop", queued}});
}

// One transaction of at most 64 compare-and-set operations, with one retry after stale indexes.
// Every answer is applied by the identity of the check it was sent for (slot_ref): during any
// co_await here on_checks may remove a check and give its slot to a new one.
asio::awaitable<bool> check_engine::write_chunk(std::vector<slot_ref> chunk) {
  for (int attempt = 0;; ++attempt) {
    // Built from the newest desired state and catalog copy at the moment of sending.
    std::vector<consul::txn_op> ops;
    std::vector<slot_ref> ids;
    ops.reserve(chunk.size());
    for (auto ref : chunk) {
      auto* held = holder(ref);
      if (!held || !needs_write(*held)) continue;
      auto& s = *held;
      consul::txn_check_op op;
      op.verb = "cas";
      op.check = *s.catalog;
      op.check.status = to_string(s.desired->status);
      op.check.output = s.desired->output;
      consul::txn_op t;
      t.check = std::move(op);
      ops.push_back(std::move(t));
      ids.push_back(ref);
    }
    if (ops.empty()) co_return true;
    ++stats_.transactions;
    stats_.record_batch(ops.size());
    auto sent = ops;  // what each op wrote, to update the copies on success
    auto r = co_await consul_->txn(std::move(ops));
    if (!r) {
      if (!r.error().is_cancelled()) {
        ++stats_.write_failures;
        log::warn("Failed to write check statuses; will retry",
                  {{"checks", ids.size()}, {"error", r.error().to_string()}});
      }
      requeue(ids);
      co_return false;
    }
    if (r->committed) {
      std::vector<status_change> changes;
      for (std::size_t j = 0; j < ids.size(); ++j) {
        auto* held = holder(ids[j]);
        if (!held) continue;  // removed during the write; the slot may hold another check
        auto& s = *held;
        const auto& w = sent[j].check->check;
        std::uint64_t idx = 0;
        consul::health_check* stored = nullptr;
        if (j < r->results.size() && r->results[j].check) {
          stored = &*r->results[j].check;
          idx = stored->modify_index;
        }
        if (idx > 0 && idx < s.catalog->modify_index) continue;  // the watch has a newer copy
        if (s.catalog->status != w.status)
          changes.push_back({w.node.str(), w.check_id.str(), s.catalog->status.str(), w.status.str(), first_line(w.output)});
        const bool damaged = stored && definition_lost(w.definition, stored->definition);
        if (stored && idx > 0 && stored->definition == s.catalog->definition &&
            stored->status == w.status && stored->output == w.output &&
            key_view_of(*stored) == key_view_of(*s.catalog) && stored->service_id == s.catalog->service_id) {
          // Consul's answer is the check as it stored it (Consul 1.8's transactions drop some
          // members, such as Type): the engine holds that version, and the worker takes this
          // object for it rather than decoding the same version again (held_check).
          s.written_index = idx;
          s.hold(std::make_shared<const consul::health_check>(std::move(*stored)), true);
        } else {
          // A new object, the shared one stays as it is (the watch brings this version soon,
          // and the engine takes the worker's object then).
          auto written = std::make_shared<consul::health_check>(*s.catalog);
          written->status = w.status;
          written->output = w.output;
          if (idx > 0) written->modify_index = s.written_index = idx;
          s.hold(std::move(written), false);
        }
        if (s.desired && !needs_write(s)) s.desired.reset();  // one copy of the output
        if (damaged) definition_damaged(ids[j].index);
        ++stats_.write_ops;
        log::debug("Check status written", {{"node", w.node}, {"check", w.check_id},
                                            {"status", w.status}});
      }
      log_status_changes(changes);
      co_return true;
    }
    // Rolled back: nothing was written. Stale indexes are re-read once; other errors drop
    // that op (its check is gone or cannot be written) and the rest is retried (write_plan).
    std::vector<rolled_back_op> failed;
    for (auto& e : r->errors) {
      failed.push_back({e.op_index, is_stale(e)});
      if (e.op_index < 0 || static_cast<std::size_t>(e.op_index) >= ids.size() || is_stale(e))
        continue;
      const auto& w = sent[static_cast<std::size_t>(e.op_index)].check->check;
      ++stats_.dropped_writes;
      log::warn("Check status write refused by Consul",
                {{"node", w.node}, {"check", w.check_id}, {"error", e.what}});
    }
    auto plan = plan_rollback(ids.size(), failed, attempt);
    auto& drop = plan.refused;
    if (plan.unwritten.empty()) co_return true;  // all refused: nothing left to write
    bool stop_now = false;
    if (plan.retry_now) stop_now = co_await stopped();
    if (!plan.retry_now || stop_now) {
      // Stale again right after a re-read: someone writes this check concurrently. Leave it
      // to the next flush, with the copy the watch delivers by then. (Or stopped: the flush
      // after the stop retries it.)
      if (!plan.retry_now) ++stats_.write_failures;
      std::vector<slot_ref> unwritten;
      for (auto k : plan.unwritten) unwritten.push_back(ids[k]);
      requeue(unwritten);
      co_return false;
    }
    std::set<std::tuple<std::string, std::string, std::string>> stale_nodes;
    for (auto k : plan.stale) {
      const auto& w = sent[k].check->check;
      stale_nodes.emplace(w.node, w.name_space, w.partition);
    }
    stats_.stale_retries += plan.stale.size();
    for (auto& [node, ns, part] : stale_nodes) {
      auto present = co_await reread_node(node, ns, part);
      if (!present) {  // cannot tell: try again later
        requeue(chunk);
        co_return false;
      }
      std::unordered_set<std::string> have(present->begin(), present->end());
      for (std::size_t k = 0; k < ids.size(); ++k) {
        const auto& w = sent[k].check->check;
        // By the key written, not the slot's: the slot may hold another check by now.
        if (w.node == node && w.name_space == ns && w.partition == part && !have.count(key_of(w))) {
          drop[k] = true;  // vanished from the catalog
          ++stats_.dropped_writes;
        }
      }
    }
    std::vector<slot_ref> again;
    for (std::size_t k = 0; k < ids.size(); ++k)
      if (!drop[k]) again.push_back(ids[k]);
    chunk = std::move(again);
  }
}

// For checks whose definition Consul's transaction endpoint would strip: one catalog
// registration per node (SkipNodeUpdate), carrying the full check objects with their
// definitions and the desired status and output. Not compare-and-set, but still the newest
// desired state.
// Answers applied by slot_ref, as in write_chunk.
asio::awaitable<bool> check_engine::write_by_registration(std::vector<slot_ref> ids) {
  std::map<std::tuple<std::string, std::string>, std::vector<slot_ref>> by_node;
  for (auto ref : ids) {
    const auto& c = *slots_[ref.index]->catalog;
    by_node[{c.partition.str(), c.node.str()}].push_back(ref);
  }
  bool ok = true;
  for (auto& [where, members] : by_node) {
    bool stop_now = co_await stopped();  // named: see async.hpp on g++ 12
    if (stop_now) {
      requeue(members);
      ok = false;
      continue;
    }
    consul::catalog_registration r;
    r.partition = std::get<0>(where);
    r.node = std::get<1>(where);
    r.skip_node_update = true;
    std::vector<slot_ref> sent_ids;
    for (auto ref : members) {
      auto* held = holder(ref);
      if (!held || !needs_write(*held)) continue;
      auto& s = *held;
      auto c = *s.catalog;
      if (s.desired) {
        c.status = to_string(s.desired->status);
        c.output = s.desired->output;
      }
      r.checks.push_back(std::move(c));
      sent_ids.push_back(ref);
    }
    if (sent_ids.empty()) continue;
    ++stats_.transactions;
    auto res = co_await consul_->catalog_register(r);
    if (!res) {
      if (!res.error().is_cancelled()) {
        ++stats_.write_failures;
        log::warn("Failed to write check statuses by catalog registration; will retry",
                  {{"node", r.node}, {"error", res.error().to_string()}});
      }
      requeue(sent_ids);
      ok = false;
      continue;
    }
    std::vector<status_change> changes;
    for (std::size_t k = 0; k < sent_ids.size(); ++k) {
      auto* held = holder(sent_ids[k]);
      if (!held) continue;  // removed during the write; the slot may hold another check
      auto& s = *held;
      if (s.restore_definition) ++stats_.definitions_restored;
      s.restore_definition = false;
      if (s.catalog->status != r.checks[k].status)
        changes.push_back({r.node, r.checks[k].check_id.str(), s.catalog->status.str(), r.checks[k].status.str(),
                           first_line(r.checks[k].output)});
      auto written = std::make_shared<consul::health_check>(*s.catalog);  // as in write_chunk
      written->status = r.checks[k].status;
      written->output = r.checks[k].output;
      s.hold(std::move(written), false);  // its ModifyIndex is still the old version's
      if (s.desired && !needs_write(s)) s.desired.reset();
      ++stats_.write_ops;
      ++stats_.registration_writes;
    }
    log_status_changes(changes);
  }
  co_return ok;
}

asio::awaitable<std::optional<std::vector<std::string>>> check_engine::reread_node(
    std::string node, std::string name_space, std::string partition) {
  consul::query_options q;
  q.name_space = name_space;
  q.partition = partition;
  ++stats_.node_rereads;
  auto r = co_await consul_->health_node(node, q);
  if (!r) {
    if (!r.error().is_cancelled())
      log::warn("Failed to re-read a node's checks", {{"node", node}, {"error", r.error().to_string()}});
    co_return std::nullopt;
  }
  std::vector<std::string> keys;
  for (auto& c : r->value) {
    auto k = key_of(c);
    auto it = find_slot(key_view_of(c));
    if (it != index_.end()) {
      auto i = *it;
      auto& s = *slots_[i];
      if (c.modify_index >= s.catalog->modify_index) {
        // The same key: the index's entry stays valid with the new object. Its definition
        // may have changed (re-registered by an operator): plan it again, as on_checks would.
        auto before = std::move(s.catalog);
        s.hold(std::make_shared<const consul::health_check>(std::move(c)), true);  // as read
        update_critical_since(i);
        if (replan(i, std::move(before))) ++stats_.updated;
      }
    }
    keys.push_back(std::move(k));
  }
  schedule_started();  // the first runs of checks replan() restarted
  co_return keys;
}

// Honours any cancellation with `terminal` set.
asio::awaitable<void> check_engine::reaper_loop() {
  co_await asio::this_coro::throw_if_cancelled(false);  // a stop is seen, never thrown
  asio::steady_timer timer(ex_);
  for (;;) {
    timer.expires_after(settings_.reap_interval);
    co_await timer.async_wait(tuple_awaitable);
    bool stop_now = co_await stopped();  // named: see async.hpp on g++ 12
    if (stop_now) co_return;
    if (!consul_) continue;
    auto now = clock::now();
    struct victim {
      std::string node, service_id, check_id, name_space, partition;
      std::vector<std::pair<std::string, std::uint64_t>> checks;  // slot key, CreateIndex
    };
    std::vector<victim> victims;
    std::map<std::tuple<std::string, std::string, std::string, std::string>, std::size_t> seen;
    for (auto i : index_) {
      auto& s = *slots_[i];
      auto after = s.catalog->definition.deregister_critical_service_after;
      if (!s.plan || !s.critical_since || s.catalog->service_id.empty() ||
          after <= std::chrono::nanoseconds::zero() || now - *s.critical_since <= after)
        continue;
      if (s.reaped_create_index && *s.reaped_create_index == s.catalog->create_index) continue;
      auto [at, fresh] = seen.try_emplace({s.catalog->partition.str(), s.catalog->name_space.str(),
                                           s.catalog->node.str(), s.catalog->service_id.str()},
                                          victims.size());
      if (!fresh) {
        victims[at->second].checks.emplace_back(key_of(*s.catalog), s.catalog->create_index);
        continue;
      }
      victim v;
      v.checks.emplace_back(key_of(*s.catalog), s.catalog->create_index);
      v.node = s.catalog->node;
      v.service_id = s.catalog->service_id;
      v.check_id = s.catalog->check_id;
      v.name_space = s.catalog->name_space;
      v.partition = s.catalog->partition;
      victims.push_back(std::move(v));
    }
    for (auto& v : victims) {
      consul::catalog_deregistration d;
      d.node = v.node;
      d.service_id = v.service_id;
      d.partition = v.partition;
      d.name_space = v.name_space;
      auto r = co_await consul_->catalog_deregister(d);
      bool stop_now = co_await stopped();  // named: see async.hpp on g++ 12
      if (stop_now) co_return;
      if (!r) {
        log::warn("Failed to deregister a service critical for too long",
                  {{"node", v.node}, {"service", v.service_id}, {"error", r.error().to_string()}});
        continue;
      }
      ++stats_.services_reaped;
      // Looked up again by key: slots may have been reused during the request, and a check
      // registered anew meanwhile (another CreateIndex) is not the one deregistered.
      for (auto& [key, create_index] : v.checks) {
        auto it = find_slot(split_key(key));
        if (it == index_.end()) continue;
        auto& s = *slots_[*it];
        if (s.catalog->create_index == create_index) s.reaped_create_index = create_index;
      }
      log::info("agent has been critical for too long, deregistered service",
                {{"node", v.node}, {"service", v.service_id}, {"check", v.check_id}});
    }
  }
}

}  // namespace esm::checks
