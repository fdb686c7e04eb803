// Election instances in-process for the cluster tests: each with its own Consul client (direct
// or through a proxy), status, and a leader work that records when it ran and when it was
// cancelled. Plus a captured log and a polling helper.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <sstream>
#include <string>
#include <vector>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "esm/cluster/election.hpp"
#include "esm/consul/client.hpp"
#include "esm/log/log.hpp"

namespace esm::test {

namespace asio = boost::asio;
using clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

// Captures every log record of the process (all instances share the logger).
inline std::shared_ptr<std::ostringstream> capture_log() {
  static std::shared_ptr<std::ostringstream> out = [] {
    auto s = std::make_shared<std::ostringstream>();
    esm::log::settings st;
    st.console = s;
    esm::log::init(st);
    return s;
  }();
  return out;
}

inline int count_of(const std::string& text, const std::string& what) {
  int n = 0;
  for (auto p = text.find(what); p != std::string::npos; p = text.find(what, p + 1)) ++n;
  return n;
}

inline consul::connection_options opts_for(const std::string& address) {
  consul::connection_options o;
  o.address = address;
  o.request_timeout = 3s;
  return o;
}

// Short settings so failovers take seconds: TTL 10 s (Consul's minimum), lock-delay 1 s.
inline cluster::election_options test_election(const std::string& key) {
  cluster::election_options o;
  o.key = key;
  o.timing.session_ttl = 10s;
  o.timing.lock_delay = 1s;
  o.timing.monitor_retries = 6;
  o.timing.monitor_retry_time = 1s;
  o.timing.blocking_wait = 5s;
  o.timing.retry_interval = 500ms;
  o.timing.request_timeout = 3s;
  return o;
}

inline asio::awaitable<void> pause(std::chrono::nanoseconds d) {
  asio::steady_timer t(co_await asio::this_coro::executor,
                       std::chrono::duration_cast<clock::duration>(d));
  co_await t.async_wait(asio::as_tuple(asio::use_awaitable));
}

// Polls `pred` every `step` until it holds (true) or `timeout` passes (false).
inline asio::awaitable<bool> eventually(std::function<bool()> pred, std::chrono::nanoseconds timeout,
                                        std::chrono::milliseconds step = 20ms) {
  auto end = clock::now() + timeout;
  while (!pred()) {
    if (clock::now() >= end) co_return false;
    co_await pause(step);
  }
  co_return true;
}

struct elector {
  elector(asio::io_context& io, std::string n, const std::string& address, cluster::election_options o,
          std::string token = {})
      : name(std::move(n)), client(io.get_executor(), with_token(opts_for(address), std::move(token))),
        opts(std::move(o)) {}
  static consul::connection_options with_token(consul::connection_options c, std::string token) {
    c.token = std::move(token);
    return c;
  }

  std::string name;
  consul::client client;
  cluster::election_options opts;
  cluster::election_status status;
  asio::cancellation_signal signal;
  bool running = false;
  bool done = false;
  std::optional<clock::time_point> stopped_at, done_at;

  // What the leader work does: wait until cancelled (a real leader's shape), return at once
  // (a leader fenced out), or throw (a bug in the leader work).
  enum class work_mode { wait, end_at_once, throw_at_once };
  work_mode mode = work_mode::wait;

  // Leader work records.
  int work_runs = 0;
  std::vector<std::string> sessions;
  std::vector<consul::txn_op> fences;
  std::vector<esm::util::lease> leases;  // each term's, as handed to its leader work
  std::optional<clock::time_point> work_started, work_cancelled;

  void start(asio::io_context& io) {
    running = true;
    auto work = [this](std::string session, consul::txn_op fence, esm::util::lease lease) -> asio::awaitable<void> {
      ++work_runs;
      sessions.push_back(session);
      fences.push_back(fence);
      leases.push_back(std::move(lease));
      work_started = clock::now();
      if (mode == work_mode::end_at_once) co_return;
      if (mode == work_mode::throw_at_once) throw std::logic_error("leader work bug (test)");
      asio::steady_timer t(co_await asio::this_coro::executor, asio::steady_timer::time_point::max());
      co_await t.async_wait(asio::as_tuple(asio::use_awaitable));
      work_cancelled = clock::now();
    };
    asio::co_spawn(io, cluster::run_leader_election(client, opts, work, status),
                   asio::bind_cancellation_slot(signal.slot(), [this](std::exception_ptr e) {
                     if (e) {
                       try {
                         std::rethrow_exception(e);
                       } catch (const std::exception& ex) {
                         error = ex.what();
                       }
                     }
                     done = true;
                     done_at = clock::now();
                   }));
  }
  void stop() {
    stopped_at = clock::now();
    if (!done) signal.emit(asio::cancellation_type::terminal);
  }
  std::string error;  // an exception escaped run_leader_election (empty unless work throws)
};

}  // namespace esm::test
