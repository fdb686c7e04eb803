// Benchmark (prints figures, not a test): the cost of esmd's node prober pinging N external
// nodes, next to fping (Debian package fping, 5.1) pinging the same addresses at the same rate,
// in one run.
//
//   bench_ping [N [INTERVAL [DURATION]]] [--kind=raw|udp] [--skip-fping] [--no-coordinates]
//
// N probe nodes (default 10000), INTERVAL the node_probe_interval (default 10s; "10", "10s" or
// "500ms"), DURATION the measured window (default 30s); N / INTERVAL pings per second. The
// addresses are spread over 127.0.0.0/8 (127.b.c.d, d in 1..254), which all answer on
// loopback: no packet leaves the host. Steps:
//   1. a Consul dev agent (test/support/consul_fixture.hpp); N external nodes (meta
//      external-node=true, external-probe=true) registered through /v1/txn node `set`
//      operations, 64 per transaction, 8 transactions at a time, then read back with
//      catalog_nodes (node-meta filter) for their ModifyIndex;
//   2. esmd's node_prober with the real Consul client (ping_type raw by default: run it as
//      root; --kind=udp needs net.ipv4.ping_group_range), timeout 5 s. Memory per node:
//      malloc'd bytes (mallinfo2 uordblks) and RSS before set_nodes and after the first
//      interval (the warm-up: every node pinged once, externalNodeHealth written for every
//      node, the first coordinate writes). Then over the window: pings, CPU-ms per 1000 pings
//      (getrusage RUSAGE_SELF: the process does nothing else then; Consul's CPU is its own
//      and printed apart, from /proc/PID/stat), Consul requests per ping
//      (stats().consul_requests()), lateness of pings against their schedule p50/p99/max
//      (1 ms buckets, upper bounds), replies/failures, pings/s;
//   3. fping -q -f FILE -p INTERVAL -i INTERVAL/N -c DURATION/INTERVAL -t 5000 over the same
//      addresses, after the prober stopped (the two never ping at the same time, so neither
//      sees the other's replies): the same total rate for about the same window. As root
//      fping 5.1 takes a fractional -i (ms, the period between any two pings it sends), so
//      10000 nodes at 10 s is -i 1.000. CPU and max RSS from wait4 on its pid; pings and
//      replies from its -q summary ("addr : xmt/rcv/%loss = 3/3/0%").
//   4. a table of both, and whether the targets are met: CPU per ping at most 1.5 x fping's,
//      at most 1 KiB per node (malloc'd bytes after the first interval), at most 0.2 Consul
//      requests per ping, p99 lateness under 100 ms.
// --no-coordinates runs the prober with disable_coordinate_updates (to tell the cost of the
// coordinate writes from the pings'). esmd logs at WARN here: at INFO the warm-up prints a line
// per 32 nodes that turned passing (nothing changes in the window, so the figures are the same).
// Every process started is stopped by its own pid. Environment: CONSUL_BIN (else
// /root/.cache/consul-bin/consul if present, else the project's deploy/dev/get-consul, found
// through ESMD_SOURCE_ROOT). Needs /usr/bin/fping unless --skip-fping. With the defaults a run
// takes about 1.5 minutes. Release figures:
//   ninja -C build/release test/bench/ping/bench_ping && build/release/test/bench/ping/bench_ping
#include <malloc.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>

#include "async.hpp"
#include "consul_fixture.hpp"
#include "measure.hpp"
#include "esm/consul/client.hpp"
#include "esm/consul/types.hpp"
#include "esm/log/log.hpp"
#include "esm/ping/prober.hpp"
#include "esm/util/async.hpp"
#include "esm/util/lag_histogram.hpp"

namespace asio = boost::asio;
using namespace std::chrono_literals;
using clk = std::chrono::steady_clock;
using std::chrono::milliseconds;

