#include <doctest/doctest.h>

#include <fstream>

#include "esm/log/log_file.hpp"
#include "support.hpp"

using namespace esm::log;
using namespace esm::log::test;
namespace fs = std::filesystem;
using detail::rotating_file;

namespace {

struct fake_clock {
  std::shared_ptr<std::chrono::system_clock::time_point> now =
      std::make_shared<std::chrono::system_clock::time_point>(fixed_time());
  rotating_file::clock_fn fn() const {
    return [now = now] { return *now; };
  }
  void advance(std::chrono::nanoseconds d) { *now += d; }
};

std::int64_t ns(std::chrono::system_clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
}

void touch(const fs::path& p, std::string_view content = "old\n") {
  std::ofstream(p) << content;
}

std::vector<std::string> names(const std::vector<fs::path>& ps) {
  std::vector<std::string> out;
  for (auto& p : ps) out.push_back(p.filename().string());
  return out;
}

}  // namespace

TEST_CASE("resolve_log_file_path") {
  CHECK(detail::resolve_log_file_path("/var/log/esm/") == fs::path("/var/log/esm/consul.log"));
  CHECK(detail::resolve_log_file_path("/var/log/esm.log") == fs::path("/var/log/esm.log"));
  CHECK(detail::resolve_log_file_path("esmd") == fs::path("esmd"));
}

TEST_CASE("rotation by size renames the active file to <stem>-<unix ns><ext>") {
  temp_dir dir;
  fake_clock clock;
  rotating_file f({dir.path() / "esmd.log", 10, std::chrono::hours(24), 0, clock.fn()});
  f.write("12345\n");  // 6 bytes
  f.write("67890\n");  // 12 bytes: the limit is checked before each write, as Consul
  CHECK(f.archives().empty());
  clock.advance(std::chrono::seconds(1));
  f.write("next\n");
  const std::string archive = "esmd-" + std::to_string(ns(*clock.now)) + ".log";
  CHECK(names(f.archives()) == std::vector<std::string>{archive});
  CHECK(read_file(dir.path() / archive) == "12345\n67890\n");
  CHECK(read_file(dir.path() / "esmd.log") == "next\n");
}

TEST_CASE("rotation by duration") {
  temp_dir dir;
  fake_clock clock;
  rotating_file f({dir.path() / "esmd.log", 0, std::chrono::minutes(5), 0, clock.fn()});
  f.write("a\n");
  clock.advance(std::chrono::minutes(4));
  f.write("b\n");
  CHECK(f.archives().empty());
  clock.advance(std::chrono::minutes(1));
  f.write("c\n");
  REQUIRE(f.archives().size() == 1);
  CHECK(read_file(f.archives()[0]) == "a\nb\n");
  CHECK(read_file(dir.path() / "esmd.log") == "c\n");
  // The timer restarts with the new file.
  clock.advance(std::chrono::minutes(4));
  f.write("d\n");
  CHECK(f.archives().size() == 1);
}

TEST_CASE("a zero or negative duration means 24h") {
  temp_dir dir;
  fake_clock clock;
  rotating_file f({dir.path() / "esmd.log", 0, std::chrono::nanoseconds(0), 0, clock.fn()});
  f.write("a\n");
  clock.advance(std::chrono::hours(23));
  f.write("b\n");
  CHECK(f.archives().empty());
  clock.advance(std::chrono::hours(1));
  f.write("c\n");
  CHECK(f.archives().size() == 1);
}

TEST_CASE("a name without extension gets .log archives; same-tick rotations do not collide") {
  temp_dir dir;
  fake_clock clock;
  rotating_file f({dir.path() / "esmd", 1, std::chrono::hours(24), 0, clock.fn()});
  f.write("1\n");
  f.write("2\n");
  f.write("3\n");
  const auto t = ns(*clock.now);
  CHECK(names(f.archives()) == std::vector<std::string>{"esmd-" + std::to_string(t) + ".log",
                                                        "esmd-" + std::to_string(t + 1) + ".log"});
  CHECK(read_file(dir.path() / "esmd") == "3\n");
}

