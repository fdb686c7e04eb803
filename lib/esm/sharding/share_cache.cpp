#include "esm/sharding/share_cache.hpp"

#include <algorithm>
#include <iterator>
#include <memory>
#include <tuple>
#include <utility>

#include "esm/sharding/worker.hpp"

namespace esm::sharding {

namespace {

bool same_nodes(const std::vector<consul::node>& a, const std::vector<consul::node>& b) {
  return std::equal(a.begin(), a.end(), b.begin(), b.end(),
                    [](const consul::node& x, const consul::node& y) {
                      return x.name == y.name && x.modify_index == y.modify_index &&
                             x.address == y.address && x.meta == y.meta &&
                             x.tagged_addresses == y.tagged_addresses;
                    });
}

// The order of the checks the sink holds, and their identity in it.
auto order_key(const consul::health_check& c) {
  return std::tie(c.node, c.check_id, c.service_id, c.name_space, c.partition);
}
bool check_before(const shared_check& a, const shared_check& b) {
  return order_key(*a) < order_key(*b);
}

bool same_names(const std::vector<consul::node>& a, const std::vector<consul::node>& b) {
  return std::equal(a.begin(), a.end(), b.begin(), b.end(),
                    [](const consul::node& x, const consul::node& y) { return x.name == y.name; });
}

}  // namespace

bool share_cache::assign(assignment next) {
  auto work = follower_sets(next);
  if (current_ && work == work_) return false;
  current_ = std::move(next);
  work_ = std::move(work);
  return true;
}

share_cache::plan share_cache::apply_assignment() {
  plan p;
  p.drop.nodes = take_nodes(nodes_);
  p.drop.checks = hold_checks(checks_);
  const auto& wanted = work_.health_nodes;
  if (wanted.empty()) {
    followed_.clear();
    indexes_ = {};
    return p;
  }
  std::set_difference(wanted.begin(), wanted.end(), followed_.begin(), followed_.end(),
                      std::inserter(p.added, p.added.end()));
  followed_ = wanted;
  if (!resume_from()) {
    // The kept nodes are not known as of both indexes: no state to resume from.
    indexes_ = {};
    p.added.clear();
    p.next = catch_up::from_scratch;
  } else {
    p.next = p.added.empty() ? catch_up::resume : catch_up::read_added;
  }
  return p;
}

share_cache::delivery share_cache::on_nodes(std::vector<consul::node> fetched, std::uint64_t index) {
  indexes_.nodes = index;
  return {take_nodes(std::move(fetched)), false};
}

share_cache::delivery share_cache::on_checks(std::vector<consul::health_check> fetched,
                                             std::uint64_t index) {
  indexes_.checks = index;
  return {false, take_checks(std::move(fetched))};
}

share_cache::delivery share_cache::on_added(std::vector<consul::node> nodes,
                                            std::vector<consul::health_check> checks,
                                            indexes read_at) {
  // An answer without an index (0) must not read as "no state", which would force a full read.
  indexes_.nodes = std::min(indexes_.nodes, std::max<std::uint64_t>(read_at.nodes, 1));
  indexes_.checks = std::min(indexes_.checks, std::max<std::uint64_t>(read_at.checks, 1));
  auto all_nodes = nodes_;
  all_nodes.insert(all_nodes.end(), std::make_move_iterator(nodes.begin()),
                   std::make_move_iterator(nodes.end()));
  auto all_checks = checks_;
  for (auto& c : checks)
    all_checks.push_back(std::make_shared<const consul::health_check>(std::move(c)));
  delivery d;
  d.nodes = take_nodes(std::move(all_nodes));
  d.checks = hold_checks(std::move(all_checks));
  return d;
}

std::optional<share_cache::indexes> share_cache::resume_from() const {
  if (!indexes_.nodes || !indexes_.checks) return std::nullopt;
  return indexes_;
}

bool share_cache::take_nodes(std::vector<consul::node> fetched) {
  std::erase_if(fetched, [&](const consul::node& n) { return !work_.health_nodes.count(n.name); });
  std::sort(fetched.begin(), fetched.end(),
            [](const consul::node& a, const consul::node& b) { return a.name < b.name; });
  std::vector<consul::node> ping;
  for (auto& n : fetched)
    if (work_.ping_nodes.count(n.name)) ping.push_back(n);
  // The pinged ones count too: a node that became a probe with the same object must reach
  // the prober.
  if (delivered_nodes_ && same_nodes(fetched, nodes_) && same_names(ping, ping_)) return false;
  nodes_ = std::move(fetched);
  ping_ = std::move(ping);
  delivered_nodes_ = true;
  return true;
}

bool share_cache::take_checks(std::vector<consul::health_check> fetched) {
  std::erase_if(fetched, [&](const consul::health_check& c) {
    return !work_.health_nodes.count(c.node) || c.check_id == external_node_health_check_id;
  });
  std::sort(fetched.begin(), fetched.end(),
            [](const consul::health_check& a, const consul::health_check& b) {
              return order_key(a) < order_key(b);
            });
  // Both sorted alike: one pass finds the held object of each check read. The same
  // ModifyIndex is the same version (any change in Consul moves it), so the held object stays
  // and the one read is dropped; 0 (no index known) tells nothing, and the one read is taken.
  std::vector<shared_check> next;
  next.reserve(fetched.size());
  auto held = checks_.begin();
  for (auto& c : fetched) {
    while (held != checks_.end() && order_key(**held) < order_key(c)) ++held;
    if (held != checks_.end() && c.modify_index != 0 && (*held)->modify_index == c.modify_index &&
        order_key(**held) == order_key(c))
      next.push_back(*held);
    else
      next.push_back(std::make_shared<const consul::health_check>(std::move(c)));
  }
  return hold_checks(std::move(next));
}

bool share_cache::hold_checks(std::vector<shared_check> next) {
  std::erase_if(next, [&](const shared_check& c) {
    return !work_.health_nodes.count(c->node) || c->check_id == external_node_health_check_id;
  });
  if (!std::is_sorted(next.begin(), next.end(), check_before))
    std::sort(next.begin(), next.end(), check_before);
  // Any change of a check in Consul moves its ModifyIndex, so (node, ID, ModifyIndex) tells
  // a change without comparing outputs and definitions.
  auto same = [](const shared_check& a, const shared_check& b) {
    return a->node == b->node && a->check_id == b->check_id && a->modify_index == b->modify_index;
  };
  if (delivered_checks_ && std::equal(next.begin(), next.end(), checks_.begin(), checks_.end(), same))
    return false;
  checks_ = std::move(next);
  delivered_checks_ = true;
  return true;
}

}  // namespace esm::sharding
