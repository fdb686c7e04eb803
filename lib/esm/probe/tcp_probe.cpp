// TCP checks (Consul CheckTCP): connect, and with TCPUseTLS complete a TLS handshake too.

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>

#include "esm/probe/net.hpp"
#include "esm/probe/probes.hpp"
#include "esm/probe/tls_client.hpp"

namespace esm::probe::detail {

namespace asio = boost::asio;
namespace beast = boost::beast;

asio::awaitable<probe_result> run_tcp(const tcp_spec& spec, probe_context& ctx) {
  const auto deadline = clock::now() + effective_timeout(spec.timeout);
  const std::string kind = spec.use_tls ? "TCP+TLS" : "TCP";
  auto critical = [](std::string text) { return probe_result{check_status::critical, std::move(text)}; };

  std::string err;
  auto hp = split_host_port(spec.address, &err);
  if (!hp) co_return critical("dial tcp: " + err);

  if (!spec.use_tls) {
    std::string dial_err = co_await dial_tcp_and_close(hp->host, hp->port, deadline);
    auto cs = co_await asio::this_coro::cancellation_state;
    if (cancelled(cs.cancelled())) co_return canceled_result();
    if (!dial_err.empty()) co_return critical(std::move(dial_err));
    co_return probe_result{check_status::passing, kind + " connect " + spec.address + ": Success"};
  }

  beast::tcp_stream tcp(co_await asio::this_coro::executor);
  std::string dial_err = co_await dial_tcp(tcp, hp->host, hp->port, deadline);
  auto cs = co_await asio::this_coro::cancellation_state;
  if (cancelled(cs.cancelled())) co_return canceled_result();
  if (!dial_err.empty()) co_return critical(std::move(dial_err));

  {
    const std::string server_name = spec.tls_server_name.empty() ? hp->host : spec.tls_server_name;
    beast::ssl_stream<beast::tcp_stream> s(std::move(tcp), ctx.tls());
    if (!prepare_tls_client(s.native_handle(), server_name, spec.tls_skip_verify, {}))
      co_return critical("tls: cannot configure the connection");
    auto [ec] = co_await s.async_handshake(asio::ssl::stream_base::client,
                                           asio::as_tuple(asio::use_awaitable));
    cs = co_await asio::this_coro::cancellation_state;
    if (cancelled(cs.cancelled())) co_return canceled_result();
    if (ec) {
      // Go's tls.DialWithDialer bounds the handshake by the dialer's timeout (a context).
      if (ec == beast::error::timeout) co_return critical("context deadline exceeded");
      std::string text = tls_error_text(ec, s.native_handle(), server_name);
      co_return critical(text.empty() ? go_error_text(ec) : text);
    }
  }
  co_return probe_result{check_status::passing, kind + " connect " + spec.address + ": Success"};
}

}  // namespace esm::probe::detail
