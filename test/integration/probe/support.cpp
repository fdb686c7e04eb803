#include "support.hpp"

#include <chrono>
#include <doctest/doctest.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <thread>

#include <fcntl.h>
#include <poll.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>
#include <openssl/ssl.h>

namespace probe_test {

namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = asio::ssl;
using asio::ip::tcp;
using asio::ip::udp;
constexpr auto token = asio::as_tuple(asio::use_awaitable);

probe_result run_one(asio::io_context& ioc, const esm::probe::probe_spec& spec,
                     esm::probe::probe_context& ctx, std::chrono::steady_clock::duration* elapsed,
                     std::chrono::seconds limit) {
  std::optional<probe_result> out;
  auto start = std::chrono::steady_clock::now();
  std::chrono::steady_clock::time_point end;
  asio::co_spawn(ioc, esm::probe::run_probe(spec, ctx),
                 [&](std::exception_ptr e, probe_result r) {
                   end = std::chrono::steady_clock::now();
                   if (!e) out = std::move(r);
                   ioc.stop();
                 });
  ioc.restart();
  ioc.run_for(limit);
  ioc.restart();
  REQUIRE_MESSAGE(out.has_value(), "the probe did not finish within the hard limit");
  if (elapsed) *elapsed = end - start;
  return *out;
}

namespace {

unsigned short ephemeral_tcp() {
  asio::io_context ioc;
  tcp::acceptor a(ioc, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  return a.local_endpoint().port();
}

}  // namespace

unsigned short refused_tcp_port() { return ephemeral_tcp(); }

unsigned short refused_udp_port() {
  asio::io_context ioc;
  udp::socket s(ioc, udp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  return s.local_endpoint().port();
}

// ---------------------------------------------------------------------------------------
// PKI

namespace {

void sh(const std::string& cmd) {
  std::string full = cmd + " >/dev/null 2>&1";
  if (std::system(full.c_str()) != 0) throw std::runtime_error("command failed: " + cmd);
}

void write_file(const std::string& path, const std::string& text) {
  std::ofstream f(path);
  f << text;
}

}  // namespace

test_pki::test_pki() {
  char tmpl[] = "/tmp/esmd-probe-pki-XXXXXX";
  if (!mkdtemp(tmpl)) throw std::runtime_error("mkdtemp failed");
  dir = tmpl;
  ca_pem = dir + "/ca.pem";
  server_pem = dir + "/server.pem";
  server_key = dir + "/server.key";
  client_pem = dir + "/client.pem";
  client_key = dir + "/client.key";
  other_ca_pem = dir + "/other-ca.pem";
  const std::string ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
  write_file(dir + "/server.ext",
             "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n");
  write_file(dir + "/client.ext", "extendedKeyUsage=clientAuth\n");
  sh("openssl req -x509 " + ec + " -keyout " + dir + "/ca.key -out " + ca_pem +
     " -days 2 -subj /CN=esmd-test-ca");
  sh("openssl req -x509 " + ec + " -keyout " + dir + "/other-ca.key -out " + other_ca_pem +
     " -days 2 -subj /CN=esmd-other-ca");
  sh("openssl req " + ec + " -keyout " + server_key + " -out " + dir + "/server.csr -subj /CN=localhost");
  sh("openssl x509 -req -in " + dir + "/server.csr -CA " + ca_pem + " -CAkey " + dir +
     "/ca.key -CAcreateserial -out " + server_pem + " -days 2 -extfile " + dir + "/server.ext");
  sh("openssl req " + ec + " -keyout " + client_key + " -out " + dir + "/client.csr -subj /CN=esmd-client");
  sh("openssl x509 -req -in " + dir + "/client.csr -CA " + ca_pem + " -CAkey " + dir +
     "/ca.key -CAcreateserial -out " + client_pem + " -days 2 -extfile " + dir + "/client.ext");
  sh("mkdir " + dir + "/ca-dir && cp " + ca_pem + " " + dir + "/ca-dir/ca.pem");
}

test_pki::~test_pki() {
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
}

namespace {

int select_h2(SSL*, const unsigned char** out, unsigned char* outlen, const unsigned char* in,
              unsigned int inlen, void*) {
  static const unsigned char h2[] = {2, 'h', '2'};
  unsigned char* o = nullptr;
  if (SSL_select_next_proto(&o, outlen, h2, sizeof h2, in, inlen) != OPENSSL_NPN_NEGOTIATED)
    return SSL_TLSEXT_ERR_NOACK;
  *out = o;
  return SSL_TLSEXT_ERR_OK;
}

}  // namespace

std::unique_ptr<ssl::context> server_tls(const test_pki& pki, bool require_client_cert,
                                         const std::string& alpn) {
  auto ctx = std::make_unique<ssl::context>(ssl::context::tls_server);
  ctx->use_certificate_chain_file(pki.server_pem);
  ctx->use_private_key_file(pki.server_key, ssl::context::pem);
  if (require_client_cert) {
    ctx->load_verify_file(pki.ca_pem);
    ctx->set_verify_mode(ssl::verify_peer | ssl::verify_fail_if_no_peer_cert);
  }
  if (alpn == "h2") SSL_CTX_set_alpn_select_cb(ctx->native_handle(), select_h2, nullptr);
  return ctx;
}

// ---------------------------------------------------------------------------------------
// HTTP server

struct http_server::impl : std::enable_shared_from_this<impl> {
  impl(asio::io_context& ioc, ssl::context* t)
      : acceptor(ioc, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0)), tls(t) {}
  tcp::acceptor acceptor;
  ssl::context* tls;
  std::vector<http_request_seen>* seen = nullptr;
  std::size_t* stream_bytes = nullptr;
  bool alive = true;

  static std::string response(int code, std::string_view reason, const std::string& body,
                              const std::string& extra = {}) {
    return "HTTP/1.1 " + std::to_string(code) + " " + std::string(reason) + "\r\n" + extra +
           "Content-Length: " + std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body;
  }

  std::string route(const http_request_seen& r) {
    const std::string& t = r.target;
    if (t == "/ok") return response(200, "OK", "hello");
    if (t == "/busy") return response(429, "Too Many Requests", "slow down");
    if (t == "/fail") return response(500, "Internal Server Error", "boom");
    if (t == "/teapot") return response(418, "I'm a teapot", "");
    if (t.rfind("/redirect/", 0) == 0) {
      int n = std::stoi(t.substr(10));
      if (n == 0) return response(200, "OK", "arrived");
      return response(302, "Found", "", "Location: /redirect/" + std::to_string(n - 1) + "\r\n");
    }
    if (t == "/loop") return response(302, "Found", "", "Location: /loop\r\n");
    if (t == "/abs-redirect")
      return response(302, "Found", "",
                      "Location: http://127.0.0.1:" + std::to_string(acceptor.local_endpoint().port()) +
                          "/ok\r\n");
    if (t == "/307") return response(307, "Temporary Redirect", "", "Location: /echo\r\n");
    if (t == "/303") return response(303, "See Other", "", "Location: /echo\r\n");
    if (t == "/noloc") return response(302, "Found", "no location");
    if (t == "/big") {
      std::string body;
      for (int i = 0; body.size() < 10000; ++i) body += "line " + std::to_string(i) + "\n";
      body.resize(10000);
      return response(200, "OK", body);
    }
    if (t == "/echo") {
      std::string body = r.method + " " + r.target + "\n";
      for (const auto& [k, v] : r.headers) body += k + ": " + v + "\n";
      body += "\n" + r.body;
      return response(200, "OK", body);
    }
    if (t == "/huge-header") {
      return "HTTP/1.1 200 OK\r\nX-Big: " + std::string(100 * 1024, 'a') +
             "\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok";
    }
    if (t == "/headonly") return "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\n";
    return response(404, "Not Found", "no route " + t);
  }

  template <class Stream>
  asio::awaitable<void> serve(Stream& stream) {
    beast::flat_buffer buf;
    http::request_parser<http::string_body> p;
    p.header_limit(64 * 1024);
    p.body_limit(1024 * 1024);
    auto [ec, n] = co_await http::async_read(stream, buf, p, token);
    if (ec) co_return;
    http_request_seen r;
    r.method = std::string(p.get().method_string());
    r.target = std::string(p.get().target());
    r.body = p.get().body();
    for (const auto& f : p.get()) {
      std::string name(f.name_string());
      std::transform(name.begin(), name.end(), name.begin(),
                     [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
      r.headers.emplace(name, std::string(f.value()));
    }
    if (alive && seen) seen->push_back(r);
    if (r.target == "/stream") {
      std::string head = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
      auto [hec, hn] = co_await asio::async_write(stream, asio::buffer(head), token);
      if (hec) co_return;
      std::string chunk = "4000\r\n" + std::string(0x4000, 'x') + "\r\n";
      // Bounded in time, not in bytes: loopback moves 256 MiB in well under a second, and a
      // probe whose timeout must cut the body needs it to last longer than that timeout.
      const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(20);
      while (std::chrono::steady_clock::now() < until) {
        auto [wec, wn] = co_await asio::async_write(stream, asio::buffer(chunk), token);
        if (wec) break;
        if (alive && stream_bytes) *stream_bytes += 0x4000;
      }
      co_return;
    }
    std::string out = route(r);
    co_await asio::async_write(stream, asio::buffer(out), token);
  }

  static asio::awaitable<void> session(std::shared_ptr<impl> self, tcp::socket sock) {
    if (self->tls) {
      beast::ssl_stream<beast::tcp_stream> s(std::move(sock), *self->tls);
      s.next_layer().expires_after(30s);
      auto [ec] = co_await s.async_handshake(ssl::stream_base::server, token);
      if (ec) co_return;
      co_await self->serve(s);
      s.next_layer().expires_after(2s);
      co_await s.async_shutdown(token);
    } else {
      beast::tcp_stream s(std::move(sock));
      s.expires_after(30s);
      co_await self->serve(s);
      s.socket().shutdown(tcp::socket::shutdown_send);
    }
  }

  static asio::awaitable<void> accept_loop(std::shared_ptr<impl> self) {
    for (;;) {
      auto [ec, sock] = co_await self->acceptor.async_accept(token);
      if (ec) co_return;
      asio::co_spawn(self->acceptor.get_executor(), session(self, std::move(sock)), asio::detached);
    }
  }
};

http_server::http_server(asio::io_context& ioc, ssl::context* tls)
    : impl_(std::make_shared<impl>(ioc, tls)) {
  impl_->seen = &seen;
  impl_->stream_bytes = &stream_bytes_sent;
  asio::co_spawn(ioc, impl::accept_loop(impl_), asio::detached);
}
http_server::~http_server() {
  impl_->alive = false;
  impl_->seen = nullptr;
  impl_->stream_bytes = nullptr;
  boost::system::error_code ec;
  impl_->acceptor.close(ec);
}
unsigned short http_server::port() const { return impl_->acceptor.local_endpoint().port(); }
std::string http_server::url(const std::string& path) const {
  return std::string(impl_->tls ? "https" : "http") + "://127.0.0.1:" + std::to_string(port()) + path;
}

// ---------------------------------------------------------------------------------------
// Raw HTTP server

struct raw_http_server::impl {
  explicit impl(asio::io_context& ioc)
      : acceptor(ioc, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0)) {}
  tcp::acceptor acceptor;
  int accepted = 0;
  std::vector<std::shared_ptr<std::string>> bytes;  // one per connection

  static asio::awaitable<void> session(std::shared_ptr<impl> self, tcp::socket sock) {
    auto raw = std::make_shared<std::string>();
    self->bytes.push_back(raw);
    beast::tcp_stream s(std::move(sock));
    s.expires_after(10s);
    std::array<char, 4096> buf{};
    bool answered = false;
    // Reads until the client closes, so that bytes after the first head (a smuggled second
    // request) are recorded too; bounded by the expiry and by size.
    while (raw->size() < 1024 * 1024) {
      auto [ec, n] = co_await s.async_read_some(asio::buffer(buf), token);
      raw->append(buf.data(), n);
      if (ec) break;
      if (!answered && raw->find("\r\n\r\n") != std::string::npos) {
        answered = true;
        std::string out = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok";
        auto [wec, wn] = co_await asio::async_write(s, asio::buffer(out), token);
        if (wec) break;
      }
    }
  }

  static asio::awaitable<void> accept_loop(std::shared_ptr<impl> self) {
    for (;;) {
      auto [ec, sock] = co_await self->acceptor.async_accept(token);
      if (ec) co_return;
      ++self->accepted;
      asio::co_spawn(self->acceptor.get_executor(), session(self, std::move(sock)), asio::detached);
    }
  }
};

raw_http_server::raw_http_server(asio::io_context& ioc) : impl_(std::make_shared<impl>(ioc)) {
  asio::co_spawn(ioc, impl::accept_loop(impl_), asio::detached);
}
raw_http_server::~raw_http_server() {
  boost::system::error_code ec;
  impl_->acceptor.close(ec);
}
unsigned short raw_http_server::port() const { return impl_->acceptor.local_endpoint().port(); }
std::string raw_http_server::url(const std::string& path) const {
  return "http://127.0.0.1:" + std::to_string(port()) + path;
}
int raw_http_server::accepted() const { return impl_->accepted; }
std::string raw_http_server::all_bytes() const {
  std::string out;
  for (const auto& b : impl_->bytes) out += *b;
  return out;
}

// ---------------------------------------------------------------------------------------
// Silent TCP server

struct silent_tcp_server::impl {
  impl(asio::io_context& ioc, ssl::context* t)
      : acceptor(ioc, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0)), tls(t) {}
  tcp::acceptor acceptor;
  ssl::context* tls;
  int accepted = 0;
  std::vector<std::shared_ptr<beast::ssl_stream<beast::tcp_stream>>> tls_held;
  std::vector<std::shared_ptr<tcp::socket>> held;

  static asio::awaitable<void> accept_loop(std::shared_ptr<impl> self) {
    for (;;) {
      auto [ec, sock] = co_await self->acceptor.async_accept(token);
      if (ec) co_return;
      ++self->accepted;
      if (self->tls) {
        auto s = std::make_shared<beast::ssl_stream<beast::tcp_stream>>(std::move(sock), *self->tls);
        self->tls_held.push_back(s);
        s->async_handshake(ssl::stream_base::server, [s](boost::system::error_code) {});
      } else {
        self->held.push_back(std::make_shared<tcp::socket>(std::move(sock)));
      }
    }
  }
};

silent_tcp_server::silent_tcp_server(asio::io_context& ioc, ssl::context* tls)
    : impl_(std::make_shared<impl>(ioc, tls)) {
  asio::co_spawn(ioc, impl::accept_loop(impl_), asio::detached);
}
silent_tcp_server::~silent_tcp_server() {
  boost::system::error_code ec;
  impl_->acceptor.close(ec);
  for (auto& s : impl_->held) s->close(ec);
  for (auto& s : impl_->tls_held) s->next_layer().close();
}
unsigned short silent_tcp_server::port() const { return impl_->acceptor.local_endpoint().port(); }
int silent_tcp_server::accepted() const { return impl_->accepted; }

// ---------------------------------------------------------------------------------------
// UDP server

struct udp_server::impl {
  impl(asio::io_context& ioc, bool a)
      : sock(ioc, udp::endpoint(asio::ip::make_address("127.0.0.1"), 0)), answer(a) {}
  udp::socket sock;
  bool answer;
  int received = 0;

