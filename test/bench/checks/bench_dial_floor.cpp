// Benchmark (prints figures, not a test): the kernel's floor under a plain TCP check, the
// system calls of one dial and nothing else, in the pattern esmd's engine issues them.
//
//   bench_dial_floor [DIALS [BURST...]]      (default 12000 dials; bursts 0 40 4)
//
// Each dial is what esmd's TCP check does (lib/esm/probe/net.cpp start_connect): socket
// (non-blocking), connect, poll with no timeout, getsockopt(SO_ERROR), close; in a loop with no
// coroutine, no allocation and no result. BURST 0 dials back to back (a pause of 1 ms every
// 2000 dials); BURST K dials K at a time with 20 ms between bursts, as the engine's schedule
// does with its 20 ms slack (K = 40 at 2000 runs/s, 4 at 200 runs/s). The peer is a child
// process accepting and closing on 127.0.0.1..127.0.0.8 (one port; eight addresses so that
// ephemeral ports do not run out); its CPU is not counted. Prints the parent's CPU per 1000
// dials (getrusage RUSAGE_SELF, user and system), two rounds per burst size: compare it with
// bench_daemon_cpu.py's esmd figure for TCP at the same rate. Loopback only; the child is
// stopped by its pid.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstdint>
#include <cstring>
#include <vector>

namespace {

constexpr int addresses = 8;

in_addr_t address(int i) { return htonl(0x7f000001u + static_cast<unsigned>(i % addresses)); }

double micros(const timeval& t) { return t.tv_sec * 1e6 + t.tv_usec; }

// The child: accepts on every address and closes at once, until killed.
[[noreturn]] void serve(const std::vector<int>& listeners) {
  std::vector<pollfd> p;
  for (int fd : listeners) p.push_back({fd, POLLIN, 0});
  for (;;) {
    if (::poll(p.data(), p.size(), 1000) < 0 && errno != EINTR) _exit(1);
    for (auto& e : p) {
      if (!(e.revents & POLLIN)) continue;
      for (int n = 0; n < 256; ++n) {
        int c = ::accept4(e.fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (c < 0) break;
        ::close(c);
      }
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  int dials = argc > 1 ? std::atoi(argv[1]) : 12000;
  std::vector<int> bursts;
  for (int i = 2; i < argc; ++i) bursts.push_back(std::atoi(argv[i]));
  if (bursts.empty()) bursts = {0, 40, 4};
  if (dials <= 0 || dials > 1'000'000) {
    std::fprintf(stderr, "bench_dial_floor: DIALS must be 1..1000000\n");
    return 2;
  }

  // Listeners on one free port of 127.0.0.1, then the same port on the other addresses.
  std::vector<int> listeners;
  std::uint16_t port = 0;
  for (int i = 0; i < addresses; ++i) {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(port);
    sa.sin_addr.s_addr = address(i);
    if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0 ||
        ::listen(fd, 4096) != 0) {
      std::fprintf(stderr, "bench_dial_floor: listen on 127.0.0.%d: %s\n", i + 1, std::strerror(errno));
      return 1;
    }
    if (i == 0) {
      socklen_t len = sizeof sa;
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &len);
      port = ntohs(sa.sin_port);
    }
    listeners.push_back(fd);
  }
  pid_t child = ::fork();
  if (child < 0) {
    std::perror("bench_dial_floor: fork");
    return 1;
  }
  if (child == 0) serve(listeners);
  for (int fd : listeners) ::close(fd);

  std::printf("dial floor: socket, connect, poll(0), getsockopt, close to 127.0.0.1-%d:%u; %d dials per round\n",
              addresses, static_cast<unsigned>(port), dials);
  int status = 0;
  for (int burst : bursts) {
    for (int round = 0; round < 2; ++round) {
      rusage a{}, b{};
      ::getrusage(RUSAGE_SELF, &a);
      int failed = 0;
      for (int i = 0; i < dials; ++i) {
        int s = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        sockaddr_in sa{};
        sa.sin_family = AF_INET;
        sa.sin_port = htons(port);
        sa.sin_addr.s_addr = address(i);
        int r = ::connect(s, reinterpret_cast<sockaddr*>(&sa), sizeof sa);
        if (r < 0 && errno == EINPROGRESS) {
          pollfd p{s, POLLOUT, 0};
          ::poll(&p, 1, 0);
          int err = 0;
          socklen_t len = sizeof err;
          ::getsockopt(s, SOL_SOCKET, SO_ERROR, &err, &len);
          if (err) ++failed;
        } else if (r < 0) {
          ++failed;
        }
        ::close(s);
        if (burst > 0 ? i % burst == burst - 1 : i % 2000 == 1999) ::usleep(burst > 0 ? 20000 : 1000);
      }
      ::getrusage(RUSAGE_SELF, &b);
      double user = micros(b.ru_utime) - micros(a.ru_utime);
      double sys = micros(b.ru_stime) - micros(a.ru_stime);
      std::printf("  burst %-3d round %d: %.1f CPU-ms per 1000 dials (user %.1f, system %.1f); %d failed\n",
                  burst, round + 1, (user + sys) / dials, user / dials, sys / dials, failed);
      if (failed) status = 1;
    }
  }
  ::kill(child, SIGTERM);
  ::waitpid(child, nullptr, 0);
  return status;
}