TEST_CASE("an existing active file is appended to and its size counts") {
  temp_dir dir;
  fake_clock clock;
  touch(dir.path() / "esmd.log", "0123456789\n");
  rotating_file f({dir.path() / "esmd.log", 10, std::chrono::hours(24), 0, clock.fn()});
  f.write("new\n");
  REQUIRE(f.archives().size() == 1);
  CHECK(read_file(f.archives()[0]) == "0123456789\n");
  CHECK(read_file(dir.path() / "esmd.log") == "new\n");
}

TEST_CASE("max files: 0 keeps every archive") {
  temp_dir dir;
  fake_clock clock;
  for (int i = 1; i <= 3; ++i) touch(dir.path() / ("esmd-100000000000000000" + std::to_string(i) + ".log"));
  rotating_file f({dir.path() / "esmd.log", 1, std::chrono::hours(24), 0, clock.fn()});
  f.write("a\n");
  f.write("b\n");
  CHECK(f.archives().size() == 4);
}

TEST_CASE("max files: -1 deletes every archive, at start and on rotation") {
  temp_dir dir;
  fake_clock clock;
  touch(dir.path() / "esmd-1000000000000000001.log");
  touch(dir.path() / "esmd-notanumber.log");
  touch(dir.path() / "other-1000000000000000001.log");
  rotating_file f({dir.path() / "esmd.log", 1, std::chrono::hours(24), -1, clock.fn()});
  CHECK(f.archives().empty());
  f.write("a\n");
  f.write("b\n");
  CHECK(f.archives().empty());
  CHECK(read_file(dir.path() / "esmd.log") == "b\n");
  // Files that are not archives of this log are left alone.
  CHECK(fs::exists(dir.path() / "esmd-notanumber.log"));
  CHECK(fs::exists(dir.path() / "other-1000000000000000001.log"));
}

TEST_CASE("max files: N keeps the N newest archives") {
  temp_dir dir;
  fake_clock clock;
  touch(dir.path() / "esmd-1000000000000000003.log");
  touch(dir.path() / "esmd-1000000000000000001.log");
  touch(dir.path() / "esmd-1000000000000000002.log");
  rotating_file f({dir.path() / "esmd.log", 1, std::chrono::hours(24), 2, clock.fn()});
  CHECK(names(f.archives()) == std::vector<std::string>{"esmd-1000000000000000002.log",
                                                        "esmd-1000000000000000003.log"});
  f.write("a\n");
  f.write("b\n");  // rotates: the archive of "a" is the newest
  const std::string newest = "esmd-" + std::to_string(ns(*clock.now)) + ".log";
  CHECK(names(f.archives()) ==
        std::vector<std::string>{"esmd-1000000000000000003.log", newest});
}

TEST_CASE("rotation through the logger: JSON lines land in the file") {
  capture c;
  temp_dir dir;
  auto s = c.make();
  s.json = true;
  s.file = (dir.path() / "esmd.json").string();
  s.rotate_bytes = 1;
  s.rotate_max_files = 1;
  init(s);
  info("first");
  *c.now += std::chrono::milliseconds(1);
  info("second");
  *c.now += std::chrono::milliseconds(1);
  info("third");
  detail::rotating_file probe({dir.path() / "esmd.json", 0, std::chrono::hours(1), 0, {}});
  const auto archives = probe.archives();
  REQUIRE(archives.size() == 1);
  CHECK(read_file(archives[0]).find("\"@message\":\"second\"") != std::string::npos);
  CHECK(read_file(dir.path() / "esmd.json").find("\"@message\":\"third\"") != std::string::npos);
}

TEST_CASE("a failed rotation loses no later records once the directory is back") {
  temp_dir dir;
  fake_clock clock;
  const fs::path sub = dir.path() / "logs";
  fs::create_directory(sub);
  rotating_file f({sub / "esmd.log", 1, std::chrono::hours(24), 0, clock.fn()});
  f.write("a\n");
  fs::remove_all(sub);
  CHECK_NOTHROW(f.write("lost\n"));  // rename and reopen fail; reported once on stderr
  CHECK_NOTHROW(f.write("lost too\n"));
  fs::create_directory(sub);
  f.write("back\n");
  CHECK(read_file(sub / "esmd.log") == "back\n");
}
