// Benchmark (prints figures, not a test): the cost of running HTTP and TCP checks with esmd's
// check engine, next to a Consul agent running the same checks as its own agent checks (the
// check runner consul-esm embeds) and wrk (fresh connection per request) as a floor, all
// against the same loopback nginx started by this program, in one run.
//
//   bench_engine [N [INTERVAL [DURATION]]] [--addresses=K] [--wrk-seconds=S] [--skip-consul]
//   bench_engine --sustained [N [INTERVAL [DURATION]]] [--addresses=K] [--max-concurrent=M]
//                [--repeat=R]
//   bench_engine --overload [N [INTERVAL [WINDOW]]] [--stall[=S]] [--stall-at=T] [...]
//   bench_engine --stall[=S] [N [INTERVAL [WINDOW]]] [--stall-at=T] [...]
//   bench_engine --share-memory [N] [--fat]
//
// N checks of each kind (default 2000; --sustained: 100000 HTTP checks, engine only),
// INTERVAL the check interval (default 10s; "10", "10s" or "500ms"), DURATION the measured
// window (default 30s). Each phase waits one interval first (every check has run once; the
// random spread of first runs is over), then measures over the window:
//   - engine: runs completed, CPU-ms per 1000 runs (getrusage RUSAGE_SELF), memory per check
//     (malloc'd bytes, mallinfo2, after feeding the checks and after the window; RSS delta),
//     schedule lag p50/p99/max (1 ms buckets, upper bounds), runs/s;
//   - Consul agent: CPU of the agent process (/proc/PID/stat), runs counted as
//     N * window / interval and checked against nginx's own request counter, memory per check
//     from VmRSS before registering and one interval after;
//   - wrk -t1 -c32 -H 'Connection: close': CPU (RUSAGE_CHILDREN) per 1000 requests.
// nginx listens on 127.0.0.1..127.0.0.K (same port); checks are spread over the K addresses
// so ephemeral ports do not run out at high connection rates (K defaults to 1, 8 with
// --sustained). Every process started is stopped by its own pid. Environment: CONSUL_BIN (else
// /root/.cache/consul-bin/consul if present, else the project's deploy/dev/get-consul, found
// through ESMD_SOURCE_ROOT). Needs nginx and wrk (Debian packages). With the defaults a run
// takes about 3.5 minutes, --sustained about 45 s.
//
// --overload (default 100 000 checks at 5 s: 20 000 runs/s due, more than one core runs) and
// --stall=S (default 3 s; 100 000 checks at 10 s, window 50 s, the stall at --stall-at, 10 s
// into the window) measure fairness and recovery: runs per check and each check's largest
// gap between due times (no check starved, all delayed alike), runs dropped (checks without a
// run, runs summed over checks against the engine's count), lag p99 per 1 s window and the
// seconds until it stays under 100 ms after the stall, and runs per 100 ms in each interval
// before and after the stall (whether the checks stay bunched). The stall blocks the
// io_context's thread (sleep_for in a handler). Figures only, no assertion.
//
// --share-memory (default N = 20 000) breaks down the malloc'd bytes per check of the lean
// shape of test/bench/daemon/bench_daemon_memory.py (N nodes with one HTTP check each) by
// the structure that holds them, without Consul, nginx or a run: the worker's share cache
// takes an assignment of the N nodes, then Consul 1.8.7's answers of the two share queries
// (each element as a dev agent returns it for that shape, decoded as the client does), and
// the engine takes the checks. Bytes are mallinfo2's (uordblks + hblkhd: chunks in use,
// their headers included) after each step, minus before it, per check. --fat: the fat shape of
// that benchmark (N/10 nodes with ten checks each: Notes, Method, three headers).
#include <malloc.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <fstream>
#include <iterator>
#include <map>
#include <memory>
#include <optional>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "async.hpp"
#include "consul_fixture.hpp"
#include "measure.hpp"
#include "process.hpp"
#include "esm/checks/engine.hpp"
#include "esm/consul/json.hpp"
#include "esm/consul/types.hpp"
#include "esm/probe/probe.hpp"
#include "esm/sharding/share_cache.hpp"

namespace asio = boost::asio;
using namespace std::chrono_literals;
using clk = std::chrono::steady_clock;
using std::chrono::milliseconds;

namespace {

// ---- measuring -----------------------------------------------------------------------------

double cpu_ms(int who) {
  rusage u{};
  ::getrusage(who, &u);
  return (double(u.ru_utime.tv_sec) + double(u.ru_stime.tv_sec)) * 1e3 +
         (double(u.ru_utime.tv_usec) + double(u.ru_stime.tv_usec)) / 1e3;
}

using namespace esm::test::measure;

std::string sysctl(const char* path) {
  auto v = read_file(path);
  while (!v.empty() && (v.back() == '\n' || v.back() == ' ')) v.pop_back();
  for (auto& ch : v)
    if (ch == '\t') ch = ' ';
  return v.empty() ? "?" : v;
}

// "TCP: inuse 5 orphan 0 tw 12 alloc 7 mem 1" -> tw.
long tcp_time_wait() {
  std::smatch m;
  auto text = read_file("/proc/net/sockstat");
  if (std::regex_search(text, m, std::regex(R"(TCP: .*\btw (\d+))"))) return std::stol(m[1]);
  return -1;
}

std::string find_program(const std::string& name) {
  std::string path = std::getenv("PATH") ? std::getenv("PATH") : "/usr/bin:/bin";
  path += ":/usr/sbin:/sbin";
  std::istringstream dirs(path);
  std::string dir;
  while (std::getline(dirs, dir, ':')) {
    auto full = dir + "/" + name;
    if (!dir.empty() && ::access(full.c_str(), X_OK) == 0) return full;
  }
  return {};
}

// ---- nginx ---------------------------------------------------------------------------------

// nginx on 127.0.0.1..127.0.0.K, one port, one worker, `return 200 "ok\n"`, stub_status on
// /nginx_status (its counters cross-check the runs), started in the foreground so that the
// pid we hold is the master's; stopped by SIGTERM to that pid.
class nginx_server {
 public:
  explicit nginx_server(int addresses) : addresses_(addresses) {
    auto bin = find_program("nginx");
    if (bin.empty()) throw std::runtime_error("nginx not found (apt-get install nginx)");
    for (int attempt = 0; attempt < 3 && !proc_; ++attempt) {
      port_ = esm::test::free_port("127.0.0.1");
      write_config();
      proc_ = std::make_unique<esm::test::child_process>(
          std::vector<std::string>{bin, "-c", dir_.path() + "/nginx.conf", "-p", dir_.path() + "/",
                                   "-e", dir_.path() + "/error.log"},
          std::map<std::string, std::string>{}, dir_.path() + "/nginx.out");
      if (wait_ready()) break;
      std::fprintf(stderr, "nginx did not start on port %d:\n%s%s\n", port_, proc_->output().c_str(),
                   read_file(dir_.path() + "/error.log").c_str());
      stop();
      proc_.reset();
    }
    if (!proc_) throw std::runtime_error("cannot start nginx");
  }
  ~nginx_server() { stop(); }
  nginx_server(const nginx_server&) = delete;
  nginx_server& operator=(const nginx_server&) = delete;

  int port() const { return port_; }
  int addresses() const { return addresses_; }
  pid_t pid() const { return proc_ ? proc_->pid() : -1; }
  std::string ip(int k) const { return "127.0.0." + std::to_string(1 + k % addresses_); }
  std::string hostport(int k) const { return ip(k) + ":" + std::to_string(port_); }

