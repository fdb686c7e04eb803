// HTTP and HTTPS checks: Consul's CheckHTTP over Go's http.Client, on Beast.
//
// Differences from Consul, on purpose: the body is sent (consul-esm drops it, W10); header
// names are matched case-insensitively for the Host / User-Agent / Accept overrides; the body
// read stops after probe_limits::max_body_bytes instead of at the timeout; HTTP/1.1 only (Go
// may negotiate HTTP/2 over TLS, where the reason phrase comes from Go's own table); no
// "Accept-Encoding: gzip" is sent, so the body arrives as the server sends it uncompressed.

#include <algorithm>
#include <cctype>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <map>
#include <memory_resource>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/buffer_body.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>
#include <boost/container/small_vector.hpp>
#include <boost/url/parse.hpp>
#include <boost/url/url.hpp>

#include "esm/util/chunked_guard.hpp"
#include "esm/probe/net.hpp"
#include "esm/probe/probes.hpp"
#include "esm/probe/tls_client.hpp"

namespace esm::probe::detail {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace urls = boost::urls;
using boost::system::error_code;
constexpr auto token = asio::as_tuple(asio::use_awaitable);

constexpr int max_redirects = 10;  // Go's http.Client default policy
constexpr std::string_view user_agent = "Consul Health Check";
constexpr std::string_view default_accept = "text/plain, text/*, */*";
constexpr std::string_view timeout_suffix = " (Client.Timeout exceeded while awaiting headers)";

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() &&
         std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

// Go's url.Error Op: "Get", "Post", "Head"...
std::string url_error_op(std::string_view method) {
  std::string s(method);
  for (std::size_t i = 1; i < s.size(); ++i)
    s[i] = static_cast<char>(std::tolower(static_cast<unsigned char>(s[i])));
  return s;
}

// The URL as Go's client names it in errors when it differs from the URL's own text: with
// its password shown as "***". Nothing (no copy) for a URL without a password.
std::optional<std::string> masked_url(const urls::url_view_base& u) {
  if (!u.has_password()) return std::nullopt;
  urls::url copy(u);
  copy.set_password("***");
  return std::string(copy.buffer());
}

// Go's %q (strconv.Quote) for the texts Go quotes in errors, so that a CR/LF in a
// definition shows as "\r\n" in the check output instead of breaking it. Valid UTF-8 above
// ASCII is kept as is (Go also escapes non-printable runes there; not worth a Unicode table).
std::string go_quote(std::string_view s) {
  static constexpr char hex[] = "0123456789abcdef";
  std::string out = "\"";
  for (std::size_t i = 0; i < s.size(); ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    switch (c) {
      case '\a': out += "\\a"; continue;
      case '\b': out += "\\b"; continue;
      case '\f': out += "\\f"; continue;
      case '\n': out += "\\n"; continue;
      case '\r': out += "\\r"; continue;
      case '\t': out += "\\t"; continue;
      case '\v': out += "\\v"; continue;
      case '"': out += "\\\""; continue;
      case '\\': out += "\\\\"; continue;
      default: break;
    }
    if (c < 0x20 || c == 0x7f) {
      out += "\\x";
      out += hex[c >> 4];
      out += hex[c & 0xf];
      continue;
    }
    if (c < 0x80) {
      out += static_cast<char>(c);
      continue;
    }
    // A well-formed UTF-8 sequence (no overlong form, surrogate or value above U+10FFFF) is
    // copied; any other byte is shown as \xNN, as Go does.
    std::size_t len = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc2 ? 2 : 0;
    bool ok = len != 0 && c <= 0xf4 && i + len <= s.size();
    for (std::size_t k = 1; ok && k < len; ++k)
      ok = (static_cast<unsigned char>(s[i + k]) & 0xc0) == 0x80;
    if (ok && len >= 3) {
      const auto c1 = static_cast<unsigned char>(s[i + 1]);
      ok = !(c == 0xe0 && c1 < 0xa0) && !(c == 0xed && c1 >= 0xa0) && !(c == 0xf0 && c1 < 0x90) &&
           !(c == 0xf4 && c1 >= 0x90);
    }
    if (!ok) {
      out += "\\x";
      out += hex[c >> 4];
      out += hex[c & 0xf];
      continue;
    }
    out.append(s.substr(i, len));
    i += len - 1;
  }
  out += '"';
  return out;
}

// RFC 9110 tchar, as Go's httpguts.IsTokenRune: the only bytes allowed in a method or a
// header field name. Anything else (CR, LF, space, ':', non-ASCII) could end the name early
// and let a definition write its own header lines or a second request.
bool is_tchar(unsigned char c) {
  if (c >= '0' && c <= '9') return true;
  if ((c | 0x20) >= 'a' && (c | 0x20) <= 'z') return true;
  return std::string_view("!#$%&'*+-.^_`|~").find(static_cast<char>(c)) != std::string_view::npos;
}

// Go's validMethod and httpguts.ValidHeaderFieldName: a non-empty token.
bool is_token(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return is_tchar(static_cast<unsigned char>(c)); });
}

