// The esmd binary as an operator runs it: startup against a real Consul, waiting for a leader,
// signals, SIGHUP reload, and the Consul version check.
#include <doctest/doctest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <iterator>
#include <map>
#include <memory>
#include <thread>
#include <vector>

#include "consul_fixture.hpp"
#include "process.hpp"

using namespace std::chrono_literals;
using esm::test::child_process;

namespace {

// esmd gives a stop 5 s to finish cleanly, then exits anyway; allow for a loaded machine.
constexpr auto stop_bound = 8s;

// doctest prints optional<int> as {?}: "still running" and "exited 11" would look the same.
void check_stop(child_process& p, int expected = 0) {
  auto code = p.wait(stop_bound);
  CHECK_MESSAGE(code.has_value(), "still running " << stop_bound.count() << " s after the signal\n"
                                                   << p.output());
  if (code) CHECK_MESSAGE(*code == expected, "exit status " << *code << "\n" << p.output());
}

std::string esmd_bin() {
  const char* p = std::getenv("ESMD_BIN");
  REQUIRE_MESSAGE(p, "ESMD_BIN is not set");
  return p;
}

esm::test::consul_dev_agent& agent() {
  static esm::test::consul_dev_agent a;
  return a;
}

// An external node with one service and its HTTP check (1 s interval), registered critical.
void register_http_node(const std::string& node, const std::string& url) {
  std::string reg = R"({"Node":")" + node + R"(","Address":"127.0.0.1","NodeMeta":{"external-node":"true"},)"
                    R"("Service":{"ID":"web","Service":"web","Port":80},)"
                    R"("Checks":[{"CheckID":"web-http","Name":"web","ServiceID":"web","Status":"critical",)"
                    R"("Definition":{"HTTP":")" + url + R"(","Interval":"1s","Timeout":"2s"}}]})";
  auto r = esm::test::http_request("127.0.0.1", agent().http_port(), "PUT", "/v1/catalog/register", reg);
  REQUIRE(r.status == 200);
}

// Answers what consul-esm's startup asks with fixed bodies: only to produce what a real
// Consul 1.8.7 cannot, an old or malformed version.
class canned_consul {
 public:
  // Requests whose path starts with a `stall` prefix are read and never answered.
  explicit canned_consul(std::map<std::string, std::string> bodies, std::vector<std::string> stall = {})
      : bodies_(std::move(bodies)), stall_(std::move(stall)) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    ::inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    REQUIRE(::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    socklen_t len = sizeof a;
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    ::listen(fd_, 16);
    thread_ = std::thread([this] { serve(); });
  }
  ~canned_consul() {
    stop_ = true;
    ::shutdown(fd_, SHUT_RDWR);
    ::close(fd_);
    thread_.join();
    for (int c : held_) ::close(c);
  }
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }

