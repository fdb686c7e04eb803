#include "esm/log/format.hpp"

#include <charconv>
#include <cmath>
#include <ctime>
#include <map>

#include <boost/json/serialize.hpp>

namespace esm::log::detail {
namespace {

constexpr char lower_hex[] = "0123456789abcdef";
constexpr char32_t rune_error = 0xFFFD;

// Decodes one rune the way Go's `for range` over a string does: an invalid or truncated
// sequence yields U+FFFD with width 1.
std::pair<char32_t, std::size_t> decode_rune(std::string_view s, std::size_t i) {
  auto b = [&](std::size_t k) { return static_cast<unsigned char>(s[i + k]); };
  const unsigned char b0 = b(0);
  if (b0 < 0x80) return {b0, 1};
  const std::size_t left = s.size() - i;
  auto cont = [&](std::size_t k, unsigned char lo = 0x80, unsigned char hi = 0xBF) {
    return k < left && b(k) >= lo && b(k) <= hi;
  };
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    if (cont(1)) return {char32_t(b0 & 0x1F) << 6 | (b(1) & 0x3F), 2};
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    const unsigned char lo = b0 == 0xE0 ? 0xA0 : 0x80, hi = b0 == 0xED ? 0x9F : 0xBF;
    if (cont(1, lo, hi) && cont(2))
      return {char32_t(b0 & 0x0F) << 12 | char32_t(b(1) & 0x3F) << 6 | (b(2) & 0x3F), 3};
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    const unsigned char lo = b0 == 0xF0 ? 0x90 : 0x80, hi = b0 == 0xF4 ? 0x8F : 0xBF;
    if (cont(1, lo, hi) && cont(2) && cont(3))
      return {char32_t(b0 & 0x07) << 18 | char32_t(b(1) & 0x3F) << 12 |
                  char32_t(b(2) & 0x3F) << 6 | (b(3) & 0x3F),
              4};
  }
  return {rune_error, 1};
}

void append_utf8(std::string& out, char32_t r) {
  if (r < 0x80) {
    out += char(r);
  } else if (r < 0x800) {
    out += char(0xC0 | (r >> 6));
    out += char(0x80 | (r & 0x3F));
  } else if (r < 0x10000) {
    out += char(0xE0 | (r >> 12));
    out += char(0x80 | ((r >> 6) & 0x3F));
    out += char(0x80 | (r & 0x3F));
  } else {
    out += char(0xF0 | (r >> 18));
    out += char(0x80 | ((r >> 12) & 0x3F));
    out += char(0x80 | ((r >> 6) & 0x3F));
    out += char(0x80 | (r & 0x3F));
  }
}

void append_hex(std::string& out, char32_t r, int digits) {
  for (int s = (digits - 1) * 4; s >= 0; s -= 4) out += lower_hex[(r >> s) & 0xF];
}

// The escapes for a non-printable rune. strconv.Quote writes DEL as \x7f, hclog as \u007f.
void append_escaped_rune(std::string& out, char32_t r, bool del_as_x) {
  switch (r) {
    case '\a': out += "\\a"; return;
    case '\b': out += "\\b"; return;
    case '\f': out += "\\f"; return;
    case '\n': out += "\\n"; return;
    case '\r': out += "\\r"; return;
    case '\t': out += "\\t"; return;
    case '\v': out += "\\v"; return;
    default: break;
  }
  if (r < ' ' || (r == 0x7F && del_as_x)) {
    out += "\\x";
    append_hex(out, r, 2);
  } else if (r < 0x10000) {
    out += "\\u";
    append_hex(out, r, 4);
  } else {
    out += "\\U";
    append_hex(out, r, 8);
  }
}

// Invalid UTF-8 would make the JSON line unparsable; Go's encoder substitutes U+FFFD too.
std::string valid_utf8(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size();) {
    auto [r, w] = decode_rune(s, i);
    if (r == rune_error && w == 1)
      append_utf8(out, rune_error);
    else
      out.append(s.substr(i, w));
    i += w;
  }
  return out;
}

