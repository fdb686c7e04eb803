#include "esm/telemetry/admin_server.hpp"

#include <algorithm>
#include <charconv>
#include <exception>
#include <iterator>

#include <boost/asio/cancellation_type.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/beast/core/error.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>

#include "esm/log/log.hpp"
#include "esm/telemetry/status_page.hpp"

namespace esm::telemetry {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using boost::system::error_code;
using namespace std::chrono_literals;

struct admin_server::response {
  http::status code = http::status::ok;
  std::string body;
  std::string content_type = "text/plain; charset=utf-8";
  bool allow = false;  // 405: name the allowed methods
};

namespace {

bool same_category(const error_code& ec, http::error e) {
  return ec.category() == http::make_error_code(e).category();
}

// The answer to a request the parser refused, or 0: close without answering (the client went
// away, timed out, or the server stops).
unsigned refusal_of(const error_code& ec) {
  if (ec == http::error::header_limit || ec == http::error::buffer_overflow) return 431;
  if (ec == http::error::body_limit) return 413;
  if (ec == http::error::end_of_stream || ec == http::error::partial_message) return 0;
  if (same_category(ec, http::error::bad_method)) return 400;  // every other parse error
  return 0;
}

std::string_view reason_text(unsigned code) {
  switch (code) {
    case 400: return "malformed request\n";
    case 413: return "request body too large\n";
    case 431: return "request header fields too large\n";
    default: return "error\n";
  }
}

std::string_view path_of(std::string_view target) {
  auto q = target.find_first_of("?#");
  return q == std::string_view::npos ? target : target.substr(0, q);
}

// "host:port", "[v6]:port", ":port".
bool split_address(std::string_view a, std::string& host, std::string& port) {
  std::size_t colon;
  if (!a.empty() && a.front() == '[') {
    auto close = a.find(']');
    if (close == std::string_view::npos || close + 1 >= a.size() || a[close + 1] != ':') return false;
    host = std::string(a.substr(1, close - 1));
    colon = close + 1;
  } else {
    colon = a.rfind(':');
    if (colon == std::string_view::npos) return false;
    host = std::string(a.substr(0, colon));
    if (host.find(':') != std::string::npos) return false;  // an IPv6 address needs brackets
  }
  port = std::string(a.substr(colon + 1));
  unsigned value = 0;
  auto [end, err] = std::from_chars(port.data(), port.data() + port.size(), value);
  return !port.empty() && err == std::errc() && end == port.data() + port.size() && value <= 65535;
}

}  // namespace

admin_server::admin_server(asio::any_io_executor ex, daemon::daemon_status& status, admin_settings s,
                           metrics_fn metrics)
    : ex_(ex),
      status_(status),
      settings_(std::move(s)),
      metrics_(std::move(metrics)),
      acceptor_(ex),
      wake_(std::make_shared<async::event>(ex)) {
  if (settings_.max_connections == 0) settings_.max_connections = 1;
  if (settings_.max_requests_per_connection == 0) settings_.max_requests_per_connection = 1;
  if (settings_.heartbeat_interval <= 0ms) settings_.heartbeat_interval = 1s;
}

admin_server::~admin_server() = default;

std::string admin_server::bind() {
  auto fail = [&](const std::string& why) {
    error_code ignored;
    acceptor_.close(ignored);
    return "cannot listen on " + settings_.address + ": " + why;
  };
  std::string host, port;
  if (!split_address(settings_.address, host, port)) return fail("not a host:port address");
  tcp::endpoint ep;
  error_code ec;
  if (host.empty()) {
    ep = tcp::endpoint(asio::ip::address_v4::any(), static_cast<unsigned short>(std::stoul(port)));
  } else if (auto a = asio::ip::make_address(host, ec); !ec) {
    ep = tcp::endpoint(a, static_cast<unsigned short>(std::stoul(port)));
  } else {
    tcp::resolver resolver(ex_);
    auto found = resolver.resolve(host, port, ec);  // startup only: blocking is fine
    if (ec) return fail(ec.message());
    if (found.empty()) return fail("the name has no address");
    ep = found.begin()->endpoint();
  }
  acceptor_.open(ep.protocol(), ec);
  if (ec) return fail(ec.message());
  acceptor_.set_option(tcp::acceptor::reuse_address(true), ec);
  acceptor_.bind(ep, ec);
  if (ec) return fail(ec.message());
  acceptor_.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) return fail(ec.message());
  auto local = acceptor_.local_endpoint(ec);
  log::info("Admin HTTP server listening",
            {{"address", local.address().to_string() + ":" + std::to_string(local.port())},
             {"debug", settings_.enable_debug}});
  return {};
}

tcp::endpoint admin_server::local_endpoint() const {
  error_code ec;
  auto ep = acceptor_.local_endpoint(ec);
  return ec ? tcp::endpoint() : ep;
}

