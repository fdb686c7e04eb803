#include "esm/probe/net.hpp"

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <span>
#include <utility>
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

namespace {

// A descriptor closed unless released.
struct fd_guard {
  int fd = -1;
  fd_guard() = default;
  fd_guard(const fd_guard&) = delete;
  fd_guard& operator=(const fd_guard&) = delete;
  ~fd_guard() {
    if (fd >= 0) ::close(fd);
  }
  int release() noexcept { return std::exchange(fd, -1); }
};

error_code system_error_of(int e) { return error_code(e, asio::error::get_system_category()); }

// Starts a connection to `ep` on a new non-blocking socket (SOCK_NONBLOCK: Asio need not set
// it with an ioctl later). The kernel completes a handshake with a peer on this host inside
// connect() itself, although a non-blocking connect() still answers EINPROGRESS: one poll()
// with no timeout sees that, and such a connection never waits on the reactor (no epoll
// registration for the connect, no wake-up). `pending` is set when the handshake is still in
// flight (a remote peer): the caller then waits for the socket to become writable.
error_code start_connect(const asio::ip::tcp::endpoint& ep, fd_guard& fd, bool& pending) {
  pending = false;
  fd.fd = ::socket(ep.protocol().family(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd.fd < 0) return system_error_of(errno);
  if (::connect(fd.fd, ep.data(), static_cast<socklen_t>(ep.size())) == 0) return {};
  if (errno != EINPROGRESS) return system_error_of(errno);
  pollfd p{fd.fd, POLLOUT, 0};
  int n = ::poll(&p, 1, 0);
  if (n < 0) return system_error_of(errno);
  if (n == 0) {
    pending = true;
    return {};
  }
  int soerr = 0;
  socklen_t len = sizeof soerr;
  if (::getsockopt(fd.fd, SOL_SOCKET, SO_ERROR, &soerr, &len) != 0) return system_error_of(errno);
  return soerr ? system_error_of(soerr) : error_code{};
}

// Waits until the pending connection on `sock` completes, the deadline passes
// (beast::error::timeout) or the probe is cancelled (operation_aborted).
asio::awaitable<error_code> finish_connect(asio::ip::tcp::socket& sock, clock::time_point deadline) {
  asio::steady_timer timer(sock.get_executor(), deadline);
  auto [order, wec, tec] =
      co_await asio::experimental::make_parallel_group(
          sock.async_wait(asio::ip::tcp::socket::wait_write, asio::deferred),
          timer.async_wait(asio::deferred))
          .async_wait(asio::experimental::wait_for_one(), asio::as_tuple(asio::use_awaitable));
  auto cs = co_await asio::this_coro::cancellation_state;
  if (cancelled(cs.cancelled())) co_return error_code(asio::error::operation_aborted);
  if (order[0] == 1) co_return tec ? tec : error_code(beast::error::timeout);
  if (wec) co_return wec;
  int soerr = 0;
  socklen_t len = sizeof soerr;
  if (::getsockopt(sock.native_handle(), SOL_SOCKET, SO_ERROR, &soerr, &len) != 0)
    co_return system_error_of(errno);
  co_return soerr ? system_error_of(soerr) : error_code{};
}

// Connects to the first address of host that accepts, before the deadline. With `keep`, the
// connected socket is handed over in it (it must be closed on entry); without, the
// connection is closed at once (a TCP check), and one the kernel completed inside
// connect() never touches the reactor.
asio::awaitable<std::string> dial(const std::string& host, const std::string& port,
                                  clock::time_point deadline, asio::ip::tcp::socket* keep) {
  auto p = parse_port(port);
  if (!p) co_return "dial tcp: lookup tcp/" + port + ": unknown port";
  // An address literal (most checks name one) is dialled without the look-up coroutine and
  // its vector: two allocations fewer per run.
  error_code literal_ec;
  const asio::ip::address literal = asio::ip::make_address(host, literal_ec);
  std::vector<asio::ip::address> looked_up;
  std::span<const asio::ip::address> addrs;
  if (!literal_ec) {
    addrs = std::span<const asio::ip::address>(&literal, 1);
  } else {
    std::string err;
    auto found = co_await lookup<asio::ip::tcp>(host, deadline, err);
    if (!err.empty()) co_return "dial tcp: " + err;
    looked_up = std::move(found);
    addrs = looked_up;
  }
  auto ex = co_await asio::this_coro::executor;
  std::string first_error;
  for (const auto& a : addrs) {
    asio::ip::tcp::endpoint ep(a, *p);
    fd_guard fd;
    bool pending = false;
    error_code ec = start_connect(ep, fd, pending);
    if (!ec && (pending || keep)) {
      asio::ip::tcp::socket local(ex);
      asio::ip::tcp::socket& sock = keep ? *keep : local;
      sock.assign(ep.protocol(), fd.fd, ec);
      if (!ec) fd.release();  // the socket owns it now; on failure the guard closes it
      if (!ec && pending) {
        auto wait_ec = co_await finish_connect(sock, deadline);
        ec = wait_ec;
      }
      if (ec) {
        error_code ignored;
        sock.close(ignored);
      }
    }
    if (!ec) co_return std::string();  // fd (no keep) closes here
    std::string text = "dial tcp " + endpoint_text(a, *p) + ": ";
    if (ec == beast::error::timeout || ec == asio::error::operation_aborted)
      text += go_error_text(ec);
    else
      text += "connect: " + go_error_text(ec);
    if (first_error.empty()) first_error = text;
    auto cs = co_await asio::this_coro::cancellation_state;
    if (ec == beast::error::timeout || cancelled(cs.cancelled())) break;
  }
  co_return first_error;
}

}  // namespace

// Not coroutines themselves (one frame fewer per run): the caller awaits the dial at once,
// while host and port are alive.
asio::awaitable<std::string> dial_tcp(beast::tcp_stream& stream, const std::string& host,
                                      const std::string& port, clock::time_point deadline) {
  stream.expires_at(deadline);  // for the reads and writes after the connect
  return dial(host, port, deadline, &stream.socket());
}

asio::awaitable<std::string> dial_tcp_and_close(const std::string& host, const std::string& port,
                                                clock::time_point deadline) {
  return dial(host, port, deadline, nullptr);
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