// Go's httpguts.ValidHeaderFieldValue: no CTL except HTAB, so no CR, LF or NUL.
bool is_valid_field_value(std::string_view s) {
  return std::none_of(s.begin(), s.end(), [](char ch) {
    const auto c = static_cast<unsigned char>(ch);
    return (c < 0x20 && c != '\t') || c == 0x7f;
  });
}

// Go's url.Parse refuses any CTL byte before parsing.
bool has_ctl_byte(std::string_view s) {
  return std::any_of(s.begin(), s.end(), [](char ch) {
    const auto c = static_cast<unsigned char>(ch);
    return c < 0x20 || c == 0x7f;
  });
}


// Go's Transport.roundTrip header check, in its texts; empty when all are valid. Go walks its
// map in random order; std::map's order makes the reported field stable. The value is never
// shown: it may be a secret.
std::string header_error(const util::header_block& headers) {
  for (auto [k, vs] : headers) {
    if (!is_token(k)) return "net/http: invalid header field name " + go_quote(k);
    for (auto v : vs)
      if (!is_valid_field_value(v)) return "net/http: invalid header field value for " + go_quote(k);
  }
  return {};
}

// Views into the spec's block (the spec outlives the run) and into constants; a definition
// rarely has more than a few headers, so the list lives in the coroutine's frame.
using header_list = boost::container::small_vector<std::pair<std::string_view, std::string_view>, 8>;

// The request's and the response's header fields, from a buffer inside the probe's coroutine
// frame instead of a heap block each: Beast allocates every field, the request target and
// the reason phrase separately (eleven allocations in a run against nginx). A response with
// more or longer headers than the buffer holds takes the rest from the heap (bounded by the
// header limit); all of it is freed with the arena, at the end of each hop. One arena per hop,
// used by run_http and the talk() it awaits, on one thread. A message with this allocator must
// be built with the arena's allocator (a default-constructed or copied one silently uses the
// global heap), never swapped with another arena's, and never released from its parser: it
// must not outlive the hop.
struct field_arena {
  alignas(std::max_align_t) std::byte buffer[2048];
  std::pmr::monotonic_buffer_resource resource{buffer, sizeof buffer, std::pmr::new_delete_resource()};
  field_arena() = default;
  field_arena(const field_arena&) = delete;
  field_arena& operator=(const field_arena&) = delete;
};
using field_allocator = std::pmr::polymorphic_allocator<char>;
using fields = http::basic_fields<field_allocator>;
using request = http::request<http::string_body, fields>;

const std::string_view* find_header(const header_list& h, std::string_view name) {
  for (const auto& [k, v] : h)
    if (iequals(k, name)) return &v;
  return nullptr;
}