namespace {

constexpr const char* fping_bin = "/usr/bin/fping";
constexpr const char* node_prefix = "bench-ping-";

// ---- measuring -----------------------------------------------------------------------------

double cpu_ms(int who) {
  rusage u{};
  ::getrusage(who, &u);
  return (double(u.ru_utime.tv_sec) + double(u.ru_stime.tv_sec)) * 1e3 +
         (double(u.ru_utime.tv_usec) + double(u.ru_stime.tv_usec)) / 1e3;
}

// System (kernel) time only, in ms.
double sys_ms(const rusage& u) { return double(u.ru_stime.tv_sec) * 1e3 + double(u.ru_stime.tv_usec) / 1e3; }
double self_sys_ms() {
  rusage u{};
  ::getrusage(RUSAGE_SELF, &u);
  return sys_ms(u);
}

double rusage_ms(const rusage& u) {
  return (double(u.ru_utime.tv_sec) + double(u.ru_stime.tv_sec)) * 1e3 +
         (double(u.ru_utime.tv_usec) + double(u.ru_stime.tv_usec)) / 1e3;
}

using namespace esm::test::measure;

// 127.b.c.d: d in 1..254 (never .0 or .255), c in 0..254, b from 1: unique for i < 254*255*254.
std::string address_of(long long i) {
  long long d = 1 + i % 254, c = (i / 254) % 255, b = 1 + i / (254 * 255);
  return "127." + std::to_string(b) + "." + std::to_string(c) + "." + std::to_string(d);
}

std::string fmt(double v, const char* f = "%.1f") {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

// The histogram of the samples added since `base` was copied.
esm::util::lag_histogram since(const esm::util::lag_histogram& now, const esm::util::lag_histogram& base) {
  esm::util::lag_histogram h;
  for (std::size_t b = 0; b < h.buckets; ++b) {
    h.counts[b] = now.counts[b] - base.counts[b];
    h.total += h.counts[b];
  }
  return h;
}

// ---- registering the nodes -----------------------------------------------------------------

struct registration {
  std::vector<std::vector<esm::consul::txn_op>> chunks;
  std::size_t next = 0;
  long long failed_txns = 0;
  std::string first_error;
};

asio::awaitable<void> register_worker(esm::consul::client& c, registration& reg) {
  for (;;) {
    if (reg.next >= reg.chunks.size()) break;
    auto k = reg.next++;
    auto r = co_await c.txn(reg.chunks[k]);
    if (!r) {
      if (r.error().is_cancelled()) break;
      if (reg.failed_txns++ == 0) reg.first_error = r.error().to_string();
      continue;
    }
    if (!r->committed) {
      if (reg.failed_txns++ == 0)
        reg.first_error = "rolled back: " + (r->errors.empty() ? std::string("?") : r->errors.front().what);
    }
  }
}

asio::awaitable<void> register_all(esm::consul::client& c, registration& reg, int concurrency) {
  co_await asio::this_coro::throw_if_cancelled(false);
  auto ex = co_await asio::this_coro::executor;
  auto wake = std::make_shared<esm::async::event>(ex);
  std::vector<std::shared_ptr<esm::async::child<int>>> kids;
  for (int k = 0; k < concurrency; ++k)
    kids.push_back(esm::async::child<int>::spawn(ex, esm::async::as_child(register_worker(c, reg)), wake));
  for (;;) {
    wake->reset();
    bool all = true;
    for (auto& k : kids) all = all && k->done();
    if (all) break;
    bool woke = co_await wake->wait_even_if_cancelled();
    if (!woke)
      for (auto& k : kids) k->cancel();
  }
  for (auto& k : kids)
    if (k->error()) std::rethrow_exception(k->error());
}

// Registers N nodes and returns them as the catalog has them (with their ModifyIndex).
std::vector<esm::consul::node> register_nodes(asio::io_context& io, esm::consul::client& c, long long n) {
  registration reg;
  for (long long i = 0; i < n; i += static_cast<long long>(esm::consul::max_txn_ops)) {
    std::vector<esm::consul::txn_op> ops;
    for (long long j = i; j < std::min<long long>(n, i + static_cast<long long>(esm::consul::max_txn_ops)); ++j) {
      esm::consul::txn_op op;
      esm::consul::txn_node_op nop;
      nop.verb = "set";
      nop.node.name = node_prefix + std::to_string(j);
      nop.node.address = address_of(j);
      nop.node.meta["external-node"] = "true";
      nop.node.meta["external-probe"] = "true";
      op.node = std::move(nop);
      ops.push_back(std::move(op));
    }
    reg.chunks.push_back(std::move(ops));
  }
  auto t = clk::now();
  esm::test::run(io, register_all(c, reg, 8), 300s);
  if (reg.failed_txns)
    throw std::runtime_error(std::to_string(reg.failed_txns) + " registration transactions failed: " +
                             reg.first_error);
  double reg_s = seconds_since(t);

  esm::consul::query_options q;
  q.node_meta = {{"external-node", "true"}, {"external-probe", "true"}};
  q.timeout = 60s;
  auto r = esm::test::run(io, c.catalog_nodes(q), 90s);
  if (!r) throw std::runtime_error("catalog_nodes: " + r.error().to_string());
  std::vector<esm::consul::node> out;
  out.reserve(std::size_t(n));
  for (auto& node : r->value)
    if (node.name.rfind(node_prefix, 0) == 0) out.push_back(std::move(node));
  if (static_cast<long long>(out.size()) != n)
    throw std::runtime_error("registered " + std::to_string(n) + " nodes, catalog_nodes returned " +
                             std::to_string(out.size()));
  std::printf("registered %lld nodes in %zu transactions in %.1f s; read back in %.1f s total\n", n,
              reg.chunks.size(), reg_s, seconds_since(t));
  return out;
}

// ---- esmd's prober -------------------------------------------------------------------------

struct prober_figures {
  bool ok = false;
  long long nodes = 0;
  double window_s = 0, cpu = 0, sys = 0, consul_cpu = 0;
  std::uint64_t pings = 0, replies = 0, failures = 0, skipped_busy = 0;
  std::uint64_t requests = 0, transactions = 0, check_writes = 0, coordinate_writes = 0,
                coordinate_skips = 0, coordinate_failures = 0, consul_reads = 0, write_failures = 0;
  std::uint64_t warmup_pings = 0, warmup_requests = 0, warmup_check_writes = 0;
  double warmup_cpu = 0;
  std::uint64_t sent = 0, ping_replies = 0, timeouts = 0, ignored = 0, late = 0, unreachable = 0;
  std::size_t max_in_flight = 0;
  double malloc_set = 0, malloc_warm = 0, rss_set = 0, rss_warm = 0;  // bytes per node
  double set_nodes_s = 0;
  double lat_p50 = 0, lat_p99 = 0, lat_max = 0;
  std::uint64_t lat_samples = 0;
  std::size_t alive = 0, dead = 0;
  std::string unavailable;
  double per_1000() const { return pings ? cpu / double(pings) * 1000.0 : 0; }
  double rate() const { return window_s > 0 ? double(pings) / window_s : 0; }
  double requests_per_ping() const { return pings ? double(requests) / double(pings) : 0; }
};

prober_figures run_prober(asio::io_context& io, esm::consul::client& client, pid_t consul_pid,
                          const std::vector<esm::consul::node>& nodes, milliseconds interval,
                          milliseconds duration, esm::ping::socket_kind kind, bool coordinates) {
  prober_figures f;
  f.nodes = static_cast<long long>(nodes.size());
  double n = double(nodes.size());
  esm::ping::prober_settings s;
  s.kind = kind;
  s.interval = interval;
  s.timeout = 5s;
  s.coordinates = coordinates;
  auto prober = std::make_unique<esm::ping::node_prober>(io.get_executor(), &client, s);

  auto m0 = malloc_in_use();
  auto r0 = self_rss();
  auto ts = clk::now();
  prober->set_nodes(nodes);  // by reference, as the worker; the list is the worker's memory
  f.set_nodes_s = seconds_since(ts);
  f.malloc_set = (double(malloc_in_use()) - double(m0)) / n;
  f.rss_set = (double(self_rss()) - double(r0)) / n;

  esm::test::task run(io, prober->run());
  bool driver_done = false;
  auto driver = [&]() -> asio::awaitable<void> {
    double cpu_start = cpu_ms(RUSAGE_SELF);
    co_await esm::async::sleep_for(interval);  // warm-up: every node pinged once, first writes
    const auto& st = prober->stats();
    f.malloc_warm = (double(malloc_in_use()) - double(m0)) / n;
    f.rss_warm = (double(self_rss()) - double(r0)) / n;
    f.warmup_pings = st.pings;
    f.warmup_requests = st.consul_requests();
    f.warmup_check_writes = st.check_writes;
    f.warmup_cpu = cpu_ms(RUSAGE_SELF) - cpu_start;
    f.unavailable = st.unavailable;
    if (f.unavailable.empty()) {
      auto base = st;  // copies the lateness histogram: the window's is the difference
      auto pbase = prober->ping_stats();
      auto consul0 = proc_cpu_ms(consul_pid);
      auto t0 = clk::now();
      auto cpu0 = cpu_ms(RUSAGE_SELF);
      auto sys0 = self_sys_ms();
      co_await esm::async::sleep_for(duration);
      f.cpu = cpu_ms(RUSAGE_SELF) - cpu0;
      f.sys = self_sys_ms() - sys0;
      f.window_s = seconds_since(t0);
      f.consul_cpu = proc_cpu_ms(consul_pid) - consul0;
      f.pings = st.pings - base.pings;
      f.replies = st.replies - base.replies;
      f.failures = st.failures - base.failures;
      f.skipped_busy = st.skipped_busy - base.skipped_busy;
      f.requests = st.consul_requests() - base.consul_requests();
      f.transactions = st.transactions - base.transactions;
      f.check_writes = st.check_writes - base.check_writes;
      f.coordinate_writes = st.coordinate_writes - base.coordinate_writes;
      f.coordinate_skips = st.coordinate_skips - base.coordinate_skips;
      f.coordinate_failures = st.coordinate_failures - base.coordinate_failures;
      f.consul_reads = st.consul_reads - base.consul_reads;
      f.write_failures = st.write_failures - base.write_failures;
      auto& ps = prober->ping_stats();
      f.sent = ps.sent - pbase.sent;
      f.ping_replies = ps.replies - pbase.replies;
      f.timeouts = ps.timeouts - pbase.timeouts;
      f.ignored = ps.ignored - pbase.ignored;
      f.late = ps.late - pbase.late;
      f.unreachable = ps.unreachable - pbase.unreachable;
      f.max_in_flight = st.max_in_flight;
      f.alive = st.alive;
      f.dead = st.dead;
      auto h = since(st.lateness, base.lateness);
      f.lat_p50 = h.quantile_ms(0.50);
      f.lat_p99 = h.quantile_ms(0.99);
      f.lat_max = h.quantile_ms(1.0);
      f.lat_samples = h.total;
      f.ok = true;
    }
    driver_done = true;
    run.cancel();
  };
  asio::co_spawn(io, driver(), asio::detached);
  auto end = clk::now() + interval + duration + 60s;  // bounded: the driver ends well before
  io.restart();
  while (!(run.done() && driver_done) && clk::now() < end) {
    if (io.stopped()) io.restart();
    io.run_one_until(end);
  }
  if (!run.done() || !driver_done) {
    std::fprintf(stderr, "prober: did not finish in time (measured %d, stopped %d)\n", int(driver_done),
                 int(run.done()));
    (void)prober.release();  // coroutines may still refer to it
    f.ok = false;
    return f;
  }
  if (auto e = run.error())
    std::fprintf(stderr, "prober: run() ended with an error: %s\n", esm::async::what_of(e).c_str());
  return f;  // the prober is destroyed here: its sockets close before fping starts
}

void print_prober(const prober_figures& f, milliseconds interval) {
  if (!f.unavailable.empty()) {
    std::printf("esmd prober: cannot ping: %s\n", f.unavailable.c_str());
    return;
  }
  std::printf("esmd prober, %lld nodes every %.1f s: %llu pings in %.1f s (%.0f/s), CPU %.0f ms "
              "(%.1f%% of one core; %.0f ms of it system), %.1f CPU-ms/1000 pings\n",
              f.nodes, interval.count() / 1000.0, (unsigned long long)f.pings, f.window_s, f.rate(), f.cpu,
              f.cpu / (f.window_s * 10.0), f.sys, f.per_1000());
  std::printf("  outcomes: %llu replies, %llu failures, %llu turns skipped (busy); pinger: %llu sent, "
              "%llu replies, %llu timeouts, %llu unreachable, %llu late, %llu ignored; max in flight %zu; "
              "at the end %zu alive, %zu dead\n",
              (unsigned long long)f.replies, (unsigned long long)f.failures, (unsigned long long)f.skipped_busy,
              (unsigned long long)f.sent, (unsigned long long)f.ping_replies, (unsigned long long)f.timeouts,
              (unsigned long long)f.unreachable, (unsigned long long)f.late, (unsigned long long)f.ignored,
              f.max_in_flight, f.alive, f.dead);
  std::printf("  lateness over %llu pings (1 ms buckets, upper bounds): p50 %.0f ms, p99 %.0f ms, max %.0f ms\n",
              (unsigned long long)f.lat_samples, f.lat_p50, f.lat_p99, f.lat_max);
  std::printf("  Consul requests in the window: %llu (%.4f per ping): %llu transactions (%llu check "
              "writes, %llu write failures), %llu coordinate writes (%llu skipped as < 1 ms, %llu failed), "
              "%llu reads\n",
              (unsigned long long)f.requests, f.requests_per_ping(), (unsigned long long)f.transactions,
              (unsigned long long)f.check_writes, (unsigned long long)f.write_failures,
              (unsigned long long)f.coordinate_writes, (unsigned long long)f.coordinate_skips,
              (unsigned long long)f.coordinate_failures, (unsigned long long)f.consul_reads);
  std::printf("  warm-up (first interval): %llu pings, %llu Consul requests, %llu check writes, CPU %.0f ms\n",
              (unsigned long long)f.warmup_pings, (unsigned long long)f.warmup_requests,
              (unsigned long long)f.warmup_check_writes, f.warmup_cpu);
  std::printf("  memory per node: %.0f B malloc'd after set_nodes (%.3f s), %.0f B after the first "
              "interval; RSS %.0f B / %.0f B\n",
              f.malloc_set, f.set_nodes_s, f.malloc_warm, f.rss_set, f.rss_warm);
  std::printf("  Consul agent CPU in the window: %.0f ms (%.1f%% of one core, %.1f CPU-ms/1000 pings)\n",
              f.consul_cpu, f.consul_cpu / (f.window_s * 10.0),
              f.pings ? f.consul_cpu / double(f.pings) * 1000.0 : 0);
}

// ---- fping ---------------------------------------------------------------------------------

struct fping_figures {
  bool ok = false;
  long long targets = 0, count = 0;
  unsigned long long xmt = 0, rcv = 0;
  double wall_s = 0, cpu = 0, sys = 0;
  long max_rss_kb = 0;
  std::string args, error;
  double per_1000() const { return xmt ? cpu / double(xmt) * 1000.0 : 0; }
  double rate() const { return wall_s > 0 ? double(xmt) / wall_s : 0; }
};

fping_figures run_fping(const std::vector<std::string>& addresses, milliseconds interval, milliseconds duration) {
  fping_figures f;
  esm::test::temp_dir dir;
  auto list = dir.path() + "/targets";
  auto err_path = dir.path() + "/fping.err";
  {
    std::ofstream out(list, std::ios::trunc);
    for (auto& a : addresses) out << a << '\n';
  }
  f.count = std::max<long long>(1, std::llround(double(duration.count()) / double(interval.count())));
  double gap = double(interval.count()) / double(addresses.size());  // ms between any two pings
  gap = std::max(gap, 0.001);
  std::vector<std::string> argv = {fping_bin, "-q", "-f", list, "-p", std::to_string(interval.count()),
                                   "-i", fmt(gap, "%.3f"), "-c", std::to_string(f.count), "-t", "5000"};
  for (std::size_t i = 1; i < argv.size(); ++i) f.args += (i > 1 ? " " : "") + argv[i];
  std::vector<char*> cargv;
  for (auto& a : argv) cargv.push_back(a.data());
  cargv.push_back(nullptr);

  std::fflush(stdout);  // or the child would print our buffered lines again
  std::fflush(stderr);
  auto t0 = clk::now();
  pid_t pid = ::fork();
  if (pid == 0) {
    int fd = ::open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd >= 0) {
      ::dup2(fd, 1);
      ::dup2(fd, 2);
    }
    ::execv(fping_bin, cargv.data());
    std::_Exit(127);
  }
  if (pid < 0) {
    f.error = std::string("fork: ") + std::strerror(errno);
    return f;
  }
  int status = 0;
  rusage ru{};
  auto end = t0 + interval * f.count + 5s + 30s;
  bool overran = false;
  for (;;) {
    pid_t r = ::wait4(pid, &status, WNOHANG, &ru);
    if (r == pid) break;
    if (r < 0 && errno != EINTR) {
      f.error = std::string("wait4: ") + std::strerror(errno);
      return f;
    }
    if (!overran && clk::now() > end) {
      std::fprintf(stderr, "fping (pid %d) overran: SIGINT\n", int(pid));
      ::kill(pid, SIGINT);  // fping prints its summary and exits
      overran = true;
      end = clk::now() + 5s;
    } else if (overran && clk::now() > end) {
      std::fprintf(stderr, "fping (pid %d) ignored SIGINT: SIGKILL\n", int(pid));
      ::kill(pid, SIGKILL);
      ::wait4(pid, &status, 0, &ru);
      break;
    }
    std::this_thread::sleep_for(20ms);
  }
  f.wall_s = seconds_since(t0);
  f.cpu = rusage_ms(ru);
  f.sys = sys_ms(ru);
  f.max_rss_kb = ru.ru_maxrss;
  std::istringstream text(read_file(err_path));
  std::string line, other;
  while (std::getline(text, line)) {
    auto at = line.find(" : xmt/rcv/%loss = ");
    unsigned long long x = 0, r = 0;
    if (at != std::string::npos && std::sscanf(line.c_str() + at + 19, "%llu/%llu", &x, &r) == 2) {
      ++f.targets;
      f.xmt += x;
      f.rcv += r;
    } else if (other.size() < 600) {
      other += line + "\n";
    }
  }
  bool exited = WIFEXITED(status);
  int code = exited ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  // fping exits 1 when some target did not answer, 2 for an unknown name, 3 for bad arguments.
  f.ok = f.targets == static_cast<long long>(addresses.size()) && f.xmt > 0 && (code == 0 || code == 1);
  if (!f.ok)
    f.error = "exit " + std::to_string(code) + ", " + std::to_string(f.targets) + " summaries of " +
              std::to_string(addresses.size()) + (other.empty() ? "" : "; output: " + other);
  else if (!other.empty())
    std::fprintf(stderr, "fping said:\n%s", other.c_str());
  return f;
}

void print_fping(const fping_figures& f) {
  if (!f.ok) {
    std::printf("fping: failed: %s\n", f.error.c_str());
    return;
  }
  std::printf("fping %s: %llu pings (%llu replies) to %lld targets in %.1f s (%.0f/s), CPU %.0f ms "
              "(%.0f ms of it system), %.1f CPU-ms/1000 pings, max RSS %.1f MiB (%.0f B per target)\n",
              f.args.c_str(), f.xmt, f.rcv, f.targets, f.wall_s, f.rate(), f.cpu, f.sys, f.per_1000(),
              double(f.max_rss_kb) / 1024.0, double(f.max_rss_kb) * 1024.0 / double(f.targets));
}

// ---- command line --------------------------------------------------------------------------

// parse_duration: test/support/measure.hpp

struct options {
  long long n = 10'000;
  milliseconds interval{10'000}, duration{30'000};
  esm::ping::socket_kind kind = esm::ping::socket_kind::raw;
  bool skip_fping = false;
  bool coordinates = true;
};

options parse(int argc, char** argv) {
  options o;
  std::vector<std::string> pos;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--skip-fping") o.skip_fping = true;
    else if (a == "--no-coordinates") o.coordinates = false;
    else if (a == "--kind=raw") o.kind = esm::ping::socket_kind::raw;
    else if (a == "--kind=udp") o.kind = esm::ping::socket_kind::udp;
    else if (a.rfind("--", 0) == 0) throw std::runtime_error("unknown option " + a);
    else pos.push_back(a);
  }
  if (pos.size() > 0) o.n = std::atoll(pos[0].c_str());
  if (pos.size() > 1) o.interval = parse_duration(pos[1]);
  if (pos.size() > 2) o.duration = parse_duration(pos[2]);
  if (pos.size() > 3) throw std::runtime_error("too many arguments");
  if (o.n <= 0 || o.interval <= 0ms || o.duration <= 0ms)
    throw std::runtime_error("N, interval and duration must be positive");
  if (o.n > 254LL * 255 * 254) throw std::runtime_error("N too large for 127.0.0.0/8");
  return o;
}

