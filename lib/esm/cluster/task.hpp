// Small structured-concurrency tools for one thread and Boost 1.81 (no cancel_after, and a
// cancellation signal must outlive the operation it is bound to):
//  - `event`: a flag plus a timer used as a wake-up, for one waiting coroutine;
//  - `child`: a co_spawn'ed coroutine with its own cancellation signal, kept alive (with its
//    signal) by shared ownership until it completed; it records its result or exception and
//    sets its parent's event when it ends;
//  - `sleep_for` / `sleep_until`: timers that report whether they ran out (false: cancelled).
// A coroutine that was cancelled and must still clean up switches off
// `this_coro::throw_if_cancelled` around its bounded cleanup (awaiting anything, even another
// awaitable, throws in a cancelled thread otherwise), and restores it afterwards.
#pragma once

#include <chrono>
#include <exception>
#include <memory>
#include <optional>
#include <utility>

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

namespace esm::cluster {

namespace asio = boost::asio;

inline constexpr auto tuple_awaitable = asio::as_tuple(asio::use_awaitable);

// Use as `is_cancelled(co_await asio::this_coro::cancellation_state)`: unlike awaiting a
// helper coroutine, reading the state never throws.
inline bool is_cancelled(const asio::cancellation_state& s) {
  return s.cancelled() != asio::cancellation_type::none;
}

// true when the time ran out, false when the wait was cancelled.
inline asio::awaitable<bool> sleep_until(std::chrono::steady_clock::time_point t) {
  // A stop that arrived while this coroutine was not waiting cancels nothing later on: check.
  auto cs = co_await asio::this_coro::cancellation_state;
  if (cs.cancelled() != asio::cancellation_type::none) co_return false;
  asio::steady_timer timer(co_await asio::this_coro::executor, t);
  auto [ec] = co_await timer.async_wait(tuple_awaitable);
  co_return !ec;
}
inline asio::awaitable<bool> sleep_for(std::chrono::nanoseconds d) {
  co_return co_await sleep_until(std::chrono::steady_clock::now() +
                                 std::chrono::duration_cast<std::chrono::steady_clock::duration>(d));
}

class event {
 public:
  explicit event(asio::any_io_executor ex) : timer_(ex, asio::steady_timer::time_point::max()) {}
  void set() {
    set_ = true;
    timer_.cancel();
  }
  void reset() { set_ = false; }
  bool is_set() const { return set_; }
  // Returns at once when set; otherwise waits for set() (true) or the caller's cancellation
  // (false), including a cancellation that arrived before this call (a stop emitted while the
  // coroutine was not waiting cancels no later wait by itself). Does not clear the flag.
  asio::awaitable<bool> wait() {
    if (set_) co_return true;
    auto cs = co_await asio::this_coro::cancellation_state;
    if (cs.cancelled() != asio::cancellation_type::none) co_return false;
    timer_.expires_at(asio::steady_timer::time_point::max());
    co_await timer_.async_wait(tuple_awaitable);
    co_return set_;
  }
  // For clean-up after a stop (join): waits for set() even when the caller was cancelled
  // (a further cancellation still ends the wait, returning false).
  asio::awaitable<bool> wait_even_if_cancelled() {
    if (set_) co_return true;
    timer_.expires_at(asio::steady_timer::time_point::max());
    co_await timer_.async_wait(tuple_awaitable);
    co_return set_;
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
    asio::co_spawn(ex, std::move(body),
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

// Waits until every listed child (null pointers allowed) has completed. `wake` is the event
// the children were spawned with. Call it when not cancelled, or with throw_if_cancelled off.
template <class... C>
asio::awaitable<void> join(event& wake, const C&... children) {
  for (;;) {
    wake.reset();
    if (((!children || children->done()) && ...)) co_return;
    co_await wake.wait_even_if_cancelled();
  }
}

// Adapts a void coroutine for child<int>.
inline asio::awaitable<int> as_child(asio::awaitable<void> body) {
  co_await std::move(body);
  co_return 0;
}

}  // namespace esm::cluster
