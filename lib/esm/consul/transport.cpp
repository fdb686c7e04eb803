#include "esm/consul/transport.hpp"

#include "esm/util/chunked_guard.hpp"

#include <deque>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <variant>
#include <vector>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/host_name_verification.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/basic_stream.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <boost/beast/version.hpp>
#include <openssl/ssl.h>
#include <sys/socket.h>

#include <cerrno>

#include "esm/util/base64.hpp"

namespace esm::consul {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using asio::awaitable;
using tcp = asio::ip::tcp;
using unix_stream = beast::basic_stream<asio::local::stream_protocol>;
using tls_stream = asio::ssl::stream<beast::tcp_stream>;
constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);

namespace {

// Large enough for a catalog of 100 000 nodes; Consul's answers are trusted but bounded.
constexpr std::uint64_t max_body_bytes = 512ull * 1024 * 1024;
constexpr std::uint32_t max_header_bytes = 64 * 1024;

struct connection {
  std::variant<beast::tcp_stream, tls_stream, unix_stream> stream;
  beast::flat_buffer buffer;
  bool reused = false;

  template <class S>
  explicit connection(S&& s) : stream(std::forward<S>(s)) {}

  void expires_at(std::chrono::steady_clock::time_point t) {
    std::visit([&](auto& s) { beast::get_lowest_layer(s).expires_at(t); }, stream);
  }
  void close() {
    std::visit([](auto& s) { beast::get_lowest_layer(s).close(); }, stream);
  }
  // An idle keep-alive connection the server has closed (or sent unexpected bytes on) is
  // useless; peeking costs one non-blocking recv and saves a failed request.
  bool peer_closed() {
    int fd = std::visit([](auto& s) { return int(beast::get_lowest_layer(s).socket().native_handle()); }, stream);
    char byte;
    auto n = ::recv(fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    return n >= 0 || (errno != EAGAIN && errno != EWOULDBLOCK);
  }
};

http::verb to_verb(method m) {
  switch (m) {
    case method::get: return http::verb::get;
    case method::put: return http::verb::put;
    case method::post: return http::verb::post;
    case method::del: return http::verb::delete_;
  }
  return http::verb::get;
}

std::string read_file(const std::string& path, const char* what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(std::string(what) + ": cannot read \"" + path + "\"");
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void load_tls(asio::ssl::context& ctx, const tls_options& t) {
  boost::system::error_code ec;
  if (t.ca_file.empty() && t.ca_path.empty()) {
    ctx.set_default_verify_paths(ec);
  }
  if (!t.ca_file.empty()) {
    auto pem = read_file(t.ca_file, "ca_file");
    ctx.add_certificate_authority(asio::buffer(pem), ec);
    if (ec) throw std::runtime_error("ca_file: no usable CA certificate in \"" + t.ca_file + "\": " + ec.message());
  }
  if (!t.ca_path.empty()) {
    // Like Go's CAPath: every certificate file in the directory, no hashed names needed.
    std::error_code fec;
    std::size_t loaded = 0;
    for (auto& entry : std::filesystem::directory_iterator(t.ca_path, fec)) {
      if (!entry.is_regular_file()) continue;
      auto pem = read_file(entry.path().string(), "ca_path");
      boost::system::error_code aec;
      ctx.add_certificate_authority(asio::buffer(pem), aec);
      if (!aec) ++loaded;
    }
    if (fec) throw std::runtime_error("ca_path: cannot read directory \"" + t.ca_path + "\": " + fec.message());
    if (loaded == 0) throw std::runtime_error("ca_path: no CA certificate in \"" + t.ca_path + "\"");
  }
  if (t.cert_file.empty() != t.key_file.empty())
    throw std::runtime_error("cert_file and key_file must be given together");
  if (!t.cert_file.empty()) {
    ctx.use_certificate_chain_file(t.cert_file, ec);
    if (ec) throw std::runtime_error("cert_file: cannot load \"" + t.cert_file + "\": " + ec.message());
    ctx.use_private_key_file(t.key_file, asio::ssl::context::pem, ec);
    if (ec) throw std::runtime_error("key_file: cannot load \"" + t.key_file + "\": " + ec.message());
  }
  ctx.set_verify_mode(t.verify ? asio::ssl::verify_peer : asio::ssl::verify_none);
}

std::pair<std::string, std::string> split_host_port(const std::string& address, bool tls) {
  // [v6]:port, host:port, or host alone.
  if (!address.empty() && address.front() == '[') {
    auto close = address.find(']');
    if (close != std::string::npos) {
      auto host = address.substr(1, close - 1);
      if (close + 1 < address.size() && address[close + 1] == ':')
        return {host, address.substr(close + 2)};
      return {host, tls ? "443" : "80"};
    }
  }
  auto colon = address.rfind(':');
  if (colon == std::string::npos || address.find(':') != colon)
    return {address, tls ? "443" : "80"};
  return {address.substr(0, colon), address.substr(colon + 1)};
}

bool stale_keepalive(const boost::system::error_code& ec) {
  return ec == http::error::end_of_stream || ec == asio::error::eof ||
         ec == asio::error::connection_reset || ec == asio::error::broken_pipe ||
         ec == asio::error::connection_aborted || ec == http::error::partial_message;
}

std::uint64_t parse_u64(std::string_view s) {
  std::uint64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return 0;
    v = v * 10 + std::uint64_t(c - '0');
  }
  return v;
}

}  // namespace

struct transport::impl : std::enable_shared_from_this<impl> {
  asio::any_io_executor ex;
  connection_options opts;
  std::optional<asio::ssl::context> tls;
  std::string host, port, host_header;
  std::deque<std::unique_ptr<connection>> idle;
  std::size_t open = 0;
  transport_stats stats;

