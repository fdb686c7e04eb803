// The pinger against real ICMP, as root: loopback of the host and of namespaces the test makes
// (test/support/netns.hpp), never an address outside this machine. No Consul.

#include <doctest/doctest.h>

#include <dirent.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <map>
#include <cstdlib>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "async.hpp"
#include "esm/ping/pinger.hpp"
#include "netns.hpp"

namespace asio = boost::asio;
using namespace std::chrono_literals;
using esm::ping::ping_outcome;
using esm::ping::pinger;
using esm::ping::socket_kind;
using steady = std::chrono::steady_clock;

// Counts every allocation of the process, to measure what a ping costs.
namespace {
std::atomic<std::uint64_t> allocations{0};
}
void* operator new(std::size_t n) {
  ++allocations;
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }

namespace {

asio::ip::address addr(const std::string& s) { return asio::ip::make_address(s); }

void require_root() { REQUIRE_MESSAGE(::geteuid() == 0, "these tests send real ICMP and need root"); }

std::size_t count_fds() {
  std::size_t n = 0;
  if (DIR* d = ::opendir("/proc/self/fd")) {
    while (::readdir(d)) ++n;
    ::closedir(d);
  }
  return n;  // includes ".", ".." and the directory's own fd: compare differences only
}

// Runs the io_context until `done()` or `limit` passed.
template <class Done>
void run_until(asio::io_context& io, Done done, std::chrono::milliseconds limit) {
  auto end = steady::now() + limit;
  io.restart();
  while (!done() && steady::now() < end) {
    if (io.stopped()) io.restart();
    io.run_one_until(end);
  }
}

void run_for(asio::io_context& io, std::chrono::milliseconds d) {
  run_until(io, [] { return false; }, d);
}

struct result_slot {
  ping_outcome out;
  bool done = false;
  steady::time_point at{};
};

asio::awaitable<void> ping_into(pinger& p, asio::ip::address to, std::chrono::milliseconds timeout, result_slot& r) {
  auto o = co_await p.ping(to, timeout);
  r.out = std::move(o);
  r.at = steady::now();
  r.done = true;
}

// A pinger whose sockets were opened in namespace `ns` (its loopback, its routes).
std::string open_in(pinger& p, const std::string& ns) {
  esm::test::enter_netns in(ns);
  return p.open();
}

// Two namespaces joined by a veth pair c0 (in `client`, 10.201.0.1, fd00:201::1) and r0 (in
// `peer`, 10.201.0.2, fd00:201::2); the client routes everything through the peer.
struct linked_netns {
  explicit linked_netns(const std::string& tag) : client(tag + "c"), peer(tag + "p") {
    client.exec("ip link add c0 type veth peer name r0 netns " + peer.name());
    client.exec("sysctl -qw net.ipv4.ping_group_range='0 2147483647'");
    client.exec("ip addr add 10.201.0.1/30 dev c0");
    client.exec("ip -6 addr add fd00:201::1/64 dev c0 nodad");
    client.exec("ip link set c0 up");
    peer.exec("ip addr add 10.201.0.2/30 dev r0");
    peer.exec("ip -6 addr add fd00:201::2/64 dev r0 nodad");
    peer.exec("ip link set r0 up");
    client.exec("ip route add default via 10.201.0.2");
    client.exec("ip -6 route add default via fd00:201::2");
  }
  esm::test::scoped_netns client;
  esm::test::scoped_netns peer;
};

bool all_done(const std::vector<result_slot>& v) {
  for (auto& r : v)
    if (!r.done) return false;
  return true;
}

}  // namespace

