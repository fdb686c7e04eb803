// The Consul API objects esmd reads and writes, mapped to and from Boost.JSON with
// value_to / value_from (tag_invoke overloads in json.cpp). Field names follow Consul's JSON.
// Objects that esmd writes back (checks, definitions) keep the members they do not model in
// `extra`, so a compare-and-set never drops a field a newer Consul added.
#pragma once

#include <array>
#include <bit>
#include <chrono>
#include <compare>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <boost/json/fwd.hpp>
#include <boost/json/object.hpp>

#include "esm/util/header_block.hpp"

namespace esm::consul {

using string_map = std::map<std::string, std::string>;

// A string for the members of a check object, held for each check of the share: `Bytes`
// bytes (8 or 16) instead of std::string's 32. Empty: all zero. Up to Bytes - 1 bytes: inline,
// the first byte (the last on a big-endian machine) tagged: bit 0 set, the length above it.
// Longer: a pointer (even, from new[]) to one allocation of its size and 4 bytes, in the
// first 8 bytes (the last 8 on a big-endian machine), so the tag byte is the pointer's least
// significant one and 0 in its bit 0.
// Assigned from and compared with anything that converts to std::string_view; read as one
// (view(), or the implicit conversion, e.g. `std::string s; s = c.notes;`). A short value's
// view points into the object itself: it lives as long as the object stays where it is (a
// move of the object ends it), unlike a std::string's heap bytes. The moved-from side of a
// move assignment holds the target's old value (a swap).
template <std::size_t Bytes>
class compact_string {
  static_assert(Bytes >= sizeof(char*) && Bytes < 128);

 public:
  static constexpr std::size_t inline_capacity = Bytes - 1;

  compact_string() noexcept = default;
  explicit compact_string(std::string_view v) { assign(v); }
  compact_string(const compact_string& o) { assign(o.view()); }
  compact_string(compact_string&& o) noexcept : b_(std::exchange(o.b_, bytes{})) {}
  compact_string& operator=(const compact_string& o) {
    if (this != &o) assign(o.view());
    return *this;
  }
  compact_string& operator=(compact_string&& o) noexcept {
    std::swap(b_, o.b_);
    return *this;
  }
  compact_string& operator=(std::string_view v) {
    assign(v);
    return *this;
  }
  // Null clears it (`s = {}` picks this overload, and clears a std::string too).
  compact_string& operator=(const char* v) { return *this = v ? std::string_view(v) : std::string_view(); }
  compact_string& operator=(const std::string& v) { return *this = std::string_view(v); }
  ~compact_string() { release(); }

  bool empty() const noexcept { return b_ == bytes{}; }
  void clear() noexcept {
    release();
    b_ = bytes{};
  }
  std::size_t size() const noexcept {
    if (is_inline()) return b_[tag_at] >> 1;
    const char* p = heap();
    if (!p) return 0;
    std::uint32_t n;
    std::memcpy(&n, p, sizeof n);
    return n;
  }
  std::string_view view() const noexcept {
    if (is_inline()) return {reinterpret_cast<const char*>(b_.data()) + data_at, size()};
    const char* p = heap();
    return p ? std::string_view(p + sizeof(std::uint32_t), size()) : std::string_view();
  }
  operator std::string_view() const noexcept { return view(); }
  std::string str() const { return std::string(view()); }

  friend bool operator==(const compact_string& a, const compact_string& b) noexcept {
    return a.view() == b.view();
  }
  friend bool operator==(const compact_string& a, std::string_view b) noexcept { return a.view() == b; }
  friend bool operator==(const compact_string& a, const std::string& b) noexcept { return a.view() == b; }
  friend bool operator==(const compact_string& a, const char* b) noexcept { return a.view() == b; }
  friend std::strong_ordering operator<=>(const compact_string& a, const compact_string& b) noexcept {
    return a.view() <=> b.view();
  }
  friend std::string operator+(std::string a, const compact_string& b) {
    a.append(b.view());
    return a;
  }
  friend std::string operator+(const char* a, const compact_string& b) { return std::string(a).append(b.view()); }
  friend std::string operator+(const compact_string& a, std::string_view b) { return a.str().append(b); }
  friend std::string operator+(const compact_string& a, const char* b) { return a.str().append(b); }