  struct waiter {
    asio::steady_timer timer;
    bool granted = false;
    explicit waiter(asio::any_io_executor e) : timer(e) {}
  };
  std::deque<std::shared_ptr<waiter>> waiters;

  impl(asio::any_io_executor e, connection_options o) : ex(e), opts(std::move(o)) {
    if (opts.scheme == "https") {
      tls.emplace(asio::ssl::context::tls_client);
      load_tls(*tls, opts.tls);
    }
    if (opts.scheme != "unix") {
      std::tie(host, port) = split_host_port(opts.address, opts.scheme == "https");
      host_header = opts.address;
    } else {
      host_header = "localhost";
    }
  }

  // A free slot goes to the longest waiter first.
  void wake_one() {
    while (!waiters.empty()) {
      auto w = waiters.front();
      waiters.pop_front();
      if (!w->granted) {
        w->granted = true;
        w->timer.cancel();
        return;
      }
    }
  }

  void release(std::unique_ptr<connection> c, bool reusable) {
    if (reusable && idle.size() < opts.max_idle_connections) {
      c->reused = true;
      idle.push_back(std::move(c));
    } else {
      c->close();
      --open;
    }
    wake_one();
  }

  awaitable<result<std::unique_ptr<connection>>> connect(std::chrono::steady_clock::time_point deadline) {
    ++stats.connections_opened;
    if (opts.scheme == "unix") {
      unix_stream s(ex);
      s.expires_at(deadline);
      auto [ec] = co_await s.async_connect(asio::local::stream_protocol::endpoint(opts.address), use_tuple);
      if (ec) co_return make_error(ec, "dial unix " + opts.address);
      co_return std::make_unique<connection>(std::move(s));
    }
    tcp::resolver resolver(ex);
    // The resolver has no deadline of its own; numeric addresses resolve at once.
    auto [rec, endpoints] = co_await resolver.async_resolve(host, port, use_tuple);
    if (rec) co_return make_error(rec, "lookup " + host);
    beast::tcp_stream s(ex);
    s.expires_at(deadline);
    auto [cec, ep] = co_await s.async_connect(endpoints, use_tuple);
    if (cec) co_return make_error(cec, "dial tcp " + opts.address);
    s.socket().set_option(tcp::no_delay(true));
    if (!tls) co_return std::make_unique<connection>(std::move(s));

    tls_stream ts(std::move(s), *tls);
    const std::string& name = opts.tls.server_name.empty() ? host : opts.tls.server_name;
    if (!SSL_set_tlsext_host_name(ts.native_handle(), name.c_str()))
      co_return make_error(asio::error::invalid_argument, "TLS server name " + name);
    if (opts.tls.verify) ts.set_verify_callback(asio::ssl::host_name_verification(name));
    auto [hec] = co_await ts.async_handshake(asio::ssl::stream_base::client, use_tuple);
    if (hec) co_return make_error(hec, "TLS handshake with " + opts.address);
    co_return std::make_unique<connection>(std::move(ts));
  }

  awaitable<result<std::unique_ptr<connection>>> acquire(std::chrono::steady_clock::time_point deadline) {
    for (;;) {
      while (!idle.empty()) {
        auto c = std::move(idle.back());
        idle.pop_back();
        if (!c->peer_closed()) co_return c;
        c->close();
        --open;
      }
      if (open < opts.max_connections) {
        ++open;
        // The slot is given back on failure, and also when a co_await throws (Asio 1.81
        // throws operation_aborted from the next co_await of a cancelled coroutine), so a
        // stop in the middle of a connect cannot leak it.
        struct slot_guard {
          explicit slot_guard(impl* s) : self(s) {}
          ~slot_guard() {
            if (!keep) {
              --self->open;
              self->wake_one();
            }
          }
          impl* self;
          bool keep = false;
        } slot(this);
        auto c = co_await connect(deadline);
        slot.keep = bool(c);
        co_return c;
      }
      auto w = std::make_shared<waiter>(ex);
      w->timer.expires_at(deadline);
      waiters.push_back(w);
      auto [ec] = co_await w->timer.async_wait(use_tuple);
      if (w->granted) continue;
      w->granted = true;  // withdrawn: wake_one skips it
      if (!ec) co_return make_error(errc::timeout, "waiting for a connection to " + opts.address);
      co_return make_error(ec, "waiting for a connection");
    }
  }

