// JSON configuration files through Boost.JSON's event parser, into the same tree as HCL.
// Boost.JSON reports no positions, so the text is fed one byte at a time and each event is
// stamped with the offset of the byte that produced it (configuration files are small).
#include <boost/json/basic_parser_impl.hpp>

#include <algorithm>
#include <string>
#include <vector>

#include "esm/config/hcl.hpp"

namespace esm::config::hcl {
namespace {

namespace json = boost::json;

// Line and column of every byte offset seen so far, computed incrementally.
class position_tracker {
 public:
  explicit position_tracker(std::string_view text) : text_(text) {}

  position at(std::size_t offset) {
    while (scanned_ < offset && scanned_ < text_.size()) {
      if (text_[scanned_] == '\n') {
        ++pos_.line;
        pos_.column = 1;
      } else {
        ++pos_.column;
      }
      ++scanned_;
    }
    return pos_;
  }

 private:
  std::string_view text_;
  std::size_t scanned_ = 0;
  position pos_;
};

struct frame {
  node value;
  std::string key;  // pending key of an object member
  position key_pos;
};

class tree_builder {
 public:
  static constexpr std::size_t max_array_size = std::size_t(-1);
  static constexpr std::size_t max_object_size = std::size_t(-1);
  static constexpr std::size_t max_string_size = std::size_t(-1);
  static constexpr std::size_t max_key_size = std::size_t(-1);

  explicit tree_builder(std::string_view text) : text_(text), where_(text) {}

  void set_offset(std::size_t o) { offset_ = o; }
  node take_root() { return std::move(root_); }

  bool on_document_begin(json::error_code&) { return true; }
  bool on_document_end(json::error_code&) { return true; }

  bool on_object_begin(json::error_code&) { return open(kind::object); }
  bool on_object_end(std::size_t, json::error_code&) { return close(); }
  bool on_array_begin(json::error_code&) { return open(kind::list); }
  bool on_array_end(std::size_t, json::error_code&) { return close(); }

  bool on_key_part(json::string_view s, std::size_t, json::error_code&) {
    mark_quoted();
    part_.append(s.data(), s.size());
    return true;
  }
  bool on_key(json::string_view s, std::size_t, json::error_code&) {
    mark_quoted();
    part_.append(s.data(), s.size());
    frame& f = stack_.back();
    f.key = std::move(part_);
    f.key_pos = start_;
    reset();
    return true;
  }
  bool on_string_part(json::string_view s, std::size_t, json::error_code&) {
    mark_quoted();
    part_.append(s.data(), s.size());
    return true;
  }
  bool on_string(json::string_view s, std::size_t, json::error_code&) {
    mark_quoted();
    part_.append(s.data(), s.size());
    std::string text = std::move(part_);
    node n = scalar(kind::string);
    n.text = std::move(text);
    return add(std::move(n));
  }
  bool on_number_part(json::string_view, json::error_code&) {
    mark();
    return true;
  }
  bool on_int64(std::int64_t i, json::string_view, json::error_code&) {
    node n = scalar(kind::integer);
    n.integer = i;
    return add(std::move(n));
  }
  bool on_uint64(std::uint64_t u, json::string_view, json::error_code&) {
    // Beyond int64: no configuration key takes such a number; keep it as a float so the
    // decoder reports a type error rather than a wrapped value.
    node n = scalar(kind::floating);
    n.floating = double(u);
    return add(std::move(n));
  }
  bool on_double(double d, json::string_view, json::error_code&) {
    node n = scalar(kind::floating);
    n.floating = d;
    return add(std::move(n));
  }
  bool on_bool(bool b, json::error_code&) {
    mark_literal(b ? 4 : 5);
    node n = scalar(kind::boolean);
    n.boolean = b;
    return add(std::move(n));
  }
  bool on_null(json::error_code&) {
    mark_literal(4);
    return add(scalar(kind::null));
  }
  bool on_comment_part(json::string_view, json::error_code&) { return true; }
  bool on_comment(json::string_view, json::error_code&) { return true; }

 private:
  void mark() {
    if (!started_) {
      started_ = true;
      start_ = where_.at(offset_);
    }
  }
  // Strings are reported from their first content byte (or closing quote) on; the opening quote
  // is the nearest '"' before it, since only part of an escape sequence can lie in between.
  void mark_quoted() {
    if (started_) return;
    // The byte at offset_ is content or the closing quote, never the opening one.
    std::size_t o = std::min(offset_, text_.size());
    if (o > 0) --o;
    while (o > 0 && text_[o] != '"') --o;
    started_ = true;
    start_ = where_.at(o);
  }
  // true, false and null are reported at their last byte.
  void mark_literal(std::size_t length) {
    if (started_) return;
    started_ = true;
    start_ = where_.at(offset_ >= length - 1 ? offset_ - (length - 1) : 0);
  }
  void reset() {
    started_ = false;
    part_.clear();
  }
  node scalar(kind k) {
    mark();
    node n;
    n.kind = k;
    n.pos = start_;
    reset();
    return n;
  }
  bool open(kind k) {
    frame f;
    f.value.kind = k;
    f.value.pos = where_.at(offset_);
    stack_.push_back(std::move(f));
    return true;
  }
  bool close() {
    node n = std::move(stack_.back().value);
    stack_.pop_back();
    return add(std::move(n));
  }
  bool add(node n) {
    if (stack_.empty()) {
      root_ = std::move(n);
      return true;
    }
    frame& f = stack_.back();
    if (f.value.kind == kind::object) {
      f.value.members.push_back(member{std::move(f.key), f.key_pos, std::move(n)});
      f.key.clear();
    } else {
      f.value.elements.push_back(std::move(n));
    }
    return true;
  }

  std::string_view text_;
  position_tracker where_;
  std::size_t offset_ = 0;
  bool started_ = false;
  position start_;
  std::string part_;
  std::vector<frame> stack_;
  node root_;
};

}  // namespace

parse_result parse_json(std::string_view text) {
  json::parse_options opts;
  opts.max_depth = max_depth;
  json::basic_parser<tree_builder> p(opts, text);
  position_tracker where(text);
  json::error_code ec;
  std::size_t fail_at = text.size();  // an error at the final flush is at the end
  for (std::size_t i = 0; i < text.size(); ++i) {
    p.handler().set_offset(i);
    p.write_some(true, text.data() + i, 1, ec);
    if (ec) {
      fail_at = i;
      break;
    }
  }
  if (!ec) {
    p.handler().set_offset(text.size());
    p.write_some(false, nullptr, 0, ec);
  }
  parse_result r;
  if (ec) {
    r.error = parse_error{where.at(fail_at), "invalid JSON: " + ec.message()};
    return r;
  }
  r.root = p.handler().take_root();
  if (r.root.kind != kind::object) {
    r.error = parse_error{r.root.pos, "the top level must be an object"};
    r.root = node{};
  }
  return r;
}

}  // namespace esm::config::hcl
