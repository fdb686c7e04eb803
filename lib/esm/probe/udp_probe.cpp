// UDP checks (Consul CheckUDP): send an empty datagram on a connected socket, then wait for
// an answer. Any answer passes; no answer within the timeout passes too (UDP services need
// not reply); an ICMP port unreachable surfaces as "connection refused" and is critical.
// Consul sets no read deadline at all and can wait forever; we wait at most the timeout.

#include <array>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/deferred.hpp>
#include <boost/asio/experimental/parallel_group.hpp>
#include <boost/asio/ip/udp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "esm/probe/net.hpp"
#include "esm/probe/probes.hpp"

namespace esm::probe::detail {

namespace asio = boost::asio;
using boost::system::error_code;

asio::awaitable<probe_result> run_udp(const udp_spec& spec, probe_context&) {
  const auto deadline = clock::now() + effective_timeout(spec.timeout);
  auto critical = [](std::string text) { return probe_result{check_status::critical, std::move(text)}; };
  const probe_result success{check_status::passing, "UDP connect " + spec.address + ": Success"};

  std::string err;
  auto hp = split_host_port(spec.address, &err);
  if (!hp) co_return critical("dial udp: " + err);
  auto ep = co_await resolve_udp(hp->host, hp->port, deadline, err);
  auto cs = co_await asio::this_coro::cancellation_state;
  if (cancelled(cs.cancelled())) co_return canceled_result();
  if (!ep) co_return critical(std::move(err));

  auto ex = co_await asio::this_coro::executor;
  asio::ip::udp::socket sock(ex);
  error_code ec;
  sock.open(ep->protocol(), ec);
  if (!ec) sock.connect(*ep, ec);  // no packet: binds and fixes the peer, as Go's Dial
  if (ec) co_return critical("dial udp " + endpoint_text(ep->address(), ep->port()) + ": " +
                             go_error_text(ec));
  auto local = sock.local_endpoint(ec);
  const std::string conn_text = "udp " + endpoint_text(local.address(), local.port()) + "->" +
                                endpoint_text(ep->address(), ep->port());

  auto [sec, sn] = co_await sock.async_send(asio::buffer(static_cast<const void*>(nullptr), 0),
                                            asio::as_tuple(asio::use_awaitable));
  (void)sn;
  cs = co_await asio::this_coro::cancellation_state;
  if (cancelled(cs.cancelled())) co_return canceled_result();
  if (sec) co_return critical("write " + conn_text + ": write: " + go_error_text(sec));

  std::array<char, 1> byte{};
  asio::steady_timer timer(ex, deadline);
  auto [order, rec, rn, tec] =
      co_await asio::experimental::make_parallel_group(
          sock.async_receive(asio::buffer(byte), asio::deferred),
          timer.async_wait(asio::deferred))
          .async_wait(asio::experimental::wait_for_one(), asio::as_tuple(asio::use_awaitable));
  (void)rn;
  (void)tec;
  cs = co_await asio::this_coro::cancellation_state;
  if (cancelled(cs.cancelled())) co_return canceled_result();
  if (order[0] == 1) co_return success;  // Consul: "i/o timeout" counts as success
  // A datagram longer than our 1-byte buffer is truncated: still an answer.
  if (!rec || rec == asio::error::message_size) co_return success;
  co_return critical("read " + conn_text + ": read: " + go_error_text(rec));
}

}  // namespace esm::probe::detail
