// Shared by the fuzz targets that drive esmd's real network code over loopback sockets
// (probe_http, grpc, admin): a private network namespace, so that whatever an input makes the
// code dial (a redirect's Location, a name to resolve) can only reach this process's own
// loopback, and so that the ports and connections of a long fuzzing run are private too.
#pragma once

#include <net/if.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>

#include <boost/asio/io_context.hpp>

namespace fuzz_net {

// Moves the process into a new network namespace whose only interface, lo, is up: as root
// (CAP_SYS_ADMIN) directly, else inside a new user namespace. True when that worked; the
// targets that could otherwise reach beyond loopback (HTTP redirects) restrict themselves
// when it did not.
inline bool enter_private_network() {
  if (::unshare(CLONE_NEWNET) != 0 && ::unshare(CLONE_NEWUSER | CLONE_NEWNET) != 0) {
    std::fprintf(stderr, "fuzz: no private network namespace (%s): staying on the host's\n",
                 std::strerror(errno));
    return false;
  }
  int fd = ::socket(AF_INET, SOCK_DGRAM, 0);
  ifreq ifr{};
  std::strncpy(ifr.ifr_name, "lo", IFNAMSIZ - 1);
  bool ok = fd >= 0 && ::ioctl(fd, SIOCGIFFLAGS, &ifr) == 0;
  ifr.ifr_flags = static_cast<short>(ifr.ifr_flags | IFF_UP | IFF_RUNNING);
  ok = ok && ::ioctl(fd, SIOCSIFFLAGS, &ifr) == 0;
  if (fd >= 0) ::close(fd);
  if (!ok) {  // nothing would connect: every input would look alike
    std::fprintf(stderr, "fuzz: cannot bring lo up in the new network namespace\n");
    std::abort();
  }
  return true;
}

// How much of what is left to send goes in the next write, by an input's "pieces" option (two
// bits): 0 all at once; 1 one byte at a time for the first 256 bytes, then 256 at a time (a
// byte at a time all along would make long inputs slow); 2 seven bytes; 3 a hundred.
inline std::size_t piece(unsigned mode, std::size_t sent, std::size_t left) {
  std::size_t n = left;
  switch (mode & 3) {
    case 1: n = sent < 256 ? 1 : 256; break;
    case 2: n = 7; break;
    case 3: n = 100; break;
    default: break;
  }
  return n < left ? n : left;
}

// Runs the loop until `done` holds or `limit` passed; false on the limit.
inline bool run_until(boost::asio::io_context& io, const std::function<bool()>& done,
                      std::chrono::steady_clock::duration limit) {
  const auto end = std::chrono::steady_clock::now() + limit;
  io.restart();
  while (!done()) {
    if (std::chrono::steady_clock::now() >= end) return false;
    io.run_one_for(std::chrono::milliseconds(50));
    if (io.stopped()) io.restart();
  }
  return true;
}

}  // namespace fuzz_net
