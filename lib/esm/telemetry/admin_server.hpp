// The admin HTTP server on `client_address` (issue 12): liveness, readiness, metrics, status
// JSON, the status page and, with enable_debug, per-check and per-node views. Beast on the
// daemon's io_context and thread, one coroutine per connection. It is started before Consul is
// first contacted, so liveness can be probed during a long startup.
//
// Bounded, so that no client can affect the daemon (defaults; each is a setting):
//   request head (request line and headers) 8 KiB -> 431; at most 64 header fields -> 431;
//   body 64 KiB -> 413 (bodies are read and ignored: every endpoint is GET or HEAD);
//   64 concurrent connections: when the table is full, the connection idle the longest
//   between keep-alive requests is closed to make room (a health probe must get through a
//   table of idle keep-alive clients), and only when none is idle is the new connection
//   closed at once, unanswered; 8 connections per peer address (one client cannot fill the
//   table: its 9th connection replaces its own oldest idle one, else it is closed at once);
//   a request must arrive whole within 10 s of its first byte (a slowloris client is cut off
//   there, as is one that connects and never sends); 15 s idle between keep-alive requests;
//   10 s to write a response; 100 requests per connection.
// Anything malformed gets a 4xx (400 for a bad request line or header, 405 for methods other
// than GET and HEAD, 404 for unknown paths) and the connection is closed after it. A handler
// that throws (the metrics callback) gets a 500; it never escapes the connection.
//
// Endpoints: /healthz (200 while the loop runs, 503 when it stalled), /readyz (200 while
// Consul answers, this instance is registered and its share arrived; 503 with the reason),
// /metrics (the daemon's callback; 404 without one), /v1/status (JSON), / (HTML), and with
// enable_debug /debug/checks and /debug/nodes (JSON, paged: ?limit= (default 1000, at most
// 10 000) and ?offset=, with the total). Check outputs (HTTP bodies, URLs that may carry
// credentials) appear only with enable_debug: on the page and in /debug/checks, never in
// /v1/status. Every answer copies only the rows it shows: 100 000 checks are counted in
// place, and a page of them is chosen by a bounded selection.
//
// Accept errors (EMFILE: out of descriptors) are retried every 100 ms, logged once when they
// start (or their error changes) and once when accepting works again, and counted in
// admin_stats::accept_errors.
//
// The server also runs the heartbeat: every `heartbeat_interval` it sets
// daemon_status::heartbeat and notes gaps longer than `stall_threshold` (see liveness()).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>

#include "esm/daemon/status.hpp"
#include "esm/telemetry/status_json.hpp"
#include "esm/util/async.hpp"

namespace esm::telemetry {

struct admin_settings {
  admin_settings() {}
  std::string address;  // client_address: "host:port", "[v6]:port", ":port" (every interface)
  bool enable_debug = false;
  std::size_t max_head_bytes = 8 * 1024;
  std::size_t max_header_fields = 64;
  std::size_t max_body_bytes = 64 * 1024;
  std::size_t max_connections = 64;
  std::size_t max_connections_per_peer = 8;  // by remote IP address
  std::size_t max_requests_per_connection = 100;
  std::chrono::milliseconds read_timeout{10'000};  // a whole request, from its first byte
  std::chrono::milliseconds idle_timeout{15'000};  // waiting for the next keep-alive request
  std::chrono::milliseconds write_timeout{10'000};
  std::chrono::milliseconds heartbeat_interval{1'000};
  std::chrono::milliseconds stall_threshold{5'000};  // /healthz: a heartbeat older is a stall
  // /readyz: how recent Consul's last successful answer (2xx or 404) must be. It must exceed
  // blocking_query_wait, as a quiet share's blocking queries answer once per wait: the daemon
  // sets it to consul_fresh_for(blocking_query_wait) = max(30 s, wait * 17/16 + 5 s).
  std::chrono::milliseconds consul_fresh{consul_fresh_default};
};

// The /metrics body and its Content-Type for the request's Accept header (empty when none).
using metrics_fn = std::function<std::pair<std::string, std::string>(std::string_view accept)>;

// Figures of the server itself, for the metrics.
struct admin_stats {
  std::uint64_t connections = 0;  // accepted and served
  std::uint64_t refused = 0;      // closed at once: the table was full and none was idle
  std::uint64_t refused_per_peer = 0;  // closed at once: its peer had its limit, none idle
  std::uint64_t evicted = 0;      // idle keep-alive connections closed to make room
  std::uint64_t accept_errors = 0;  // failed accepts (EMFILE...), retried every 100 ms
  bool accept_failing = false;    // the latest accept failed
  std::uint64_t requests = 0;     // answered
  std::uint64_t client_errors = 0;  // 4xx answers
  std::uint64_t timeouts = 0;     // connections cut off by the read or idle timeout
  std::uint64_t handler_errors = 0;  // 500s
  std::size_t active = 0;         // connections open now
  std::optional<loop_stall> last_stall;  // the latest heartbeat gap over the threshold
};

// Splits `client_address` ("host:port", "[v6]:port", ":port"); false when malformed.
bool split_address(std::string_view a, std::string& host, std::string& port);

class admin_server {
 public:
  // `status` must outlive the server; the server writes its `heartbeat` and reads the rest.
  admin_server(boost::asio::any_io_executor ex, daemon::daemon_status& status, admin_settings s,
               metrics_fn metrics = {});
  ~admin_server();
  admin_server(const admin_server&) = delete;
  admin_server& operator=(const admin_server&) = delete;

  // Opens the listening socket on settings.address. Returns "" or an error text naming the
  // address ("cannot listen on 127.0.0.1:8080: Address already in use"); the daemon fails
  // its startup with it (exit 11). A host name is resolved here (blocking: startup only).
  std::string bind();
  // The bound address (port 0 in the settings: the port the system chose).
  boost::asio::ip::tcp::endpoint local_endpoint() const;

  // Serves until cancelled (any cancellation type): then closes the acceptor, cancels every
  // connection and the heartbeat, and returns once all of them ended. Call bind() first.
  // Never throws for network errors; a connection that fails is closed and logged at debug.
  boost::asio::awaitable<void> run();

  const admin_stats& stats() const noexcept { return stats_; }
  const admin_settings& settings() const noexcept { return settings_; }

 private:
  struct response;
  // What the accept loop knows of a connection, shared with its coroutine.
  struct connection_state {
    boost::asio::ip::address peer;
    bool idle = false;  // waiting for the next keep-alive request
    std::chrono::steady_clock::time_point idle_since;
    bool evicted = false;  // cancelled to make room: no longer counted
  };
  struct connection {
    std::shared_ptr<async::child<int>> task;
    std::shared_ptr<connection_state> state;
  };
  boost::asio::awaitable<void> accept_loop();
  boost::asio::awaitable<void> heartbeat_loop();
  boost::asio::awaitable<void> serve(boost::asio::ip::tcp::socket socket, std::shared_ptr<connection_state> state);
  // Makes room for a connection from `peer`: false when it must be refused.
  bool admit(const boost::asio::ip::address& peer);
  response answer(std::string_view method, std::string_view target, std::string_view accept);

  boost::asio::any_io_executor ex_;
  daemon::daemon_status& status_;
  admin_settings settings_;
  metrics_fn metrics_;
  boost::asio::ip::tcp::acceptor acceptor_;
  std::shared_ptr<async::event> wake_;
  std::list<connection> connections_;
  boost::system::error_code last_accept_error_;
  admin_stats stats_;
};

}  // namespace esm::telemetry