  struct counters {
    unsigned long long accepts = 0, requests = 0;
    double worker_cpu_ms = 0;  // the worker process(es), from /proc
  };
  counters read() const {
    counters c;
    auto r = esm::test::http_request("127.0.0.1", port_, "GET", "/nginx_status", {}, 5s);
    std::smatch m;
    if (std::regex_search(r.body, m, std::regex(R"(requests\s+(\d+)\s+(\d+)\s+(\d+))"))) {
      c.accepts = std::stoull(m[1]);
      c.requests = std::stoull(m[3]);
    }
    for (pid_t w : workers()) c.worker_cpu_ms += proc_cpu_ms(w);
    return c;
  }

  void stop() {
    if (!proc_) return;
    proc_->signal(SIGTERM);  // fast shutdown: the master stops its worker and exits
    if (!proc_->wait(10s)) {
      std::fprintf(stderr, "nginx (pid %d) did not stop on SIGTERM: SIGKILL\n", int(proc_->pid()));
      auto ws = workers();
      proc_->signal(SIGKILL);
      proc_->wait(5s);
      for (pid_t w : ws) ::kill(w, SIGKILL);  // orphaned workers, by their own pids
    }
  }

 private:
  std::vector<pid_t> workers() const {
    std::vector<pid_t> out;
    if (!proc_) return out;
    auto p = std::to_string(proc_->pid());
    std::istringstream in(read_file("/proc/" + p + "/task/" + p + "/children"));
    pid_t w;
    while (in >> w) out.push_back(w);
    return out;
  }

  void write_config() {
    const auto& d = dir_.path();
    std::ofstream f(d + "/nginx.conf", std::ios::trunc);
    f << "worker_processes 1;\n"
      << "daemon off;\n"
      << "pid " << d << "/nginx.pid;\n"
      << "error_log " << d << "/error.log warn;\n"
      << "worker_rlimit_nofile 16384;\n"
      << "events { worker_connections 8192; }\n"
      << "http {\n"
      << "  access_log off;\n"
      << "  client_body_temp_path " << d << "/body;\n"
      << "  proxy_temp_path " << d << "/proxy;\n"
      << "  fastcgi_temp_path " << d << "/fastcgi;\n"
      << "  uwsgi_temp_path " << d << "/uwsgi;\n"
      << "  scgi_temp_path " << d << "/scgi;\n"
      << "  server {\n";
    for (int k = 0; k < addresses_; ++k)
      f << "    listen " << ip(k) << ":" << port_ << " backlog=4096;\n";
    f << "    location = /nginx_status { stub_status; }\n"
      << "    location / { default_type text/plain; return 200 \"ok\\n\"; }\n"
      << "  }\n"
      << "}\n";
  }

  bool wait_ready() {
    auto end = clk::now() + 10s;
    while (clk::now() < end) {
      if (proc_->wait(0ms)) return false;  // exited
      bool all = true;
      for (int k = 0; k < addresses_ && all; ++k)
        all = esm::test::http_request(ip(k), port_, "GET", "/", {}, 1s).status == 200;
      if (all) return true;
      std::this_thread::sleep_for(50ms);
    }
    return false;
  }

