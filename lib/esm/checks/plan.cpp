#include "esm/checks/plan.hpp"

#include <algorithm>
#include <optional>

#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>

#include "esm/probe/check_kind.hpp"

namespace esm::checks {

namespace {

using std::chrono::duration_cast;
using std::chrono::milliseconds;

std::optional<int> int_member(const consul::extra_members& o, std::string_view key) {
  auto* v = o.if_contains(key);
  if (!v) return std::nullopt;
  if (v->is_int64()) return static_cast<int>(std::clamp<std::int64_t>(v->as_int64(), 0, 1 << 30));
  if (v->is_uint64()) return static_cast<int>(std::min<std::uint64_t>(v->as_uint64(), 1 << 30));
  return std::nullopt;
}

// Rounded up, so that 1500 µs stays above 1 ms and a positive value never becomes 0.
milliseconds to_ms(std::chrono::nanoseconds d) {
  if (d <= std::chrono::nanoseconds::zero()) return milliseconds::zero();
  return std::chrono::ceil<milliseconds>(d);
}

// The per-check TLS settings and the timeout, shared by the probes that have them.
template <class Spec>
Spec& with_tls(Spec& spec, const consul::check_definition& d, milliseconds timeout) {
  spec.tls_server_name = d.tls_server_name;
  spec.tls_skip_verify = d.tls_skip_verify;
  spec.timeout = timeout;
  return spec;
}

}  // namespace

std::variant<run_plan, std::string> plan_run(const consul::health_check& c,
                                             const plan_settings& s) {
  const auto& d = c.definition;
  probe::definition_kind_fields f;
  f.http = d.http;
  f.tcp = d.tcp;
  f.udp = d.udp;
  f.grpc = d.grpc;
  f.h2ping = d.h2ping;
  f.os_service = d.os_service;
  f.script_args = d.script_args;
  f.docker_container_id = d.docker_container_id;
  f.alias_node = d.alias_node;
  f.alias_service = d.alias_service;
  f.ttl = d.ttl;
  auto kind = probe::classify(f);
  if (auto why = probe::unsupported_reason(kind)) return *why;
  // A duration the client could not parse stays in `extra` (see consul/json.cpp).
  for (std::string_view key : {"Interval", "IntervalDuration", "Timeout", "TimeoutDuration"})
    if (auto* v = d.extra.if_contains(key))
      return "check definition has an invalid " + std::string(key) + " (" +
             boost::json::serialize(*v) + "); it is not run";

  run_plan p;
  p.timeout = probe::effective_timeout(to_ms(d.timeout));
  auto asked = to_ms(d.interval);
  p.interval = asked > milliseconds::zero() ? asked : s.default_interval;
  if (p.interval < s.min_interval) {
    p.interval = s.min_interval;
    p.interval_raised = true;
  }
  switch (kind) {
    case probe::check_kind::http: p.kind = 0; break;
    case probe::check_kind::tcp: p.kind = 1; break;
    case probe::check_kind::udp: p.kind = 2; break;
    case probe::check_kind::grpc: p.kind = 3; break;
    case probe::check_kind::h2ping: p.kind = 4; break;
    default:
      return std::string("check kind is not runnable");
  }
  if (s.legacy_thresholds) {
    p.limits = effective_thresholds(s.passing_threshold, s.critical_threshold, std::nullopt,
                                    std::nullopt, std::nullopt);
  } else {
    p.limits = effective_thresholds(s.passing_threshold, s.critical_threshold,
                                    int_member(d.extra, "SuccessBeforePassing"),
                                    int_member(d.extra, "FailuresBeforeWarning"),
                                    int_member(d.extra, "FailuresBeforeCritical"));
  }
  return p;
}

probe::probe_spec spec_of(const consul::check_definition& d, const run_plan& p) {
  switch (p.kind) {
    case 0: {
      probe::http_spec h;
      h.url = d.http;
      h.method = d.method;
      h.headers = d.header;
      h.body = d.body;
      h.disable_redirects = d.disable_redirects;
      return std::move(with_tls(h, d, p.timeout));
    }
    case 1: {
      probe::tcp_spec t;
      t.address = d.tcp;
      t.use_tls = d.tcp_use_tls;
      return std::move(with_tls(t, d, p.timeout));
    }
    case 2: {
      probe::udp_spec u;
      u.address = d.udp;
      u.timeout = p.timeout;
      return u;
    }
    case 3: {
      probe::grpc_spec g;
      g.target = d.grpc;
      g.use_tls = d.grpc_use_tls;
      return std::move(with_tls(g, d, p.timeout));
    }
    default: {
      probe::h2ping_spec h;
      h.address = d.h2ping;
      h.use_tls = d.h2ping_use_tls;
      return std::move(with_tls(h, d, p.timeout));
    }
  }
}

std::variant<check_plan, std::string> plan_check(const consul::health_check& c,
                                                 const plan_settings& s) {
  auto r = plan_run(c, s);
  if (auto* why = std::get_if<std::string>(&r)) return std::move(*why);
  const auto& rp = std::get<run_plan>(r);
  check_plan p;
  p.spec = spec_of(c.definition, rp);
  p.interval = rp.interval;
  p.timeout = rp.timeout;
  p.limits = rp.limits;
  p.interval_raised = rp.interval_raised;
  return p;
}

}  // namespace esm::checks
