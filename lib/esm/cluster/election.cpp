#include "esm/cluster/election.hpp"

#include <memory>

#include "esm/util/async.hpp"
#include "esm/util/backoff.hpp"
#include "esm/consul/watch.hpp"
#include "esm/log/log.hpp"

namespace esm::cluster {

namespace asio = boost::asio;
using namespace esm::async;

using namespace std::chrono_literals;
using asio::awaitable;

namespace {

milliseconds ms(nanoseconds d) { return std::chrono::duration_cast<milliseconds>(d); }

enum class keeper_end { none, gone, unconfirmed, cancelled };
enum class acquire_end { none, held, cancelled };
struct monitor_end {
  monitor_end() {}
  monitor_end(bool c, std::string r) : cancelled(c), reason(std::move(r)) {}
  bool cancelled = false;
  std::string reason;
};

// One term's shared state: children and parent all hold it, so nothing dangles whatever
// finishes first.
struct term {
  term(std::string id, const lock_timing& t) : session(std::move(id)), fence(t.session_ttl, t.fence_margin()) {}
  std::string session;
  session_fence fence;
  bool needs_release = false;  // the end of the term could not release / destroy: retry later
  bool needs_destroy = false;
};

class election {
 public:
  election(consul::client& c, election_options o, leader_work_fn w, election_status& st,
           asio::any_io_executor ex)
      : c_(c), o_(std::move(o)), work_(std::move(w)), st_(st), ex_(ex) {}

  awaitable<void> run() {
    // The election notices a stop itself at every wait. With Asio's default, a stop would
    // instead throw from the next co_await and unwind this frame while the term's children
    // (monitor, keeper, leader work) still run and use it (found by ASan: a SIGTERM just as
    // the lock was acquired).
    bool rethrow = co_await asio::this_coro::throw_if_cancelled();
    co_await asio::this_coro::throw_if_cancelled(false);
    co_await run_terms();
    // Stop the background clean-ups of earlier terms (the caller is stopping us).
    for (auto& c : cleaners_) c->cancel();
    for (auto& c : cleaners_) co_await join(*cleaners_wake_, c);
    co_await asio::this_coro::throw_if_cancelled(rethrow);
    // The leader work failed by a bug: the term ended cleanly (key released, session
    // destroyed); now the daemon stops (exit 11) for its supervisor to restart it.
    if (work_failure_) std::rethrow_exception(work_failure_);
  }

 private:
  awaitable<void> run_terms() {
    util::backoff retry(250ms, std::max<milliseconds>(ms(o_.timing.retry_interval), 250ms));
    // Terms that end soon because their leader work ended (e.g. every write refused on the
    // fencing op by a condition that persists) start again after a growing pause, not at once:
    // no session and leadership churn many times a second.
    util::backoff churn(250ms, std::max<milliseconds>(ms(o_.timing.retry_interval), 250ms));
    for (;;) {
      if (is_cancelled(co_await asio::this_coro::cancellation_state)) co_return;
      log::info("Trying to obtain leadership...");
      consul::session_request req;
      req.name = o_.session_name;
      req.node = o_.session_node;
      req.ttl = o_.timing.session_ttl;
      req.lock_delay = o_.timing.lock_delay;
      req.behavior = "release";
      req.checks = o_.session_checks;
      req.node_checks = o_.session_node_checks;
      consul::write_options w;
      w.timeout = ms(o_.timing.request_timeout);
      auto sent = clock::now();
      auto id = co_await c_.session_create(req, w);
      if (!id) {
        if (classify(id.error()) == failure_kind::cancelled) co_return;
        log::error("Failed to create the leader session", {{"error", id.error().to_string()}});
        if (!co_await sleep_for(retry.next())) co_return;
        continue;
      }
      retry.reset();
      if (is_cancelled(co_await asio::this_coro::cancellation_state)) {
        // Cancelled while the session was being created: do not leave it to its TTL.
        co_await destroy(*id);
        co_return;
      }
      auto t = std::make_shared<term>(*id, o_.timing);
      auto began = clock::now();
      bool shutdown = co_await run_term(t, sent);
      if (work_failure_) {
        // The daemon stops next: one more try at what the term could not clean up, so the key
        // does not stay locked until Consul expires the session.
        if (t->needs_release) t->needs_release = !co_await release(*t);
        if (t->needs_destroy) t->needs_destroy = !co_await destroy(t->session);
      }
      if (shutdown || work_failure_) co_return;
      if (t->needs_release || t->needs_destroy) start_cleaner(t);
      if (work_ended_) {
        if (clock::now() - began >= o_.timing.session_ttl) churn.reset();
        auto pause = churn.next();
        log::info("The leader work ended; competing again", {{"after", pause}});
        bool slept = co_await sleep_for(pause);
        if (!slept) co_return;
      }
    }
  }