 private:
  void serve() {
    while (!stop_) {
      int c = ::accept(fd_, nullptr, nullptr);
      if (c < 0) return;
      std::string req;
      char buf[4096];
      for (int i = 0; i < 100 && req.find("\r\n\r\n") == std::string::npos; ++i) {
        auto n = ::recv(c, buf, sizeof buf, 0);
        if (n <= 0) break;
        req.append(buf, std::size_t(n));
      }
      auto path = req.substr(req.find(' ') + 1);
      path = path.substr(0, path.find_first_of(" ?"));
      bool stalled = false;
      for (auto& p : stall_) stalled = stalled || path.rfind(p, 0) == 0;
      if (stalled) {
        held_.push_back(c);
        continue;
      }
      auto it = bodies_.find(path);
      std::string body = it == bodies_.end() ? "not found" : it->second;
      std::string resp = std::string(it == bodies_.end() ? "HTTP/1.1 404 Not Found" : "HTTP/1.1 200 OK") +
                         "\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: " +
                         std::to_string(body.size()) + "\r\n\r\n" + body;
      ::send(c, resp.data(), resp.size(), MSG_NOSIGNAL);
      ::close(c);
    }
  }
  std::map<std::string, std::string> bodies_;
  std::vector<std::string> stall_;
  std::vector<int> held_;
  int fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace

TEST_CASE("esmd starts against a real Consul, prints the banner and stops on SIGTERM with 0") {
  esm::test::temp_dir dir;
  child_process esmd({esmd_bin()}, {{"CONSUL_HTTP_ADDR", agent().http_address()}}, dir.path() + "/out");
  REQUIRE(esmd.wait_for_output("Log data will now stream in as it occurs:", 20s));
  auto out = esmd.output();
  CHECK(out.find("[INFO]  esmd: Connecting to Consul: address=http://" + agent().http_address()) != std::string::npos);
  CHECK(out.find("esmd v") != std::string::npos);
  CHECK(out.find("Service: \"consul-esm\"") != std::string::npos);
  esmd.signal(SIGTERM);
  check_stop(esmd);
  CHECK(esmd.output().find("Shutting down...") != std::string::npos);
  CHECK(esmd.output().find("unexpected error") == std::string::npos);
}

TEST_CASE("SIGTERM at each stage of startup: exit 0 within the bound, never an error") {
  // A stop in the middle of registration used to surface as Asio's operation_aborted
  // exception ("stopped on an unexpected error", exit 11).
  for (std::string stage : {"Connecting to Consul", "Consul has a leader",
                            "Log data will now stream in as it occurs:", "Trying to obtain leadership",
                            "Obtained leadership"}) {
    INFO("stage: " << stage);
    esm::test::temp_dir dir;
    child_process esmd({esmd_bin()}, {{"CONSUL_HTTP_ADDR", agent().http_address()}}, dir.path() + "/out");
    REQUIRE(esmd.wait_for_output(stage, 20s));
    esmd.signal(SIGTERM);
    check_stop(esmd);
    CHECK(esmd.output().find("unexpected error") == std::string::npos);
  }
}

TEST_CASE("SIGTERM while esmd's registration request hangs: exit 0 within the bound") {
  const std::string leader = "\"127.0.0.1:8300\"";
  canned_consul slow({{"/v1/status/leader", leader},
                      {"/v1/agent/self", R"({"Config": {"Version": "1.8.7", "Datacenter": "dc1"}})"},
                      {"/v1/catalog/service/consul", R"([{"ServiceMeta": {"version": "1.8.7"}}])"}},
                     {"/v1/agent/service/"});
  esm::test::temp_dir dir;
  child_process esmd({esmd_bin()}, {{"CONSUL_HTTP_ADDR", slow.address()}}, dir.path() + "/out");
  REQUIRE(esmd.wait_for_output("Log data will now stream in as it occurs:", 20s));
  std::this_thread::sleep_for(200ms);
  esmd.signal(SIGTERM);
  check_stop(esmd);
  CHECK(esmd.output().find("unexpected error") == std::string::npos);
}

TEST_CASE("esmd runs an external node's HTTP check and writes its status to the catalog") {
  // The target: an HTTP server answering /health with 200 "ok".
  canned_consul target(std::map<std::string, std::string>{{"/health", "ok"}});
  auto port = agent().http_port();
  std::string node = "e2e-web-1";
  std::string url = "http://" + target.address() + "/health";
  register_http_node(node, url);
  esm::test::temp_dir dir;
  std::ofstream(dir.path() + "/e2e.hcl") << "consul_kv_path = \"esm-e2e/\"\n";
  child_process esmd({esmd_bin(), "-config-file", dir.path() + "/e2e.hcl"},
                     {{"CONSUL_HTTP_ADDR", agent().http_address()}}, dir.path() + "/out");
  bool passing = false;
  std::string body;
  for (int i = 0; i < 150 && !passing; ++i) {
    std::this_thread::sleep_for(100ms);
    body = esm::test::http_request("127.0.0.1", port, "GET", "/v1/health/node/" + node).body;
    passing = body.find(R"("Status": "passing")") != std::string::npos;  // Consul pretty-prints
  }
  INFO(body);
  INFO(esmd.output());
  CHECK(passing);
  CHECK(body.find("HTTP GET " + url + ": 200 OK Output: ok") != std::string::npos);
  CHECK(body.find(R"("HTTP": ")" + url) != std::string::npos);  // definition kept
  esmd.signal(SIGTERM);
  check_stop(esmd);
  esm::test::http_request("127.0.0.1", port, "PUT", "/v1/catalog/deregister", R"({"Node":")" + node + "\"}");
}

TEST_CASE("esmd pings an external node that opts in and keeps its externalNodeHealth") {
  // The whole path: the leader puts the node in this instance's Probes, the worker hands it
  // to the prober, the prober pings it (raw ICMP: the tests run as root) and writes the check.
  auto port = agent().http_port();
  std::string node = "e2e-ping-1";
  std::string reg = R"({"Node":")" + node + R"(","Address":"127.0.0.1",)"
                    R"("NodeMeta":{"external-node":"true","external-probe":"true"}})";
  REQUIRE(esm::test::http_request("127.0.0.1", port, "PUT", "/v1/catalog/register", reg).status == 200);
  esm::test::temp_dir dir;
  std::ofstream(dir.path() + "/ping.hcl") << "consul_kv_path = \"esm-ping/\"\nping_type = \"socket\"\n"
                                             "node_probe_interval = \"1s\"\n";
  child_process esmd({esmd_bin(), "-config-file", dir.path() + "/ping.hcl"},
                     {{"CONSUL_HTTP_ADDR", agent().http_address()}}, dir.path() + "/out");
  bool passing = false;
  std::string body;
  for (int i = 0; i < 150 && !passing; ++i) {
    std::this_thread::sleep_for(100ms);
    body = esm::test::http_request("127.0.0.1", port, "GET", "/v1/health/node/" + node).body;
    passing = body.find(R"("CheckID": "externalNodeHealth")") != std::string::npos &&
              body.find(R"("Status": "passing")") != std::string::npos;
  }
  INFO(body);
  INFO(esmd.output());
  CHECK(passing);
  CHECK(body.find(R"("Output": "Node alive or reachable")") != std::string::npos);
  CHECK(body.find(R"("Name": "External Node Status")") != std::string::npos);
  CHECK(esmd.output().find("Cannot ping nodes") == std::string::npos);
  esmd.signal(SIGTERM);
  check_stop(esmd);
  esm::test::http_request("127.0.0.1", port, "PUT", "/v1/catalog/deregister", R"({"Node":")" + node + "\"}");
}

