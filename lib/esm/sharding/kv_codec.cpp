#include "esm/sharding/kv_codec.hpp"

#include <algorithm>
#include <array>
#include <cstdio>
#include <ostream>
#include <limits>
#include <stdexcept>

#include <boost/json/parse.hpp>
#include <boost/json/value.hpp>
#include <boost/throw_exception.hpp>

namespace esm::sharding {

void throw_exception_from_error(const decode_error& e, const boost::source_location& loc) {
  boost::throw_exception(std::runtime_error(e.message), loc);
}

std::ostream& operator<<(std::ostream& os, const decode_error& e) { return os << e.message; }

namespace {

constexpr char hex_digits[] = "0123456789abcdef";

// Length of the valid UTF-8 sequence at s[i], or 0 if it is not one (Go's utf8.DecodeRune
// rules: shortest form, no surrogates, at most U+10FFFF). Sets `cp` to the code point.
std::size_t utf8_sequence(std::string_view s, std::size_t i, char32_t& cp) {
  const auto byte = [&](std::size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char b0 = byte(i);
  std::size_t len = 0;
  char32_t min = 0;
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    len = 2, cp = b0 & 0x1F, min = 0x80;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    len = 3, cp = b0 & 0x0F, min = 0x800;
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    len = 4, cp = b0 & 0x07, min = 0x10000;
  } else {
    return 0;
  }
  if (i + len > s.size()) return 0;
  for (std::size_t k = 1; k < len; ++k) {
    const unsigned char b = byte(i + k);
    if ((b & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (b & 0x3F);
  }
  if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
  return len;
}

// Go encoding/json's string encoder with HTML escaping on (json.Marshal's default).
void append_go_json_string(std::string& out, std::string_view s) {
  out.push_back('"');
  for (std::size_t i = 0; i < s.size();) {
    const auto b = static_cast<unsigned char>(s[i]);
    if (b < 0x80) {
      switch (b) {
        case '"': out += "\\\""; break;
        case '\\': out += "\\\\"; break;
        case '\b': out += "\\b"; break;
        case '\f': out += "\\f"; break;
        case '\n': out += "\\n"; break;
        case '\r': out += "\\r"; break;
        case '\t': out += "\\t"; break;
        default:
          if (b < 0x20 || b == '<' || b == '>' || b == '&') {
            out += "\\u00";
            out.push_back(hex_digits[b >> 4]);
            out.push_back(hex_digits[b & 0xF]);
          } else {
            out.push_back(static_cast<char>(b));
          }
      }
      ++i;
      continue;
    }
    char32_t cp = 0;
    const std::size_t len = utf8_sequence(s, i, cp);
    if (len == 0) {
      out += "\\ufffd";
      ++i;
    } else if (cp == 0x2028 || cp == 0x2029) {
      out += cp == 0x2028 ? "\\u2028" : "\\u2029";
      i += len;
    } else {
      out.append(s.substr(i, len));
      i += len;
    }
  }
  out.push_back('"');
}

void append_list(std::string& out, const std::vector<std::string>& list) {
  if (list.empty()) {
    out += "null";
    return;
  }
  out.push_back('[');
  for (std::size_t i = 0; i < list.size(); ++i) {
    if (i > 0) out.push_back(',');
    append_go_json_string(out, list[i]);
  }
  out.push_back(']');
}

bool ascii_iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           auto lower = [](char c) { return c >= 'A' && c <= 'Z' ? char(c - 'A' + 'a') : c; };
           return lower(x) == lower(y);
         });
}

const char* kind_name(boost::json::kind k) {
  switch (k) {
    case boost::json::kind::null: return "null";
    case boost::json::kind::bool_: return "a boolean";
    case boost::json::kind::int64:
    case boost::json::kind::uint64:
    case boost::json::kind::double_: return "a number";
    case boost::json::kind::string: return "a string";
    case boost::json::kind::array: return "an array";
    case boost::json::kind::object: return "an object";
  }
  return "an unknown JSON type";
}

decode_result<std::vector<std::string>> read_list(const boost::json::value& v,
                                                  std::string_view member) {
  std::vector<std::string> out;
  if (v.is_null()) return out;
  if (!v.is_array())
    return decode_error{"assignment member \"" + std::string(member) +
                        "\" must be an array of node names or null, not " + kind_name(v.kind())};
  const auto& arr = v.get_array();
  out.reserve(arr.size());
  for (std::size_t i = 0; i < arr.size(); ++i) {
    if (!arr[i].is_string())
      return decode_error{"assignment member \"" + std::string(member) + "\" element " +
                          std::to_string(i) + " must be a node name (string), not " +
                          kind_name(arr[i].kind())};
    out.emplace_back(arr[i].get_string());
  }
  return out;
}

std::vector<std::string> sorted_unique(std::vector<std::string> v) {
  std::sort(v.begin(), v.end());
  v.erase(std::unique(v.begin(), v.end()), v.end());
  return v;
}

// Seconds from 0001-01-01T00:00:00Z to 1970-01-01T00:00:00Z.
constexpr std::int64_t unix_to_go_seconds = 62135596800;

}  // namespace

std::string encode_assignment(const assignment& a) {
  std::string out = "{\"Nodes\":";
  append_list(out, a.nodes);
  out += ",\"Probes\":";
  append_list(out, a.probes);
  out.push_back('}');
  return out;
}

