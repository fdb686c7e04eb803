// Retrying a Consul call: transient failures (transport errors, timeouts, 5xx, 429) are
// retried with capped exponential backoff and jitter; success, a permanent error (403, 404,
// a malformed answer) or cancellation end it at once. Honours the caller's cancellation
// (terminal) during the pauses.
#pragma once

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "esm/util/backoff.hpp"
#include "esm/consul/error.hpp"

namespace esm::consul {

// `attempt()` returns awaitable<result<T>>. At most `max_attempts` calls (0: no limit).
template <class Attempt>
auto retry(Attempt attempt, util::backoff delays, unsigned max_attempts = 0) -> decltype(attempt()) {
  auto ex = co_await boost::asio::this_coro::executor;
  for (unsigned n = 1;; ++n) {
    auto r = co_await attempt();
    if (r || !r.error().is_transient() || (max_attempts && n >= max_attempts)) co_return r;
    boost::asio::steady_timer pause(ex, delays.next());
    auto [ec] = co_await pause.async_wait(boost::asio::as_tuple(boost::asio::use_awaitable));
    if (ec) co_return r;  // cancelled while waiting: the last error stands
  }
}

}  // namespace esm::consul