void print_row(const char* name, const std::string& pings, const std::string& rate, const std::string& cpu,
               const std::string& ratio, const std::string& mem, const std::string& req, const std::string& lat) {
  std::printf("%-12s %9s %8s %12s %10s %22s %13s %18s\n", name, pings.c_str(), rate.c_str(), cpu.c_str(),
              ratio.c_str(), mem.c_str(), req.c_str(), lat.c_str());
}

const char* met(bool ok) { return ok ? "met" : "MISSED"; }

int run(const options& o) {
  esm::test::consul_dev_agent agent;
  pid_t consul_pid = agent.process().pid();
  std::printf("%lld probe nodes, interval %.1f s (%.0f pings/s), window %.1f s after one interval, ping_type %s%s; "
              "Consul dev agent %s (pid %d)\n",
              o.n, o.interval.count() / 1000.0, double(o.n) * 1000.0 / double(o.interval.count()),
              o.duration.count() / 1000.0, o.kind == esm::ping::socket_kind::raw ? "raw" : "udp",
              o.coordinates ? "" : ", no coordinate updates",
              agent.http_address().c_str(), int(consul_pid));
  std::fflush(stdout);

  prober_figures pf;
  std::vector<std::string> addresses;
  {
    asio::io_context io(1);
    esm::consul::connection_options co;
    co.address = agent.http_address();
    co.request_timeout = 10s;
    esm::consul::client client(io.get_executor(), co);
    auto nodes = register_nodes(io, client, o.n);
    for (auto& n : nodes) addresses.push_back(n.address);
    std::fflush(stdout);
    pf = run_prober(io, client, consul_pid, nodes, o.interval, o.duration, o.kind, o.coordinates);
    print_prober(pf, o.interval);
    std::fflush(stdout);
  }

  std::optional<fping_figures> ff;
  if (!o.skip_fping) {
    ff = run_fping(addresses, o.interval, o.duration);
    print_fping(*ff);
  }

  bool have_e = pf.ok && pf.pings > 0, have_f = ff && ff->ok;
  std::printf("\nSummary: %lld nodes, interval %.1f s; memory per node: malloc'd bytes (RSS) after the "
              "first interval, fping: max RSS / targets; lateness 1 ms buckets, upper bounds\n",
              o.n, o.interval.count() / 1000.0);
  print_row("", "pings", "pings/s", "CPU-ms/1000", "esmd/fping", "memory B/node", "requests/ping",
            "lateness p50/p99/max");
  if (have_e) {
    print_row("esmd prober", std::to_string(pf.pings), fmt(pf.rate(), "%.0f"), fmt(pf.per_1000(), "%.2f"),
              have_f && ff->per_1000() > 0 ? fmt(pf.per_1000() / ff->per_1000(), "%.2f") : "-",
              fmt(pf.malloc_warm, "%.0f") + " (" + fmt(pf.rss_warm, "%.0f") + ")",
              fmt(pf.requests_per_ping(), "%.4f"),
              fmt(pf.lat_p50, "%.0f") + "/" + fmt(pf.lat_p99, "%.0f") + "/" + fmt(pf.lat_max, "%.0f") + " ms");
  } else {
    print_row("esmd prober", "-", "-", "-", "-", "-", "-", "-");
  }
  if (have_f) {
    print_row("fping 5.1", std::to_string(ff->xmt), fmt(ff->rate(), "%.0f"), fmt(ff->per_1000(), "%.2f"), "1",
              "(" + fmt(double(ff->max_rss_kb) * 1024.0 / double(ff->targets), "%.0f") + ")", "-", "-");
  } else {
    print_row("fping 5.1", o.skip_fping ? "skipped" : "failed", "-", "-", "-", "-", "-", "-");
  }
  if (have_e) {
    std::string cpu_t = have_f ? std::string(met(pf.per_1000() <= 1.5 * ff->per_1000())) + " (" +
                                     fmt(pf.per_1000() / ff->per_1000(), "%.2f") + "x)"
                               : std::string("n/a (no fping)");
    std::printf("targets: CPU <= 1.5x fping: %s, <= 1 KiB/node: %s (%.0f B), <= 0.2 requests/ping: %s "
                "(%.4f), p99 lateness < 100 ms: %s (%.0f ms)\n",
                cpu_t.c_str(), met(pf.malloc_warm <= 1024), pf.malloc_warm, met(pf.requests_per_ping() <= 0.2),
                pf.requests_per_ping(), met(pf.lat_p99 < 100), pf.lat_p99);
  } else {
    std::printf("targets: not judged (the prober was not measured)\n");
  }
  return have_e && (o.skip_fping || have_f) ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  options o;
  try {
    o = parse(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\nusage: %s [N [INTERVAL [DURATION]]] [--kind=raw|udp] [--skip-fping] [--no-coordinates]\n",
                 e.what(),
                 argv[0]);
    return 2;
  }
  if (!o.skip_fping && ::access(fping_bin, X_OK) != 0) {
    std::fprintf(stderr, "bench_ping: %s not found (Debian package fping, 5.1); install it or pass --skip-fping\n",
                 fping_bin);
    return 2;
  }
  if (!std::getenv("CONSUL_BIN") && ::access("/root/.cache/consul-bin/consul", X_OK) == 0)
    ::setenv("CONSUL_BIN", "/root/.cache/consul-bin/consul", 0);
  esm::log::set_level(esm::log::level::warn);
  try {
    return run(o);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_ping: %s\n", e.what());
    return 1;
  }
}
