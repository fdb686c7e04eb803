#include "consul_fixture.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <stdexcept>
#include <thread>

extern char** environ;

namespace esm::test {

namespace {

std::string run_capture(const std::string& cmd) {
  std::string out;
  FILE* p = ::popen(cmd.c_str(), "r");
  if (!p) return out;
  char buf[512];
  while (auto n = std::fread(buf, 1, sizeof buf, p)) out.append(buf, n);
  ::pclose(p);
  while (!out.empty() && (out.back() == '\n' || out.back() == '\r')) out.pop_back();
  return out;
}

bool wait_pid(pid_t pid, std::chrono::milliseconds timeout) {
  auto end = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < end) {
    int status = 0;
    pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid || (r < 0 && errno == ECHILD)) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return false;
}

}  // namespace

std::string consul_binary() {
  static std::string path = [] {
    if (const char* env = std::getenv("CONSUL_BIN"); env && *env) return std::string(env);
    const char* root = std::getenv("ESMD_SOURCE_ROOT");
    std::string script = std::string(root ? root : ".") + "/deploy/dev/get-consul";
    auto p = run_capture("GET_CONSUL_QUIET=1 '" + script + "'");
    if (p.empty()) throw std::runtime_error("no consul binary: set CONSUL_BIN or run " + script);
    return p;
  }();
  return path;
}

int free_port(const std::string& ip) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) throw std::runtime_error("socket() failed");
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = 0;
  ::inet_pton(AF_INET, ip.c_str(), &a.sin_addr);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    throw std::runtime_error("bind() failed on " + ip);
  }
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return ntohs(a.sin_port);
}

simple_response http_request(const std::string& ip, int port, const std::string& method,
                             const std::string& target, const std::string& body,
                             std::chrono::milliseconds timeout) {
  simple_response out;
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  if (fd < 0) return out;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(std::uint16_t(port));
  ::inet_pton(AF_INET, ip.c_str(), &a.sin_addr);
  auto deadline = std::chrono::steady_clock::now() + timeout;
  auto remaining = [&] {
    auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()).count();
    return int(ms > 0 ? ms : 0);
  };
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 && errno != EINPROGRESS) {
    ::close(fd);
    return out;
  }
  pollfd p{fd, POLLOUT, 0};
  if (::poll(&p, 1, remaining()) != 1) {
    ::close(fd);
    return out;
  }
  int err = 0;
  socklen_t len = sizeof err;
  ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
  if (err != 0) {
    ::close(fd);
    return out;
  }
  std::string req = method + " " + target + " HTTP/1.0\r\nHost: " + ip + "\r\nContent-Length: " +
                    std::to_string(body.size()) + "\r\n\r\n" + body;
  std::size_t sent = 0;
  while (sent < req.size()) {
    p = {fd, POLLOUT, 0};
    if (::poll(&p, 1, remaining()) != 1) break;
    auto n = ::send(fd, req.data() + sent, req.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) break;
    sent += std::size_t(n);
  }
  std::string raw;
  for (;;) {
    p = {fd, POLLIN, 0};
    if (::poll(&p, 1, remaining()) != 1) break;
    char buf[4096];
    auto n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    raw.append(buf, std::size_t(n));
  }
  ::close(fd);
  if (raw.rfind("HTTP/", 0) != 0) return out;
  out.status = std::atoi(raw.c_str() + raw.find(' ') + 1);
  auto hdr_end = raw.find("\r\n\r\n");
  if (hdr_end != std::string::npos) out.body = raw.substr(hdr_end + 4);
  return out;
}

temp_dir::temp_dir() {
  std::string tmpl = (std::filesystem::temp_directory_path() / "esmd-test-XXXXXX").string();
  if (!::mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
  path_ = tmpl;
}

temp_dir::~temp_dir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

consul_process::consul_process(std::string ip, agent_ports ports, std::vector<std::string> args,
                               std::string log_path)
    : ip_(std::move(ip)), ports_(ports), args_(std::move(args)), log_path_(std::move(log_path)) {}

consul_process::~consul_process() {
  if (pid_ > 0) stop(std::chrono::seconds(3));
}

void consul_process::start() {
  if (pid_ > 0) return;
  std::string bin = consul_binary();
  std::vector<std::string> argv_s = {bin, "agent"};
  argv_s.insert(argv_s.end(), args_.begin(), args_.end());
  std::vector<char*> argv;
  for (auto& a : argv_s) argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, log_path_.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  posix_spawn_file_actions_adddup2(&fa, 1, 2);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  pid_t pid = -1;
  int rc = ::posix_spawn(&pid, bin.c_str(), &fa, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) throw std::runtime_error("cannot start " + bin + ": " + std::strerror(rc));
  pid_ = pid;
}

void consul_process::stop(std::chrono::milliseconds grace) {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGTERM);
  if (!wait_pid(pid_, grace)) {
    ::kill(pid_, SIGKILL);
    wait_pid(pid_, std::chrono::seconds(5));
  }
  pid_ = -1;
}

void consul_process::kill9() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGKILL);
  wait_pid(pid_, std::chrono::seconds(5));
  pid_ = -1;
}

