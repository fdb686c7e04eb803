#include <doctest/doctest.h>

#include <limits>

#include "esm/log/format.hpp"
#include "support.hpp"

using namespace esm::log;
using namespace esm::log::test;

namespace {

std::string text_time(std::chrono::system_clock::time_point t) {
  std::string s;
  detail::append_text_time(s, t);
  return s;
}

std::string json_time(std::chrono::system_clock::time_point t) {
  std::string s;
  detail::append_json_time(s, t);
  return s;
}

std::string value(std::string_view v) {
  std::string s;
  detail::append_text_value(s, v);
  return s;
}

std::string text(level l, std::string_view msg, std::initializer_list<field> f,
                 bool header = true) {
  std::string s;
  detail::append_text(s, {l, fixed_time(), "esmd", msg, {f.begin(), f.size()}}, header);
  return s;
}

std::string json(level l, std::string_view msg, std::initializer_list<field> f) {
  std::string s;
  detail::append_json(s, {l, fixed_time(), "esmd", msg, {f.begin(), f.size()}});
  return s;
}

}  // namespace

TEST_CASE("timestamps use hclog's layouts in local time, truncated") {
  {
    time_zone tz("UTC0");
    CHECK(text_time(fixed_time()) == "2026-11-26T10:20:30.123Z");
    CHECK(json_time(fixed_time()) == "2026-11-26T10:20:30.123456Z");
  }
  {
    time_zone tz("CET-1");
    CHECK(text_time(fixed_time()) == "2026-11-26T11:20:30.123+0100");
    CHECK(json_time(fixed_time()) == "2026-11-26T11:20:30.123456+01:00");
  }
  {
    time_zone tz("XST+5:30");
    CHECK(text_time(fixed_time()) == "2026-11-26T04:50:30.123-0530");
    CHECK(json_time(fixed_time()) == "2026-11-26T04:50:30.123456-05:30");
  }
  {
    time_zone tz("UTC0");
    using namespace std::chrono;
    CHECK(text_time(sys_days{year{2027} / 1 / 2} + 3h + 4min + 5s + 999999ns) ==
          "2027-01-02T03:04:05.000Z");
  }
}

TEST_CASE("level brackets are padded to seven characters") {
  CHECK(detail::level_bracket(level::info) == "[INFO] ");
  CHECK(detail::level_bracket(level::warn) == "[WARN] ");
  CHECK(detail::level_bracket(level::debug) == "[DEBUG]");
  CHECK(detail::level_bracket(level::trace) == "[TRACE]");
  CHECK(detail::level_bracket(level::error) == "[ERROR]");
  CHECK(detail::json_level_name(level::warn) == "warn");
  CHECK(detail::json_level_name(level::error) == "error");
}

TEST_CASE("text lines look like hclog's") {
  time_zone tz("UTC0");
  CHECK(text(level::info, "Connecting to Consul", {{"address", "127.0.0.1:8500"}}) ==
        "2026-11-26T10:20:30.123Z [INFO]  esmd: Connecting to Consul: address=127.0.0.1:8500\n");
  CHECK(text(level::error, "plain", {}) == "2026-11-26T10:20:30.123Z [ERROR] esmd: plain\n");
  CHECK(text(level::debug, "m", {{"a", 1}, {"b", true}, {"c", "x y"}, {"d", ""}}) ==
        "2026-11-26T10:20:30.123Z [DEBUG] esmd: m: a=1 b=true c=\"x y\" d=\"\"\n");
  CHECK(text(level::warn, "m", {{"k", "v"}}, false) == "m: k=v\n");
}

