// esmd's async toolkit: the structured-concurrency pieces every area uses, for one thread and
// Boost 1.81 (no cancel_after; a cancellation signal must outlive the operation bound to it).
//
//  - `tuple_awaitable`: the default completion token, `auto [ec, n] = co_await op(tuple_awaitable)`;
//  - `is_cancelled(co_await this_coro::cancellation_state)`: reading the state never throws;
//  - `sleep_until` / `sleep_for`: timers that say whether they ran out (false: stopped);
//  - `event`: a flag plus a wake-up, for one waiting coroutine;
//  - `child<T>`: a co_spawn'ed coroutine with its own cancellation signal, both kept alive by
//    shared ownership until it completed; it records its value or exception and sets its
//    parent's event when it ends; `join` waits for children;
//  - `task_group`: named void children started and stopped together (the daemon's tree);
//  - `stop_handle::start`: the lightest child, for the check engine's probe runs.
//
// The stop convention (one for every area). A coroutine notices a stop at every wait: the
// waits here return false (or a value saying so) instead of throwing Asio's operation_aborted,
// so no branch of a `||` can swallow a real error by looking like a stop, and no frame is
// unwound while children it owns still run. Exceptions mean bugs and travel up to the daemon,
// which logs them and exits 11. A coroutine that must clean up after a stop switches off
// `this_coro::throw_if_cancelled` (else awaiting another awaitable throws in a cancelled thread)
// and `reset_cancellation_state()` so that the next, stronger stop still reaches its clean-up.
#pragma once

#include <chrono>
#include <exception>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/cancellation_type.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

namespace esm::async {

namespace asio = boost::asio;
using clock = std::chrono::steady_clock;

inline constexpr auto tuple_awaitable = asio::as_tuple(asio::use_awaitable);

inline bool is_cancelled(const asio::cancellation_state& s) {
  return s.cancelled() != asio::cancellation_type::none;
}

// The text of an exception a child ended with, for the log: what() of a std::exception,
// else a fixed text (never an empty catch that hides what failed).
inline std::string what_of(std::exception_ptr e) {
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& x) {
    return x.what();
  } catch (...) {
    return "an exception not derived from std::exception";
  }
}

// A cancellation filter for the root of a part of the daemon: lets every stop through and adds
// `terminal` to it, so that a `total` stop also reaches the coroutines spawned below it (`||`
// branches, children), whose default filter passes terminal only. Use as
// `co_await this_coro::reset_cancellation_state(async::pass_every_stop)`.
inline asio::cancellation_type pass_every_stop(asio::cancellation_type t) {
  return t == asio::cancellation_type::none ? t : t | asio::cancellation_type::terminal;
}

// true when the time ran out, false when the wait was cancelled, including by a stop that
// arrived while the caller was not waiting (that cancels no later operation by itself).
inline asio::awaitable<bool> sleep_until(clock::time_point t) {
  auto cs = co_await asio::this_coro::cancellation_state;
  if (is_cancelled(cs)) co_return false;
  asio::steady_timer timer(co_await asio::this_coro::executor, t);
  auto [ec] = co_await timer.async_wait(tuple_awaitable);
  co_return !ec;
}
inline asio::awaitable<bool> sleep_for(std::chrono::nanoseconds d) {
  bool ran_out = co_await sleep_until(clock::now() + std::chrono::duration_cast<clock::duration>(d));
  co_return ran_out;
}

class event {
 public:
  explicit event(asio::any_io_executor ex) : timer_(ex, clock::time_point::max()) {}
  void set() {
    set_ = true;
    timer_.cancel();
  }
  void reset() { set_ = false; }
  bool is_set() const { return set_; }
  // Returns at once when set; otherwise waits for set() (true) or the caller's cancellation
  // (false), including one that arrived before this call. Does not clear the flag. One waiter.
  asio::awaitable<bool> wait() {
    if (set_) co_return true;
    auto cs = co_await asio::this_coro::cancellation_state;
    if (is_cancelled(cs)) co_return false;
    bool woke = co_await wait_even_if_cancelled();
    co_return woke;
  }
  // For clean-up after a stop (join): waits for set() even when the caller was cancelled
  // before; a further cancellation still ends the wait (false).
  asio::awaitable<bool> wait_even_if_cancelled() {
    bool stopped = false;
    while (!set_ && !stopped) {
      timer_.expires_at(clock::time_point::max());
      auto [ec] = co_await timer_.async_wait(tuple_awaitable);
      stopped = ec && !set_;  // set() cancels the timer too, but then set_ is true
    }
    co_return !stopped;
  }

 private:
  asio::steady_timer timer_;
  bool set_ = false;
};

