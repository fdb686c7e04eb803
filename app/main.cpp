// esmd: flags, configuration, logging, then the daemon on one io_context until SIGINT or
// SIGTERM. Exit codes: 0 normal stop, -help, -version, a valid -validate; 11 flag,
// configuration, logging and startup errors (consul-esm's code).
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <iostream>
#include <optional>
#include <thread>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <boost/asio/deferred.hpp>
#include <boost/asio/experimental/parallel_group.hpp>

#include <boost/asio/error.hpp>
#include <boost/system/system_error.hpp>

#include "esm/checks/engine.hpp"
#include "esm/cluster/instance.hpp"
#include "esm/config/cli.hpp"
#include "esm/config/config.hpp"
#include "esm/consul/client.hpp"
#include "esm/consul/compat.hpp"
#include "esm/log/banner.hpp"
#include "esm/log/log.hpp"
#include "esm/probe/probe.hpp"
#include "esm/sharding/leader.hpp"
#include "esm/sharding/worker.hpp"

namespace asio = boost::asio;
using namespace std::chrono_literals;

namespace {

constexpr auto shutdown_grace = 5s;
// Past this the process ends even if the io_context cannot return (a handler blocked on a
// stalled stdout, ~io_context joining the resolver's getaddrinfo thread, a destructor).
constexpr auto shutdown_hard_limit = shutdown_grace + 1500ms;

struct daemon_state {
  esm::config::config cfg;
  std::vector<std::string> config_paths;
  std::optional<int> exit_code;  // set when the daemon decides to stop by itself
  bool stopping = false;         // SIGINT or SIGTERM received
  // Read by the admin endpoint and metrics (to come); they outlive every coroutine.
  esm::cluster::instance_status instance;
  esm::sharding::leader_stats leader;
  esm::sharding::worker_stats worker;
  esm::sharding::logging_sink node_log;  // logs the assigned nodes until the node prober exists
};

// The worker's share goes to the check engine (checks) and the log (counts; nodes until the
// node prober exists).
class daemon_sink : public esm::sharding::assignment_sink {
 public:
  daemon_sink(esm::sharding::logging_sink& log, esm::checks::check_engine& checks)
      : log_(log), checks_(checks) {}
  void on_nodes(std::vector<esm::consul::node> h, std::vector<esm::consul::node> p) override {
    log_.on_nodes(std::move(h), std::move(p));
  }
  void on_checks(const std::vector<esm::consul::health_check>& c) override {
    log_.on_checks(c);  // the count at INFO when it changed, else DEBUG
    checks_.on_checks(c);
  }

 private:
  esm::sharding::logging_sink& log_;
  esm::checks::check_engine& checks_;
};

// Asio 1.81 throws operation_aborted from the next co_await of a cancelled coroutine; after
// our own stop request that is the stop, not an error.
bool is_stop(const daemon_state& st, std::exception_ptr e) {
  if (!st.stopping || !e) return false;
  try {
    std::rethrow_exception(e);
  } catch (const boost::system::system_error& se) {
    return se.code() == asio::error::operation_aborted;
  } catch (...) {
  }
  return false;
}

std::chrono::milliseconds ms(std::chrono::nanoseconds d) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(d);
}

// Startup against Consul, then run until cancelled. Honours terminal/total cancellation at
// every wait.
asio::awaitable<void> run_daemon(daemon_state& st) {
  auto ex = co_await asio::this_coro::executor;
  auto& cfg = st.cfg;
  // Check TLS material first: bad files are a startup error naming the key and file, never
  // silence (consul-esm logs and runs no checks at all: W4).
  std::unique_ptr<esm::probe::probe_context> probes;
  try {
    esm::probe::tls_files files;
    files.ca_file = cfg.https_ca_file;
    files.ca_path = cfg.https_ca_path;
    files.cert_file = cfg.https_cert_file;
    files.key_file = cfg.https_key_file;
    probes = std::make_unique<esm::probe::probe_context>(files);
  } catch (const std::exception& e) {
    esm::log::error("Invalid TLS material for checks", {{"error", e.what()}});
    std::cerr << e.what() << "\n";
    st.exit_code = esm::config::exit_code_error;
    co_return;
  }
  esm::consul::client consul(ex, cfg.consul);
  esm::log::info("Connecting to Consul", {{"address", cfg.consul.scheme + "://" + cfg.consul.address}});
  auto leader = co_await esm::consul::wait_for_leader(consul, ms(cfg.retry_interval));
  if (!leader) co_return;  // cancelled by a signal
  esm::log::info("Consul has a leader", {{"leader", *leader}});

  auto incompatible = co_await esm::consul::verify_consul_compatibility(consul, ESMD_VERSION,
                                                                        ms(cfg.retry_interval));
  auto cs = co_await asio::this_coro::cancellation_state;
  if (cs.cancelled() != asio::cancellation_type::none) co_return;  // stopped by a signal
  if (incompatible) {
    esm::log::error("Consul is not compatible", {{"error", *incompatible}});
    std::cerr << *incompatible << "\n";
    st.exit_code = esm::config::exit_code_error;
    co_return;
  }

  if (!cfg.log_json) {
    esm::log::banner_info b;
    b.version = ESMD_VERSION;
    b.datacenter = cfg.datacenter;
    b.partition = cfg.partition;
    b.service = cfg.consul_service;
    b.service_tag = cfg.consul_service_tag;
    b.service_id = cfg.consul_service + ":" + cfg.instance_id;
    b.node_reconnect_timeout = cfg.node_reconnect_timeout;
    b.disable_coordinates = cfg.disable_coordinate_updates;
    b.statsd_address = cfg.telemetry.statsd_address;
    b.metrics_prefix = cfg.telemetry.metrics_prefix;
    esm::log::print_banner(std::cout, b);
    std::cout.flush();
  }
  for (auto& w : cfg.warnings) esm::log::warn(w);

  // Three activities until stopped: this instance's membership with the leader election
  // (whose leader work computes and writes the assignment), the worker that follows this
  // instance's own assignment, and the check engine that runs the checks the worker hands
  // over. If one ends, the others are cancelled; all have ended when the group completes, so
  // nothing outlives this frame.
  esm::checks::check_engine engine(ex, &consul, *probes, esm::checks::make_engine_settings(cfg));
  daemon_sink sink(st.node_log, engine);
  esm::cluster::instance_hooks hooks;
  hooks.leader_work = [&consul, settings = esm::sharding::make_leader_settings(cfg),
                       &stats = st.leader](std::string, esm::consul::txn_op fence) {
    return esm::sharding::run_assignment_leader(consul, settings, std::move(fence), stats);
  };
  auto [order, instance_error, outcome, worker_error, engine_error] =
      co_await asio::experimental::make_parallel_group(
          asio::co_spawn(ex, esm::cluster::run_instance(consul, cfg, hooks, st.instance), asio::deferred),
          asio::co_spawn(ex, esm::sharding::run_assignment_worker(consul, esm::sharding::make_worker_settings(cfg),
                                                                  sink, st.worker),
                         asio::deferred),
          asio::co_spawn(ex, engine.run(), asio::deferred))
          .async_wait(asio::experimental::wait_for_one(), asio::use_awaitable);
  for (auto& e : {instance_error, worker_error, engine_error}) {
    if (!e || is_stop(st, e)) continue;
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& ex) {
      esm::log::error("esmd stopped on an unexpected error", {{"error", ex.what()}});
    }
    st.exit_code = esm::config::exit_code_error;
  }
  if (outcome.code) {
    esm::log::error(outcome.message);
    std::cerr << outcome.message << "\n";
    st.exit_code = esm::config::exit_code_error;
  }
}