TEST_CASE("SIGTERM writes the status changes still waiting for their batch before esmd exits") {
  // batch_flush_interval = 30 s: the first result waits for its batch far longer than the
  // test runs, so only the flush of the stop sequence can write it. Before, the writer
  // returned at the stop and the change was lost.
  canned_consul target(std::map<std::string, std::string>{{"/health", "ok"}});
  auto port = agent().http_port();
  std::string node = "flush-web-1";
  std::string url = "http://" + target.address() + "/health";
  register_http_node(node, url);
  esm::test::temp_dir dir;
  std::ofstream(dir.path() + "/flush.hcl") << "consul_kv_path = \"esm-flush/\"\nbatch_flush_interval = \"30s\"\n";
  child_process esmd({esmd_bin(), "-config-file", dir.path() + "/flush.hcl"},
                     {{"CONSUL_HTTP_ADDR", agent().http_address()}}, dir.path() + "/out");
  REQUIRE(esmd.wait_for_output("Updated checks", 20s));
  std::this_thread::sleep_for(2500ms);  // the first run falls within the 1 s interval
  auto before = esm::test::http_request("127.0.0.1", port, "GET", "/v1/health/node/" + node).body;
  CHECK(before.find(R"("Status": "critical")") != std::string::npos);  // still waiting
  esmd.signal(SIGTERM);
  check_stop(esmd);
  auto after = esm::test::http_request("127.0.0.1", port, "GET", "/v1/health/node/" + node).body;
  INFO(after);
  INFO(esmd.output());
  CHECK(after.find(R"("Status": "passing")") != std::string::npos);
  CHECK(after.find("HTTP GET " + url + ": 200 OK Output: ok") != std::string::npos);
  CHECK(esmd.output().find("not written") == std::string::npos);
  esm::test::http_request("127.0.0.1", port, "PUT", "/v1/catalog/deregister", R"({"Node":")" + node + "\"}");
}

