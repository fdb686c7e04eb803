#include "esm/log/syslog.hpp"

#include <sys/socket.h>
#include <sys/un.h>
#include <syslog.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <stdexcept>

namespace esm::log::detail {

std::optional<int> parse_syslog_facility(std::string_view name) {
  std::string u;
  for (char c : name) u += char(std::toupper(static_cast<unsigned char>(c)));
  if (u.empty()) return LOG_LOCAL0;
  static constexpr std::pair<std::string_view, int> table[] = {
      {"KERN", LOG_KERN},     {"USER", LOG_USER},         {"MAIL", LOG_MAIL},
      {"DAEMON", LOG_DAEMON}, {"AUTH", LOG_AUTH},         {"SYSLOG", LOG_SYSLOG},
      {"LPR", LOG_LPR},       {"NEWS", LOG_NEWS},         {"UUCP", LOG_UUCP},
      {"CRON", LOG_CRON},     {"AUTHPRIV", LOG_AUTHPRIV}, {"FTP", LOG_FTP},
      {"LOCAL0", LOG_LOCAL0}, {"LOCAL1", LOG_LOCAL1},     {"LOCAL2", LOG_LOCAL2},
      {"LOCAL3", LOG_LOCAL3}, {"LOCAL4", LOG_LOCAL4},     {"LOCAL5", LOG_LOCAL5},
      {"LOCAL6", LOG_LOCAL6}, {"LOCAL7", LOG_LOCAL7},
  };
  for (const auto& [n, code] : table)
    if (n == u) return code;
  return std::nullopt;
}

int syslog_severity(level l) {
  switch (l) {
    case level::trace: return LOG_DEBUG;
    case level::debug: return LOG_INFO;
    case level::info: return LOG_NOTICE;
    case level::warn: return LOG_WARNING;
    case level::error: return LOG_ERR;
  }
  return LOG_NOTICE;
}

syslog_client::syslog_client(int facility, std::string tag, const std::string& socket_path)
    : facility_(facility), tag_(std::move(tag)) {
  static constexpr const char* standard[] = {"/dev/log", "/var/run/syslog", "/var/run/log"};
  if (!socket_path.empty()) {
    path_ = socket_path;
    if (!connect())
      throw std::runtime_error("enable_syslog: cannot connect to \"" + socket_path +
                               "\": " + std::strerror(errno));
    return;
  }
  for (const char* p : standard) {
    path_ = p;
    if (connect()) return;
  }
  throw std::runtime_error(
      "enable_syslog: no syslog daemon listening on /dev/log, /var/run/syslog or /var/run/log");
}

syslog_client::~syslog_client() {
  if (fd_ >= 0) ::close(fd_);
}

bool syslog_client::connect() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd_ < 0) return false;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path_.size() >= sizeof addr.sun_path) {
    errno = ENAMETOOLONG;
  } else {
    std::memcpy(addr.sun_path, path_.c_str(), path_.size() + 1);
    if (::connect(fd_, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0) return true;
  }
  const int saved = errno;
  ::close(fd_);
  fd_ = -1;
  errno = saved;
  return false;
}

void syslog_client::send(level l, std::chrono::system_clock::time_point t,
                         std::string_view message) {
  const std::time_t tt = std::chrono::system_clock::to_time_t(t);
  std::tm tm{};
  localtime_r(&tt, &tm);
  char stamp[32];
  std::strftime(stamp, sizeof stamp, "%b %e %H:%M:%S", &tm);
  std::string datagram = "<" + std::to_string(facility_ | syslog_severity(l)) + ">" + stamp +
                         " " + tag_ + "[" + std::to_string(::getpid()) + "]: ";
  datagram += message;
  while (!datagram.empty() && datagram.back() == '\n') datagram.pop_back();
  for (int attempt = 0; attempt < 2; ++attempt) {
    if (fd_ < 0 && !connect()) return;
    if (::send(fd_, datagram.data(), datagram.size(), MSG_NOSIGNAL) >= 0) return;
    // The daemon restarted: its socket is new, reconnect once. Anything else (a full
    // queue, a too large record) drops this record.
    if (errno != ECONNREFUSED && errno != ENOTCONN) return;
    ::close(fd_);
    fd_ = -1;
  }
}

}  // namespace esm::log::detail
