#include "esm/sharding/assignment.hpp"

#include <algorithm>
#include <array>
#include <cstdint>
#include <limits>
#include <optional>
#include <ostream>
#include <stdexcept>
#include <tuple>
#include <unordered_map>
#include <utility>

#include "esm/sharding/stable_hash.hpp"

namespace esm::sharding {
namespace {

constexpr std::size_t plain_class = 0;
constexpr std::size_t probe_class = 1;
constexpr std::uint32_t no_owner = std::numeric_limits<std::uint32_t>::max();

struct node_entry {
  std::string_view name;
  bool probe = false;
};

std::vector<node_entry> unique_sorted_nodes(std::span<const external_node> nodes) {
  std::vector<node_entry> out;
  out.reserve(nodes.size());
  for (const auto& n : nodes) out.push_back({n.name, n.probe});
  std::sort(out.begin(), out.end(),
            [](const node_entry& a, const node_entry& b) { return a.name < b.name; });
  // Merge duplicates: one node, a probe node if any copy is.
  std::size_t w = 0;
  for (std::size_t r = 0; r < out.size(); ++r) {
    if (w > 0 && out[w - 1].name == out[r].name) {
      out[w - 1].probe = out[w - 1].probe || out[r].probe;
    } else {
      out[w++] = out[r];
    }
  }
  out.resize(w);
  return out;
}

std::vector<std::string_view> unique_sorted_ids(std::span<const std::string> ids) {
  std::vector<std::string_view> out(ids.begin(), ids.end());
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

template <class T, class Proj>
std::optional<std::size_t> find_sorted(const std::vector<T>& v, std::string_view key, Proj proj) {
  auto it = std::lower_bound(v.begin(), v.end(), key,
                             [&](const T& e, std::string_view k) { return proj(e) < k; });
  if (it == v.end() || proj(*it) != key) return std::nullopt;
  return static_cast<std::size_t>(it - v.begin());
}

// Rendezvous weights of the sorted nodes and instances.
class weights {
 public:
  weights(const std::vector<node_entry>& nodes, const std::vector<std::string_view>& ids) {
    node_hash_.reserve(nodes.size());
    for (const auto& n : nodes) node_hash_.push_back(fnv1a64(n.name));
    inst_hash_.reserve(ids.size());
    for (auto id : ids) inst_hash_.push_back(mix64(fnv1a64(id)));
  }

  std::uint64_t operator()(std::size_t node, std::size_t inst) const noexcept {
    return rendezvous_weight(node_hash_[node], inst_hash_[inst]);
  }

  // Instance j's own hash: the tie-break when quotas' "+1" cannot be decided otherwise.
  std::uint64_t instance_hash(std::size_t inst) const noexcept { return inst_hash_[inst]; }

 private:
  std::vector<std::uint64_t> node_hash_;
  std::vector<std::uint64_t> inst_hash_;
};

using per_class = std::array<std::vector<std::size_t>, 2>;

// Decides which instances get quota base+1 in each class (extra[c][j] == 1). Exactly
// total[c] % k instances get it in class c. For the totals to stay within one of each other,
// no instance may have the +1 in both classes while another has it in neither: when the
// remainders fit side by side, the two sets are disjoint; otherwise the two "no +1" sets are.
// Within that, an instance that already holds more than base nodes of a class is preferred
// for that class's +1, so that it does not have to give a node away.
per_class choose_extras(const std::array<std::size_t, 2>& total, const per_class& prev_count,
                        const weights& w, std::size_t k) {
  std::array<std::size_t, 2> base{total[0] / k, total[1] / k};
  std::array<std::size_t, 2> rem{total[0] % k, total[1] % k};
  std::array<std::vector<bool>, 2> wants;
  for (std::size_t c = 0; c < 2; ++c) {
    wants[c].resize(k);
    for (std::size_t j = 0; j < k; ++j) wants[c][j] = prev_count[c][j] > base[c];
  }

  // Picks `count` instances not yet taken, in ascending order of key(j).
  auto pick = [&](std::vector<bool>& taken, std::size_t count, auto key) {
    std::vector<std::size_t> order;
    for (std::size_t j = 0; j < k; ++j)
      if (!taken[j]) order.push_back(j);
    std::sort(order.begin(), order.end(),
              [&](std::size_t a, std::size_t b) { return key(a) < key(b); });
    std::vector<bool> chosen(k, false);
    for (std::size_t x = 0; x < count && x < order.size(); ++x) {
      chosen[order[x]] = true;
      taken[order[x]] = true;
    }
    return chosen;
  };

  per_class extra{std::vector<std::size_t>(k, 0), std::vector<std::size_t>(k, 0)};
  std::vector<bool> taken(k, false);
  if (rem[plain_class] + rem[probe_class] <= k) {
    // Disjoint "+1" sets. Probe "+1" first, to instances that want it and not a plain one.
    auto probe_plus = pick(taken, rem[probe_class], [&](std::size_t j) {
      return std::make_tuple(!wants[probe_class][j], wants[plain_class][j], w.instance_hash(j), j);
    });
    auto plain_plus = pick(taken, rem[plain_class], [&](std::size_t j) {
      return std::make_tuple(!wants[plain_class][j], w.instance_hash(j), j);
    });
    for (std::size_t j = 0; j < k; ++j) {
      extra[probe_class][j] = probe_plus[j] ? 1 : 0;
      extra[plain_class][j] = plain_plus[j] ? 1 : 0;
    }
  } else {
    // Disjoint "no +1" sets (every instance has a +1 in at least one class). Probe floor
    // first, to instances that do not want the probe +1 but do want the plain one.
    auto probe_floor = pick(taken, k - rem[probe_class], [&](std::size_t j) {
      return std::make_tuple(wants[probe_class][j], !wants[plain_class][j], w.instance_hash(j), j);
    });
    auto plain_floor = pick(taken, k - rem[plain_class], [&](std::size_t j) {
      return std::make_tuple(wants[plain_class][j], w.instance_hash(j), j);
    });
    for (std::size_t j = 0; j < k; ++j) {
      extra[probe_class][j] = probe_floor[j] ? 0 : 1;
      extra[plain_class][j] = plain_floor[j] ? 0 : 1;
    }
  }
  return extra;
}

// Deferred acceptance of `free_nodes` (ascending node indices) into the instances' free
// slots `room`, whose sum equals free_nodes.size(). Nodes propose in decreasing weight
// order; an instance keeps the proposals that weigh most for it. Writes owners into `owner`.
void place(const std::vector<std::uint32_t>& free_nodes, const std::vector<std::size_t>& room,
           const weights& w, std::vector<std::uint32_t>& owner) {
  const std::size_t k = room.size();
  const std::size_t m = free_nodes.size();
  if (m == 0) return;

  // A held proposal; p indexes free_nodes, so p order is node order.
  struct held {
    std::uint64_t weight;
    std::uint32_t p;
  };
  // Heap comparator giving a min-heap: the front is the proposal the instance likes least.
  auto likes_more = [](const held& a, const held& b) {
    return std::tie(a.weight, a.p) > std::tie(b.weight, b.p);
  };
  std::vector<std::vector<held>> heaps(k);
  for (std::size_t j = 0; j < k; ++j) heaps[j].reserve(room[j]);

  // Each node's last proposal as (weight, instance); the next one is the best pair below it.
  using key = std::pair<std::uint64_t, std::uint32_t>;
  const key top{std::numeric_limits<std::uint64_t>::max(), no_owner};
  std::vector<key> last(m, top);

  std::vector<std::uint32_t> pending;
  pending.reserve(m);
  for (std::size_t p = m; p-- > 0;) pending.push_back(static_cast<std::uint32_t>(p));

  while (!pending.empty()) {
    const std::uint32_t p = pending.back();
    pending.pop_back();
    const std::size_t node = free_nodes[p];

    std::optional<key> best;
    for (std::size_t j = 0; j < k; ++j) {
      if (room[j] == 0) continue;
      const key candidate{w(node, j), static_cast<std::uint32_t>(j)};
      if (candidate < last[p] && (!best || candidate > *best)) best = candidate;
    }
    // Cannot happen: a node is refused only by full instances, and the slots are exactly
    // as many as the nodes.
    if (!best) throw std::logic_error("sharding: a node found no instance with room");
    last[p] = *best;

    auto& heap = heaps[best->second];
    const held proposal{best->first, p};
    if (heap.size() < room[best->second]) {
      heap.push_back(proposal);
      std::push_heap(heap.begin(), heap.end(), likes_more);
    } else if (likes_more(proposal, heap.front())) {
      std::pop_heap(heap.begin(), heap.end(), likes_more);
      pending.push_back(heap.back().p);
      heap.back() = proposal;
      std::push_heap(heap.begin(), heap.end(), likes_more);
    } else {
      pending.push_back(p);
    }
  }

  for (std::size_t j = 0; j < k; ++j)
    for (const auto& h : heaps[j]) owner[free_nodes[h.p]] = static_cast<std::uint32_t>(j);
}

}  // namespace

std::ostream& operator<<(std::ostream& os, const assignment& a) {
  auto list = [&](const std::vector<std::string>& v) {
    os << '[';
    for (std::size_t i = 0; i < v.size(); ++i) os << (i ? " " : "") << v[i];
    os << ']';
  };
  os << "nodes ";
  list(a.nodes);
  os << " probes ";
  list(a.probes);
  return os;
}

assignment_map round_robin_assignment(std::span<const external_node> nodes,
                                      std::span<const std::string> instances) {
  assignment_map out;
  if (instances.empty()) return out;
  std::vector<std::string_view> ids(instances.begin(), instances.end());
  std::sort(ids.begin(), ids.end());
  // Duplicated IDs share one entry, as in consul-esm's map, but keep their positions.
  std::vector<assignment*> slot;
  slot.reserve(ids.size());
  for (auto id : ids) slot.push_back(&out.try_emplace(std::string(id)).first->second);

  std::vector<const external_node*> sorted;
  sorted.reserve(nodes.size());
  for (const auto& n : nodes) sorted.push_back(&n);
  std::stable_sort(sorted.begin(), sorted.end(),
                   [](const external_node* a, const external_node* b) { return a->name < b->name; });

  for (std::size_t i = 0; i < sorted.size(); ++i) {
    auto& a = *slot[i % slot.size()];
    (sorted[i]->probe ? a.probes : a.nodes).push_back(sorted[i]->name);
  }
  return out;
}

assignment_map balanced_assignment(std::span<const external_node> nodes_in,
                                   std::span<const std::string> instances,
                                   const assignment_map& previous) {
  assignment_map out;
  const auto ids = unique_sorted_ids(instances);
  if (ids.empty()) return out;
  const std::size_t k = ids.size();
  const auto nodes = unique_sorted_nodes(nodes_in);
  const std::size_t n = nodes.size();
  if (n >= no_owner || k >= no_owner) throw std::length_error("sharding: too many nodes");
  const weights w(nodes, ids);

  // Previous owners among today's instances; a node listed twice goes to the heavier one.
  std::vector<std::uint32_t> prev_owner(n, no_owner);
  for (const auto& [id, a] : previous) {
    const auto j = find_sorted(ids, id, [](std::string_view s) { return s; });
    if (!j) continue;
    for (const auto* list : {&a.nodes, &a.probes}) {
      for (const auto& name : *list) {
        const auto i = find_sorted(nodes, name, [](const node_entry& e) { return e.name; });
        if (!i) continue;
        auto& o = prev_owner[*i];
        if (o == no_owner ||
            std::make_pair(w(*i, *j), *j) > std::make_pair(w(*i, o), std::size_t{o}))
          o = static_cast<std::uint32_t>(*j);
      }
    }
  }

  std::array<std::size_t, 2> total{};
  per_class prev_count{std::vector<std::size_t>(k, 0), std::vector<std::size_t>(k, 0)};
  for (std::size_t i = 0; i < n; ++i) {
    const std::size_t c = nodes[i].probe ? probe_class : plain_class;
    ++total[c];
    if (prev_owner[i] != no_owner) ++prev_count[c][prev_owner[i]];
  }
  const per_class extra = choose_extras(total, prev_count, w, k);

  // Keep every node with its previous owner up to the owner's quota; an overfull owner keeps
  // the nodes that weigh most for it.
  std::vector<std::uint32_t> owner(n, no_owner);
  per_class room{std::vector<std::size_t>(k, 0), std::vector<std::size_t>(k, 0)};
  std::array<std::vector<std::vector<std::uint32_t>>, 2> held_before;
  for (auto& h : held_before) h.resize(k);
  for (std::size_t i = 0; i < n; ++i) {
    if (prev_owner[i] == no_owner) continue;
    held_before[nodes[i].probe ? probe_class : plain_class][prev_owner[i]].push_back(
        static_cast<std::uint32_t>(i));
  }
  for (std::size_t c = 0; c < 2; ++c) {
    for (std::size_t j = 0; j < k; ++j) {
      auto& list = held_before[c][j];
      const std::size_t quota = total[c] / k + extra[c][j];
      if (list.size() > quota) {
        std::sort(list.begin(), list.end(), [&](std::uint32_t a, std::uint32_t b) {
          return std::make_pair(w(a, j), a) > std::make_pair(w(b, j), b);
        });
        list.resize(quota);
      }
      for (auto i : list) owner[i] = static_cast<std::uint32_t>(j);
      room[c][j] = quota - list.size();
    }
  }

  std::array<std::vector<std::uint32_t>, 2> free_nodes;
  for (std::size_t i = 0; i < n; ++i)
    if (owner[i] == no_owner)
      free_nodes[nodes[i].probe ? probe_class : plain_class].push_back(
          static_cast<std::uint32_t>(i));
  for (std::size_t c = 0; c < 2; ++c) place(free_nodes[c], room[c], w, owner);

  std::vector<assignment*> slot;
  slot.reserve(k);
  for (auto id : ids) slot.push_back(&out.try_emplace(out.end(), std::string(id))->second);
  for (std::size_t i = 0; i < n; ++i) {
    auto& a = *slot[owner[i]];
    (nodes[i].probe ? a.probes : a.nodes).emplace_back(nodes[i].name);
  }
  return out;
}

std::size_t count_moved(const assignment_map& before, const assignment_map& after) {
  std::unordered_map<std::string_view, std::vector<std::string_view>> before_owners;
  for (const auto& [id, a] : before)
    for (const auto* list : {&a.nodes, &a.probes})
      for (const auto& name : *list) before_owners[name].push_back(id);
  std::size_t moved = 0;
  for (const auto& [id, a] : after) {
    for (const auto* list : {&a.nodes, &a.probes}) {
      for (const auto& name : *list) {
        auto it = before_owners.find(name);
        if (it == before_owners.end()) continue;
        if (std::find(it->second.begin(), it->second.end(), std::string_view(id)) ==
            it->second.end())
          ++moved;
      }
    }
  }
  return moved;
}

follower_work follower_sets(const assignment& mine) {
  follower_work out;
  out.health_nodes.insert(mine.nodes.begin(), mine.nodes.end());
  out.health_nodes.insert(mine.probes.begin(), mine.probes.end());
  out.ping_nodes.insert(mine.probes.begin(), mine.probes.end());
  return out;
}

}  // namespace esm::sharding
