// Runs a coroutine to completion on a test's io_context under a hard deadline; `task` runs
// one in the background with its own cancellation signal.
#pragma once

#include <chrono>
#include <exception>
#include <memory>
#include <optional>
#include <stdexcept>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>

namespace esm::test {

template <class T>
T run(boost::asio::io_context& io, boost::asio::awaitable<T> a,
      std::chrono::milliseconds deadline = std::chrono::seconds(60)) {
  std::optional<T> out;
  std::exception_ptr failure;
  bool done = false;
  boost::asio::co_spawn(io, std::move(a), [&](std::exception_ptr e, T v) {
    failure = e;
    if (!e) out.emplace(std::move(v));
    done = true;
  });
  io.restart();
  auto end = std::chrono::steady_clock::now() + deadline;
  while (!done && std::chrono::steady_clock::now() < end) io.run_one_until(end);
  if (!done) throw std::runtime_error("test coroutine missed its deadline");
  if (failure) std::rethrow_exception(failure);
  return std::move(*out);
}

inline void run(boost::asio::io_context& io, boost::asio::awaitable<void> a,
                std::chrono::milliseconds deadline = std::chrono::seconds(60)) {
  auto wrap = [](boost::asio::awaitable<void> inner) -> boost::asio::awaitable<int> {
    co_await std::move(inner);
    co_return 0;
  };
  run(io, wrap(std::move(a)), deadline);
}

// A co_spawn'ed coroutine with its own cancellation signal, both kept alive until it completed
// (Boost 1.81: a signal must outlive the operation it is bound to).
class task {
 public:
  task(boost::asio::io_context& io, boost::asio::awaitable<void> body)
      : state_(std::make_shared<state>()) {
    auto s = state_;
    boost::asio::co_spawn(io, std::move(body),
                          boost::asio::bind_cancellation_slot(s->signal.slot(), [s](std::exception_ptr e) {
                            s->error = e;
                            s->done = true;
                          }));
  }
  void cancel() {
    if (!state_->done) state_->signal.emit(boost::asio::cancellation_type::terminal);
  }
  bool done() const { return state_->done; }
  std::exception_ptr error() const { return state_->error; }

 private:
  struct state {
    boost::asio::cancellation_signal signal;
    bool done = false;
    std::exception_ptr error;
  };
  std::shared_ptr<state> state_;
};

}  // namespace esm::test
