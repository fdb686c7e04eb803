// Hand-written HCL v1 reader. Follows hashicorp/hcl v1's scanner and parser where consul-esm
// users could notice (what is a key, a number, a heredoc, how blocks nest) and reports the
// first error with its position instead of recovering.
#include "esm/config/hcl.hpp"

#include <charconv>
#include <cstdio>
#include <utility>

namespace esm::config::hcl {

std::string_view kind_name(kind k) {
  switch (k) {
    case kind::null: return "null";
    case kind::string: return "a string";
    case kind::integer: return "an integer";
    case kind::floating: return "a number with a fraction";
    case kind::boolean: return "a boolean";
    case kind::list: return "a list";
    case kind::object: return "a block";
  }
  return "a value";
}

namespace {

enum class tok {
  eof, ident, string, heredoc, integer, floating, boolean,
  lbrace, rbrace, lbrack, rbrack, assign, comma,
};

struct token {
  tok type = tok::eof;
  position pos;
  std::string text;  // ident name, decoded string or heredoc, number spelling
  std::int64_t integer = 0;
  double floating = 0;
  bool boolean = false;
};

// Thrown inside this file only; parse() turns it into a parse_error value.
struct syntax_error {
  position pos;
  std::string message;
};

bool is_letter(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c >= 0x80;
}
bool is_digit(unsigned char c) { return c >= '0' && c <= '9'; }
bool is_hex(unsigned char c) {
  return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}
int hex_value(unsigned char c) {
  if (is_digit(c)) return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return c - 'A' + 10;
}

std::string printable(unsigned char c) {
  if (c >= 0x20 && c < 0x7f) return std::string("'") + char(c) + "'";
  char buf[8];
  std::snprintf(buf, sizeof buf, "0x%02X", unsigned(c));
  return buf;
}

void append_utf8(std::string& out, std::uint32_t cp) {
  if (cp < 0x80) {
    out += char(cp);
  } else if (cp < 0x800) {
    out += char(0xC0 | (cp >> 6));
    out += char(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += char(0xE0 | (cp >> 12));
    out += char(0x80 | ((cp >> 6) & 0x3F));
    out += char(0x80 | (cp & 0x3F));
  } else {
    out += char(0xF0 | (cp >> 18));
    out += char(0x80 | ((cp >> 12) & 0x3F));
    out += char(0x80 | ((cp >> 6) & 0x3F));
    out += char(0x80 | (cp & 0x3F));
  }
}

class lexer {
 public:
  explicit lexer(std::string_view text) : src_(text) {
    // A UTF-8 byte order mark is not content.
    if (src_.substr(0, 3) == "\xEF\xBB\xBF") offset_ = 3;
  }

  const token& peek() {
    if (!peeked_) {
      next_ = scan();
      peeked_ = true;
    }
    return next_;
  }

  token take() {
    peek();
    peeked_ = false;
    return std::move(next_);
  }

 private:
  bool at_end() const { return offset_ >= src_.size(); }
  unsigned char cur() const { return at_end() ? 0 : static_cast<unsigned char>(src_[offset_]); }
  unsigned char ahead(std::size_t n) const {
    return offset_ + n < src_.size() ? static_cast<unsigned char>(src_[offset_ + n]) : 0;
  }
  position here() const { return {line_, column_}; }

  void advance() {
    if (at_end()) return;
    if (src_[offset_] == '\n') {
      ++line_;
      column_ = 1;
    } else {
      ++column_;
    }
    ++offset_;
  }

  [[noreturn]] void fail(position p, std::string message) const {
    throw syntax_error{p, std::move(message)};
  }

  void skip_space_and_comments() {
    for (;;) {
      unsigned char c = cur();
      if (at_end()) return;
      if (c == ' ' || c == '\t' || c == '\r' || c == '\n') {
        advance();
      } else if (c == '#' || (c == '/' && ahead(1) == '/')) {
        while (!at_end() && cur() != '\n') advance();
      } else if (c == '/' && ahead(1) == '*') {
        position start = here();
        advance();
        advance();
        for (;;) {
          if (at_end()) fail(start, "comment not terminated");
          if (cur() == '*' && ahead(1) == '/') {
            advance();
            advance();
            break;
          }
          advance();
        }
      } else {
        return;
      }
    }
  }

  token scan() {
    skip_space_and_comments();
    token t;
    t.pos = here();
    if (at_end()) return t;
    unsigned char c = cur();
    switch (c) {
      case '{': advance(); t.type = tok::lbrace; return t;
      case '}': advance(); t.type = tok::rbrace; return t;
      case '[': advance(); t.type = tok::lbrack; return t;
      case ']': advance(); t.type = tok::rbrack; return t;
      case '=': advance(); t.type = tok::assign; return t;
      case ',': advance(); t.type = tok::comma; return t;
      case '"': scan_string(t); return t;
      default: break;
    }
    if (c == '<' && ahead(1) == '<') {
      scan_heredoc(t);
      return t;
    }
    if (is_digit(c) || (c == '-' && is_digit(ahead(1)))) {
      scan_number(t);
      return t;
    }
    if (is_letter(c)) {
      std::size_t start = offset_;
      while (!at_end() && (is_letter(cur()) || is_digit(cur()) || cur() == '-' || cur() == '.'))
        advance();
      t.text.assign(src_.substr(start, offset_ - start));
      if (t.text == "true" || t.text == "false") {
        t.type = tok::boolean;
        t.boolean = t.text == "true";
      } else {
        t.type = tok::ident;
      }
      return t;
    }
    fail(t.pos, "unexpected character " + printable(c));
  }

  // Double-quoted string with Go escapes. Inside ${...} (HCL v1 interpolation, which
  // consul-esm never evaluates) quotes do not end the string and text is kept verbatim.
  void scan_string(token& t) {
    t.type = tok::string;
    advance();  // opening quote
    int braces = 0;
    for (;;) {
      if (at_end() || (cur() == '\n' && braces == 0)) fail(t.pos, "string not terminated");
      unsigned char c = cur();
      if (c == '"' && braces == 0) {
        advance();
        return;
      }
      if (braces == 0 && c == '$' && ahead(1) == '{') {
        braces = 1;
        t.text += "${";
        advance();
        advance();
        continue;
      }
      if (braces > 0) {
        if (c == '{') ++braces;
        if (c == '}') --braces;
        t.text += char(c);
        advance();
        continue;
      }
      if (c == '\\') {
        scan_escape(t.text);
        continue;
      }
      t.text += char(c);
      advance();
    }
  }

  void scan_escape(std::string& out) {
    position p = here();
    advance();  // backslash
    if (at_end()) fail(p, "string not terminated");
    unsigned char c = cur();
    advance();
    switch (c) {
      case 'a': out += '\a'; return;
      case 'b': out += '\b'; return;
      case 'f': out += '\f'; return;
      case 'n': out += '\n'; return;
      case 'r': out += '\r'; return;
      case 't': out += '\t'; return;
      case 'v': out += '\v'; return;
      case '\\': out += '\\'; return;
      case '"': out += '"'; return;
      case 'x': {
        unsigned v = 0;
        for (int i = 0; i < 2; ++i) {
          if (!is_hex(cur())) fail(p, "invalid \\x escape in string");
          v = v * 16 + unsigned(hex_value(cur()));
          advance();
        }
        out += char(v);
        return;
      }
      case 'u':
      case 'U': {
        int n = c == 'u' ? 4 : 8;
        std::uint32_t v = 0;
        for (int i = 0; i < n; ++i) {
          if (!is_hex(cur())) fail(p, std::string("invalid \\") + char(c) + " escape in string");
          v = v * 16 + std::uint32_t(hex_value(cur()));
          advance();
        }
        if (v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF))
          fail(p, "escape in string is not a valid Unicode code point");
        append_utf8(out, v);
        return;
      }
      default:
        if (c >= '0' && c <= '7') {
          unsigned v = unsigned(c - '0');
          for (int i = 0; i < 2; ++i) {
            if (!(cur() >= '0' && cur() <= '7')) fail(p, "invalid octal escape in string");
            v = v * 8 + unsigned(cur() - '0');
            advance();
          }
          if (v > 255) fail(p, "octal escape in string is above \\377");
          out += char(v);
          return;
        }
        fail(p, "unknown escape sequence \\" + std::string(1, char(c)) + " in string");
    }
  }

  // <<EOF or <<-EOF, the anchor directly followed by a newline; the text ends at a line that
  // holds only the anchor (leading blanks allowed). With '-', the terminator's indentation is
  // removed from every line when all lines have it, as hashicorp/hcl v1 does.
  void scan_heredoc(token& t) {
    t.type = tok::heredoc;
    advance();
    advance();
    bool indented = false;
    if (cur() == '-') {
      indented = true;
      advance();
    }
    std::size_t anchor_start = offset_;
    while (!at_end() && (is_letter(cur()) || is_digit(cur()))) advance();
    std::string_view anchor = src_.substr(anchor_start, offset_ - anchor_start);
    if (anchor.empty()) fail(t.pos, "heredoc anchor is empty");
    if (cur() == '\r' && ahead(1) == '\n') advance();
    if (at_end()) fail(t.pos, "heredoc not terminated");
    if (cur() != '\n') fail(here(), "invalid characters after heredoc anchor");
    advance();

    std::vector<std::string_view> lines;
    std::string_view indent;
    for (;;) {
      if (at_end()) fail(t.pos, "heredoc not terminated: no line with " + std::string(anchor));
      std::size_t line_start = offset_;
      while (!at_end() && cur() != '\n') advance();
      std::string_view line = src_.substr(line_start, offset_ - line_start);
      bool had_newline = !at_end();
      if (had_newline) advance();
      std::string_view body = line;
      while (!body.empty() && body.back() == '\r') body.remove_suffix(1);
      std::size_t lead = 0;
      while (lead < body.size() && (body[lead] == ' ' || body[lead] == '\t')) ++lead;
      if (body.substr(lead) == anchor) {
        indent = body.substr(0, lead);
        break;
      }
      if (!had_newline) fail(t.pos, "heredoc not terminated: no line with " + std::string(anchor));
      lines.push_back(line);
    }
    bool strip = indented;
    if (strip) {
      for (auto l : lines)
        if (l.substr(0, indent.size()) != indent) strip = false;
    }
    for (auto l : lines) {
      if (strip) l.remove_prefix(indent.size());
      t.text.append(l);
      t.text += '\n';
    }
  }

  void scan_number(token& t) {
    std::size_t start = offset_;
    if (cur() == '-') advance();
    bool is_float = false;
    if (cur() == '0' && (ahead(1) == 'x' || ahead(1) == 'X')) {
      advance();
      advance();
      if (!is_hex(cur())) fail(t.pos, "invalid hexadecimal number");
      while (is_hex(cur())) advance();
    } else {
      while (is_digit(cur())) advance();
      if (cur() == '.') {
        is_float = true;
        advance();
        if (!is_digit(cur())) fail(t.pos, "invalid number: digits expected after '.'");
        while (is_digit(cur())) advance();
      }
      if (cur() == 'e' || cur() == 'E') {
        is_float = true;
        advance();
        if (cur() == '+' || cur() == '-') advance();
        if (!is_digit(cur())) fail(t.pos, "invalid number: digits expected in exponent");
        while (is_digit(cur())) advance();
      }
    }
    if (is_letter(cur()) || is_digit(cur()) || cur() == '.')
      fail(t.pos, "invalid number (a duration must be a quoted string such as \"10s\")");
    t.text.assign(src_.substr(start, offset_ - start));
    std::string_view s = t.text;
    if (is_float) {
      t.type = tok::floating;
      auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), t.floating);
      if (ec != std::errc() || p != s.data() + s.size()) fail(t.pos, "number out of range");
      return;
    }
    t.type = tok::integer;
    bool neg = false;
    if (!s.empty() && s.front() == '-') {
      neg = true;
      s.remove_prefix(1);
    }
    int base = 10;
    if (s.size() > 1 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
      base = 16;
      s.remove_prefix(2);
    } else if (s.size() > 1 && s[0] == '0') {
      base = 8;  // Go's ParseInt(v, 0, 0), which hashicorp/hcl v1 uses
      s.remove_prefix(1);
    }
    std::uint64_t mag = 0;
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), mag, base);
    if (ec == std::errc::result_out_of_range) fail(t.pos, "integer out of range");
    if (ec != std::errc() || p != s.data() + s.size()) fail(t.pos, "invalid number " + t.text);
    constexpr std::uint64_t max = std::uint64_t(INT64_MAX);
    if (mag > max + (neg ? 1 : 0)) fail(t.pos, "integer out of range");
    t.integer = neg ? std::int64_t(0 - mag) : std::int64_t(mag);
  }

  std::string_view src_;
  std::size_t offset_ = 0;
  int line_ = 1;
  int column_ = 1;
  token next_;
  bool peeked_ = false;
};

