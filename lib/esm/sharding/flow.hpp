// Small coroutine tools shared by the leader and worker drivers (one thread, Boost 1.81):
//  - `wake`: a flag plus a timer, for one coroutine waiting for another's news;
//  - `pause`: a timer wait that reports whether it ran out (false: cancelled).
// Neither throws on cancellation, so they can be raced with `||`.
#pragma once

#include <chrono>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

namespace esm::sharding::flow {

namespace asio = boost::asio;

inline constexpr auto tuple_awaitable = asio::as_tuple(asio::use_awaitable);

// true when the time ran out, false when cancelled. Honours terminal/partial/total.
inline asio::awaitable<bool> pause(std::chrono::nanoseconds d) {
  asio::steady_timer t(co_await asio::this_coro::executor,
                       std::chrono::duration_cast<asio::steady_timer::duration>(d));
  auto [ec] = co_await t.async_wait(tuple_awaitable);
  co_return !ec;
}

class wake {
 public:
  explicit wake(asio::any_io_executor ex) : timer_(ex, asio::steady_timer::time_point::max()) {}
  void set() {
    set_ = true;
    timer_.cancel();
  }
  bool is_set() const { return set_; }
  void clear() { set_ = false; }
  // Returns at once when set; otherwise waits for set() (true) or cancellation (false). Does
  // not clear the flag. One waiter at a time.
  asio::awaitable<bool> wait() {
    while (!set_) {
      timer_.expires_at(asio::steady_timer::time_point::max());
      auto [ec] = co_await timer_.async_wait(tuple_awaitable);
      if (ec && !set_) {
        // Either set() cancelled the timer (then set_ is true) or the caller cancelled us.
        co_return false;
      }
    }
    co_return true;
  }

 private:
  asio::steady_timer timer_;
  bool set_ = false;
};

}  // namespace esm::sharding::flow
