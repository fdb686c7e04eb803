// An in-process TCP proxy on 127.0.0.1, run on the test's io_context, in front of one target
// (Consul). The test can:
//  - switch it between forwarding, refusing (every connection closed at once) and
//    black-holing (connections stay open but no byte gets through in either direction), to
//    cut one client off from Consul;
//  - hold every chunk sent toward the target for a settable delay before forwarding it, to
//    keep a request in flight long enough to change things under it, deterministically;
//  - read the bytes forwarded each way and the connections made, to measure what a client
//    receives, headers included.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <list>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

namespace esm::test {

class tcp_proxy {
 public:
  enum class mode { forward, refuse, blackhole };

  struct counters {
    std::uint64_t to_client = 0;  // bytes the target sent to the client
    std::uint64_t to_server = 0;  // bytes the client sent to the target
    std::uint64_t connections = 0;
    // HTTP/1.1 requests forwarded to the target: request lines seen in the client's bytes
    // (" HTTP/1.1\r\n" cannot occur in a JSON body, which escapes CR and LF).
    std::uint64_t requests = 0;
  };

  // `chunk` is the most one read takes, so the unit a delay applies to.
  tcp_proxy(boost::asio::io_context& io, const std::string& target_ip, int target_port,
            std::size_t chunk = 16384)
      : io_(io),
        target_(boost::asio::ip::make_address(target_ip), static_cast<std::uint16_t>(target_port)),
        acceptor_(io, {boost::asio::ip::make_address("127.0.0.1"), 0}), chunk_(chunk) {
    boost::asio::co_spawn(io_, accept_loop(state_), boost::asio::detached);
  }
  // `target` as "host:port".
  tcp_proxy(boost::asio::io_context& io, const std::string& target)
      : tcp_proxy(io, target.substr(0, target.rfind(':')),
                  std::stoi(target.substr(target.rfind(':') + 1))) {}
  ~tcp_proxy() { stop(); }

  tcp_proxy(const tcp_proxy&) = delete;
  tcp_proxy& operator=(const tcp_proxy&) = delete;

  std::string address() const {
    return "127.0.0.1:" + std::to_string(acceptor_.local_endpoint().port());
  }

  void set_mode(mode m) {
    state_->m = m;
    if (m == mode::refuse) close_all();
  }
  mode current() const { return state_->m; }

  // Applies to chunks read from now on (client to target only; answers are not held).
  void set_delay(std::chrono::milliseconds d) { state_->delay = d; }

  const counters& count() const { return state_->count; }

  void stop() {
    state_->stopped = true;
    boost::system::error_code ec;
    acceptor_.close(ec);
    close_all();
  }

 private:
  using tcp = boost::asio::ip::tcp;
  struct pair {
    explicit pair(boost::asio::io_context& io) : client(io), server(io) {}
    tcp::socket client, server;
  };
  struct state {
    mode m = mode::forward;
    std::chrono::milliseconds delay{0};
    bool stopped = false;
    counters count;
    std::list<std::weak_ptr<pair>> pairs;
  };

  void close_all() {
    for (auto& w : state_->pairs) {
      if (auto p = w.lock()) {
        boost::system::error_code ec;
        p->client.close(ec);
        p->server.close(ec);
      }
    }
    state_->pairs.clear();
  }

  boost::asio::awaitable<void> accept_loop(std::shared_ptr<state> st) {
    auto tok = boost::asio::as_tuple(boost::asio::use_awaitable);
    for (;;) {
      auto [ec, sock] = co_await acceptor_.async_accept(tok);
      if (ec || st->stopped) co_return;
      if (st->m == mode::refuse) {
        boost::system::error_code ignored;
        sock.close(ignored);
        continue;
      }
      auto p = std::make_shared<pair>(io_);
      p->client = std::move(sock);
      auto [cec] = co_await p->server.async_connect(target_, tok);
      if (cec) continue;
      ++st->count.connections;
      st->pairs.remove_if([](const std::weak_ptr<pair>& w) { return w.expired(); });
      st->pairs.push_back(p);
      boost::asio::co_spawn(io_, pump(st, p, true, chunk_), boost::asio::detached);
      boost::asio::co_spawn(io_, pump(st, p, false, chunk_), boost::asio::detached);
    }
  }

  // Copies one direction. Black-holed bytes are read and dropped, so the peer's writes never
  // block and nothing arrives: what a silently broken network path looks like.
  static boost::asio::awaitable<void> pump(std::shared_ptr<state> st, std::shared_ptr<pair> p,
                                           bool upstream, std::size_t chunk) {
    auto tok = boost::asio::as_tuple(boost::asio::use_awaitable);
    auto& from = upstream ? p->client : p->server;
    auto& to = upstream ? p->server : p->client;
    std::vector<char> buf(chunk);
    boost::asio::steady_timer hold(from.get_executor());
    std::string tail;  // the end of the previous chunk, for a request line split across two
    for (;;) {
      auto [ec, n] = co_await from.async_read_some(boost::asio::buffer(buf), tok);
      if (ec) break;
      if (st->m == mode::blackhole) continue;
      (upstream ? st->count.to_server : st->count.to_client) += n;
      if (upstream) {
        static constexpr std::string_view marker = " HTTP/1.1\r\n";
        std::string seen = tail;
        seen.append(buf.data(), n);
        for (auto at = seen.find(marker); at != std::string::npos; at = seen.find(marker, at + 1))
          ++st->count.requests;
        // Keep fewer bytes than the marker, so a marker is never counted twice.
        tail = seen.substr(seen.size() - std::min(seen.size(), marker.size() - 1));
      }
      if (upstream && st->delay.count() > 0) {
        hold.expires_after(st->delay);
        co_await hold.async_wait(tok);
      }
      auto [wec, wn] = co_await boost::asio::async_write(to, boost::asio::buffer(buf.data(), n), tok);
      if (wec) break;
    }
    if (st->m == mode::blackhole) co_return;  // keep the other side hanging
    boost::system::error_code ignored;
    p->client.close(ignored);
    p->server.close(ignored);
  }

  boost::asio::io_context& io_;
  tcp::endpoint target_;
  tcp::acceptor acceptor_;
  std::size_t chunk_;
  std::shared_ptr<state> state_ = std::make_shared<state>();
};

}  // namespace esm::test