  // A lost term whose release or destroy failed (Consul unreachable or leaderless, e.g. during
  // a server failover) would otherwise keep the key until Consul expires the session, up to
  // 2 x TTL later. Keep trying in the background while the next term starts, until the
  // session must have expired anyway.
  void start_cleaner(std::shared_ptr<term> t) {
    std::erase_if(cleaners_, [](auto& c) { return c->done(); });
    cleaners_.push_back(child<int>::spawn(ex_, clean_up(t), cleaners_wake_));
  }

  awaitable<int> clean_up(std::shared_ptr<term> t) {
    util::backoff pause(250ms, 2s);
    auto until = t->fence.earliest_expiry() + o_.timing.session_ttl + 1s;
    while (clock::now() < until) {
      if (!co_await sleep_for(pause.next())) co_return 0;
      if (t->needs_release) {
        auto r = co_await try_release(t->session, ms(o_.timing.request_timeout));
        if (!r) {
          if (classify(r.error()) == failure_kind::cancelled) co_return 0;
          continue;
        }
        t->needs_release = false;
      }
      consul::write_options w;
      w.timeout = ms(o_.timing.request_timeout);
      auto d = co_await c_.session_destroy(t->session, w);
      if (d) {
        log::info("Cleaned up the previous leader session");
        co_return 0;
      }
      if (classify(d.error()) == failure_kind::cancelled) co_return 0;
    }
    co_return 0;
  }
  void confirmed(term& t, clock::time_point sent) {
    t.fence.confirm(sent);
    st_.last_confirmed = t.fence.last_confirmed();
    st_.last_confirmed_wall = std::chrono::system_clock::now() - (clock::now() - t.fence.last_confirmed());
  }

  // Renews the session until it is gone, cannot be confirmed before the fencing deadline, or
  // the term cancels it (terminal).
  awaitable<keeper_end> keep_session(std::shared_ptr<term> t) {
    renew_schedule schedule(o_.timing);
    auto next = schedule.after_success(t->fence.last_confirmed());
    for (;;) {
      if (!co_await sleep_until(std::min(next, t->fence.deadline()))) co_return keeper_end::cancelled;
      auto now = clock::now();
      if (t->fence.expired(now)) co_return keeper_end::unconfirmed;
      if (now < next) continue;
      consul::write_options w;
      w.timeout = std::max(1ms, t->fence.cap(ms(o_.timing.request_timeout), now));
      auto r = co_await c_.session_renew(t->session, w);
      if (r && *r) {
        confirmed(*t, now);
        next = schedule.after_success(now);
        continue;
      }
      if (r) co_return keeper_end::gone;
      if (classify(r.error()) == failure_kind::cancelled) co_return keeper_end::cancelled;
      ++st_.session_renew_failures;
      next = schedule.after_failure(clock::now());
      log::warn("Failed to renew the leader session",
                {{"error", r.error().to_string()}, {"attempt", schedule.consecutive_failures()}});
    }
  }

