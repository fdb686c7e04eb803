// gRPC checks (Consul CheckGRPC / GrpcHealthProbe): one grpc.health.v1.Health/Check call on
// a new HTTP/2 connection (h2c prior knowledge, or TLS with ALPN h2 when GRPCUseTLS), with
// the two protobuf messages encoded by hand. Texts follow grpc-go's status errors.

#include <optional>
#include <string>

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

// grpc-go's codes.Code String().
std::string code_name(int code) {
  static const char* const names[] = {"OK",           "Canceled",          "Unknown",
                                      "InvalidArgument", "DeadlineExceeded", "NotFound",
                                      "AlreadyExists", "PermissionDenied",  "ResourceExhausted",
                                      "FailedPrecondition", "Aborted",      "OutOfRange",
                                      "Unimplemented", "Internal",          "Unavailable",
                                      "DataLoss",      "Unauthenticated"};
  if (code >= 0 && code <= 16) return names[code];
  return "Code(" + std::to_string(code) + ")";
}

std::string rpc_error(int code, const std::string& desc) {
  return "rpc error: code = " + code_name(code) + " desc = " + desc;
}

constexpr int unavailable = 14, deadline_exceeded = 4, internal = 13, unknown = 2;

std::string percent_decode(const std::string& s) {
  std::string out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size() && std::isxdigit(static_cast<unsigned char>(s[i + 1])) &&
        std::isxdigit(static_cast<unsigned char>(s[i + 2]))) {
      out += static_cast<char>(std::stoi(s.substr(i + 1, 2), nullptr, 16));
      i += 2;
    } else {
      out += s[i];
    }
  }
  return out;
}

void put_varint(std::string& out, std::uint64_t v) {
  while (v >= 0x80) {
    out += static_cast<char>((v & 0x7f) | 0x80);
    v >>= 7;
  }
  out += static_cast<char>(v);
}

bool get_varint(std::string_view& in, std::uint64_t& v) {
  v = 0;
  for (int shift = 0; shift < 64 && !in.empty(); shift += 7) {
    auto b = static_cast<unsigned char>(in.front());
    in.remove_prefix(1);
    v |= std::uint64_t(b & 0x7f) << shift;
    if (!(b & 0x80)) return true;
  }
  return false;
}

// HealthCheckRequest{string service = 1;} in a gRPC length-prefixed frame.
std::string health_request(const std::string& service) {
  std::string msg;
  if (!service.empty()) {
    msg += '\x0a';
    put_varint(msg, service.size());
    msg += service;
  }
  std::string frame(5, '\0');
  auto n = static_cast<std::uint32_t>(msg.size());
  frame[1] = static_cast<char>(n >> 24);
  frame[2] = static_cast<char>(n >> 16);
  frame[3] = static_cast<char>(n >> 8);
  frame[4] = static_cast<char>(n);
  return frame + msg;
}

// HealthCheckResponse{ServingStatus status = 1;}: the status, or nullopt when malformed.
std::optional<std::uint64_t> health_status(std::string_view msg) {
  std::uint64_t status = 0;  // proto3 default: UNKNOWN
  while (!msg.empty()) {
    std::uint64_t key = 0;
    if (!get_varint(msg, key)) return std::nullopt;
    auto field = key >> 3;
    switch (key & 7) {
      case 0: {
        std::uint64_t v = 0;
        if (!get_varint(msg, v)) return std::nullopt;
        if (field == 1) status = v;
        break;
      }
      case 1:
        if (msg.size() < 8) return std::nullopt;
        msg.remove_prefix(8);
        break;
      case 2: {
        std::uint64_t len = 0;
        if (!get_varint(msg, len) || len > msg.size()) return std::nullopt;
        msg.remove_prefix(len);
        break;
      }
      case 5:
        if (msg.size() < 4) return std::nullopt;
        msg.remove_prefix(4);
        break;
      default:
        return std::nullopt;
    }
  }
  return status;
}

std::string status_name(std::uint64_t s) {
  switch (s) {
    case 0: return "UNKNOWN";
    case 1: return "SERVING";
    case 2: return "NOT_SERVING";
    case 3: return "SERVICE_UNKNOWN";
    default: return std::to_string(s);  // Go's protobuf String() of an unknown enum value
  }
}

// grpc-go's mapping of a non-200 HTTP status.
int http_status_code(int http) {
  switch (http) {
    case 400: return internal;
    case 401: return 16;
    case 403: return 7;
    case 404: return 12;
    case 429: case 502: case 503: case 504: return unavailable;
    default: return unknown;
  }
}

const std::string* header(const std::multimap<std::string, std::string>& h, const std::string& k) {
  auto it = h.find(k);
  return it == h.end() ? nullptr : &it->second;
}