TEST_CASE("field values are quoted by hclog's rules") {
  CHECK(value("simple") == "simple");
  CHECK(value("-./09:;<=>?@AZ[\\]^_`az{|}~") == "-./09:;<=>?@AZ[\\]^_`az{|}~");
  CHECK(value("") == "\"\"");
  CHECK(value("with space") == "\"with space\"");
  CHECK(value("a,b") == "\"a,b\"");  // ',' is below '-'
  CHECK(value("1e+06") == "\"1e+06\"");
  CHECK(value("say \"hi\"") == "\"say \\\"hi\\\"\"");
  CHECK(value("tab\there") == "\"tab\\there\"");
  CHECK(value("two\nlines") == "\"two\\nlines\"");
  CHECK(value("bell\x07") == "\"bell\\a\"");
  CHECK(value("esc\x1b[0m") == "\"esc\\x1b[0m\"");
  CHECK(value("del\x7f") == "\"del\\u007f\"");
  CHECK(value("caf\xc3\xa9") == "\"caf\xc3\xa9\"");        // printable, kept as is
  CHECK(value("nb\xc2\xa0sp") == "\"nb\\u00a0sp\"");       // U+00A0 is not printable in Go
  CHECK(value("bad\xff") == "\"bad\xef\xbf\xbd\"");        // invalid byte -> U+FFFD
  CHECK(value("a\\b") == "a\\b");                          // hclog leaves backslashes alone
}

TEST_CASE("go_quote matches strconv.Quote") {
  CHECK(detail::go_quote("") == "\"\"");
  CHECK(detail::go_quote("dc1") == "\"dc1\"");
  CHECK(detail::go_quote("a\"b\\c") == "\"a\\\"b\\\\c\"");
  CHECK(detail::go_quote("\n\t\x01") == "\"\\n\\t\\x01\"");
  CHECK(detail::go_quote("\xff") == "\"\\xff\"");
  CHECK(detail::go_quote("\x7f") == "\"\\x7f\"");
  CHECK(detail::go_quote("\xe2\x80\xa8") == "\"\\u2028\"");
  CHECK(detail::go_quote("\xc3\xa9") == "\"\xc3\xa9\"");
}

TEST_CASE("floats print like Go") {
  CHECK(detail::go_float_text(1.5) == "1.5");
  CHECK(detail::go_float_text(123456) == "123456");
  CHECK(detail::go_float_text(1e6) == "1e+06");
  CHECK(detail::go_float_text(0.0001) == "0.0001");
  CHECK(detail::go_float_text(0.00001) == "1e-05");
  CHECK(detail::go_float_text(0) == "0");
  CHECK(detail::go_float_text(std::numeric_limits<double>::infinity()) == "+Inf");
  CHECK(detail::go_float_json(1e6) == "1000000");
  CHECK(detail::go_float_json(1e21) == "1e+21");
  CHECK(detail::go_float_json(1e-7) == "1e-7");
  CHECK(detail::go_float_json(0.25) == "0.25");
  CHECK(detail::go_float_json(std::numeric_limits<double>::quiet_NaN()) == "\"NaN\"");
}

TEST_CASE("JSON lines have hclog's members in Go's key order") {
  time_zone tz("UTC0");
  CHECK(json(level::info, "hello", {{"node", "n1"}, {"count", 3}, {"ok", false}, {"rtt", 0.5}}) ==
        "{\"@level\":\"info\",\"@message\":\"hello\",\"@module\":\"esmd\","
        "\"@timestamp\":\"2026-11-26T10:20:30.123456Z\",\"count\":3,\"node\":\"n1\","
        "\"ok\":false,\"rtt\":0.5}\n");
  // Escaping is JSON's, and invalid UTF-8 cannot break the line.
  CHECK(json(level::warn, "q\"\n", {{"bad", "\xff"}}) ==
        "{\"@level\":\"warn\",\"@message\":\"q\\\"\\n\",\"@module\":\"esmd\","
        "\"@timestamp\":\"2026-11-26T10:20:30.123456Z\",\"bad\":\"\xef\xbf\xbd\"}\n");
}

TEST_CASE("go_is_print") {
  CHECK(detail::go_is_print(' '));
  CHECK(detail::go_is_print(U'é'));
  CHECK(detail::go_is_print(U'\u4e16'));
  CHECK_FALSE(detail::go_is_print(U'\t'));
  CHECK_FALSE(detail::go_is_print(0x85));
  CHECK_FALSE(detail::go_is_print(0x200b));
  CHECK_FALSE(detail::go_is_print(0xfeff));
}