 private:
  using bytes = std::array<unsigned char, Bytes>;
  static constexpr bool little = std::endian::native == std::endian::little;
  static constexpr std::size_t ptr_at = little ? 0 : Bytes - sizeof(char*);
  static constexpr std::size_t tag_at = little ? 0 : Bytes - 1;
  static constexpr std::size_t data_at = little ? 1 : 0;

  bool is_inline() const noexcept { return b_[tag_at] & 1u; }
  char* heap() const noexcept {  // only when !is_inline()
    char* p;
    std::memcpy(&p, b_.data() + ptr_at, sizeof p);
    return p;
  }
  void release() noexcept {
    if (!is_inline()) delete[] heap();
  }
  void assign(std::string_view v) {
    bytes next{};  // built first: v may view this string's own bytes
    if (v.size() <= inline_capacity) {
      if (!v.empty()) {
        next[tag_at] = static_cast<unsigned char>(v.size() << 1 | 1u);
        std::memcpy(next.data() + data_at, v.data(), v.size());
      }
    } else {
      if (v.size() > UINT32_MAX) throw std::length_error("compact_string: 4 GiB or more");
      auto n = static_cast<std::uint32_t>(v.size());
      char* p = new char[sizeof n + n];
      std::memcpy(p, &n, sizeof n);
      std::memcpy(p + sizeof n, v.data(), n);
      std::memcpy(next.data() + ptr_at, &p, sizeof p);
    }
    release();
    b_ = next;
  }
  alignas(char*) bytes b_{};  // all zero when empty; see the class comment
};
// For the members that are empty in most checks (a Definition carries one probe's fields,
// most checks have no Notes) or short (Type, Method: "http" and "GET" are inline): 8 bytes. A
// check object has nineteen of them (check_definition, health_check).
using rare_string = compact_string<sizeof(char*)>;
// For the names every check has (Node, CheckID, Name) and its Status ("critical" and
// "maintenance" are longer than 7): 16 bytes, inline up to 15.
using name_string = compact_string<2 * sizeof(char*)>;
// A heap pointer is even: new char[n] with n > 8 is aligned for any 8-byte type.
static_assert(sizeof(rare_string) == sizeof(char*) && sizeof(name_string) == 2 * sizeof(char*));

// The members of a check or a Definition that esmd does not model, written back unchanged
// (a newer Consul's fields): none in most checks, so a pointer (8 bytes, null while there are
// none) instead of a json::object (24). Compared by content; an empty object equals none.
class extra_members {
 public:
  extra_members() noexcept = default;
  extra_members(const extra_members& o) : p_(o.empty() ? nullptr : std::make_unique<boost::json::object>(*o.p_)) {}
  extra_members(extra_members&&) noexcept = default;
  extra_members& operator=(const extra_members& o) {
    if (this != &o) p_ = o.empty() ? nullptr : std::make_unique<boost::json::object>(*o.p_);
    return *this;
  }
  extra_members& operator=(extra_members&&) noexcept = default;
  extra_members& operator=(boost::json::object o) {
    p_ = o.empty() ? nullptr : std::make_unique<boost::json::object>(std::move(o));
    return *this;
  }
  ~extra_members() = default;

  bool empty() const noexcept { return !p_ || p_->empty(); }
  const boost::json::value* if_contains(std::string_view key) const noexcept {
    return p_ ? p_->if_contains(key) : nullptr;
  }
  // The member `key`; throws std::out_of_range when absent (as json::object's at).
  const boost::json::value& at(std::string_view key) const {
    if (auto* v = if_contains(key)) return *v;
    throw std::out_of_range("no member " + std::string(key));
  }
  // The object held, null while there are none.
  const boost::json::object* members() const noexcept { return p_.get(); }
  // The member `key`, null and added when absent (as json::object's operator[]).
  boost::json::value& operator[](std::string_view key) {
    if (!p_) p_ = std::make_unique<boost::json::object>();
    return (*p_)[key];
  }
  // A copy of the members, to which an encoder adds the modelled ones.
  boost::json::object object() const { return p_ ? *p_ : boost::json::object(); }