std::string consul_process::wait_for_leader(std::chrono::milliseconds timeout) const {
  auto end = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < end) {
    auto r = http_request(ip_, ports_.http, "GET", "/v1/status/leader", {}, std::chrono::seconds(1));
    std::string leader = r.body;
    while (!leader.empty() && (leader.back() == '\n' || leader.back() == '"')) leader.pop_back();
    if (!leader.empty() && leader.front() == '"') leader.erase(0, 1);
    if (r.status == 200 && !leader.empty()) return leader;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return {};
}

namespace {

agent_ports pick_ports(const std::string& ip) {
  return {free_port(ip), free_port(ip), free_port(ip), free_port(ip)};
}

std::vector<std::string> port_args(const agent_ports& p) {
  return {"-http-port=" + std::to_string(p.http), "-server-port=" + std::to_string(p.server),
          "-serf-lan-port=" + std::to_string(p.serf_lan),
          "-serf-wan-port=" + std::to_string(p.serf_wan), "-dns-port=-1", "-grpc-port=-1"};
}

}  // namespace

consul_dev_agent::consul_dev_agent(std::vector<std::string> extra) {
  // A port picked free can be taken before consul binds it: try a few sets.
  for (int attempt = 0; attempt < 3; ++attempt) {
    auto ports = pick_ports("127.0.0.1");
    std::vector<std::string> args = {"-dev", "-node=esmd-test", "-bind=127.0.0.1",
                                     "-client=127.0.0.1", "-log-level=warn"};
    for (auto& a : port_args(ports)) args.push_back(a);
    args.insert(args.end(), extra.begin(), extra.end());
    proc_ = std::make_unique<consul_process>("127.0.0.1", ports, args, dir_.path() + "/consul.log");
    proc_->start();
    if (!proc_->wait_for_leader(std::chrono::seconds(20)).empty()) return;
    proc_->stop();
  }
  throw std::runtime_error("consul dev agent did not elect itself (log in " + dir_.path() + ")");
}

consul_dev_agent::~consul_dev_agent() { proc_->stop(); }

void consul_dev_agent::restart() {
  proc_->stop();
  proc_->start();
  if (proc_->wait_for_leader(std::chrono::seconds(20)).empty())
    throw std::runtime_error("consul dev agent did not come back after restart");
}

consul_cluster::consul_cluster() {
  const std::vector<std::string> ips = {"127.0.0.2", "127.0.0.3", "127.0.0.4"};
  // Same ports on every address, as in a real cluster; free on each of them.
  agent_ports ports;
  for (;;) {
    ports = pick_ports(ips[0]);
    bool ok = true;
    for (auto& ip : ips) {
      for (int port : {ports.http, ports.server, ports.serf_lan, ports.serf_wan}) {
        int fd = ::socket(AF_INET, SOCK_STREAM, 0);
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_port = htons(std::uint16_t(port));
        ::inet_pton(AF_INET, ip.c_str(), &a.sin_addr);
        ok = ok && ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
        ::close(fd);
      }
    }
    if (ok) break;
  }
  for (std::size_t i = 0; i < ips.size(); ++i) {
    auto data = dir_.path() + "/s" + std::to_string(i);
    std::filesystem::create_directories(data);
    std::vector<std::string> args = {"-server", "-bootstrap-expect=3", "-node=s" + std::to_string(i),
                                     "-bind=" + ips[i], "-advertise=" + ips[i], "-client=" + ips[i],
                                     "-data-dir=" + data, "-retry-interval=1s",
                                     "-disable-host-node-id", "-log-level=warn",
                                     "-hcl=performance{raft_multiplier=1}"};
    for (auto& a : port_args(ports)) args.push_back(a);
    for (auto& other : ips) args.push_back("-retry-join=" + other + ":" + std::to_string(ports.serf_lan));
    servers_.push_back(std::make_unique<consul_process>(ips[i], ports, args,
                                                        dir_.path() + "/s" + std::to_string(i) + ".log"));
    servers_.back()->start();
  }
  if (wait_for_leader(std::chrono::seconds(60)).empty())
    throw std::runtime_error("consul cluster elected no leader (logs in " + dir_.path() + ")");
}

consul_cluster::~consul_cluster() {
  for (auto& s : servers_) s->stop();
}

int consul_cluster::leader_index() const {
  for (auto& s : servers_) {
    if (!s->running()) continue;
    auto r = http_request(s->ip(), s->ports().http, "GET", "/v1/status/leader", {}, std::chrono::seconds(1));
    if (r.status != 200 || r.body.size() <= 2) continue;
    // Right after a kill the others still name the dead leader for a while: not a leader.
    for (std::size_t i = 0; i < servers_.size(); ++i)
      if (servers_[i]->running() && r.body.find("\"" + servers_[i]->ip() + ":") == 0) return int(i);
  }
  return -1;
}

std::string consul_cluster::wait_for_leader(std::chrono::milliseconds timeout) const {
  auto end = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < end) {
    if (int i = leader_index(); i >= 0) return servers_[std::size_t(i)]->ip();
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return {};
}

}  // namespace esm::test
