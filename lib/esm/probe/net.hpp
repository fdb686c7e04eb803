// Internal: dialling with Go's semantics and error texts, shared by every probe type.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <string_view>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ip/udp.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/system/error_code.hpp>

namespace esm::probe::detail {

using clock = std::chrono::steady_clock;

// Go's spelling of a socket error: strerror in lower case ("connection refused"), "EOF",
// "i/o timeout" for our deadline, "operation was canceled" for cancellation.
std::string go_error_text(const boost::system::error_code& ec);

// "127.0.0.1:80", "[::1]:80".
std::string endpoint_text(const boost::asio::ip::address& a, unsigned short port);

struct host_port {
  std::string host;  // without brackets
  std::string port;
};
// Go's net.SplitHostPort; on failure, err holds Go's text
// ("address 127.0.0.1: missing port in address").
std::optional<host_port> split_host_port(std::string_view hostport, std::string* err);

// The host part of host:port (or the whole text when it has no port), unbracketed.
std::string host_of(std::string_view hostport);

// Resolves host (IP literals without a look-up) and connects the stream to the first
// address that accepts, before `deadline` (the stream's expiry is set to it). Returns empty
// on success, else Go's dial error text, e.g.
// "dial tcp 127.0.0.1:1: connect: connection refused". Honours terminal cancellation.
// A handshake the kernel completes inside connect() (a peer on this host) is seen without a
// wait on the reactor.
boost::asio::awaitable<std::string> dial_tcp(boost::beast::tcp_stream& stream,
                                             const std::string& host, const std::string& port,
                                             clock::time_point deadline);

// The same dial, then the connection is closed at once (a plain TCP check, Go's
// net.DialTimeout and Close). A connection completed inside connect() costs socket(),
// connect(), poll(), getsockopt() and close(), with no epoll registration or wake-up.
boost::asio::awaitable<std::string> dial_tcp_and_close(const std::string& host,
                                                       const std::string& port,
                                                       clock::time_point deadline);

// Resolves a UDP destination before the deadline; on failure, err holds Go's text.
boost::asio::awaitable<std::optional<boost::asio::ip::udp::endpoint>> resolve_udp(
    const std::string& host, const std::string& port, clock::time_point deadline,
    std::string& err);

bool cancelled(boost::asio::cancellation_type t);

}  // namespace esm::probe::detail