  friend bool operator==(const extra_members& a, const extra_members& b) noexcept {
    if (a.empty() || b.empty()) return a.empty() == b.empty();
    return *a.p_ == *b.p_;
  }

 private:
  std::unique_ptr<boost::json::object> p_;
};

// Lock flag value of Consul's api package: esmd and consul-esm recognise each other's locks.
inline constexpr std::uint64_t lock_flag_value = 0x2ddccbc058a50c18ULL;

struct node {
  std::string id;
  std::string name;  // "Node"
  std::string address;
  std::string datacenter;
  std::string partition;
  string_map tagged_addresses;
  string_map meta;
  std::uint64_t create_index = 0;
  std::uint64_t modify_index = 0;
};

// A check's Definition as Consul stores it in the catalog. Durations arrive as Go duration
// strings ("10s") or integer nanoseconds; both are accepted, strings are written.
// One probe's fields are set in a definition, the others empty: they are rare_strings (the
// URL too: any URL is longer than std::string's 15 inline bytes), the Header one block, the
// unmodelled members a pointer, and the flags sit together. sizeof 176 B (552 B with
// std::string members and the flags between them, 280 B with the Header as a std::map, 216 B
// with the URL a std::string and the unmodelled members a json::object).
struct check_definition {
  rare_string http;
  util::header_block header;  // Go's map[string][]string, in one allocation
  rare_string method;
  rare_string body;
  rare_string tls_server_name;
  rare_string tcp;
  rare_string udp;
  rare_string grpc;
  rare_string h2ping;
  rare_string os_service;
  std::vector<std::string> script_args;
  rare_string docker_container_id;
  rare_string alias_node;
  rare_string alias_service;
  std::chrono::nanoseconds interval{0};
  std::chrono::nanoseconds timeout{0};
  std::chrono::nanoseconds ttl{0};
  std::chrono::nanoseconds deregister_critical_service_after{0};
  extra_members extra;  // members not modelled above, written back unchanged
  bool disable_redirects = false;
  bool tls_skip_verify = false;
  bool tcp_use_tls = false;
  bool grpc_use_tls = false;
  bool h2ping_use_tls = true;

  bool operator==(const check_definition&) const = default;
};

struct health_check {
  name_string node;
  name_string check_id;
  name_string name;
  name_string status;  // "passing", "warning", "critical", "maintenance": inline
  rare_string notes;
  rare_string output;
  rare_string service_id;
  rare_string service_name;
  std::vector<std::string> service_tags;
  rare_string type;  // "http" and the like
  rare_string name_space;  // "Namespace" (Enterprise)
  rare_string partition;   // "Partition" (Enterprise)
  check_definition definition;
  std::uint64_t create_index = 0;
  std::uint64_t modify_index = 0;
  extra_members extra;