TEST_CASE("raw: loopback pings over IPv4 and IPv6 succeed with a plausible rtt") {
  require_root();
  asio::io_context io;
  pinger p(io.get_executor(), socket_kind::raw);
  REQUIRE(p.open() == "");
  CHECK(p.available(false));
  REQUIRE(p.available(true));
  CHECK(p.unavailable_reason() == "");
  CHECK(p.open() == "");  // idempotent
  for (const char* a : {"127.0.0.1", "127.3.4.5", "::1", "::ffff:127.0.0.1"}) {
    CAPTURE(a);
    auto o = esm::test::run(io, p.ping(addr(a), 1000ms), 5s);
    CHECK(o.ok);
    CHECK(o.error == "");
    CHECK(o.rtt > 0ns);
    CHECK(o.rtt < 1s);
  }
  CHECK(p.stats().sent == 4);
  CHECK(p.stats().replies == 4);
  CHECK(p.stats().in_flight == 0);
}

TEST_CASE("raw: 200 concurrent pings to 200 loopback addresses share one socket per family") {
  require_root();
  asio::io_context io;
  pinger p(io.get_executor(), socket_kind::raw);
  auto before = count_fds();
  REQUIRE(p.open() == "");
  std::vector<result_slot> results(200);
  std::vector<std::unique_ptr<esm::test::task>> tasks;
  for (int i = 0; i < 200; ++i) {
    auto to = i < 190 ? addr("127." + std::to_string(i / 50) + "." + std::to_string(i % 50) + "." + std::to_string(1 + i))
                      : addr("::1");
    tasks.push_back(std::make_unique<esm::test::task>(io, ping_into(p, to, 2000ms, results[i])));
  }
  run_until(io, [&] { return all_done(results); }, 10s);
  REQUIRE(all_done(results));
  int ok = 0;
  for (auto& r : results) {
    if (!r.out.ok) MESSAGE(r.out.error);
    ok += r.out.ok;
  }
  CHECK(ok == 200);
  CHECK(count_fds() - before == 2);
  CHECK(p.stats().sent == 200);
  CHECK(p.stats().replies == 200);
  CHECK(p.stats().timeouts == 0);
  CHECK(p.stats().in_flight == 0);
  p.close();
  CHECK(count_fds() == before);
}

TEST_CASE("raw: a silent host times out with consul-esm's text, in deadline order") {
  require_root();
  esm::test::silent_host silent;
  asio::io_context io;
  pinger p(io.get_executor(), socket_kind::raw);
  REQUIRE(p.open() == "");
  auto to = addr(silent.address());

  auto t0 = steady::now();
  auto o = esm::test::run(io, p.ping(to, 300ms), 5s);
  auto took = steady::now() - t0;
  CHECK_FALSE(o.ok);
  CHECK(o.error == "ping to \"" + silent.address() + "\" timed out");
  CHECK(took >= 295ms);
  CHECK(took < 1s);
  CHECK(p.stats().timeouts == 1);
  CHECK(p.stats().in_flight == 0);

  SUBCASE("different timeouts end in deadline order, one timer for all") {
    std::vector<result_slot> r(3);
    std::vector<std::unique_ptr<esm::test::task>> tasks;
    tasks.push_back(std::make_unique<esm::test::task>(io, ping_into(p, to, 400ms, r[0])));
    tasks.push_back(std::make_unique<esm::test::task>(io, ping_into(p, to, 200ms, r[1])));
    tasks.push_back(std::make_unique<esm::test::task>(io, ping_into(p, to, 300ms, r[2])));
    run_until(io, [&] { return all_done(r); }, 5s);
    REQUIRE(all_done(r));
    CHECK(r[1].at < r[2].at);
    CHECK(r[2].at < r[0].at);
    for (auto& x : r) CHECK(x.out.error == "ping to \"" + silent.address() + "\" timed out");
  }
  SUBCASE("many timeouts at once, mixed with loopback replies") {
    std::vector<result_slot> r(100);
    std::vector<std::unique_ptr<esm::test::task>> tasks;
    for (int i = 0; i < 100; ++i)
      tasks.push_back(std::make_unique<esm::test::task>(
          io, ping_into(p, i % 2 ? to : addr("127.0.0.1"), 300ms, r[static_cast<std::size_t>(i)])));
    run_until(io, [&] { return all_done(r); }, 5s);
    REQUIRE(all_done(r));
    for (int i = 0; i < 100; ++i) CHECK(r[static_cast<std::size_t>(i)].out.ok == (i % 2 == 0));
    CHECK(p.stats().in_flight == 0);
  }
}

