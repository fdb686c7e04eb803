// Benchmark (prints figures, not a test): the Consul client's keep-alive GETs against a local
// Consul dev agent, next to wrk against the same endpoint in the same run.
//
//   build/gcc/test/bench/bench_consul_client [requests] [concurrency]
//
// Reports requests/s and CPU-ms per 1000 requests of the client process (user + system),
// and the same for wrk (a child process, measured with RUSAGE_CHILDREN), and their ratio.
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <regex>
#include <string>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>

#include "consul_fixture.hpp"
#include "esm/consul/client.hpp"

namespace asio = boost::asio;
using namespace std::chrono_literals;

namespace {

double cpu_ms(int who) {
  rusage u{};
  ::getrusage(who, &u);
  return (double(u.ru_utime.tv_sec) + double(u.ru_stime.tv_sec)) * 1e3 +
         (double(u.ru_utime.tv_usec) + double(u.ru_stime.tv_usec)) / 1e3;
}

struct figures {
  double seconds = 0, cpu = 0;
  long requests = 0;
  double rps() const { return double(requests) / seconds; }
  double cpu_per_1000() const { return cpu / double(requests) * 1000.0; }
};

figures run_client(const std::string& address, long total, int concurrency) {
  asio::io_context io(1);
  esm::consul::connection_options o;
  o.address = address;
  o.max_idle_connections = std::size_t(concurrency);
  esm::consul::client c(io.get_executor(), o);
  long started = 0, done = 0, failed = 0;
  auto worker = [&]() -> asio::awaitable<void> {
    while (started < total) {
      ++started;
      auto r = co_await c.kv_get("bench/key");
      if (!r || !r->value) ++failed;
      ++done;
    }
  };
  // Warm up the connections, then measure.
  for (int i = 0; i < concurrency; ++i) asio::co_spawn(io, c.kv_get("bench/key"), asio::detached);
  io.run();
  io.restart();
  double cpu0 = cpu_ms(RUSAGE_SELF);
  auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < concurrency; ++i) asio::co_spawn(io, worker(), asio::detached);
  io.run();
  figures f;
  f.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  f.cpu = cpu_ms(RUSAGE_SELF) - cpu0;
  f.requests = done;
  if (failed) std::fprintf(stderr, "client: %ld requests failed\n", failed);
  auto s = c.http().stats();
  std::printf("client: %zu connections opened for %ld requests\n", std::size_t(s.connections_opened), done);
  return f;
}

figures run_wrk(const std::string& url, int concurrency, int seconds) {
  std::string out_path = "/tmp/esmd-bench-wrk-" + std::to_string(::getpid());
  double cpu0 = cpu_ms(RUSAGE_CHILDREN);
  std::fflush(stdout);  // or the child would print our buffered lines again
  pid_t pid = ::fork();
  if (pid == 0) {
    FILE* out = std::freopen(out_path.c_str(), "w", stdout);
    (void)out;
    std::string c = "-c" + std::to_string(concurrency), d = "-d" + std::to_string(seconds) + "s";
    ::execlp("wrk", "wrk", "-t1", c.c_str(), d.c_str(), url.c_str(), (char*)nullptr);
    std::_Exit(127);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  figures f;
  f.cpu = cpu_ms(RUSAGE_CHILDREN) - cpu0;
  std::string text;
  if (FILE* in = std::fopen(out_path.c_str(), "r")) {
    char buf[4096];
    while (auto n = std::fread(buf, 1, sizeof buf, in)) text.append(buf, n);
    std::fclose(in);
  }
  std::remove(out_path.c_str());
  std::smatch m;
  if (std::regex_search(text, m, std::regex(R"((\d+) requests in ([\d.]+)s)"))) {
    f.requests = std::stol(m[1]);
    f.seconds = std::stod(m[2]);
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || f.requests == 0)
    std::fprintf(stderr, "wrk failed (is it installed?):\n%s\n", text.c_str());
  return f;
}

}  // namespace

int main(int argc, char** argv) {
  long total = argc > 1 ? std::atol(argv[1]) : 20000;
  int concurrency = argc > 2 ? std::atoi(argv[2]) : 8;
  esm::test::consul_dev_agent consul;
  auto put = esm::test::http_request("127.0.0.1", consul.http_port(), "PUT", "/v1/kv/bench/key",
                                     R"({"Nodes":["n1","n2"],"Probes":null})");
  if (put.status != 200) {
    std::fprintf(stderr, "cannot write the benchmark key\n");
    return 1;
  }
  auto client = run_client(consul.http_address(), total, concurrency);
  int wrk_seconds = std::max(2, int(client.seconds + 0.5));
  auto wrk = run_wrk("http://" + consul.http_address() + "/v1/kv/bench/key", concurrency, wrk_seconds);

  std::printf("\nKeep-alive GET /v1/kv/bench/key against Consul %s, %d in flight\n",
              "(dev agent, loopback)", concurrency);
  std::printf("%-14s %10s %10s %14s\n", "", "requests", "req/s", "CPU-ms/1000");
  std::printf("%-14s %10ld %10.0f %14.1f\n", "esmd client", client.requests, client.rps(), client.cpu_per_1000());
  std::printf("%-14s %10ld %10.0f %14.1f\n", "wrk", wrk.requests, wrk.rps(), wrk.cpu_per_1000());
  if (wrk.requests > 0)
    std::printf("ratio esmd/wrk: throughput %.2f, CPU per request %.2f\n", client.rps() / wrk.rps(),
                client.cpu_per_1000() / wrk.cpu_per_1000());
  return 0;
}
