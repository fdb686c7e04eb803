// Network namespaces for tests that send real ICMP (root only): traffic stays on loopback or
// inside namespaces the test made, and everything made is removed by the destructors.
//
//  - `scoped_netns`: `ip netns add esmd-<tag>-<pid>` with `lo` up; `exec` runs a shell command
//    inside it (through `ip netns exec`); deleted on destruction.
//  - `enter_netns`: moves the calling thread into a named namespace and back on destruction,
//    so a test opens sockets there and uses them from its own thread afterwards (a socket
//    keeps the namespace it was made in).
//  - `silent_host`: a veth pair whose host end has an address of 198.18.0.0/15 (a /30 chosen
//    from the pid, so parallel test processes do not collide) and whose other end, in a
//    scoped_netns, has the peer address and ignores echo requests: pings to address() are
//    delivered and never answered, and nothing leaves this machine.
//
// Setup failures throw std::runtime_error naming the command and its output. Leftovers of test
// processes that were killed before their destructors ran are swept by the next one.
#pragma once

#include <dirent.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <stdexcept>
#include <string>
#include <vector>

namespace esm::test {

struct command_result {
  int status = -1;  // the exit code, or -1 when it did not exit normally
  std::string output;  // stdout and stderr
};

// Runs `cmd` through /bin/sh (output bounded to 1 MB).
inline command_result run_shell(const std::string& cmd) {
  command_result r;
  FILE* p = ::popen((cmd + " 2>&1").c_str(), "r");
  if (!p) throw std::runtime_error("cannot run: " + cmd);
  std::array<char, 4096> buf{};
  std::size_t n;
  while ((n = std::fread(buf.data(), 1, buf.size(), p)) > 0)
    if (r.output.size() < (1 << 20)) r.output.append(buf.data(), n);
  int st = ::pclose(p);
  r.status = (st != -1 && WIFEXITED(st)) ? WEXITSTATUS(st) : -1;
  return r;
}

// Runs `cmd` and throws with its output unless it exits 0.
inline std::string checked_shell(const std::string& cmd) {
  auto r = run_shell(cmd);
  if (r.status != 0)
    throw std::runtime_error("command failed (" + std::to_string(r.status) + "): " + cmd + "\n" + r.output);
  return r.output;
}

// Removes what test processes that died before their destructors ran (a SIGKILL, a crash)
// left behind: namespaces `esmd-<tag>-<pid>` and host links `esm<pid>x<n>h` whose pid is gone.
// Once per process.
inline void sweep_stale_test_netns() {
  static bool done = false;
  if (done) return;
  done = true;
  auto dead = [](const std::string& digits) {
    if (digits.empty() || digits.size() > 9 || digits.find_first_not_of("0123456789") != std::string::npos) return false;
    return ::kill(static_cast<pid_t>(std::stol(digits)), 0) != 0 && errno == ESRCH;
  };
  if (DIR* d = ::opendir("/run/netns")) {
    std::vector<std::string> stale;
    while (dirent* e = ::readdir(d)) {
      std::string n = e->d_name;
      auto dash = n.rfind('-');
      if (n.rfind("esmd-", 0) == 0 && dash != std::string::npos && dash > 4 && dead(n.substr(dash + 1)))
        stale.push_back(n);
    }
    ::closedir(d);
    for (auto& n : stale) run_shell("ip netns del " + n);
  }
  if (DIR* d = ::opendir("/sys/class/net")) {
    std::vector<std::string> stale;
    while (dirent* e = ::readdir(d)) {
      std::string n = e->d_name;
      auto x = n.find('x');
      if (n.rfind("esm", 0) == 0 && n.size() > 4 && n.back() == 'h' && x != std::string::npos && dead(n.substr(3, x - 3)))
        stale.push_back(n);
    }
    ::closedir(d);
    for (auto& n : stale) run_shell("ip link del " + n);
  }
}

class scoped_netns {
 public:
  explicit scoped_netns(const std::string& tag) : name_("esmd-" + tag + "-" + std::to_string(::getpid())) {
    sweep_stale_test_netns();
    run_shell("ip netns del " + name_);  // a leftover of an earlier process with this pid
    checked_shell("ip netns add " + name_);
    try {
      exec("ip link set lo up");
    } catch (...) {
      run_shell("ip netns del " + name_);
      throw;
    }
  }
  ~scoped_netns() {
    auto r = run_shell("ip netns del " + name_);
    if (r.status != 0) std::fprintf(stderr, "cannot delete netns %s: %s\n", name_.c_str(), r.output.c_str());
  }
  scoped_netns(const scoped_netns&) = delete;
  scoped_netns& operator=(const scoped_netns&) = delete;