  esm::test::temp_dir dir_;
  int addresses_;
  int port_ = 0;
  std::unique_ptr<esm::test::child_process> proc_;
};

// ---- the engine ----------------------------------------------------------------------------

enum class kind { http, tcp };
const char* kind_name(kind k) { return k == kind::http ? "HTTP" : "TCP"; }

using esm::test::task;

asio::awaitable<void> sleep_for(milliseconds d) {
  asio::steady_timer t(co_await asio::this_coro::executor, d);
  co_await t.async_wait(asio::as_tuple(asio::use_awaitable));
}

struct engine_figures {
  long long checks = 0;
  unsigned long long runs = 0, cancelled = 0;
  double window_s = 0, cpu = 0;
  double alloc_fed = 0, alloc_after = 0, rss_fed = 0;  // bytes per check
  double build_s = 0, feed_s = 0;  // building the check objects; on_checks alone
  double lag_p50 = 0, lag_p99 = 0, lag_max = 0;
  unsigned long long lag_samples = 0;
  std::size_t max_in_flight = 0, max_queued = 0;
  long long passing = 0, not_passing = 0, no_result = 0;
  std::string sample_output;
  unsigned long long nginx_requests = 0, nginx_accepts = 0;
  double nginx_cpu = 0;
  long time_wait = -1;
  double cpu_per_1000() const { return runs ? cpu / double(runs) * 1000.0 : 0; }
  double runs_per_s() const { return window_s > 0 ? double(runs) / window_s : 0; }
};

esm::consul::health_check make_check(kind k, long long i, const nginx_server& ng,
                                     milliseconds interval) {
  esm::consul::health_check c;
  c.node = "bench-node-" + std::to_string(i % 100);
  c.check_id = "c" + std::to_string(i);
  c.name = "bench";
  c.status = "passing";
  c.type = k == kind::http ? "http" : "tcp";
  // The catalog copy already says what the probe will find, as after esmd's first write: the
  // engine then holds one copy of the output per check, its steady state in the daemon.
  if (k == kind::http) {
    c.definition.http = "http://" + ng.hostport(int(i)) + "/";
    c.output = "HTTP GET " + c.definition.http + ": 200 OK Output: ok\n";
  } else {
    c.definition.tcp = ng.hostport(int(i));
    c.output = "TCP connect " + c.definition.tcp + ": Success";
  }
  c.definition.interval = interval;
  c.definition.timeout = 5s;
  return c;
}

// `segment` > 0: also prints runs/s, CPU, queue and lag of each segment of the window.
std::optional<engine_figures> run_engine(kind k, long long n, milliseconds interval,
                                         milliseconds duration, const nginx_server& ng,
                                         milliseconds segment = 0ms,
                                         std::size_t max_concurrent = 1024) {
  engine_figures f;
  f.checks = n;
  asio::io_context io(1);
  esm::probe::probe_context probes;  // loads the trust store: before the baseline
  esm::checks::engine_settings s;
  s.max_concurrent = max_concurrent;
  s.plans.min_interval = std::min<milliseconds>(1000ms, interval);
  auto engine = std::make_unique<esm::checks::check_engine>(io.get_executor(), nullptr, probes, s);

  auto m0 = malloc_in_use();
  auto r0 = self_rss();
  auto tf = clk::now();
  {
    std::vector<esm::sharding::shared_check> checks;
    checks.reserve(std::size_t(n));
    for (long long i = 0; i < n; ++i)
      checks.push_back(std::make_shared<const esm::consul::health_check>(make_check(k, i, ng, interval)));
    f.build_s = seconds_since(tf);
    tf = clk::now();
    engine->on_checks(checks);  // one call, blocking the thread; by reference, as the worker
    f.feed_s = seconds_since(tf);
  }  // the handed-over list is gone; its objects are the engine's (in the daemon, shared with
     // the worker's cache: the one copy of each check), so they count as its memory
  auto m1 = malloc_in_use();
  auto r1 = self_rss();
  f.alloc_fed = (double(m1) - double(m0)) / double(n);
  f.rss_fed = (double(r1) - double(r0)) / double(n);

  task run(io, engine->run());
  double cpu0 = 0;
  clk::time_point t0;
  std::uint64_t runs0 = 0, cancelled0 = 0;
  nginx_server::counters ng0;
  bool measured = false;
  auto driver = [&]() -> asio::awaitable<void> {
    co_await sleep_for(interval);  // warm-up: every check has run once
    auto& st = engine->stats();
    st.lag.clear();
    st.max_in_flight = st.in_flight;
    st.max_queued = st.queued;
    ng0 = ng.read();
    runs0 = st.runs;
    cancelled0 = st.cancelled_runs;
    t0 = clk::now();
    cpu0 = cpu_ms(RUSAGE_SELF);
    if (segment > 0ms) {
      std::printf("  %6s %8s %7s %8s %9s %8s %8s\n", "t s", "runs/s", "CPU %", "queued",
                  "in flight", "lag p50", "lag p99");
      auto end = t0 + duration;
      auto seg_t = t0;
      auto seg_runs = st.runs;
      auto seg_cpu = cpu0;
      auto seg_lag = st.lag.counts;
      while (clk::now() < end) {
        co_await sleep_for(std::min<milliseconds>(
            segment, std::chrono::duration_cast<milliseconds>(end - clk::now()) + 1ms));
        esm::checks::lag_histogram h;  // this segment's samples only
        for (std::size_t b = 0; b < h.buckets; ++b) {
          h.counts[b] = st.lag.counts[b] - seg_lag[b];
          h.total += h.counts[b];
        }
        double secs = seconds_since(seg_t), cpu = cpu_ms(RUSAGE_SELF);
        std::printf("  %6.1f %8.0f %7.1f %8zu %9zu %8.0f %8.0f\n", seconds_since(t0),
                    double(st.runs - seg_runs) / secs, (cpu - seg_cpu) / (secs * 10.0), st.queued,
                    st.in_flight, h.quantile_ms(0.5), h.quantile_ms(0.99));
        std::fflush(stdout);
        seg_t = clk::now();
        seg_runs = st.runs;
        seg_cpu = cpu;
        seg_lag = st.lag.counts;
      }
    } else {
      co_await sleep_for(duration);
    }
    f.cpu = cpu_ms(RUSAGE_SELF) - cpu0;
    f.window_s = seconds_since(t0);
    f.runs = st.runs - runs0;
    f.cancelled = st.cancelled_runs - cancelled0;
    f.time_wait = tcp_time_wait();
    auto ng1 = ng.read();
    f.nginx_requests = ng1.requests - ng0.requests - 1;  // less our own status read
    f.nginx_accepts = ng1.accepts - ng0.accepts - 1;
    f.nginx_cpu = ng1.worker_cpu_ms - ng0.worker_cpu_ms;
    f.lag_p50 = st.lag.quantile_ms(0.50);
    f.lag_p99 = st.lag.quantile_ms(0.99);
    f.lag_max = st.lag.quantile_ms(1.0);
    f.lag_samples = st.lag.total;
    f.max_in_flight = st.max_in_flight;
    f.max_queued = st.max_queued;
    measured = true;
    run.cancel();
  };
  asio::co_spawn(io, driver(), asio::detached);
  io.run_for(interval + duration + 60s);  // bounded: the driver ends it well before
  if (!run.done() || !measured) {
    std::fprintf(stderr, "engine %s: did not finish in time (measured %d, stopped %d)\n",
                 kind_name(k), int(measured), int(run.done()));
    (void)engine.release();  // coroutines may still refer to it
    return std::nullopt;
  }
  if (auto e = run.error()) {
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& x) {
      std::fprintf(stderr, "engine %s: run() ended with an error: %s\n", kind_name(k), x.what());
    } catch (...) {
      std::fprintf(stderr, "engine %s: run() ended with an unknown error\n", kind_name(k));
    }
  }
  f.alloc_after = (double(malloc_in_use()) - double(m0)) / double(n);
  for (long long i = 0; i < n; ++i) {
    auto v = engine->find("bench-node-" + std::to_string(i % 100), "c" + std::to_string(i));
    if (v && v->runs > 0 && !v->desired) {
      ++f.passing;  // its result equals the catalog copy: passing with the expected output
    } else if (!v || !v->desired) {
      ++f.no_result;
    } else if (v->desired->status == esm::probe::check_status::passing) {
      ++f.passing;
      if (f.sample_output.empty()) f.sample_output = v->desired->output;
    } else {
      ++f.not_passing;
      if (f.not_passing <= 3)
        std::fprintf(stderr, "  %s check c%lld: %s %s\n", kind_name(k), i,
                     std::string(to_string(v->desired->status)).c_str(), v->desired->output.c_str());
    }
  }
  return f;
}

void print_engine(kind k, const engine_figures& f) {
  std::printf("esmd engine, %lld %s checks: %llu runs in %.1f s (%.0f runs/s), CPU %.0f ms "
              "(%.1f%% of one core), %.1f CPU-ms/1000 runs\n",
              f.checks, kind_name(k), f.runs, f.window_s, f.runs_per_s(), f.cpu,
              f.cpu / (f.window_s * 10.0), f.cpu_per_1000());
  std::printf("  schedule lag over %llu runs (1 ms buckets, upper bounds): p50 %.0f ms, p99 %.0f ms, "
              "max %.0f ms; max in flight %zu, max queued %zu, cancelled runs %llu\n",
              f.lag_samples, f.lag_p50, f.lag_p99, f.lag_max, f.max_in_flight, f.max_queued,
              f.cancelled);
  std::printf("  memory per check: %.0f B malloc'd after feeding, %.0f B after the runs, "
              "RSS delta after feeding %.0f B (sizeof health_check %zu, check_definition %zu, "
              "consul::node %zu, check_plan %zu); checks built in %.2f s, on_checks took %.2f s\n",
              f.alloc_fed, f.alloc_after, f.rss_fed, sizeof(esm::consul::health_check),
              sizeof(esm::consul::check_definition), sizeof(esm::consul::node),
              sizeof(esm::checks::check_plan), f.build_s, f.feed_s);
  std::printf("  results: %lld passing, %lld not passing, %lld without a result%s%s\n", f.passing,
              f.not_passing, f.no_result, f.sample_output.empty() ? "" : "; output: ",
              f.sample_output.c_str());
  std::printf("  nginx in the window: %llu requests, %llu connections, worker CPU %.0f ms\n",
              f.nginx_requests, f.nginx_accepts, f.nginx_cpu);
  if (f.time_wait >= 0) std::printf("  TCP sockets in TIME_WAIT at the end: %ld\n", f.time_wait);
}

// ---- the Consul agent ----------------------------------------------------------------------

struct consul_figures {
  long long checks = 0;
  double window_s = 0, cpu = 0, runs = 0;  // runs: N * window / interval
  double idle_cpu_per_s = 0;               // the agent before any check was registered
  double rss_per_check = 0;
  long long rss_before = 0, rss_after = 0;
  long long register_failures = 0, passing = -1;
  double register_s = 0;
  unsigned long long nginx_requests = 0, nginx_accepts = 0;
  double cpu_per_1000() const { return runs > 0 ? cpu / runs * 1000.0 : 0; }
};

// Consul pretty-prints agent endpoints: `"Status": "passing"`.
long long count_passing(const std::string& text) {
  static const std::regex passing(R"re("Status":\s*"passing")re");
  return std::distance(std::sregex_iterator(text.begin(), text.end(), passing),
                       std::sregex_iterator());
}

