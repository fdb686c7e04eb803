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

#include "esm/util/chunked_guard.hpp"
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

// The value of `name` in the target's query string: nullopt when absent.
std::optional<std::string_view> query_value(std::string_view target, std::string_view name) {
  auto q = target.find('?');
  if (q == std::string_view::npos) return std::nullopt;
  auto query = target.substr(q + 1);
  query = query.substr(0, query.find('#'));
  while (!query.empty()) {
    auto amp = query.find('&');
    auto part = query.substr(0, amp);
    auto eq = part.find('=');
    if (part.substr(0, eq) == name) return eq == std::string_view::npos ? std::string_view() : part.substr(eq + 1);
    if (amp == std::string_view::npos) break;
    query = query.substr(amp + 1);
  }
  return std::nullopt;
}

// ?limit= and ?offset= of the /debug views: false (with the reason) for a value that is not a
// decimal number. A limit above the maximum is lowered to it (the answer states the limit).
bool page_of(std::string_view target, std::size_t& offset, std::size_t& limit, std::string& why) {
  auto number = [&](std::string_view name, std::size_t& out) {
    auto v = query_value(target, name);
    if (!v) return true;
    std::uint64_t n = 0;
    auto [end, err] = std::from_chars(v->data(), v->data() + v->size(), n);
    if (v->empty() || err != std::errc() || end != v->data() + v->size()) {
      why = std::string(name) + " must be a non-negative integer\n";
      return false;
    }
    out = static_cast<std::size_t>(n);
    return true;
  };
  offset = 0;
  limit = debug_limit_default;
  if (!number("offset", offset) || !number("limit", limit)) return false;
  limit = std::min(limit, debug_limit_max);
  return true;
}


}  // namespace

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

admin_server::admin_server(asio::any_io_executor ex, daemon::daemon_status& status, admin_settings s,
                           metrics_fn metrics)
    : ex_(ex),
      status_(status),
      settings_(std::move(s)),
      metrics_(std::move(metrics)),
      acceptor_(ex),
      wake_(std::make_shared<async::event>(ex)) {
  if (settings_.max_connections == 0) settings_.max_connections = 1;
  if (settings_.max_connections_per_peer == 0) settings_.max_connections_per_peer = 1;
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
  for (auto& c : connections_) c.task->cancel();
  for (;;) {
    wake_->reset();
    connections_.remove_if([](const auto& c) { return c.task->done(); });
    if (connections_.empty() && heartbeat->done()) break;
    bool woke = co_await wake_->wait_even_if_cancelled();
    if (!woke) {  // a further stop: pass it on again
      heartbeat->cancel();
      for (auto& c : connections_) c.task->cancel();
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
      // Logged once per change of state: out of descriptors, it would repeat every 100 ms.
      ++stats_.accept_errors;
      if (!stats_.accept_failing || ec != last_accept_error_)
        log::warn("Admin HTTP server cannot accept a connection (retried every 100 ms, logged again when it changes)",
                  {{"error", ec}});
      stats_.accept_failing = true;
      last_accept_error_ = ec;
      bool ran = co_await async::sleep_for(100ms);
      if (!ran) break;
      continue;
    }
    if (stats_.accept_failing) {
      stats_.accept_failing = false;
      last_accept_error_ = {};
      log::info("Admin HTTP server accepts connections again", {{"failed_accepts", stats_.accept_errors}});
    }
    error_code pec;
    auto peer = socket.remote_endpoint(pec).address();
    if (pec || !admit(peer)) {
      error_code ignored;
      socket.close(ignored);
      continue;
    }
    error_code ignored;
    socket.set_option(tcp::no_delay(true), ignored);
    auto state = std::make_shared<connection_state>();
    state->peer = peer;
    auto task = async::child<int>::spawn(ex_, async::as_child(serve(std::move(socket), state)), wake_);
    connections_.push_back(connection{std::move(task), std::move(state)});
  }
}

bool admin_server::admit(const asio::ip::address& peer) {
  connections_.remove_if([](const auto& c) { return c.task->done(); });
  std::size_t total = 0, of_peer = 0;
  connection* oldest_idle = nullptr;
  connection* oldest_idle_of_peer = nullptr;
  auto older = [](connection* a, connection& b) { return !a || b.state->idle_since < a->state->idle_since; };
  for (auto& c : connections_) {
    if (c.state->evicted) continue;  // closing already
    ++total;
    bool same = c.state->peer == peer;
    if (same) ++of_peer;
    if (!c.state->idle) continue;
    if (older(oldest_idle, c)) oldest_idle = &c;
    if (same && older(oldest_idle_of_peer, c)) oldest_idle_of_peer = &c;
  }
  connection* victim = nullptr;
  if (of_peer >= settings_.max_connections_per_peer) {
    // The peer's own idle connection makes room: a client that leaks keep-alive connections
    // (a prober opening one per probe) still gets through, and nobody else pays for it.
    if (!oldest_idle_of_peer) {
      ++stats_.refused_per_peer;
      return false;
    }
    victim = oldest_idle_of_peer;
  } else if (total >= settings_.max_connections) {
    if (!oldest_idle) {
      ++stats_.refused;
      return false;
    }
    victim = oldest_idle;
  }
  if (victim) {
    // Idle between requests: closing it loses no answer (a client must expect a keep-alive
    // connection to close). It ends at once; until then it is not counted.
    victim->state->evicted = true;
    victim->task->cancel();
    ++stats_.evicted;
  }
  return true;
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
    page_limits limits;
    limits.show_outputs = settings_.enable_debug;  // outputs may carry credentials
    r.body = status_page(status_, now, live, ready, limits);
    r.content_type = "text/html; charset=utf-8";
  } else if (settings_.enable_debug && (path == "/debug/checks" || path == "/debug/nodes")) {
    std::size_t offset = 0, limit = 0;
    std::string why;
    if (!page_of(target, offset, limit, why)) {
      r.code = http::status::bad_request;
      r.body = std::move(why);
      return r;
    }
    r.body = path == "/debug/checks" ? debug_checks_json(status_, now, offset, limit)
                                     : debug_nodes_json(status_, offset, limit);
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
asio::awaitable<void> admin_server::serve(tcp::socket socket, std::shared_ptr<connection_state> state) {
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
      // Between keep-alive requests the connection may be closed to make room (admit).
      state->idle = n > 0;
      state->idle_since = steady::now();
      auto [ec, got] = co_await stream.async_read_some(buffer.prepare(1024), async::tuple_awaitable);
      state->idle = false;
      buffer.commit(got);
      if (state->evicted) break;  // its bytes raced the eviction: it is closed all the same
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
    // Keeps Beast from asserting on an empty chunked body that arrives in pieces: see
    // may_be_last_chunk_line. A client that stops before that sent a partial request: closed
    // unanswered, as for Beast's partial_message.
    if (!ec && !refusal) ec = co_await util::read_past_short_last_chunk(stream, buffer, parser);
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
