// Real Consul processes for tests: a dev agent on free loopback ports, and a three-server
// cluster on 127.0.0.2-4 for fault tests. The binary comes from $CONSUL_BIN or the project's
// deploy/dev/get-consul script. Every process is stopped by its own pid.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include <sys/types.h>

namespace esm::test {

// Path of a working consul binary (runs get-consul once if $CONSUL_BIN is unset).
std::string consul_binary();

// A TCP port that was free on `ip` a moment ago.
int free_port(const std::string& ip = "127.0.0.1");

// A minimal blocking HTTP/1.0 client for fixtures (status, body); status 0 on failure.
struct simple_response {
  int status = 0;
  std::string body;
};
simple_response http_request(const std::string& ip, int port, const std::string& method,
                             const std::string& target, const std::string& body = {},
                             std::chrono::milliseconds timeout = std::chrono::seconds(2));

// A temporary directory removed with everything in it on destruction.
class temp_dir {
 public:
  temp_dir();
  ~temp_dir();
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

struct agent_ports {
  int http = 0, server = 0, serf_lan = 0, serf_wan = 0;
};

// One consul process.
class consul_process {
 public:
  consul_process(std::string ip, agent_ports ports, std::vector<std::string> args,
                 std::string log_path);
  ~consul_process();
  consul_process(const consul_process&) = delete;
  consul_process& operator=(const consul_process&) = delete;

  void start();
  // SIGTERM, then SIGKILL after `grace`; waits for the pid.
  void stop(std::chrono::milliseconds grace = std::chrono::seconds(5));
  void kill9();
  bool running() const { return pid_ > 0; }
  pid_t pid() const { return pid_; }
  const std::string& ip() const { return ip_; }
  const agent_ports& ports() const { return ports_; }
  std::string http_address() const { return ip_ + ":" + std::to_string(ports_.http); }
  // Returns the leader address once /v1/status/leader names one, "" on timeout.
  std::string wait_for_leader(std::chrono::milliseconds timeout = std::chrono::seconds(30)) const;

 private:
  std::string ip_;
  agent_ports ports_;
  std::vector<std::string> args_;
  std::string log_path_;
  pid_t pid_ = -1;
};

// `consul agent -dev` on 127.0.0.1 with free ports, started and led on construction.
class consul_dev_agent {
 public:
  // `extra` is appended to the agent's arguments (e.g. "-hcl=...").
  explicit consul_dev_agent(std::vector<std::string> extra = {});
  ~consul_dev_agent();
  consul_process& process() { return *proc_; }
  std::string http_address() const { return proc_->http_address(); }
  int http_port() const { return proc_->ports().http; }
  // Stops the agent and starts it again on the same ports (a dev agent forgets its state).
  void restart();

 private:
  temp_dir dir_;
  std::unique_ptr<consul_process> proc_;
};

// Three servers on 127.0.0.2, .3, .4 with raft_multiplier=1 (a new leader about 3 s after
// the old one dies).
class consul_cluster {
 public:
  consul_cluster();
  ~consul_cluster();
  consul_process& server(std::size_t i) { return *servers_.at(i); }
  std::size_t size() const { return servers_.size(); }
  // Index of the current leader by address, or -1.
  int leader_index() const;
  std::string wait_for_leader(std::chrono::milliseconds timeout = std::chrono::seconds(30)) const;

 private:
  temp_dir dir_;
  std::vector<std::unique_ptr<consul_process>> servers_;
};

}  // namespace esm::test