TEST_CASE("raw: cancellation returns at once, frees the sequence, and a later reply goes to nobody") {
  require_root();
  asio::io_context io;
  pinger p(io.get_executor(), socket_kind::raw);
  REQUIRE(p.open() == "");

  SUBCASE("a ping to a silent host, cancelled after 50 ms") {
    esm::test::silent_host silent;
    result_slot r;
    esm::test::task t(io, ping_into(p, addr(silent.address()), 5000ms, r));
    run_for(io, 50ms);
    CHECK_FALSE(r.done);
    CHECK(p.stats().in_flight == 1);
    auto t0 = steady::now();
    t.cancel();
    run_until(io, [&] { return r.done; }, 2s);
    REQUIRE(r.done);
    CHECK(r.at - t0 < 100ms);
    CHECK(r.out.error == "cancelled");
    CHECK(p.stats().in_flight == 0);
    CHECK(p.stats().cancelled == 1);
  }
  SUBCASE("the reply to a cancelled ping is late for the next user of its sequence number") {
    // Driven from inside the io_context, so that the stop reaches the ping at once (co_spawn
    // defers a cancellation emitted from another thread of control) before its reply is read.
    struct state {
      asio::cancellation_signal sig;
      result_slot a, b;
      std::size_t in_flight_after_cancel = 99;
      std::uint64_t replies_before_cancel = 99;
    };
    auto st = std::make_shared<state>();
    auto driver = [](pinger& p, std::shared_ptr<state> st) -> asio::awaitable<void> {
      auto ex = co_await asio::this_coro::executor;
      p.set_next_sequence(100);
      asio::co_spawn(ex, ping_into(p, asio::ip::make_address("127.0.0.1"), std::chrono::milliseconds(2000), st->a),
                     asio::bind_cancellation_slot(st->sig.slot(), [](std::exception_ptr) {}));
      for (int i = 0; i < 10 && p.stats().sent == 0; ++i) co_await asio::post(ex, asio::use_awaitable);
      st->replies_before_cancel = p.stats().replies;
      st->sig.emit(asio::cancellation_type::terminal);
      st->in_flight_after_cancel = p.stats().in_flight;
      p.set_next_sequence(100);
      auto o = co_await p.ping(asio::ip::make_address("127.0.0.1"), std::chrono::milliseconds(2000));
      st->b.out = std::move(o);
      st->b.done = true;
    };
    esm::test::run(io, driver(p, st), 5s);
    run_until(io, [&] { return st->a.done; }, 2s);
    REQUIRE(st->a.done);
    CHECK(st->replies_before_cancel == 0);
    CHECK(st->in_flight_after_cancel == 0);  // freed synchronously
    CHECK(st->a.out.error == "cancelled");
    CHECK_FALSE(st->a.out.ok);
    CHECK(st->b.out.ok);
    CHECK(p.stats().sent == 2);
    CHECK(p.stats().late == 1);
    CHECK(p.stats().replies == 1);
  }
  SUBCASE("total cancellation reaches it too, and a stop before the call sends nothing") {
    esm::test::silent_host silent;
    auto to = addr(silent.address());
    struct state {
      asio::cancellation_signal sig;
      ping_outcome out;
      bool done = false;
    };
    auto st = std::make_shared<state>();
    auto body = [](pinger& p, asio::ip::address to, std::shared_ptr<state> st) -> asio::awaitable<void> {
      co_await asio::this_coro::reset_cancellation_state([](asio::cancellation_type t) { return t; });
      auto o = co_await p.ping(to, 5000ms);
      st->out = std::move(o);
    };
    asio::co_spawn(io, body(p, to, st), asio::bind_cancellation_slot(st->sig.slot(), [st](std::exception_ptr e) {
                     CHECK_FALSE(e);
                     st->done = true;
                   }));
    run_for(io, 30ms);
    st->sig.emit(asio::cancellation_type::total);
    run_until(io, [&] { return st->done; }, 2s);
    REQUIRE(st->done);
    CHECK(st->out.error == "cancelled");

    auto sent = p.stats().sent;
    auto early = [](pinger& p, asio::ip::address to, std::shared_ptr<state> st) -> asio::awaitable<void> {
      co_await asio::this_coro::throw_if_cancelled(false);
      bool ran_out = co_await esm::async::sleep_for(10s);  // cancelled: returns false at once
      CHECK_FALSE(ran_out);
      auto o = co_await p.ping(to, 5000ms);
      st->out = std::move(o);
    };
    auto st2 = std::make_shared<state>();
    asio::co_spawn(io, early(p, to, st2), asio::bind_cancellation_slot(st2->sig.slot(), [st2](std::exception_ptr e) {
                     CHECK_FALSE(e);
                     st2->done = true;
                   }));
    run_for(io, 10ms);
    st2->sig.emit(asio::cancellation_type::terminal);
    run_until(io, [&] { return st2->done; }, 2s);
    REQUIRE(st2->done);
    CHECK(st2->out.error == "cancelled");
    CHECK(p.stats().sent == sent);
  }
}

