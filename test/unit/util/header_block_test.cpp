#include <doctest/doctest.h>

#include <map>
#include <string>
#include <vector>

#include "esm/util/header_block.hpp"

using esm::util::header_block;

namespace {

// What the block holds, as the std::map it replaces would hold it.
std::map<std::string, std::vector<std::string>> as_map(const header_block& b) {
  std::map<std::string, std::vector<std::string>> m;
  for (auto e : b) m.emplace(std::string(e.name), e.values.to_vector());
  return m;
}

}  // namespace

TEST_CASE("header_block holds names in byte order, each with its values in order") {
  header_block b{{"X-b", {"2", "1"}}, {"Accept", {"application/json"}}, {"X-a", {}},
                 {"", {"empty name"}}, {"x-a", {"lower", "", "third"}}};
  CHECK_FALSE(b.empty());
  CHECK(b.size() == 5);
  std::vector<std::string> names;
  for (auto e : b) names.emplace_back(e.name);
  CHECK(names == std::vector<std::string>{"", "Accept", "X-a", "X-b", "x-a"});
  CHECK(b.values("X-b") == std::vector<std::string>{"2", "1"});
  CHECK(b.values("x-a") == std::vector<std::string>{"lower", "", "third"});
  CHECK(b.values("X-a").empty());
  CHECK(b.contains("X-a"));       // a name without values is kept
  CHECK_FALSE(b.contains("x-b"));  // names compare exactly, as map keys
  CHECK(b.values("missing").empty());
  CHECK(as_map(b) == std::map<std::string, std::vector<std::string>>{
                         {"", {"empty name"}}, {"Accept", {"application/json"}}, {"X-a", {}},
                         {"X-b", {"2", "1"}}, {"x-a", {"lower", "", "third"}}});
}

TEST_CASE("header_block: a later duplicate name replaces the earlier one") {
  header_block b{{"A", {"first"}}, {"B", {"b"}}, {"A", {"second", "third"}}};
  CHECK(b.size() == 2);
  CHECK(b.values("A") == std::vector<std::string>{"second", "third"});
  CHECK(b.values("B") == std::vector<std::string>{"b"});
}

TEST_CASE("header_block compares by content, whatever order it was built in") {
  header_block a{{"A", {"1"}}, {"B", {"2", "3"}}};
  header_block b{{"B", {"2", "3"}}, {"A", {"1"}}};
  CHECK(a == b);
  CHECK_FALSE(a == header_block{{"A", {"1"}}, {"B", {"3", "2"}}});  // value order matters
  CHECK_FALSE(a == header_block{{"A", {"1"}}, {"B", {"2", "3"}}, {"C", {}}});
  CHECK_FALSE(a == header_block{{"A", {"1"}}, {"B", {"23"}}});  // sizes are part of the bytes
  CHECK(header_block{} == header_block{});
  CHECK_FALSE(a == header_block{});
  CHECK(header_block(std::vector<std::pair<std::string_view, std::vector<std::string_view>>>{}).empty());
}

TEST_CASE("header_block copies and moves") {
  std::string long_value(300, 'v');
  header_block a{{"Authorization", {long_value}}, {"X", {"1", "2"}}};
  header_block c = a;
  CHECK(c == a);
  header_block m = std::move(c);
  CHECK(m == a);
  CHECK(c.empty());  // NOLINT: moved-from is empty, as documented by the move constructor
  header_block d;
  d = a;
  CHECK(d.values("Authorization") == std::vector<std::string>{long_value});
  d = header_block{};
  CHECK(d.empty());
  CHECK(d.begin() == d.end());
  const header_block& same = a;
  a = same;  // self-assignment keeps the content
  CHECK(a.values("X") == std::vector<std::string>{"1", "2"});
}