void reload(daemon_state& st) {
  try {
    auto next = esm::config::reload_config(st.config_paths, esm::config::process_environment(), st.cfg);
    auto changed = esm::config::describe_changes(st.cfg, next);
    if (changed.empty()) {
      esm::log::info("Reloaded configuration: nothing changed");
      return;
    }
    std::string applied, pending;
    for (auto& key : changed) {
      auto& list = esm::config::applies_at_runtime(key) ? applied : pending;
      list += (list.empty() ? "" : ",") + key;
    }
    if (auto lvl = esm::log::parse_level(next.log_level)) esm::log::set_level(*lvl);
    st.cfg.log_level = next.log_level;
    esm::log::info("Reloaded configuration", {{"applied", applied}, {"needs_restart", pending}});
  } catch (const std::exception& e) {
    esm::log::error("Reloading the configuration failed; keeping the running one", {{"error", e.what()}});
  }
}

}  // namespace

int main(int argc, char** argv) {
  const auto version = esm::config::version_text(ESMD_VERSION, ESMD_GIT_COMMIT);
  daemon_state st;
  try {
    auto cli = esm::config::parse_cli(std::span<const char* const>(argv, std::size_t(argc)));
    if (auto code = esm::config::handle_early_flags(cli, version, std::cout, std::cerr,
                                                    esm::config::process_environment()))
      return *code;
    st.config_paths = cli.config_paths;
    st.cfg = esm::config::load_config(cli.config_paths, esm::config::process_environment());
  } catch (const esm::config::config_error& e) {
    std::cerr << e.what() << "\n";
    return esm::config::exit_code_error;
  }
  try {
    esm::log::init(esm::config::log_settings(st.cfg));
  } catch (const std::exception& e) {
    std::cerr << "Error setting up logging: " << e.what() << "\n";
    return esm::config::exit_code_error;
  }

  asio::io_context io(1);
  asio::cancellation_signal stop;
  bool finished = false;
  asio::co_spawn(io, run_daemon(st), asio::bind_cancellation_slot(stop.slot(), [&](std::exception_ptr e) {
    finished = true;
    if (e && !is_stop(st, e)) {
      try {
        std::rethrow_exception(e);
      } catch (const std::exception& ex) {
        esm::log::error("esmd stopped on an unexpected error", {{"error", ex.what()}});
        std::cerr << "esmd: " << ex.what() << "\n";
      }
      st.exit_code = esm::config::exit_code_error;
    }
    io.stop();
  }));

  asio::signal_set signals(io, SIGINT, SIGTERM, SIGHUP);
  std::function<void(boost::system::error_code, int)> on_signal = [&](boost::system::error_code ec, int sig) {
    if (ec) return;
    if (sig == SIGHUP) {
      reload(st);
      signals.async_wait(on_signal);
      return;
    }
    if (st.stopping) return;  // a second signal changes nothing: the bounds are set
    esm::log::info("Shutting down...");
    st.stopping = true;
    // The bounds first, so nothing the cancellation runs can skip them. Whatever has not
    // finished cleanly by the grace period is abandoned; past the hard limit a watchdog thread
    // ends the process even if the io_context cannot return.
    auto deadline = std::make_shared<asio::steady_timer>(io, shutdown_grace);
    deadline->async_wait([&, deadline](boost::system::error_code) {
      if (!finished) esm::log::warn("Shutdown grace period over; exiting");
      io.stop();
    });
    try {
      std::thread([] {
        std::this_thread::sleep_for(shutdown_hard_limit);
        std::_Exit(0);  // a stop by signal exits 0; no locks, destructors or stdio here
      }).detach();
    } catch (const std::system_error&) {
    }
    stop.emit(asio::cancellation_type::terminal);
  };
  signals.async_wait(on_signal);
  io.run();
  return st.exit_code.value_or(0);
}
