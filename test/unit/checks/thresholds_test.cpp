// Thresholds: Consul's consecutive StatusHandler counted once, and consul-esm's legacy double
// counting reproduced for operators who tuned for it (reference §6.5, §6.6, W8).
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "esm/checks/thresholds.hpp"

using namespace esm::checks;
using S = check_status;

namespace {

// Feeds a sequence and returns what was reported after each result ("-" for nothing).
std::vector<std::string> feed_all(status_gate& g, const std::vector<S>& seq) {
  std::vector<std::string> out;
  for (auto s : seq) {
    auto r = g.feed(s);
    out.push_back(r ? std::string(esm::probe::to_string(*r)) : "-");
  }
  return out;
}

}  // namespace

TEST_CASE("zero thresholds report every result at once") {
  status_gate g(thresholds{});
  CHECK(feed_all(g, {S::passing, S::critical, S::warning, S::critical}) ==
        std::vector<std::string>{"passing", "critical", "warning", "critical"});
}

TEST_CASE("the first result after a start is reported at once, as Consul's counters start full") {
  thresholds t;
  t.success_before_passing = 3;
  t.failures_before_warning = 3;
  t.failures_before_critical = 3;
  status_gate a(t);
  CHECK(feed_all(a, {S::critical}) == std::vector<std::string>{"critical"});
  status_gate b(t);
  CHECK(feed_all(b, {S::passing}) == std::vector<std::string>{"passing"});
}

TEST_CASE("consecutive failures: exactly FailuresBeforeCritical from a steady passing state") {
  thresholds t;
  t.failures_before_warning = 3;
  t.failures_before_critical = 3;
  status_gate g(t);
  CHECK(feed_all(g, {S::passing, S::critical, S::critical, S::critical, S::critical}) ==
        std::vector<std::string>{"passing", "-", "-", "critical", "critical"});
}

TEST_CASE("an interrupted failure run starts counting again") {
  thresholds t;
  t.failures_before_critical = 3;
  t.failures_before_warning = 3;
  status_gate g(t);
  CHECK(feed_all(g, {S::passing, S::critical, S::critical, S::passing, S::critical, S::critical,
                     S::critical}) ==
        std::vector<std::string>{"passing", "-", "-", "passing", "-", "-", "critical"});
}

TEST_CASE("FailuresBeforeWarning below FailuresBeforeCritical reports warning first") {
  thresholds t;
  t.failures_before_warning = 1;
  t.failures_before_critical = 3;
  status_gate g(t);
  CHECK(feed_all(g, {S::passing, S::critical, S::critical, S::critical}) ==
        std::vector<std::string>{"passing", "warning", "warning", "critical"});
}

TEST_CASE("SuccessBeforePassing needs that many consecutive successes; warning counts as one") {
  thresholds t;
  t.success_before_passing = 2;
  status_gate g(t);
  CHECK(feed_all(g, {S::critical, S::passing, S::critical, S::passing, S::warning}) ==
        std::vector<std::string>{"critical", "-", "critical", "-", "warning"});
}

TEST_CASE("effective thresholds: global keys as consul-esm maps them, per-check values win") {
  auto g = effective_thresholds(2, 3, std::nullopt, std::nullopt, std::nullopt);
  CHECK(g.success_before_passing == 2);
  CHECK(g.failures_before_critical == 3);
  CHECK(g.failures_before_warning == 3);
  auto p = effective_thresholds(2, 3, 5, std::nullopt, 4);
  CHECK(p.success_before_passing == 5);
  CHECK(p.failures_before_critical == 4);
  CHECK(p.failures_before_warning == 4);  // follows FailuresBeforeCritical when unset
  auto w = effective_thresholds(0, 0, std::nullopt, 1, 3);
  CHECK(w.failures_before_warning == 1);
  CHECK(w.failures_before_critical == 3);
  auto neg = effective_thresholds(-1, -5, 0, 0, 0);
  CHECK(neg == thresholds{});
}

// consul-esm's arithmetic (reference §6.6): gate with critical_threshold in front, its own
// counter behind. The reported status is what the catalog would show.
namespace {

struct legacy_model {
  status_gate gate;
  legacy_counter counter;
  int pass_t, crit_t;
  S reported = S::passing;
  legacy_model(int p, int c) : gate(effective_thresholds(p, c, {}, {}, {})), pass_t(p), crit_t(c) {}
  // Returns the number of results fed until the reported status became `want`.
  int until(S result, S want, int limit = 100) {
    for (int n = 1; n <= limit; ++n) {
      auto f = gate.feed(result);
      if (f && counter.admit(*f, *f == reported, pass_t, crit_t)) reported = *f;
      if (reported == want) return n;
    }
    return -1;
  }
};

}  // namespace

TEST_CASE("legacy mode: 2 x threshold failures from steady passing, threshold + 1 after a start") {
  legacy_model fresh(0, 3);
  CHECK(fresh.until(S::critical, S::critical) == 4);  // gate open after a start: 3 + 1

  legacy_model steady(0, 3);
  // Reach a steady passing state: the gate's failure counter drained by passing results.
  steady.until(S::passing, S::critical, 5);
  CHECK(steady.reported == S::passing);
  CHECK(steady.until(S::critical, S::critical) == 6);
}

TEST_CASE("consul mode with the same setting needs exactly 3 from steady passing") {
  thresholds t = effective_thresholds(0, 3, {}, {}, {});
  status_gate g(t);
  for (int i = 0; i < 5; ++i) g.feed(S::passing);
  int n = 0;
  std::optional<S> r;
  while (!(r = g.feed(S::critical))) ++n;
  CHECK(n + 1 == 3);
  CHECK(*r == S::critical);
}
