// Internal: a client HTTP/2 connection on nghttp2, driven from a coroutine over any Asio
// stream (plain TCP for h2c prior knowledge, or TLS with ALPN h2). nghttp2 does the framing
// in memory (nghttp2_session_mem_send / mem_recv); pump() moves the bytes.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/error.hpp>
#include <nghttp2/nghttp2.h>

#include "esm/probe/net.hpp"

namespace esm::probe::detail {

class h2_client {
 public:
  struct response {
    std::multimap<std::string, std::string> headers;   // the first header block
    std::multimap<std::string, std::string> trailers;  // a later block
    std::string data;
    bool data_overflow = false;
    // A header block over max_header_list (HPACK lets a few bytes stand for a large field
    // already in the table, so the block's size on the wire bounds nothing): its further
    // fields are dropped and the stream is reset.
    bool headers_overflow = false;
    std::size_t header_bytes = 0, trailer_bytes = 0;  // as RFC 9113 counts: name + value + 32
    bool closed = false;
    std::uint32_t rst_error = 0;
  };

  // What we advertise as SETTINGS_MAX_HEADER_LIST_SIZE and hold per header block.
  static constexpr std::size_t max_header_list = 64 * 1024;

  // max_data: response bytes kept per stream; a stream sending more is reset.
  explicit h2_client(std::size_t max_data);
  ~h2_client();
  h2_client(const h2_client&) = delete;
  h2_client& operator=(const h2_client&) = delete;

  bool ok() const noexcept { return session_ != nullptr; }

  // Queues a request with the given pseudo-headers and headers and body; returns the
  // stream id (< 0 on failure).
  std::int32_t submit_request(const std::vector<std::pair<std::string, std::string>>& headers,
                              std::string body);
  bool submit_ping();

  const response* find(std::int32_t stream) const;
  bool ping_acked() const noexcept { return ping_acked_; }
  bool goaway() const noexcept { return goaway_; }

  enum class pump_error { none, timeout, cancelled, io, protocol, closed };
  struct pump_result {
    pump_error error = pump_error::none;
    std::string text;  // Go-like text of the failure
  };

  // Writes what nghttp2 has queued and reads until done() holds, the deadline passes, the
  // peer closes, or an error. Honours terminal cancellation.
  template <class Stream, class Done>
  boost::asio::awaitable<pump_result> pump(Stream& stream, clock::time_point deadline, Done done);

 private:
  static int on_header(nghttp2_session*, const nghttp2_frame*, const std::uint8_t*, std::size_t,
                       const std::uint8_t*, std::size_t, std::uint8_t, void*);
  static int on_data_chunk(nghttp2_session*, std::uint8_t, std::int32_t, const std::uint8_t*,
                           std::size_t, void*);
  static int on_frame_recv(nghttp2_session*, const nghttp2_frame*, void*);
  static int on_stream_close(nghttp2_session*, std::int32_t, std::uint32_t, void*);
  static ssize_t read_body(nghttp2_session*, std::int32_t, std::uint8_t*, std::size_t,
                           std::uint32_t*, nghttp2_data_source*, void*);

  nghttp2_session* session_ = nullptr;
  std::size_t max_data_;
  std::map<std::int32_t, response> streams_;
  std::map<std::int32_t, std::pair<std::string, std::size_t>> bodies_;  // body, offset sent
  bool ping_acked_ = false;
  bool goaway_ = false;
  bool got_frame_ = false;
};

template <class Stream, class Done>
boost::asio::awaitable<h2_client::pump_result> h2_client::pump(Stream& stream,
                                                               clock::time_point deadline,
                                                               Done done) {
  namespace asio = boost::asio;
  constexpr auto token = asio::as_tuple(asio::use_awaitable);
  std::array<std::uint8_t, 16 * 1024> in{};
  std::string out;
  auto fail = [](pump_error e, std::string text) { return pump_result{e, std::move(text)}; };
  // Bounded: every pass either makes progress on the socket or returns; the deadline ends
  // a peer that keeps the connection busy.
  for (;;) {
    for (;;) {
      const std::uint8_t* data = nullptr;
      auto n = nghttp2_session_mem_send(session_, &data);
      if (n < 0) co_return fail(pump_error::protocol, nghttp2_strerror(static_cast<int>(n)));
      if (n == 0) break;
      out.append(reinterpret_cast<const char*>(data), static_cast<std::size_t>(n));
    }
    if (!out.empty()) {
      auto [ec, n] = co_await asio::async_write(stream, asio::buffer(out), token);
      (void)n;
      out.clear();
      auto cs = co_await asio::this_coro::cancellation_state;
      if (cancelled(cs.cancelled())) co_return fail(pump_error::cancelled, "operation was canceled");
      if (ec == boost::beast::error::timeout) co_return fail(pump_error::timeout, "context deadline exceeded");
      if (ec) co_return fail(pump_error::io, go_error_text(ec));
    }
    if (done()) co_return pump_result{};
    if (clock::now() >= deadline) co_return fail(pump_error::timeout, "context deadline exceeded");
    if (!nghttp2_session_want_read(session_) && !nghttp2_session_want_write(session_))
      co_return fail(pump_error::closed, goaway_ ? "server sent GOAWAY and closed the connection"
                                                 : "connection closed");
    auto [ec, n] = co_await stream.async_read_some(asio::buffer(in), token);
    auto cs = co_await asio::this_coro::cancellation_state;
    if (cancelled(cs.cancelled())) co_return fail(pump_error::cancelled, "operation was canceled");
    if (ec == boost::beast::error::timeout) co_return fail(pump_error::timeout, "context deadline exceeded");
    if (ec == asio::error::eof || ec == asio::ssl::error::stream_truncated)
      co_return fail(pump_error::closed, got_frame_ ? "unexpected EOF" : "EOF");
    if (ec) co_return fail(pump_error::io, go_error_text(ec));
    auto rv = nghttp2_session_mem_recv(session_, in.data(), n);
    if (rv < 0) {
      std::string text = nghttp2_strerror(static_cast<int>(rv));
      if (!got_frame_ && n >= 5 && std::string_view(reinterpret_cast<const char*>(in.data()), 5) == "HTTP/")
        text = "the server answered with HTTP/1.x, not HTTP/2";
      co_return fail(pump_error::protocol, std::move(text));
    }
  }
}

}  // namespace esm::probe::detail
