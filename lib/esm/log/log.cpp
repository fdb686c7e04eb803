// The Boost.Log wiring: one core, one synchronous sink per output. This is the only
// translation unit that includes Boost.Log (its headers are heavy).
//
// A record carries a pointer to the caller's detail::record (message and fields live in the
// caller's full-expression). That is safe because every sink is synchronous: push_record
// returns only after all sinks have written. Never add an asynchronous sink here.
#include "esm/log/log.hpp"

#include <atomic>
#include <cstdio>
#include <mutex>
#include <ostream>
#include <stdexcept>
#include <vector>

#include <boost/log/attributes/constant.hpp>
#include <boost/log/attributes/value_extraction.hpp>
#include <boost/log/core/core.hpp>
#include <boost/log/core/record.hpp>
#include <boost/log/sinks/basic_sink_backend.hpp>
#include <boost/log/sinks/sync_frontend.hpp>
#include <boost/log/utility/exception_handler.hpp>

#include "esm/log/format.hpp"
#include "esm/log/log_file.hpp"
#include "esm/log/syslog.hpp"
#include "esm/util/duration.hpp"

namespace esm::log {
namespace {

namespace bl = boost::log;

constexpr char record_attribute[] = "EsmRecord";

std::atomic<int> g_min_level{static_cast<int>(level::info)};

// What write() needs besides the sinks; replaced as a whole by init().
struct runtime {
  std::string name = "esmd";
  std::function<std::chrono::system_clock::time_point()> clock;

  std::chrono::system_clock::time_point now() const {
    return clock ? clock() : std::chrono::system_clock::now();
  }
};

std::mutex g_mutex;  // guards g_runtime and g_sinks
std::shared_ptr<const runtime> g_runtime;
std::vector<boost::shared_ptr<bl::sinks::sink>> g_sinks;
std::atomic<bool> g_configured{false};

const detail::record* record_of(const bl::record_view& rec) {
  auto v = bl::extract<const detail::record*>(record_attribute, rec);
  return v ? *v : nullptr;
}

std::string render(const detail::record& r, bool json, bool header = true) {
  std::string line;
  line.reserve(128);
  if (json)
    detail::append_json(line, r);
  else
    detail::append_text(line, r, header);
  return line;
}

class console_backend : public bl::sinks::basic_sink_backend<bl::sinks::synchronized_feeding> {
 public:
  console_backend(bool json, std::shared_ptr<std::ostream> stream)
      : json_(json), stream_(std::move(stream)) {}

  void consume(const bl::record_view& rec) {
    const detail::record* r = record_of(rec);
    if (r == nullptr) return;
    const std::string line = render(*r, json_);
    if (stream_) {
      stream_->write(line.data(), static_cast<std::streamsize>(line.size()));
      stream_->flush();
    } else {
      std::fwrite(line.data(), 1, line.size(), stdout);
      std::fflush(stdout);
    }
  }

 private:
  bool json_;
  std::shared_ptr<std::ostream> stream_;  // null: stdout
};

class file_backend : public bl::sinks::basic_sink_backend<bl::sinks::synchronized_feeding> {
 public:
  file_backend(bool json, std::unique_ptr<detail::rotating_file> file)
      : json_(json), file_(std::move(file)) {}

  void consume(const bl::record_view& rec) {
    if (const detail::record* r = record_of(rec)) file_->write(render(*r, json_));
  }

 private:
  bool json_;
  std::unique_ptr<detail::rotating_file> file_;
};

class syslog_backend : public bl::sinks::basic_sink_backend<bl::sinks::synchronized_feeding> {
 public:
  syslog_backend(bool json, std::unique_ptr<detail::syslog_client> client)
      : json_(json), client_(std::move(client)) {}

  void consume(const bl::record_view& rec) {
    if (const detail::record* r = record_of(rec))
      client_->send(r->lvl, r->time, render(*r, json_, false));
  }