void remove_header(header_list& h, std::string_view name) {
  h.erase(std::remove_if(h.begin(), h.end(), [&](const auto& kv) { return iequals(kv.first, name); }),
          h.end());
}

struct target {
  bool tls = false;
  std::string host;       // for dialling and TLS, unbracketed
  std::string port;
  std::string authority;  // Host header: host[:port] as in the URL
  std::string request_target;
};

std::optional<target> target_of(const urls::url_view_base& u, std::string& err) {
  target t;
  std::string scheme(u.scheme());
  for (auto& c : scheme) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (scheme == "https") {
    t.tls = true;
  } else if (scheme != "http") {
    err = "unsupported protocol scheme \"" + scheme + "\"";
    return std::nullopt;
  }
  if (!u.has_authority() || u.encoded_host().empty()) {
    err = "http: no Host in request URL";
    return std::nullopt;
  }
  t.host = u.host_address();
  t.port = u.has_port() ? std::string(u.port()) : std::string(t.tls ? "443" : "80");
  t.authority = u.encoded_host_and_port();
  t.request_target = u.encoded_path().empty() ? std::string("/") : std::string(u.encoded_path());
  if (u.has_query()) {
    t.request_target += '?';
    t.request_target += u.encoded_query();
  }
  return t;
}

// One request/response on a fresh connection.
struct exchange {
  std::string error;  // Go's text of a transport failure before a status line
  bool timed_out = false;
  unsigned status = 0;
  std::string status_text;  // "200 OK", as Go's Response.Status
  std::optional<std::string> location;
  std::string body_tail;  // the last output_max_bytes of the body
};

std::string read_error_text(const error_code& ec, beast::tcp_stream& lowest,
                            const probe_limits& lim) {
  if (ec == http::error::end_of_stream) return "EOF";
  if (ec == http::error::partial_message) return "unexpected EOF";
  if (ec == http::error::header_limit || ec == http::error::buffer_overflow)
    return "net/http: server response headers exceeded " + std::to_string(lim.max_header_bytes) +
           " bytes; aborted";
  if (ec.category() == http::make_error_code(http::error::bad_version).category())
    return "net/http: HTTP/1.x transport connection broken: malformed HTTP response (" +
           ec.message() + ")";
  error_code e1, e2;
  auto local = lowest.socket().local_endpoint(e1);
  auto remote = lowest.socket().remote_endpoint(e2);
  if (!e1 && !e2)
    return "read tcp " + endpoint_text(local.address(), local.port()) + "->" +
           endpoint_text(remote.address(), remote.port()) + ": read: " + go_error_text(ec);
  return go_error_text(ec);
}

