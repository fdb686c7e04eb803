// HTTP/1.1 to one Consul endpoint (http, https or a unix socket) with a small bounded pool of
// keep-alive connections. Every request has a deadline; the caller's cancellation slot
// (terminal, partial or total) aborts it, and an aborted or timed-out connection is closed,
// never reused.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>

#include "esm/consul/error.hpp"
#include "esm/consul/options.hpp"

namespace esm::consul {

enum class method { get, put, post, del };

// The X-Consul-* headers of a read.
struct query_meta {
  std::uint64_t last_index = 0;
  bool known_leader = false;
  std::chrono::milliseconds last_contact{0};
};

struct http_response {
  unsigned status = 0;
  std::string body;
  query_meta meta;
};

struct transport_stats {
  std::uint64_t requests = 0;
  std::uint64_t connections_opened = 0;
  std::size_t open_connections = 0;  // in use + idle
  std::size_t idle_connections = 0;
};

class transport {
 public:
  // Throws std::runtime_error naming the file when TLS material cannot be loaded.
  transport(boost::asio::any_io_executor ex, connection_options opts);
  ~transport();
  transport(const transport&) = delete;
  transport& operator=(const transport&) = delete;

  // `target` is the path with its query string, already encoded and without the prefix.
  // Any HTTP status is a successful exchange here; only transport failures, timeouts and
  // cancellation are errors.
  boost::asio::awaitable<result<http_response>> send(method m, std::string target,
                                                     std::string body,
                                                     std::chrono::milliseconds timeout);

  const connection_options& options() const;
  transport_stats stats() const;
  // Closes idle keep-alive connections (shutdown, tests).
  void close_idle();

 private:
  struct impl;
  std::shared_ptr<impl> impl_;
};

}  // namespace esm::consul