 private:
  bool json_;
  std::unique_ptr<detail::syslog_client> client_;
};

template <class Backend>
boost::shared_ptr<bl::sinks::sink> make_sink(boost::shared_ptr<Backend> backend) {
  return boost::make_shared<bl::sinks::synchronous_sink<Backend>>(std::move(backend));
}

std::string facility_names() {
  return "KERN, USER, MAIL, DAEMON, AUTH, SYSLOG, LPR, NEWS, UUCP, CRON, AUTHPRIV, FTP, "
         "LOCAL0..LOCAL7";
}

// Builds every sink before touching the core, so a failure leaves the old ones in place.
void configure(const settings& s, bool apply_level) {
  auto rt = std::make_shared<runtime>();
  rt->name = s.name;
  rt->clock = s.clock;

  std::vector<boost::shared_ptr<bl::sinks::sink>> sinks;
  sinks.push_back(make_sink(boost::make_shared<console_backend>(s.json, s.console)));

  if (!s.file.empty()) {
    detail::rotating_file::options o;
    o.path = detail::resolve_log_file_path(s.file);
    o.max_bytes = s.rotate_bytes;
    o.duration = s.rotate_duration;
    o.max_archives = s.rotate_max_files;
    o.clock = s.clock;
    auto file = std::make_unique<detail::rotating_file>(std::move(o));
    sinks.push_back(make_sink(boost::make_shared<file_backend>(s.json, std::move(file))));
  }

  if (s.syslog) {
    const auto facility = detail::parse_syslog_facility(s.syslog_facility);
    if (!facility)
      throw std::runtime_error("syslog_facility: unknown facility \"" + s.syslog_facility +
                               "\" (expected one of " + facility_names() + ")");
    auto client = std::make_unique<detail::syslog_client>(*facility, s.name, s.syslog_socket);
    sinks.push_back(make_sink(boost::make_shared<syslog_backend>(s.json, std::move(client))));
  }

  auto core = bl::core::get();
  std::lock_guard lock(g_mutex);
  // A full disk or a closed stdout must never turn a log call into an exception.
  core->set_exception_handler(bl::make_exception_suppressor());
  for (auto& old : g_sinks) core->remove_sink(old);
  g_sinks = std::move(sinks);
  for (auto& sink : g_sinks) core->add_sink(sink);
  g_runtime = std::move(rt);
  if (apply_level) g_min_level.store(static_cast<int>(s.min_level), std::memory_order_relaxed);
  g_configured.store(true, std::memory_order_release);
}

std::shared_ptr<const runtime> current_runtime() {
  if (!g_configured.load(std::memory_order_acquire)) {
    static std::once_flag once;
    std::call_once(once, [] {
      if (!g_configured.load(std::memory_order_acquire)) configure(settings{}, false);
    });
  }
  std::lock_guard lock(g_mutex);
  return g_runtime;
}

}  // namespace

field::field(std::string_view k, double v)
    : key(k), value(detail::go_float_text(v)), kind(field_kind::real), real(v) {}
field::field(std::string_view k, std::chrono::nanoseconds v)
    : key(k), value(util::format_go_duration(v)) {}

std::optional<level> parse_level(std::string_view t) {
  std::string u;
  for (char c : t) u += char(c >= 'a' && c <= 'z' ? c - 32 : c);
  if (u == "TRACE") return level::trace;
  if (u == "DEBUG") return level::debug;
  if (u == "INFO") return level::info;
  if (u == "WARN") return level::warn;
  if (u == "ERR" || u == "ERROR") return level::error;
  return std::nullopt;
}

std::string_view level_name(level l) {
  static constexpr std::string_view names[] = {"TRACE", "DEBUG", "INFO", "WARN", "ERROR"};
  return names[static_cast<int>(l)];
}

void init(const settings& s) { configure(s, true); }

void set_level(level l) { g_min_level.store(static_cast<int>(l), std::memory_order_relaxed); }

level current_level() { return static_cast<level>(g_min_level.load(std::memory_order_relaxed)); }

bool enabled(level l) {
  return static_cast<int>(l) >= g_min_level.load(std::memory_order_relaxed);
}

void write(level l, std::string_view message, std::initializer_list<field> fields) {
  if (!enabled(l)) return;
  const auto rt = current_runtime();
  const detail::record r{l, rt->now(), rt->name, message,
                         std::span<const field>(fields.begin(), fields.size())};
  bl::attribute_set attrs;
  attrs.insert(record_attribute, bl::attributes::constant<const detail::record*>(&r));
  auto core = bl::core::get();
  if (bl::record rec = core->open_record(attrs)) core->push_record(std::move(rec));
}

}  // namespace esm::log