  // Waits until the key can be taken and takes it.
  awaitable<acquire_end> acquire(std::shared_ptr<term> t) {
    consul::index_tracker tracker;
    util::backoff errors(250ms, std::max<milliseconds>(ms(o_.timing.retry_interval), 250ms));
    // Refused acquisitions back off on their own count: the read before each attempt succeeds
    // and resets `errors`, which made a token without write permission retry about five times
    // a second, each attempt a request to the Consul servers.
    util::backoff refusals(250ms, std::max<milliseconds>(ms(o_.timing.retry_interval), 250ms));
    for (;;) {
      // A stop that came between two reads cancels no read by itself (see watch::next).
      auto cs = co_await asio::this_coro::cancellation_state;
      if (is_cancelled(cs)) co_return acquire_end::cancelled;
      consul::query_options q;
      q.index = tracker.index();
      q.wait = ms(o_.timing.blocking_wait);
      auto start = clock::now();
      auto r = co_await c_.kv_get(o_.key, q);
      if (!r) {
        if (classify(r.error()) == failure_kind::cancelled) co_return acquire_end::cancelled;
        log::warn("Failed to read the leader key", {{"key", o_.key}, {"error", r.error().to_string()}});
        if (!co_await sleep_for(errors.next())) co_return acquire_end::cancelled;
        continue;
      }
      errors.reset();
      auto d = tracker.on_result(r->meta.last_index, ms(clock::now() - start));
      switch (classify_key(r->value, t->session)) {
        case key_state::ours:
          co_return acquire_end::held;
        case key_state::other:
          if (d.pause.count() > 0 && !co_await sleep_for(d.pause)) co_return acquire_end::cancelled;
          continue;
        case key_state::conflict:
          log::error("Existing key does not match lock use; retrying",
                     {{"key", o_.key}, {"flags", std::to_string(r->value->flags)}});
          tracker.reset();
          if (!co_await sleep_for(o_.timing.retry_interval)) co_return acquire_end::cancelled;
          continue;
        case key_state::free:
          break;
      }
      if (t->fence.expired(clock::now())) {  // the keeper is ending the term: do not take the key
        if (!co_await sleep_for(o_.timing.session_ttl)) co_return acquire_end::cancelled;
        continue;
      }
      consul::kv_write how;
      how.flags = consul::lock_flag_value;
      how.acquire = t->session;
      consul::write_options w;
      w.timeout = std::max(1ms, t->fence.cap(ms(o_.timing.request_timeout), clock::now()));
      std::string empty;
      auto a = co_await c_.kv_put(o_.key, empty, how, w);
      if (!a) {
        auto kind = classify(a.error());
        if (kind == failure_kind::cancelled) co_return acquire_end::cancelled;
        ++st_.acquire_failures;
        if (a.error().is_http(403))
          log::error("Failed to acquire the leader key: the ACL token may not write it",
                     {{"key", o_.key},
                      {"needs", "key_prefix \"" + o_.key.substr(0, o_.key.rfind('/') + 1) + "\" write"},
                      {"error", a.error().to_string()}});
        else
          log::warn("Failed to acquire the leader key", {{"key", o_.key}, {"error", a.error().to_string()}});
        tracker.reset();
        if (!co_await sleep_for(refusals.next())) co_return acquire_end::cancelled;
        continue;
      }
      if (*a) co_return acquire_end::held;
      // Free but not granted: a lock-delay after an invalidated holder (or another instance
      // won the race, which the next read shows). The key will not change when the delay
      // ends, so poll instead of blocking.
      tracker.reset();
      if (!co_await sleep_for(o_.timing.lock_delay_poll())) co_return acquire_end::cancelled;
    }
  }

