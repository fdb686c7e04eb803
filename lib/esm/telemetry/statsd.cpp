#include "esm/telemetry/statsd.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <memory>
#include <optional>
#include <string_view>
#include <system_error>

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ip/udp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/write.hpp>

#include "esm/log/log.hpp"
#include "esm/util/async.hpp"

namespace esm::telemetry {

namespace asio = boost::asio;
using async::tuple_awaitable;

bool circonus_configured(const config::telemetry_config& t) {
  for (auto* v : {&t.circonus_api_app, &t.circonus_api_token, &t.circonus_api_url, &t.circonus_broker_id,
                  &t.circonus_broker_select_tag, &t.circonus_check_display_name,
                  &t.circonus_check_force_metric_activation, &t.circonus_check_id,
                  &t.circonus_check_instance_id, &t.circonus_check_search_tag, &t.circonus_check_tags,
                  &t.circonus_submission_interval, &t.circonus_submission_url})
    if (!v->empty()) return true;
  return false;
}

namespace {

// go-metrics' flattenKey: ':' and ' ' would break the line format.
std::string sanitize(std::string s) {
  for (auto& c : s)
    if (c == ':' || c == ' ') c = '_';
  return s;
}

std::string go_float(double v) {  // Go's %f
  char buf[64];
  std::snprintf(buf, sizeof buf, "%f", v);
  return buf;
}

std::string series_id(const metric_family& f, const sample& x) {
  std::string id = f.name;
  for (auto& l : x.labels) {
    id += '\x1f';
    id += l.name;
    id += '=';
    id += l.value;
  }
  return id;
}

}  // namespace

std::vector<std::string> format_lines(const std::vector<metric_family>& families, const telemetry_settings& s,
                                      sink_kind kind, flush_state& previous) {
  std::vector<std::string> out;
  bool dog = kind == sink_kind::dogstatsd;
  std::string global_tags;
  if (dog)
    for (auto& t : s.dogstatsd_tags) {
      if (!global_tags.empty()) global_tags += ',';
      global_tags += t;
    }
  for (auto& f : families) {
    auto type = sink_type(f);  // go-metrics' kind: gauge, counter; esmd's histograms
    if (type == metric_type::summary) continue;
    // go-metrics filters the key with the host name in it, before the DogStatsD sink splices
    // the host out again.
    auto filter_key = sink_key(f, s, true);
    if (!allow_metric(s, filter_key)) continue;
    auto base = dog ? sink_key(f, s, false) : filter_key;
    for (auto& x : f.samples) {
      std::string key = base;
      std::string tags = global_tags;
      for (auto& l : x.labels) {
        if (dog) {
          if (!tags.empty()) tags += ',';
          tags += sanitize(l.name);
          if (!l.value.empty()) tags += ":" + sanitize(l.value);
        } else {
          key += '.';
          key += l.value;
        }
      }
      key = sanitize(std::move(key));
      auto id = series_id(f, x);
      std::string value;
      std::string_view suffix;
      switch (type) {
        case metric_type::gauge:
        case metric_type::untyped:  // sink_type never says untyped
          value = dog ? format_number(x.value) : go_float(x.value);
          suffix = "g";
          break;
        case metric_type::counter: {
          auto& last = previous.last[id];
          if (x.value < last) last = 0;  // the source restarted from zero
          double delta = x.value - last;
          // DogStatsD counts go out as whole numbers, as datadog-go's Count (an int64) sends
          // them, which every DogStatsD receiver reads. Only what was sent is taken off: the
          // fraction stays for the next flush, else a counter growing 0.3 per flush
          // (process_cpu_seconds_total) would be floored to 0 forever.
          if (dog) delta = std::floor(delta);
          if (delta <= 0) continue;
          last = dog ? last + delta : x.value;
          value = dog ? format_number(delta) : go_float(delta);
          suffix = "c";
          break;
        }
        case metric_type::histogram: {
          if (!x.histogram) continue;
          auto& last_count = previous.last[id + "\x1f_count"];
          auto& last_sum = previous.last[id + "\x1f_sum"];
          double count = static_cast<double>(x.histogram->count), sum = x.histogram->sum;
          double dc = count - last_count, ds = sum - last_sum;
          if (count < last_count) dc = count, ds = sum;
          last_count = count;
          last_sum = sum;
          if (dc <= 0) continue;
          double ms = ds / dc * 1000.0;
          value = dog ? format_number(ms) : go_float(ms);
          suffix = "ms";
          break;
        }
        case metric_type::summary: continue;
      }
      std::string line = key + ":" + value + "|" + std::string(suffix);
      if (dog && !tags.empty()) line += "|#" + tags;
      line += '\n';
      out.push_back(std::move(line));
    }
  }
  return out;
}

std::vector<std::string> pack_lines(const std::vector<std::string>& lines, std::size_t max) {
  std::vector<std::string> out;
  std::string cur;
  for (auto& l : lines) {
    if (!cur.empty() && cur.size() + l.size() > max) {
      out.push_back(std::move(cur));
      cur.clear();
    }
    cur += l;
  }
  if (!cur.empty()) out.push_back(std::move(cur));
  return out;
}

namespace {

// "host:port", "[v6]:port".
bool split_address(const std::string& a, std::string& host, std::string& port) {
  auto colon = a.rfind(':');
  if (colon == std::string::npos || colon + 1 == a.size()) return false;
  host = a.substr(0, colon);
  port = a.substr(colon + 1);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  return true;
}

// A literal IP address and numeric port as an endpoint: those never go to the resolver,
// whose one thread may be stuck in another getaddrinfo.
template <class Endpoint>
std::optional<Endpoint> literal_endpoint(const std::string& host, const std::string& port) {
  boost::system::error_code ec;
  auto ip = asio::ip::make_address(host, ec);
  if (ec) return std::nullopt;
  unsigned number = 0;
  auto [end, err] = std::from_chars(port.data(), port.data() + port.size(), number);
  if (err != std::errc{} || end != port.data() + port.size() || number > 65535) return std::nullopt;
  return Endpoint(ip, static_cast<unsigned short>(number));
}

// Whether a sink works, logged at WARN once per change, never per packet or flush: the first
// failure with the address and the error, and the recovery at WARN too, so that whoever reads
// only warnings and saw the failure also sees that it ended.
struct sink_health {
  std::string name, address;
  bool failing = false;
  void failed(std::string_view error) {
    if (failing) return;
    failing = true;
    log::warn("Error sending metrics", {{"sink", name}, {"address", address}, {"error", error}});
  }
  void worked() {
    if (!failing) return;
    failing = false;
    log::warn("Sending metrics works again", {{"sink", name}, {"address", address}});
  }
};

// One lookup of a sink's host name at a time, shared by whoever waits for it and the
// resolver's completion. Asio 1.81's resolver runs getaddrinfo on a private thread and cannot
// cancel it once running: with DNS down it may take glibc many seconds, past the daemon's 5 s
// grace. So a waiter gives up at its deadline (the `wake` timer) or on cancellation and leaves
// the lookup running; the completion writes into this state, which its handler keeps alive,
// never into the waiter's frame, which may be gone by then. A later attempt does not queue a
// second query behind a stuck one (the resolver's thread runs them one after the other): it
// waits for the same lookup again and takes its answer when it has come.
template <class Protocol>
struct lookup_state : std::enable_shared_from_this<lookup_state<Protocol>> {
  using endpoint = typename Protocol::endpoint;
  explicit lookup_state(asio::any_io_executor ex) : resolver(ex), wake(ex) {}

