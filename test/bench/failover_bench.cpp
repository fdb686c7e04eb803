// Benchmark (prints figures, not a test): leader failover of two esmd processes on a Consul
// dev agent, after SIGTERM and after kill -9 of the leader, median of N runs each.
//
//   ESMD_BIN=build/gcc/app/esmd build/gcc/test/bench/bench_failover [runs] [session_ttl] [lock_delay]
//
// Defaults: 5 runs, session_ttl 10s, lock_delay 1s (pass 30s 15s for esmd's defaults).
#include <signal.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <memory>
#include <thread>
#include <vector>

#include "consul_fixture.hpp"
#include "process.hpp"

using namespace std::chrono_literals;
using esm::test::child_process;

namespace {

int leader_of(std::vector<std::unique_ptr<child_process>>& p, std::chrono::seconds timeout) {
  auto end = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < end) {
    for (std::size_t i = 0; i < p.size(); ++i)
      if (p[i] && p[i]->output().find("Obtained leadership") != std::string::npos) return int(i);
    std::this_thread::sleep_for(10ms);
  }
  return -1;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  int runs = argc > 1 ? std::atoi(argv[1]) : 5;
  std::string ttl = argc > 2 ? argv[2] : "10s", delay = argc > 3 ? argv[3] : "1s";
  const char* bin = std::getenv("ESMD_BIN");
  if (!bin) {
    std::fprintf(stderr, "set ESMD_BIN to the esmd binary\n");
    return 1;
  }
  esm::test::consul_dev_agent consul;
  esm::test::temp_dir dir;
  std::map<int, std::vector<double>> seconds;  // signal -> failover times
  for (int run = 0; run < runs; ++run) {
    for (int sig : {SIGTERM, SIGKILL}) {
      auto conf = dir.path() + "/esmd.hcl";
      std::ofstream(conf) << "session_ttl = \"" << ttl << "\"\nlock_delay = \"" << delay << "\"\n"
                          << "consul_kv_path = \"bench-" << run << "-" << sig << "/\"\n";
      std::vector<std::unique_ptr<child_process>> p;
      for (int i = 0; i < 2; ++i)
        p.push_back(std::make_unique<child_process>(
            std::vector<std::string>{bin, "-config-file", conf},
            std::map<std::string, std::string>{{"CONSUL_HTTP_ADDR", consul.http_address()}},
            dir.path() + "/out" + std::to_string(i)));
      int leader = leader_of(p, 30s);
      if (leader < 0) {
        std::fprintf(stderr, "no leader\n");
        return 1;
      }
      std::this_thread::sleep_for(2s);  // let the renewals settle into their rhythm
      auto t0 = std::chrono::steady_clock::now();
      p[std::size_t(leader)]->signal(sig);
      p[std::size_t(leader)]->wait(10s);
      p[std::size_t(leader)].reset();
      if (leader_of(p, 300s) < 0) {
        std::fprintf(stderr, "no failover\n");
        return 1;
      }
      double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      seconds[sig].push_back(s);
      std::printf("run %d %-8s failover %.2f s\n", run + 1, sig == SIGTERM ? "SIGTERM" : "kill -9", s);
      std::fflush(stdout);
    }
  }
  std::printf("\nsession_ttl %s, lock_delay %s, %d runs: median failover after SIGTERM %.2f s, after kill -9 %.2f s\n",
              ttl.c_str(), delay.c_str(), runs, median(seconds[SIGTERM]), median(seconds[SIGKILL]));
  return 0;
}
