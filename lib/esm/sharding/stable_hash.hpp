// A 64-bit string hash that is the same on every build, platform and version of esmd
// (std::hash promises none of that). The assignment's rendezvous weights are built from it,
// so two leaders of different builds compute the same assignment from the same inputs.
// Changing these functions changes which instance a fresh cluster gives a node to; since the
// leader keeps nodes with their previous owners, it would not move nodes in a running one.
#pragma once

#include <cstdint>
#include <string_view>

namespace esm::sharding {

// FNV-1a, 64-bit, over the bytes of the text.
constexpr std::uint64_t fnv1a64(std::string_view text) noexcept {
  std::uint64_t h = 0xcbf29ce484222325ULL;
  for (char c : text) {
    h ^= static_cast<unsigned char>(c);
    h *= 0x100000001b3ULL;
  }
  return h;
}

// SplitMix64's finaliser (Stafford's variant 13): every input bit affects every output bit,
// which FNV-1a alone does not give for short, similar names ("node-1", "node-2").
constexpr std::uint64_t mix64(std::uint64_t x) noexcept {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  x ^= x >> 31;
  return x;
}

// Rendezvous weight of a node for an instance, from fnv1a64(node name) and
// mix64(fnv1a64(instance ID)). The instance side is mixed first so that XOR with the node's
// hash cannot cancel structure shared by both names.
constexpr std::uint64_t rendezvous_weight(std::uint64_t node_hash,
                                          std::uint64_t mixed_instance_hash) noexcept {
  return mix64(node_hash ^ mixed_instance_hash);
}

}  // namespace esm::sharding
