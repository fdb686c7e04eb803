// Syslog output: Consul's facility names and level -> priority mapping, sent as local
// syslog datagrams ("<PRI>Mmm dd hh:mm:ss esmd[pid]: message") like Go's log/syslog.
//
// Our own client instead of syslog(3) so that init() can tell when no syslog daemon listens
// (glibc drops messages silently then) and so that tests can point it at their own socket.
// Sends never block: when the daemon's queue is full the record is dropped, a logger must
// not stall the probes.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <string_view>

#include "esm/log/log.hpp"

namespace esm::log::detail {

// Case-insensitive: KERN, USER, MAIL, DAEMON, AUTH, SYSLOG, LPR, NEWS, UUCP, CRON, AUTHPRIV,
// FTP, LOCAL0..LOCAL7; "" means LOCAL0. Returns the facility code (already shifted, as
// LOG_LOCAL0) or nullopt.
std::optional<int> parse_syslog_facility(std::string_view name);

// Consul's SyslogWrapper: TRACE->debug, DEBUG->info, INFO->notice, WARN->warning, ERROR->err.
int syslog_severity(level l);

class syslog_client {
 public:
  // Connects to `socket_path`, or when empty to the first of /dev/log, /var/run/syslog,
  // /var/run/log that accepts. Throws std::runtime_error naming enable_syslog otherwise.
  syslog_client(int facility, std::string tag, const std::string& socket_path);
  ~syslog_client();
  syslog_client(const syslog_client&) = delete;
  syslog_client& operator=(const syslog_client&) = delete;

  void send(level l, std::chrono::system_clock::time_point t, std::string_view message);

 private:
  bool connect();

  int facility_;
  std::string tag_;
  std::string path_;
  int fd_ = -1;
};

}  // namespace esm::log::detail