asio::awaitable<void> admin_server::run() {
  co_await asio::this_coro::throw_if_cancelled(false);
  // Any cancellation type stops the server (the daemon's first stage may be total or partial).
  co_await asio::this_coro::reset_cancellation_state([](asio::cancellation_type t) { return t; });
  auto heartbeat = async::child<int>::spawn(ex_, async::as_child(heartbeat_loop()), wake_);
  co_await accept_loop();
  error_code ignored;
  acceptor_.close(ignored);
  heartbeat->cancel();
  for (auto& c : connections_) c->cancel();
  for (;;) {
    wake_->reset();
    connections_.remove_if([](const auto& c) { return c->done(); });
    if (connections_.empty() && heartbeat->done()) break;
    bool woke = co_await wake_->wait_even_if_cancelled();
    if (!woke) {  // a further stop: pass it on again
      heartbeat->cancel();
      for (auto& c : connections_) c->cancel();
    }
  }
  log::debug("Admin HTTP server stopped");
}

// Honours any cancellation type (run's filter); returns at the first one.
asio::awaitable<void> admin_server::accept_loop() {
  for (;;) {
    auto cs = co_await asio::this_coro::cancellation_state;
    if (async::is_cancelled(cs)) break;
    auto [ec, socket] = co_await acceptor_.async_accept(async::tuple_awaitable);
    if (ec) {
      if (ec == asio::error::operation_aborted || !acceptor_.is_open()) break;
      // Out of descriptors or a connection reset before it was accepted: go on, a bit later.
      log::warn("Admin HTTP server cannot accept a connection", {{"error", ec}});
      bool ran = co_await async::sleep_for(100ms);
      if (!ran) break;
      continue;
    }
    connections_.remove_if([](const auto& c) { return c->done(); });
    if (connections_.size() >= settings_.max_connections) {
      ++stats_.refused;
      error_code ignored;
      socket.close(ignored);
      continue;
    }
    error_code ignored;
    socket.set_option(tcp::no_delay(true), ignored);
    connections_.push_back(async::child<int>::spawn(ex_, async::as_child(serve(std::move(socket))), wake_));
  }
}

// Honours terminal cancellation (child::cancel).
asio::awaitable<void> admin_server::heartbeat_loop() {
  auto previous = steady::now();
  status_.heartbeat = previous;
  for (;;) {
    bool ran = co_await async::sleep_for(settings_.heartbeat_interval);
    if (!ran) break;
    auto now = steady::now();
    if (now - previous > settings_.stall_threshold) {
      stats_.last_stall = loop_stall{now, now - previous};
      log::warn("The event loop stalled", {{"duration", std::chrono::duration_cast<std::chrono::milliseconds>(now - previous)}});
    }
    previous = now;
    status_.heartbeat = now;
  }
}

admin_server::response admin_server::answer(std::string_view method, std::string_view target,
                                            std::string_view accept) {
  response r;
  if (method != "GET" && method != "HEAD") {
    r.code = http::status::method_not_allowed;
    r.body = "only GET and HEAD\n";
    r.allow = true;
    return r;
  }
  auto path = path_of(target);
  auto now = steady::now();
  auto live = liveness(status_, stats_.last_stall, now, settings_.stall_threshold);
  if (path == "/healthz") {
    r.code = live.ok ? http::status::ok : http::status::service_unavailable;
    r.body = live.ok ? "ok\n" : live.reason + "\n";
  } else if (path == "/readyz") {
    auto ready = readiness(status_, now, settings_.consul_fresh);
    r.code = ready.ok ? http::status::ok : http::status::service_unavailable;
    r.body = ready.ok ? "ready\n" : "not ready: " + ready.reason + "\n";
  } else if (path == "/metrics" && metrics_) {
    auto [body, type] = metrics_(accept);
    r.body = std::move(body);
    r.content_type = std::move(type);
  } else if (path == "/v1/status") {
    r.body = status_json(status_, now, settings_.consul_fresh);
    r.body += '\n';
    r.content_type = "application/json";
  } else if (path == "/" || path == "/index.html") {
    auto ready = readiness(status_, now, settings_.consul_fresh);
    r.body = status_page(status_, now, live, ready);
    r.content_type = "text/html; charset=utf-8";
  } else if (settings_.enable_debug && path == "/debug/checks") {
    r.body = debug_checks_json(status_, now);
    r.body += '\n';
    r.content_type = "application/json";
  } else if (settings_.enable_debug && path == "/debug/nodes") {
    r.body = debug_nodes_json(status_);
    r.body += '\n';
    r.content_type = "application/json";
  } else {
    r.code = http::status::not_found;
    r.body = "not found\n";
  }
  return r;
}

