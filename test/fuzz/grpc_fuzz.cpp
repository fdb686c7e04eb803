// libFuzzer target: what a gRPC (or H2PING) check target answers. A server on 127.0.0.1 reads
// the probe's connection preface and sends back HTTP/2 built from the input; the real probe
// runs (run_probe -> grpc_probe.cpp / h2ping_probe.cpp over h2_session: nghttp2 in memory,
// the probe's response limit, the deadline, the gRPC message framing and the
// HealthCheckResponse protobuf decoding, grpc-status / grpc-message).
//
// Input: one byte of options, then records [op][arg][len hi][len lo][len bytes of payload]
// (a short last record takes what is left). nghttp2 is not instrumented, so the records build
// valid frames for it to get past (the header lists are HPACK-encoded by nghttp2's deflater):
//   op % 8: 0 raw bytes; 1 a frame (type arg, flags payload[0], stream payload[1], the rest
//   as its payload); 2 HEADERS on stream 1 from a list [name len][name][value len][value]...
//   (arg bit 0 END_STREAM, bit 7 split into HEADERS + CONTINUATION); 3 DATA on stream 1 with
//   a gRPC message (arg bit 0 compressed flag, bit 1 a length prefix off by arg >> 2, bit 7
//   END_STREAM; payload: the protobuf); 4 response headers (:status 200, or with arg bit 7
//   one of 16 statuses by arg & 15; arg bit 6: END_STREAM, grpc-status 0 and the payload as
//   grpc-message); 5 trailers (grpc-status arg % 20, grpc-message the payload); 6 RST_STREAM
//   (error arg); 7 PING (arg bit 0 ACK, bit 2 the probe's opaque data) or, with arg bit 1,
//   GOAWAY (error arg >> 2).
// Options: bit 0 H2PING instead of gRPC; bit 1 no server SETTINGS first; bits 4-5 the
// answer cut into writes (fuzz_net::piece).
//
// Asserted: the probe completes within its timeout plus a margin, never throws, and its
// output is bounded (what the peer controls in it, grpc-message, is bounded by the header
// list limit); passing only with Consul's success texts; its connection closed when it
// returns. The header list limit itself (h2_session.cpp) is tested with a 300 MB HPACK bomb in
// test/integration/probe/bad_peer_test.cpp: an input here is too short to show the memory.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <nghttp2/nghttp2.h>

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
  std::size_t sessions = 0;  // server connections still open
  std::string answer;
  unsigned pieces = 0;  // fuzz_net::piece
};
state* st = nullptr;

void frame(std::string& out, std::uint8_t type, std::uint8_t flags, std::uint32_t stream,
           std::string_view payload) {
  const auto n = static_cast<std::uint32_t>(std::min<std::size_t>(payload.size(), 0xffffff));
  out += static_cast<char>(n >> 16);
  out += static_cast<char>(n >> 8);
  out += static_cast<char>(n);
  out += static_cast<char>(type);
  out += static_cast<char>(flags);
  out += static_cast<char>((stream >> 24) & 0x7f);
  out += static_cast<char>(stream >> 16);
  out += static_cast<char>(stream >> 8);
  out += static_cast<char>(stream);
  out.append(payload.substr(0, n));
}

// HPACK with one deflater per answer: the probe's inflater sees the blocks in this order.
struct encoder {
  nghttp2_hd_deflater* d = nullptr;
  encoder() { nghttp2_hd_deflate_new(&d, 4096); }
  ~encoder() { nghttp2_hd_deflate_del(d); }
  std::string block(const std::vector<std::pair<std::string, std::string>>& h) {
    std::vector<nghttp2_nv> nva;
    for (const auto& [k, v] : h)
      nva.push_back({reinterpret_cast<std::uint8_t*>(const_cast<char*>(k.data())),
                     reinterpret_cast<std::uint8_t*>(const_cast<char*>(v.data())), k.size(), v.size(),
                     NGHTTP2_NV_FLAG_NONE});
    std::string out(nghttp2_hd_deflate_bound(d, nva.data(), nva.size()), '\0');
    auto n = nghttp2_hd_deflate_hd(d, reinterpret_cast<std::uint8_t*>(out.data()), out.size(),
                                   nva.data(), nva.size());
    out.resize(n < 0 ? 0 : static_cast<std::size_t>(n));
    return out;
  }
};

