// A small syntax tree for configuration files and the parsers that build it: HCL v1 (the
// dialect consul-esm reads through hashicorp/hcl v1, written by hand because no C++ library
// exists) and JSON (through Boost.JSON). Every node keeps its line and column so that the
// decoder can name the place of a wrong value. The parsers never throw on bad input, never
// recurse deeper than max_depth and read nothing outside the given text.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace esm::config::hcl {

// 1-based; column counts bytes.
struct position {
  int line = 1;
  int column = 1;
};

enum class kind { null, string, integer, floating, boolean, list, object };

std::string_view kind_name(kind k);  // "a string", "an integer", ... for messages

struct member;

struct node {
  hcl::kind kind = kind::null;
  position pos;
  std::string text;             // string
  std::int64_t integer = 0;     // integer
  double floating = 0;          // floating
  bool boolean = false;         // boolean
  std::vector<node> elements;   // list
  // object: in source order, a repeated key appears once per occurrence, so the decoder can
  // tell `telemetry {}` written twice from one block.
  std::vector<member> members;
};

struct member {
  std::string key;
  position key_pos;
  node value;
};

struct parse_error {
  position pos;
  std::string message;
};

struct parse_result {
  node root;  // an object when there is no error
  std::optional<parse_error> error;
};

// Deeper nesting of objects and lists is rejected: keeps recursion bounded on hostile input.
inline constexpr int max_depth = 64;

// Like hashicorp/hcl v1's Parse: JSON when the first non-space character is '{', HCL otherwise.
// The choice is by content, not by file name, as in consul-esm.
parse_result parse(std::string_view text);
parse_result parse_hcl(std::string_view text);
parse_result parse_json(std::string_view text);

}  // namespace esm::config::hcl
