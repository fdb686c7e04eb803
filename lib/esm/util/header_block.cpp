#include "esm/util/header_block.hpp"

#include <algorithm>
#include <limits>
#include <stdexcept>

namespace esm::util {
namespace {

void put_word(char*& p, std::size_t n) {
  auto w = static_cast<std::uint32_t>(n);
  std::memcpy(p, &w, sizeof w);
  p += sizeof w;
}

void put_bytes(char*& p, std::string_view s) {
  put_word(p, s.size());
  if (!s.empty()) std::memcpy(p, s.data(), s.size());
  p += s.size();
}

}  // namespace

header_block::header_block(
    std::initializer_list<std::pair<std::string_view, std::initializer_list<std::string_view>>> l) {
  std::vector<std::pair<std::string_view, std::vector<std::string_view>>> entries;
  entries.reserve(l.size());
  for (const auto& [name, values] : l) entries.emplace_back(name, std::vector<std::string_view>(values));
  *this = header_block(std::move(entries));
}

header_block::header_block(std::vector<std::pair<std::string_view, std::vector<std::string_view>>> entries) {
  // Byte order of the names; of equal names the last given wins, as in a map assigned to.
  std::stable_sort(entries.begin(), entries.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  std::size_t kept = 0;
  for (std::size_t i = 0; i < entries.size(); ++i) {
    if (i + 1 < entries.size() && entries[i + 1].first == entries[i].first) continue;
    if (kept != i) entries[kept] = std::move(entries[i]);
    ++kept;
  }
  entries.resize(kept);
  if (entries.empty()) return;

  std::size_t bytes = 4;  // the count of names
  for (const auto& [name, values] : entries) {
    bytes += 4 + name.size() + 4;
    for (auto v : values) bytes += 4 + v.size();
  }
  if (bytes > std::numeric_limits<std::uint32_t>::max() - 4)
    throw std::length_error("header block over 4 GiB");
  p_ = new char[4 + bytes];
  char* p = p_;
  put_word(p, bytes);
  put_word(p, entries.size());
  for (const auto& [name, values] : entries) {
    put_bytes(p, name);
    put_word(p, values.size());
    for (auto v : values) put_bytes(p, v);
  }
}

header_block::header_block(const header_block& o) {
  if (!o.p_) return;
  std::size_t n = 4 + word(o.p_);
  p_ = new char[n];
  std::memcpy(p_, o.p_, n);
}

std::vector<std::string> header_block::values(std::string_view name) const {
  for (auto e : *this)
    if (e.name == name) return e.values.to_vector();
  return {};
}

bool header_block::contains(std::string_view name) const {
  for (auto e : *this)
    if (e.name == name) return true;
  return false;
}

}  // namespace esm::util