std::string json_string(std::string_view s) { return boost::json::serialize(valid_utf8(s)); }

struct local_time {
  std::tm tm{};
  long sub_ns = 0;
};

local_time split(std::chrono::system_clock::time_point t) {
  const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch());
  auto secs = std::chrono::floor<std::chrono::seconds>(ns);
  local_time lt;
  lt.sub_ns = static_cast<long>((ns - secs).count());
  const std::time_t tt = static_cast<std::time_t>(secs.count());
  localtime_r(&tt, &lt.tm);
  return lt;
}

void append_digits(std::string& out, long v, int width) {
  char buf[24];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v < 0 ? -v : v);
  (void)ec;
  if (v < 0) out += '-';
  for (auto n = end - buf; n < width; ++n) out += '0';
  out.append(buf, end);
}

void append_time(std::string& out, std::chrono::system_clock::time_point t, int frac_digits,
                 bool zone_colon) {
  const local_time lt = split(t);
  append_digits(out, lt.tm.tm_year + 1900L, 4);
  out += '-';
  append_digits(out, lt.tm.tm_mon + 1, 2);
  out += '-';
  append_digits(out, lt.tm.tm_mday, 2);
  out += 'T';
  append_digits(out, lt.tm.tm_hour, 2);
  out += ':';
  append_digits(out, lt.tm.tm_min, 2);
  out += ':';
  append_digits(out, lt.tm.tm_sec, 2);
  out += '.';
  long frac = lt.sub_ns;
  for (int i = frac_digits; i < 9; ++i) frac /= 10;
  append_digits(out, frac, frac_digits);
  const long off = lt.tm.tm_gmtoff;
  if (off == 0) {
    out += 'Z';
    return;
  }
  const long a = off < 0 ? -off : off;
  out += off < 0 ? '-' : '+';
  append_digits(out, a / 3600, 2);
  if (zone_colon) out += ':';
  append_digits(out, a / 60 % 60, 2);
}

}  // namespace

bool go_is_print(char32_t r) {
  if (r < 0x20 || r == 0x7F) return false;
  if (r < 0x7F) return true;
  if (r <= 0xA0 || r == 0xAD) return false;  // C1 controls, no-break space, soft hyphen
  if (r > 0x10FFFF) return false;
  if ((r & 0xFFFE) == 0xFFFE) return false;         // noncharacters U+xxFFFE, U+xxFFFF
  if (r >= 0xD800 && r <= 0xDFFF) return false;     // surrogates
  if (r >= 0xE000 && r <= 0xF8FF) return false;     // private use
  if (r >= 0xF0000) return false;                   // supplementary private use
  if (r == 0x1680 || r == 0x3000 || r == 0xFEFF || r == 0x180E) return false;
  if (r >= 0x2000 && r <= 0x200F) return false;     // spaces, zero-width and direction marks
  if (r >= 0x2028 && r <= 0x202F) return false;     // line/paragraph separators, embeddings
  if (r >= 0x205F && r <= 0x206F) return false;     // math space, invisible operators
  if (r >= 0xFFF9 && r <= 0xFFFB) return false;     // interlinear annotations
  if ((r >= 0x600 && r <= 0x605) || r == 0x61C || r == 0x6DD || r == 0x70F) return false;
  if (r >= 0xE0000 && r <= 0xE007F) return false;   // tags
  return true;
}

std::string go_quote(std::string_view s) {
  std::string out = "\"";
  for (std::size_t i = 0; i < s.size();) {
    auto [r, w] = decode_rune(s, i);
    if (r == rune_error && w == 1) {
      out += "\\x";
      append_hex(out, static_cast<unsigned char>(s[i]), 2);
    } else if (r == '"' || r == '\\') {
      out += '\\';
      out += char(r);
    } else if (go_is_print(r)) {
      out.append(s.substr(i, w));
    } else {
      append_escaped_rune(out, r, true);
    }
    i += w;
  }
  out += '"';
  return out;
}

