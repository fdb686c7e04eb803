// An in-process TCP proxy on loopback that counts the bytes flowing each way: put one in front
// of each instance's Consul client to measure what that instance receives, headers included.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

namespace esm::test::sharding {

class counting_proxy {
 public:
  struct counters {
    std::uint64_t to_client = 0;  // bytes Consul sent to the instance
    std::uint64_t to_server = 0;  // bytes the instance sent to Consul
    std::uint64_t connections = 0;
    bool stopped = false;
  };

  counting_proxy(boost::asio::io_context& io, const std::string& target_ip, int target_port)
      : io_(io),
        target_(boost::asio::ip::make_address(target_ip), static_cast<std::uint16_t>(target_port)),
        acceptor_(io, {boost::asio::ip::make_address("127.0.0.1"), 0}) {
    boost::asio::co_spawn(io_, accept_loop(io_, acceptor_, target_, counters_), boost::asio::detached);
  }
  ~counting_proxy() {
    counters_->stopped = true;
    boost::system::error_code ec;
    acceptor_.close(ec);
  }

  std::string address() const {
    return "127.0.0.1:" + std::to_string(acceptor_.local_endpoint().port());
  }
  const counters& count() const { return *counters_; }

 private:
  using tcp = boost::asio::ip::tcp;
  struct pair {
    explicit pair(boost::asio::io_context& io) : client(io), server(io) {}
    tcp::socket client, server;
  };

  static boost::asio::awaitable<void> accept_loop(boost::asio::io_context& io, tcp::acceptor& acc,
                                                  tcp::endpoint target,
                                                  std::shared_ptr<counters> c) {
    auto tok = boost::asio::as_tuple(boost::asio::use_awaitable);
    for (;;) {
      auto [ec, sock] = co_await acc.async_accept(tok);
      if (ec || c->stopped) co_return;
      auto p = std::make_shared<pair>(io);
      p->client = std::move(sock);
      auto [cec] = co_await p->server.async_connect(target, tok);
      if (cec) continue;
      ++c->connections;
      boost::asio::co_spawn(io, pump(c, p, true), boost::asio::detached);
      boost::asio::co_spawn(io, pump(c, p, false), boost::asio::detached);
    }
  }

  static boost::asio::awaitable<void> pump(std::shared_ptr<counters> c, std::shared_ptr<pair> p,
                                           bool upstream) {
    auto tok = boost::asio::as_tuple(boost::asio::use_awaitable);
    auto& from = upstream ? p->client : p->server;
    auto& to = upstream ? p->server : p->client;
    std::array<char, 65536> buf;
    for (;;) {
      auto [ec, n] = co_await from.async_read_some(boost::asio::buffer(buf), tok);
      if (ec) break;
      (upstream ? c->to_server : c->to_client) += n;
      auto [wec, wn] = co_await boost::asio::async_write(to, boost::asio::buffer(buf.data(), n), tok);
      if (wec) break;
    }
    boost::system::error_code ignored;
    p->client.close(ignored);
    p->server.close(ignored);
  }

  boost::asio::io_context& io_;
  tcp::endpoint target_;
  tcp::acceptor acceptor_;
  std::shared_ptr<counters> counters_ = std::make_shared<counters>();
};

}  // namespace esm::test::sharding