template <class T>
class child {
 public:
  // Runs `body` on `ex`. `done` (optional) is set when it completes.
  static std::shared_ptr<child> spawn(asio::any_io_executor ex, asio::awaitable<T> body,
                                      std::shared_ptr<event> done = {}) {
    auto c = std::shared_ptr<child>(new child(std::move(done)));
    asio::co_spawn(ex, rooted(std::move(body)),
                   asio::bind_cancellation_slot(c->signal_.slot(), [c](std::exception_ptr e, T v) {
                     c->error_ = e;
                     if (!e) c->value_.emplace(std::move(v));
                     c->finish();
                   }));
    return c;
  }

  void cancel(asio::cancellation_type t = asio::cancellation_type::terminal) {
    if (!done_) signal_.emit(t);
  }
  bool done() const { return done_; }
  // Set when the coroutine returned normally.
  const std::optional<T>& value() const { return value_; }
  std::exception_ptr error() const { return error_; }

 private:
  explicit child(std::shared_ptr<event> done) : notify_(std::move(done)) {}
  // The stop convention: a stop is noticed at each wait, never thrown from a co_await.
  static asio::awaitable<T> rooted(asio::awaitable<T> body) {
    co_await asio::this_coro::throw_if_cancelled(false);
    auto v = co_await std::move(body);  // not `co_return co_await`: g++ 12 miscompiles it
    co_return v;
  }
  void finish() {
    done_ = true;
    if (notify_) notify_->set();
  }
  asio::cancellation_signal signal_;
  std::shared_ptr<event> notify_;
  bool done_ = false;
  std::optional<T> value_;
  std::exception_ptr error_;
};

// `wake` is the event the children were spawned with. Call join with throw_if_cancelled off.
template <class... C>
bool all_done(const C&... children) {
  return ((!children || children->done()) && ...);
}
// g++ 12 miscompiles some coroutines into an illegal instruction (SIGILL at run time): a
// `co_return` of a value inside a loop after a `co_await` in a condition, and `co_return
// co_await f()`. The coroutines of this file therefore name every awaited result, test it
// afterwards, and return once, after their loop.
template <class... C>
void cancel_all(const C&... children) {
  ((children ? children->cancel() : void()), ...);
}
// The stop button of a coroutine started by spawn_stoppable: its cancellation signal, kept
// alive as long as the coroutine (Boost 1.81 needs that), and whether it completed.
class stop_handle {
 public:
  void cancel(asio::cancellation_type t = asio::cancellation_type::terminal) {
    if (!done_) signal_.emit(t);
  }
  bool done() const { return done_; }

  // Starts `body` on `ex` under `h`; `on_done(std::exception_ptr)` runs when it completes. The
  // lightest child (no value, no event, no change of throw_if_cancelled): the check engine
  // starts one per probe run. co_spawn dispatches, so on the executor's own thread the body
  // runs inside this call up to its first wait, and may even complete: store `h` wherever
  // the body or its completion looks for it before calling this.
  template <class Handler>
  static void start(std::shared_ptr<stop_handle> h, asio::any_io_executor ex,
                    asio::awaitable<void> body, Handler on_done) {
    asio::co_spawn(ex, std::move(body),
                   asio::bind_cancellation_slot(h->signal_.slot(),
                                                [h, on_done = std::move(on_done)](std::exception_ptr e) mutable {
                                                  h->done_ = true;
                                                  on_done(e);
                                                }));
  }

 private:
  asio::cancellation_signal signal_;
  bool done_ = false;
};

// Waits until every listed child (null pointers allowed) has completed: they refer to the
// caller's frame, so it must not end before them. A further cancellation of the caller (the
// daemon's second stage) is passed on to them as terminal, and the wait goes on.
template <class... C>
asio::awaitable<void> join(event& wake, const C&... children) {
  for (;;) {
    wake.reset();
    if (all_done(children...)) break;
    bool woke = co_await wake.wait_even_if_cancelled();
    if (!woke) cancel_all(children...);
  }
}

// Adapts a void coroutine for child<int>.
inline asio::awaitable<int> as_child(asio::awaitable<void> body) {
  co_await std::move(body);
  co_return 0;
}

