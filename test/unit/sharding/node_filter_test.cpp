// The node-name filter expression the worker sends to Consul.
#include <doctest/doctest.h>

#include "esm/sharding/worker.hpp"

using esm::sharding::node_name_filter;

TEST_CASE("node name filter: RE2 escapes doubled for go-bexpr, anchored alternation") {
  CHECK(node_name_filter({"n1"}) == R"(Node matches "^(n1)$")");
  CHECK(node_name_filter({"a", "b-c", "d_e"}) == R"(Node matches "^(a|b-c|d_e)$")");
  // Punctuation is a literal in RE2 once escaped; bexpr turns `\\` into `\`.
  CHECK(node_name_filter({"a.b"}) == R"(Node matches "^(a\\.b)$")");
  CHECK(node_name_filter({"x(1)|y*"}) == R"(Node matches "^(x\\(1\\)\\|y\\*)$")");
  // bexpr has no escape for '"': RE2's \x22 stands for it.
  CHECK(node_name_filter({"q\"x"}) == R"(Node matches "^(q\\x22x)$")");
  CHECK(node_name_filter({"b\\s"}) == R"(Node matches "^(b\\\\s)$")");
  // UTF-8 bytes are not punctuation: they stand for themselves.
  CHECK(node_name_filter({"n\xc3\xa9"}) == "Node matches \"^(n\xc3\xa9)$\"");
  // No names: matches only the empty name, which no node has.
  CHECK(node_name_filter({}) == R"(Node matches "^()$")");
}
