// Test support for the probe area: run a probe on an io_context under a hard limit, real
// servers on 127.0.0.1 (HTTP/HTTPS with Beast, TCP, TLS, UDP), and test certificates made
// with the openssl command-line tool in a temporary directory.
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ip/udp.hpp>

#include "esm/probe/probe.hpp"

namespace boost::asio::ssl {
class context;
}

namespace probe_test {

using namespace std::chrono_literals;
namespace asio = boost::asio;
using esm::probe::probe_result;

// Runs run_probe(spec) on ioc (where the test's servers also run) and returns its result;
// fails the test when it does not finish within `limit`. `elapsed` gets the probe's time.
probe_result run_one(asio::io_context& ioc, const esm::probe::probe_spec& spec,
                     esm::probe::probe_context& ctx, std::chrono::steady_clock::duration* elapsed = nullptr,
                     std::chrono::seconds limit = 60s);

// A port on 127.0.0.1 where nothing listens (bound, then released).
unsigned short refused_tcp_port();
unsigned short refused_udp_port();

// Certificates for 127.0.0.1 / localhost signed by a test CA, and a client certificate.
class test_pki {
 public:
  test_pki();  // runs `openssl`; throws when it fails
  ~test_pki();  // removes the directory
  std::string dir;
  std::string ca_pem, server_pem, server_key, client_pem, client_key;
  std::string other_ca_pem;  // an unrelated CA
};

struct http_request_seen {
  std::string method, target, body;
  std::multimap<std::string, std::string> headers;  // lower-case names
};

// An HTTP/1.1 server on 127.0.0.1 (HTTPS when given a TLS context). Routes:
//   /ok 200 "hello"; /busy 429; /fail 500 "boom"; /teapot 418;
//   /redirect/N 302 to /redirect/N-1, /redirect/0 200 "arrived";
//   /loop 302 to /loop; /abs-redirect 302 to http://127.0.0.1:<port>/ok;
//   /307 307 to /echo; /303 303 to /echo; /noloc 302 without Location;
//   /big 200 with a 10000-byte body (line numbers); /stream 200 chunked without end;
//   /echo 200 with "METHOD TARGET\nname: value\n...\n\nBODY";
//   /huge-header 200 with a 100 KiB header; /headonly 200 with Content-Length 5 for HEAD.
// Every request seen is recorded.
class http_server {
 public:
  explicit http_server(asio::io_context& ioc, asio::ssl::context* tls = nullptr);
  ~http_server();
  unsigned short port() const;
  std::string url(const std::string& path) const;
  std::vector<http_request_seen> seen;
  std::size_t stream_bytes_sent = 0;

 private:
  struct impl;
  std::shared_ptr<impl> impl_;
};

// A plain HTTP server on 127.0.0.1 that records the raw bytes of each connection, unparsed:
// what a probe put on the wire, including anything a parser would split or reject. Answers
// every request head (up to the first empty line) with 200 "ok".
class raw_http_server {
 public:
  explicit raw_http_server(asio::io_context& ioc);
  ~raw_http_server();
  unsigned short port() const;
  std::string url(const std::string& path) const;
  int accepted() const;
  std::string all_bytes() const;  // every connection's bytes, in order

 private:
  struct impl;
  std::shared_ptr<impl> impl_;
};

// Accepts TCP connections (optionally completing a TLS handshake) and never answers.
class silent_tcp_server {
 public:
  explicit silent_tcp_server(asio::io_context& ioc, asio::ssl::context* tls = nullptr);
  ~silent_tcp_server();
  unsigned short port() const;
  int accepted() const;

 private:
  struct impl;
  std::shared_ptr<impl> impl_;
};

// A UDP socket on 127.0.0.1 that answers each datagram with "pong" (or never answers).
class udp_server {
 public:
  udp_server(asio::io_context& ioc, bool answer);
  ~udp_server();
  unsigned short port() const;
  int received() const;

 private:
  struct impl;
  std::shared_ptr<impl> impl_;
};

// A TLS server context with the test server certificate; when client_ca is set, a client
// certificate signed by it is required.
std::unique_ptr<asio::ssl::context> server_tls(const test_pki& pki, bool require_client_cert,
                                               const std::string& alpn = {});

// A child process, stopped by its pid (SIGTERM, then SIGKILL) when destroyed.
class child_process {
 public:
  // Starts argv; returns once the child printed a first line on stdout (within `limit`).
  child_process(const std::vector<std::string>& argv, std::chrono::seconds limit = 30s);
  ~child_process();
  const std::string& first_line() const { return line_; }
  int pid() const { return pid_; }

 private:
  int pid_ = -1;
  std::string line_;
};

}  // namespace probe_test
