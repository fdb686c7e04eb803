// The check engine's status writer (batched compare-and-set transactions) and service reaper.
// See engine.hpp for the rules.
#include <algorithm>
#include <map>
#include <set>
#include <tuple>
#include <unordered_set>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "esm/checks/engine.hpp"
#include "esm/checks/slot.hpp"
#include "esm/util/backoff.hpp"
#include "esm/consul/client.hpp"
#include "esm/log/log.hpp"

namespace esm::checks {

namespace asio = boost::asio;
using clock = std::chrono::steady_clock;

namespace {

constexpr auto tuple_awaitable = asio::as_tuple(asio::use_awaitable);

bool cancelled(const asio::cancellation_state& cs) {
  return cs.cancelled() != asio::cancellation_type::none;
}

bool is_stale(const consul::txn_error& e) {
  return e.what.find("index is stale") != std::string::npos;
}

}  // namespace

void check_engine::requeue(const std::vector<std::uint32_t>& ids) {
  for (auto i : ids) {
    auto& s = *slots_[i];
    if (s.live && needs_write(s)) queue_write(i);
  }
}

asio::awaitable<void> check_engine::writer_loop() {
  util::backoff retry(settings_.retry_base, settings_.retry_cap);
  asio::steady_timer pause(ex_);
  for (;;) {
    if (cancelled(co_await asio::this_coro::cancellation_state)) co_return;
    if (write_queue_.empty()) {
      writer_wake_.expires_at(clock::time_point::max());
      co_await writer_wake_.async_wait(tuple_awaitable);
      continue;
    }
    auto flush_at = first_queued_ + settings_.batch_flush_interval;
    if (write_queue_.size() < consul::max_txn_ops && clock::now() < flush_at) {
      writer_wake_.expires_at(flush_at);  // a full batch cancels the wait
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

asio::awaitable<bool> check_engine::flush() {
  std::vector<std::uint32_t> batch;
  batch.swap(write_queue_);
  std::vector<std::uint32_t> todo;
  todo.reserve(batch.size());
  for (auto i : batch) {
    auto& s = *slots_[i];
    if (!s.write_queued) continue;  // a duplicate (slot reused)
    s.write_queued = false;
    if (s.live && needs_write(s)) todo.push_back(i);
  }
  bool ok = true;
  std::vector<std::uint32_t> registered;
  std::erase_if(todo, [&](std::uint32_t i) {
    if (!slots_[i]->register_writes) return false;
    registered.push_back(i);
    return true;
  });
  if (!registered.empty() && !co_await write_by_registration(std::move(registered))) ok = false;
  for (std::size_t at = 0; at < todo.size(); at += consul::max_txn_ops) {
    auto end = std::min(todo.size(), at + consul::max_txn_ops);
    std::vector<std::uint32_t> chunk(todo.begin() + static_cast<std::ptrdiff_t>(at),
                                     todo.begin() + static_cast<std::ptrdiff_t>(end));
    if (!co_await write_chunk(std::move(chunk))) ok = false;
  }
  co_return ok;
}

// One transaction of at most 64 compare-and-set operations, with one retry after stale indexes.
asio::awaitable<bool> check_engine::write_chunk(std::vector<std::uint32_t> chunk) {
  for (int attempt = 0;; ++attempt) {
    // Built from the newest desired state and catalog copy at the moment of sending.
    std::vector<consul::txn_op> ops;
    std::vector<std::uint32_t> ids;
    ops.reserve(chunk.size());
    for (auto i : chunk) {
      auto& s = *slots_[i];
      if (!s.live || !needs_write(s)) continue;
      consul::txn_check_op op;
      op.verb = "cas";
      op.check = s.catalog;
      op.check.status = std::string(to_string(s.desired->status));
      op.check.output = s.desired->output;
      consul::txn_op t;
      t.check = std::move(op);
      ops.push_back(std::move(t));
      ids.push_back(i);
    }
    if (ops.empty()) co_return true;
    ++stats_.transactions;
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
      for (std::size_t j = 0; j < ids.size(); ++j) {
        auto& s = *slots_[ids[j]];
        if (!s.live) continue;
        const auto& w = sent[j].check->check;
        std::uint64_t idx = 0;
        const consul::health_check* stored = nullptr;
        if (j < r->results.size() && r->results[j].check) {
          stored = &*r->results[j].check;
          idx = stored->modify_index;
        }
        if (idx > 0 && idx < s.catalog.modify_index) continue;  // the watch has a newer copy
        s.catalog.status = w.status;
        s.catalog.output = w.output;
        if (idx > 0) s.catalog.modify_index = s.written_index = idx;
        if (s.desired && !needs_write(s)) s.desired.reset();  // one copy of the output
        if (stored && definition_lost(w.definition, stored->definition)) definition_damaged(ids[j]);
        ++stats_.write_ops;
        log::debug("Check status written", {{"node", w.node}, {"check", w.check_id},
                                            {"status", w.status}});
      }
      co_return true;
    }
    // Rolled back: every op failed with it. Stale indexes are re-read once; other errors
    // drop that op (its check is gone or cannot be written) and the rest is retried.
    std::vector<bool> drop(ids.size(), false);
    std::set<std::tuple<std::string, std::string, std::string>> stale_nodes;
    std::vector<std::uint32_t> stale_ids;
    for (auto& e : r->errors) {
      if (e.op_index < 0 || static_cast<std::size_t>(e.op_index) >= ids.size()) continue;
      auto k = static_cast<std::size_t>(e.op_index);
      const auto& w = sent[k].check->check;
      if (is_stale(e)) {
        stale_nodes.emplace(w.node, w.name_space, w.partition);
        stale_ids.push_back(ids[k]);
      } else {
        drop[k] = true;
        ++stats_.dropped_writes;
        log::warn("Check status write refused by Consul",
                  {{"node", w.node}, {"check", w.check_id}, {"error", e.what}});
      }
    }
    if (attempt > 0) {
      // Stale again right after a re-read: someone writes this check concurrently. Leave it
      // to the next flush, with the copy the watch delivers by then.
      ++stats_.write_failures;
      requeue(stale_ids);
      co_return false;
    }
    stats_.stale_retries += stale_ids.size();
    for (auto& [node, ns, part] : stale_nodes) {
      auto present = co_await reread_node(node, ns, part);
      if (!present) {  // cannot tell: try again later
        requeue(chunk);
        co_return false;
      }
      std::unordered_set<std::string> have(present->begin(), present->end());
      for (std::size_t k = 0; k < ids.size(); ++k) {
        auto& s = *slots_[ids[k]];
        const auto& w = sent[k].check->check;
        if (w.node == node && w.name_space == ns && w.partition == part && !have.count(s.key)) {
          drop[k] = true;  // vanished from the catalog
          ++stats_.dropped_writes;
        }
      }
    }
    std::vector<std::uint32_t> again;
    for (std::size_t k = 0; k < ids.size(); ++k)
      if (!drop[k]) again.push_back(ids[k]);
    chunk = std::move(again);
  }
}

// For checks whose definition Consul's transaction endpoint would strip: one catalog
// registration per node (SkipNodeUpdate), carrying the full check objects with their
// definitions and the desired status and output. Not compare-and-set, but still the newest
// desired state.
asio::awaitable<bool> check_engine::write_by_registration(std::vector<std::uint32_t> ids) {
  std::map<std::tuple<std::string, std::string>, std::vector<std::uint32_t>> by_node;
  for (auto i : ids) by_node[{slots_[i]->catalog.partition, slots_[i]->catalog.node}].push_back(i);
  bool ok = true;
  for (auto& [where, members] : by_node) {
    consul::catalog_registration r;
    r.partition = std::get<0>(where);
    r.node = std::get<1>(where);
    r.skip_node_update = true;
    std::vector<std::uint32_t> sent_ids;
    for (auto i : members) {
      auto& s = *slots_[i];
      if (!s.live || !needs_write(s)) continue;
      auto c = s.catalog;
      if (s.desired) {
        c.status = std::string(to_string(s.desired->status));
        c.output = s.desired->output;
      }
      r.checks.push_back(std::move(c));
      sent_ids.push_back(i);
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
    for (std::size_t k = 0; k < sent_ids.size(); ++k) {
      auto& s = *slots_[sent_ids[k]];
      if (!s.live) continue;
      if (s.restore_definition) ++stats_.definitions_restored;
      s.restore_definition = false;
      s.catalog.status = r.checks[k].status;
      s.catalog.output = r.checks[k].output;
      if (s.desired && !needs_write(s)) s.desired.reset();
      ++stats_.write_ops;
      ++stats_.registration_writes;
    }
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
    auto it = index_.find(k);
    if (it != index_.end()) {
      auto& s = *slots_[it->second];
      if (c.modify_index >= s.catalog.modify_index) {
        s.catalog = std::move(c);
        update_critical_since(it->second);
      }
    }
    keys.push_back(std::move(k));
  }
  co_return keys;
}

asio::awaitable<void> check_engine::reaper_loop() {
  asio::steady_timer timer(ex_);
  for (;;) {
    timer.expires_after(settings_.reap_interval);
    co_await timer.async_wait(tuple_awaitable);
    if (cancelled(co_await asio::this_coro::cancellation_state)) co_return;
    if (!consul_) continue;
    auto now = clock::now();
    struct victim {
      std::string node, service_id, check_id, name_space, partition;
    };
    std::vector<victim> victims;
    std::set<std::tuple<std::string, std::string, std::string, std::string>> seen;
    for (auto& [key, i] : index_) {
      auto& s = *slots_[i];
      auto after = s.catalog.definition.deregister_critical_service_after;
      if (!s.plan || !s.critical_since || s.catalog.service_id.empty() ||
          after <= std::chrono::nanoseconds::zero() || now - *s.critical_since <= after)
        continue;
      if (!seen.emplace(s.catalog.partition, s.catalog.name_space, s.catalog.node,
                        s.catalog.service_id).second)
        continue;
      victim v;
      v.node = s.catalog.node;
      v.service_id = s.catalog.service_id;
      v.check_id = s.catalog.check_id;
      v.name_space = s.catalog.name_space;
      v.partition = s.catalog.partition;
      victims.push_back(std::move(v));
    }
    for (auto& v : victims) {
      consul::catalog_deregistration d;
      d.node = v.node;
      d.service_id = v.service_id;
      d.partition = v.partition;
      d.name_space = v.name_space;
      auto r = co_await consul_->catalog_deregister(d);
      if (cancelled(co_await asio::this_coro::cancellation_state)) co_return;
      if (!r) {
        log::warn("Failed to deregister a service critical for too long",
                  {{"node", v.node}, {"service", v.service_id}, {"error", r.error().to_string()}});
        continue;
      }
      ++stats_.services_reaped;
      log::info("agent has been critical for too long, deregistered service",
                {{"node", v.node}, {"service", v.service_id}, {"check", v.check_id}});
    }
  }
}

}  // namespace esm::checks
