#include <doctest/doctest.h>

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <boost/json/parse.hpp>
#include <boost/json/value.hpp>

#include <cstring>
#include <stdexcept>
#include <thread>
#include <vector>

#include "support.hpp"

using namespace esm::log;
using namespace esm::log::test;

TEST_CASE("parse_level accepts Consul's names in any case") {
  CHECK(parse_level("TRACE") == level::trace);
  CHECK(parse_level("debug") == level::debug);
  CHECK(parse_level("Info") == level::info);
  CHECK(parse_level("WARN") == level::warn);
  CHECK(parse_level("err") == level::error);
  CHECK(parse_level("ERROR") == level::error);
  CHECK_FALSE(parse_level("WARNING"));
  CHECK_FALSE(parse_level(""));
  CHECK_FALSE(parse_level("INFO "));
  CHECK(level_name(level::warn) == "WARN");
  CHECK(level_name(level::error) == "ERROR");
}

TEST_CASE("records below the minimum level are dropped; set_level applies at once") {
  capture c;
  init(c.make(level::info));
  CHECK(current_level() == level::info);
  debug("hidden");
  info("shown", {{"k", "v"}});
  CHECK(c.take() == "2026-11-26T10:20:30.123Z [INFO]  esmd: shown: k=v\n");

  set_level(level::trace);
  CHECK(enabled(level::trace));
  trace("now visible");
  CHECK(c.take() == "2026-11-26T10:20:30.123Z [TRACE] esmd: now visible\n");

  set_level(level::error);
  warn("hidden");
  error("boom", {{"error", "connection refused"}});
  CHECK(c.take() == "2026-11-26T10:20:30.123Z [ERROR] esmd: boom: error=\"connection refused\"\n");
  CHECK_FALSE(enabled(level::warn));
}

TEST_CASE("a disabled level does no work: no clock read, no output, fields not built by macro") {
  capture c;
  init(c.make(level::info));
  const int before = *c.clock_calls;
  debug("nothing", {{"a", 1}});
  int built = 0;
  auto expensive = [&] {
    ++built;
    return std::string("x");
  };
  ESM_LOG_DEBUG("nothing", {{"a", expensive()}});
  CHECK(*c.clock_calls == before);
  CHECK(built == 0);
  CHECK(c.take().empty());
  ESM_LOG_AT(level::warn, "shown", {{"a", expensive()}});
  CHECK(built == 1);
  CHECK(c.take() == "2026-11-26T10:20:30.123Z [WARN]  esmd: shown: a=x\n");
}

TEST_CASE("field types render as hclog renders Go values") {
  capture c;
  init(c.make());
  info("types", {{"i", -42},
                 {"u", 7u},
                 {"b", true},
                 {"d", std::chrono::seconds(90)},
                 {"ms", std::chrono::milliseconds(300)},
                 {"f", 2.5},
                 {"ec", boost::system::error_code()},
                 {"s", std::string("two words")}});
  CHECK(c.take() ==
        "2026-11-26T10:20:30.123Z [INFO]  esmd: types: i=-42 u=7 b=true d=1m30s ms=300ms f=2.5 "
        "ec=Success s=\"two words\"\n");
}

TEST_CASE("JSON mode writes one parsable object per line") {
  capture c;
  auto s = c.make();
  s.json = true;
  init(s);
  info("Connecting to Consul", {{"address", "127.0.0.1:8500"},
                                {"attempt", 2},
                                {"tls", false},
                                {"wait", std::chrono::seconds(5)}});
  warn("odd \"value\"", {{"output", "line1\nline2\t\\"}});
  const std::string out = c.take();
  std::vector<std::string> lines;
  for (std::size_t p = 0, n; (n = out.find('\n', p)) != std::string::npos; p = n + 1)
    lines.push_back(out.substr(p, n - p));
  REQUIRE(lines.size() == 2);

  auto a = boost::json::parse(lines[0]).as_object();
  CHECK(a.at("@timestamp").as_string() == "2026-11-26T10:20:30.123456Z");
  CHECK(a.at("@level").as_string() == "info");
  CHECK(a.at("@module").as_string() == "esmd");
  CHECK(a.at("@message").as_string() == "Connecting to Consul");
  CHECK(a.at("address").as_string() == "127.0.0.1:8500");
  CHECK(a.at("attempt").as_int64() == 2);
  CHECK(a.at("tls").as_bool() == false);
  CHECK(a.at("wait").as_string() == "5s");
  CHECK(a.size() == 8);

  auto b = boost::json::parse(lines[1]).as_object();
  CHECK(b.at("@level").as_string() == "warn");
  CHECK(b.at("@message").as_string() == "odd \"value\"");
  CHECK(b.at("output").as_string() == "line1\nline2\t\\");
}

TEST_CASE("the module name comes from settings") {
  capture c;
  auto s = c.make();
  s.name = "esmd-test";
  init(s);
  info("x");
  CHECK(c.take() == "2026-11-26T10:20:30.123Z [INFO]  esmd-test: x\n");
}

TEST_CASE("the file sink gets the same lines as the console") {
  capture c;
  temp_dir dir;
  auto s = c.make();
  s.file = (dir.path() / "esmd.log").string();
  init(s);
  info("to both", {{"k", 1}});
  const std::string expected = "2026-11-26T10:20:30.123Z [INFO]  esmd: to both: k=1\n";
  CHECK(c.take() == expected);
  CHECK(read_file(dir.path() / "esmd.log") == expected);
}