  const std::string& name() const { return name_; }
  // Runs a shell command line inside the namespace; throws unless it exits 0.
  std::string exec(const std::string& cmd) const { return checked_shell("ip netns exec " + name_ + " " + cmd); }
  command_result try_exec(const std::string& cmd) const { return run_shell("ip netns exec " + name_ + " " + cmd); }

 private:
  std::string name_;
};

class enter_netns {
 public:
  explicit enter_netns(const std::string& name) {
    original_ = ::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
    if (original_ < 0) throw std::runtime_error("cannot open /proc/thread-self/ns/net");
    int target = ::open(("/run/netns/" + name).c_str(), O_RDONLY | O_CLOEXEC);
    if (target < 0) {
      ::close(original_);
      throw std::runtime_error("cannot open /run/netns/" + name);
    }
    int rc = ::setns(target, CLONE_NEWNET);
    ::close(target);
    if (rc != 0) {
      ::close(original_);
      throw std::runtime_error("setns into " + name + " failed");
    }
  }
  ~enter_netns() {
    if (::setns(original_, CLONE_NEWNET) != 0) std::fputs("cannot return to the original netns\n", stderr);
    ::close(original_);
  }
  enter_netns(const enter_netns&) = delete;
  enter_netns& operator=(const enter_netns&) = delete;

 private:
  int original_ = -1;
};

class silent_host {
 public:
  // `tag` names the namespace (esmd-<tag><n>-<pid>), for a reader of `ip netns list`.
  explicit silent_host(const std::string& tag = "silent") : ns_(tag + std::to_string(next_index())) {
    // 32768 /30s in 198.18.0.0/15: start from the pid's, skip any the host already uses.
    unsigned first = (static_cast<unsigned>(::getpid()) % 4096u) * 8u + serial_ % 8u;
    for (unsigned attempt = 0; attempt < 64; ++attempt) {
      std::uint32_t base = (198u << 24) | (18u << 16) | (((first + attempt) % 32768u) * 4u);
      host_address_ = dotted(base + 1);
      peer_address_ = dotted(base + 2);
      if (run_shell("ip -o -4 addr show to " + dotted(base) + "/30").output.empty()) break;
    }
    std::string stem = "esm" + std::to_string(::getpid()) + "x" + std::to_string(serial_ % 100);  // <= 15 chars
    host_if_ = stem + "h";
    std::string peer_if = stem + "p";
    run_shell("ip link del " + host_if_);  // a leftover of an earlier process with this pid
    try {
      checked_shell("ip link add " + host_if_ + " type veth peer name " + peer_if + " netns " + ns_.name());
      checked_shell("ip addr add " + host_address_ + "/30 dev " + host_if_);
      checked_shell("ip link set " + host_if_ + " up");
      ns_.exec("sysctl -qw net.ipv4.icmp_echo_ignore_all=1");
      ns_.exec("ip addr add " + peer_address_ + "/30 dev " + peer_if);
      ns_.exec("ip link set " + peer_if + " up");
    } catch (...) {
      run_shell("ip link del " + host_if_);
      throw;
    }
  }
  ~silent_host() {
    auto r = run_shell("ip link del " + host_if_);
    if (r.status != 0) std::fprintf(stderr, "cannot delete %s: %s\n", host_if_.c_str(), r.output.c_str());
  }
  silent_host(const silent_host&) = delete;
  silent_host& operator=(const silent_host&) = delete;

  // The address that never answers, and the host's own on that link.
  const std::string& address() const { return peer_address_; }
  const std::string& host_address() const { return host_address_; }
  const std::string& host_interface() const { return host_if_; }
  const scoped_netns& netns() const { return ns_; }

 private:
  static std::string dotted(std::uint32_t a) {
    return std::to_string(a >> 24) + "." + std::to_string((a >> 16) & 255) + "." + std::to_string((a >> 8) & 255) +
           "." + std::to_string(a & 255);
  }
  unsigned next_index() {
    static unsigned counter = 0;
    serial_ = counter++;
    return serial_;
  }
  unsigned serial_ = 0;
  scoped_netns ns_;
  std::string host_address_, peer_address_, host_if_;
};

}  // namespace esm::test