  // Starts a lookup unless one is running or its answer waits to be taken.
  void begin(const std::string& host, const std::string& port, sink_stats& stats) {
    if (running || done) return;
    running = true;
    ++stats.lookups;
    resolver.async_resolve(host, port, [self = this->shared_from_this()](
                                           boost::system::error_code ec, typename Protocol::resolver::results_type r) {
      self->running = false;
      self->done = true;
      self->ec = ec;
      self->endpoints.clear();
      for (auto& e : r) self->endpoints.push_back(e.endpoint());
      self->wake.cancel();  // wakes the waiter, if any is left
    });
  }
  // The answer of the finished lookup (done), which makes room for the next one.
  std::string take(std::vector<endpoint>& out) {
    done = false;
    out = std::move(endpoints);
    endpoints.clear();
    if (ec) return ec.message();
    if (out.empty()) return "no address found";
    return {};
  }

  typename Protocol::resolver resolver;
  asio::steady_timer wake;
  bool running = false, done = false;
  boost::system::error_code ec;
  std::vector<endpoint> endpoints;
};

struct udp_target {
  sink_health health;  // name: "statsd", "dogstatsd"
  std::string host, port;
  std::size_t max_packet = 1400;
  sink_kind kind = sink_kind::statsd;
  flush_state previous;
  std::optional<asio::ip::udp::endpoint> endpoint;
  std::shared_ptr<lookup_state<asio::ip::udp>> lookup;  // host names only
  std::unique_ptr<asio::ip::udp::socket> socket;
};

// The statsite sink's TCP connection: callbacks on the loop's executor, a bounded buffer, and
// reconnection with capped backoff. Kept alive by its pending handlers after close().
class statsite_conn : public std::enable_shared_from_this<statsite_conn> {
 public:
  statsite_conn(asio::any_io_executor ex, std::string address, const sink_options& o, sink_stats& st)
      : socket_(ex), timer_(ex), lookup_(std::make_shared<lookup_state<asio::ip::tcp>>(ex)), opts_(o),
        stats_(st), backoff_(o.reconnect_min) {
    health_.name = "statsite";
    health_.address = std::move(address);
  }