std::string describe(const token& t) {
  switch (t.type) {
    case tok::eof: return "end of file";
    case tok::ident: return "identifier \"" + t.text + "\"";
    case tok::string: return "string";
    case tok::heredoc: return "heredoc";
    case tok::integer:
    case tok::floating: return "number " + t.text;
    case tok::boolean: return t.text;
    case tok::lbrace: return "'{'";
    case tok::rbrace: return "'}'";
    case tok::lbrack: return "'['";
    case tok::rbrack: return "']'";
    case tok::assign: return "'='";
    case tok::comma: return "','";
  }
  return "token";
}

class parser {
 public:
  explicit parser(std::string_view text) : lex_(text) {}

  node parse_root() {
    node root;
    root.kind = kind::object;
    root.pos = lex_.peek().pos;
    parse_items(root, false, 0);
    return root;
  }

 private:
  [[noreturn]] static void fail(position p, std::string message) {
    throw syntax_error{p, std::move(message)};
  }

  static void check_depth(int depth, position p) {
    if (depth > max_depth) fail(p, "nesting deeper than " + std::to_string(max_depth) + " levels");
  }

  // Items until '}' (inside braces) or end of file; commas between items are optional.
  void parse_items(node& obj, bool in_braces, int depth) {
    for (;;) {
      const token& t = lex_.peek();
      if (t.type == tok::eof) {
        if (in_braces) fail(t.pos, "expected '}' before end of file");
        return;
      }
      if (in_braces && t.type == tok::rbrace) return;
      parse_item(obj, depth);
      if (lex_.peek().type == tok::comma) lex_.take();
    }
  }

