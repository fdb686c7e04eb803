// Shared by the config area's unit tests: a scratch directory removed at scope exit and a
// fake environment, so no test depends on the machine's files or variables.
#pragma once

#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <string_view>

#include "esm/config/config.hpp"

namespace esm::config::test {

class temp_dir {
 public:
  temp_dir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "esm-config-XXXXXX").string();
    if (!mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
  }
  ~temp_dir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;

  const std::filesystem::path& path() const { return path_; }
  std::string str() const { return path_.string(); }

  // Writes `content` to `name` (relative, may contain sub-directories) and returns the path.
  std::string write(const std::string& name, std::string_view content) const {
    auto p = path_ / name;
    std::filesystem::create_directories(p.parent_path());
    std::ofstream out(p, std::ios::binary);
    out.write(content.data(), std::streamsize(content.size()));
    return p.string();
  }

 private:
  std::filesystem::path path_;
};

inline env_lookup fake_env(std::map<std::string, std::string> vars = {}) {
  return [vars = std::move(vars)](std::string_view name) -> std::optional<std::string> {
    auto it = vars.find(std::string(name));
    if (it == vars.end()) return std::nullopt;
    return it->second;
  };
}

// Loads one HCL (or JSON) text as the only configuration file, with an empty environment.
inline config load_text(std::string_view text, const std::string& name = "test.hcl",
                        env_lookup env = fake_env()) {
  temp_dir dir;
  return load_config({dir.write(name, text)}, env);
}

// The message of the config_error thrown by f, or "" when none is thrown.
template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const config_error& e) {
    return e.what();
  }
  return "";
}

}  // namespace esm::config::test
