#include "esm/daemon/daemon.hpp"

#include <chrono>
#include <csignal>
#include <atomic>
#include <cstdlib>
#include <functional>
#include <iostream>
#include <memory>
#include <optional>
#include <thread>

#include <unistd.h>

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>

#include "esm/checks/engine.hpp"
#include "esm/cluster/instance.hpp"
#include "esm/consul/client.hpp"
#include "esm/consul/compat.hpp"
#include "esm/daemon/notify.hpp"
#include "esm/daemon/settings.hpp"
#include "esm/daemon/status.hpp"
#include "esm/log/banner.hpp"
#include "esm/log/log.hpp"
#include "esm/ping/prober.hpp"
#include "esm/telemetry/admin_server.hpp"
#include "esm/telemetry/collect.hpp"
#include "esm/telemetry/metrics.hpp"
#include "esm/telemetry/statsd.hpp"
#include "esm/probe/probe.hpp"
#include "esm/sharding/leader.hpp"
#include "esm/sharding/worker.hpp"
#include "esm/util/async.hpp"

namespace esm::daemon {

namespace asio = boost::asio;
using namespace std::chrono_literals;
using clock = std::chrono::steady_clock;

namespace {

// Clean exits get this long after a stop; then `terminal` cuts them short.
constexpr auto shutdown_grace = 5s;
// Past this the process ends even if the io_context cannot return (a handler blocked on a
// stalled stdout, ~io_context joining the resolver's getaddrinfo thread, a destructor).
constexpr auto shutdown_hard_limit = shutdown_grace + 1500ms;

// The watchdog thread's exit code if it must end the process: the code already decided (11
// after a failure, else 0). Static: the thread may outlive run()'s frame.
std::atomic<int> watchdog_exit{0};

// Everything that outlives the coroutines: the configuration, the status registry, the stop.
struct daemon_state {
  config::config cfg;
  std::vector<std::string> config_paths;
  daemon_status status;
  std::optional<int> exit_code;                // set when the daemon decides to stop by itself
  std::optional<clock::time_point> stop_asked;  // SIGINT or SIGTERM received, or a part ended
  // Arms the bounds of a stop (the hard-stop timer, the watchdog thread); idempotent. Set by
  // run(); called on every stop path, so no stop can hang the process.
  std::function<void()> arm_stop_bounds;
  sharding::logging_sink share_log;  // counts of the share at INFO when they change
  // The service manager (systemd's NOTIFY_SOCKET), if any: READY once registered, STOPPING at
  // the stop, RELOADING around a reload, WATCHDOG pings.
  systemd_notifier notifier;
  bool ready_sent = false;
  bool stopping_sent = false;
  bool notify_failed = false;  // the first failure is a warning, later ones debug
};

void notify(daemon_state& st, std::string_view state) {
  auto error = st.notifier.send(state);
  if (error.empty()) return;
  if (!st.notify_failed)
    log::warn("Notifying the service manager failed", {{"error", error}});
  else
    log::debug("Notifying the service manager failed", {{"error", error}});
  st.notify_failed = true;
}

void notify_stopping(daemon_state& st) {
  if (st.stopping_sent) return;
  st.stopping_sent = true;
  notify(st, "STOPPING=1\nSTATUS=Stopping");
}

// WATCHDOG=1 every `every` from the daemon's own loop (so a stalled loop stops the pings and
// the service manager restarts esmd), until the stop.
asio::awaitable<void> run_watchdog(daemon_state& st, std::chrono::microseconds every) {
  co_await asio::this_coro::throw_if_cancelled(false);
  for (;;) {
    notify(st, "WATCHDOG=1");
    bool ran_out = co_await async::sleep_for(every);  // named: see async.hpp on g++ 12
    if (!ran_out) co_return;
  }
}

// The worker's share goes to every consumer: the check engine (checks), the node prober (the
// nodes to ping) and the log (counts).
class share_sink : public sharding::assignment_sink {
 public:
  share_sink(sharding::logging_sink& log, checks::check_engine& checks, ping::node_prober& prober)
      : log_(log), checks_(checks), prober_(prober) {}
  void on_nodes(std::vector<consul::node> h, std::vector<consul::node> p) override {
    prober_.set_nodes(p);
    log_.on_nodes(std::move(h), std::move(p));
  }
  void on_checks(const std::vector<sharding::shared_check>& c) override {
    log_.on_checks(c);  // the count at INFO when it changed, else DEBUG
    checks_.on_checks(c);
  }
  sharding::shared_check held_check(const consul::check_key& k) const override {
    return checks_.held_check(k);  // the engine's copy after its own write
  }