void append_text_value(std::string& out, std::string_view v) {
  if (v.empty()) {
    out += "\"\"";
    return;
  }
  bool normal = true;
  for (char c : v) normal = normal && c >= '-' && c <= '~';
  if (normal) {
    out += v;
    return;
  }
  out += '"';
  for (std::size_t i = 0; i < v.size();) {
    auto [r, w] = decode_rune(v, i);
    if (r == '"')
      out += "\\\"";
    else if (go_is_print(r))
      append_utf8(out, r);  // an invalid byte is U+FFFD here, printable
    else
      append_escaped_rune(out, r, false);
    i += w;
  }
  out += '"';
}

std::string go_float_text(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  char buf[64];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v, std::chars_format::scientific);
  (void)ec;
  std::string sci(buf, end);
  const auto e = sci.find('e');
  const int exp = std::stoi(sci.substr(e + 1));
  // strconv.FormatFloat(v, 'g', -1, 64): exponent form when exp < -4 || exp >= 6 for the
  // shortest representation; C's exponent has at least two digits, like Go's.
  if (exp < -4 || exp >= 6) return sci;
  auto [fend, fec] = std::to_chars(buf, buf + sizeof buf, v, std::chars_format::fixed);
  (void)fec;
  return std::string(buf, fend);
}

std::string go_float_json(double v) {
  if (!std::isfinite(v)) return json_string(go_float_text(v));  // Go's encoder refuses these
  const double a = std::fabs(v);
  char buf[400];
  if (a != 0 && (a < 1e-6 || a >= 1e21)) {
    auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v, std::chars_format::scientific);
    (void)ec;
    std::string s(buf, end);
    // encoding/json cleans e-07 up to e-7.
    const auto e = s.find("e-0");
    if (e != std::string::npos) s.erase(e + 2, 1);
    return s;
  }
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v, std::chars_format::fixed);
  (void)ec;
  return std::string(buf, end);
}

void append_text_time(std::string& out, std::chrono::system_clock::time_point t) {
  append_time(out, t, 3, false);
}

void append_json_time(std::string& out, std::chrono::system_clock::time_point t) {
  append_time(out, t, 6, true);
}

std::string_view level_bracket(level l) {
  static constexpr std::string_view brackets[] = {"[TRACE]", "[DEBUG]", "[INFO] ", "[WARN] ",
                                                  "[ERROR]"};
  return brackets[static_cast<int>(l)];
}

std::string_view json_level_name(level l) {
  static constexpr std::string_view names[] = {"trace", "debug", "info", "warn", "error"};
  return names[static_cast<int>(l)];
}

void append_text(std::string& out, const record& r, bool header) {
  if (header) {
    append_text_time(out, r.time);
    out += ' ';
    out += level_bracket(r.lvl);
    out += ' ';
    if (!r.name.empty()) {
      out += r.name;
      if (!r.message.empty()) out += ": ";
    }
  }
  out += r.message;
  if (!r.fields.empty()) {
    out += ':';
    for (const field& f : r.fields) {
      out += ' ';
      out += f.key;
      out += '=';
      append_text_value(out, f.value);
    }
  }
  out += '\n';
}

void append_json(std::string& out, const record& r) {
  std::map<std::string_view, std::string> members;
  std::string ts = "\"";
  append_json_time(ts, r.time);
  ts += '"';
  members["@timestamp"] = std::move(ts);
  members["@level"] = json_string(json_level_name(r.lvl));
  members["@message"] = json_string(r.message);
  if (!r.name.empty()) members["@module"] = json_string(r.name);
  for (const field& f : r.fields) {
    switch (f.kind) {
      case field_kind::integer:
      case field_kind::boolean: members[f.key] = f.value; break;
      case field_kind::real: members[f.key] = go_float_json(f.real); break;
      case field_kind::string: members[f.key] = json_string(f.value); break;
    }
  }
  out += '{';
  bool first = true;
  for (const auto& [k, v] : members) {
    if (!first) out += ',';
    first = false;
    out += json_string(k);
    out += ':';
    out += v;
  }
  out += "}\n";
}

}  // namespace esm::log::detail
