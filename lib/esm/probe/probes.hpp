// Internal: the probe coroutines. run_probe runs each in a coroutine of its own whose
// cancellation filter accepts terminal and total cancellation and which does not throw when
// cancelled; they rely on that.
#pragma once

#include <boost/asio/awaitable.hpp>

#include "esm/probe/probe.hpp"

namespace esm::probe::detail {

boost::asio::awaitable<probe_result> run_http(const http_spec& spec, probe_context& ctx);
boost::asio::awaitable<probe_result> run_tcp(const tcp_spec& spec, probe_context& ctx);
boost::asio::awaitable<probe_result> run_udp(const udp_spec& spec, probe_context& ctx);
boost::asio::awaitable<probe_result> run_grpc(const grpc_spec& spec, probe_context& ctx);
boost::asio::awaitable<probe_result> run_h2ping(const h2ping_spec& spec, probe_context& ctx);

inline probe_result canceled_result() { return {check_status::critical, "operation was canceled"}; }

}  // namespace esm::probe::detail