  static asio::awaitable<void> loop(std::shared_ptr<impl> self) {
    std::array<char, 2048> buf{};
    for (int i = 0; i < 100000; ++i) {
      udp::endpoint from;
      auto [ec, n] = co_await self->sock.async_receive_from(asio::buffer(buf), from, token);
      if (ec == asio::error::operation_aborted || !self->sock.is_open()) co_return;
      if (ec) continue;
      ++self->received;
      if (self->answer) co_await self->sock.async_send_to(asio::buffer("pong", 4), from, token);
    }
  }
};

udp_server::udp_server(asio::io_context& ioc, bool answer)
    : impl_(std::make_shared<impl>(ioc, answer)) {
  asio::co_spawn(ioc, impl::loop(impl_), asio::detached);
}
udp_server::~udp_server() {
  boost::system::error_code ec;
  impl_->sock.close(ec);
}
unsigned short udp_server::port() const { return impl_->sock.local_endpoint().port(); }
int udp_server::received() const { return impl_->received; }

// ---------------------------------------------------------------------------------------
// Child process

child_process::child_process(const std::vector<std::string>& argv, std::chrono::seconds limit) {
  int fds[2];
  if (pipe(fds) != 0) throw std::runtime_error("pipe failed");
  pid_ = fork();
  if (pid_ < 0) throw std::runtime_error("fork failed");
  if (pid_ == 0) {
    dup2(fds[1], 1);
    close(fds[0]);
    close(fds[1]);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    execv(args[0], args.data());
    _exit(127);
  }
  close(fds[1]);
  auto deadline = std::chrono::steady_clock::now() + limit;
  char c;
  while (std::chrono::steady_clock::now() < deadline) {
    pollfd p{fds[0], POLLIN, 0};
    if (poll(&p, 1, 200) <= 0) continue;
    if (read(fds[0], &c, 1) != 1) break;
    if (c == '\n') break;
    line_ += c;
  }
  close(fds[0]);
}

child_process::~child_process() {
  if (pid_ <= 0) return;
  kill(pid_, SIGTERM);
  for (int i = 0; i < 100; ++i) {  // up to 5 s
    if (waitpid(pid_, nullptr, WNOHANG) == pid_) return;
    std::this_thread::sleep_for(50ms);
  }
  kill(pid_, SIGKILL);
  waitpid(pid_, nullptr, 0);
}

}  // namespace probe_test
