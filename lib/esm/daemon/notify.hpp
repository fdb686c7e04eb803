// systemd's service notification protocol (sd_notify(3)), sent by esmd itself: libsystemd has
// no static library, and the protocol is one datagram per message on the AF_UNIX socket named
// by NOTIFY_SOCKET (a path, or "@name" for the abstract namespace).
//
// esmd sends READY=1 once it is registered with Consul, RELOADING=1 and READY=1 around a
// SIGHUP reload, STOPPING=1 when it begins to stop, and WATCHDOG=1 every WATCHDOG_USEC / 2
// when the service manager enables the watchdog for this process (WATCHDOG_PID, if set, must
// be esmd's pid). Without NOTIFY_SOCKET every call does nothing. Sending never blocks and
// never throws: a service manager that went away costs a logged warning, not the daemon.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <string_view>

#include <sys/types.h>

#include "esm/config/config.hpp"

namespace esm::daemon {

class systemd_notifier {
 public:
  systemd_notifier() = default;
  // Reads NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID. A malformed value disables that part
  // and is reported by problem() (the daemon logs it once).
  static systemd_notifier from_environment(const config::env_lookup& env, pid_t self);
  systemd_notifier(systemd_notifier&&) noexcept;
  systemd_notifier& operator=(systemd_notifier&&) noexcept;
  systemd_notifier(const systemd_notifier&) = delete;
  systemd_notifier& operator=(const systemd_notifier&) = delete;
  ~systemd_notifier();

  bool enabled() const { return fd_ >= 0; }
  // The socket as given by NOTIFY_SOCKET ("" when disabled).
  const std::string& socket_name() const { return name_; }
  // WATCHDOG_USEC when the watchdog applies to this process.
  std::optional<std::chrono::microseconds> watchdog() const { return watchdog_; }
  // What was wrong with the environment, if anything ("" when nothing).
  const std::string& problem() const { return problem_; }

  // Sends `state` (newline-separated assignments, e.g. "READY=1\nSTATUS=...") as one
  // datagram. "" on success or when disabled, else the error text.
  std::string send(std::string_view state);

 private:
  int fd_ = -1;
  std::string name_;
  std::string address_;  // the sockaddr_un bytes
  std::optional<std::chrono::microseconds> watchdog_;
  std::string problem_;
};

}  // namespace esm::daemon
