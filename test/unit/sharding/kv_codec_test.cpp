#include <doctest/doctest.h>

#include <chrono>
#include <random>
#include <sstream>
#include <string>

#include "esm/sharding/kv_codec.hpp"

using namespace esm::sharding;
using namespace std::chrono_literals;

namespace {

std::string from_hex(std::string_view hex) {
  std::string out;
  for (std::size_t i = 0; i + 1 < hex.size(); i += 2)
    out.push_back(static_cast<char>(std::stoi(std::string(hex.substr(i, 2)), nullptr, 16)));
  return out;
}

std::string to_hex(std::string_view bytes) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string out;
  for (unsigned char b : bytes) {
    out.push_back(digits[b >> 4]);
    out.push_back(digits[b & 0xF]);
  }
  return out;
}

std::string error_of(std::string_view json) {
  auto r = decode_assignment(json);
  REQUIRE_FALSE(r.has_value());
  return r.error().message;
}

// 2024-01-02T03:04:05.123456Z
constexpr auto example_time = std::chrono::sys_days{std::chrono::year{2024} / 1 / 2} + 3h + 4min +
                              5s + 123456us;

}  // namespace

TEST_CASE("assignment encodes exactly as Go's json.Marshal of NodeWatchList") {
  CHECK(encode_assignment({{"n1", "n3"}, {}}) == R"({"Nodes":["n1","n3"],"Probes":null})");
  CHECK(encode_assignment({}) == R"({"Nodes":null,"Probes":null})");
  CHECK(encode_assignment({{}, {"p"}}) == R"({"Nodes":null,"Probes":["p"]})");
  CHECK(encode_assignment({{"a"}, {"b", "c"}}) == R"({"Nodes":["a"],"Probes":["b","c"]})");
}

TEST_CASE("assignment strings are escaped as Go escapes them") {
  CHECK(encode_assignment({{"a\"b\\c"}, {}}) == R"({"Nodes":["a\"b\\c"],"Probes":null})");
  CHECK(encode_assignment({{"<&>"}, {}}) == R"({"Nodes":["\u003c\u0026\u003e"],"Probes":null})");
  CHECK(encode_assignment({{std::string("\n\r\t\b\f\x01\x1f", 7)}, {}}) ==
        R"({"Nodes":["\n\r\t\b\f\u0001\u001f"],"Probes":null})");
  // Valid UTF-8 stays as is, U+2028 is escaped, a stray byte becomes U+FFFD.
  CHECK(encode_assignment({{"h\xC3\xA9", "x\xE2\x80\xA8y", "bad\xFFz"}, {}}) ==
        "{\"Nodes\":[\"h\xC3\xA9\",\"x\\u2028y\",\"bad\\ufffdz\"],\"Probes\":null}");
  // Overlong and surrogate encodings are invalid in Go too.
  CHECK(encode_assignment({{"\xC0\xAF", "\xED\xA0\x80"}, {}}) ==
        R"({"Nodes":["\ufffd\ufffd","\ufffd\ufffd\ufffd"],"Probes":null})");
}

TEST_CASE("assignment decoding accepts null, missing and empty lists and ignores unknown members") {
  auto r = decode_assignment(R"({"Nodes":["n1","n3"],"Probes":null})");
  REQUIRE(r);
  CHECK(r->nodes == std::vector<std::string>{"n1", "n3"});
  CHECK(r->probes.empty());

  r = decode_assignment(R"({"Probes":["p1"]})");
  REQUIRE(r);
  CHECK(r->nodes.empty());
  CHECK(r->probes == std::vector<std::string>{"p1"});

  r = decode_assignment(R"({"Nodes":[],"Probes":[]})");
  REQUIRE(r);
  CHECK(r->empty());

  r = decode_assignment("{}");
  REQUIRE(r);
  CHECK(r->empty());

  r = decode_assignment(R"({"Extra":{"deep":[1,2,{"x":null}]},"Nodes":["a"],"Version":3})");
  REQUIRE(r);
  CHECK(r->nodes == std::vector<std::string>{"a"});

  // Deeply nested unknown members are fine, as in Go (whose limit is 10000 levels).
  r = decode_assignment("{\"Deep\":" + std::string(500, '[') + std::string(500, ']') +
                        ",\"Nodes\":[\"a\"]}");
  REQUIRE(r);
  CHECK(r->nodes == std::vector<std::string>{"a"});

  // An exact duplicate member: the later one wins, as in Go.
  r = decode_assignment(R"({"Nodes":["a"],"Probes":null,"Nodes":["b"]})");
  REQUIRE(r);
  CHECK(r->nodes == std::vector<std::string>{"b"});

  // Top-level null is an empty value for Go's decoder.
  r = decode_assignment(" null ");
  REQUIRE(r);
  CHECK(r->empty());
}