  bool operator==(const health_check&) const = default;
};

// One check as several hold it without copies (the share cache, the engine, a decode that
// found it held already): immutable, so a holder never sees it change (sharding/worker.hpp).
using shared_check = std::shared_ptr<const health_check>;

// A check's identity in an answer, without the rest of it (json.hpp check_key_of): Node,
// CheckID, ServiceID, Namespace and Partition (empty when absent, as a decode leaves them) and
// ModifyIndex. Any change of a check in Consul moves its ModifyIndex, so the same key is the
// same version of the same check.
struct check_key {
  std::string_view node, check_id, service_id, name_space, partition;
  std::uint64_t modify_index = 0;
};

struct agent_service {
  std::string id;
  std::string service;
  std::vector<std::string> tags;
  string_map meta;
  std::string address;
  int port = 0;
  std::string name_space;
  std::string partition;
  std::uint64_t create_index = 0;
  std::uint64_t modify_index = 0;
};

// One row of /v1/catalog/service/<name>.
struct catalog_service {
  std::string id;  // node ID
  std::string node;
  std::string address;
  std::string datacenter;
  string_map node_meta;
  std::string service_id;
  std::string service_name;
  std::vector<std::string> service_tags;
  string_map service_meta;
  std::string service_address;
  int service_port = 0;
  std::string name_space;
  std::string partition;
  std::uint64_t create_index = 0;
  std::uint64_t modify_index = 0;
};

// One entry of /v1/health/service/<name>.
struct service_entry {
  struct node node;
  agent_service service;
  std::vector<health_check> checks;
};

// /v1/catalog/node/<name>
struct catalog_node {
  struct node node;
  std::map<std::string, agent_service> services;
};

struct kv_pair {
  std::string key;
  std::string value;  // decoded from base64
  std::uint64_t flags = 0;
  std::string session;
  std::uint64_t create_index = 0;
  std::uint64_t modify_index = 0;
  std::uint64_t lock_index = 0;
};

struct session_request {
  std::string name;
  std::string node;  // empty: the agent's node
  std::chrono::nanoseconds lock_delay{-1};  // negative: Consul's default (15 s)
  std::string behavior;                      // "release" or "delete"; empty: release
  std::chrono::nanoseconds ttl{0};           // 0: no TTL
  std::optional<std::vector<std::string>> checks;  // unset: Consul's default (serfHealth)
  std::vector<std::string> node_checks;
};

struct session {
  std::string id;
  std::string name;
  std::string node;
  std::chrono::nanoseconds lock_delay{0};
  std::string behavior;
  std::chrono::nanoseconds ttl{0};
  std::vector<std::string> checks;
  std::vector<std::string> node_checks;
  std::uint64_t create_index = 0;
  std::uint64_t modify_index = 0;
};

struct coordinate_vec {
  std::vector<double> vec;
  double error = 0;
  double adjustment = 0;
  double height = 0;
};

struct coordinate_entry {
  std::string node;
  std::string segment;
  std::string partition;
  coordinate_vec coord;
};

struct agent_self {
  std::string datacenter;
  std::string node_name;
  std::string node_id;
  std::string version;  // Config.Version; empty when absent or not a string
  bool server = false;
  std::optional<coordinate_vec> coord;
  std::string member_addr;
};

struct agent_service_registration {
  std::string id;
  std::string name;
  std::vector<std::string> tags;
  string_map meta;
  std::string address;
  int port = 0;
  std::string partition;
  std::string name_space;
};

struct agent_check_registration {
  std::string id;
  std::string name;
  std::string notes;
  std::string service_id;
  std::chrono::nanoseconds ttl{0};
  std::string status;
  std::chrono::nanoseconds deregister_critical_service_after{0};
  std::string partition;
  std::string name_space;
};

struct catalog_registration {
  std::string id;
  std::string node;
  std::string address;
  std::string datacenter;
  std::string partition;
  string_map tagged_addresses;
  string_map node_meta;
  std::optional<agent_service> service;
  std::vector<health_check> checks;
  bool skip_node_update = false;
};

struct catalog_deregistration {
  std::string node;
  std::string service_id;
  std::string check_id;
  std::string datacenter;
  std::string partition;
  std::string name_space;
};

// Transactions (/v1/txn).
struct txn_kv_op {
  std::string verb;  // set, cas, lock, unlock, get, delete, delete-tree, delete-cas, check-session...
  std::string key;
  std::optional<std::string> value;  // raw bytes; base64-encoded on the wire
  std::uint64_t flags = 0;
  std::uint64_t index = 0;
  std::string session;
  std::string partition;
  std::string name_space;
};

struct txn_check_op {
  std::string verb;  // set, cas, delete, delete-cas
  health_check check;
};

struct txn_node_op {
  std::string verb;  // set, cas, delete, delete-cas
  struct node node;
};

struct txn_op {
  std::optional<txn_kv_op> kv;
  std::optional<txn_check_op> check;
  std::optional<txn_node_op> node;
};

struct txn_result {
  std::optional<kv_pair> kv;
  std::optional<health_check> check;
  std::optional<struct node> node;
};

struct txn_error {
  int op_index = 0;
  std::string what;
};

// A transaction Consul accepted (200) or rolled back (409, with errors).
struct txn_response {
  bool committed = false;
  std::vector<txn_result> results;
  std::vector<txn_error> errors;
};

// Consul refuses more operations per transaction.
inline constexpr std::size_t max_txn_ops = 64;

}  // namespace esm::consul