// Runs `branches` as children until the first of them ends (normally or by an exception), or
// the caller is cancelled; then cancels the others (terminal), waits for all of them, and
// rethrows the first exception any of them raised. Unlike `a || b`, an exception is never
// swallowed by another branch's return. Returns the index of the branch that ended first
// (branches.size() when the caller was cancelled first).
inline asio::awaitable<std::size_t> first_of(std::vector<asio::awaitable<void>> branches) {
  auto ex = co_await asio::this_coro::executor;
  bool rethrow = co_await asio::this_coro::throw_if_cancelled();
  co_await asio::this_coro::throw_if_cancelled(false);
  auto wake = std::make_shared<event>(ex);
  std::vector<std::shared_ptr<child<int>>> kids;
  kids.reserve(branches.size());
  for (auto& b : branches) kids.push_back(child<int>::spawn(ex, as_child(std::move(b)), wake));
  std::size_t first = kids.size();
  for (;;) {
    wake->reset();
    for (std::size_t i = 0; i < kids.size() && first == kids.size(); ++i)
      if (kids[i]->done()) first = i;
    if (first != kids.size()) break;
    bool woke = co_await wake->wait();
    if (!woke) break;
  }
  for (auto& k : kids) k->cancel();
  for (;;) {
    wake->reset();
    bool all = true;
    for (auto& k : kids) all = all && k->done();
    if (all) break;
    bool woke = co_await wake->wait_even_if_cancelled();
    if (!woke)  // a further stop of the caller: pass it on (a child may be in its clean-up)
      for (auto& k : kids) k->cancel();
  }
  co_await asio::this_coro::throw_if_cancelled(rethrow);
  for (auto& k : kids)
    if (k->error()) std::rethrow_exception(k->error());
  co_return first;
}

// Named void children started and stopped together. A child ends normally (it was stopped, or
// its work is over) or with an exception (a bug); the owner decides what either means.
class task_group {
 public:
  explicit task_group(asio::any_io_executor ex) : ex_(ex), wake_(std::make_shared<event>(ex)) {}

  // Starts `body` as the child `name`. Its root cancellation filter lets every stop through
  // (a `total` stop is passed on as terminal|total, so the default terminal-only filter of
  // coroutines spawned below it, `||` branches included, sees it as well).
  void spawn(std::string name, asio::awaitable<void> body) {
    entries_.push_back({std::move(name), child<int>::spawn(ex_, root(std::move(body)), wake_)});
  }

  // The first child that ended (in start order), or nullopt when none has; by pointer into
  // the group (valid while the group lives).
  struct ended {
    const std::string* name;
    std::exception_ptr error;
  };
  std::optional<ended> first_ended() const {
    for (auto& e : entries_)
      if (e.task->done()) return ended{&e.name, e.task->error()};
    return std::nullopt;
  }
  // The children that ended with an exception, in start order.
  std::vector<ended> failures() const {
    std::vector<ended> out;
    for (auto& e : entries_)
      if (e.task->done() && e.task->error()) out.push_back(ended{&e.name, e.task->error()});
    return out;
  }
  // Waits until some child ended (true) or the caller is cancelled (false).
  asio::awaitable<bool> wait_any() {
    bool any = false, woke = true;
    while (woke) {
      wake_->reset();
      any = first_ended().has_value();
      if (any) break;
      woke = co_await wake_->wait();
    }
    co_return any;
  }
  // Asks every child still running to stop.
  void cancel(asio::cancellation_type t) {
    for (auto& e : entries_) e.task->cancel(t);
  }
  bool all_done() const {
    for (auto& e : entries_)
      if (!e.task->done()) return false;
    return true;
  }
  // Waits until every child ended (true) or until `until` (false). A cancellation of the
  // caller does not end the wait (the owner bounds it with `until`); call it with
  // throw_if_cancelled off.
  asio::awaitable<bool> join_until(clock::time_point until) {
    asio::steady_timer deadline(ex_, until);
    auto late = std::make_shared<bool>(false);
    deadline.async_wait([late, wake = wake_](boost::system::error_code ec) {
      if (ec) return;
      *late = true;
      wake->set();
    });
    while (!*late) {
      wake_->reset();
      if (all_done()) break;
      co_await wake_->wait_even_if_cancelled();  // false: the caller was cancelled; go on
    }
    deadline.cancel();
    co_return all_done();
  }
  // The names of the children still running.
  std::vector<std::string> running() const {
    std::vector<std::string> out;
    for (auto& e : entries_)
      if (!e.task->done()) out.push_back(e.name);
    return out;
  }

 private:
  static asio::awaitable<int> root(asio::awaitable<void> body) {
    co_await asio::this_coro::throw_if_cancelled(false);
    co_await asio::this_coro::reset_cancellation_state(pass_every_stop);
    co_await std::move(body);
    co_return 0;
  }
  struct entry {
    std::string name;
    std::shared_ptr<child<int>> task;
  };
  asio::any_io_executor ex_;
  std::shared_ptr<event> wake_;
  std::vector<entry> entries_;
};

}  // namespace esm::async
