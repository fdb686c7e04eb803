#include <doctest/doctest.h>

#include <string>

#include "esm/config/hcl.hpp"

using namespace esm::config::hcl;

namespace {

node ok(std::string_view text) {
  auto r = parse(text);
  INFO("text: " << text);
  if (r.error) INFO("error: " << r.error->pos.line << ":" << r.error->pos.column << " " << r.error->message);
  REQUIRE_FALSE(r.error);
  REQUIRE(r.root.kind == kind::object);
  return r.root;
}

parse_error bad(std::string_view text) {
  auto r = parse(text);
  INFO("text: " << text);
  REQUIRE(r.error);
  return *r.error;
}

const node& only(const node& obj, std::string_view key) {
  REQUIRE(obj.members.size() == 1);
  REQUIRE(obj.members[0].key == key);
  return obj.members[0].value;
}

}  // namespace

TEST_CASE("hcl: key = value with every literal type") {
  auto root = ok("s = \"text\"\ni = 42\nn = -7\nf = 1.5\ne = 1e3\nb = true\nc = false\nh = 0x1F\no = 017\n");
  REQUIRE(root.members.size() == 9);
  CHECK(root.members[0].value.kind == kind::string);
  CHECK(root.members[0].value.text == "text");
  CHECK(root.members[1].value.kind == kind::integer);
  CHECK(root.members[1].value.integer == 42);
  CHECK(root.members[2].value.integer == -7);
  CHECK(root.members[3].value.kind == kind::floating);
  CHECK(root.members[3].value.floating == 1.5);
  CHECK(root.members[4].value.kind == kind::floating);
  CHECK(root.members[4].value.floating == 1000.0);
  CHECK(root.members[5].value.kind == kind::boolean);
  CHECK(root.members[5].value.boolean);
  CHECK_FALSE(root.members[6].value.boolean);
  CHECK(root.members[7].value.integer == 31);
  CHECK(root.members[8].value.integer == 15);  // octal, as Go's ParseInt(v, 0, 0)
}

TEST_CASE("hcl: quoted keys, keys with dashes and dots, several items on one line") {
  auto root = ok("\"quoted key\" = 1 a-b.c = 2, d = 3");
  REQUIRE(root.members.size() == 3);
  CHECK(root.members[0].key == "quoted key");
  CHECK(root.members[1].key == "a-b.c");
  CHECK(root.members[2].key == "d");
}

