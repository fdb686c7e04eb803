#include "esm/log/log_file.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <system_error>

#include "esm/log/log.hpp"

namespace esm::log::detail {
namespace fs = std::filesystem;

namespace {

std::string quoted(const fs::path& p) { return "\"" + p.string() + "\""; }

bool all_digits(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

}  // namespace

fs::path resolve_log_file_path(std::string_view configured) {
  std::string p(configured);
  if (!p.empty() && p.back() == '/') p += default_file_name;
  return fs::path(p);
}

rotating_file::rotating_file(options o) : opts_(std::move(o)) {
  if (opts_.duration <= std::chrono::nanoseconds::zero()) opts_.duration = std::chrono::hours(24);
  // Go's filepath.Ext: from the last dot of the file name, even for ".hidden".
  const std::string name = opts_.path.filename().string();
  const auto dot = name.rfind('.');
  ext_ = dot == std::string::npos ? std::string() : name.substr(dot);
  stem_ = name.substr(0, name.size() - ext_.size()) + "-";
  if (ext_.empty()) ext_ = ".log";
  prune();
  try {
    open();
  } catch (const std::system_error& e) {
    throw std::runtime_error("log_file: cannot open " + quoted(opts_.path) + ": " +
                             std::strerror(e.code().value()));
  }
}

rotating_file::~rotating_file() {
  if (fd_ >= 0) ::close(fd_);
}

std::chrono::system_clock::time_point rotating_file::now() const {
  return opts_.clock ? opts_.clock() : std::chrono::system_clock::now();
}

void rotating_file::open() {
  const int fd = ::open(opts_.path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
  if (fd < 0) throw std::system_error(errno, std::generic_category());
  struct stat st {};
  if (::fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
    ::close(fd);
    throw std::system_error(EISDIR, std::generic_category());
  }
  fd_ = fd;
  bytes_ = st.st_size;
  created_ = now();
}

std::vector<fs::path> rotating_file::archives() const {
  std::vector<std::pair<std::string, fs::path>> found;
  const fs::path dir = opts_.path.has_parent_path() ? opts_.path.parent_path() : fs::path(".");
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string n = it->path().filename().string();
    if (n.size() <= stem_.size() + ext_.size() || n.compare(0, stem_.size(), stem_) != 0 ||
        n.compare(n.size() - ext_.size(), ext_.size(), ext_) != 0)
      continue;
    std::string middle = n.substr(stem_.size(), n.size() - stem_.size() - ext_.size());
    if (!all_digits(middle)) continue;
    // Zero-padded to compare numbers as strings, whatever their length.
    found.emplace_back(std::string(40 - std::min<std::size_t>(40, middle.size()), '0') + middle,
                       it->path());
  }
  std::sort(found.begin(), found.end());
  std::vector<fs::path> out;
  for (auto& f : found) out.push_back(std::move(f.second));
  return out;
}

void rotating_file::prune() {
  if (opts_.max_archives == 0) return;
  auto list = archives();
  std::size_t remove = list.size();
  if (opts_.max_archives > 0)
    remove = list.size() > std::size_t(opts_.max_archives) ? list.size() - opts_.max_archives : 0;
  for (std::size_t i = 0; i < remove; ++i) {
    std::error_code ec;
    fs::remove(list[i], ec);
    if (ec) report("cannot remove " + quoted(list[i]), ec.value());
  }
}

void rotating_file::rotate() {
  ::close(fd_);
  fd_ = -1;
  const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(now().time_since_epoch());
  const fs::path dir = opts_.path.parent_path();
  // Two rotations within one clock tick must not overwrite an archive.
  fs::path target;
  std::error_code ec;
  for (auto n = ns.count();; ++n) {
    target = dir / (stem_ + std::to_string(n) + ext_);
    if (!fs::exists(target, ec)) break;
  }
  fs::rename(opts_.path, target, ec);
  if (ec) report("cannot rename " + quoted(opts_.path) + " to " + quoted(target), ec.value());
  prune();
  try {
    open();
  } catch (const std::system_error& e) {
    report("cannot open " + quoted(opts_.path), e.code().value());
  }
}

void rotating_file::report(std::string_view what, int err) {
  if (reported_) return;
  reported_ = true;
  std::fprintf(stderr, "esmd: log_file: %.*s: %s\n", int(what.size()), what.data(),
               std::strerror(err));
}

void rotating_file::write(std::string_view data) {
  if (fd_ < 0) {
    try {
      open();
    } catch (const std::system_error& e) {
      report("cannot open " + quoted(opts_.path), e.code().value());
      return;
    }
  }
  // As Consul: checked before writing, so a file ends with the record that reached the limit.
  if ((opts_.max_bytes > 0 && bytes_ >= opts_.max_bytes) || now() - created_ >= opts_.duration) {
    rotate();
    if (fd_ < 0) return;
  }
  while (!data.empty()) {
    const ssize_t n = ::write(fd_, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      report("cannot write " + quoted(opts_.path), errno);
      return;
    }
    bytes_ += n;
    data.remove_prefix(static_cast<std::size_t>(n));
  }
  reported_ = false;
}

}  // namespace esm::log::detail