  // The monitor's reads have their own deadline (wait + jitter + margin); they never outlive
  // the fencing deadline because the keeper ends the term there, which cancels the monitor.
  awaitable<monitor_end> monitor(std::shared_ptr<term> t) {
    consul::index_tracker tracker;
    monitor_policy policy(o_.timing.monitor_retries, o_.timing.monitor_retry_time);
    for (;;) {
      auto cs = co_await asio::this_coro::cancellation_state;
      if (is_cancelled(cs)) co_return monitor_end(true, std::string());
      consul::query_options q;
      q.mode = consul::consistency::consistent;
      q.index = tracker.index();
      q.wait = ms(o_.timing.monitor_wait());
      auto start = clock::now();
      auto r = co_await c_.kv_get(o_.key, q);
      if (!r) {
        if (classify(r.error()) == failure_kind::cancelled) co_return monitor_end(true, std::string());
        auto v = policy.on_error(r.error(), clock::now() - start);
        if (v.lost) co_return monitor_end(false, v.reason);
        log::warn("Lock monitor read failed; retrying",
                  {{"error", r.error().to_string()}, {"attempt", policy.failures()}});
        // The next read does not block: it confirms (and resets the count) as soon as Consul
        // answers again, instead of waiting on a quiet key until the next outage kills it.
        tracker.reset();
        if (!co_await sleep_for(v.pause)) co_return monitor_end(true, std::string());
        continue;
      }
      auto d = tracker.on_result(r->meta.last_index, ms(clock::now() - start));
      auto v = policy.on_read(r->value, t->session);
      if (v.lost) co_return monitor_end(false, v.reason);
      if (d.pause.count() > 0 && !co_await sleep_for(d.pause)) co_return monitor_end(true, std::string());
    }
  }

  static awaitable<int> run_work(leader_work_fn work, std::string session, consul::txn_op op,
                                 util::lease lease) {
    co_await work(std::move(session), std::move(op), std::move(lease));
    co_return 0;
  }

  awaitable<consul::result<bool>> try_release(std::string session, milliseconds timeout) {
    consul::kv_write how;
    how.flags = consul::lock_flag_value;
    how.release = std::move(session);
    consul::write_options w;
    w.timeout = timeout;
    std::string empty;
    auto r = co_await c_.kv_put(o_.key, empty, how, w);  // named: see async.hpp on g++ 12
    co_return r;
  }

  awaitable<bool> release(const term& t) {
    auto r = co_await try_release(t.session, ms(o_.timing.cleanup_timeout));
    if (!r) log::warn("Failed to release the leader key", {{"key", o_.key}, {"error", r.error().to_string()}});
    co_return bool(r);
  }

  awaitable<bool> destroy(const std::string& session) {
    consul::write_options w;
    w.timeout = ms(o_.timing.cleanup_timeout);
    auto r = co_await c_.session_destroy(session, w);
    if (!r) log::warn("Failed to destroy the leader session", {{"error", r.error().to_string()}});
    co_return bool(r);
  }

