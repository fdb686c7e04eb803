#include "esm/probe/net.hpp"

#include <cctype>
#include <vector>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/deferred.hpp>
#include <boost/asio/experimental/parallel_group.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/error.hpp>

namespace esm::probe::detail {

namespace asio = boost::asio;
namespace beast = boost::beast;
using boost::system::error_code;

bool cancelled(asio::cancellation_type t) { return t != asio::cancellation_type::none; }

std::string go_error_text(const error_code& ec) {
  if (ec == beast::error::timeout) return "i/o timeout";
  if (ec == asio::error::operation_aborted) return "operation was canceled";
  if (ec == asio::error::eof) return "EOF";
  std::string m = ec.message();
  if (ec.category() == boost::system::system_category() && !m.empty())
    m[0] = static_cast<char>(std::tolower(static_cast<unsigned char>(m[0])));
  return m;
}

std::string endpoint_text(const asio::ip::address& a, unsigned short port) {
  if (a.is_v6()) return "[" + a.to_string() + "]:" + std::to_string(port);
  return a.to_string() + ":" + std::to_string(port);
}

std::optional<host_port> split_host_port(std::string_view hp, std::string* err) {
  auto fail = [&](std::string_view why) -> std::optional<host_port> {
    if (err) *err = "address " + std::string(hp) + ": " + std::string(why);
    return std::nullopt;
  };
  auto colon = hp.rfind(':');
  if (colon == std::string_view::npos) return fail("missing port in address");
  host_port out;
  if (!hp.empty() && hp.front() == '[') {
    auto close = hp.find(']');
    if (close == std::string_view::npos) return fail("missing ']' in address");
    if (close + 1 == hp.size()) return fail("missing port in address");
    if (close + 1 != colon) return fail("too many colons in address");
    out.host = std::string(hp.substr(1, close - 1));
  } else {
    out.host = std::string(hp.substr(0, colon));
    if (out.host.find(':') != std::string::npos) return fail("too many colons in address");
  }
  out.port = std::string(hp.substr(colon + 1));
  return out;
}

std::string host_of(std::string_view hp) {
  if (auto p = split_host_port(hp, nullptr)) return p->host;
  if (hp.size() >= 2 && hp.front() == '[' && hp.back() == ']')
    return std::string(hp.substr(1, hp.size() - 2));
  return std::string(hp);
}

namespace {

std::optional<unsigned short> parse_port(const std::string& port) {
  if (port.empty() || port.size() > 5) return std::nullopt;
  unsigned v = 0;
  for (char c : port) {
    if (c < '0' || c > '9') return std::nullopt;
    v = v * 10 + static_cast<unsigned>(c - '0');
  }
  if (v > 65535) return std::nullopt;
  return static_cast<unsigned short>(v);
}

// Addresses for host, or Go's look-up error text in err.
template <class Protocol>
asio::awaitable<std::vector<asio::ip::address>> lookup(const std::string& host,
                                                       clock::time_point deadline,
                                                       std::string& err) {
  std::vector<asio::ip::address> out;
  error_code ec;
  auto addr = asio::ip::make_address(host, ec);
  if (!ec) {
    out.push_back(addr);
    co_return out;
  }
  if (host.empty()) {  // Go dials the local system for an empty host
    out.push_back(asio::ip::make_address("127.0.0.1"));
    co_return out;
  }
  auto ex = co_await asio::this_coro::executor;
  typename Protocol::resolver resolver(ex);
  asio::steady_timer timer(ex, deadline);
  auto [order, rec, results, tec] =
      co_await asio::experimental::make_parallel_group(
          resolver.async_resolve(host, "", asio::deferred),
          timer.async_wait(asio::deferred))
          .async_wait(asio::experimental::wait_for_one(), asio::as_tuple(asio::use_awaitable));
  if (order[0] == 1) {
    err = "lookup " + host + ": " + (tec ? go_error_text(tec) : std::string("i/o timeout"));
    co_return out;
  }
  if (rec) {
    if (rec == asio::error::host_not_found || rec == asio::error::host_not_found_try_again ||
        rec == asio::error::no_data)
      err = "lookup " + host + ": no such host";
    else
      err = "lookup " + host + ": " + go_error_text(rec);
    co_return out;
  }
  for (const auto& r : results) out.push_back(r.endpoint().address());
  if (out.empty()) err = "lookup " + host + ": no such host";
  co_return out;
}

}  // namespace

asio::awaitable<std::string> dial_tcp(beast::tcp_stream& stream, const std::string& host,
                                      const std::string& port, clock::time_point deadline) {
  auto p = parse_port(port);
  if (!p) co_return "dial tcp: lookup tcp/" + port + ": unknown port";
  std::string err;
  auto addrs = co_await lookup<asio::ip::tcp>(host, deadline, err);
  if (!err.empty()) co_return "dial tcp: " + err;
  std::string first_error;
  for (const auto& a : addrs) {
    asio::ip::tcp::endpoint ep(a, *p);
    stream.expires_at(deadline);
    auto [ec] = co_await stream.async_connect(ep, asio::as_tuple(asio::use_awaitable));
    if (!ec) co_return std::string();
    std::string text = "dial tcp " + endpoint_text(a, *p) + ": ";
    if (ec == beast::error::timeout || ec == asio::error::operation_aborted)
      text += go_error_text(ec);
    else
      text += "connect: " + go_error_text(ec);
    if (first_error.empty()) first_error = text;
    auto cs = co_await asio::this_coro::cancellation_state;
    if (ec == beast::error::timeout || cancelled(cs.cancelled())) break;
    stream.close();
  }
  co_return first_error;
}

asio::awaitable<std::optional<asio::ip::udp::endpoint>> resolve_udp(
    const std::string& host, const std::string& port, clock::time_point deadline,
    std::string& err) {
  auto p = parse_port(port);
  if (!p) {
    err = "dial udp: lookup udp/" + port + ": unknown port";
    co_return std::nullopt;
  }
  auto addrs = co_await lookup<asio::ip::udp>(host, deadline, err);
  if (!err.empty()) {
    err = "dial udp: " + err;
    co_return std::nullopt;
  }
  co_return asio::ip::udp::endpoint(addrs.front(), *p);
}

}  // namespace esm::probe::detail
