#include "esm/daemon/notify.hpp"

#include <cerrno>
#include <charconv>
#include <cstddef>
#include <cstring>
#include <utility>

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

namespace esm::daemon {
namespace {

std::optional<std::uint64_t> parse_unsigned(std::string_view s) {
  std::uint64_t v = 0;
  auto [end, err] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || err != std::errc() || end != s.data() + s.size()) return std::nullopt;
  return v;
}

}  // namespace

systemd_notifier systemd_notifier::from_environment(const config::env_lookup& env, pid_t self) {
  systemd_notifier n;
  auto socket = env("NOTIFY_SOCKET");
  if (!socket || socket->empty()) return n;
  n.name_ = *socket;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  bool abstract = socket->front() == '@';
  if (socket->front() != '/' && !abstract) {
    n.problem_ = "NOTIFY_SOCKET is neither an absolute path nor an abstract name (@...): " + *socket;
    return n;
  }
  // A path needs its terminating NUL inside sun_path; an abstract name is counted exactly.
  if (socket->size() + (abstract ? 0 : 1) > sizeof(addr.sun_path)) {
    n.problem_ = "NOTIFY_SOCKET is longer than a socket address can hold: " + *socket;
    return n;
  }
  std::memcpy(addr.sun_path, socket->data(), socket->size());
  if (abstract) addr.sun_path[0] = '\0';
  auto length = offsetof(sockaddr_un, sun_path) + socket->size() + (abstract ? 0 : 1);
  n.address_.assign(reinterpret_cast<const char*>(&addr), length);
  n.fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (n.fd_ < 0) {
    n.problem_ = std::string("cannot create the notification socket: ") + std::strerror(errno);
    return n;
  }
  if (auto usec = env("WATCHDOG_USEC"); usec && !usec->empty()) {
    auto pid = env("WATCHDOG_PID");
    auto v = parse_unsigned(*usec);
    std::optional<std::uint64_t> p;
    if (pid && !pid->empty()) p = parse_unsigned(*pid);
    constexpr std::uint64_t year_usec = 365ull * 24 * 3600 * 1'000'000;
    if (!v || *v == 0 || *v > year_usec) {
      n.problem_ = "WATCHDOG_USEC is not a positive number of microseconds (at most a year): " + *usec;
    } else if (pid && !pid->empty() && !p) {
      n.problem_ = "WATCHDOG_PID is not a process id: " + *pid;
    } else if (!p || *p == static_cast<std::uint64_t>(self)) {
      n.watchdog_ = std::chrono::microseconds(*v);
    }
  }
  return n;
}

systemd_notifier::systemd_notifier(systemd_notifier&& o) noexcept
    : fd_(std::exchange(o.fd_, -1)),
      name_(std::move(o.name_)),
      address_(std::move(o.address_)),
      watchdog_(o.watchdog_),
      problem_(std::move(o.problem_)) {}

systemd_notifier& systemd_notifier::operator=(systemd_notifier&& o) noexcept {
  if (this != &o) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = std::exchange(o.fd_, -1);
    name_ = std::move(o.name_);
    address_ = std::move(o.address_);
    watchdog_ = o.watchdog_;
    problem_ = std::move(o.problem_);
  }
  return *this;
}

systemd_notifier::~systemd_notifier() {
  if (fd_ >= 0) ::close(fd_);
}

std::string systemd_notifier::send(std::string_view state) {
  if (fd_ < 0) return {};
  for (int attempt = 0; attempt < 8; ++attempt) {
    auto sent = ::sendto(fd_, state.data(), state.size(), MSG_NOSIGNAL,
                         reinterpret_cast<const sockaddr*>(address_.data()),
                         static_cast<socklen_t>(address_.size()));
    if (sent == static_cast<ssize_t>(state.size())) return {};
    if (sent < 0 && errno == EINTR) continue;
    if (sent < 0) return "cannot notify the service manager through " + name_ + ": " + std::strerror(errno);
    return "cannot notify the service manager through " + name_ + ": the datagram was cut";
  }
  return "cannot notify the service manager through " + name_ + ": interrupted";
}

}  // namespace esm::daemon
