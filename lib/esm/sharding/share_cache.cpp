#include "esm/sharding/share_cache.hpp"

#include <algorithm>
#include <cstring>
#include <iterator>
#include <limits>
#include <memory>
#include <stdexcept>
#include <string_view>
#include <tuple>
#include <utility>

#include "esm/sharding/worker.hpp"

namespace esm::sharding {

// The bytes: create_index, modify_index (8 each), then name, id, address, datacenter,
// partition, each as a 4-byte length and its bytes, then tagged_addresses and meta, each as a
// 4-byte count and its keys and values as strings. Lengths and counts are native, unaligned.
namespace {

using u32 = std::uint32_t;

std::size_t packed_size(const consul::string_map& m) {
  std::size_t n = sizeof(u32);
  for (auto& [k, v] : m) n += 2 * sizeof(u32) + k.size() + v.size();
  return n;
}

char* put(char* at, const void* p, std::size_t n) {
  if (n) std::memcpy(at, p, n);
  return at + n;
}
char* put_u32(char* at, std::size_t v) {
  // A node's string or map is far below 4 GiB; one that is not must not be misread later.
  if (v > std::numeric_limits<u32>::max()) throw std::length_error("node field too large to hold");
  auto n = static_cast<u32>(v);
  return put(at, &n, sizeof n);
}
char* put_string(char* at, std::string_view s) { return put(put_u32(at, s.size()), s.data(), s.size()); }
char* put_map(char* at, const consul::string_map& m) {
  at = put_u32(at, m.size());
  for (auto& [k, v] : m) at = put_string(put_string(at, k), v);
  return at;
}

u32 get_u32(const char*& at) {
  u32 n;
  std::memcpy(&n, at, sizeof n);
  at += sizeof n;
  return n;
}
std::string_view get_string(const char*& at) {
  auto n = get_u32(at);
  std::string_view s(at, n);
  at += n;
  return s;
}
// Whether the packed map at `at` holds exactly `m` (in the map's order); moves past it.
bool same_map(const char*& at, const consul::string_map& m) {
  auto n = get_u32(at);
  bool same = n == m.size();
  auto it = m.begin();
  for (; n > 0; --n) {
    auto k = get_string(at);
    auto v = get_string(at);
    if (same && (it->first != k || it->second != v)) same = false;
    if (same) ++it;
  }
  return same;
}
void get_map(const char*& at, consul::string_map& m) {
  for (auto n = get_u32(at); n > 0; --n) {
    auto k = get_string(at);
    auto v = get_string(at);
    m.emplace_hint(m.end(), k, v);  // packed in the map's order
  }
}

constexpr std::size_t name_at = 2 * sizeof(std::uint64_t);

}  // namespace

packed_node::packed_node(const consul::node& n) {
  std::size_t size = name_at + 5 * sizeof(u32) + n.name.size() + n.id.size() + n.address.size() +
                     n.datacenter.size() + n.partition.size() + packed_size(n.tagged_addresses) +
                     packed_size(n.meta);
  p_ = std::make_unique_for_overwrite<char[]>(size);
  char* at = p_.get();
  at = put(at, &n.create_index, sizeof n.create_index);
  at = put(at, &n.modify_index, sizeof n.modify_index);
  at = put_string(at, n.name);
  at = put_string(at, n.id);
  at = put_string(at, n.address);
  at = put_string(at, n.datacenter);
  at = put_string(at, n.partition);
  at = put_map(at, n.tagged_addresses);
  put_map(at, n.meta);
}

std::string_view packed_node::name() const noexcept {
  const char* at = p_.get() + name_at;
  return get_string(at);
}

bool packed_node::same_as(const consul::node& n) const noexcept {
  const char* at = p_.get();
  std::uint64_t modify_index;
  std::memcpy(&modify_index, at + sizeof(std::uint64_t), sizeof modify_index);
  if (modify_index != n.modify_index) return false;
  at += name_at;
  if (get_string(at) != n.name) return false;
  get_string(at);  // id
  if (get_string(at) != n.address) return false;
  get_string(at);  // datacenter
  get_string(at);  // partition
  if (!same_map(at, n.tagged_addresses)) return false;
  return same_map(at, n.meta);
}

consul::node packed_node::unpack() const {
  consul::node n;
  const char* at = p_.get();
  std::memcpy(&n.create_index, at, sizeof n.create_index);
  std::memcpy(&n.modify_index, at + sizeof n.create_index, sizeof n.modify_index);
  at += name_at;
  n.name = get_string(at);
  n.id = get_string(at);
  n.address = get_string(at);
  n.datacenter = get_string(at);
  n.partition = get_string(at);
  get_map(at, n.tagged_addresses);
  get_map(at, n.meta);
  return n;
}

namespace {

bool same_nodes(const std::vector<consul::node>& a, const std::vector<packed_node>& b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (!b[i].same_as(a[i])) return false;
  return true;
}

// The order of the checks the sink holds, and their identity in it.
// The order of checks_, by node, check ID, service ID, namespace and partition.
using check_order = std::tuple<std::string_view, std::string_view, std::string_view, std::string_view,
                               std::string_view>;
check_order order_key(const consul::health_check& c) {
  return {c.node, c.check_id, c.service_id.view(), c.name_space.view(), c.partition.view()};
}
check_order order_key(const consul::check_key& k) {
  return {k.node, k.check_id, k.service_id, k.name_space, k.partition};
}
bool check_before(const shared_check& a, const shared_check& b) {
  return order_key(*a) < order_key(*b);
}

bool same_names(const std::vector<consul::node>& a, const std::vector<consul::node>& b) {
  return std::equal(a.begin(), a.end(), b.begin(), b.end(),
                    [](const consul::node& x, const consul::node& y) { return x.name == y.name; });
}

}  // namespace

bool share_cache::assign(const assignment& next) {
  auto sets = follower_sets(next);
  names work{{sets.health_nodes.begin(), sets.health_nodes.end()},
             {sets.ping_nodes.begin(), sets.ping_nodes.end()}};
  if (assigned_ && work == *work_) return false;
  assigned_ = true;
  work_ = std::make_shared<const names>(std::move(work));
  return true;
}

follower_work share_cache::work() const {
  return {{work_->health.begin(), work_->health.end()}, {work_->ping.begin(), work_->ping.end()}};
}

bool share_cache::has(const std::vector<std::string>& sorted, std::string_view name) {
  return std::binary_search(sorted.begin(), sorted.end(), name);
}

std::vector<consul::node> share_cache::nodes() const {
  std::vector<consul::node> out;
  out.reserve(nodes_.size());
  for (auto& n : nodes_) out.push_back(n.unpack());
  return out;
}

share_cache::plan share_cache::apply_assignment() {
  plan p;
  p.drop.nodes = take_nodes(nodes());
  p.drop.checks = hold_checks(checks_);
  const auto& wanted = work_->health;
  if (wanted.empty()) {
    followed_ = work_;
    indexes_ = {};
    return p;
  }
  const auto& followed = followed_->health;
  std::set_difference(wanted.begin(), wanted.end(), followed.begin(), followed.end(),
                      std::inserter(p.added, p.added.end()));
  followed_ = work_;
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
  return on_checks(make_shared_checks(std::move(fetched)), index);
}

share_cache::delivery share_cache::on_checks(std::vector<shared_check> fetched, std::uint64_t index) {
  indexes_.checks = index;
  return {false, take_checks(std::move(fetched))};
}

shared_check share_cache::held_check(const consul::check_key& k) const {
  auto wanted = order_key(k);
  auto it = std::lower_bound(checks_.begin(), checks_.end(), wanted,
                             [](const shared_check& c, const check_order& w) { return order_key(*c) < w; });
  if (it == checks_.end() || order_key(**it) != wanted || (*it)->modify_index != k.modify_index) return nullptr;
  return *it;
}

share_cache::delivery share_cache::on_added(std::vector<consul::node> nodes,
                                            std::vector<consul::health_check> checks,
                                            indexes read_at) {
  // An answer without an index (0) must not read as "no state", which would force a full read.
  indexes_.nodes = std::min(indexes_.nodes, std::max<std::uint64_t>(read_at.nodes, 1));
  indexes_.checks = std::min(indexes_.checks, std::max<std::uint64_t>(read_at.checks, 1));
  auto all_nodes = share_cache::nodes();
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
  const auto& work = *work_;
  std::erase_if(fetched, [&](const consul::node& n) { return !has(work.health, n.name); });
  std::sort(fetched.begin(), fetched.end(),
            [](const consul::node& a, const consul::node& b) { return a.name < b.name; });
  std::vector<consul::node> ping;
  for (auto& n : fetched)
    if (has(work.ping, n.name)) ping.push_back(n);
  // The pinged ones count too: a node that became a probe with the same object must reach
  // the prober.
  if (delivered_nodes_ && same_nodes(fetched, nodes_) && same_names(ping, ping_)) return false;
  std::vector<packed_node> packed;
  packed.reserve(fetched.size());
  for (auto& n : fetched) packed.emplace_back(n);
  nodes_ = std::move(packed);
  ping_ = std::move(ping);
  delivered_nodes_ = true;
  return true;
}

bool share_cache::take_checks(std::vector<shared_check> fetched) {
  std::erase_if(fetched, [&](const shared_check& c) {
    return !has(work_->health, c->node) || c->check_id == external_node_health_check_id;
  });
  std::sort(fetched.begin(), fetched.end(), check_before);
  // Both sorted alike: one pass finds the held object of each check read. The same
  // ModifyIndex is the same version (any change in Consul moves it), so the held object stays
  // and the one read is dropped; 0 (no index known) tells nothing, and the one read is taken.
  auto held = checks_.begin();
  for (auto& c : fetched) {
    while (held != checks_.end() && check_before(*held, c)) ++held;
    if (held != checks_.end() && c->modify_index != 0 && (*held)->modify_index == c->modify_index &&
        order_key(**held) == order_key(*c))
      c = *held;
  }
  return hold_checks(std::move(fetched));
}

bool share_cache::hold_checks(std::vector<shared_check> next) {
  std::erase_if(next, [&](const shared_check& c) {
    return !has(work_->health, c->node) || c->check_id == external_node_health_check_id;
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