TEST_CASE("assignment decoding matches member names case-insensitively; the later one wins") {
  auto r = decode_assignment(R"({"nodes":["a"],"PROBES":["b"]})");
  REQUIRE(r);
  CHECK(r->nodes == std::vector<std::string>{"a"});
  CHECK(r->probes == std::vector<std::string>{"b"});

  r = decode_assignment(R"({"nodes":["a"],"Nodes":["b"]})");
  REQUIRE(r);
  CHECK(r->nodes == std::vector<std::string>{"b"});

  r = decode_assignment(R"({"Nodes":["a"],"nodes":null})");
  REQUIRE(r);
  CHECK(r->nodes.empty());
}

TEST_CASE("malformed assignment values are errors with a clear message") {
  CHECK(error_of("").find("not valid JSON") != std::string::npos);
  CHECK(error_of("{\"Nodes\":[\"a\"").find("not valid JSON") != std::string::npos);
  CHECK(error_of("{\"Nodes\":[\"a\"]} trailing").find("not valid JSON") != std::string::npos);
  CHECK(error_of("[\"a\"]") == "assignment value must be a JSON object, not an array");
  CHECK(error_of("\"x\"") == "assignment value must be a JSON object, not a string");
  CHECK(error_of(R"({"Nodes":"a"})") ==
        "assignment member \"Nodes\" must be an array of node names or null, not a string");
  CHECK(error_of(R"({"probes":{}})") ==
        "assignment member \"Probes\" must be an array of node names or null, not an object");
  CHECK(error_of(R"({"Nodes":["a",1]})") ==
        "assignment member \"Nodes\" element 1 must be a node name (string), not a number");
  CHECK(error_of(R"({"Probes":[null]})") ==
        "assignment member \"Probes\" element 0 must be a node name (string), not null");
  CHECK(error_of("{\"Nodes\":[\"\xFF\"]}").find("not valid JSON") != std::string::npos);
}

TEST_CASE("assignment values round-trip, including escapes") {
  std::mt19937 rng(1);
  for (int round = 0; round < 200; ++round) {
    assignment a;
    const int n = static_cast<int>(rng() % 6), p = static_cast<int>(rng() % 6);
    auto name = [&] {
      std::string s;
      const int len = 1 + static_cast<int>(rng() % 12);
      for (int i = 0; i < len; ++i) s.push_back(static_cast<char>(1 + rng() % 127));
      return s;
    };
    for (int i = 0; i < n; ++i) a.nodes.push_back(name());
    for (int i = 0; i < p; ++i) a.probes.push_back(name());
    auto back = decode_assignment(encode_assignment(a));
    REQUIRE(back);
    CHECK(*back == a);
  }
}

TEST_CASE("same_assignment compares content, not order or duplicates") {
  CHECK(same_assignment({{"a", "b"}, {"p"}}, {{"b", "a", "a"}, {"p"}}));
  CHECK_FALSE(same_assignment({{"a"}, {"p"}}, {{"a", "p"}, {}}));
  CHECK_FALSE(same_assignment({{"a"}, {}}, {{"a", "b"}, {}}));
  CHECK(same_assignment({}, {}));
}

TEST_CASE("decode_result::value() throws the message") {
  auto r = decode_assignment("[");
  CHECK_THROWS_WITH_AS(r.value(), doctest::Contains("not valid JSON"), std::runtime_error);
}

TEST_CASE("Go time: the reference example encodes and decodes") {
  CHECK(to_hex(encode_go_time(example_time)) == "010000000edd257425075bca00ffff");
  auto t = decode_go_time(from_hex("010000000edd257425075bca00ffff"));
  REQUIRE(t);
  CHECK(t->unix_seconds == 1704164645);
  CHECK(t->nanoseconds == 123456000u);
  CHECK_FALSE(t->offset_seconds.has_value());
  CHECK(t->instant() == example_time);
}