void headers(std::string& out, encoder& enc, const std::vector<std::pair<std::string, std::string>>& h,
             bool end_stream, bool split) {
  std::string block = enc.block(h);
  const std::uint8_t es = end_stream ? NGHTTP2_FLAG_END_STREAM : 0;
  if (split && block.size() > 1) {
    auto half = block.size() / 2;
    frame(out, NGHTTP2_HEADERS, es, 1, std::string_view(block).substr(0, half));
    frame(out, NGHTTP2_CONTINUATION, NGHTTP2_FLAG_END_HEADERS, 1, std::string_view(block).substr(half));
  } else {
    frame(out, NGHTTP2_HEADERS, es | NGHTTP2_FLAG_END_HEADERS, 1, block);
  }
}

std::string build_answer(const std::uint8_t* p, std::size_t n, bool settings_first) {
  std::string out;
  if (settings_first) {
    frame(out, NGHTTP2_SETTINGS, 0, 0, {});
    frame(out, NGHTTP2_SETTINGS, NGHTTP2_FLAG_ACK, 0, {});
  }
  encoder enc;
  std::size_t at = 0;
  while (at + 2 <= n) {
    const std::uint8_t op = p[at], arg = p[at + 1];
    std::size_t len = at + 4 <= n ? (std::size_t(p[at + 2]) << 8 | p[at + 3]) : 0;
    at = std::min(at + 4, n);
    len = std::min(len, n - at);
    std::string_view pl(reinterpret_cast<const char*>(p) + at, len);
    at += len;
    switch (op % 8) {
      case 0: out.append(pl); break;
      case 1: {
        std::uint8_t flags = pl.size() > 0 ? static_cast<std::uint8_t>(pl[0]) : 0;
        std::uint32_t stream = pl.size() > 1 ? static_cast<std::uint8_t>(pl[1]) : 1;
        frame(out, arg, flags, stream, pl.size() > 2 ? pl.substr(2) : std::string_view());
        break;
      }
      case 2: {
        std::vector<std::pair<std::string, std::string>> h;
        std::size_t i = 0;
        while (i < pl.size()) {
          std::size_t kn = std::min<std::size_t>(static_cast<std::uint8_t>(pl[i++]), pl.size() - i);
          std::string k(pl.substr(i, kn));
          i += kn;
          std::size_t vn = i < pl.size() ? std::min<std::size_t>(static_cast<std::uint8_t>(pl[i++]), pl.size() - i) : 0;
          std::string v(pl.substr(i, vn));
          i += vn;
          h.emplace_back(std::move(k), std::move(v));
        }
        headers(out, enc, h, arg & 1, arg & 0x80);
        break;
      }
      case 3: {
        std::string msg(5, '\0');
        msg[0] = static_cast<char>(arg & 1);
        std::uint32_t mlen = static_cast<std::uint32_t>(pl.size());
        if (arg & 2) mlen += arg >> 2;
        msg[1] = static_cast<char>(mlen >> 24);
        msg[2] = static_cast<char>(mlen >> 16);
        msg[3] = static_cast<char>(mlen >> 8);
        msg[4] = static_cast<char>(mlen);
        msg.append(pl);
        frame(out, NGHTTP2_DATA, (arg & 0x80) ? NGHTTP2_FLAG_END_STREAM : 0, 1, msg);
        break;
      }
      case 4: {
        static const char* const codes[] = {"200", "400", "401", "403", "404", "429", "502", "503",
                                            "504", "500", "204", "301", "100", "0", "abc", "2000"};
        std::vector<std::pair<std::string, std::string>> h{
            {":status", arg >= 0x80 ? codes[arg & 0x0f] : "200"},
            {"content-type", "application/grpc"}};
        if (arg & 0x40) {
          h.emplace_back("grpc-status", "0");
          h.emplace_back("grpc-message", std::string(pl));
        }
        headers(out, enc, h, arg & 0x40, false);
        break;
      }
      case 5:
        headers(out, enc, {{"grpc-status", std::to_string(arg % 20)}, {"grpc-message", std::string(pl)}}, true, false);
        break;
      case 6: {
        std::string code(4, '\0');
        code[3] = static_cast<char>(arg);
        frame(out, NGHTTP2_RST_STREAM, 0, 1, code);
        break;
      }
      case 7: {
        if (arg & 2) {
          std::string g(8, '\0');
          g[3] = 1;  // last stream id 1
          g[7] = static_cast<char>(arg >> 2);
          g.append(pl);
          frame(out, NGHTTP2_GOAWAY, 0, 0, g);
        } else {
          std::string opaque(pl.substr(0, 8));
          if (opaque.size() < 8 && (arg & 4)) opaque = "esmdping";  // what the probe sends
          opaque.resize(8, '\0');
          frame(out, NGHTTP2_PING, (arg & 1) ? NGHTTP2_FLAG_ACK : 0, 0, opaque);
        }
        break;
      }
    }
  }
  return out;
}