TEST_CASE("while no Consul answers, esmd retries and still stops on SIGINT with 0") {
  esm::test::temp_dir dir;
  std::ofstream(dir.path() + "/fast.hcl") << "retry_interval = \"200ms\"\n";
  auto nobody = "127.0.0.1:" + std::to_string(esm::test::free_port());
  child_process esmd({esmd_bin(), "-config-file", dir.path() + "/fast.hcl"},
                     {{"CONSUL_HTTP_ADDR", nobody}, {"CONSUL_HTTP_TOKEN", "s3cr3t-token"}},
                     dir.path() + "/out");
  // Two failed attempts at least: it keeps retrying instead of exiting.
  REQUIRE(esmd.wait_for_output("Error getting leader status", 10s));
  std::this_thread::sleep_for(500ms);
  auto out = esmd.output();
  auto first = out.find("Error getting leader status");
  CHECK(out.find("Error getting leader status", first + 1) != std::string::npos);
  esmd.signal(SIGINT);
  check_stop(esmd);
  CHECK(esmd.output().find("s3cr3t") == std::string::npos);  // the token never reaches a log
}

TEST_CASE("SIGHUP reloads the configuration: the log level applies, other keys need a restart") {
  esm::test::temp_dir dir;
  auto file = dir.path() + "/esmd.hcl";
  std::ofstream(file) << "log_level = \"INFO\"\nconsul_service = \"esm-a\"\n";
  child_process esmd({esmd_bin(), "-config-file", file}, {{"CONSUL_HTTP_ADDR", agent().http_address()}},
                     dir.path() + "/out");
  REQUIRE(esmd.wait_for_output("Log data will now stream in as it occurs:", 20s));
  CHECK(esmd.output().find("[DEBUG]") == std::string::npos);
  std::ofstream(file) << "log_level = \"DEBUG\"\nconsul_service = \"esm-b\"\n";
  esmd.signal(SIGHUP);
  REQUIRE(esmd.wait_for_output("Reloaded configuration", 10s));
  auto out = esmd.output();
  CHECK(out.find("applied=log_level") != std::string::npos);
  CHECK(out.find("needs_restart=consul_service") != std::string::npos);

  // A broken file is reported and the running configuration kept.
  std::ofstream(file) << "log_level = \n";
  esmd.signal(SIGHUP);
  REQUIRE(esmd.wait_for_output("keeping the running one", 10s));
  CHECK(esmd.output().find(file) != std::string::npos);  // names the file at fault
  esmd.signal(SIGTERM);
  check_stop(esmd);
}

