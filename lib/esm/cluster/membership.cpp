#include "esm/cluster/membership.hpp"

#include <algorithm>
#include <set>

#include <boost/asio/experimental/awaitable_operators.hpp>

#include "esm/cluster/reaper_policy.hpp"
#include "esm/util/async.hpp"
#include "esm/log/log.hpp"

namespace esm::cluster {

namespace asio = boost::asio;
using namespace esm::async;

using namespace std::chrono_literals;
using asio::awaitable;

namespace {

milliseconds ms(nanoseconds d) { return std::chrono::duration_cast<milliseconds>(d); }

class category final : public boost::system::error_category {
 public:
  const char* name() const noexcept override { return "esm.cluster"; }
  std::string message(int ev) const override {
    switch (static_cast<cluster_errc>(ev)) {
      case cluster_errc::duplicate_instance: return "an ESM instance with this service ID is already registered";
      case cluster_errc::registration_failed: return "Consul refused the ESM instance's registration";
    }
    return "unknown cluster error";
  }
};

const char* external_source = "consul-esm";

consul::write_options timeout_of(nanoseconds d) {
  consul::write_options w;
  w.timeout = ms(d);
  return w;
}

std::string partition_field(const membership_options& o) {
  return o.partition == "default" ? std::string() : o.partition;
}

consul::agent_service_registration agent_service(const membership_options& o) {
  consul::agent_service_registration r;
  r.id = o.names.service_id;
  r.name = o.names.service;
  if (!o.tag.empty()) r.tags = {o.tag};
  r.meta = {{"external-source", external_source}};
  r.partition = partition_field(o);
  return r;
}

consul::agent_check_registration agent_check(const membership_options& o) {
  consul::agent_check_registration r;
  r.id = o.names.agent_ttl_check_id();
  r.name = alive_check_name;
  r.notes = agent_ttl_check_notes;
  r.service_id = o.names.service_id;
  r.ttl = o.timing.session_ttl;
  r.status = "passing";
  r.deregister_critical_service_after = o.deregister_after;
  r.partition = partition_field(o);
  return r;
}

// The agentless self check of the instance `service_id`, as consul-esm registers it (a
// session-type check naming the health session, which Consul >= 1.21 drives by itself) but
// with the status esmd sets.
consul::health_check self_check(const membership_options& o, const std::string& service_id,
                                const std::string& status, const std::string& output) {
  consul::health_check h;
  h.node = service_id + ":node";
  h.check_id = service_id + ":session-check";
  h.name = alive_check_name;
  h.status = status;
  h.output = output;
  h.type = "session";
  h.partition = partition_field(o);
  h.definition.deregister_critical_service_after = o.deregister_after;
  h.definition.extra["SessionName"] = service_id + ":health-session";
  return h;
}

consul::catalog_registration catalog_entry(const membership_options& o, const std::string& status,
                                           const std::string& output) {
  consul::catalog_registration r;
  r.node = o.names.node_name();
  r.address = o.names.node_address();
  r.datacenter = o.datacenter;
  r.partition = o.partition;
  consul::agent_service s;
  s.id = o.names.service_id;
  s.service = o.names.service;
  if (!o.tag.empty()) s.tags = {o.tag};
  s.meta = {{"external-source", external_source}};
  r.service = s;
  r.checks.push_back(self_check(o, o.names.service_id, status, output));
  return r;
}

// After a failed request: nullopt to retry (having slept retry_interval), or the outcome to
// return (a refusal, or an empty outcome when cancelled).
awaitable<std::optional<run_outcome>> after_failure(const consul::error& e, const char* what,
                                                    const membership_options& o) {
  auto kind = classify(e);
  if (kind == failure_kind::cancelled) co_return run_outcome{};
  if (kind == failure_kind::fatal) {
    log::error(what, {{"error", e.to_string()}});
    co_return run_outcome{make_error_code(cluster_errc::registration_failed),
                          std::string(what) + ": " + e.to_string()};
  }
  log::warn(what, {{"error", e.to_string()}, {"retry_in", o.timing.retry_interval}});
  if (!co_await sleep_for(o.timing.retry_interval)) co_return run_outcome{};
  co_return std::nullopt;
}

// A registration of this ID that looks alive: refused once duplicate_wait has passed since it
// was first seen so (`since`, set here; counted from the first sighting, not from the start,
// so that failed requests before it do not eat the wait), else a short wait before the caller
// reads Consul again. nullopt: read again; an outcome: return it (the refusal, or an empty one
// when stopped during the wait).
awaitable<std::optional<run_outcome>> live_duplicate(const membership_options& o,
                                                     std::optional<clock::time_point>& since,
                                                     const char* liveness) {
  auto now = clock::now();
  if (!since) {
    since = now;
    if (o.duplicate_wait > nanoseconds::zero())
      log::warn(std::string("An ESM instance with this ID is registered and ") + liveness +
                    ": waiting for it to lapse, as a crashed instance's does, before refusing to start",
                {{"service_id", o.names.service_id},
                 {"wait", std::chrono::duration_cast<std::chrono::milliseconds>(o.duplicate_wait)}});
  }
  auto give_up = *since + o.duplicate_wait;
  std::optional<run_outcome> out;
  if (now >= give_up) {
    out = run_outcome{make_error_code(cluster_errc::duplicate_instance), duplicate_message(o.names.service_id)};
    co_return out;
  }
  // Re-read at least every second: retry_interval (10 s by default) would delay the takeover
  // by up to that much after the lapse. A few reads a second at most, for at most the wait.
  auto pause = std::min<nanoseconds>({o.timing.retry_interval, nanoseconds(1s), give_up - now});
  bool slept = co_await sleep_for(pause);
  if (!slept) out = run_outcome{};  // stopped
  co_return out;
}

awaitable<run_outcome> register_agent(consul::client& c, const membership_options& o, membership_status& st) {
  std::optional<clock::time_point> live_since;
  for (;;) {
    auto existing = co_await c.agent_service_by_id(o.names.service_id);
    if (!existing) {
      auto out = co_await after_failure(existing.error(), "Failed to look up the ESM instance on the agent", o);
      if (out) co_return *out;
      continue;
    }
    // Once a register request went out, a service found is (possibly) this process's own from
    // an attempt cut short: not a duplicate.
    if (*existing && !st.registration_sent) {
      // A live instance keeps its TTL check passing; a crashed one's turned critical a TTL
      // after its last update. Only the latter is taken over (consul-esm refuses both, so a
      // crashed instance with a fixed ID could not restart for instance_deregister_after).
      // A service without its TTL check is a registration cut short (a crash between the
      // two requests): taken over too. A failed read is retried, never taken for "alive".
      auto self = co_await c.agent_self_info();
      if (!self) {
        auto out = co_await after_failure(self.error(), "Failed to read the local agent", o);
        if (out) co_return *out;
        continue;
      }
      auto checks = co_await c.health_node(self->node_name);
      if (!checks) {
        auto out = co_await after_failure(checks.error(), "Failed to read the local agent's checks", o);
        if (out) co_return *out;
        continue;
      }
      bool dead = true;
      for (auto& h : checks->value)
        if (h.check_id == o.names.agent_ttl_check_id() && h.service_id == o.names.service_id)
          dead = h.status == "critical";
      if (!dead) {
        auto out = co_await live_duplicate(o, live_since, "its TTL check is not critical");
        if (out) co_return *out;
        continue;
      }
      log::warn("Taking over the registration of a stopped ESM instance with this ID (its TTL check is critical or gone)",
                {{"service_id", o.names.service_id}});
    }
    auto svc = agent_service(o);
    st.registration_sent = true;
    auto r = co_await c.agent_service_register(svc);
    if (!r) {
      if (auto out = co_await after_failure(r.error(), "Failed to register the ESM service", o)) co_return *out;
      continue;
    }
    auto chk = agent_check(o);
    r = co_await c.agent_check_register(chk);
    if (!r) {
      if (auto out = co_await after_failure(r.error(), "Failed to register the ESM TTL check", o)) co_return *out;
      continue;
    }
    // The agent keeps the state of a check registered again (a taken-over one stays critical).
    std::string passing = "passing", empty;
    r = co_await c.agent_check_update(o.names.agent_ttl_check_id(), passing, empty);
    if (!r) {
      if (auto out = co_await after_failure(r.error(), "Failed to update the ESM TTL check", o)) co_return *out;
      continue;
    }
    st.registered = true;
    co_return run_outcome{};
  }
}

awaitable<run_outcome> register_agentless(consul::client& c, const membership_options& o, membership_status& st) {
  std::optional<clock::time_point> live_since;
  for (;;) {
    auto inst = co_await c.catalog_service_instances(o.names.service);
    if (!inst) {
      if (auto out = co_await after_failure(inst.error(), "Failed to list the ESM instances", o)) co_return *out;
      continue;
    }
    bool exists = false;
    for (auto& e : inst->value) exists = exists || e.service_id == o.names.service_id;
    if (exists) {
      auto sessions = co_await c.session_list();
      if (!sessions) {
        if (auto out = co_await after_failure(sessions.error(), "Failed to list the sessions", o)) co_return *out;
        continue;
      }
      bool live = false;
      for (auto& s : sessions->value) live = live || is_health_session_of(s, o.names.service_id);
      if (live) {
        auto out = co_await live_duplicate(o, live_since, "its health session is live");
        if (out) co_return *out;
        continue;
      }
      log::warn("Taking over the registration of a stopped ESM instance with this ID (its health session is gone)",
                {{"service_id", o.names.service_id}});
    }
    auto reg = catalog_entry(o, "critical", "Waiting for the ESM instance's health session");
    st.registration_sent = true;
    auto r = co_await c.catalog_register(reg);
    if (!r) {
      if (auto out = co_await after_failure(r.error(), "Failed to register the ESM instance in the catalog", o))
        co_return *out;
      continue;
    }
    st.registered = true;
    co_return run_outcome{};
  }
}

awaitable<void> keep_agent(consul::client& c, const membership_options& o, membership_status& st) {
  auto tick = std::max<nanoseconds>(o.timing.session_ttl / 2, 100ms);
  for (std::uint64_t n = 1;; ++n) {
    if (!co_await sleep_for(tick)) co_return;
    if (n % 2 == 0) {  // every TTL: is the registration still there?
      auto services = co_await c.agent_services();
      if (services && !services->count(o.names.service_id)) {
        log::warn("Consul External Service Monitor registration was lost; registering again",
                  {{"service_id", o.names.service_id}});
        auto svc = agent_service(o);
        auto chk = agent_check(o);
        auto r = co_await c.agent_service_register(svc);
        if (r) r = co_await c.agent_check_register(chk);
        if (r) ++st.reregistrations;
        else log::warn("Failed to register the ESM instance again", {{"error", r.error().to_string()}});
        continue;
      }
    }
    std::string passing = "passing", empty;
    auto r = co_await c.agent_check_update(o.names.agent_ttl_check_id(), passing, empty);
    if (r) continue;
    if (classify(r.error()) == failure_kind::cancelled) co_return;
    ++st.check_update_failures;
    log::warn("Failed to update the ESM TTL check; registering it again", {{"error", r.error().to_string()}});
    auto chk = agent_check(o);
    auto again = co_await c.agent_check_register(chk);
    if (!again) log::warn("Failed to register the ESM TTL check", {{"error", again.error().to_string()}});
  }
}

awaitable<bool> set_self_passing(consul::client& c, const membership_options& o) {
  auto reg = catalog_entry(o, "passing", "ESM instance alive: its health session is live");
  auto r = co_await c.catalog_register(reg);
  if (!r) log::warn("Failed to set the ESM instance's check passing", {{"error", r.error().to_string()}});
  co_return bool(r);
}

awaitable<void> keep_agentless(consul::client& c, const membership_options& o, membership_status& st) {
  auto tick = std::max<nanoseconds>(o.timing.session_ttl / 2, 100ms);
  std::string session;
  for (std::uint64_t n = 0;; ++n) {
    if (session.empty()) {
      consul::session_request req;
      req.name = o.names.health_session_name();
      req.node = o.names.node_name();
      req.ttl = o.timing.session_ttl;
      req.behavior = "delete";  // holds no keys; nothing to release
      req.lock_delay = 0s;
      req.checks = std::vector<std::string>{};  // the synthetic node has no serfHealth
      auto w = timeout_of(o.timing.request_timeout);
      auto id = co_await c.session_create(req, w);
      if (id) {
        session = *id;
        st.health_session = session;
        co_await set_self_passing(c, o);
      } else {
        if (classify(id.error()) == failure_kind::cancelled) co_return;
        log::warn("Failed to create the ESM instance's health session", {{"error", id.error().to_string()}});
      }
    }
    if (!co_await sleep_for(session.empty() ? std::min(tick, o.timing.retry_interval) : tick)) co_return;
    if (session.empty()) continue;
    auto w = timeout_of(o.timing.request_timeout);
    auto r = co_await c.session_renew(session, w);
    if (r && !*r) {
      log::warn("The ESM instance's health session is gone; creating a new one");
      session.clear();
      st.health_session.clear();
      continue;
    }
    if (!r) {
      if (classify(r.error()) == failure_kind::cancelled) co_return;
      ++st.check_update_failures;
      log::warn("Failed to renew the ESM instance's health session", {{"error", r.error().to_string()}});
      continue;
    }
    if (n % 2 == 1) {  // every TTL: is the registration there and passing?
      auto checks = co_await c.health_node(o.names.node_name());
      if (!checks) continue;
      const consul::health_check* mine = nullptr;
      for (auto& h : checks->value)
        if (h.check_id == o.names.session_check_id()) mine = &h;
      if (!mine) {
        log::warn("Consul External Service Monitor registration was lost; registering again",
                  {{"service_id", o.names.service_id}});
        if (co_await set_self_passing(c, o)) ++st.reregistrations;
      } else if (mine->status != "passing") {
        co_await set_self_passing(c, o);
      }
    }
  }
}

}  // namespace

const boost::system::error_category& cluster_category() noexcept {
  static const category c;
  return c;
}

nanoseconds duplicate_wait_for(const membership_options& o) {
  return (o.agentless ? 2 * o.timing.session_ttl : o.timing.session_ttl) + std::chrono::seconds(5);
}

std::string duplicate_message(const std::string& service_id) {
  return "ESM instance with service id '" + service_id + "' is already registered with Consul";
}


awaitable<run_outcome> register_instance(consul::client& c, membership_options o, membership_status& st) {
  if (o.agentless) co_return co_await register_agentless(c, o, st);
  co_return co_await register_agent(c, o, st);
}

awaitable<void> keep_registered(consul::client& c, membership_options o, membership_status& st) {
  if (o.agentless)
    co_await keep_agentless(c, o, st);
  else
    co_await keep_agent(c, o, st);
}

awaitable<void> deregister_instance(consul::client& c, membership_options o) {
  auto w = timeout_of(o.timing.cleanup_timeout);
  if (o.agentless) {
    // The whole synthetic node: its service, its check and any session on it.
    consul::catalog_deregistration d;
    d.node = o.names.node_name();
    d.datacenter = o.datacenter;
    d.partition = partition_field(o);
    auto r = co_await c.catalog_deregister(d, w);
    if (!r) log::warn("Failed to deregister the ESM instance", {{"error", r.error().to_string()}});
  } else {
    auto r = co_await c.agent_service_deregister(o.names.service_id, w);
    if (!r) log::warn("Failed to deregister the ESM instance", {{"error", r.error().to_string()}});
  }
}

awaitable<void> reap_dead_instances(consul::client& c, membership_options o, consul::txn_op check_session,
                                    util::lease lease, nanoseconds reap_interval) {
  reaper_policy policy(o.deregister_after);
  // Each write is fenced: a deposed leader's late write fails instead of reaping on its word.
  auto fenced = [&](consul::txn_op op) {
    std::vector<consul::txn_op> ops;
    ops.push_back(check_session);
    ops.push_back(std::move(op));
    return ops;
  };
  auto failure = [](const consul::result<consul::txn_response>& r) {
    return r ? std::string("not leader") : r.error().to_string();
  };
  // Writes refused by ACL (403) are logged once per instance, then at DEBUG until one
  // commits: a token without write on the agentless nodes (an agent-mode leader's narrow
  // policy in a mixed fleet) would otherwise log a WARN per instance every round for ever.
  std::set<std::string> refused;
  auto log_failure = [&](const char* what, const std::string& id, const consul::result<consul::txn_response>& r) {
    bool acl = !r && r.error().is_http(403);
    if (acl && !refused.insert(id).second)
      log::debug(what, {{"service_id", id}, {"error", failure(r)}});
    else
      log::warn(what, {{"service_id", id}, {"error", failure(r)}});
  };
  for (;;) {
    auto inst = co_await c.catalog_service_instances(o.names.service);
    consul::result<consul::query_result<std::vector<consul::session>>> sessions = consul::error{};
    // The sessions matter only for instances on a synthetic node (agentless); in a fleet of
    // agent-mode instances the round ends with the instance list.
    bool any_agentless = inst && std::any_of(inst->value.begin(), inst->value.end(), is_agentless_row);
    if (inst && !any_agentless) sessions = consul::query_result<std::vector<consul::session>>{};
    else if (inst) sessions = co_await c.session_list();
    if (!inst || !sessions) {
      consul::error e = inst ? sessions.error() : inst.error();
      if (classify(e) == failure_kind::cancelled) co_return;
      log::warn("Failed to read the ESM instances to reap", {{"error", e.to_string()}});
      if (!co_await sleep_for(reap_interval)) co_return;
      continue;
    }
    auto plan = policy.step(agentless_instances(inst->value, sessions->value), clock::now());
    // Past the fencing deadline (esmd was paused, say): no write as leader; the election ends
    // the term at its next turn and cancels this.
    if ((!plan.deregister.empty() || !plan.mark_critical.empty()) && !lease.valid()) {
      log::warn("Not reaping ESM instances: the leader session's fencing deadline has passed");
      if (!co_await sleep_for(reap_interval)) co_return;
      continue;
    }
    for (auto& d : plan.deregister) {
      // A stop that came while this coroutine was not waiting cancels no request by itself.
      auto cs = co_await asio::this_coro::cancellation_state;
      if (is_cancelled(cs)) co_return;
      consul::txn_op del;
      del.node = consul::txn_node_op{"delete", {}};
      del.node->node.name = d.node;
      if (!lease.valid()) break;
      auto r = co_await c.txn(fenced(std::move(del)));
      // A stop (leadership lost, shutdown) ends the round: no leader write after it is known.
      if (!r && classify(r.error()) == failure_kind::cancelled) co_return;
      if (r && r->committed) {
        log::info("Deregistered a dead ESM instance", {{"service_id", d.service_id}});
        policy.deregistered(d.service_id);
        refused.erase(d.service_id);
      } else {
        log_failure("Failed to deregister a dead ESM instance", d.service_id, r);
      }
    }
    for (auto& m : plan.mark_critical) {
      auto cs = co_await asio::this_coro::cancellation_state;
      if (is_cancelled(cs)) co_return;
      consul::txn_op set;
      set.check = consul::txn_check_op{"set", self_check(o, m.service_id, "critical",
                                                         "ESM instance's health session is gone")};
      if (!lease.valid()) break;
      auto r = co_await c.txn(fenced(std::move(set)));
      if (!r && classify(r.error()) == failure_kind::cancelled) co_return;
      if (r && r->committed) {
        log::info("Marked a dead ESM instance critical", {{"service_id", m.service_id}});
        policy.marked(m.service_id);
        refused.erase(m.service_id);
      } else {
        log_failure("Failed to mark a dead ESM instance critical", m.service_id, r);
      }
    }
    if (!co_await sleep_for(reap_interval)) co_return;
  }
}

}  // namespace esm::cluster