std::optional<consul_figures> run_consul(kind k, long long n, milliseconds interval,
                                         milliseconds duration, const nginx_server& ng) {
  consul_figures f;
  f.checks = n;
  esm::test::consul_dev_agent agent;  // -log-level=warn: no line per check run
  pid_t pid = agent.process().pid();
  int port = agent.http_port();
  std::this_thread::sleep_for(2s);  // settle after the leader election
  auto idle0 = proc_cpu_ms(pid);
  auto ti = clk::now();
  std::this_thread::sleep_for(5s);
  f.idle_cpu_per_s = (proc_cpu_ms(pid) - idle0) / seconds_since(ti);

  f.rss_before = proc_rss(pid);
  auto tr = clk::now();
  std::string iv = std::to_string(interval.count()) + "ms";
  for (long long i = 0; i < n; ++i) {
    std::string body = R"({"ID":"c)" + std::to_string(i) + R"(","Name":"bench",)";
    if (k == kind::http)
      body += R"("HTTP":"http://)" + ng.hostport(int(i)) + R"(/",)";
    else
      body += R"("TCP":")" + ng.hostport(int(i)) + R"(",)";
    body += R"("Interval":")" + iv + R"(","Timeout":"5s"})";
    auto r = esm::test::http_request("127.0.0.1", port, "PUT", "/v1/agent/check/register", body, 10s);
    if (r.status != 200 && ++f.register_failures <= 3)
      std::fprintf(stderr, "  register c%lld: HTTP %d %s\n", i, r.status, r.body.c_str());
    if (seconds_since(tr) > 300) {
      std::fprintf(stderr, "consul %s: registration took over 300 s, giving up\n", kind_name(k));
      return std::nullopt;
    }
  }
  f.register_s = seconds_since(tr);
  std::this_thread::sleep_for(interval);  // every check has run once
  f.rss_after = proc_rss(pid);
  f.rss_per_check = double(f.rss_after - f.rss_before) / double(n);

  auto ng0 = ng.read();
  auto cpu0 = proc_cpu_ms(pid);
  auto t0 = clk::now();
  std::this_thread::sleep_for(duration);
  f.cpu = proc_cpu_ms(pid) - cpu0;
  f.window_s = seconds_since(t0);
  auto ng1 = ng.read();
  f.nginx_requests = ng1.requests - ng0.requests - 1;
  f.nginx_accepts = ng1.accepts - ng0.accepts - 1;
  f.runs = double(n) * f.window_s / (double(interval.count()) / 1000.0);

  auto checks = esm::test::http_request("127.0.0.1", port, "GET", "/v1/agent/checks", {}, 30s);
  if (checks.status == 200) f.passing = count_passing(checks.body);
  return f;  // the agent is stopped here, by its own pid
}

void print_consul(kind k, const consul_figures& f) {
  std::printf("Consul agent, %lld %s agent checks: %.0f runs counted as N * %.1f s / interval, "
              "CPU %.0f ms, %.1f CPU-ms/1000 runs\n",
              f.checks, kind_name(k), f.runs, f.window_s, f.cpu, f.cpu_per_1000());
  double net = f.cpu - f.idle_cpu_per_s * f.window_s;
  std::printf("  idle agent before registering: %.1f CPU-ms/s; less that: %.1f CPU-ms/1000 runs\n",
              f.idle_cpu_per_s, f.runs > 0 ? net / f.runs * 1000.0 : 0);
  std::printf("  memory per check: VmRSS %.1f MiB before registering, %.1f MiB one interval later: "
              "%.0f B per check\n",
              double(f.rss_before) / 1048576.0, double(f.rss_after) / 1048576.0, f.rss_per_check);
  std::printf("  registered in %.1f s (%lld failures); %lld checks passing at the end\n",
              f.register_s, f.register_failures, f.passing);
  std::printf("  nginx in the window: %llu requests, %llu connections (expected runs: %.0f)\n",
              f.nginx_requests, f.nginx_accepts, f.runs);
}

// ---- wrk -----------------------------------------------------------------------------------

struct wrk_figures {
  long long requests = 0, non_2xx = 0;
  double seconds = 0, cpu = 0;
  bool ok = false;
  double cpu_per_1000() const { return requests ? cpu / double(requests) * 1000.0 : 0; }
};

wrk_figures run_wrk(const std::string& url, int seconds) {
  wrk_figures f;
  std::string out_path = "/tmp/esmd-bench-engine-wrk-" + std::to_string(::getpid());
  double cpu0 = cpu_ms(RUSAGE_CHILDREN);
  std::fflush(stdout);  // or the child would print our buffered lines again
  std::fflush(stderr);
  pid_t pid = ::fork();
  if (pid == 0) {
    FILE* out = std::freopen(out_path.c_str(), "w", stdout);
    (void)out;
    std::string d = "-d" + std::to_string(seconds) + "s";
    ::execlp("wrk", "wrk", "-t1", "-c32", d.c_str(), "-H", "Connection: close", url.c_str(),
             (char*)nullptr);
    std::_Exit(127);
  }
  if (pid < 0) return f;
  int status = 0;
  auto end = clk::now() + std::chrono::seconds(seconds + 30);
  for (;;) {
    pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid) break;
    if (r < 0 && errno != EINTR) break;
    if (clk::now() > end) {
      std::fprintf(stderr, "wrk (pid %d) overran: SIGKILL\n", int(pid));
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      break;
    }
    std::this_thread::sleep_for(20ms);
  }
  f.cpu = cpu_ms(RUSAGE_CHILDREN) - cpu0;
  auto text = read_file(out_path);
  std::remove(out_path.c_str());
  std::smatch m;
  if (std::regex_search(text, m, std::regex(R"((\d+) requests in ([\d.]+)s)"))) {
    f.requests = std::stoll(m[1]);
    f.seconds = std::stod(m[2]);
  }
  if (std::regex_search(text, m, std::regex(R"(Non-2xx or 3xx responses: (\d+))")))
    f.non_2xx = std::stoll(m[1]);
  f.ok = WIFEXITED(status) && WEXITSTATUS(status) == 0 && f.requests > 0;
  if (!f.ok) std::fprintf(stderr, "wrk failed (is it installed?):\n%s\n", text.c_str());
  else if (text.find("Socket errors") != std::string::npos || f.non_2xx)
    std::fprintf(stderr, "wrk reported errors:\n%s\n", text.c_str());
  return f;
}

// ---- command line --------------------------------------------------------------------------

// parse_duration: test/support/measure.hpp