  void start() { connect(); }

  void enqueue(const std::vector<std::string>& lines) {
    for (auto& l : lines) {
      if (pending_.size() + l.size() > opts_.statsite_buffer) {
        stats_.statsite_dropped_bytes += l.size();
        continue;
      }
      pending_ += l;
    }
    if (connected_ && !writing_) write();
  }

  // `stats_` is the caller's: nothing may touch it after this (closed_ guards every handler).
  void close() {
    closed_ = true;
    boost::system::error_code ignored;
    timer_.cancel();
    lookup_->wake.cancel();  // the lookup itself may run on; its answer is dropped with the state
    socket_.close(ignored);
  }

 private:
  void connect() {
    if (closed_) return;
    std::string host, port;
    if (!split_address(health_.address, host, port)) {
      ++stats_.resolve_failures;
      fail("invalid address");
      return;
    }
    if (auto ep = literal_endpoint<asio::ip::tcp::endpoint>(host, port)) {
      connect_to({*ep});
      return;
    }
    lookup_->begin(host, port, stats_);
    if (!lookup_->running) {
      looked_up();
      return;
    }
    lookup_->wake.expires_after(opts_.lookup_timeout);
    lookup_->wake.async_wait([self = shared_from_this()](boost::system::error_code) { self->looked_up(); });
  }

  // After the lookup's answer or its deadline, whichever came first.
  void looked_up() {
    if (closed_) return;
    if (!lookup_->done) {
      ++stats_.lookup_timeouts;
      ++stats_.resolve_failures;
      fail("host name lookup timed out");
      return;
    }
    std::vector<asio::ip::tcp::endpoint> eps;
    auto error = lookup_->take(eps);
    if (!error.empty()) {
      ++stats_.resolve_failures;
      fail("host name lookup: " + error);
      return;
    }
    connect_to(std::move(eps));
  }

