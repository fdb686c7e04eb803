#include <doctest/doctest.h>

#include "esm/util/duration.hpp"

using namespace std::chrono_literals;
using esm::util::format_go_duration;
using esm::util::parse_go_duration;

TEST_CASE("Go durations parse as time.ParseDuration does") {
  CHECK(parse_go_duration("0") == 0ns);
  CHECK(parse_go_duration("300ms") == 300ms);
  CHECK(parse_go_duration("1h2m3.5s") == 1h + 2min + 3500ms);
  CHECK(parse_go_duration("1.5h") == 90min);
  CHECK(parse_go_duration("2h45m") == 2h + 45min);
  CHECK(parse_go_duration("1us") == 1us);
  CHECK(parse_go_duration("1\xC2\xB5s") == 1us);
  CHECK(parse_go_duration("1\xCE\xBCs") == 1us);
  CHECK(parse_go_duration("100ns") == 100ns);
  CHECK(parse_go_duration("-1.5s") == -1500ms);
  CHECK(parse_go_duration("+5s") == 5s);
  CHECK(parse_go_duration(".5s") == 500ms);
  CHECK(parse_go_duration("5.s") == 5s);
  CHECK(parse_go_duration("72h") == 72h);
}

TEST_CASE("invalid Go durations are rejected with Go's message") {
  std::string err;
  CHECK_FALSE(parse_go_duration("", &err));
  CHECK(err == "time: invalid duration \"\"");
  CHECK_FALSE(parse_go_duration("10", &err));
  CHECK(err == "time: missing unit in duration \"10\"");
  CHECK_FALSE(parse_go_duration("1d", &err));
  CHECK(err == "time: unknown unit \"d\" in duration \"1d\"");
  CHECK_FALSE(parse_go_duration("abc", &err));
  CHECK(err == "time: invalid duration \"abc\"");
  CHECK_FALSE(parse_go_duration(".s", &err));
  CHECK_FALSE(parse_go_duration("-", &err));
  CHECK_FALSE(parse_go_duration("9999999999999999999h", &err));
  CHECK_FALSE(parse_go_duration("3000000h", &err));  // beyond int64 nanoseconds
}

TEST_CASE("Go durations format as Duration.String does") {
  CHECK(format_go_duration(0ns) == "0s");
  CHECK(format_go_duration(1ns) == "1ns");
  CHECK(format_go_duration(1500ns) == "1.5\xC2\xB5s");
  CHECK(format_go_duration(300ms) == "300ms");
  CHECK(format_go_duration(1500us) == "1.5ms");
  CHECK(format_go_duration(45s) == "45s");
  CHECK(format_go_duration(1min) == "1m0s");
  CHECK(format_go_duration(30min) == "30m0s");
  CHECK(format_go_duration(72h) == "72h0m0s");
  CHECK(format_go_duration(1h + 2min + 3500ms) == "1h2m3.5s");
  CHECK(format_go_duration(-1500ms) == "-1.5s");
}

TEST_CASE("Go durations round-trip") {
  for (std::chrono::nanoseconds d : {1ns, 999ns, 1000ns, 1234567ns, 999999999ns, 1000000001ns, 3723500000000ns,
                 259200000000000ns, -42000000ns}) {
    auto text = format_go_duration(d);
    CAPTURE(text);
    CHECK(parse_go_duration(text) == d);
  }
}