std::string fmt(double v, const char* f = "%.1f") {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

struct options {
  bool sustained = false, skip_consul = false;
  long long n = 0;
  milliseconds interval{10'000}, duration{30'000};
  int addresses = 0;
  int wrk_seconds = 10;
  std::size_t max_concurrent = 1024;
  int repeat = 1;
  bool overload = false;  // --overload: fairness at more than one core can run
  bool share_memory = false;  // --share-memory: malloc'd bytes of the share, by structure
  bool fat = false;           // --fat: bench_daemon_memory.py's fat shape, not the lean one
  milliseconds stall{0}, stall_at{10'000};
};

options parse(int argc, char** argv) {
  options o;
  std::vector<std::string> pos;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--sustained") o.sustained = true;
    else if (a == "--skip-consul") o.skip_consul = true;
    else if (a == "--overload") o.overload = true;
    else if (a == "--share-memory") o.share_memory = true;
    else if (a == "--fat") o.fat = true;
    else if (a == "--stall") o.stall = 3s;
    else if (a.rfind("--stall=", 0) == 0) o.stall = parse_duration(a.substr(8));
    else if (a.rfind("--stall-at=", 0) == 0) o.stall_at = parse_duration(a.substr(11));
    else if (a.rfind("--addresses=", 0) == 0) o.addresses = std::atoi(a.c_str() + 12);
    else if (a.rfind("--wrk-seconds=", 0) == 0) o.wrk_seconds = std::atoi(a.c_str() + 14);
    else if (a.rfind("--repeat=", 0) == 0) o.repeat = std::clamp(std::atoi(a.c_str() + 9), 1, 100);
    else if (a.rfind("--max-concurrent=", 0) == 0)
      o.max_concurrent = std::size_t(std::max(1, std::atoi(a.c_str() + 17)));
    else if (a.rfind("--", 0) == 0) throw std::runtime_error("unknown option " + a);
    else pos.push_back(a);
  }
  bool fairness = o.overload || o.stall > 0ms;
  o.n = pos.size() > 0 ? std::atoll(pos[0].c_str())
                       : (o.sustained || fairness ? 100'000 : o.share_memory ? 20'000 : 2000);
  if (o.overload) o.interval = 5s;  // 20 000 runs/s due: more than one core runs
  if (fairness) o.duration = o.stall > 0ms ? 50s : 30s;
  if (pos.size() > 1) o.interval = parse_duration(pos[1]);
  if (pos.size() > 2) o.duration = parse_duration(pos[2]);
  if (o.addresses <= 0) o.addresses = o.sustained || fairness ? 8 : 1;
  o.addresses = std::clamp(o.addresses, 1, 254);
  if (o.n <= 0 || o.interval <= 0ms || o.duration <= 0ms)
    throw std::runtime_error("N, interval and duration must be positive");
  return o;
}

void print_row(const char* name, const std::string& cpu, const std::string& mem,
               const std::string& lag, const std::string& vs_consul, const std::string& vs_wrk) {
  std::printf("%-22s %14s %16s %10s %16s %10s\n", name, cpu.c_str(), mem.c_str(), lag.c_str(),
              vs_consul.c_str(), vs_wrk.c_str());
}

// ---- overload and stall -----------------------------------------------------------------

// Per-check fairness over the window, from visit_checks polled every `poll`: runs each check
// completed, and its largest gap between the due times of consecutive runs (interval + the
// earlier run's lag and duration; the last one counted to the end of the window, so a check
// that never ran again shows the whole window). The engine's thread also does the polling.
struct check_track {
  const esm::consul::health_check* catalog = nullptr;
  std::uint64_t runs0 = 0, runs = 0;
  clk::time_point last_due{};
  clk::duration max_gap{};
};

void poll_checks(const esm::checks::check_engine& engine, std::vector<check_track>& tracks,
                 bool first) {
  std::size_t k = 0;
  bool aligned = true;
  std::map<const esm::consul::health_check*, std::size_t> by_catalog;  // only if the order moved
  engine.visit_checks([&](const esm::checks::check_engine::check_info& c) {
    check_track* t = nullptr;
    if (first) {
      tracks.push_back({c.catalog, c.runs, c.runs, c.last_due, {}});
      return;
    }
    if (aligned && k < tracks.size() && tracks[k].catalog == c.catalog) {
      t = &tracks[k];
    } else {
      if (aligned) {
        aligned = false;
        for (std::size_t j = 0; j < tracks.size(); ++j) by_catalog[tracks[j].catalog] = j;
      }
      auto it = by_catalog.find(c.catalog);
      if (it == by_catalog.end()) return;
      t = &tracks[it->second];
    }
    ++k;
    if (c.last_due != t->last_due) {
      t->max_gap = std::max(t->max_gap, c.last_due - t->last_due);
      t->last_due = c.last_due;
    }
    t->runs = c.runs;
  });
}

struct sample {
  double t = 0;  // seconds since the window's start
  std::uint64_t runs = 0;
};

// Quantiles of a sorted vector (nearest rank).
double rank(const std::vector<double>& v, double q) {
  if (v.empty()) return 0;
  auto i = std::min(v.size() - 1, std::size_t(q * double(v.size())));
  return v[i];
}

// Runs per 100 ms over [from, to) s of the window: min, p10, median, p90, max, and the
// coefficient of variation (0: evenly spread; bunched runs give many empty 100 ms slots).
void print_spread(const char* what, const std::vector<sample>& tl, double from, double to) {
  std::vector<double> per;
  for (std::size_t j = 1; j < tl.size(); ++j) {
    if (tl[j - 1].t < from || tl[j].t > to) continue;
    double dt = tl[j].t - tl[j - 1].t;
    if (dt <= 0) continue;
    per.push_back(double(tl[j].runs - tl[j - 1].runs) * 0.1 / dt);  // per 100 ms
  }
  if (per.empty()) {
    std::printf("  %-34s (no samples)\n", what);
    return;
  }
  double mean = 0, var = 0;
  for (double x : per) mean += x;
  mean /= double(per.size());
  for (double x : per) var += (x - mean) * (x - mean);
  var /= double(per.size());
  std::sort(per.begin(), per.end());
  long empty = std::count_if(per.begin(), per.end(), [&](double x) { return x < mean * 0.25; });
  std::printf("  %-34s min %5.0f p10 %5.0f median %5.0f p90 %5.0f max %5.0f  cv %.2f  "
              "slots under a quarter of the mean %ld of %zu\n",
              what, per.front(), rank(per, 0.1), rank(per, 0.5), rank(per, 0.9), per.back(),
              mean > 0 ? std::sqrt(var) / mean : 0, empty, per.size());
}

// N HTTP checks (more than one core can run for --overload), optionally a stall of the
// io_context's thread (std::this_thread::sleep_for inside a handler, as a slow synchronous
// step or a SIGSTOP would) at `stall_at` into the window. Prints figures, asserts nothing.
int run_fairness(const options& o, const nginx_server& ng) {
  auto n = o.n;
  auto interval = o.interval;
  auto duration = o.duration;
  std::printf("%s: %lld HTTP checks, interval %.1f s (%.0f runs/s due), window %.1f s after one "
              "interval, max_concurrent %zu, stall %.1f s at %.1f s\n",
              o.overload ? "Overload" : "Stall", n, interval.count() / 1000.0,
              double(n) * 1000.0 / double(interval.count()), duration.count() / 1000.0,
              o.max_concurrent, o.stall.count() / 1000.0, o.stall_at.count() / 1000.0);
  std::fflush(stdout);
  asio::io_context io(1);
  esm::probe::probe_context probes;
  esm::checks::engine_settings s;
  s.max_concurrent = o.max_concurrent;
  s.plans.min_interval = std::min<milliseconds>(1000ms, interval);
  auto engine = std::make_unique<esm::checks::check_engine>(io.get_executor(), nullptr, probes, s);
  {
    std::vector<esm::sharding::shared_check> checks;
    checks.reserve(std::size_t(n));
    for (long long i = 0; i < n; ++i)
      checks.push_back(std::make_shared<const esm::consul::health_check>(make_check(kind::http, i, ng, interval)));
    engine->on_checks(checks);
  }
  task run(io, engine->run());
  std::vector<check_track> tracks;
  std::vector<sample> timeline;                    // every 100 ms
  std::vector<std::pair<double, double>> lag_p99;  // (end of 1 s window, p99 ms)
  std::vector<double> lag_p50_1s;
  std::uint64_t runs0 = 0, cancelled0 = 0, runs = 0, cancelled = 0;
  double cpu = 0, window_s = 0, stall_end_s = -1, stall_begin_s = -1;
  std::size_t max_queued = 0;
  double lag_p50 = 0, lag_p99_all = 0, lag_max = 0;
  bool measured = false;
  auto driver = [&]() -> asio::awaitable<void> {
    co_await sleep_for(interval);
    auto& st = engine->stats();
    st.lag.clear();
    st.max_queued = st.queued;
    poll_checks(*engine, tracks, true);
    runs0 = st.runs;
    cancelled0 = st.cancelled_runs;
    auto t0 = clk::now();
    auto cpu0 = cpu_ms(RUSAGE_SELF);
    auto end = t0 + duration;
    auto next_poll = t0 + 1s;
    auto next_lag = t0 + 1s;
    auto lag_prev = st.lag.counts;
    bool stalled = o.stall <= 0ms;
    timeline.push_back({0, st.runs});
    while (clk::now() < end) {
      co_await sleep_for(100ms);
      auto now = clk::now();
      timeline.push_back({std::chrono::duration<double>(now - t0).count(), st.runs});
      if (!stalled && now >= t0 + o.stall_at) {
        stalled = true;
        stall_begin_s = std::chrono::duration<double>(clk::now() - t0).count();
        std::this_thread::sleep_for(o.stall);  // blocks the engine's thread
        stall_end_s = std::chrono::duration<double>(clk::now() - t0).count();
      }
      if (now >= next_lag) {
        esm::checks::lag_histogram h;
        for (std::size_t b = 0; b < h.buckets; ++b) {
          h.counts[b] = st.lag.counts[b] - lag_prev[b];
          h.total += h.counts[b];
        }
        lag_prev = st.lag.counts;
        lag_p99.push_back({std::chrono::duration<double>(now - t0).count(), h.quantile_ms(0.99)});
        lag_p50_1s.push_back(h.quantile_ms(0.5));
        next_lag = now + 1s;
      }
      if (now >= next_poll) {
        poll_checks(*engine, tracks, false);
        next_poll = now + 1s;
      }
    }
    poll_checks(*engine, tracks, false);
    auto t_end = clk::now();
    for (auto& t : tracks) t.max_gap = std::max(t.max_gap, t_end - t.last_due);
    cpu = cpu_ms(RUSAGE_SELF) - cpu0;
    window_s = seconds_since(t0);
    runs = st.runs - runs0;
    cancelled = st.cancelled_runs - cancelled0;
    max_queued = st.max_queued;
    lag_p50 = st.lag.quantile_ms(0.5);
    lag_p99_all = st.lag.quantile_ms(0.99);
    lag_max = st.lag.quantile_ms(1.0);
    measured = true;
    run.cancel();
  };
  asio::co_spawn(io, driver(), asio::detached);
  io.run_for(interval + duration + o.stall + 60s);
  if (!run.done() || !measured) {
    std::fprintf(stderr, "fairness: did not finish in time\n");
    (void)engine.release();
    return 1;
  }

  double due = double(n) * 1000.0 / double(interval.count());
  std::printf("  %llu runs in %.1f s (%.0f runs/s, %.1f%% of the %.0f due per second), CPU %.1f%% "
              "of one core, %.1f CPU-ms/1000 runs; cancelled runs %llu, max queued %zu\n",
              (unsigned long long)runs, window_s, double(runs) / window_s,
              double(runs) / window_s / due * 100.0, due, cpu / (window_s * 10.0),
              runs ? cpu / double(runs) * 1000.0 : 0, (unsigned long long)cancelled, max_queued);
  std::printf("  schedule lag over the window: p50 %.0f ms, p99 %.0f ms, max %.0f ms\n", lag_p50,
              lag_p99_all, lag_max);
  std::vector<double> per_check, gaps;
  std::uint64_t sum = 0;
  long never = 0;
  for (auto& t : tracks) {
    auto r = t.runs - t.runs0;
    sum += r;
    if (r == 0) ++never;
    per_check.push_back(double(r));
    gaps.push_back(std::chrono::duration<double, std::milli>(t.max_gap).count());
  }
  std::sort(per_check.begin(), per_check.end());
  std::sort(gaps.begin(), gaps.end());
  std::printf("  runs per check in the window (%zu checks): min %.0f, p1 %.0f, median %.0f, p99 %.0f, "
              "max %.0f; checks without a run %ld; runs summed over checks %llu (engine counted %llu)\n",
              tracks.size(), rank(per_check, 0), rank(per_check, 0.01), rank(per_check, 0.5),
              rank(per_check, 0.99), per_check.empty() ? 0 : per_check.back(), never,
              (unsigned long long)sum, (unsigned long long)runs);
  std::printf("  largest gap between a check's due times (ms): min %.0f, p50 %.0f, p99 %.0f, max %.0f "
              "(interval %lld)\n",
              rank(gaps, 0), rank(gaps, 0.5), rank(gaps, 0.99), gaps.empty() ? 0 : gaps.back(),
              (long long)interval.count());
  std::printf("  lag p99 per 1 s window (ms):");
  for (std::size_t j = 0; j < lag_p99.size(); ++j)
    std::printf("%s %.0f", j % 20 ? "" : "\n   ", lag_p99[j].second);
  std::printf("\n");
  if (stall_end_s >= 0) {
    // Recovery: the end of the first 1 s window after the stall from which every later
    // window's p99 is under 100 ms.
    double recovered = -1;
    for (std::size_t j = lag_p99.size(); j-- > 0;) {
      if (lag_p99[j].first <= stall_end_s) break;
      if (lag_p99[j].second >= 100) break;
      recovered = lag_p99[j].first - 1.0;  // the window's start
    }
    std::printf("  stall %.2f s from %.1f s to %.1f s of the window; lag p99 under 100 ms in every "
                "1 s window from %s\n",
                stall_end_s - stall_begin_s, stall_begin_s, stall_end_s,
                recovered < 0 ? "(never, within the window)"
                              : (fmt(recovered - stall_end_s, "%.1f") + " s after the stall ended").c_str());
    double iv = interval.count() / 1000.0;
    std::printf("  runs per 100 ms (completions):\n");
    print_spread("before the stall (one interval)", timeline, std::max(0.0, stall_begin_s - iv),
                 stall_begin_s);
    print_spread("first interval after the stall", timeline, stall_end_s, stall_end_s + iv);
    print_spread("second interval after the stall", timeline, stall_end_s + iv, stall_end_s + 2 * iv);
    print_spread("third interval after the stall", timeline, stall_end_s + 2 * iv, stall_end_s + 3 * iv);
  } else {
    std::printf("  runs per 100 ms (completions):\n");
    print_spread("over the window", timeline, 0, window_s);
  }
  std::fflush(stdout);
  return 0;
}

double median_of(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  auto m = v.size() / 2;
  return v.size() % 2 ? v[m] : (v[m - 1] + v[m]) / 2.0;
}

// ---- the share's memory, by structure ------------------------------------------------------

std::size_t heap_in_use() {
  auto m = mallinfo2();
  return m.uordblks + m.hblkhd;
}

int run_share_memory(const options& o) {
  namespace consul = esm::consul;
  namespace sharding = esm::sharding;
  const auto n = std::size_t(o.n);
  // The answers as Consul 1.8.7 gives them for bench_daemon_memory.py's shapes (ID empty
  // and TaggedAddresses null for a node registered through /v1/catalog/register). Lean: N
  // nodes with one HTTP check each. Fat: N/10 nodes with ten checks each, with the Notes,
  // Method and three headers of that benchmark and the Output esmd writes for them (the
  // version the daemon holds once its writes came back through the watch).
  const std::size_t per_node = o.fat ? 10 : 1;
  const std::size_t nodes = (n + per_node - 1) / per_node;
  std::string nodes_body = "[", checks_body = "[";
  const std::string notes =
      "Checks the storefront's order API through the regional load balancer; on failure page "
      "the on-call of team checkout (runbook: https://wiki.example.com/runbooks/checkout/api). "
      "Owned by checkout-platform, reviewed quarterly. "
      "Checks the storefront's order API through the regional load balancer; on failure page "
      "the on-call of team checkout (runbook: https://wiki.example.com/runbooks/checkout/api). "
      "Owned by checkout-platform, reviewed quarterly. ";
  for (std::size_t i = 0; i < nodes; ++i) {
    auto name = "mem-" + std::to_string(i);
    auto index = std::to_string(13 + i);
    if (i) nodes_body += ',';
    nodes_body += R"({"ID":"","Node":")" + name + R"(","Address":"127.0.0.1","Datacenter":"dc1",)"
                  R"("TaggedAddresses":null,"Meta":{"external-node":"true")" +
                  (o.fat ? R"(,"rack":"r)" + std::to_string(i % 40) + "\"" : std::string()) +
                  R"(},"CreateIndex":)" + index + R"(,"ModifyIndex":)" + index + "}";
    for (std::size_t k = 0; k < per_node; ++k) {
      if (checks_body.size() > 1) checks_body += ',';
      if (!o.fat) {
        checks_body += R"({"Node":")" + name + R"(","CheckID":")" + name +
                       R"(-http","Name":"http","Status":"critical","Notes":"",)"
                       R"("Output":"HTTP GET http://127.0.0.1:41234/: 503 Service Unavailable",)"
                       R"("ServiceID":"","ServiceName":"","ServiceTags":[],"Type":"http",)"
                       R"("Definition":{"Interval":"30s","Timeout":"5s","HTTP":"http://127.0.0.1:41234/"},)"
                       R"("CreateIndex":)" + index + R"(,"ModifyIndex":)" + index + "}";
        continue;
      }
      auto kk = std::to_string(k);
      auto url = "http://127.0.0.1:41234/health/" + std::to_string(i) + "/" + kk +
                 "?region=eu-west-1&probe=esmd";
      checks_body += R"({"Node":")" + name + R"(","CheckID":")" + name + "-http" + kk +
                     R"(","Name":"orders api )" + kk + R"(","Status":"passing","Notes":")" + notes +
                     R"(","Output":"HTTP GET )" + url + R"(: 200 OK Output: ok\n",)"
                     R"("ServiceID":"","ServiceName":"","ServiceTags":[],"Type":"http",)"
                     R"("Definition":{"Interval":"30s","Timeout":"5s","HTTP":")" + url +
                     R"(","Method":"GET","Header":{"Accept":["application/json"],)"
                     R"("Authorization":["Bearer not-a-secret-just-bytes-0123456789"],)"
                     R"("X-Probe":["esmd-benchmark"]}},)"
                     R"("CreateIndex":)" + index + R"(,"ModifyIndex":)" + index + "}";
    }
  }
  nodes_body += ']', checks_body += ']';

  asio::io_context io(1);
  esm::probe::probe_context probes;  // loads the trust store: before the baseline
  esm::checks::engine_settings s;
  auto engine = std::make_unique<esm::checks::check_engine>(io.get_executor(), nullptr, probes, s);
  auto cache = std::make_unique<sharding::share_cache>();
  sharding::assignment stats_current;  // the worker's copy in worker_stats::current

  std::vector<std::pair<const char*, double>> rows;
  auto m = heap_in_use();
  auto step = [&](const char* what) {
    auto now = heap_in_use();
    rows.emplace_back(what, (double(now) - double(m)) / double(nodes * per_node));
    m = now;
  };
  {
    sharding::assignment a;  // as decoded from the assignment key
    for (std::size_t i = 0; i < nodes; ++i) a.nodes.push_back("mem-" + std::to_string(i));
    cache->assign(a);
    stats_current = std::move(a);
  }
  auto p = cache->apply_assignment();
  p = {};
  step("assignment: worker_stats' copy, and the names of the work (and followed)");
  cache->on_nodes(consul::decode_array<consul::node>(nodes_body), 100);
  step("node objects held by the share cache");
  cache->on_checks(consul::decode_array<consul::health_check>(checks_body), 200);
  step("check objects (shared by the cache and the engine) and the cache's handles");
  engine->on_checks(cache->checks());
  step("the engine's own (slots, plans, index, schedule) after on_checks");
  // For comparison, what the same bytes cost held as the cache held them until 2026-12-02:
  // consul::node objects, and the names in a std::set (twice: the work's and followed()).
  {
    auto objects = consul::decode_array<consul::node>(nodes_body);
    step("(for comparison, not held: the same nodes as consul::node objects)");
    std::set<std::string> names(cache->followed().begin(), cache->followed().end());
    step("(for comparison, not held: the node names as a set)");
  }
  auto total = 0.0;
  std::printf("share memory, %s shape, %zu nodes with %zu HTTP check(s) each (malloc'd bytes per "
              "check):\n", o.fat ? "fat" : "lean", nodes, per_node);
  for (auto& [what, b] : rows) {
    std::printf("  %7.0f B  %s\n", b, what);
    if (what[0] != '(') total += b;
  }
  std::printf("  %7.0f B  in all\n", total);
  std::printf("  sizeof: health_check %zu, check_definition %zu, consul::node %zu, "
              "packed_node %zu, check_plan %zu\n",
              sizeof(consul::health_check), sizeof(consul::check_definition), sizeof(consul::node),
              sizeof(sharding::packed_node), sizeof(esm::checks::check_plan));
  return 0;
}

