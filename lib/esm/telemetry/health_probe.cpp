#include "esm/telemetry/health_probe.hpp"

#include <optional>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>

#include "esm/telemetry/admin_server.hpp"

namespace esm::telemetry {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

probe_target health_probe_target(std::string_view client_address) {
  std::string host, port;
  if (!split_address(client_address, host, port)) return {};
  if (host.empty() || host == "0.0.0.0") host = "127.0.0.1";
  if (host == "::") host = "::1";
  return {host, port};
}

int probe_health(std::string_view client_address, std::chrono::milliseconds timeout, std::ostream& err) {
  if (client_address.empty()) {
    err << "esmd -healthcheck: client_address is not set, so there is no admin server to ask\n";
    return 1;
  }
  auto target = health_probe_target(client_address);
  if (target.host.empty()) {
    err << "esmd -healthcheck: client_address " << client_address << " is not a host:port address\n";
    return 1;
  }
  // Heap-allocated and left behind when the time runs out: destroying an io_context joins
  // the resolver's thread, which may sit in getaddrinfo (a name with a slow DNS server) for
  // longer than the bound. The process exits right after this answer.
  auto* io_owner = new asio::io_context(1);
  auto& io = *io_owner;
  std::optional<int> status;
  std::string failure;
  std::string body;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        beast::tcp_stream stream(io);
        boost::system::error_code literal_error;
        auto literal = asio::ip::make_address(target.host, literal_error);
        if (!literal_error) {  // an address: no resolver (and no resolver thread)
          stream.expires_after(timeout);
          co_await stream.async_connect(tcp::endpoint(literal, static_cast<unsigned short>(std::stoul(target.port))),
                                        asio::use_awaitable);
        } else {
          tcp::resolver resolver(io);
          auto found = co_await resolver.async_resolve(target.host, target.port, asio::use_awaitable);
          stream.expires_after(timeout);
          co_await stream.async_connect(found, asio::use_awaitable);
        }
        http::request<http::empty_body> req(http::verb::get, "/healthz", 11);
        auto host = target.host.find(':') == std::string::npos ? target.host : "[" + target.host + "]";
        req.set(http::field::host, host + ":" + target.port);
        req.set(http::field::user_agent, "esmd-healthcheck");
        req.set(http::field::connection, "close");
        co_await http::async_write(stream, req, asio::use_awaitable);
        beast::flat_buffer buffer;
        http::response_parser<http::string_body> parser;
        parser.body_limit(16 * 1024);
        co_await http::async_read(stream, buffer, parser, asio::use_awaitable);
        status = parser.get().result_int();
        body = parser.get().body();
      },
      [&](std::exception_ptr e) {
        if (!e) return;
        try {
          std::rethrow_exception(e);
        } catch (const std::exception& x) {
          failure = x.what();
        }
      });
  // The resolver does not honour the stream's deadline: the loop itself is bounded too.
  io.run_for(timeout + std::chrono::milliseconds(500));
  bool finished = io.stopped();  // the coroutine and its handler ran to their end
  if (finished) delete io_owner;  // else left to the process's exit (see above)
  std::string where = target.host + ":" + target.port;
  if (!status) {
    err << "esmd -healthcheck: no answer from http://" << where << "/healthz: "
        << (failure.empty() ? "timed out" : failure) << "\n";
    return 1;
  }
  if (*status != 200) {
    while (!body.empty() && (body.back() == '\n' || body.back() == '\r')) body.pop_back();
    err << "esmd -healthcheck: http://" << where << "/healthz answered " << *status << ": " << body << "\n";
    return 1;
  }
  return 0;
}

}  // namespace esm::telemetry
