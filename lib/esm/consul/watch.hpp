// Blocking-query watches. `index_tracker` holds Consul's rules for indexes (no I/O):
//  - the first call is not blocking (index 0); later calls send the last index, never 0;
//  - an index that goes backwards (a snapshot restore, a new leader) resets to 0, so the
//    next call returns at once with the current state;
//  - a call that returns quickly with an unchanged index is rate limited, so a misbehaving
//    endpoint cannot turn a watch into a busy loop.
// `watch<T>` drives a fetch function with it and returns each new state.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "esm/util/backoff.hpp"
#include "esm/consul/client.hpp"

namespace esm::consul {

class index_tracker {
 public:
  // A result counts as "changed" the first time and whenever the index moves.
  struct decision {
    bool changed = false;
    std::chrono::milliseconds pause{0};  // wait this long before the next call
  };

  explicit index_tracker(std::chrono::milliseconds min_interval = std::chrono::milliseconds(100))
      : min_interval_(min_interval) {}

  std::uint64_t index() const { return index_; }
  bool primed() const { return primed_; }

  decision on_result(std::uint64_t returned, std::chrono::milliseconds elapsed) {
    decision d;
    if (!primed_ || returned != delivered_) {
      d.changed = true;
      delivered_ = returned;
    } else if (index_ != 0 && elapsed < min_interval_) {
      d.pause = min_interval_ - elapsed;  // a blocking call came back at once with nothing new
    }
    bool backwards = primed_ && returned < index_;
    primed_ = true;
    index_ = backwards ? 0 : (returned == 0 ? 1 : returned);
    return d;
  }

  // Starts over: the next call is not blocking and its result counts as a change.
  void reset() {
    index_ = 0;
    primed_ = false;
  }

 private:
  std::uint64_t index_ = 0;      // sent with the next call
  std::uint64_t delivered_ = 0;  // index of the state last returned to the caller
  bool primed_ = false;
  std::chrono::milliseconds min_interval_;
};

// Repeats `fetch(options)` as a blocking query until the state changes, and returns it.
// Errors are returned to the caller (who decides on backoff); the index is kept, so the next
// next() resumes where the watch was. Honours the caller's cancellation (terminal).
template <class T>
class watch {
 public:
  using fetch_fn = std::function<awaitable<result<query_result<T>>>(const query_options&)>;

  watch(fetch_fn fetch, query_options base, std::chrono::milliseconds wait)
      : fetch_(std::move(fetch)), base_(std::move(base)), wait_(wait) {}

  awaitable<result<query_result<T>>> next() {
    auto ex = co_await boost::asio::this_coro::executor;
    for (;;) {
      // A stop that arrived while the caller was not waiting (between the previous answer and
      // this call) cancels no later request by itself: without this check the next blocking
      // query would go out and hold the stop for up to its wait.
      auto cs = co_await boost::asio::this_coro::cancellation_state;
      if (cs.cancelled() != boost::asio::cancellation_type::none)
        co_return error{boost::asio::error::operation_aborted, 0, "watch cancelled"};
      auto q = base_;
      q.index = tracker_.index();
      q.wait = wait_;
      auto start = std::chrono::steady_clock::now();
      auto r = co_await fetch_(q);
      if (!r) co_return r.error();
      auto elapsed = std::chrono::duration_cast<std::chrono::milliseconds>(
          std::chrono::steady_clock::now() - start);
      last_meta_ = r->meta;
      auto d = tracker_.on_result(r->meta.last_index, elapsed);
      if (d.changed) co_return r;
      if (d.pause.count() > 0) {
        boost::asio::steady_timer t(ex, d.pause);
        auto [ec] = co_await t.async_wait(boost::asio::as_tuple(boost::asio::use_awaitable));
        if (ec) co_return error{ec, 0, "watch cancelled"};
      }
    }
  }

  const index_tracker& tracker() const { return tracker_; }
  index_tracker& tracker() { return tracker_; }
  const query_meta& last_meta() const { return last_meta_; }

 private:
  fetch_fn fetch_;
  query_options base_;
  std::chrono::milliseconds wait_;
  index_tracker tracker_;
  query_meta last_meta_;
};

}  // namespace esm::consul
