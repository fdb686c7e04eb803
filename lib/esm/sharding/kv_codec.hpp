// Values esmd shares with consul-esm through Consul's KV store, byte for byte, so Go and C++
// instances can run in one cluster during a migration (reference §1.1):
//
// * the assignment at `K/agents/S:I`: `{"Nodes":["n1","n3"],"Probes":null}`;
// * the probe critical-since time at `K/probes/<node>`: Go's time.Time binary encoding.
//
// Decoding never throws: a malformed value is an error value whose message says what is
// wrong, for the caller to log and skip.
#pragma once

#include <chrono>
#include <cstdint>
#include <iosfwd>
#include <optional>
#include <string>
#include <string_view>

#include <boost/system/result.hpp>

#include "esm/sharding/assignment.hpp"

namespace esm::sharding {

struct decode_error {
  std::string message;
};

std::ostream& operator<<(std::ostream& os, const decode_error& e);

template <class T>
using decode_result = boost::system::result<T, decode_error>;

// Lets decode_result<T>::value() throw on an error, as boost::system::result requires.
[[noreturn]] void throw_exception_from_error(const decode_error& e,
                                             const boost::source_location& loc);

// ---- assignment value ------------------------------------------------------------------

// Exactly what Go's json.Marshal writes for consul-esm's NodeWatchList: members Nodes then
// Probes, an empty list as null, no spaces, strings escaped as Go does (<, >, & as \u003c,
// \u003e, \u0026; U+2028/U+2029 escaped; invalid UTF-8 as \ufffd; Go 1.22+ \b and \f).
// The lists are written in the order given.
std::string encode_assignment(const assignment& a);

// Reads what Go's json.Unmarshal would accept into NodeWatchList: a JSON object (or null,
// which is an empty assignment). Nodes and Probes may each be an array of strings, null or
// missing; member names match ASCII case-insensitively and a later member wins, as in Go;
// unknown members are ignored. Errors: invalid JSON (including invalid UTF-8, which Go
// would replace), another top-level type, a member that is not an array or null, or an
// element that is not a string (Go would turn null elements into "", a name no node has).
decode_result<assignment> decode_assignment(std::string_view json);

// Same content: equal as sets (order and duplicates within a list do not matter). Used to
// skip KV writes that would not change what a follower does.
bool same_assignment(const assignment& a, const assignment& b);

// ---- Go time.Time binary encoding ------------------------------------------------------

// A decoded Go time: an instant plus the zone it was written in (informational; consul-esm
// always writes UTC).
struct go_time {
  std::int64_t unix_seconds = 0;
  std::uint32_t nanoseconds = 0;              // 0 .. 999 999 999
  std::optional<std::int32_t> offset_seconds;  // east of UTC; nullopt: UTC (Go's -1 marker)

  // The instant as a system_clock time. Nanosecond time points cover the years 1678-2262;
  // instants outside saturate to the nearest end.
  std::chrono::sys_time<std::chrono::nanoseconds> instant() const noexcept;

  friend bool operator==(const go_time&, const go_time&) = default;
};

// The instant in UTC, `2024-01-02T03:04:05.123456000Z`, followed by ` (zone +hh:mm:ss)` when
// it was written with an offset; for logs and tests.
std::ostream& operator<<(std::ostream& os, const go_time& t);

// Go's Time.MarshalBinary of t in UTC: version 1, 15 bytes: version, big-endian seconds since
// 0001-01-01T00:00:00Z (int64), nanoseconds (int32), zone offset in minutes (int16, -1 = UTC).
std::string encode_go_time(std::chrono::sys_time<std::chrono::nanoseconds> t);

// Go's Time.UnmarshalBinary: versions 1 (15 bytes) and 2 (16 bytes; the last byte adds
// offset seconds, read as signed, which is what Go's encoder meant). Stricter than Go in one
// point: nanoseconds outside 0..999 999 999 are an error rather than a corrupt time.
decode_result<go_time> decode_go_time(std::string_view bytes);

}  // namespace esm::sharding
