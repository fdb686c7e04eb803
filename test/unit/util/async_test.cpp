// The async toolkit (lib/esm/util/async.hpp) and the tests' run(): timers only, no network.
#include <doctest/doctest.h>

#include <stdexcept>

#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/io_context.hpp>

#include "async.hpp"
#include "esm/util/async.hpp"

namespace asio = boost::asio;
namespace async = esm::async;
using namespace std::chrono_literals;
using esm::test::run;

namespace {

asio::awaitable<void> wait_forever(bool* ended = nullptr) {
  struct guard {
    bool* flag;
    ~guard() {
      if (flag) *flag = true;
    }
  } g{ended};
  asio::steady_timer t(co_await asio::this_coro::executor, async::clock::time_point::max());
  co_await t.async_wait(async::tuple_awaitable);
}

asio::awaitable<void> throw_after(std::chrono::milliseconds d) {
  co_await async::sleep_for(d);
  throw std::logic_error("bug in a branch");
}

}  // namespace

TEST_CASE("first_of rethrows a branch's exception while the other branch still runs") {
  // `a || b` would swallow it and keep waiting for the other branch: the worker and the
  // leader kept following or holding while doing nothing.
  asio::io_context io;
  bool other_ended = false;
  auto body = [&]() -> asio::awaitable<void> {
    std::vector<asio::awaitable<void>> branches;
    branches.push_back(wait_forever(&other_ended));
    branches.push_back(throw_after(10ms));
    co_await async::first_of(std::move(branches));
  };
  CHECK_THROWS_WITH_AS(run(io, body(), 5s), "bug in a branch", std::logic_error);
  CHECK(other_ended);  // stopped and joined before first_of returned
}

TEST_CASE("first_of returns the index of the branch that ended first, after stopping the rest") {
  asio::io_context io;
  bool other_ended = false;
  auto first = run(io, [&]() -> asio::awaitable<std::size_t> {
    std::vector<asio::awaitable<void>> branches;
    branches.push_back(wait_forever(&other_ended));
    branches.push_back([]() -> asio::awaitable<void> { co_await async::sleep_for(5ms); }());
    co_return co_await async::first_of(std::move(branches));
  }(), 5s);
  CHECK(first == 1);
  CHECK(other_ended);
}

TEST_CASE("a stop that came before a wait ends the wait at once, without an exception") {
  asio::io_context io;
  async::event e(io.get_executor());
  bool returned = false, waited = true, slept = true;
  auto body = [&]() -> asio::awaitable<void> {  // named: the closure outlives the coroutine
    co_await async::sleep_for(20ms);               // the stop arrives during this sleep
    waited = co_await e.wait();                    // ... and ends this wait before it starts
    slept = co_await async::sleep_for(std::chrono::hours(1));
    returned = true;
  };
  auto c = async::child<int>::spawn(io.get_executor(), async::as_child(body()));
  io.run_for(5ms);
  c->cancel();
  io.run_for(100ms);
  REQUIRE(c->done());
  CHECK_FALSE(c->error());
  CHECK(returned);
  CHECK_FALSE(waited);
  CHECK_FALSE(slept);
}

TEST_CASE("task_group: a total stop reaches || branches below a child; join_until bounds the wait") {
  using namespace asio::experimental::awaitable_operators;
  asio::io_context io;
  async::task_group group(io.get_executor());
  group.spawn("racing", []() -> asio::awaitable<void> { co_await (wait_forever() || wait_forever()); }());
  group.spawn("stubborn", []() -> asio::awaitable<void> {
    // Ignores the first stop for 200 ms (a clean-up), then ends.
    co_await async::sleep_for(std::chrono::hours(1));
    co_await asio::this_coro::reset_cancellation_state();
    co_await async::sleep_for(200ms);
  }());
  bool joined_early = true, joined_late = false;
  std::vector<std::string> still_running;
  run(io, [&]() -> asio::awaitable<void> {
    CHECK_FALSE(group.first_ended());
    group.cancel(asio::cancellation_type::total);
    joined_early = co_await group.join_until(async::clock::now() + 50ms);
    still_running = group.running();
    joined_late = co_await group.join_until(async::clock::now() + 2s);
  }(), 5s);
  CHECK_FALSE(joined_early);
  CHECK(still_running == std::vector<std::string>{"stubborn"});
  CHECK(joined_late);
  REQUIRE(group.first_ended());
  CHECK(*group.first_ended()->name == "racing");
}