  // key... ( '=' value | '{' items '}' ). Several keys (`a "b" { }`) nest: a = { b = { } }.
  void parse_item(node& obj, int depth) {
    std::vector<token> keys;
    while (lex_.peek().type == tok::ident || lex_.peek().type == tok::string) {
      keys.push_back(lex_.take());
    }
    const token& t = lex_.peek();
    if (keys.empty()) fail(t.pos, "expected a key, got " + describe(t));
    // Labels nest, so they count towards the depth limit like braces do.
    int inner = depth + int(keys.size()) - 1;
    check_depth(inner, keys.back().pos);
    node value;
    if (t.type == tok::assign) {
      if (keys.size() > 1)
        fail(t.pos, "key \"" + keys.front().text + "\" has labels, so '{' is expected, got '='");
      lex_.take();
      value = parse_value(depth);
    } else if (t.type == tok::lbrace) {
      value = parse_object(inner);
    } else {
      fail(t.pos, "expected '=' or '{' after key \"" + keys.back().text + "\", got " + describe(t));
    }
    for (std::size_t i = keys.size(); i-- > 1;) {
      node wrapper;
      wrapper.kind = kind::object;
      wrapper.pos = keys[i].pos;
      wrapper.members.push_back(member{std::move(keys[i].text), keys[i].pos, std::move(value)});
      value = std::move(wrapper);
    }
    obj.members.push_back(member{std::move(keys.front().text), keys.front().pos, std::move(value)});
  }