TEST_CASE("raw: closing or destroying the pinger ends its pings with an error") {
  require_root();
  esm::test::silent_host silent;
  asio::io_context io;
  auto p = std::make_unique<pinger>(io.get_executor(), socket_kind::raw);
  REQUIRE(p->open() == "");
  std::vector<result_slot> r(10);
  std::vector<std::unique_ptr<esm::test::task>> tasks;
  for (auto& x : r) tasks.push_back(std::make_unique<esm::test::task>(io, ping_into(*p, addr(silent.address()), 5000ms, x)));
  run_for(io, 30ms);
  CHECK(p->stats().in_flight == 10);
  SUBCASE("close") {
    p->close();
    run_until(io, [&] { return all_done(r); }, 2s);
    REQUIRE(all_done(r));
    for (auto& x : r) CHECK(x.out.error == "ping to \"" + silent.address() + "\" failed: the pinger was closed");
    CHECK_FALSE(p->available(false));
    auto o = esm::test::run(io, p->ping(addr("127.0.0.1"), 500ms), 2s);
    CHECK(o.error.find("no IPv4 ICMP socket") != std::string::npos);
    REQUIRE(p->open() == "");  // and it opens again
    o = esm::test::run(io, p->ping(addr("127.0.0.1"), 500ms), 2s);
    CHECK(o.ok);
  }
  SUBCASE("destroy") {
    p.reset();
    run_until(io, [&] { return all_done(r); }, 2s);
    REQUIRE(all_done(r));
    for (auto& x : r) CHECK_FALSE(x.out.ok);
  }
}