TEST_CASE("an old or malformed Consul version stops esmd with exit code 11 and a message") {
  const std::string leader = "\"127.0.0.1:8300\"";
  canned_consul old({{"/v1/status/leader", leader},
                     {"/v1/agent/self", R"({"Config": {"Version": "1.3.0", "Datacenter": "dc1"}})"},
                     {"/v1/catalog/service/consul", R"([{"ServiceMeta": {"version": "1.8.7"}}])"}});
  esm::test::temp_dir dir;
  child_process a({esmd_bin()}, {{"CONSUL_HTTP_ADDR", old.address()}}, dir.path() + "/a");
  REQUIRE(a.wait(10s) == 11);
  CHECK(a.output().find("requires Consul >= 1.4.1") != std::string::npos);
  CHECK(a.output().find("1.3.0") != std::string::npos);

  canned_consul odd({{"/v1/status/leader", leader},
                     {"/v1/agent/self", R"({"Config": {"Version": "1.8.7"}})"},
                     {"/v1/catalog/service/consul", R"([{"ServiceMeta": {"version": "banana"}}])"}});
  child_process b({esmd_bin()}, {{"CONSUL_HTTP_ADDR", odd.address()}}, dir.path() + "/b");
  REQUIRE(b.wait(10s) == 11);
  CHECK(b.output().find("\"banana\" (not a version)") != std::string::npos);
}

TEST_CASE("a configuration error exits 11 naming the file") {
  esm::test::temp_dir dir;
  auto file = dir.path() + "/bad.hcl";
  std::ofstream(file) << "node_probe_interval = \"500ms\"\n";
  child_process esmd({esmd_bin(), "-config-file", file}, {}, dir.path() + "/out");
  REQUIRE(esmd.wait(10s) == 11);
  CHECK(esmd.output().find("node_probe_interval cannot be lower than 1 second") != std::string::npos);
  CHECK(esmd.output().find("bad.hcl") != std::string::npos);
}

namespace {

// Two esmd processes on one Consul; returns the index of the one that logged leadership.
int wait_for_one_leader(std::vector<std::unique_ptr<child_process>>& p, std::chrono::milliseconds timeout) {
  auto end = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < end) {
    for (std::size_t i = 0; i < p.size(); ++i)
      if (p[i] && p[i]->output().find("Obtained leadership") != std::string::npos) return int(i);
    std::this_thread::sleep_for(20ms);
  }
  return -1;
}

std::vector<std::unique_ptr<child_process>> start_pair(const esm::test::temp_dir& dir, const std::string& kv) {
  std::ofstream(dir.path() + "/fast.hcl") << "session_ttl = \"10s\"\nlock_delay = \"1s\"\n"
                                          << "consul_kv_path = \"" << kv << "\"\n";
  std::vector<std::unique_ptr<child_process>> p;
  for (int i = 0; i < 2; ++i)
    p.push_back(std::make_unique<child_process>(
        std::vector<std::string>{esmd_bin(), "-config-file", dir.path() + "/fast.hcl"},
        std::map<std::string, std::string>{{"CONSUL_HTTP_ADDR", agent().http_address()}},
        dir.path() + "/out" + std::to_string(i)));
  return p;
}

}  // namespace

TEST_CASE("two esmd processes: exactly one leads; after SIGTERM of the leader the other leads within 3 s") {
  esm::test::temp_dir dir;
  auto p = start_pair(dir, "esm-term/");
  int leader = wait_for_one_leader(p, 20s);
  REQUIRE(leader >= 0);
  std::this_thread::sleep_for(1s);
  int other = 1 - leader;
  CHECK(p[std::size_t(other)]->output().find("Obtained leadership") == std::string::npos);
  auto t0 = std::chrono::steady_clock::now();
  p[std::size_t(leader)]->signal(SIGTERM);
  check_stop(*p[std::size_t(leader)]);
  p[std::size_t(leader)].reset();
  REQUIRE(wait_for_one_leader(p, 10s) == other);
  auto failover = std::chrono::steady_clock::now() - t0;
  MESSAGE("failover after SIGTERM: " << std::chrono::duration_cast<std::chrono::milliseconds>(failover).count() << " ms");
  CHECK(failover < 3s);
  p[std::size_t(other)]->signal(SIGTERM);
  check_stop(*p[std::size_t(other)]);
}