// --repeat=R: R runs, each with a fresh engine (the same nginx), then one line per run and
// the median of each column.
int run_sustained(const options& o) {
  nginx_server ng(o.addresses);
  std::printf("Sustained: %lld HTTP checks, interval %.1f s, window %.1f s, max_concurrent %zu, "
              "nginx on %d address(es) port %d (pid %d), %d run(s)\n\n",
              o.n, o.interval.count() / 1000.0, o.duration.count() / 1000.0, o.max_concurrent,
              o.addresses, ng.port(), int(ng.pid()), o.repeat);
  double target = double(o.n) / (o.interval.count() / 1000.0);
  std::vector<engine_figures> all;
  for (int r = 0; r < o.repeat; ++r) {
    if (o.repeat > 1) std::printf("run %d of %d\n", r + 1, o.repeat);
    auto f = run_engine(kind::http, o.n, o.interval, o.duration, ng, 5s, o.max_concurrent);
    if (!f) return 1;
    print_engine(kind::http, *f);
    std::printf("\nsustained: %.0f runs/s achieved of %.0f due per second (%.1f%%), p99 lag %.0f ms, "
                "CPU %.1f%% of one core, %.1f CPU-ms/1000 runs, %.0f B per check\n\n",
                f->runs_per_s(), target, f->runs_per_s() / target * 100.0, f->lag_p99,
                f->cpu / (f->window_s * 10.0), f->cpu_per_1000(), f->alloc_after);
    std::fflush(stdout);
    all.push_back(*f);
  }
  if (o.repeat < 2) return 0;
  std::printf("%lld HTTP checks at %.1f s, window %.1f s: lag (1 ms buckets, upper bounds)\n",
              o.n, o.interval.count() / 1000.0, o.duration.count() / 1000.0);
  std::printf("  %-7s %8s %8s %8s %9s %8s %8s %12s\n", "run", "p50 ms", "p99 ms", "max ms",
              "runs/s", "of due", "CPU %", "CPU-ms/1000");
  std::vector<double> p50, p99, mx, rps, share, cpu, per1000;
  for (std::size_t r = 0; r < all.size(); ++r) {
    const auto& f = all[r];
    p50.push_back(f.lag_p50);
    p99.push_back(f.lag_p99);
    mx.push_back(f.lag_max);
    rps.push_back(f.runs_per_s());
    share.push_back(f.runs_per_s() / target * 100.0);
    cpu.push_back(f.cpu / (f.window_s * 10.0));
    per1000.push_back(f.cpu_per_1000());
    std::printf("  %-7zu %8.0f %8.0f %8.0f %9.0f %7.1f%% %8.1f %12.1f\n", r + 1, f.lag_p50,
                f.lag_p99, f.lag_max, f.runs_per_s(), share.back(), cpu.back(), f.cpu_per_1000());
  }
  std::printf("  %-7s %8.0f %8.0f %8.0f %9.0f %7.1f%% %8.1f %12.1f\n", "median", median_of(p50),
              median_of(p99), median_of(mx), median_of(rps), median_of(share), median_of(cpu),
              median_of(per1000));
  long under = std::count_if(p99.begin(), p99.end(), [](double v) { return v < 100; });
  std::printf("  p99 lag under 100 ms in %ld of %zu runs\n", under, all.size());
  return 0;
}