TEST_CASE("udp: unprivileged ICMP inside a namespace whose ping_group_range allows every group") {
  require_root();
  esm::test::scoped_netns ns("pingudp");
  ns.exec("sysctl -qw net.ipv4.ping_group_range='0 2147483647'");
  asio::io_context io;
  pinger p(io.get_executor(), socket_kind::udp);
  REQUIRE(open_in(p, ns.name()) == "");
  REQUIRE(p.available(false));
  // The namespace's own loopback (the kernel rewrote our identifier to the socket's).
  std::vector<std::string> targets = {"127.0.0.1", "127.9.9.9"};
  if (p.available(true)) targets.push_back("::1");
  for (auto& a : targets) {
    CAPTURE(a);
    auto o = esm::test::run(io, p.ping(addr(a), 1000ms), 5s);
    CHECK(o.ok);
    CHECK(o.rtt > 0ns);
    CHECK(o.rtt < 1s);
  }
  // 100 at once.
  std::vector<result_slot> r(100);
  std::vector<std::unique_ptr<esm::test::task>> tasks;
  for (int i = 0; i < 100; ++i)
    tasks.push_back(std::make_unique<esm::test::task>(io, ping_into(p, addr("127.0.0." + std::to_string(i + 1)), 2000ms,
                                                                    r[static_cast<std::size_t>(i)])));
  run_until(io, [&] { return all_done(r); }, 5s);
  REQUIRE(all_done(r));
  for (auto& x : r) CHECK(x.out.ok);
  // No route in that namespace: sendto fails at once, and that is the ping's error.
  auto t0 = steady::now();
  auto o = esm::test::run(io, p.ping(addr("203.0.113.7"), 3000ms), 5s);
  CHECK(steady::now() - t0 < 500ms);
  CHECK(o.error == "ping to \"203.0.113.7\" failed: Network is unreachable");
  CHECK(p.stats().send_errors == 1);
}

TEST_CASE("udp: a ping_group_range that excludes the process makes open() say so") {
  require_root();
  esm::test::scoped_netns ns("pingdeny");
  ns.exec("sysctl -qw net.ipv4.ping_group_range='1 0'");
  asio::io_context io;
  pinger p(io.get_executor(), socket_kind::udp);
  auto msg = open_in(p, ns.name());
  MESSAGE(msg);
  CHECK(msg.find("net.ipv4.ping_group_range") != std::string::npos);
  CHECK(msg.find("\"1 0\"") != std::string::npos);
  CHECK(msg.find("group 0") != std::string::npos);
  CHECK_FALSE(p.available(false));
  CHECK_FALSE(p.available(true));
  CHECK(p.unavailable_reason() == msg);
  auto o = esm::test::run(io, p.ping(addr("127.0.0.1"), 300ms), 2s);
  CHECK_FALSE(o.ok);
  CHECK(o.error.find("net.ipv4.ping_group_range") != std::string::npos);
}

TEST_CASE("raw: without CAP_NET_RAW open() names it (a child process as nobody)") {
  require_root();
  int fds[2];
  REQUIRE(::pipe(fds) == 0);
  pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    ::close(fds[0]);
    int code = 2;
    // Dropping to an unprivileged uid clears every capability.
    if (::setgroups(0, nullptr) == 0 && ::setresgid(65534, 65534, 65534) == 0 && ::setresuid(65534, 65534, 65534) == 0) {
      asio::io_context io;
      pinger raw(io.get_executor(), socket_kind::raw);
      std::string msg = raw.open();
      pinger udp(io.get_executor(), socket_kind::udp);
      std::string umsg = udp.open();  // the host's range is "1 0"
      std::string both = msg + "\n" + umsg;
      auto w = ::write(fds[1], both.data(), both.size());
      (void)w;
      code = msg.find("CAP_NET_RAW") != std::string::npos && !raw.available(false) ? 0 : 1;
    }
    ::_exit(code);
  }
  ::close(fds[1]);
  std::string out;
  auto end = steady::now() + 10s;
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(end - steady::now()).count();
    if (left <= 0) break;
    pollfd pfd{fds[0], POLLIN, 0};
    if (::poll(&pfd, 1, static_cast<int>(left)) <= 0) break;
    char buf[1024];
    auto n = ::read(fds[0], buf, sizeof buf);
    if (n <= 0) break;
    out.append(buf, static_cast<std::size_t>(n));
  }
  ::close(fds[0]);
  int status = 0;
  pid_t got = 0;
  for (int i = 0; i < 100 && got == 0; ++i) {
    got = ::waitpid(pid, &status, WNOHANG);
    if (got == 0) ::usleep(50'000);
  }
  if (got == 0) {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, &status, 0);
    FAIL("the child hung");
  }
  MESSAGE(out);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  CHECK(out.find("CAP_NET_RAW") != std::string::npos);
  // The host's ping_group_range ("1 0" on CI) leaves nobody out of unprivileged ICMP too.
  if (out.find("ping_group_range") != std::string::npos) CHECK(out.find("group 65534") != std::string::npos);
}

