// libFuzzer target: what a check target answers an HTTP or HTTPS check. The first input byte
// picks options (bit 0 https, 1 HEAD, 2 no redirects, 3 POST, 4-5 how the answer is cut into
// writes: fuzz_net::piece, 6 TLSSkipVerify); the rest is what a server on 127.0.0.1 sends
// back on every connection the probe opens (a redirect to the same server gets the same bytes
// again), then it closes its side. The real probe runs
// (run_probe -> http_probe.cpp: Beast's response parser with the probe's header limit, the
// probe's own body limit, the deadline, Go's redirect policy, OpenSSL for https), with the
// limits made small so that inputs of a few KiB reach them.
//
// Asserted for every input: the probe completes (no exception, no crash, no sanitizer
// report) within its timeout plus a margin; its output is bounded by the limits; passing and
// warning come only with a 2xx / 429 status line in Consul's output form; at most 10
// connections (Go's redirect limit); every connection closed when the probe returns.
//
// Found with it: Beast 1.81's assertion on an empty chunked body arriving in pieces (corpus
// file crash-beast-empty-chunked-body; guarded in http_probe.cpp).
//
// The process moves into a private network namespace first (loopback.hpp), so a Location
// naming another host reaches nothing; without one, redirects are never followed.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/tcp_stream.hpp>

#include "esm/probe/probe.hpp"
#include "loopback.hpp"

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
using asio::ip::tcp;
using namespace std::chrono_literals;
constexpr auto token = asio::as_tuple(asio::use_awaitable);
constexpr auto check_timeout = 2s;

struct state {
  asio::io_context io;
  tcp::acceptor acceptor{io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0)};
  esm::probe::probe_context ctx;
  bool sandboxed = false;
  // What every connection gets during the current input.
  std::size_t sessions = 0;  // server connections still open
  std::string answer;
  bool tls = false;
  unsigned pieces = 0;  // how the answer is cut into writes: fuzz_net::piece
  std::size_t accepted = 0;
};
state* st = nullptr;

asio::awaitable<void> serve(tcp::socket sock) {
  struct count {
    count() { ++st->sessions; }
    ~count() { --st->sessions; }
  } counted;
  const std::string answer = st->answer;
  const bool tls = st->tls;
  const unsigned pieces = st->pieces;
  beast::tcp_stream s(std::move(sock));
  s.expires_after(10s);
  boost::system::error_code nd;
  s.socket().set_option(tcp::no_delay(true), nd);  // small writes go out as they are
  // The request head (https: the ClientHello, whatever one read brings).
  std::string req;
  char buf[4096];
  for (;;) {
    auto [ec, n] = co_await s.async_read_some(asio::buffer(buf), token);
    req.append(buf, n);
    if (ec) co_return;
    if (tls || req.find("\r\n\r\n") != std::string::npos || req.size() > 65536) break;
  }
  for (std::size_t at = 0; at < answer.size();) {
    const std::size_t n = fuzz_net::piece(pieces, at, answer.size() - at);
    auto [ec, w] = co_await asio::async_write(s, asio::buffer(answer.data() + at, n), token);
    (void)w;
    if (ec) break;
    at += n;
  }
  boost::system::error_code ignored;
  s.socket().shutdown(tcp::socket::shutdown_send, ignored);
  // Until the probe closes (it may still be sending, or reading a TLS alert reply).
  for (;;) {
    auto [ec, n] = co_await s.async_read_some(asio::buffer(buf), token);
    (void)n;
    if (ec) break;
  }
}

asio::awaitable<void> accept_loop() {
  for (;;) {
    auto [ec, sock] = co_await st->acceptor.async_accept(token);
    if (ec) continue;
    ++st->accepted;
    asio::co_spawn(st->io, serve(std::move(sock)), asio::detached);
  }
}

bool starts_with(const std::string& s, const std::string& p) { return s.compare(0, p.size(), p) == 0; }

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  bool sandboxed = fuzz_net::enter_private_network();
  st = new state;  // never freed: reachable from a global, so not a leak
  st->sandboxed = sandboxed;
  st->ctx.limits.max_header_bytes = 1024;
  st->ctx.limits.max_body_bytes = 2048;
  st->ctx.limits.output_max_bytes = 512;
  asio::co_spawn(st->io, accept_loop(), asio::detached);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  const std::uint8_t opt = data[0];
  st->answer.assign(reinterpret_cast<const char*>(data) + 1, size - 1);
  st->tls = opt & 0x01;
  st->pieces = (opt >> 4) & 3;

  esm::probe::http_spec spec;
  spec.url = std::string(st->tls ? "https" : "http") + "://127.0.0.1:" +
             std::to_string(st->acceptor.local_endpoint().port()) + "/health?x=1";
  const std::string method = (opt & 0x02) ? "HEAD" : (opt & 0x08) ? "POST" : "GET";
  if (method != "GET") spec.method = method;
  if (method == "POST") spec.body = "{\"probe\":1}";
  spec.disable_redirects = (opt & 0x04) || !st->sandboxed;
  spec.tls_skip_verify = (opt & 0x40) != 0;
  spec.timeout = check_timeout;

  const std::size_t accepted_before = st->accepted;
  std::optional<esm::probe::probe_result> out;
  const auto start = std::chrono::steady_clock::now();
  const esm::probe::probe_spec pspec = spec;  // run_probe keeps a reference until it completes
  asio::co_spawn(st->io, esm::probe::run_probe(pspec, st->ctx),
                 [&](std::exception_ptr e, esm::probe::probe_result r) {
                   if (e) __builtin_trap();  // a probe never throws
                   out = std::move(r);
                 });
  // A hang: the probe outlived its own timeout by far.
  if (!fuzz_net::run_until(st->io, [&] { return out.has_value(); }, check_timeout + 3s)) __builtin_trap();
  const auto elapsed = std::chrono::steady_clock::now() - start;
  if (elapsed > check_timeout + 1s) __builtin_trap();
  // The probe closes its connections on every path: the server's side sees that and ends
  // (this also frees what the input allocated, sparing libFuzzer's leak check a full scan).
  if (!fuzz_net::run_until(st->io, [] { return st->sessions == 0; }, 3s)) {
    std::fputs("a connection of the probe stayed open after it returned\n", stderr);
    __builtin_trap();
  }

  const auto& lim = st->ctx.limits;
  const auto& r = *out;
  if (r.output.empty()) __builtin_trap();
  // The status text, a Location (twice: in the text and in the URL it makes) and the body's
  // tail are what the peer controls in an output.
  if (r.output.size() > 3 * lim.max_header_bytes + lim.output_max_bytes + 2 * spec.url.size() + 512)
    __builtin_trap();
  const std::string ok_prefix = "HTTP " + method + " " + spec.url + ": ";
  if (r.status == esm::probe::check_status::passing && !starts_with(r.output, ok_prefix + "2")) __builtin_trap();
  if (r.status == esm::probe::check_status::warning && !starts_with(r.output, ok_prefix + "429")) __builtin_trap();
  if (st->accepted - accepted_before > 10) __builtin_trap();
  return 0;
}
