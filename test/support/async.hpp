// Runs a coroutine to completion on a test's io_context under a hard deadline.
#pragma once

#include <chrono>
#include <exception>
#include <optional>
#include <stdexcept>

#include <boost/asio/awaitable.hpp>
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

}  // namespace esm::test
