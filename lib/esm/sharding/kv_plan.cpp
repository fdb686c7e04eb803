#include "esm/sharding/kv_plan.hpp"

#include <algorithm>
#include <iterator>
#include <stdexcept>

#include "esm/sharding/kv_codec.hpp"

namespace esm::sharding {

std::string normalize_kv_path(std::string_view kv_path) {
  std::string out(kv_path);
  if (out.empty() || out.back() != '/') out.push_back('/');
  return out;
}

std::string assignments_dir(std::string_view kv_path) {
  return normalize_kv_path(kv_path) + "agents/";
}

std::string assignment_key(std::string_view kv_path, std::string_view service_id) {
  return assignments_dir(kv_path).append(service_id);
}

std::string probe_key(std::string_view kv_path, std::string_view node) {
  return normalize_kv_path(kv_path).append("probes/").append(node);
}

std::optional<std::string> service_id_of_key(std::string_view kv_path, std::string_view key) {
  const std::string dir = assignments_dir(kv_path);
  if (key.size() <= dir.size() || key.substr(0, dir.size()) != dir) return std::nullopt;
  return std::string(key.substr(dir.size()));
}

namespace {

std::vector<kv_txn> chunk(std::vector<kv_write> ops, std::size_t max_ops, std::size_t max_bytes) {
  if (max_ops == 0) throw std::invalid_argument("sharding: max_ops must be at least 1");
  std::vector<kv_txn> out;
  std::size_t bytes = 0;
  for (auto& op : ops) {
    const std::size_t size = txn_op_bytes(op);
    // A new transaction when this one is full by count or would pass the byte budget; an
    // operation larger than the budget by itself goes alone (Consul decides).
    if (out.empty() || out.back().size() >= max_ops || (!out.back().empty() && bytes + size > max_bytes)) {
      out.emplace_back();
      bytes = 0;
    }
    out.back().push_back(std::move(op));
    bytes += size;
  }
  return out;
}

}  // namespace

std::size_t txn_op_bytes(const kv_write& w) {
  // {"KV":{"Verb":"set","Key":"...","Value":"<base64>","Partition":"..."}}, with room to spare
  // for a partition name and the separators.
  return 128 + w.key.size() + 4 * ((w.value.size() + 2) / 3);
}

std::vector<kv_txn> plan_assignment_writes(std::string_view kv_path,
                                           const std::map<std::string, std::string>& stored,
                                           const assignment_map& next, std::size_t max_ops,
                                           std::size_t max_bytes) {
  const std::string dir = assignments_dir(kv_path);
  std::vector<kv_write> ops;
  std::map<std::string, const assignment*> wanted;  // key -> next's entry, in key order
  for (const auto& [id, a] : next) wanted.emplace(dir + id, &a);

  for (const auto& [key, a] : wanted) {
    if (auto it = stored.find(key); it != stored.end()) {
      auto old = decode_assignment(it->second);
      if (old && same_assignment(*old, *a)) continue;
    }
    ops.push_back({"set", key, encode_assignment(*a)});
  }
  for (const auto& [key, value] : stored) {
    if (key.compare(0, dir.size(), dir) != 0) continue;
    if (!wanted.contains(key)) ops.push_back({"delete", key, {}});
  }
  return chunk(std::move(ops), max_ops, max_bytes);
}

std::vector<kv_txn> plan_assignment_writes_from(std::string_view kv_path,
                                                const assignment_map& previous,
                                                const assignment_map& next,
                                                std::size_t max_ops, std::size_t max_bytes) {
  std::map<std::string, std::string> stored;
  for (const auto& [id, a] : previous) stored.emplace(assignment_key(kv_path, id), encode_assignment(a));
  return plan_assignment_writes(kv_path, stored, next, max_ops, max_bytes);
}

assignment_map decode_stored_assignments(std::string_view kv_path,
                                         const std::map<std::string, std::string>& stored) {
  assignment_map out;
  for (const auto& [key, value] : stored) {
    auto id = service_id_of_key(kv_path, key);
    if (!id) continue;
    auto a = decode_assignment(value);
    if (a) out.emplace(std::move(*id), std::move(*a));
  }
  return out;
}

}  // namespace esm::sharding
