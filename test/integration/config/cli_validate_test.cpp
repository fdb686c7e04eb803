// Runs the real esmd binary (ESMD_BIN) on good and bad configurations and checks exit codes
// and output of -validate, -version, -help and flag errors. Consul is never contacted: the
// environment handed to esmd points CONSUL_HTTP_ADDR at a closed port to prove it.
#include <doctest/doctest.h>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/json/parse.hpp>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

namespace {

namespace fs = std::filesystem;

struct run_result {
  int exit_code = -1;
  std::string out;
  std::string err;
};

std::string esmd_bin() {
  const char* p = std::getenv("ESMD_BIN");
  REQUIRE_MESSAGE(p != nullptr, "ESMD_BIN must name the esmd binary");
  return p;
}

// Runs esmd with exactly these arguments and environment variables (nothing inherited, so
// the machine's CONSUL_* variables cannot leak in). Gives up after 20 s.
run_result run(std::vector<std::string> args, std::map<std::string, std::string> env = {}) {
  std::string bin = esmd_bin();
  args.insert(args.begin(), bin);
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::vector<std::string> env_strings;
  for (auto& [k, v] : env) env_strings.push_back(k + "=" + v);
  std::vector<char*> envp;
  for (auto& e : env_strings) envp.push_back(e.data());
  envp.push_back(nullptr);

  int out_pipe[2], err_pipe[2];
  REQUIRE(pipe2(out_pipe, O_CLOEXEC) == 0);
  REQUIRE(pipe2(err_pipe, O_CLOEXEC) == 0);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, out_pipe[1], 1);
  posix_spawn_file_actions_adddup2(&fa, err_pipe[1], 2);
  pid_t pid = -1;
  int rc = posix_spawn(&pid, bin.c_str(), &fa, nullptr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&fa);
  close(out_pipe[1]);
  close(err_pipe[1]);
  REQUIRE_MESSAGE(rc == 0, "cannot start " << bin);

  run_result r;
  pollfd fds[2] = {{out_pipe[0], POLLIN, 0}, {err_pipe[0], POLLIN, 0}};
  std::string* sinks[2] = {&r.out, &r.err};
  int open_fds = 2;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (open_fds > 0) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      kill(pid, SIGKILL);
      break;
    }
    if (poll(fds, 2, int(left.count())) < 0) break;
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      char buf[4096];
      ssize_t n = read(fds[i].fd, buf, sizeof buf);
      if (n > 0) {
        sinks[i]->append(buf, std::size_t(n));
      } else {
        close(fds[i].fd);
        fds[i].fd = -1;
        --open_fds;
      }
    }
  }
  for (auto& f : fds)
    if (f.fd >= 0) close(f.fd);
  int status = 0;
  waitpid(pid, &status, 0);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return r;
}

class temp_dir {
 public:
  temp_dir() {
    std::string tmpl = (fs::temp_directory_path() / "esm-cli-XXXXXX").string();
    REQUIRE(mkdtemp(tmpl.data()) != nullptr);
    path_ = tmpl;
  }
  ~temp_dir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  std::string write(const std::string& name, const std::string& content) const {
    auto p = path_ / name;
    fs::create_directories(p.parent_path());
    std::ofstream(p, std::ios::binary) << content;
    return p.string();
  }
  std::string str() const { return path_.string(); }

 private:
  fs::path path_;
};

bool contains(const std::string& s, std::string_view part) {
  return s.find(part) != std::string::npos;
}

// A closed port: -validate must not try to reach it (it would time out or fail otherwise).
const std::map<std::string, std::string> no_consul = {{"CONSUL_HTTP_ADDR", "127.0.0.1:1"}};

}  // namespace

TEST_CASE("esmd -version and -v print the version and exit 0") {
  for (const char* flag : {"-version", "-v", "--version"}) {
    CAPTURE(flag);
    auto r = run({flag});
    CHECK(r.exit_code == 0);
    CHECK(r.out.starts_with("esmd v"));
    CHECK(r.out.ends_with("\n"));
  }
}

TEST_CASE("esmd -help and -h print the usage and exit 0") {
  for (const char* flag : {"-help", "-h", "--help"}) {
    CAPTURE(flag);
    auto r = run({flag});
    CHECK(r.exit_code == 0);
    CHECK(contains(r.out, "-config-file"));
    CHECK(contains(r.out, "-config-dir"));
    CHECK(contains(r.out, "-validate"));
  }
}

TEST_CASE("esmd: flag errors exit 11 with Go's message") {
  auto r = run({"-bogus"});
  CHECK(r.exit_code == 11);
  CHECK(contains(r.err + r.out, "error parsing flags: flag provided but not defined: -bogus"));
  r = run({"-config-file"});
  CHECK(r.exit_code == 11);
  CHECK(contains(r.err + r.out, "flag needs an argument: -config-file"));
}