TEST_CASE("two esmd processes: after kill -9 of the leader the other leads once Consul expires its session") {
  esm::test::temp_dir dir;
  auto p = start_pair(dir, "esm-kill/");
  int leader = wait_for_one_leader(p, 20s);
  REQUIRE(leader >= 0);
  int other = 1 - leader;
  auto t0 = std::chrono::steady_clock::now();
  p[std::size_t(leader)]->signal(SIGKILL);
  p[std::size_t(leader)]->wait(5s);
  p[std::size_t(leader)].reset();
  // Consul invalidates a TTL session between TTL and 2 x TTL after its last renewal, then
  // holds the key for lock_delay: at most 2 x 10 s + 1 s, plus a margin for a loaded machine.
  REQUIRE(wait_for_one_leader(p, 30s) == other);
  auto failover = std::chrono::steady_clock::now() - t0;
  MESSAGE("failover after kill -9: " << std::chrono::duration_cast<std::chrono::milliseconds>(failover).count() << " ms");
  CHECK(failover < 26s);
  CHECK(p[std::size_t(other)]->output().find("already held") == std::string::npos);
  p[std::size_t(other)]->signal(SIGTERM);
  check_stop(*p[std::size_t(other)]);
}

namespace {

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// Polls GET target on 127.0.0.1:port until `ok` accepts the answer; the last answer.
esm::test::simple_response poll(int port, const std::string& target, std::chrono::milliseconds timeout,
                                const std::function<bool(const esm::test::simple_response&)>& ok) {
  esm::test::simple_response r;
  auto end = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < end) {
    r = esm::test::http_request("127.0.0.1", port, "GET", target);
    if (ok(r)) break;
    std::this_thread::sleep_for(100ms);
  }
  return r;
}

}  // namespace

TEST_CASE("admin endpoints through a leader's life: live at once, ready with its share, not ready while Consul is down") {
  esm::test::consul_dev_agent local;
  auto consul_port = local.http_port();
  local.process().stop();  // esmd starts while Consul is down: liveness must answer anyway
  int admin_port = esm::test::free_port();
  esm::test::temp_dir dir;
  std::ofstream(dir.path() + "/admin.hcl") << "client_address = \"127.0.0.1:" << admin_port << "\"\n"
                                           << "consul_kv_path = \"esm-admin/\"\nretry_interval = \"1s\"\n"
                                           << "telemetry { prometheus_retention_time = \"1m\" }\n";
  child_process esmd({esmd_bin(), "-config-file", dir.path() + "/admin.hcl"},
                     {{"CONSUL_HTTP_ADDR", local.http_address()}}, dir.path() + "/out");
  auto live = poll(admin_port, "/healthz", 10s, [](auto& r) { return r.status == 200; });
  INFO(esmd.output());
  CHECK(live.status == 200);
  auto not_ready = esm::test::http_request("127.0.0.1", admin_port, "GET", "/readyz");
  CHECK(not_ready.status == 503);
  CHECK_FALSE(not_ready.body.empty());  // the reason

  local.process().start();
  REQUIRE_FALSE(local.process().wait_for_leader(20s).empty());
  auto ready = poll(admin_port, "/readyz", 30s, [](auto& r) { return r.status == 200; });
  CHECK(ready.status == 200);
  auto status = poll(admin_port, "/v1/status", 20s, [](auto& r) {
    return r.status == 200 && r.body.find("\"leader\":true") != std::string::npos;
  });
  CHECK(status.body.find("\"leader\":true") != std::string::npos);
  CHECK(status.body.find("consul-esm:") != std::string::npos);  // the instance id
  auto metrics = esm::test::http_request("127.0.0.1", admin_port, "GET", "/metrics");
  CHECK(metrics.status == 200);
  CHECK(metrics.body.find("esm_agent_isLeader 1") != std::string::npos);
  auto page = esm::test::http_request("127.0.0.1", admin_port, "GET", "/");
  CHECK(page.status == 200);
  CHECK(page.body.find("<html") != std::string::npos);

  // A real Prometheus scrapes esmd; PromQL sees the leader.
  int prom_port = esm::test::free_port();
  std::ofstream(dir.path() + "/prometheus.yml")
      << "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: esmd\n    static_configs:\n"
      << "      - targets: ['127.0.0.1:" << admin_port << "']\n";
  child_process prom({"/usr/bin/prometheus", "--config.file=" + dir.path() + "/prometheus.yml",
                      "--storage.tsdb.path=" + dir.path() + "/tsdb", "--web.listen-address=127.0.0.1:" + std::to_string(prom_port)},
                     {}, dir.path() + "/prometheus.out");
  auto query = poll(prom_port, "/api/v1/query?query=esm_agent_isLeader", 40s, [](auto& r) {
    return r.status == 200 && r.body.find("\"value\":[") != std::string::npos;
  });
  INFO(read_text(dir.path() + "/prometheus.out"));
  CHECK(query.body.find("\"esm_agent_isLeader\"") != std::string::npos);
  CHECK(query.body.find(",\"1\"]") != std::string::npos);
  prom.signal(SIGTERM);
  CHECK(prom.wait(10s).has_value());

  // Consul stops: not ready (the reason names Consul); back: ready again.
  local.process().stop();
  auto down = poll(admin_port, "/readyz", 40s, [](auto& r) { return r.status == 503; });
  CHECK(down.status == 503);
  CHECK(esm::test::http_request("127.0.0.1", admin_port, "GET", "/healthz").status == 200);
  local.process().start();
  REQUIRE_FALSE(local.process().wait_for_leader(20s).empty());
  auto again = poll(admin_port, "/readyz", 60s, [](auto& r) { return r.status == 200; });
  CHECK(again.status == 200);
  (void)consul_port;
  esmd.signal(SIGTERM);
  check_stop(esmd);
}