  // One session's life. Returns true on shutdown.
  awaitable<bool> run_term(std::shared_ptr<term> t, clock::time_point created_sent) {
    confirmed(*t, created_sent);
    st_.session_id = t->session;
    auto wake = std::make_shared<event>(ex_);
    auto keeper = child<keeper_end>::spawn(ex_, keep_session(t), wake);
    auto acquirer = child<acquire_end>::spawn(ex_, acquire(t), wake);
    std::shared_ptr<child<monitor_end>> mon;
    std::shared_ptr<child<int>> work;
    work_ended_ = false;
    bool holding = false;  // the key is ours: release it at the end of the term
    bool leading = false;  // leadership was announced (is_leader, "Obtained leadership")
    std::string reason;

    for (;;) {
      if (keeper->done()) {
        auto k = keeper->value().value_or(keeper_end::cancelled);
        reason = k == keeper_end::gone ? "the session was invalidated"
                 : k == keeper_end::unconfirmed
                     ? "the session could not be renewed before the fencing deadline"
                     : "the session keeper stopped";
        break;
      }
      if (!holding && acquirer->done()) {
        if (acquirer->value() != acquire_end::held) {
          reason = "acquisition stopped";
          break;
        }
        holding = true;
        if (t->fence.expired(clock::now())) {  // a very slow acquire: not safe to act
          reason = "the key was acquired after the fencing deadline";
          log::warn("Acquired the leader key too late to act on it; releasing it",
                    {{"key", o_.key}});
          break;
        }
        leading = true;
        st_.is_leader = true;
        ++st_.leadership_changes;
        log::info("Obtained leadership");
        mon = child<monitor_end>::spawn(ex_, monitor(t), wake);
        // The lease reads the term's fence: valid until the deadline of its last renewal.
        util::lease lease([t] { return !t->fence.expired(clock::now()); });
        work = child<int>::spawn(
            ex_, run_work(work_, t->session, check_session_op(o_.key, t->session), std::move(lease)), wake);
        continue;
      }
      if (mon && mon->done()) {
        reason = mon->value() ? mon->value()->reason : std::string("the lock monitor stopped");
        break;
      }
      if (work && work->done()) {
        // Leader work that ends for any reason ends the term: a leader must never hold the
        // lock while doing nothing. A normal end is a fenced-out write (the key is not ours
        // any more); an exception is a bug, which also stops the daemon after the clean-up.
        if (auto e = work->error()) {
          work_failure_ = e;
          reason = "the leader work failed: " + what_of(e);
          log::error("Leader work stopped on an internal error", {{"error", reason}});
        } else {
          reason = "the leader work ended";
          work_ended_ = true;
        }
        break;
      }
      // No suspension since the checks above, so no completion was missed.
      wake->reset();
      if (!co_await wake->wait()) break;  // our own cancellation: shutdown
    }

    // End of term: stop the leader work first, at once; then the rest.
    bool shutdown = is_cancelled(co_await asio::this_coro::cancellation_state);
    bool rethrow = co_await asio::this_coro::throw_if_cancelled();
    co_await asio::this_coro::throw_if_cancelled(false);
    if (work) work->cancel();
    if (leading) st_.last_step_down = clock::now();
    if (mon) mon->cancel();
    acquirer->cancel();
    co_await join(*wake, work, mon, acquirer);
    // The key may have been taken while the term was ending for another reason (the keeper
    // gave up in the same turn of the loop): release it too, or a successor waits the
    // lock-delay after the session is destroyed.
    if (!holding && acquirer->value() == acquire_end::held) holding = true;
    if (leading) {
      st_.is_leader = false;
      ++st_.leadership_changes;
      if (shutdown) {
        log::info("Releasing leadership on shutdown");
      } else {
        st_.last_loss_reason = reason;
        log::warn("Leader lock lost", {{"reason", reason}});
        log::info("Lost leadership");
      }
    }
    // Before the destroy: a successor needs no lock-delay.
    if (holding) t->needs_release = !co_await release(*t);
    keeper->cancel();
    co_await join(*wake, keeper);
    if (keeper->value() != keeper_end::gone) t->needs_destroy = !co_await destroy(t->session);
    st_.session_id.clear();
    co_await asio::this_coro::throw_if_cancelled(rethrow);
    co_return shutdown;
  }

  consul::client& c_;
  election_options o_;
  leader_work_fn work_;
  election_status& st_;
  asio::any_io_executor ex_;
  std::shared_ptr<event> cleaners_wake_ = std::make_shared<event>(ex_);
  std::vector<std::shared_ptr<child<int>>> cleaners_;
  std::exception_ptr work_failure_;  // the leader work's exception: stops the election
  bool work_ended_ = false;          // the last term ended because its leader work returned
};

}  // namespace



awaitable<void> run_leader_election(consul::client& c, election_options opts, leader_work_fn work,
                                    election_status& status) {
  auto ex = co_await asio::this_coro::executor;
  election e(c, std::move(opts), std::move(work), status, ex);
  co_await e.run();
}

}  // namespace esm::cluster
