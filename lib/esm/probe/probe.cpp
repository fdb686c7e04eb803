#include "esm/probe/probe.hpp"

#include <exception>
#include <variant>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "esm/probe/probes.hpp"

namespace esm::probe {

namespace asio = boost::asio;

probe_context::probe_context() : tls_(make_base_tls_context({})) {}
probe_context::probe_context(const tls_files& files) : tls_(make_base_tls_context(files)) {}
probe_context::~probe_context() = default;

asio::awaitable<probe_result> run_probe_in_own_thread(const probe_spec& spec, probe_context& ctx) {
  // This coroutine is its own thread of execution: these settings stay local to it.
  co_await asio::this_coro::reset_cancellation_state(asio::enable_total_cancellation());
  co_await asio::this_coro::throw_if_cancelled(false);
  try {
    co_return co_await std::visit(
        [&](const auto& s) -> asio::awaitable<probe_result> {
          using T = std::decay_t<decltype(s)>;
          if constexpr (std::is_same_v<T, http_spec>) return detail::run_http(s, ctx);
          else if constexpr (std::is_same_v<T, tcp_spec>) return detail::run_tcp(s, ctx);
          else if constexpr (std::is_same_v<T, udp_spec>) return detail::run_udp(s, ctx);
          else if constexpr (std::is_same_v<T, grpc_spec>) return detail::run_grpc(s, ctx);
          else return detail::run_h2ping(s, ctx);
        },
        spec);
  } catch (const std::exception& e) {
    co_return probe_result{check_status::critical, std::string("probe failed: ") + e.what()};
  }
}

// Cancellation: the caller's slot is forwarded by co_spawn into the probe's own coroutine,
// which accepts terminal and total cancellation.
asio::awaitable<probe_result> run_probe(const probe_spec& spec, probe_context& ctx) {
  auto ex = co_await asio::this_coro::executor;
  auto [ep, result] =
      co_await asio::co_spawn(ex, run_probe_in_own_thread(spec, ctx), asio::as_tuple(asio::use_awaitable));
  if (ep) {
    try {
      std::rethrow_exception(ep);
    } catch (const std::exception& e) {
      co_return probe_result{check_status::critical, std::string("probe failed: ") + e.what()};
    } catch (...) {
      co_return probe_result{check_status::critical, "probe failed"};
    }
  }
  co_return result;
}

}  // namespace esm::probe