  void connect_to(std::vector<asio::ip::tcp::endpoint> eps) {
    endpoints_ = std::move(eps);
    asio::async_connect(socket_, endpoints_,
                        [self = shared_from_this()](boost::system::error_code ec, const asio::ip::tcp::endpoint&) {
                          if (self->closed_) return;
                          if (ec) {
                            ++self->stats_.statsite_connect_failures;
                            self->fail(ec.message());
                            return;
                          }
                          ++self->stats_.statsite_connects;
                          self->connected_ = true;
                          self->backoff_ = self->opts_.reconnect_min;
                          self->health_.worked();
                          if (!self->pending_.empty()) self->write();
                        });
  }

  void write() {
    writing_ = true;
    sending_.swap(pending_);
    pending_.clear();
    asio::async_write(socket_, asio::buffer(sending_),
                      [self = shared_from_this()](boost::system::error_code ec, std::size_t n) {
                        self->writing_ = false;
                        if (self->closed_) return;
                        self->stats_.statsite_bytes += n;
                        if (ec) {
                          self->stats_.statsite_dropped_bytes += self->sending_.size() - n;
                          self->sending_.clear();
                          self->fail(ec.message());
                          return;
                        }
                        self->sending_.clear();
                        if (!self->pending_.empty()) self->write();
                      });
  }

  void fail(const std::string& why) {
    health_.failed(why);
    connected_ = false;
    boost::system::error_code ignored;
    socket_.close(ignored);
    timer_.expires_after(backoff_);
    backoff_ = std::min(backoff_ * 2, opts_.reconnect_max);
    timer_.async_wait([self = shared_from_this()](boost::system::error_code ec) {
      if (!ec && !self->closed_) self->connect();
    });
  }