TEST_CASE("a log_file ending with '/' names a directory holding consul.log") {
  capture c;
  temp_dir dir;
  auto s = c.make();
  s.file = dir.path().string() + "/";
  init(s);
  info("in dir");
  CHECK(read_file(dir.path() / "consul.log") ==
        "2026-11-26T10:20:30.123Z [INFO]  esmd: in dir\n");
}

TEST_CASE("an unusable log file makes init throw, naming key, path and reason") {
  capture c;
  init(c.make());
  auto s = c.make();
  s.file = "/nonexistent-esm-dir/x.log";
  CHECK_THROWS_WITH_AS(init(s),
                       "log_file: cannot open \"/nonexistent-esm-dir/x.log\": No such file or "
                       "directory",
                       std::runtime_error);
  temp_dir dir;
  s.file = dir.path().string();  // a directory without the trailing '/'
  CHECK_THROWS_WITH_AS(init(s),
                       ("log_file: cannot open \"" + dir.path().string() + "\": Is a directory")
                           .c_str(),
                       std::runtime_error);
  if (::geteuid() != 0) {
    temp_dir ro;
    std::filesystem::permissions(ro.path(), std::filesystem::perms::owner_read |
                                                std::filesystem::perms::owner_exec);
    s.file = (ro.path() / "x.log").string();
    CHECK_THROWS_WITH_AS(init(s),
                         ("log_file: cannot open \"" + s.file + "\": Permission denied").c_str(),
                         std::runtime_error);
  }
  // The previous configuration is still in place.
  info("still here");
  CHECK(c.take() == "2026-11-26T10:20:30.123Z [INFO]  esmd: still here\n");
}

TEST_CASE("an unknown syslog facility makes init throw") {
  capture c;
  auto s = c.make();
  s.syslog = true;
  s.syslog_facility = "LOCAL9";
  CHECK_THROWS_WITH_AS(init(s),
                       "syslog_facility: unknown facility \"LOCAL9\" (expected one of KERN, USER, "
                       "MAIL, DAEMON, AUTH, SYSLOG, LPR, NEWS, UUCP, CRON, AUTHPRIV, FTP, "
                       "LOCAL0..LOCAL7)",
                       std::runtime_error);
}

TEST_CASE("syslog with no listening daemon makes init throw") {
  capture c;
  temp_dir dir;
  auto s = c.make();
  s.syslog = true;
  s.syslog_socket = (dir.path() / "nobody").string();
  CHECK_THROWS_WITH_AS(init(s),
                       ("enable_syslog: cannot connect to \"" + s.syslog_socket +
                        "\": No such file or directory")
                           .c_str(),
                       std::runtime_error);
}

namespace {

// A datagram socket standing in for the syslog daemon.
struct fake_syslogd {
  int fd = ::socket(AF_UNIX, SOCK_DGRAM, 0);
  std::string path;
  explicit fake_syslogd(std::string p) : path(std::move(p)) {
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
    REQUIRE(::bind(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0);
  }
  ~fake_syslogd() { ::close(fd); }
  std::string receive() {
    char buf[4096];
    const ssize_t n = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
    return n < 0 ? std::string() : std::string(buf, std::size_t(n));
  }
};

}  // namespace

TEST_CASE("syslog: facility (case-insensitive) and level give the priority, tag is esmd") {
  capture c;
  temp_dir dir;
  fake_syslogd daemon((dir.path() / "log").string());
  auto s = c.make();
  s.syslog = true;
  s.syslog_facility = "local3";
  s.syslog_socket = daemon.path;
  init(s);
  info("hello", {{"k", "v w"}});
  error("bad");
  trace("fine");
  const std::string pid = std::to_string(::getpid());
  // LOCAL3 = 19 << 3 = 152; INFO -> notice (5), ERROR -> err (3), TRACE -> debug (7).
  CHECK(daemon.receive() == "<157>Nov 26 10:20:30 esmd[" + pid + "]: hello: k=\"v w\"");
  CHECK(daemon.receive() == "<155>Nov 26 10:20:30 esmd[" + pid + "]: bad");
  CHECK(daemon.receive() == "<159>Nov 26 10:20:30 esmd[" + pid + "]: fine");
  // The console still gets everything.
  CHECK(c.take().find("[TRACE] esmd: fine") != std::string::npos);

  s.syslog_facility = "";  // LOCAL0 = 128
  init(s);
  warn("w");
  CHECK(daemon.receive() == "<132>Nov 26 10:20:30 esmd[" + pid + "]: w");
}

TEST_CASE("logging from several threads keeps lines whole") {
  capture c;
  init(c.make());
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([t] {
      for (int i = 0; i < 200; ++i) info("line", {{"t", t}, {"i", i}});
    });
  for (auto& th : threads) th.join();
  const std::string out = c.take();
  int lines = 0;
  for (std::size_t p = 0, n; (n = out.find('\n', p)) != std::string::npos; p = n + 1, ++lines)
    REQUIRE(out.compare(p, 45, "2026-11-26T10:20:30.123Z [INFO]  esmd: line: ") == 0);
  CHECK(lines == 800);
}
