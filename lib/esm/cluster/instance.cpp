#include "esm/cluster/instance.hpp"

#include "esm/util/async.hpp"
#include "esm/log/log.hpp"

namespace esm::cluster {

namespace asio = boost::asio;
using namespace esm::async;

using namespace std::chrono_literals;
using asio::awaitable;

awaitable<void> idle_leader_work(std::string, consul::txn_op, util::lease) {
  log::info("Leading: no leader work to do yet");
  asio::steady_timer forever(co_await asio::this_coro::executor, asio::steady_timer::time_point::max());
  co_await forever.async_wait(tuple_awaitable);
}

namespace {

nanoseconds reap_interval(const membership_options& o) {
  return std::clamp<nanoseconds>(std::min(o.timing.session_ttl, o.deregister_after) / 2, 500ms, 30s);
}

// The assignment leader and the agentless reaper as one leader work: when either ends (the
// leader fenced out) or throws, the other is stopped and the work ends, which ends the term.
// (`a && b` would wait for the reaper, which never returns, so a fenced-out leader would hold
// the lock idle.)
awaitable<void> both(awaitable<void> a, awaitable<void> b) {
  std::vector<awaitable<void>> branches;
  branches.push_back(std::move(a));
  branches.push_back(std::move(b));
  co_await first_of(std::move(branches));
}

}  // namespace

awaitable<run_outcome> run_instance(consul::client& c, membership_options mo, election_options eo,
                                    instance_hooks hooks, instance_status& status) {
  auto ex = co_await asio::this_coro::executor;
  // Registration checks for a stop itself (after each failed request); with Asio's default,
  // the next co_await after a stop would throw instead and skip that, so a SIGTERM during
  // registration became "stopped on an unexpected error" (exit 11) and left what was
  // registered behind.
  // The same holds for the rest: the keeper and the election are children that must be
  // joined before this frame ends, so a stop must never unwind it by an exception.
  bool rethrow_reg = co_await asio::this_coro::throw_if_cancelled();
  co_await asio::this_coro::throw_if_cancelled(false);
  auto reg = co_await register_instance(c, mo, status.membership);
  bool stopped = is_cancelled(co_await asio::this_coro::cancellation_state);
  if (reg.code && !stopped) {
    co_await asio::this_coro::throw_if_cancelled(rethrow_reg);
    log::error("Failed to register the ESM instance", {{"error", reg.message}});
    co_return reg;
  }
  if (stopped || !status.membership.registered) {
    // Stopped during or right after registration: undo what may have reached Consul.
    if (status.membership.registered || status.membership.registration_sent)
      co_await deregister_instance(c, mo);
    status.membership.registered = false;
    co_await asio::this_coro::throw_if_cancelled(rethrow_reg);
    co_return run_outcome{};
  }

  if (hooks.on_registered) hooks.on_registered();
  leader_work_fn work = hooks.leader_work ? std::move(hooks.leader_work) : leader_work_fn(idle_leader_work);
  // Every leader reaps dead agentless instances, whatever its own mode: a fleet can mix both
  // modes (a migration, a Kubernetes deployment next to VMs with agents), and a crashed
  // agentless instance has no agent to turn its check critical, so under an agent-mode leader
  // its nodes would stay assigned to it for good. With no agentless instance registered the
  // reaper reads the service's instances once per round and nothing else.
  {
    auto interval = reap_interval(mo);
    work = [&c, mo, interval, inner = std::move(work)](std::string session, consul::txn_op fence,
                                                       util::lease lease) -> awaitable<void> {
      co_await both(inner(session, fence, lease), reap_dead_instances(c, mo, fence, lease, interval));
    };
  }

  auto wake = std::make_shared<event>(ex);
  auto keeper = child<int>::spawn(ex, as_child(keep_registered(c, mo, status.membership)), wake);
  auto election = child<int>::spawn(ex, as_child(run_leader_election(c, eo, work, status.election)), wake);
  run_outcome out;
  for (;;) {
    if (keeper->done() || election->done()) {
      log::error("ESM instance stopped unexpectedly: stopping");
      out.code = make_error_code(cluster_errc::registration_failed);
      out.message = "membership or leader election stopped unexpectedly";
      break;
    }
    wake->reset();
    if (!co_await wake->wait()) break;  // shutdown
  }

  // Graceful stop: the election releases the key, then destroys its session; then deregister.
  election->cancel();
  keeper->cancel();
  co_await join(*wake, election, keeper);
  co_await deregister_instance(c, mo);
  status.membership.registered = false;
  co_await asio::this_coro::throw_if_cancelled(rethrow_reg);
  // A bug in the election or its leader work (the election ended its term cleanly first):
  // the daemon logs it and exits 11; an outcome would hide what failed.
  if (auto e = election->error()) std::rethrow_exception(e);
  if (auto e = keeper->error()) std::rethrow_exception(e);
  co_return out;
}

}  // namespace esm::cluster