TEST_CASE("an admin address that cannot be bound stops esmd with exit 11 naming it") {
  // Port 1 on 127.0.0.1 is privileged but we run as root: take a port someone holds instead.
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  REQUIRE(fd >= 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  REQUIRE(::listen(fd, 1) == 0);
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  auto held = "127.0.0.1:" + std::to_string(ntohs(a.sin_port));
  esm::test::temp_dir dir;
  std::ofstream(dir.path() + "/bind.hcl") << "client_address = \"" << held << "\"\n";
  child_process esmd({esmd_bin(), "-config-file", dir.path() + "/bind.hcl"},
                     {{"CONSUL_HTTP_ADDR", agent().http_address()}}, dir.path() + "/out");
  auto code = esmd.wait(10s);
  ::close(fd);
  REQUIRE(code.has_value());
  CHECK(*code == 11);
  CHECK(esmd.output().find(held) != std::string::npos);
}

namespace {

// The service manager's end of NOTIFY_SOCKET: a datagram socket bound to a path; every
// message with the time it arrived.
struct notify_listener {
  int fd = -1;
  std::string path;
  struct message {
    std::string text;
    std::chrono::steady_clock::time_point at;
  };
  std::vector<message> got;
  explicit notify_listener(std::string p) : path(std::move(p)) {
    fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    REQUIRE(fd >= 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    REQUIRE(path.size() < sizeof a.sun_path);
    std::memcpy(a.sun_path, path.c_str(), path.size() + 1);
    REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    timeval tv{0, 100'000};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  }
  ~notify_listener() {
    ::close(fd);
    ::unlink(path.c_str());
  }
  // Receives until a message contains `text` (true) or the time runs out (false).
  bool wait_for(const std::string& text, std::chrono::milliseconds timeout) {
    for (auto& m : got)
      if (m.text.find(text) != std::string::npos) return true;
    auto end = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < end) {
      char buf[4096];
      auto n = ::recv(fd, buf, sizeof buf, 0);
      if (n <= 0) continue;
      got.push_back({std::string(buf, static_cast<std::size_t>(n)), std::chrono::steady_clock::now()});
      if (got.back().text.find(text) != std::string::npos) return true;
    }
    return false;
  }
  // Receives until `n` messages contain `text`.
  bool wait_count(const std::string& text, std::size_t n, std::chrono::milliseconds timeout) {
    auto end = std::chrono::steady_clock::now() + timeout;
    while (count(text) < n && std::chrono::steady_clock::now() < end) {
      char buf[4096];
      auto got_n = ::recv(fd, buf, sizeof buf, 0);
      if (got_n > 0) got.push_back({std::string(buf, static_cast<std::size_t>(got_n)), std::chrono::steady_clock::now()});
    }
    return count(text) >= n;
  }
  std::size_t count(const std::string& text) const {
    std::size_t n = 0;
    for (auto& m : got) n += m.text.find(text) != std::string::npos;
    return n;
  }
  std::string all() const {
    std::string s;
    for (auto& m : got) s += "[" + m.text + "] ";
    return s;
  }
};

}  // namespace

TEST_CASE("under a service manager: READY once registered, WATCHDOG pings, RELOADING on SIGHUP, STOPPING at SIGTERM") {
  esm::test::temp_dir dir;
  notify_listener manager(dir.path() + "/notify.sock");
  int admin_port = esm::test::free_port();
  auto file = dir.path() + "/notify.hcl";
  std::ofstream(file) << "client_address = \"127.0.0.1:" << admin_port << "\"\nconsul_kv_path = \"esm-notify/\"\n"
                      << "consul_service = \"esm-notify\"\n";
  child_process esmd({esmd_bin(), "-config-file", file},
                     {{"CONSUL_HTTP_ADDR", agent().http_address()}, {"NOTIFY_SOCKET", manager.path},
                      {"WATCHDOG_USEC", "400000"}},
                     dir.path() + "/out");
  INFO(esmd.output());
  REQUIRE(manager.wait_for("READY=1", 30s));
  INFO(manager.all());
  // READY came after the registration: the instance is in the agent's services already.
  auto services = esm::test::http_request("127.0.0.1", agent().http_port(), "GET", "/v1/agent/services");
  CHECK(services.body.find("\"esm-notify:") != std::string::npos);
  CHECK(manager.count("STATUS=Registered as esm-notify:") == 1);
  // Pings every WATCHDOG_USEC / 2 = 200 ms: at least 5 within 2 s (a loaded machine may delay some).
  auto before = manager.count("WATCHDOG=1");
  CHECK(manager.wait_count("WATCHDOG=1", before + 5, 2s));

  // The container health check: 0 while the admin server answers.
  child_process probe({esmd_bin(), "-healthcheck", "-config-file", file}, {}, dir.path() + "/probe.out");
  auto probe_code = probe.wait(10s);
  REQUIRE(probe_code.has_value());
  CHECK_MESSAGE(*probe_code == 0, probe.output());

  auto ready_before = manager.count("READY=1");
  esmd.signal(SIGHUP);
  REQUIRE(manager.wait_for("RELOADING=1", 10s));
  CHECK(manager.wait_count("READY=1", ready_before + 1, 5s));  // ready again after the reload

  esmd.signal(SIGTERM);
  CHECK(manager.wait_for("STOPPING=1", 5s));
  check_stop(esmd);
  CHECK(manager.count("STOPPING=1") == 1);

  // Nothing listens any more: 1, with the reason.
  child_process after({esmd_bin(), "-healthcheck", "-config-file", file}, {}, dir.path() + "/after.out");
  auto after_code = after.wait(10s);
  REQUIRE(after_code.has_value());
  CHECK(*after_code == 1);
  CHECK(after.output().find("no answer from http://127.0.0.1:" + std::to_string(admin_port) + "/healthz") !=
        std::string::npos);
}