  asio::ip::tcp::socket socket_;
  asio::steady_timer timer_;
  std::shared_ptr<lookup_state<asio::ip::tcp>> lookup_;
  std::vector<asio::ip::tcp::endpoint> endpoints_;
  sink_health health_;
  sink_options opts_;
  sink_stats& stats_;
  std::chrono::milliseconds backoff_;
  std::string pending_, sending_;
  bool connected_ = false, writing_ = false, closed_ = false;
};

// Waits for a UDP target's lookup, begun earlier, at most `timeout`; returns at once when the
// caller is cancelled. Sets the endpoint, or returns why there is none.
asio::awaitable<std::string> await_lookup(udp_target& t, std::chrono::milliseconds timeout, sink_stats& stats) {
  auto& l = *t.lookup;
  if (l.running) {
    auto cs = co_await asio::this_coro::cancellation_state;
    if (!async::is_cancelled(cs)) {  // a stop that came before the wait cancels no later one
      l.wake.expires_after(timeout);
      co_await l.wake.async_wait(tuple_awaitable);  // the answer cancels it; so does a stop
    }
  }
  std::string error;
  if (!l.done) {
    auto cs = co_await asio::this_coro::cancellation_state;
    if (!async::is_cancelled(cs)) ++stats.lookup_timeouts;
    error = "host name lookup timed out";
  } else {
    std::vector<asio::ip::udp::endpoint> eps;
    error = l.take(eps);
    if (error.empty()) {
      // One address for the datagrams: the first IPv4 one if any, as Go's ResolveUDPAddr
      // (go-metrics' statsd sinks) picks it; else the first.
      auto v4 = std::find_if(eps.begin(), eps.end(), [](const auto& e) { return e.address().is_v4(); });
      t.endpoint = v4 != eps.end() ? *v4 : eps.front();
    }
    else error = "host name lookup: " + error;
  }
  if (!error.empty()) ++stats.resolve_failures;
  co_return error;
}

// Sends the flush; returns the first error, empty when every datagram went out.
std::string send_udp(udp_target& t, const std::vector<std::string>& lines, sink_stats& stats) {
  std::string first_error;
  for (auto& packet : pack_lines(lines, t.max_packet)) {
    boost::system::error_code ec;
    t.socket->send_to(asio::buffer(packet), *t.endpoint, 0, ec);
    if (ec) {
      ++stats.send_errors;
      if (first_error.empty()) first_error = ec.message();
      continue;
    }
    ++stats.packets;
    stats.packet_bytes += packet.size();
  }
  return first_error;
}

std::string open_socket(asio::any_io_executor ex, udp_target& t, sink_stats& stats) {
  if (t.socket) return {};
  boost::system::error_code ec;
  auto sock = std::make_unique<asio::ip::udp::socket>(ex);
  sock->open(t.endpoint->protocol(), ec);
  if (!ec) sock->non_blocking(true, ec);
  if (ec) {
    ++stats.send_errors;
    return ec.message();
  }
  t.socket = std::move(sock);
  return {};
}

}  // namespace

asio::awaitable<void> run_statsd_sinks(asio::any_io_executor ex, const daemon::daemon_status& st,
                                       telemetry_settings s, sink_options o, sink_stats* stats) {
  sink_stats local;
  auto& ss = stats ? *stats : local;
  std::vector<udp_target> udp;
  auto add_udp = [&](std::string name, const std::string& address, std::size_t max, sink_kind kind) {
    udp_target t;
    t.health.name = std::move(name);
    t.health.address = address;
    t.max_packet = max;
    t.kind = kind;
    if (split_address(address, t.host, t.port)) {
      t.endpoint = literal_endpoint<asio::ip::udp::endpoint>(t.host, t.port);
      if (!t.endpoint) t.lookup = std::make_shared<lookup_state<asio::ip::udp>>(ex);
    }
    udp.push_back(std::move(t));
  };
  if (!s.statsd_address.empty()) add_udp("statsd", s.statsd_address, o.statsd_max_packet, sink_kind::statsd);
  if (!s.dogstatsd_address.empty())
    add_udp("dogstatsd", s.dogstatsd_address, o.dogstatsd_max_packet, sink_kind::dogstatsd);
  if (udp.empty() && s.statsite_address.empty()) co_return;

  // Any stop ends the sinks: they hold nothing that needs a clean-up beyond closing.
  co_await asio::this_coro::reset_cancellation_state(asio::enable_total_cancellation());
  co_await asio::this_coro::throw_if_cancelled(false);

  std::shared_ptr<statsite_conn> site;
  flush_state site_previous;
  if (!s.statsite_address.empty()) {
    site = std::make_shared<statsite_conn>(ex, s.statsite_address, o, ss);
    site->start();
  }
  std::vector<std::string> errors(udp.size());
  for (;;) {
    bool ran = co_await async::sleep_for(o.interval);
    if (!ran) break;
    // Every host name's lookup first, then the waits: they run in turn on the resolver's
    // thread, but no sink waits for another's deadline on top of its own.
    for (auto& t : udp)
      if (!t.endpoint && t.lookup) t.lookup->begin(t.host, t.port, ss);
    for (std::size_t i = 0; i < udp.size(); ++i) {
      auto& t = udp[i];
      errors[i].clear();
      if (t.endpoint) continue;
      if (!t.lookup) {
        ++ss.resolve_failures;
        errors[i] = "invalid address";
        continue;
      }
      auto error = co_await await_lookup(t, o.lookup_timeout, ss);
      errors[i] = std::move(error);
      auto cs = co_await asio::this_coro::cancellation_state;  // named: see async.hpp on g++ 12
      if (async::is_cancelled(cs)) break;
    }
    auto cs = co_await asio::this_coro::cancellation_state;
    if (async::is_cancelled(cs)) break;
    auto families = collect_all(st, s);
    ++ss.flushes;
    for (std::size_t i = 0; i < udp.size(); ++i) {
      auto& t = udp[i];
      if (errors[i].empty()) errors[i] = open_socket(ex, t, ss);
      // Formatted only when it can be sent: until then the counters' deltas add up.
      if (errors[i].empty()) errors[i] = send_udp(t, format_lines(families, s, t.kind, t.previous), ss);
      if (errors[i].empty()) t.health.worked();
      else t.health.failed(errors[i]);
    }
    if (site) site->enqueue(format_lines(families, s, sink_kind::statsite, site_previous));
  }
  if (site) site->close();
}

}  // namespace esm::telemetry