  template <class Stream>
  static awaitable<boost::system::error_code> exchange(Stream& s, beast::flat_buffer& buffer,
                                                       http::request<http::string_body>& req,
                                                       http::response_parser<http::string_body>& parser,
                                                       bool& wrote) {
    auto [wec, wn] = co_await http::async_write(s, req, use_tuple);
    if (wec) co_return wec;
    wrote = true;
    auto [hec, hn] = co_await http::async_read_header(s, buffer, parser, use_tuple);
    boost::system::error_code ec = hec;
    // Beast 1.81 asserts on an empty chunked body cut after "0\r\n": see util/chunked_guard.hpp.
    if (!ec) ec = co_await util::read_past_short_last_chunk(s, buffer, parser);
    if (!ec && !parser.is_done()) {
      auto [rec, rn] = co_await http::async_read(s, buffer, parser, use_tuple);
      ec = rec;
    }
    co_return ec;
  }

  awaitable<result<http_response>> send_once(method m, const std::string& target,
                                             const std::string& body,
                                             std::chrono::steady_clock::time_point deadline,
                                             bool& retry_fresh) {
    retry_fresh = false;
    auto self = shared_from_this();
    auto conn = co_await acquire(deadline);
    if (!conn) co_return conn.error();
    auto c = std::move(*conn);
    bool was_reused = c->reused;
    // A co_await below that throws must still give the connection's slot back.
    struct connection_guard {
      connection_guard(impl* s, std::unique_ptr<connection>& x) : self(s), conn(x) {}
      ~connection_guard() {
        if (conn) self->release(std::move(conn), false);
      }
      impl* self;
      std::unique_ptr<connection>& conn;
    } guard(this, c);

    http::request<http::string_body> req{to_verb(m), opts.path_prefix + target, 11};
    req.set(http::field::host, host_header);
    req.set(http::field::user_agent, "esmd");
    if (!opts.token.empty()) req.set("X-Consul-Token", opts.token);
    if (!opts.http_auth.empty())
      req.set(http::field::authorization, "Basic " + util::base64_encode(opts.http_auth));
    if (!body.empty()) req.set(http::field::content_type, "application/json");
    req.body() = body;
    req.keep_alive(true);
    req.prepare_payload();

    http::response_parser<http::string_body> parser;
    parser.body_limit(max_body_bytes);
    parser.header_limit(max_header_bytes);

    c->expires_at(deadline);
    bool wrote = false;
    boost::system::error_code ec = co_await std::visit(
        [&](auto& s) { return exchange(s, c->buffer, req, parser, wrote); }, c->stream);
    ++stats.requests;
    if (ec) {
      release(std::move(c), false);
      // A keep-alive connection the server closed while idle: try once more on a new one,
      // unless the request may have been processed (it was written and is not a read).
      if (was_reused && stale_keepalive(ec) && (!wrote || m == method::get)) {
        retry_fresh = true;
      }
      if (ec == beast::error::timeout)
        co_return error{make_error_code(errc::timeout), 0, "request to " + opts.address + " timed out"};
      co_return make_error(ec, "request to " + opts.address);
    }
    auto& res = parser.get();
    http_response out;
    out.status = res.result_int();
    if (auto it = res.find("X-Consul-Index"); it != res.end()) out.meta.last_index = parse_u64(it->value());
    if (auto it = res.find("X-Consul-KnownLeader"); it != res.end()) out.meta.known_leader = it->value() == "true";
    if (auto it = res.find("X-Consul-LastContact"); it != res.end())
      out.meta.last_contact = std::chrono::milliseconds(parse_u64(it->value()));
    bool reusable = res.keep_alive();
    out.body = std::move(res.body());
    release(std::move(c), reusable);
    co_return out;
  }
};

transport::transport(asio::any_io_executor ex, connection_options opts)
    : impl_(std::make_shared<impl>(ex, std::move(opts))) {}

transport::~transport() {
  for (auto& c : impl_->idle) c->close();
  impl_->idle.clear();
}

awaitable<result<http_response>> transport::send(method m, std::string target, std::string body,
                                                 std::chrono::milliseconds timeout) {
  auto self = impl_;
  if (timeout.count() <= 0) timeout = self->opts.request_timeout;
  auto deadline = std::chrono::steady_clock::now() + timeout;
  bool retry_fresh = false;
  auto r = co_await self->send_once(m, target, body, deadline, retry_fresh);
  if (!r && retry_fresh) {
    // Drop the other idle connections too: the server has probably closed them all.
    for (auto& c : self->idle) {
      c->close();
      --self->open;
    }
    self->idle.clear();
    r = co_await self->send_once(m, target, body, deadline, retry_fresh);
  }
  co_return r;
}

const connection_options& transport::options() const { return impl_->opts; }

transport_stats transport::stats() const {
  auto s = impl_->stats;
  s.open_connections = impl_->open;
  s.idle_connections = impl_->idle.size();
  return s;
}

void transport::close_idle() {
  for (auto& c : impl_->idle) {
    c->close();
    --impl_->open;
  }
  impl_->idle.clear();
}

}  // namespace esm::consul
