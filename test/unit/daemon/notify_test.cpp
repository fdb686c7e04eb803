// systemd's notify protocol against a real AF_UNIX datagram socket, as the service manager
// would hold it: paths, abstract names, the watchdog's settings and malformed environments.
#include <doctest/doctest.h>

#include <cstring>
#include <map>
#include <optional>
#include <string>

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "esm/daemon/notify.hpp"

using esm::daemon::systemd_notifier;

namespace {

esm::config::env_lookup env_of(std::map<std::string, std::string> vars) {
  return [vars](std::string_view k) -> std::optional<std::string> {
    auto it = vars.find(std::string(k));
    if (it == vars.end()) return std::nullopt;
    return it->second;
  };
}

// The service manager's end: a bound datagram socket (a path, or an abstract name when the
// name starts with '@').
struct manager_socket {
  int fd = -1;
  std::string name;
  explicit manager_socket(std::string n) : name(std::move(n)) {
    fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    REQUIRE(fd >= 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::memcpy(a.sun_path, name.data(), name.size());
    bool abstract = name.front() == '@';
    if (abstract) a.sun_path[0] = '\0';
    auto len = offsetof(sockaddr_un, sun_path) + name.size() + (abstract ? 0 : 1);
    if (!abstract) ::unlink(name.c_str());
    REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&a), static_cast<socklen_t>(len)) == 0);
    timeval tv{2, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  }
  ~manager_socket() {
    ::close(fd);
    if (name.front() != '@') ::unlink(name.c_str());
  }
  std::string receive() {
    char buf[4096];
    auto n = ::recv(fd, buf, sizeof buf, 0);
    return n < 0 ? std::string("<nothing>") : std::string(buf, static_cast<std::size_t>(n));
  }
};

std::string temp_socket_path() {
  return "/tmp/esmd-notify-test-" + std::to_string(::getpid()) + ".sock";
}

}  // namespace

TEST_CASE("without NOTIFY_SOCKET nothing is sent and nothing fails") {
  auto n = systemd_notifier::from_environment(env_of({}), ::getpid());
  CHECK_FALSE(n.enabled());
  CHECK(n.send("READY=1") == "");
  CHECK_FALSE(n.watchdog());
  CHECK(n.problem() == "");
}

TEST_CASE("READY, STATUS and STOPPING arrive as one datagram each on a socket path") {
  manager_socket m(temp_socket_path());
  auto n = systemd_notifier::from_environment(env_of({{"NOTIFY_SOCKET", m.name}}), ::getpid());
  REQUIRE(n.enabled());
  CHECK(n.send("READY=1\nSTATUS=Registered as consul-esm:a") == "");
  CHECK(n.send("STOPPING=1") == "");
  CHECK(m.receive() == "READY=1\nSTATUS=Registered as consul-esm:a");
  CHECK(m.receive() == "STOPPING=1");
}

TEST_CASE("an abstract socket name (@...) is reached in the abstract namespace") {
  manager_socket m("@esmd-notify-test-" + std::to_string(::getpid()));
  auto n = systemd_notifier::from_environment(env_of({{"NOTIFY_SOCKET", m.name}}), ::getpid());
  REQUIRE(n.enabled());
  CHECK(n.send("WATCHDOG=1") == "");
  CHECK(m.receive() == "WATCHDOG=1");
}

TEST_CASE("the watchdog applies when WATCHDOG_PID is ours or unset, never another process's") {
  manager_socket m(temp_socket_path());
  auto self = ::getpid();
  auto mine = systemd_notifier::from_environment(
      env_of({{"NOTIFY_SOCKET", m.name}, {"WATCHDOG_USEC", "30000000"}, {"WATCHDOG_PID", std::to_string(self)}}), self);
  REQUIRE(mine.watchdog());
  CHECK(mine.watchdog()->count() == 30'000'000);
  auto unset = systemd_notifier::from_environment(env_of({{"NOTIFY_SOCKET", m.name}, {"WATCHDOG_USEC", "500000"}}), self);
  REQUIRE(unset.watchdog());
  CHECK(unset.watchdog()->count() == 500'000);
  // A variable inherited from a parent that was itself supervised: not ours.
  auto other = systemd_notifier::from_environment(
      env_of({{"NOTIFY_SOCKET", m.name}, {"WATCHDOG_USEC", "500000"}, {"WATCHDOG_PID", std::to_string(self + 1)}}), self);
  CHECK_FALSE(other.watchdog());
  CHECK(other.problem() == "");
}

TEST_CASE("malformed settings are named in problem() and disable only their part") {
  manager_socket m(temp_socket_path());
  auto self = ::getpid();
  auto relative = systemd_notifier::from_environment(env_of({{"NOTIFY_SOCKET", "run/notify"}}), self);
  CHECK_FALSE(relative.enabled());
  CHECK(relative.problem().find("NOTIFY_SOCKET") != std::string::npos);
  auto too_long = systemd_notifier::from_environment(env_of({{"NOTIFY_SOCKET", "/" + std::string(200, 'x')}}), self);
  CHECK_FALSE(too_long.enabled());
  CHECK(too_long.problem().find("longer") != std::string::npos);
  auto bad_usec = systemd_notifier::from_environment(env_of({{"NOTIFY_SOCKET", m.name}, {"WATCHDOG_USEC", "30s"}}), self);
  CHECK(bad_usec.enabled());  // READY and STOPPING still work
  CHECK_FALSE(bad_usec.watchdog());
  CHECK(bad_usec.problem().find("WATCHDOG_USEC") != std::string::npos);
  auto zero = systemd_notifier::from_environment(env_of({{"NOTIFY_SOCKET", m.name}, {"WATCHDOG_USEC", "0"}}), self);
  CHECK_FALSE(zero.watchdog());
  auto bad_pid = systemd_notifier::from_environment(
      env_of({{"NOTIFY_SOCKET", m.name}, {"WATCHDOG_USEC", "1000"}, {"WATCHDOG_PID", "me"}}), self);
  CHECK_FALSE(bad_pid.watchdog());
  CHECK(bad_pid.problem().find("WATCHDOG_PID") != std::string::npos);
}

TEST_CASE("a service manager that went away is an error text, never an exception") {
  auto path = temp_socket_path();
  std::optional<manager_socket> m(std::in_place, path);
  auto n = systemd_notifier::from_environment(env_of({{"NOTIFY_SOCKET", path}}), ::getpid());
  m.reset();  // socket closed and its path removed
  auto error = n.send("READY=1");
  CHECK(error.find("cannot notify the service manager through " + path) != std::string::npos);
}