TEST_CASE("ICMP errors from a router fail the ping at once, for both socket kinds") {
  require_root();
  linked_netns net("pingrt");
  auto& router = net.peer;
  router.exec("sysctl -qw net.ipv4.ip_forward=1");
  router.exec("sysctl -qw net.ipv6.conf.all.forwarding=1");
  router.exec("ip route add unreachable 192.0.2.0/24");
  router.exec("ip -6 route add unreachable 2001:db8::/32");

  for (auto kind : {socket_kind::raw, socket_kind::udp}) {
    CAPTURE(kind == socket_kind::raw ? "raw" : "udp");
    asio::io_context io;
    pinger p(io.get_executor(), kind);
    REQUIRE(open_in(p, net.client.name()) == "");
    REQUIRE(p.available(true));
    // The router answers (after ARP/ND): its address, then addresses it has no route for.
    auto o = esm::test::run(io, p.ping(addr("10.201.0.2"), 2000ms), 5s);
    CHECK(o.ok);
    o = esm::test::run(io, p.ping(addr("fd00:201::2"), 2000ms), 5s);
    CHECK(o.ok);
    auto t0 = steady::now();
    o = esm::test::run(io, p.ping(addr("192.0.2.1"), 3000ms), 5s);
    CHECK(steady::now() - t0 < 1s);
    CHECK(o.error == "ping to \"192.0.2.1\" failed: destination unreachable (host unreachable) from 10.201.0.2");
    t0 = steady::now();
    o = esm::test::run(io, p.ping(addr("2001:db8::1"), 3000ms), 5s);
    CHECK(steady::now() - t0 < 1s);
    CHECK(o.error.rfind("ping to \"2001:db8::1\" failed: destination unreachable", 0) == 0);
    CHECK(o.error.find("from fd00:201::2") != std::string::npos);
    CHECK(p.stats().unreachable == 2);
    CHECK(p.stats().in_flight == 0);
  }
}

TEST_CASE("a full send buffer defers sends (EAGAIN); deferred pings are sent in order or time out") {
  require_root();
  linked_netns net("pingslow");
  // A slow link (about 1900 requests a second): the qdisc's queue holds the socket's send
  // buffer, so sendto meets EAGAIN after a few hundred requests.
  net.client.exec("tc qdisc add dev c0 root tbf rate 1mbit burst 1600 limit 20000000");
  const int n = 1500;
  auto burst = [&](socket_kind kind, bool answered) {
    CAPTURE(kind == socket_kind::raw ? "raw" : "udp");
    asio::io_context io;
    pinger p(io.get_executor(), kind);
    REQUIRE(open_in(p, net.client.name()) == "");
    // Resolve the neighbours first: until then the kernel queues a few packets and drops the
    // rest without telling the sender.
    auto v4 = esm::test::run(io, p.ping(addr("10.201.0.2"), 2000ms), 5s);
    REQUIRE(v4.ok == answered);
    if (answered) {
      auto v6 = esm::test::run(io, p.ping(addr("fd00:201::2"), 2000ms), 5s);
      REQUIRE(v6.ok);
    }
    auto base = p.stats();
    std::vector<result_slot> r(n);
    std::vector<std::unique_ptr<esm::test::task>> tasks;
    for (int i = 0; i < n; ++i) {
      auto to = addr(answered && i % 2 ? "fd00:201::2" : "10.201.0.2");
      tasks.push_back(std::make_unique<esm::test::task>(io, ping_into(p, to, answered ? 8000ms : 300ms,
                                                                      r[static_cast<std::size_t>(i)])));
    }
    run_until(io, [&] { return all_done(r); }, 20s);
    REQUIRE(all_done(r));
    std::map<std::string, int> outcomes;
    for (auto& x : r) outcomes[x.out.ok ? "ok" : x.out.error]++;
    std::string summary;
    for (auto& [e, k] : outcomes) summary += std::to_string(k) + " x " + e + "\n";
    INFO(summary);
    CHECK(p.stats().deferred > 0);
    CHECK(p.stats().in_flight == 0);
    if (answered) {
      int ok = 0;
      for (auto& x : r) ok += x.out.ok;
      CHECK(ok == n);
      CHECK(p.stats().sent - base.sent == n);
      // Deferred sends keep their order: per family, replies come back in request order.
      int disorder = 0;
      for (int i = 2; i < n; ++i) disorder += r[static_cast<std::size_t>(i)].at < r[static_cast<std::size_t>(i - 2)].at;
      CHECK(disorder == 0);
    } else {
      int timed_out = 0;
      for (auto& x : r) timed_out += x.out.error == "ping to \"10.201.0.2\" timed out";
      CHECK(timed_out == n);
      CHECK(p.stats().sent - base.sent < std::uint64_t(n));  // the rest timed out while deferred
    }
  };
  SUBCASE("answered") {
    burst(socket_kind::raw, true);
    burst(socket_kind::udp, true);
  }
  SUBCASE("unanswered: a deferred ping times out, never sent") {
    net.peer.exec("sysctl -qw net.ipv4.icmp_echo_ignore_all=1");
    burst(socket_kind::raw, false);
    burst(socket_kind::udp, false);
  }
}