// One connection: keep-alive requests one after the other, each bounded in size and time.
// Honours terminal cancellation (child::cancel): every wait is on the stream, which aborts.
asio::awaitable<void> admin_server::serve(tcp::socket socket) {
  ++stats_.connections;
  ++stats_.active;
  struct active_guard {
    std::size_t& n;
    ~active_guard() { --n; }
  } guard{stats_.active};
  beast::tcp_stream stream(std::move(socket));
  // Room for a whole request: what the parser's limits allow, plus what a client may have
  // sent after it (pipelining) up to one more head.
  beast::flat_buffer buffer(2 * settings_.max_head_bytes + settings_.max_body_bytes);
  bool timed_out = false;
  for (std::size_t n = 0; n < settings_.max_requests_per_connection; ++n) {
    if (buffer.size() == 0) {
      // The first byte: within read_timeout of the connection, idle_timeout of the last answer.
      stream.expires_after(n == 0 ? settings_.read_timeout : settings_.idle_timeout);
      auto [ec, got] = co_await stream.async_read_some(buffer.prepare(1024), async::tuple_awaitable);
      buffer.commit(got);
      if (ec) {
        timed_out = ec == beast::error::timeout;
        break;
      }
    }
    // The whole request within read_timeout of its first byte: the deadline is not renewed by
    // each byte, so a client trickling its request is cut off there.
    stream.expires_after(settings_.read_timeout);
    http::request_parser<http::string_body> parser;
    parser.header_limit(static_cast<std::uint32_t>(settings_.max_head_bytes));
    parser.body_limit(settings_.max_body_bytes);
    auto [hec, hn] = co_await http::async_read_header(stream, buffer, parser, async::tuple_awaitable);
    error_code ec = hec;
    unsigned refusal = 0;
    if (!ec) {
      const auto& head = parser.get();
      if (static_cast<std::size_t>(std::distance(head.begin(), head.end())) > settings_.max_header_fields)
        refusal = 431;
    }
    if (!ec && !refusal && !parser.is_done()) {
      auto [bec, bn] = co_await http::async_read(stream, buffer, parser, async::tuple_awaitable);
      ec = bec;
    }
    if (ec) {
      refusal = refusal_of(ec);
      if (!refusal) {
        timed_out = ec == beast::error::timeout;
        if (ec != asio::error::operation_aborted && !timed_out)
          log::debug("Admin HTTP request not read", {{"error", ec}});
        break;
      }
    }

    http::response<http::string_body> res;
    res.version(11);
    bool keep_alive = false;
    bool head_only = false;
    if (refusal) {
      ++stats_.client_errors;
      res.result(refusal);
      res.body() = std::string(reason_text(refusal));
      res.set(http::field::content_type, "text/plain; charset=utf-8");
    } else {
      const auto& req = parser.get();
      response r;
      try {
        r = answer(req.method_string(), req.target(), req[http::field::accept]);
      } catch (const std::exception& e) {
        ++stats_.handler_errors;
        log::error("Admin HTTP handler failed", {{"path", std::string(path_of(req.target()))}, {"error", e.what()}});
        r = response{http::status::internal_server_error, "internal error\n"};
      }
      if (static_cast<unsigned>(r.code) >= 400 && static_cast<unsigned>(r.code) < 500) ++stats_.client_errors;
      res.result(r.code);
      res.version(req.version() == 10 ? 10 : 11);
      res.body() = std::move(r.body);
      res.set(http::field::content_type, r.content_type);
      if (r.allow) res.set(http::field::allow, "GET, HEAD");
      keep_alive = req.keep_alive() && r.code != http::status::method_not_allowed &&
                   n + 1 < settings_.max_requests_per_connection;
      head_only = req.method() == http::verb::head;
    }
    res.set(http::field::server, "esmd");
    res.set(http::field::cache_control, "no-store");
    res.set("X-Content-Type-Options", "nosniff");
    if (res[http::field::content_type].starts_with("text/html"))
      res.set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; img-src data:");
    res.keep_alive(keep_alive);
    auto length = res.body().size();
    if (head_only) res.body().clear();
    res.content_length(length);
    ++stats_.requests;
    stream.expires_after(settings_.write_timeout);
    auto [wec, wn] = co_await http::async_write(stream, res, async::tuple_awaitable);
    if (wec || !keep_alive) {
      if (!wec && refusal) {
        // Let the client read the refusal: stop sending, then drain what it still sends for a
        // moment (closing with unread data would reset the connection and lose the answer).
        error_code ignored;
        stream.socket().shutdown(tcp::socket::shutdown_send, ignored);
        stream.expires_after(std::min<std::chrono::milliseconds>(settings_.read_timeout, 1000ms));
        std::size_t drained = 0;
        char scratch[4096];
        while (drained < 4 * settings_.max_body_bytes) {
          auto [dec, dn] = co_await stream.async_read_some(asio::buffer(scratch), async::tuple_awaitable);
          drained += dn;
          if (dec) break;
        }
      }
      break;
    }
  }
  if (timed_out) ++stats_.timeouts;
  error_code ignored;
  stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
  stream.close();
}

}  // namespace esm::telemetry
