// Running one probe: connect, ask, judge, with Consul's semantics and output texts.
//
// Every function here runs ONE probe and returns its result; none throws for an expected
// failure (refused, timeout, bad certificate, bad answer): those are critical results.
// Each probe:
//   - finishes within its timeout (the definition's, else 10 s) plus scheduling slack,
//     covering resolution, connect, TLS and the whole exchange;
//   - honours the caller's terminal and total cancellation: it returns promptly with a
//     critical "operation was canceled" result, which the caller should discard;
//   - closes its socket on every path, and opens a new connection per run as Consul does.
#pragma once

#include <cstddef>
#include <memory>

#include <boost/asio/awaitable.hpp>

#include "esm/probe/result.hpp"
#include "esm/probe/spec.hpp"
#include "esm/probe/tls.hpp"

namespace esm::probe {

struct probe_limits {
  std::size_t output_max_bytes = 4096;         // Consul's DefaultBufSize: the last 4 KiB kept
  std::size_t max_header_bytes = 64 * 1024;    // HTTP response header block
  std::size_t max_body_bytes = 1024 * 1024;    // HTTP body bytes read before we stop reading
  std::size_t max_h2_response_bytes = 64 * 1024;  // gRPC response message
};

// Shared by all probes of a daemon: the base TLS context and the limits.
class probe_context {
 public:
  probe_context();  // system trust store, no client certificate
  explicit probe_context(const tls_files& files);  // throws std::runtime_error, see tls.hpp
  ~probe_context();
  probe_context(const probe_context&) = delete;
  probe_context& operator=(const probe_context&) = delete;

  boost::asio::ssl::context& tls() noexcept { return *tls_; }

  probe_limits limits;

 private:
  std::unique_ptr<boost::asio::ssl::context> tls_;
};

// Dispatches on the spec's type. `spec` and `ctx` must outlive the returned awaitable (they
// are used by reference until it completes), as they do in `co_await run_probe(spec, ctx)`.
// Runs the probe in a coroutine of its own, so the caller's cancellation filter and
// throw-if-cancelled setting are left untouched. Resolving a host name (not an IP literal)
// uses Asio's resolver, which runs getaddrinfo on Asio's own background thread; everything
// else runs on the caller's executor.
boost::asio::awaitable<probe_result> run_probe(const probe_spec& spec, probe_context& ctx);

// The same without the extra coroutine, for a caller that co_spawned a coroutine just for this
// probe (the check engine): it changes that coroutine's cancellation filter (terminal and
// total accepted) and switches throw_if_cancelled off. Never throws.
boost::asio::awaitable<probe_result> run_probe_in_own_thread(const probe_spec& spec,
                                                             probe_context& ctx);

}  // namespace esm::probe