decode_result<assignment> decode_assignment(std::string_view json) {
  boost::system::error_code ec;
  boost::json::parse_options options;
  options.max_depth = 10000;  // Go's decoder limit; unknown members may nest deeply
  const boost::json::value root = boost::json::parse(json, ec, {}, options);
  if (ec) return decode_error{"assignment value is not valid JSON: " + ec.message()};
  assignment out;
  if (root.is_null()) return out;
  if (!root.is_object())
    return decode_error{std::string("assignment value must be a JSON object, not ") +
                        kind_name(root.kind())};
  for (const auto& member : root.get_object()) {
    const std::string_view key = member.key();
    std::vector<std::string>* target = nullptr;
    std::string_view name;
    if (ascii_iequals(key, "Nodes")) {
      target = &out.nodes, name = "Nodes";
    } else if (ascii_iequals(key, "Probes")) {
      target = &out.probes, name = "Probes";
    } else {
      continue;
    }
    auto list = read_list(member.value(), name);
    if (!list) return list.error();
    *target = std::move(*list);
  }
  return out;
}

bool same_assignment(const assignment& a, const assignment& b) {
  return sorted_unique(a.nodes) == sorted_unique(b.nodes) &&
         sorted_unique(a.probes) == sorted_unique(b.probes);
}

std::chrono::sys_time<std::chrono::nanoseconds> go_time::instant() const noexcept {
  using ns = std::chrono::nanoseconds;
  using tp = std::chrono::sys_time<ns>;
  constexpr std::int64_t max_s = std::numeric_limits<std::int64_t>::max() / 1'000'000'000 - 1;
  if (unix_seconds > max_s) return tp::max();
  if (unix_seconds < -max_s) return tp::min();
  return tp(ns(unix_seconds * 1'000'000'000 + static_cast<std::int64_t>(this->nanoseconds)));
}

std::ostream& operator<<(std::ostream& os, const go_time& t) {
  const std::int64_t days = t.unix_seconds >= 0 ? t.unix_seconds / 86400
                                                : -((-(t.unix_seconds + 1)) / 86400) - 1;
  const std::int64_t sod = t.unix_seconds - days * 86400;
  char buf[96];
  if (days > 100'000'000 || days < -100'000'000) {
    std::snprintf(buf, sizeof buf, "unix %lld.%09u", static_cast<long long>(t.unix_seconds),
                  t.nanoseconds);
  } else {
    const std::chrono::year_month_day ymd{
        std::chrono::sys_days{std::chrono::days{static_cast<int>(days)}}};
    std::snprintf(buf, sizeof buf, "%04d-%02u-%02uT%02d:%02d:%02d.%09uZ", int(ymd.year()),
                  unsigned(ymd.month()), unsigned(ymd.day()), int(sod / 3600),
                  int(sod / 60 % 60), int(sod % 60), t.nanoseconds);
  }
  os << buf;
  if (t.offset_seconds) {
    const std::int32_t off = *t.offset_seconds;
    const std::int32_t a = off < 0 ? -off : off;
    std::snprintf(buf, sizeof buf, " (zone %c%02d:%02d:%02d)", off < 0 ? '-' : '+', a / 3600,
                  a / 60 % 60, a % 60);
    os << buf;
  }
  return os;
}

std::string encode_go_time(std::chrono::sys_time<std::chrono::nanoseconds> t) {
  // Floor division by hand: chrono's floor overflows near the ends of the range.
  const std::int64_t total_ns = t.time_since_epoch().count();
  std::int64_t secs = total_ns / 1'000'000'000;
  std::int64_t rem = total_ns % 1'000'000'000;
  if (rem < 0) rem += 1'000'000'000, --secs;
  const auto nsec = static_cast<std::uint32_t>(rem);
  // Cannot overflow: a nanosecond time point spans about ±292 years around 1970.
  const auto go_secs = static_cast<std::uint64_t>(secs + unix_to_go_seconds);
  std::string out(15, '\0');
  out[0] = 1;
  for (int b = 0; b < 8; ++b) out[1 + b] = static_cast<char>(go_secs >> (56 - 8 * b));
  for (int b = 0; b < 4; ++b) out[9 + b] = static_cast<char>(nsec >> (24 - 8 * b));
  out[13] = static_cast<char>(0xFF);  // offset -1 minute: UTC
  out[14] = static_cast<char>(0xFF);
  return out;
}

decode_result<go_time> decode_go_time(std::string_view bytes) {
  if (bytes.empty()) return decode_error{"Go time value is empty"};
  const auto byte = [&](std::size_t i) { return static_cast<unsigned char>(bytes[i]); };
  const unsigned version = byte(0);
  if (version != 1 && version != 2)
    return decode_error{"Go time value has unsupported version " + std::to_string(version) +
                        " (expected 1 or 2)"};
  const std::size_t want = version == 1 ? 15 : 16;
  if (bytes.size() != want)
    return decode_error{"Go time value of version " + std::to_string(version) + " must be " +
                        std::to_string(want) + " bytes, not " + std::to_string(bytes.size())};

  std::uint64_t usec = 0;
  for (std::size_t i = 1; i <= 8; ++i) usec = (usec << 8) | byte(i);
  const auto go_secs = static_cast<std::int64_t>(usec);
  std::uint32_t nsec = 0;
  for (std::size_t i = 9; i <= 12; ++i) nsec = (nsec << 8) | byte(i);
  const auto offset_min = static_cast<std::int16_t>((byte(13) << 8) | byte(14));
  std::int32_t offset = std::int32_t{offset_min} * 60;
  if (version == 2) offset += static_cast<std::int8_t>(byte(15));

  if (nsec >= 1'000'000'000)
    return decode_error{"Go time value has " + std::to_string(nsec) +
                        " nanoseconds (must be below 1 000 000 000)"};
  if (go_secs < std::numeric_limits<std::int64_t>::min() + unix_to_go_seconds)
    return decode_error{"Go time value is out of range"};

  go_time out;
  out.unix_seconds = go_secs - unix_to_go_seconds;
  out.nanoseconds = nsec;
  if (offset != -60) out.offset_seconds = offset;
  return out;
}

}  // namespace esm::sharding
