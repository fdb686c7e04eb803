// Runs a coroutine to completion on a test's io_context under a hard deadline; `task` runs
// one in the background (esm::async::child: its own cancellation signal, both kept alive
// until it completed, and the stop convention of lib/esm/util/async.hpp).
#pragma once

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <memory>
#include <optional>
#include <stdexcept>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>

#include "esm/util/async.hpp"

namespace esm::test {

// Runs `a` until it completes or `deadline` passes. On a missed deadline the coroutine is
// cancelled and run until it ended (at most 10 s more) before the exception is thrown: it
// refers to the caller's locals, and a later run() of the same io_context would otherwise
// resume it after they are gone. One that ignores its cancellation aborts the test binary.
template <class T>
T run(boost::asio::io_context& io, boost::asio::awaitable<T> a,
      std::chrono::milliseconds deadline = std::chrono::seconds(60)) {
  struct state {
    std::optional<T> out;
    std::exception_ptr failure;
    bool done = false;
    boost::asio::cancellation_signal signal;
  };
  auto st = std::make_shared<state>();
  boost::asio::co_spawn(io, std::move(a),
                        boost::asio::bind_cancellation_slot(st->signal.slot(), [st](std::exception_ptr e, T v) {
                          st->failure = e;
                          if (!e) st->out.emplace(std::move(v));
                          st->done = true;
                        }));
  io.restart();
  auto until = [&](std::chrono::steady_clock::time_point end) {
    while (!st->done && std::chrono::steady_clock::now() < end) {
      if (io.stopped()) io.restart();
      io.run_one_until(end);
    }
  };
  until(std::chrono::steady_clock::now() + deadline);
  if (!st->done) {
    st->signal.emit(boost::asio::cancellation_type::terminal);
    until(std::chrono::steady_clock::now() + std::chrono::seconds(10));
    if (!st->done) {
      std::fputs("test coroutine missed its deadline and did not end when cancelled\n", stderr);
      std::abort();
    }
    throw std::runtime_error("test coroutine missed its deadline");
  }
  if (st->failure) std::rethrow_exception(st->failure);
  return std::move(*st->out);
}

inline void run(boost::asio::io_context& io, boost::asio::awaitable<void> a,
                std::chrono::milliseconds deadline = std::chrono::seconds(60)) {
  run(io, esm::async::as_child(std::move(a)), deadline);
}

class task {
 public:
  task(boost::asio::io_context& io, boost::asio::awaitable<void> body)
      : child_(esm::async::child<int>::spawn(io.get_executor(), esm::async::as_child(std::move(body)))) {}
  void cancel() { child_->cancel(); }
  bool done() const { return child_->done(); }
  std::exception_ptr error() const { return child_->error(); }

 private:
  std::shared_ptr<esm::async::child<int>> child_;
};

}  // namespace esm::test