TEST_CASE("cost: sequential and concurrent loopback pings (figures, not limits)") {
  require_root();
  asio::io_context io;
  pinger p(io.get_executor(), socket_kind::raw);
  REQUIRE(p.open() == "");
  struct seq_state {
    int ok = 0;
    std::uint64_t allocs = 0;
  };
  auto sequential = [](pinger& p, int n, seq_state& s) -> asio::awaitable<void> {
    for (int i = 0; i < 200; ++i) {  // warm up the recycling caches
      auto o = co_await p.ping(asio::ip::make_address_v4("127.0.0.1"), std::chrono::milliseconds(1000));
      (void)o;
    }
    auto a0 = allocations.load();
    for (int i = 0; i < n; ++i) {
      auto o = co_await p.ping(asio::ip::make_address_v4("127.0.0.1"), std::chrono::milliseconds(1000));
      s.ok += o.ok;
    }
    s.allocs = allocations.load() - a0;
  };
  seq_state s;
  const int n = 5000;
  auto t0 = steady::now();
  esm::test::run(io, sequential(p, n, s), 60s);
  auto us = std::chrono::duration<double, std::micro>(steady::now() - t0).count() / (n + 200);
  CHECK(s.ok == n);
  MESSAGE("sequential: " << us << " us per ping (round trip included), " << double(s.allocs) / n
                         << " allocations per ping");

  const int total = 20000, window = 1000;
  std::vector<result_slot> r(total);
  std::vector<std::unique_ptr<esm::test::task>> tasks;
  tasks.reserve(total);
  auto c0 = steady::now();
  for (int start = 0; start < total; start += window) {
    for (int i = start; i < start + window; ++i) {
      auto to = asio::ip::address_v4(0x7f000001u + static_cast<std::uint32_t>(i % 5000));
      tasks.push_back(std::make_unique<esm::test::task>(io, ping_into(p, to, 5000ms, r[static_cast<std::size_t>(i)])));
    }
    run_until(io, [&] {
      for (int i = start; i < start + window; ++i)
        if (!r[static_cast<std::size_t>(i)].done) return false;
      return true;
    }, 20s);
  }
  auto cus = std::chrono::duration<double, std::micro>(steady::now() - c0).count() / total;
  int ok = 0;
  for (auto& x : r) ok += x.out.ok;
  CHECK(ok == total);
  MESSAGE("concurrent (" << window << " in flight): " << cus << " us per ping, test harness included");
}