TEST_CASE("hcl: string escapes") {
  auto v = only(ok(R"(k = "a\"b\\c\nd\te\u00e9\U0001F600\x41\101\r\a\b\f\v")"), "k");
  CHECK(v.text == "a\"b\\c\nd\te\xC3\xA9\xF0\x9F\x98\x80"
                  "AA\r\a\b\f\v");
}

TEST_CASE("hcl: interpolation text is kept verbatim, quotes inside it do not end the string") {
  auto v = only(ok(R"(k = "x${lookup("a", "b")}y")"), "k");
  CHECK(v.text == R"(x${lookup("a", "b")}y)");
}

TEST_CASE("hcl: bad escapes and unterminated strings are errors with positions") {
  auto e = bad("a = 1\nk = \"abc\\q\"");
  CHECK(e.pos.line == 2);
  CHECK(e.pos.column == 9);
  CHECK(e.message.find("unknown escape") != std::string::npos);
  e = bad("k = \"abc\n\"");
  CHECK(e.pos.line == 1);
  CHECK(e.pos.column == 5);
  CHECK(e.message == "string not terminated");
  CHECK(bad(R"(k = "\u12")").message.find("\\u") != std::string::npos);
  CHECK(bad(R"(k = "\ud800")").message.find("Unicode") != std::string::npos);
  CHECK(bad(R"(k = "\777")").message.find("octal") != std::string::npos);
  CHECK(bad("k = \"abc\\").message == "string not terminated");
}

TEST_CASE("hcl: comments of all three kinds") {
  auto root = ok(R"(# hash comment
// slash comment
a = 1 # trailing
/* block
   comment */ b = /* inline */ 2
)");
  REQUIRE(root.members.size() == 2);
  CHECK(root.members[1].value.integer == 2);
  auto e = bad("a = 1\n/* never closed");
  CHECK(e.message == "comment not terminated");
  CHECK(e.pos.line == 2);
  CHECK(e.pos.column == 1);
}

TEST_CASE("hcl: heredocs") {
  auto v = only(ok("k = <<EOF\nline one\n  line two\nEOF\n"), "k");
  CHECK(v.kind == kind::string);
  CHECK(v.text == "line one\n  line two\n");
  // Indented form: the terminator's indentation is removed from every line.
  v = only(ok("k = <<-EOT\n    a\n      b\n    EOT\n"), "k");
  CHECK(v.text == "a\n  b\n");
  // ... unless a line is less indented: then the text stays as written.
  v = only(ok("k = <<-EOT\n    a\n  b\n    EOT\n"), "k");
  CHECK(v.text == "    a\n  b\n");
  // Terminator at end of file without a newline, CRLF line ends, empty heredoc.
  CHECK(only(ok("k = <<EOF\nx\nEOF"), "k").text == "x\n");
  CHECK(only(ok("k = <<EOF\r\nx\r\nEOF\r\n"), "k").text == "x\r\n");
  CHECK(only(ok("k = <<EOF\nEOF\n"), "k").text.empty());
  // Text that only starts like the anchor does not end the heredoc.
  CHECK(only(ok("k = <<EOF\nEOFX\nEOF\n"), "k").text == "EOFX\n");
}

TEST_CASE("hcl: heredoc errors") {
  CHECK(bad("k = <<EOF\nno end\n").message.find("heredoc not terminated") != std::string::npos);
  CHECK(bad("k = <<EOF extra\nx\nEOF\n").message.find("heredoc anchor") != std::string::npos);
  CHECK(bad("k = <<\nx\n").message.find("anchor is empty") != std::string::npos);
  CHECK(bad("k = <<EOF").message.find("not terminated") != std::string::npos);
}

TEST_CASE("hcl: lists, nested lists, lists of objects, trailing commas") {
  auto v = only(ok("k = [\"a\", \"b\",\n # comment\n \"c\",]"), "k");
  REQUIRE(v.kind == kind::list);
  REQUIRE(v.elements.size() == 3);
  CHECK(v.elements[2].text == "c");
  v = only(ok("k = [[1, 2], [], {a = 1}]"), "k");
  REQUIRE(v.elements.size() == 3);
  CHECK(v.elements[0].elements.size() == 2);
  CHECK(v.elements[1].elements.empty());
  CHECK(v.elements[2].kind == kind::object);
  CHECK(only(ok("k = []"), "k").elements.empty());
  CHECK(bad("k = [1 2]").message.find("expected ',' or ']'") != std::string::npos);
  CHECK(bad("k = [1,").message.find("end of file") != std::string::npos);
}

TEST_CASE("hcl: blocks with and without '=', with labels, nested") {
  auto root = ok(R"(
telemetry {
  statsd_address = "a:1"
  inner { x = 1 }
}
meta = { a = "1", b = "2" }
service "web" "v1" { port = 80 }
)");
  REQUIRE(root.members.size() == 3);
  const auto& t = root.members[0].value;
  CHECK(t.kind == kind::object);
  CHECK(t.pos.line == 2);
  CHECK(t.pos.column == 11);
  REQUIRE(t.members.size() == 2);
  CHECK(t.members[1].value.members[0].key == "x");
  CHECK(root.members[1].value.members.size() == 2);
  // `service "web" "v1" { }` is service = { web = { v1 = { } } }, as HCL v1 decodes it.
  const auto& s = root.members[2];
  CHECK(s.key == "service");
  REQUIRE(s.value.members.size() == 1);
  CHECK(s.value.members[0].key == "web");
  CHECK(s.value.members[0].value.members[0].key == "v1");
  CHECK(s.value.members[0].value.members[0].value.members[0].value.integer == 80);
}

TEST_CASE("hcl: a repeated key or block is kept once per occurrence") {
  auto root = ok("telemetry { a = 1 }\ntelemetry { b = 2 }\nx = 1\nx = 2");
  REQUIRE(root.members.size() == 4);
  CHECK(root.members[0].key == "telemetry");
  CHECK(root.members[1].key == "telemetry");
  CHECK(root.members[1].key_pos.line == 2);
}

TEST_CASE("hcl: syntax errors name line and column") {
  auto e = bad("a = 1\nb = \n");
  CHECK(e.pos.line == 3);
  CHECK(e.message.find("expected a value") != std::string::npos);
  e = bad("a = 1\n  b c = 2");
  CHECK(e.pos.line == 2);
  CHECK(e.pos.column == 7);
  CHECK(e.message.find("'{' is expected") != std::string::npos);
  e = bad("key");
  CHECK(e.message.find("expected '=' or '{'") != std::string::npos);
  e = bad("token = s3cr3t");
  CHECK(e.pos.column == 9);
  CHECK(e.message.find("must be quoted") != std::string::npos);
  CHECK(e.message.find("s3cr3t") == std::string::npos);  // never echo what may be a secret
  e = bad("a = 10s");
  CHECK(e.message.find("duration must be a quoted string") != std::string::npos);
  e = bad("a { b = 1");
  CHECK(e.message.find("expected '}'") != std::string::npos);
  e = bad("}");
  CHECK(e.message.find("expected a key") != std::string::npos);
  e = bad("a = 1\n\t@");
  CHECK(e.pos.line == 2);
  CHECK(e.pos.column == 2);
  CHECK(e.message.find("unexpected character '@'") != std::string::npos);
  CHECK(bad("a = 99999999999999999999").message == "integer out of range");
  CHECK(bad("a = 09").message.find("invalid number") != std::string::npos);
  CHECK(bad("a = 1.").message.find("after '.'") != std::string::npos);
  CHECK(bad("a = 0x").message.find("hexadecimal") != std::string::npos);
  CHECK(bad("a = \"x\" = 1").message.find("expected") != std::string::npos);
}

TEST_CASE("hcl: integer limits") {
  CHECK(only(ok("a = 9223372036854775807"), "a").integer == INT64_MAX);
  CHECK(only(ok("a = -9223372036854775808"), "a").integer == INT64_MIN);
  CHECK(bad("a = 9223372036854775808").message == "integer out of range");
}

TEST_CASE("hcl: nesting depth is capped instead of recursing without bound") {
  std::string deep = "a = ";
  for (int i = 0; i < 10000; ++i) deep += "[";
  CHECK(bad(deep).message.find("nesting deeper") != std::string::npos);
  std::string blocks;
  for (int i = 0; i < 10000; ++i) blocks += "a {";
  CHECK(bad(blocks).message.find("nesting deeper") != std::string::npos);
  std::string labels = "a";
  for (int i = 0; i < 10000; ++i) labels += " \"l\"";
  labels += " {}";
  CHECK(bad(labels).message.find("nesting deeper") != std::string::npos);
  // Exactly at the limit is fine.
  std::string at_limit = "a = ";
  for (int i = 0; i < max_depth; ++i) at_limit += "[";
  for (int i = 0; i < max_depth; ++i) at_limit += "]";
  ok(at_limit);
}

TEST_CASE("hcl: empty input, whitespace and comments only, byte order mark") {
  CHECK(ok("").members.empty());
  CHECK(ok("  \n\t# nothing\n").members.empty());
  CHECK(ok("\xEF\xBB\xBF" "a = 1").members.size() == 1);
}

TEST_CASE("json: chosen by content and parsed into the same tree with positions") {
  std::string text = R"(  {
  "log_level": "DEBUG",
  "n": 3, "f": 2.5, "b": true, "z": null,
  "telemetry": {"dogstatsd_tags": ["a", "b"]}
})";
  auto root = ok(text);
  REQUIRE(root.members.size() == 6);
  CHECK(root.members[0].key == "log_level");
  CHECK(root.members[0].key_pos.line == 2);
  CHECK(root.members[0].key_pos.column == 3);  // the opening quote
  CHECK(root.members[0].value.text == "DEBUG");
  CHECK(root.members[0].value.pos.line == 2);
  CHECK(root.members[0].value.pos.column == 16);
  CHECK(root.members[1].value.kind == kind::integer);
  CHECK(root.members[1].value.pos.column == 8);
  CHECK(root.members[2].value.kind == kind::floating);
  CHECK(root.members[3].value.kind == kind::boolean);
  CHECK(root.members[3].value.pos.column == 26);
  CHECK(root.members[4].value.kind == kind::null);
  CHECK(root.members[4].value.pos.column == 37);
  const auto& t = root.members[5].value;
  CHECK(t.kind == kind::object);
  CHECK(t.pos.line == 4);
  CHECK(t.pos.column == 16);
  CHECK(t.members[0].value.elements.size() == 2);
}