TEST_CASE("esmd -validate: a good configuration prints redacted JSON and exits 0") {
  temp_dir d;
  auto f = d.write("esm.hcl", R"(
consul_service = "validated"
token = "file-secret-token"
node_probe_interval = "3s"
telemetry { circonus_api_token = "circonus-secret" }
)");
  auto env = no_consul;
  env["CONSUL_HTTP_AUTH"] = "user:auth-secret";
  auto r = run({"-validate", "-config-file", f}, env);
  CHECK(r.exit_code == 0);
  CAPTURE(r.err);
  auto v = boost::json::parse(r.out);
  const auto& o = v.as_object();
  CHECK(o.at("consul_service").as_string() == "validated");
  CHECK(o.at("node_probe_interval").as_string() == "3s");
  CHECK(o.at("token").as_string() == "<redacted>");
  CHECK(o.at("telemetry").as_object().at("circonus_api_token").as_string() == "<redacted>");
  CHECK(o.at("consul").as_object().at("address").as_string() == "127.0.0.1:1");
  CHECK(o.at("consul").as_object().at("http_auth").as_string() == "<redacted>");
  for (const char* secret : {"file-secret-token", "circonus-secret", "auth-secret"}) {
    CHECK_FALSE(contains(r.out, secret));
    CHECK_FALSE(contains(r.err, secret));
  }
}

TEST_CASE("esmd -validate: files and directories in command-line order") {
  temp_dir d;
  auto first = d.write("first.hcl", "consul_service = \"first\"\ndatacenter = \"first\"");
  d.write("dir/b.hcl", "consul_service = \"dir-b\"");
  d.write("dir/a.json", R"({"consul_service": "dir-a", "consul_service_tag": "a"})");
  d.write("dir/ignored.txt", "not { config");
  auto r = run({"-validate", "-config-file=" + first, "--config-dir", d.str() + "/dir"}, no_consul);
  REQUIRE(r.exit_code == 0);
  auto o = boost::json::parse(r.out).as_object();
  CHECK(o.at("consul_service").as_string() == "dir-b");
  CHECK(o.at("consul_service_tag").as_string() == "a");
  CHECK(o.at("datacenter").as_string() == "first");
}

TEST_CASE("esmd -validate: invalid configurations exit 11 naming the problem") {
  temp_dir d;
  struct bad_case {
    std::string name, text, message;
  };
  const bad_case cases[] = {
      {"ping.hcl", "ping_type = \"tcp\"", "ping_type must be one of either \"udp\" or \"socket\""},
      {"probe.hcl", "node_probe_interval = \"500ms\"",
       "node_probe_interval cannot be lower than 1 second"},
      {"syntax.hcl", "log_level = \n", "syntax.hcl:2:1: expected a value"},
      {"unknown.hcl", "\n  bogus_key = 1", "unknown.hcl:2:3: bogus_key: unknown key"},
      {"type.json", "{\"log_json\": \"yes\"}", "type.json:1:14: log_json: expected a boolean"},
      {"dup.hcl", "telemetry {}\ntelemetry {}", "only one telemetry block allowed"},
      {"level.hcl", "log_level = \"loud\"", "log_level \"loud\" is not one of"},
  };
  for (const auto& c : cases) {
    CAPTURE(c.name);
    auto r = run({"-validate", "-config-file", d.write(c.name, c.text)}, no_consul);
    CHECK(r.exit_code == 11);
    CHECK(r.out.empty());
    CHECK(contains(r.err, c.message));
  }
  auto r = run({"-validate", "-config-file", d.str() + "/missing.hcl"}, no_consul);
  CHECK(r.exit_code == 11);
  CHECK(contains(r.err, "error reading"));
}

TEST_CASE("esmd -validate: environment precedence and environment errors") {
  temp_dir d;
  auto token_file = d.write("token", "from-token-file\n");
  auto f = d.write("esm.hcl", "token = \"from-config\"");
  auto env = no_consul;
  env["CONSUL_HTTP_TOKEN_FILE"] = token_file;
  env["CONSUL_HTTP_SSL"] = "true";
  env["CONSUL_ENABLEAGENTLESS"] = "true";
  auto r = run({"-validate", "-config-file", f}, env);
  REQUIRE(r.exit_code == 0);
  auto o = boost::json::parse(r.out).as_object();
  CHECK(o.at("consul").as_object().at("scheme").as_string() == "https");
  CHECK(o.at("enable_agentless").as_bool());
  CHECK_FALSE(contains(r.out, "from-token-file"));
  env["CONSUL_HTTP_SSL_VERIFY"] = "maybe";
  r = run({"-validate", "-config-file", f}, env);
  CHECK(r.exit_code == 11);
  CHECK(contains(r.err, "CONSUL_HTTP_SSL_VERIFY"));
}