template <class Stream>
asio::awaitable<void> talk(Stream& stream, beast::tcp_stream& lowest, SSL* ssl,
                           const std::string& server_name,
                           const request& req, field_arena& arena, bool want_body,
                           const probe_limits& lim, clock::time_point deadline, exchange& out) {
  auto [wec, wn] = co_await http::async_write(stream, req, token);
  (void)wn;
  if (wec) {
    out.timed_out = wec == beast::error::timeout;
    std::string t = ssl ? tls_error_text(wec, ssl, server_name) : std::string();
    out.error = t.empty() ? go_error_text(wec) : t;
    co_return;
  }
  beast::flat_buffer buf(lim.max_header_bytes + 16 * 1024);
  http::parser<false, http::buffer_body, field_allocator> p(
      std::piecewise_construct, std::make_tuple(), std::make_tuple(field_allocator(&arena.resource)));
  p.header_limit(static_cast<std::uint32_t>(std::min<std::size_t>(
      lim.max_header_bytes, std::numeric_limits<std::uint32_t>::max())));
  // The body is bounded by our own count (max_body_bytes), not by the parser: a long body
  // is cut, not an error.
  p.body_limit(std::numeric_limits<std::uint64_t>::max());
  if (req.method() == http::verb::head) p.skip(true);
  auto [hec, hn] = co_await http::async_read_header(stream, buf, p, token);
  (void)hn;
  if (hec) {
    out.timed_out = hec == beast::error::timeout;
    std::string t = ssl ? tls_error_text(hec, ssl, server_name) : std::string();
    out.error = t.empty() ? read_error_text(hec, lowest, lim) : t;
    co_return;
  }
  const auto& res = p.get();
  out.status = res.result_int();
  out.status_text = std::to_string(out.status);
  if (!res.reason().empty()) {
    out.status_text += ' ';
    out.status_text += res.reason();
  }
  if (auto it = res.find(http::field::location); it != res.end())
    out.location = std::string(it->value());
  if (!want_body) co_return;

  // Keeps Beast from asserting on an empty chunked body that arrives in pieces (found by
  // test/fuzz/probe_http_fuzz): see may_be_last_chunk_line. A peer that stops sending before
  // that has ended the body: the status line decides, as for any cut body.
  {
    auto gec = co_await util::read_past_short_last_chunk(stream, buf, p);
    if (gec) co_return;
  }

  // Like Consul's circular buffer: keep the tail. A read error or our deadline ends the
  // body; the status already received still decides the result, as in Consul.
  std::size_t total = 0;
  char chunk[8192];
  // The clock is checked here too: the stream's expiry only fires while a read waits, and a
  // peer that streams fast never makes a read wait.
  while (!p.is_done() && total < lim.max_body_bytes && clock::now() < deadline) {
    p.get().body().data = chunk;
    p.get().body().size = sizeof chunk;
    auto [bec, bn] = co_await http::async_read(stream, buf, p, token);
    (void)bn;
    std::size_t got = sizeof chunk - p.get().body().size;
    total += got;
    out.body_tail.append(chunk, got);
    if (out.body_tail.size() > lim.output_max_bytes)
      out.body_tail.erase(0, out.body_tail.size() - lim.output_max_bytes);
    if (bec && bec != http::error::need_buffer) break;
  }
}

}  // namespace