asio::awaitable<void> serve(tcp::socket sock) {
  struct count {
    count() { ++st->sessions; }
    ~count() { --st->sessions; }
  } counted;
  const std::string answer = st->answer;
  const unsigned pieces = st->pieces;
  beast::tcp_stream s(std::move(sock));
  s.expires_after(10s);
  boost::system::error_code nd;
  s.socket().set_option(tcp::no_delay(true), nd);  // small writes go out as they are
  std::string got;
  char buf[4096];
  while (got.size() < 24) {  // the client connection preface
    auto [ec, n] = co_await s.async_read_some(asio::buffer(buf), token);
    got.append(buf, n);
    if (ec) co_return;
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
    asio::co_spawn(st->io, serve(std::move(sock)), asio::detached);
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fuzz_net::enter_private_network();  // private ports; the probe dials only 127.0.0.1 here
  st = new state;  // never freed: reachable from a global, so not a leak
  st->ctx.limits.max_h2_response_bytes = 4096;
  asio::co_spawn(st->io, accept_loop(), asio::detached);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  const std::uint8_t opt = data[0];
  st->answer = build_answer(data + 1, size - 1, !(opt & 2));
  st->pieces = (opt >> 4) & 3;
  const std::string addr = "127.0.0.1:" + std::to_string(st->acceptor.local_endpoint().port());
  const bool h2ping = opt & 1;
  esm::probe::probe_spec spec;
  if (h2ping)
    spec = esm::probe::h2ping_spec{.address = addr, .use_tls = false, .timeout = check_timeout};
  else
    spec = esm::probe::grpc_spec{.target = addr + "/svc", .timeout = check_timeout};

  std::optional<esm::probe::probe_result> out;
  const auto start = std::chrono::steady_clock::now();
  asio::co_spawn(st->io, esm::probe::run_probe(spec, st->ctx),
                 [&](std::exception_ptr e, esm::probe::probe_result r) {
                   if (e) __builtin_trap();
                   out = std::move(r);
                 });
  if (!fuzz_net::run_until(st->io, [&] { return out.has_value(); }, check_timeout + 3s)) __builtin_trap();
  if (std::chrono::steady_clock::now() - start > check_timeout + 1s) __builtin_trap();
  // The probe closes its connections on every path: the server's side sees that and ends
  // (this also frees what the input allocated, sparing libFuzzer's leak check a full scan).
  if (!fuzz_net::run_until(st->io, [] { return st->sessions == 0; }, 3s)) {
    std::fputs("a connection of the probe stayed open after it returned\n", stderr);
    __builtin_trap();
  }
  const auto& r = *out;
  if (r.output.empty()) __builtin_trap();
  if (r.output.size() > 64 * 1024 + 1024) __builtin_trap();
  if (r.status == esm::probe::check_status::warning) __builtin_trap();  // never from these probes
  if (r.status == esm::probe::check_status::passing &&
      r.output != (h2ping ? std::string("HTTP2 ping was successful") : "gRPC check " + addr + "/svc: success"))
    __builtin_trap();
  return 0;
}