template <class Stream>
asio::awaitable<probe_result> call(Stream& stream, const grpc_spec& spec, const std::string& authority,
                                   const std::string& service, probe_context& ctx,
                                   clock::time_point deadline) {
  auto critical = [](std::string text) { return probe_result{check_status::critical, std::move(text)}; };
  h2_client client(ctx.limits.max_h2_response_bytes);
  if (!client.ok()) co_return critical(rpc_error(internal, "cannot create an HTTP/2 session"));
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clock::now());
  std::int32_t id = client.submit_request(
      {{":method", "POST"},
       {":scheme", spec.use_tls ? "https" : "http"},
       {":path", "/grpc.health.v1.Health/Check"},
       {":authority", authority},
       {"content-type", "application/grpc"},
       {"te", "trailers"},
       {"user-agent", "esmd grpc-health-probe"},
       {"grpc-timeout", std::to_string(std::max<long long>(left.count(), 1)) + "m"}},
      health_request(service));
  if (id < 0) co_return critical(rpc_error(internal, "cannot submit the request"));
  auto pr = co_await client.pump(stream, deadline, [&] {
    const auto* r = client.find(id);
    return r && r->closed;
  });
  if (pr.error == h2_client::pump_error::cancelled) co_return canceled_result();
  if (pr.error == h2_client::pump_error::timeout)
    co_return critical(rpc_error(deadline_exceeded, "context deadline exceeded"));
  if (pr.error != h2_client::pump_error::none)
    co_return critical(rpc_error(unavailable, "connection error: desc = \"transport: " + pr.text + "\""));

  const auto& r = *client.find(id);
  if (r.headers_overflow)  // grpc-go's text for a header list over its limit
    co_return critical(rpc_error(internal, "peer header list size exceeded limit"));
  const std::string* grpc_status = header(r.trailers, "grpc-status");
  const std::string* grpc_message = header(r.trailers, "grpc-message");
  if (!grpc_status) {  // Trailers-Only response
    grpc_status = header(r.headers, "grpc-status");
    grpc_message = header(r.headers, "grpc-message");
  }
  const std::string* http_status = header(r.headers, ":status");
  if (http_status && *http_status != "200") {
    int hs = std::atoi(http_status->c_str());
    co_return critical(rpc_error(http_status_code(hs),
                                 "unexpected HTTP status code received from server: " + *http_status));
  }
  if (r.data_overflow)
    co_return critical(rpc_error(8, "grpc: received message larger than max (" +
                                        std::to_string(ctx.limits.max_h2_response_bytes) + ")"));
  if (!grpc_status) {
    if (r.rst_error != 0)
      co_return critical(rpc_error(r.rst_error == NGHTTP2_REFUSED_STREAM ? unavailable : internal,
                                   std::string("stream terminated by RST_STREAM with error code: ") +
                                       nghttp2_http2_strerror(r.rst_error)));
    co_return critical(rpc_error(internal, "server closed the stream without sending trailers"));
  }
  int code = std::atoi(grpc_status->c_str());
  if (code != 0)
    co_return critical(rpc_error(code, grpc_message ? percent_decode(*grpc_message) : std::string()));
  if (r.data.size() < 5)
    co_return critical(rpc_error(internal, "server sent no response message"));
  if (r.data[0] != 0)
    co_return critical(rpc_error(internal, "grpc: compressed message received, none was asked for"));
  std::uint32_t len = (std::uint32_t(static_cast<unsigned char>(r.data[1])) << 24) |
                      (std::uint32_t(static_cast<unsigned char>(r.data[2])) << 16) |
                      (std::uint32_t(static_cast<unsigned char>(r.data[3])) << 8) |
                      std::uint32_t(static_cast<unsigned char>(r.data[4]));
  if (r.data.size() - 5 < len) co_return critical(rpc_error(internal, "truncated response message"));
  auto status = health_status(std::string_view(r.data).substr(5, len));
  if (!status)
    co_return critical(rpc_error(internal, "grpc: failed to unmarshal the received message"));
  if (*status != 1)
    co_return critical("gRPC " + spec.target + " serving status: " + status_name(*status));
  co_return probe_result{check_status::passing, "gRPC check " + spec.target + ": success"};
}

}  // namespace

asio::awaitable<probe_result> run_grpc(const grpc_spec& spec, probe_context& ctx) {
  const auto deadline = clock::now() + effective_timeout(spec.timeout);
  auto critical = [](std::string text) { return probe_result{check_status::critical, std::move(text)}; };
  auto slash = spec.target.find('/');
  std::string server = spec.target.substr(0, slash);
  std::string service = slash == std::string::npos ? std::string() : spec.target.substr(slash + 1);

  std::string host, port;
  if (auto hp = split_host_port(server, nullptr)) {
    host = hp->host;
    port = hp->port;
  } else {
    host = host_of(server);
    port = "443";  // grpc-go's default port
  }
  beast::tcp_stream tcp(co_await asio::this_coro::executor);
  std::string dial_err = co_await dial_tcp(tcp, host, port, deadline);
  auto cs = co_await asio::this_coro::cancellation_state;
  if (cancelled(cs.cancelled())) co_return canceled_result();
  if (!dial_err.empty()) {
    if (clock::now() >= deadline) co_return critical(rpc_error(deadline_exceeded, "context deadline exceeded"));
    co_return critical(rpc_error(unavailable, "connection error: desc = \"transport: Error while dialing: " +
                                                  dial_err + "\""));
  }
  if (!spec.use_tls) co_return co_await call(tcp, spec, server, service, ctx, deadline);

  const std::string server_name = spec.tls_server_name.empty() ? host : spec.tls_server_name;
  beast::ssl_stream<beast::tcp_stream> s(std::move(tcp), ctx.tls());
  if (!prepare_tls_client(s.native_handle(), server_name, spec.tls_skip_verify, "h2"))
    co_return critical(rpc_error(unavailable, "cannot configure TLS"));
  auto [ec] = co_await s.async_handshake(asio::ssl::stream_base::client, asio::as_tuple(asio::use_awaitable));
  cs = co_await asio::this_coro::cancellation_state;
  if (cancelled(cs.cancelled())) co_return canceled_result();
  if (ec == beast::error::timeout) co_return critical(rpc_error(deadline_exceeded, "context deadline exceeded"));
  if (ec) {
    std::string text = tls_error_text(ec, s.native_handle(), server_name);
    if (text.empty()) text = go_error_text(ec);
    co_return critical(rpc_error(unavailable, "connection error: desc = \"transport: authentication handshake failed: " +
                                                  text + "\""));
  }
  co_return co_await call(s, spec, server, service, ctx, deadline);
}

}  // namespace esm::probe::detail
