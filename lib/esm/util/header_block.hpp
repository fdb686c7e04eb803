// A check Definition's Header (Go's map[string][]string) in one allocation. Held for every
// HTTP check with headers, in the catalog object the worker and the engine share, and copied
// into each run's probe spec: as a std::map of vectors of strings three headers cost about
// 510 bytes in eight allocations; here they cost their bytes plus 4 per string, in one.
//
// The names are kept in byte order, each once, with its values in their order (what a
// std::map<std::string, std::vector<std::string>> holds); a name may have no values. Two
// blocks are equal when they hold the same names and values. Immutable once built: assign a
// new block to change one.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <iterator>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace esm::util {

class header_block {
  // Layout: [u32 bytes after this word][u32 names], then per name:
  // [u32 name size][name][u32 values], then per value: [u32 size][value].
  static std::uint32_t word(const char* p) noexcept {
    std::uint32_t n;
    std::memcpy(&n, p, sizeof n);
    return n;
  }

 public:
  // The values of one name, as string_views into the block.
  class values_view {
   public:
    class iterator {
     public:
      using iterator_category = std::forward_iterator_tag;
      using value_type = std::string_view;
      using difference_type = std::ptrdiff_t;
      using pointer = void;
      using reference = std::string_view;
      iterator() = default;
      std::string_view operator*() const noexcept { return {p_ + 4, word(p_)}; }
      iterator& operator++() noexcept {
        p_ += 4 + word(p_);
        return *this;
      }
      iterator operator++(int) noexcept {
        auto t = *this;
        ++*this;
        return t;
      }
      bool operator==(const iterator&) const = default;

     private:
      friend class values_view;
      explicit iterator(const char* p) noexcept : p_(p) {}
      const char* p_ = nullptr;
    };
    iterator begin() const noexcept { return iterator(first_); }
    iterator end() const noexcept { return iterator(end_); }
    std::size_t size() const noexcept { return count_; }
    bool empty() const noexcept { return count_ == 0; }
    std::vector<std::string> to_vector() const { return {begin(), end()}; }

   private:
    friend class header_block;
    values_view(const char* first, const char* end, std::size_t count) noexcept
        : first_(first), end_(end), count_(count) {}
    const char* first_;
    const char* end_;
    std::size_t count_;
  };

  struct entry {
    std::string_view name;
    values_view values;
  };

  class iterator {
   public:
    using iterator_category = std::forward_iterator_tag;
    using value_type = entry;
    using difference_type = std::ptrdiff_t;
    using pointer = void;
    using reference = entry;
    iterator() = default;
    entry operator*() const noexcept;
    iterator& operator++() noexcept {
      p_ = (**this).values.end_;
      return *this;
    }
    iterator operator++(int) noexcept {
      auto t = *this;
      ++*this;
      return t;
    }
    bool operator==(const iterator&) const = default;

   private:
    friend class header_block;
    explicit iterator(const char* p) noexcept : p_(p) {}
    const char* p_ = nullptr;
  };

  header_block() noexcept = default;
  // {{"X-A", {"1", "2"}}, {"Accept", {"text/plain"}}}: a later duplicate name replaces the
  // earlier one, as assigning into a map does.
  header_block(std::initializer_list<std::pair<std::string_view, std::initializer_list<std::string_view>>> l);
  // From (name, values) pairs in any order; a later duplicate name replaces the earlier one.
  explicit header_block(std::vector<std::pair<std::string_view, std::vector<std::string_view>>> entries);
  header_block(const header_block& o);
  header_block(header_block&& o) noexcept : p_(std::exchange(o.p_, nullptr)) {}
  header_block& operator=(const header_block& o) {
    if (this != &o) *this = header_block(o);
    return *this;
  }
  header_block& operator=(header_block&& o) noexcept {  // the source is left empty
    if (this != &o) {
      delete[] p_;
      p_ = std::exchange(o.p_, nullptr);
    }
    return *this;
  }
  ~header_block() { delete[] p_; }

  bool empty() const noexcept { return p_ == nullptr; }
  std::size_t size() const noexcept { return p_ ? word(p_ + 4) : 0; }  // names
  iterator begin() const noexcept { return iterator(p_ ? p_ + 8 : nullptr); }
  iterator end() const noexcept { return iterator(p_ ? p_ + 4 + word(p_) : nullptr); }
  // The values of `name` (exact match), empty when it is absent.
  std::vector<std::string> values(std::string_view name) const;
  bool contains(std::string_view name) const;

  friend bool operator==(const header_block& a, const header_block& b) noexcept {
    std::size_t na = a.p_ ? 4 + word(a.p_) : 0, nb = b.p_ ? 4 + word(b.p_) : 0;
    return na == nb && (na == 0 || std::memcmp(a.p_, b.p_, na) == 0);
  }

 private:
  char* p_ = nullptr;  // null when no names
};

inline header_block::entry header_block::iterator::operator*() const noexcept {
  std::uint32_t n = word(p_);
  std::string_view name(p_ + 4, n);
  const char* v = p_ + 4 + n;
  std::uint32_t count = word(v);
  const char* first = v + 4;
  const char* end = first;
  for (std::uint32_t i = 0; i < count; ++i) end += 4 + word(end);
  return {name, values_view(first, end, count)};
}

}  // namespace esm::util