 private:
  sharding::logging_sink& log_;
  checks::check_engine& checks_;
  ping::node_prober& prober_;
};

std::chrono::milliseconds ms(std::chrono::nanoseconds d) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(d);
}

void fail(daemon_state& st, const std::string& message) {
  if (st.status.last_error.empty()) st.status.last_error = message;
  st.exit_code = config::exit_code_error;
  watchdog_exit = config::exit_code_error;
}

// Registration, liveness and the election; keeps how it ended (a duplicate instance, a refused
// registration) for the exit code.
asio::awaitable<void> run_membership(consul::client& c, const config::config& cfg,
                                     cluster::instance_hooks hooks, cluster::instance_status& status,
                                     cluster::run_outcome& outcome) {
  outcome = co_await cluster::run_instance(c, make_membership_options(cfg), make_election_options(cfg),
                                           std::move(hooks), status);
}

// Checks the TLS material for checks, waits for Consul and its leader, verifies its version;
// null when stopped or failed (then st.exit_code says which).
asio::awaitable<std::unique_ptr<probe::probe_context>> start_up(daemon_state& st, consul::client& consul) {
  auto& cfg = st.cfg;
  // Bad TLS files are a startup error naming the key and file, never silence (consul-esm logs
  // and runs no checks at all: W4).
  std::unique_ptr<probe::probe_context> probes;
  try {
    probe::tls_files files;
    files.ca_file = cfg.https_ca_file;
    files.ca_path = cfg.https_ca_path;
    files.cert_file = cfg.https_cert_file;
    files.key_file = cfg.https_key_file;
    probes = std::make_unique<probe::probe_context>(files);
  } catch (const std::exception& e) {
    log::error("Invalid TLS material for checks", {{"error", e.what()}});
    std::cerr << e.what() << "\n";
    fail(st, e.what());
    co_return nullptr;
  }
  log::info("Connecting to Consul", {{"address", cfg.consul.scheme + "://" + cfg.consul.address}});
  auto leader = co_await consul::wait_for_leader(consul, ms(cfg.retry_interval));
  if (!leader) co_return nullptr;  // stopped
  st.status.consul_leader = *leader;
  log::info("Consul has a leader", {{"leader", *leader}});
  auto incompatible = co_await consul::verify_consul_compatibility(consul, ESMD_VERSION, ms(cfg.retry_interval),
                                                                   &st.status.consul_version);
  if (async::is_cancelled(co_await asio::this_coro::cancellation_state)) co_return nullptr;
  if (incompatible) {
    log::error("Consul is not compatible", {{"error", *incompatible}});
    std::cerr << *incompatible << "\n";
    fail(st, *incompatible);
    co_return nullptr;
  }
  if (!cfg.log_json) {
    log::banner_info b;
    b.version = ESMD_VERSION;
    b.datacenter = cfg.datacenter;
    b.partition = cfg.partition;
    b.service = cfg.consul_service;
    b.service_tag = cfg.consul_service_tag;
    b.service_id = st.status.instance_id;
    b.node_reconnect_timeout = cfg.node_reconnect_timeout;
    b.disable_coordinates = cfg.disable_coordinate_updates;
    b.statsd_address = cfg.telemetry.statsd_address;
    b.metrics_prefix = cfg.telemetry.metrics_prefix;
    log::print_banner(std::cout, b);
    std::cout.flush();
  }
  for (auto& w : cfg.warnings) log::warn(w);
  co_return probes;
}

// The root of the tree: start-up, then the children until a stop or until one of them ends;
// then the two-stage stop. Notices the stop (any cancellation type) at every wait.
asio::awaitable<void> run_daemon(daemon_state& st) {
  co_await asio::this_coro::throw_if_cancelled(false);
  co_await asio::this_coro::reset_cancellation_state(async::pass_every_stop);
  auto ex = co_await asio::this_coro::executor;
  auto& cfg = st.cfg;
  consul::client consul(ex, cfg.consul);
  st.status.consul = &consul.stats();
  // The registry outlives this frame: no pointer into it may survive the parts, on any path.
  struct forget_parts {
    daemon_status& s;
    ~forget_parts() {
      s.engine = nullptr;
      s.prober = nullptr;
      s.checks = nullptr;
      s.nodes = nullptr;
      s.consul = nullptr;
    }
  } forget{st.status};
  // Every child lives in this frame's group and has ended before the frame does.
  async::task_group group(ex);
  // The admin server and the telemetry sinks come first: liveness answers during a long
  // startup (waiting for Consul), and a bind failure stops esmd before Consul is contacted.
  auto tel = make_telemetry_settings(cfg);
  std::optional<telemetry::admin_server> admin;
  if (!cfg.client_address.empty()) {
    auto metrics = [&status = st.status, tel](std::string_view accept) {
      auto format = telemetry::choose_format(accept);
      return std::pair<std::string, std::string>(telemetry::render(telemetry::collect(status, tel), format),
                                                 std::string(telemetry::content_type(format)));
    };
    admin.emplace(ex, st.status, make_admin_settings(cfg), std::move(metrics));
    auto refused = admin->bind();
    if (!refused.empty()) {
      log::error("Cannot start the admin server", {{"client_address", cfg.client_address}, {"error", refused}});
      std::cerr << refused << "\n";
      fail(st, refused);
      co_return;
    }
    log::info("Admin server listening", {{"address", cfg.client_address}});
    group.spawn("admin", admin->run());
  }
  if (auto every = st.notifier.watchdog()) group.spawn("watchdog", run_watchdog(st, *every / 2));
  if (telemetry::circonus_configured(cfg.telemetry))
    log::warn("Circonus telemetry is not supported by esmd; the circonus_* keys are ignored");
  bool sinks = !tel.statsd_address.empty() || !tel.statsite_address.empty() ||
               !tel.dogstatsd_address.empty();
  if (sinks) group.spawn("telemetry", telemetry::run_statsd_sinks(ex, st.status, tel));

  auto probes = co_await start_up(st, consul);
  if (!probes) {
    // Stopped or failed before the parts started: end the admin server and the sinks.
    notify_stopping(st);
    group.cancel(asio::cancellation_type::total);
    bool clean = co_await group.join_until(clock::now() + shutdown_grace);
    if (!clean) {
      group.cancel(asio::cancellation_type::terminal);
      co_await group.join_until(clock::time_point::max());
    }
    co_return;
  }

  checks::check_engine engine(ex, &consul, *probes, make_engine_settings(cfg));
  st.status.engine = &engine.stats();
  ping::node_prober prober(ex, &consul, make_prober_settings(cfg));
  st.status.prober = &prober.stats();
  st.status.checks = &engine;
  st.status.nodes = &prober;
  share_sink sink(st.share_log, engine, prober);
  cluster::instance_hooks hooks;
  hooks.leader_work = [&consul, settings = make_leader_settings(cfg), &stats = st.status.leader](
                          std::string, consul::txn_op fence, util::lease lease) {
    return sharding::run_assignment_leader(consul, settings, std::move(fence), std::move(lease), stats);
  };
  hooks.on_registered = [&st] {
    // Never after STOPPING (a registration answered after the stop signal was handled).
    if (st.ready_sent || st.stopping_sent) return;
    st.ready_sent = true;
    notify(st, "READY=1\nSTATUS=Registered as " + st.status.instance_id);
  };
  cluster::run_outcome membership_outcome;

  group.spawn("membership", run_membership(consul, cfg, std::move(hooks), st.status.instance, membership_outcome));
  group.spawn("worker", sharding::run_assignment_worker(consul, make_worker_settings(cfg), sink, st.status.worker));
  group.spawn("checks", engine.run());
  group.spawn("pings", prober.run());
  st.status.state = phase::running;

  bool part_ended = co_await group.wait_any();  // false: a stop by signal
  if (part_ended) {
    // A child ended by itself: a duplicate instance, a refused registration, or a bug (an
    // exception, reported with any others below once every part has ended).
    auto ended = *group.first_ended();
    if (ended.error) {
      log::info("A part failed; stopping the others", {{"part", *ended.name}});
    } else if (membership_outcome.code) {
      log::error(membership_outcome.message);
      std::cerr << membership_outcome.message << "\n";
      fail(st, membership_outcome.message);
    } else if (!st.stop_asked) {
      log::error("esmd stopped: a part ended unexpectedly", {{"part", *ended.name}});
      fail(st, *ended.name + " ended unexpectedly");
    }
    if (!st.stop_asked) st.stop_asked = clock::now();  // the grace period counts from here
    if (st.arm_stop_bounds) st.arm_stop_bounds();
  }
  st.status.state = phase::stopping;
  notify_stopping(st);
  group.cancel(asio::cancellation_type::total);
  auto grace_end = st.stop_asked.value_or(clock::now()) + shutdown_grace;
  bool clean = co_await group.join_until(grace_end);
  if (!clean) {
    std::string names;
    for (auto& n : group.running()) names += (names.empty() ? "" : ",") + n;
    log::warn("Shutdown grace period over; abandoning the clean exits", {{"parts", names}});
    group.cancel(asio::cancellation_type::terminal);
    // Bounded by the hard stop a second later (run() leaves the loop; the frames left are
    // destroyed with the io_context) and by the watchdog.
    co_await group.join_until(clock::time_point::max());
  }
  // A part that threw, before or during the stop, has a bug: exit 11 for the supervisor.
  for (auto& f : group.failures()) {
    auto what = async::what_of(f.error);
    log::error("esmd stopped on an internal error", {{"part", *f.name}, {"error", what}});
    fail(st, *f.name + ": " + what);
  }
  st.status.state = phase::stopped;
}

void reload(daemon_state& st) {
  // READY=1 again when done (only once esmd was ready: before that READY comes from the
  // registration). On every path, also when the new configuration is refused.
  if (st.ready_sent && !st.stopping_sent)
    notify(st, "RELOADING=1\nMONOTONIC_USEC=" + std::to_string(std::chrono::duration_cast<std::chrono::microseconds>(
                                                   std::chrono::steady_clock::now().time_since_epoch()).count()) +
                   "\nSTATUS=Reloading the configuration");
  struct ready_again {
    daemon_state& st;
    ~ready_again() {
      if (st.ready_sent && !st.stopping_sent) notify(st, "READY=1\nSTATUS=Registered as " + st.status.instance_id);
    }
  } again{st};
  try {
    auto next = config::reload_config(st.config_paths, config::process_environment(), st.cfg);
    auto changed = config::describe_changes(st.cfg, next);
    if (changed.empty()) {
      log::info("Reloaded configuration: nothing changed");
      return;
    }
    std::string applied, pending;
    for (auto& key : changed) {
      auto& list = config::applies_at_runtime(key) ? applied : pending;
      list += (list.empty() ? "" : ",") + key;
    }
    if (auto lvl = log::parse_level(next.log_level)) log::set_level(*lvl);
    st.cfg.log_level = next.log_level;
    log::info("Reloaded configuration", {{"applied", applied}, {"needs_restart", pending}});
  } catch (const std::exception& e) {
    log::error("Reloading the configuration failed; keeping the running one", {{"error", e.what()}});
  }
}

}  // namespace

