#include <doctest/doctest.h>

#include <chrono>
#include <string>

#include "esm/ping/go_time.hpp"

using namespace esm::ping;
using namespace std::chrono;

namespace {

std::string hex(const std::string& s) {
  static const char* digits = "0123456789abcdef";
  std::string out;
  for (unsigned char c : s) {
    out += digits[c >> 4];
    out += digits[c & 15];
  }
  return out;
}

std::string unhex(const std::string& h) {
  std::string out;
  for (std::size_t i = 0; i + 1 < h.size(); i += 2) out += static_cast<char>(std::stoi(h.substr(i, 2), nullptr, 16));
  return out;
}

// 2024-01-02T03:04:05.123456Z
sys_nanoseconds vector_time() {
  return sys_nanoseconds(seconds(1'704'164'645) + microseconds(123'456));
}

}  // namespace

TEST_CASE("Go binary time: the reference vector, both ways") {
  // From Go: time.Date(2024, 1, 2, 3, 4, 5, 123456000, time.UTC).MarshalBinary()
  CHECK(hex(encode_go_time(vector_time())) == "010000000edd257425075bca00ffff");
  auto back = decode_go_time(unhex("010000000edd257425075bca00ffff"));
  REQUIRE(back);
  CHECK(*back == vector_time());
}

TEST_CASE("Go binary time: the Unix epoch and Go's zero time") {
  CHECK(hex(encode_go_time(sys_nanoseconds{})) == "010000000e7791f70000000000ffff");
  // time.Time{} (0001-01-01 UTC) is out of the int64-nanosecond range: refused, not wrapped.
  CHECK_FALSE(decode_go_time(unhex("010000000000000000000000000000")));
}

TEST_CASE("Go binary time: before 1970 the nanoseconds stay positive") {
  auto t = sys_nanoseconds(nanoseconds(-1));  // 1969-12-31T23:59:59.999999999Z
  auto enc = encode_go_time(t);
  CHECK(hex(enc) == "010000000e7791f6ff3b9ac9ffffff");
  CHECK(decode_go_time(enc) == t);
}

TEST_CASE("Go binary time: a zone offset does not move the instant") {
  // time.Date(2024,1,2,5,4,5,123456000, time.FixedZone("", 2*3600)).MarshalBinary(): the
  // same instant as the vector, offset +120 minutes.
  auto v = unhex("010000000edd257425075bca000078");
  CHECK(decode_go_time(v) == vector_time());
  // Version 2 carries offset seconds in a 16th byte.
  auto v2 = unhex("020000000edd257425075bca0000781e");
  CHECK(decode_go_time(v2) == vector_time());
}

TEST_CASE("Go binary time: malformed values are refused") {
  CHECK_FALSE(decode_go_time(""));
  CHECK_FALSE(decode_go_time(unhex("010000000edd257425075bca00ff")));      // short
  CHECK_FALSE(decode_go_time(unhex("010000000edd257425075bca00ffff00")));  // v1 too long
  CHECK_FALSE(decode_go_time(unhex("020000000edd257425075bca00ffff")));    // v2 too short
  CHECK_FALSE(decode_go_time(unhex("030000000edd257425075bca00ffff")));    // unknown version
  CHECK_FALSE(decode_go_time(unhex("010000000edd2574253b9aca00ffff")));    // 1e9 nanoseconds
  CHECK_FALSE(decode_go_time(unhex("01ffffffffffffffff00000000ffff")));    // far outside
  CHECK_FALSE(decode_go_time("not a time at all"));
}

TEST_CASE("Go binary time: round trip at nanosecond precision") {
  for (long long ns : {1LL, 999'999'999LL, 1'704'164'645'123'456'789LL, -62'135'596'800LL / 100 * 1'000'000'000LL}) {
    auto t = sys_nanoseconds(nanoseconds(ns));
    CHECK(decode_go_time(encode_go_time(t)) == t);
  }
}
