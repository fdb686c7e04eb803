// Go's binary encoding of a time.Time (MarshalBinary, which GobEncode also produces): the value
// consul-esm keeps at `<consul_kv_path>probes/<node>` for the moment a node became unreachable
// (reference §1.1). Go and C++ instances share a cluster during a migration, so both directions
// are byte-exact.
//
// Layout: byte 0 the version (1; version 2 appends a byte of offset seconds); bytes 1-8
// big-endian signed seconds since 0001-01-01T00:00:00Z; bytes 9-12 big-endian nanoseconds;
// bytes 13-14 big-endian zone offset in minutes, -1 (0xFFFF) meaning UTC. The seconds count
// the absolute instant (Go subtracts the offset before encoding), so the offset only says how
// Go would print it: decoding ignores it.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <string_view>

namespace esm::ping {

using sys_nanoseconds = std::chrono::time_point<std::chrono::system_clock, std::chrono::nanoseconds>;

// Seconds from 0001-01-01 to 1970-01-01.
inline constexpr std::int64_t go_unix_to_internal = 62'135'596'800;

// 15 bytes, version 1, UTC, as consul-esm writes it.
std::string encode_go_time(sys_nanoseconds t);

// Versions 1 and 2, any zone offset; nullopt for anything else (wrong length or version,
// nanoseconds out of range, or a time outside what a 64-bit nanosecond count holds).
std::optional<sys_nanoseconds> decode_go_time(std::string_view bytes);

}  // namespace esm::ping