int run_compare(const options& o) {
  nginx_server ng(o.addresses);
  std::string url = "http://127.0.0.1:" + std::to_string(ng.port()) + "/";
  std::printf("%lld checks of each kind, interval %.1f s, window %.1f s (after one interval), "
              "nginx %s on %d address(es) (pid %d)\n\n",
              o.n, o.interval.count() / 1000.0, o.duration.count() / 1000.0, url.c_str(),
              o.addresses, int(ng.pid()));

  struct per_kind {
    std::optional<engine_figures> engine;
    std::optional<consul_figures> consul;
  } http, tcp;
  std::optional<wrk_figures> wrk;

  for (kind k : {kind::http, kind::tcp}) {
    auto& r = k == kind::http ? http : tcp;
    r.engine = run_engine(k, o.n, o.interval, o.duration, ng, 0ms, o.max_concurrent);
    if (r.engine) print_engine(k, *r.engine);
    std::fflush(stdout);
    if (!o.skip_consul) {
      try {
        r.consul = run_consul(k, o.n, o.interval, o.duration, ng);
      } catch (const std::exception& e) {
        std::fprintf(stderr, "consul %s: %s\n", kind_name(k), e.what());
      }
      if (r.consul) print_consul(k, *r.consul);
    }
    if (k == kind::http) {
      auto before = ng.read();
      wrk = run_wrk(url, o.wrk_seconds);
      auto after = ng.read();
      std::printf("wrk -t1 -c32 -d%ds -H 'Connection: close' %s: %lld requests in %.2f s, CPU %.0f ms, "
                  "%.1f CPU-ms/1000 requests (nginx counted %llu)\n",
                  o.wrk_seconds, url.c_str(), wrk->requests, wrk->seconds, wrk->cpu,
                  wrk->cpu_per_1000(), after.requests - before.requests - 1);
    }
    std::printf("\n");
    std::fflush(stdout);
  }

  std::printf("Summary (CPU per 1000 runs/requests; memory per configured check: engine malloc'd "
              "bytes after feeding / after the runs, Consul VmRSS delta one interval after "
              "registering; Consul runs counted as N * window / interval)\n");
  for (kind k : {kind::http, kind::tcp}) {
    auto& r = k == kind::http ? http : tcp;
    std::printf("\n%s checks, N=%lld, interval %.1f s\n", kind_name(k), o.n,
                o.interval.count() / 1000.0);
    print_row("", "CPU-ms/1000", "memory/check B", "p99 lag", "engine/consul", "engine/wrk");
    std::string e_cpu = "-", e_mem = "-", e_lag = "-", vs_c = "-", vs_w = "-";
    if (r.engine) {
      e_cpu = fmt(r.engine->cpu_per_1000());
      e_mem = fmt(r.engine->alloc_fed, "%.0f") + " / " + fmt(r.engine->alloc_after, "%.0f");
      e_lag = fmt(r.engine->lag_p99, "%.0f ms");
    }
    if (r.engine && r.consul && r.consul->cpu_per_1000() > 0)
      vs_c = fmt(r.engine->cpu_per_1000() / r.consul->cpu_per_1000(), "%.3f") + " CPU";
    if (k == kind::http && r.engine && wrk && wrk->ok)
      vs_w = fmt(r.engine->cpu_per_1000() / wrk->cpu_per_1000(), "%.2f");
    print_row("esmd engine", e_cpu, e_mem, e_lag, vs_c, vs_w);
    if (r.consul) {
      std::string mem_ratio = "-";
      if (r.engine && r.consul->rss_per_check > 0)
        mem_ratio = fmt(r.engine->alloc_after / r.consul->rss_per_check, "%.3f") + " mem";
      print_row("Consul agent checks", fmt(r.consul->cpu_per_1000()),
                fmt(r.consul->rss_per_check, "%.0f"), "-", mem_ratio, "-");
    } else {
      print_row("Consul agent checks", "-", "-", "-", "-", "-");
    }
    if (k == kind::http && wrk && wrk->ok)
      print_row("wrk floor", fmt(wrk->cpu_per_1000()), "-", "-", "-", "-");
    else
      print_row("wrk floor", "n/a", "-", "-", "-", "-");
    if (k == kind::tcp) std::printf("(no wrk floor for TCP checks: wrk speaks HTTP only)\n");
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  options o;
  try {
    o = parse(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\nusage: %s [--sustained] [N [INTERVAL [DURATION]]] [--addresses=K] "
                 "[--wrk-seconds=S] [--skip-consul] [--max-concurrent=M] [--repeat=R]\n"
                 "       %s --share-memory [N]\n", e.what(), argv[0], argv[0]);
    return 2;
  }
  if (!std::getenv("CONSUL_BIN") && ::access("/root/.cache/consul-bin/consul", X_OK) == 0)
    ::setenv("CONSUL_BIN", "/root/.cache/consul-bin/consul", 0);
  rlimit nofile{};
  ::getrlimit(RLIMIT_NOFILE, &nofile);
  if (nofile.rlim_cur < nofile.rlim_max) {
    nofile.rlim_cur = nofile.rlim_max;  // up to 1024 probes in flight, plus nginx's side
    ::setrlimit(RLIMIT_NOFILE, &nofile);
  }
  std::printf("net.ipv4.tcp_tw_reuse = %s, net.ipv4.ip_local_port_range = %s, "
              "net.ipv4.tcp_max_tw_buckets = %s, open files %llu\n",
              sysctl("/proc/sys/net/ipv4/tcp_tw_reuse").c_str(),
              sysctl("/proc/sys/net/ipv4/ip_local_port_range").c_str(),
              sysctl("/proc/sys/net/ipv4/tcp_max_tw_buckets").c_str(),
              (unsigned long long)nofile.rlim_cur);
  try {
    if (o.share_memory) return run_share_memory(o);
    if (o.overload || o.stall > 0ms) {
      nginx_server ng(o.addresses);
      return run_fairness(o, ng);
    }
    return o.sustained ? run_sustained(o) : run_compare(o);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_engine: %s\n", e.what());
    return 1;
  }
}
