// ICMP echo for many nodes from one socket per address family, as fping does: every ping of a
// pinger shares its IPv4 socket (or its IPv6 one), one receive loop per socket matches replies
// to pings by (source address, identifier, sequence, cookie), and one timer serves every
// ping's timeout through a min-heap of deadlines. The node prober (reference §7.2) runs
// thousands of pings a second through one pinger; a ping costs its coroutine frame and no
// other allocation once the pinger has warmed up (Asio recycles handler memory per thread).
//
// Two kinds of socket, as consul-esm's `ping_type` says:
//  - `udp`: SOCK_DGRAM + IPPROTO_ICMP(V6), "unprivileged ICMP". Linux allows it to processes
//    whose group lies within net.ipv4.ping_group_range (per network namespace) and rewrites
//    the identifier to the socket's own ("port"); ICMP errors arrive in the error queue.
//  - `raw` (`ping_type = "socket"`): SOCK_RAW, needs CAP_NET_RAW. Such a socket sees all ICMP
//    of the host, so an ICMP filter lets only echo replies and errors in, and a per-pinger
//    random identifier and cookie tell ours from other processes'.
//
// An ICMP destination-unreachable or time-exceeded that quotes one of our requests fails that
// ping at once (consul-esm waits for the timeout; the outcome is the same, only sooner).
//
// One thread: a pinger and its pings run on the executor it was made with. Destroy it before
// its io_context (as any Asio I/O object); pings still in flight then end with an error.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/address.hpp>

namespace esm::ping {

enum class socket_kind { udp, raw };

struct ping_outcome {
  bool ok = false;
  // From the kernel's receive timestamp (SO_TIMESTAMPNS) when it has one, minus the send
  // time; else measured when the reply was read.
  std::chrono::nanoseconds rtt{0};
  // `ping to "10.0.0.1" timed out` as consul-esm says; `ping to "..." failed: <why>` for a
  // send error or an ICMP error; "cancelled". Empty when ok.
  std::string error;
  // The failure is this host's, not the node's: no socket for the family, the sequence space
  // full, or a send refused locally (EPERM or EACCES from a firewall or a security module,
  // ENOBUFS, ...). Route errors (ENETUNREACH, EHOSTUNREACH) are the node's.
  bool local_error = false;
};

struct pinger_stats {
  std::uint64_t sent = 0;
  std::uint64_t replies = 0;
  std::uint64_t timeouts = 0;
  std::uint64_t send_errors = 0;  // sendto failed, no socket for the family, sequence space full
  std::uint64_t ignored = 0;      // foreign or malformed packets
  std::uint64_t late = 0;         // a reply to one of our sends no longer waiting (timed out,
                                  // cancelled, or a duplicate)
  std::uint64_t unreachable = 0;  // pings failed by an ICMP error quoting them
  std::uint64_t cancelled = 0;
  std::uint64_t deferred = 0;     // sends that met a full socket buffer and waited for room
  std::size_t in_flight = 0;
};

class pinger {
 public:
  pinger(boost::asio::any_io_executor ex, socket_kind kind);
  ~pinger();
  pinger(const pinger&) = delete;
  pinger& operator=(const pinger&) = delete;

  // Opens the IPv4 and IPv6 sockets in the calling thread's network namespace, and starts
  // their receive loops. Idempotent for a family already open. Returns "" when at least IPv4
  // opened, else a message for operators naming what is missing (udp:
  // net.ipv4.ping_group_range with the process's groups and the sysctl's value; raw:
  // CAP_NET_RAW). A ping to a family never opened opens it first.
  std::string open();
  bool available(bool v6) const;
  // What keeps a family closed (the last open()'s findings); "" when both are open.
  std::string unavailable_reason() const;

  // One echo request, one reply awaited until `timeout`. Network errors are the outcome's
  // error, never thrown. Honours cancellation of any type that reaches it: returns at once
  // with error "cancelled" and frees its sequence number (a reply arriving later counts as
  // `late`). A v4-mapped IPv6 address is pinged over IPv4. At most 65536 pings in flight per
  // family; beyond that a ping fails at once.
  boost::asio::awaitable<ping_outcome> ping(boost::asio::ip::address to, std::chrono::milliseconds timeout);

  const pinger_stats& stats() const;

  // Closes both sockets; pings in flight end with an error. open() may follow.
  void close();

  // For tests: the sequence number the next ping of each family tries first.
  void set_next_sequence(std::uint16_t sequence);

  class engine;

 private:
  std::shared_ptr<engine> engine_;
};

}  // namespace esm::ping
