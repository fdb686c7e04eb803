// H2PING checks (Consul CheckH2PING): open an HTTP/2 connection (TLS with ALPN h2 by
// default, h2c prior knowledge without H2PingUseTLS), send a PING frame and wait for its ACK.

#include <boost/asio/ssl/stream.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>

#include "esm/probe/h2_session.hpp"
#include "esm/probe/net.hpp"
#include "esm/probe/probes.hpp"
#include "esm/probe/tls_client.hpp"

namespace esm::probe::detail {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;

template <class Stream>
asio::awaitable<probe_result> ping(Stream& stream, clock::time_point deadline) {
  auto critical = [](std::string text) { return probe_result{check_status::critical, std::move(text)}; };
  h2_client client(0);
  if (!client.ok() || !client.submit_ping())
    co_return critical("Failed to create client connection cannot create an HTTP/2 session");
  auto pr = co_await client.pump(stream, deadline, [&] { return client.ping_acked(); });
  if (pr.error == h2_client::pump_error::cancelled) co_return canceled_result();
  if (pr.error != h2_client::pump_error::none) co_return critical("HTTP2 ping failed: " + pr.text);
  co_return probe_result{check_status::passing, "HTTP2 ping was successful"};
}

}  // namespace

asio::awaitable<probe_result> run_h2ping(const h2ping_spec& spec, probe_context& ctx) {
  const auto deadline = clock::now() + effective_timeout(spec.timeout);
  auto critical = [](std::string text) { return probe_result{check_status::critical, std::move(text)}; };
  const std::string dial_failed = "Failed to dial to " + spec.address + ": ";

  std::string err;
  auto hp = split_host_port(spec.address, &err);
  if (!hp) co_return critical(dial_failed + "dial tcp: " + err);
  beast::tcp_stream tcp(co_await asio::this_coro::executor);
  std::string dial_err = co_await dial_tcp(tcp, hp->host, hp->port, deadline);
  auto cs = co_await asio::this_coro::cancellation_state;
  if (cancelled(cs.cancelled())) co_return canceled_result();
  if (!dial_err.empty()) co_return critical(dial_failed + dial_err);
  if (!spec.use_tls) co_return co_await ping(tcp, deadline);

  const std::string server_name = spec.tls_server_name.empty() ? hp->host : spec.tls_server_name;
  beast::ssl_stream<beast::tcp_stream> s(std::move(tcp), ctx.tls());
  if (!prepare_tls_client(s.native_handle(), server_name, spec.tls_skip_verify, "h2"))
    co_return critical(dial_failed + "tls: cannot configure the connection");
  auto [ec] = co_await s.async_handshake(asio::ssl::stream_base::client, asio::as_tuple(asio::use_awaitable));
  cs = co_await asio::this_coro::cancellation_state;
  if (cancelled(cs.cancelled())) co_return canceled_result();
  if (ec == beast::error::timeout) co_return critical(dial_failed + "context deadline exceeded");
  if (ec) {
    std::string text = tls_error_text(ec, s.native_handle(), server_name);
    co_return critical(dial_failed + (text.empty() ? go_error_text(ec) : text));
  }
  co_return co_await ping(s, deadline);
}

}  // namespace esm::probe::detail