TEST_CASE("run(): a coroutine past its deadline is stopped before run() throws") {
  // Before, it stayed suspended on the caller's dead locals, and a later run() of the same
  // io_context resumed it.
  asio::io_context io;
  bool ended = false;
  CHECK_THROWS_WITH(run(io, wait_forever(&ended), 50ms), "test coroutine missed its deadline");
  CHECK(ended);
  // The io_context is usable again and holds nothing of it.
  CHECK(run(io, []() -> asio::awaitable<int> { co_return 7; }(), 1s) == 7);
}

TEST_CASE("join waits for its children through a second stop, and passes that stop on to them") {
  // A child in its clean-up (it reset its cancellation state after the first stop) must not
  // be left running when its parent's frame ends: before, a second cancellation of the parent
  // ended join() early, and the parent went on while the child still used its frame.
  asio::io_context io;
  bool child_first_stop = false, child_cleanup_cut = false, parent_saw_child_done = false;
  auto kid_body = [&]() -> asio::awaitable<void> {
    bool slept = co_await async::sleep_for(std::chrono::hours(1));
    child_first_stop = !slept;
    co_await asio::this_coro::reset_cancellation_state();
    bool cleaned = co_await async::sleep_for(std::chrono::hours(1));  // a long clean-up
    child_cleanup_cut = !cleaned;
  };
  auto parent_body = [&]() -> asio::awaitable<void> {
    auto ex = co_await asio::this_coro::executor;
    auto wake = std::make_shared<async::event>(ex);
    auto kid = async::child<int>::spawn(ex, async::as_child(kid_body()), wake);
    bool woke = co_await wake->wait();  // false: the parent was stopped
    (void)woke;
    kid->cancel();
    co_await asio::this_coro::reset_cancellation_state();
    co_await async::join(*wake, kid);
    parent_saw_child_done = kid->done();
  };
  auto parent = async::child<int>::spawn(io.get_executor(), async::as_child(parent_body()));
  io.run_for(10ms);
  parent->cancel();  // first stop: the child starts its clean-up
  io.run_for(50ms);
  CHECK(child_first_stop);
  CHECK_FALSE(parent->done());  // still joining
  parent->cancel();  // second stop: reaches the child's clean-up through join
  io.run_for(50ms);
  CHECK(child_cleanup_cut);
  REQUIRE(parent->done());
  CHECK_FALSE(parent->error());
  CHECK(parent_saw_child_done);
}

TEST_CASE("task_group::join_until is bounded by its deadline, not ended by a caller's cancellation") {
  asio::io_context io;
  async::task_group group(io.get_executor());
  group.spawn("slow", []() -> asio::awaitable<void> {
    co_await async::sleep_for(std::chrono::hours(1));
    co_await asio::this_coro::reset_cancellation_state();
    co_await async::sleep_for(150ms);  // a clean-up that takes its time
  }());
  bool joined = false;
  auto waiter_body = [&]() -> asio::awaitable<void> {
    group.cancel(asio::cancellation_type::total);
    joined = co_await group.join_until(async::clock::now() + 5s);
  };
  auto waiter = async::child<int>::spawn(io.get_executor(), async::as_child(waiter_body()));
  io.run_for(20ms);
  waiter->cancel();  // e.g. a signal during a stop the daemon began by itself
  io.run_for(20ms);
  CHECK_FALSE(waiter->done());  // still waiting for the clean-up
  io.run_for(500ms);
  REQUIRE(waiter->done());
  CHECK(joined);
  CHECK(group.all_done());
}