int run(config::config cfg, std::vector<std::string> config_paths) {
  daemon_state st;
  st.cfg = std::move(cfg);
  st.config_paths = std::move(config_paths);
  st.status.instance_id = st.cfg.consul_service + ":" + st.cfg.instance_id;
  st.status.agentless = st.cfg.enable_agentless;
  st.status.version = ESMD_VERSION;
  st.notifier = systemd_notifier::from_environment(config::process_environment(), ::getpid());
  if (!st.notifier.problem().empty()) log::warn("Ignoring the service manager's settings", {{"error", st.notifier.problem()}});

  // Declared before the io_context, so destroyed after it: ~io_context may still destroy
  // coroutine frames (abandoned at the hard limit) whose cancellation slots belong to it.
  asio::cancellation_signal stop;
  asio::io_context io(1);
  bool finished = false;
  asio::co_spawn(io, run_daemon(st), asio::bind_cancellation_slot(stop.slot(), [&](std::exception_ptr e) {
    finished = true;
    if (e) {
      auto what = async::what_of(e);
      log::error("esmd stopped on an unexpected error", {{"error", what}});
      std::cerr << "esmd: " << what << "\n";
      fail(st, what);
    }
    io.stop();
  }));

  asio::signal_set signals(io, SIGINT, SIGTERM, SIGHUP);
  asio::steady_timer hard_stop(io);
  bool armed = false;
  // The bounds first, so nothing the stop runs can skip them: the daemon itself cuts the clean
  // exits at the grace period; a second later the loop is left whatever still runs; past the
  // hard limit a watchdog thread ends the process even if the loop cannot return.
  st.arm_stop_bounds = [&] {
    if (armed) return;
    armed = true;
    hard_stop.expires_after(shutdown_grace + 1s);
    hard_stop.async_wait([&](boost::system::error_code e) {
      if (e) return;
      if (!finished) log::warn("Parts did not end after the grace period; exiting");
      io.stop();
    });
    try {
      std::thread([] {
        std::this_thread::sleep_for(shutdown_hard_limit);
        std::_Exit(watchdog_exit.load());  // no locks, destructors or stdio here
      }).detach();
    } catch (const std::system_error& e) {
      // Without the thread only the event loop's own bounds remain; say so.
      log::warn("Could not start the shutdown watchdog", {{"error", e.what()}});
    }
  };
  std::function<void(boost::system::error_code, int)> on_signal = [&](boost::system::error_code ec, int sig) {
    if (ec) return;
    signals.async_wait(on_signal);
    if (sig == SIGHUP) {
      reload(st);
      return;
    }
    if (st.stop_asked) return;  // a second signal changes nothing: the bounds are set
    log::info("Shutting down...");
    notify_stopping(st);
    st.stop_asked = clock::now();
    st.arm_stop_bounds();
    stop.emit(asio::cancellation_type::total);
  };
  signals.async_wait(on_signal);
  io.run();
  return st.exit_code.value_or(0);
}

}  // namespace esm::daemon
