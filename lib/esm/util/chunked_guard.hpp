// A guard against an assertion in Beast 1.81's HTTP parser, shared by every place that reads
// an HTTP message with Beast: the HTTP probe and the admin server (peers esmd does not trust)
// and the Consul client (a trusted peer, but a proxy in between can cut a body anywhere).
//
// Beast asserts (BOOST_ASSERT, live unless NDEBUG) that it holds at least 5 bytes when it
// resumes the final chunk of a chunked body, though a first chunk can leave it 3 or 4:
// "0\r\n" arriving alone, then one more byte, aborts the process (upstream
// boostorg/beast#2861, found here by test/fuzz/probe_http_fuzz). While
// may_be_last_chunk_line holds and fewer than 5 bytes are buffered, read_past_short_last_chunk
// reads more before the bytes reach the parser; a valid empty body ("0\r\n\r\n") has 5, so no
// valid message waits, and malformed bytes still reach the parser at once.
#pragma once

#include <cstddef>
#include <string_view>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/basic_parser.hpp>

namespace esm::util {

// Whether `b`, the first bytes of a chunked body, may still be an empty body's last-chunk
// line: zeros, an optional extension, CRLF, then anything.
inline bool may_be_last_chunk_line(std::string_view b) {
  if (b.empty()) return true;
  if (b[0] != '0') return false;
  std::size_t i = 0;
  while (i < b.size() && b[i] == '0') ++i;
  if (i < b.size() && b[i] == ';')
    while (i < b.size() && b[i] != '\r' && b[i] != '\n') ++i;
  if (i == b.size()) return true;
  if (b[i] != '\r') return false;
  return ++i == b.size() || b[i] == '\n';
}

// Call between reading a message's header (http::async_read_header into `buffer`) and reading
// its body (http::async_read with the same buffer and parser): when the body is chunked and
// what is buffered may still be a last-chunk line shorter than 5 bytes, reads on until it
// cannot be. The read error, if any (the peer closed or the stream's deadline passed): the
// message is then incomplete, and the caller handles it as it handles any cut body.
template <class Stream, bool isRequest>
boost::asio::awaitable<boost::system::error_code> read_past_short_last_chunk(
    Stream& stream, boost::beast::flat_buffer& buffer, const boost::beast::http::basic_parser<isRequest>& parser) {
  boost::system::error_code ec;
  if (!parser.chunked() || parser.is_done()) co_return ec;
  while (!ec && buffer.size() < 5 &&
         may_be_last_chunk_line(std::string_view(static_cast<const char*>(buffer.data().data()), buffer.size()))) {
    auto [rec, n] = co_await stream.async_read_some(buffer.prepare(512),
                                                    boost::asio::as_tuple(boost::asio::use_awaitable));
    buffer.commit(n);
    ec = rec;
  }
  co_return ec;
}

}  // namespace esm::util