TEST_CASE("json: positions of strings with escapes and of false") {
  auto root = ok("{\"k\": \"\\u00e9x\", \"b\": false, \"e\": \"\"}");
  REQUIRE(root.members.size() == 3);
  CHECK(root.members[0].value.text == "\xC3\xA9x");
  CHECK(root.members[0].value.pos.column == 7);
  CHECK(root.members[1].value.pos.column == 23);
  CHECK(root.members[2].value.text.empty());
  CHECK(root.members[2].value.pos.column == 35);
}

TEST_CASE("json: duplicate keys are kept, errors carry positions, depth is capped") {
  auto root = ok(R"({"telemetry": {}, "telemetry": {}})");
  CHECK(root.members.size() == 2);
  auto e = bad("{\n  \"a\": 1,\n  \"b\": tru\n}");
  CHECK(e.pos.line == 3);
  CHECK(e.message.find("invalid JSON") != std::string::npos);
  e = bad("{config}");  // consul-esm's "hcl parsing error" case
  CHECK(e.pos.line == 1);
  CHECK(e.pos.column == 2);
  CHECK(bad("{\"a\": 1").message.find("invalid JSON") != std::string::npos);
  std::string deep = "{\"a\":";
  for (int i = 0; i < 1000; ++i) deep += "[";
  CHECK(bad(deep).message.find("invalid JSON") != std::string::npos);
  CHECK(parse_json("[1]").error->message == "the top level must be an object");
  CHECK(parse_json("").error);
}

TEST_CASE("hcl: a text that starts with something other than '{' is HCL even if it looks like JSON") {
  auto e = bad("[1]");
  CHECK(e.message.find("expected a key") != std::string::npos);
}