TEST_CASE("Go time: round trips around the epoch, before it, and at the range ends") {
  using ns_time = std::chrono::sys_time<std::chrono::nanoseconds>;
  std::mt19937_64 rng(9);
  std::vector<ns_time> samples{ns_time{}, ns_time{} - 1ns, ns_time{} + 1ns, example_time,
                               ns_time::min(), ns_time::max(),
                               std::chrono::sys_days{std::chrono::year{1900} / 3 / 1} + 999ms};
  for (int i = 0; i < 200; ++i)
    samples.push_back(ns_time{std::chrono::nanoseconds{static_cast<std::int64_t>(rng())}});
  for (auto s : samples) {
    const auto bytes = encode_go_time(s);
    REQUIRE(bytes.size() == 15);
    auto back = decode_go_time(bytes);
    REQUIRE(back);
    CHECK(back->instant() == s);
    CHECK(back->nanoseconds < 1'000'000'000u);
  }
  // Before 1970: seconds round down, nanoseconds stay positive, as in Go.
  auto minus_one = decode_go_time(encode_go_time(ns_time{} - 1ns));
  REQUIRE(minus_one);
  CHECK(minus_one->unix_seconds == -1);
  CHECK(minus_one->nanoseconds == 999'999'999u);
}

TEST_CASE("Go time: version 2 and zone offsets decode") {
  // Version 1 with +01:00 (60 minutes): same instant, offset kept.
  auto t = decode_go_time(from_hex("010000000edd257425075bca00003c"));
  REQUIRE(t);
  CHECK(t->instant() == example_time);
  CHECK(t->offset_seconds == 3600);
  // Version 2: +05:30:15 = 330 minutes and 15 seconds.
  t = decode_go_time(from_hex("020000000edd257425075bca00014a0f"));
  REQUIRE(t);
  CHECK(t->instant() == example_time);
  CHECK(t->offset_seconds == 330 * 60 + 15);
  // Version 2 with UTC marker and no extra seconds is UTC.
  t = decode_go_time(from_hex("020000000edd257425075bca00ffff00"));
  REQUIRE(t);
  CHECK_FALSE(t->offset_seconds.has_value());
  // A negative offset of -03:00.
  t = decode_go_time(from_hex("010000000edd257425075bca00ff4c"));
  REQUIRE(t);
  CHECK(t->offset_seconds == -180 * 60);
}

TEST_CASE("Go time: malformed values are errors") {
  auto err = [](std::string_view hex) {
    auto r = decode_go_time(from_hex(hex));
    REQUIRE_FALSE(r);
    return r.error().message;
  };
  CHECK(decode_go_time("").error().message == "Go time value is empty");
  CHECK(err("030000000edd257425075bca00ffff") ==
        "Go time value has unsupported version 3 (expected 1 or 2)");
  CHECK(err("010000000edd257425075bca00ff") ==
        "Go time value of version 1 must be 15 bytes, not 14");
  CHECK(err("010000000edd257425075bca00ffff00") ==
        "Go time value of version 1 must be 15 bytes, not 16");
  CHECK(err("020000000edd257425075bca00ffff") ==
        "Go time value of version 2 must be 16 bytes, not 15");
  CHECK(err("01" "0000000edd257425" "3b9aca00" "ffff") ==
        "Go time value has 1000000000 nanoseconds (must be below 1 000 000 000)");
  CHECK(err("01" "8000000000000000" "00000000" "ffff") == "Go time value is out of range");
}

TEST_CASE("Go time and decode errors print readably") {
  std::ostringstream os;
  os << *decode_go_time(from_hex("010000000edd257425075bca00ffff"));
  CHECK(os.str() == "2024-01-02T03:04:05.123456000Z");
  os.str("");
  os << *decode_go_time(from_hex("020000000edd257425075bca00014a0f"));
  CHECK(os.str() == "2024-01-02T03:04:05.123456000Z (zone +05:30:15)");
  os.str("");
  os << decode_go_time(encode_go_time(std::chrono::sys_days{std::chrono::year{1960} / 2 / 29}))
            .value();
  CHECK(os.str() == "1960-02-29T00:00:00.000000000Z");
  os.str("");
  os << decode_go_time("").error();
  CHECK(os.str() == "Go time value is empty");
}

TEST_CASE("Go time: instants beyond nanosecond time points saturate") {
  // Year 1 (Go's zero time) and a far-future second.
  auto zero = decode_go_time(from_hex("01" "0000000000000000" "00000000" "ffff"));
  REQUIRE(zero);
  CHECK(zero->unix_seconds == -62135596800);
  CHECK(zero->instant() == std::chrono::sys_time<std::chrono::nanoseconds>::min());
  auto far = decode_go_time(from_hex("01" "7fffffffffffffff" "00000000" "ffff"));
  REQUIRE(far);
  CHECK(far->instant() == std::chrono::sys_time<std::chrono::nanoseconds>::max());
}