asio::awaitable<probe_result> run_http(const http_spec& spec, probe_context& ctx) {
  const auto deadline = clock::now() + effective_timeout(spec.timeout);
  const auto& lim = ctx.limits;
  const std::string first_method = spec.method.empty() ? std::string("GET") : spec.method;
  const std::string op = url_error_op(first_method);
  auto critical = [](std::string text) { return probe_result{check_status::critical, std::move(text)}; };

  // Everything from the definition that goes on the wire verbatim (method, URL, header names
  // and values) is checked here, before any connection, in Go's order: http.NewRequest checks
  // the method, then parses the URL (these errors are not wrapped in a url.Error, as in
  // Consul's output); Transport.roundTrip then checks the headers. Beast 1.81 writes all of
  // them unchecked, so a CR/LF would let a definition add header lines or a second request.
  if (!spec.method.empty() && !is_token(spec.method))
    co_return critical("net/http: invalid method " + go_quote(spec.method));
  if (has_ctl_byte(spec.url))
    co_return critical("parse " + go_quote(spec.url) + ": net/url: invalid control character in URL");
  auto parsed = urls::parse_uri_reference(spec.url);
  if (!parsed || !parsed->has_scheme())
    co_return critical("parse " + go_quote(spec.url) + ": " +
                       (parsed ? std::string("invalid URI for request")
                               : parsed.error().message()));
  // Go checks the headers only for http and https; another scheme fails on the scheme alone,
  // in the loop below.
  const bool is_http = iequals(parsed->scheme(), "http") || iequals(parsed->scheme(), "https");
  if (auto err = is_http ? header_error(spec.headers) : std::string(); !err.empty())
    co_return critical(op + " " + go_quote(masked_url(*parsed).value_or(spec.url)) + ": " + err);

  // Headers as Consul builds them: the definition's, a Host header taken as the request
  // host, then the default User-Agent and Accept when absent.
  header_list headers;
  for (auto [k, vs] : spec.headers)
    for (auto v : vs) headers.emplace_back(k, v);
  std::optional<std::string> host_override;
  std::string referer_value;  // what the list's Referer entry views, after a redirect
  if (auto* h = find_header(headers, "Host"); h && !h->empty()) host_override = std::string(*h);
  remove_header(headers, "Host");
  if (auto* ua = find_header(headers, "User-Agent"); !ua || ua->empty()) {
    remove_header(headers, "User-Agent");
    headers.emplace_back("User-Agent", user_agent);
  }
  if (auto* a = find_header(headers, "Accept"); !a || a->empty()) {
    remove_header(headers, "Accept");
    headers.emplace_back("Accept", default_accept);
  }

  // The URL of this hop: the definition's until a redirect, then `redirected`. The text Go
  // names in a url.Error is the definition's own unless a password had to be masked (no copy
  // of the URL on the common path). A pointer to the url itself, never a url_view assigned
  // from a url: in Boost.URL 1.81 such a view points at the url's parts but keeps its own
  // earlier ones (url_view::operator=), and url_base::copy (making a url, resolve) reserves by
  // the first and copies the second: the copy got the previous URL's offsets and a terminator
  // written past its buffer (valgrind; the 10-redirect test sent a broken request).
  const urls::url_view_base* current = &*parsed;
  urls::url redirected;
  std::string current_text_owned;
  const std::string* current_text = &spec.url;
  if (auto m = masked_url(*current)) {
    current_text_owned = std::move(*m);
    current_text = &current_text_owned;
  }
  std::string method = first_method;
  bool send_body = true;
  auto ex = co_await asio::this_coro::executor;

  for (int hop = 0;; ++hop) {
    std::string err;
    auto t = target_of(*current, err);
    if (!t) co_return critical(op + " \"" + *current_text + "\": " + err);

    field_arena arena;  // before the request: its fields live in it
    request req(std::piecewise_construct, std::make_tuple(),
                std::make_tuple(field_allocator(&arena.resource)));
    req.method_string(method);
    req.target(t->request_target);
    req.version(11);
    req.set(http::field::host, host_override ? *host_override : t->authority);
    for (const auto& [k, v] : headers) req.insert(k, v);
    req.set(http::field::connection, "close");  // Consul disables keep-alives
    if (send_body && !spec.body.empty()) {
      req.body() = spec.body;
      req.content_length(spec.body.size());
    } else if (method == "POST" || method == "PUT" || method == "PATCH") {
      req.content_length(0);
    }

    const std::string server_name = spec.tls_server_name.empty() ? t->host : spec.tls_server_name;
    exchange x;
    {
      beast::tcp_stream tcp(ex);
      std::string dial_err = co_await dial_tcp(tcp, t->host, t->port, deadline);
      auto cs = co_await asio::this_coro::cancellation_state;
      if (cancelled(cs.cancelled())) co_return canceled_result();
      if (!dial_err.empty()) {
        if (clock::now() >= deadline) dial_err += timeout_suffix;
        co_return critical(op + " \"" + *current_text + "\": " + dial_err);
      }
      const bool want_body = true;
      if (t->tls) {
        beast::ssl_stream<beast::tcp_stream> s(std::move(tcp), ctx.tls());
        if (!prepare_tls_client(s.native_handle(), server_name, spec.tls_skip_verify, {}))
          co_return critical(op + " \"" + *current_text + "\": tls: cannot configure the connection");
        s.next_layer().expires_at(deadline);
        auto [hec] = co_await s.async_handshake(asio::ssl::stream_base::client, token);
        cs = co_await asio::this_coro::cancellation_state;
        if (cancelled(cs.cancelled())) co_return canceled_result();
        if (hec) {
          if (hec == beast::error::timeout)
            co_return critical(op + " \"" + *current_text + "\": context deadline exceeded" +
                               std::string(timeout_suffix));
          std::string text = tls_error_text(hec, s.native_handle(), server_name);
          if (text.empty()) text = go_error_text(hec);
          co_return critical(op + " \"" + *current_text + "\": " + text);
        }
        co_await talk(s, s.next_layer(), s.native_handle(), server_name, req, arena, want_body, lim, deadline, x);
      } else {
        co_await talk(tcp, tcp, nullptr, server_name, req, arena, want_body, lim, deadline, x);
      }
      cs = co_await asio::this_coro::cancellation_state;
      if (cancelled(cs.cancelled())) co_return canceled_result();
    }  // the connection is closed here, before any redirect is followed

    if (x.status == 0) {
      std::string text = x.timed_out ? std::string("context deadline exceeded") + std::string(timeout_suffix)
                                     : x.error;
      co_return critical(op + " \"" + *current_text + "\": " + text);
    }

    // Go's redirect policy (net/http client.go redirectBehavior).
    const unsigned s = x.status;
    const bool redirect = s == 301 || s == 302 || s == 303 || s == 307 || s == 308;
    if (redirect && !spec.disable_redirects && x.location) {
      const std::string& loc = *x.location;
      auto ref = urls::parse_uri_reference(loc);
      if (!ref)
        co_return critical(op + " \"" + *current_text + "\": failed to parse Location header \"" +
                           loc + "\": " + ref.error().message());
      if (hop + 1 >= max_redirects)
        co_return critical(op + " \"" + loc + "\": stopped after " +
                           std::to_string(max_redirects) + " redirects");
      urls::url next;
      if (auto r = urls::resolve(*current, *ref, next); !r)
        co_return critical(op + " \"" + *current_text + "\": failed to parse Location header \"" +
                           loc + "\": " + r.error().message());
      next.remove_fragment();
      // Sensitive headers do not follow a redirect to another host; a custom Host only
      // follows a relative redirect; Referer names the previous URL unless https -> http.
      if (!iequals(next.host_address(), current->host_address())) {
        remove_header(headers, "Authorization");
        remove_header(headers, "Www-Authenticate");
        remove_header(headers, "Cookie");
        remove_header(headers, "Cookie2");
      }
      if (ref->has_scheme() || ref->has_authority()) host_override.reset();
      remove_header(headers, "Referer");
      if (!(iequals(current->scheme(), "https") && iequals(next.scheme(), "http"))) {
        urls::url referer(*current);
        referer.remove_userinfo();
        referer.remove_fragment();
        referer_value = referer.buffer();  // its old view was removed above
        headers.emplace_back("Referer", referer_value);
      }
      if (s == 301 || s == 302 || s == 303) {
        if (method != "GET" && method != "HEAD") method = "GET";
        send_body = false;
        remove_header(headers, "Content-Type");
      }
      redirected = std::move(next);
      current = &redirected;
      if (auto m = masked_url(redirected))
        current_text_owned = std::move(*m);
      else
        current_text_owned.assign(redirected.buffer());
      current_text = &current_text_owned;
      continue;
    }

    std::string output;  // one allocation, not one per piece
    constexpr std::string_view http_word = "HTTP ", output_word = " Output: ";
    output.reserve(http_word.size() + first_method.size() + 1 + spec.url.size() + 2 +
                   x.status_text.size() + output_word.size() + x.body_tail.size());
    output.append(http_word).append(first_method).append(" ").append(spec.url).append(": ");
    output.append(x.status_text).append(output_word).append(x.body_tail);
    if (s >= 200 && s <= 299) co_return probe_result{check_status::passing, std::move(output)};
    if (s == 429) co_return probe_result{check_status::warning, std::move(output)};
    co_return critical(std::move(output));
  }
}

}  // namespace esm::probe::detail