  node parse_object(int depth) {
    token open = lex_.take();  // '{'
    check_depth(depth + 1, open.pos);
    node obj;
    obj.kind = kind::object;
    obj.pos = open.pos;
    parse_items(obj, true, depth + 1);
    lex_.take();  // '}'
    return obj;
  }

  node parse_list(int depth) {
    token open = lex_.take();  // '['
    check_depth(depth + 1, open.pos);
    node list;
    list.kind = kind::list;
    list.pos = open.pos;
    for (;;) {
      if (lex_.peek().type == tok::rbrack) break;
      list.elements.push_back(parse_value(depth + 1));
      const token& t = lex_.peek();
      if (t.type == tok::comma) {
        lex_.take();
      } else if (t.type != tok::rbrack) {
        fail(t.pos, "expected ',' or ']' in list, got " + describe(t));
      }
    }
    lex_.take();  // ']'
    return list;
  }

  node parse_value(int depth) {
    const token& t = lex_.peek();
    switch (t.type) {
      case tok::lbrace: return parse_object(depth);
      case tok::lbrack: return parse_list(depth);
      default: break;
    }
    token v = lex_.take();
    node n;
    n.pos = v.pos;
    switch (v.type) {
      case tok::string:
      case tok::heredoc:
        n.kind = kind::string;
        n.text = std::move(v.text);
        return n;
      case tok::integer:
        n.kind = kind::integer;
        n.integer = v.integer;
        return n;
      case tok::floating:
        n.kind = kind::floating;
        n.floating = v.floating;
        return n;
      case tok::boolean:
        n.kind = kind::boolean;
        n.boolean = v.boolean;
        return n;
      case tok::ident:
        // The word itself is not echoed: an unquoted token or password would end up in logs.
        fail(v.pos, "expected a value, got an unquoted word (strings must be quoted)");
      default:
        fail(v.pos, "expected a value, got " + describe(v));
    }
  }

  lexer lex_;
};

}  // namespace

parse_result parse_hcl(std::string_view text) {
  parse_result r;
  try {
    parser p(text);
    r.root = p.parse_root();
  } catch (const syntax_error& e) {
    r.error = parse_error{e.pos, e.message};
    r.root = node{};
  }
  return r;
}

parse_result parse(std::string_view text) {
  for (char c : text) {
    if (c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f') continue;
    if (c == '{') return parse_json(text);
    break;
  }
  return parse_hcl(text);
}

}  // namespace esm::config::hcl
