#include "esm/telemetry/statsd.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>
#include <optional>

#include <boost/asio/connect.hpp>
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
    if (f.type == metric_type::summary) continue;
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
      std::string value, type;
      switch (f.type) {
        case metric_type::gauge:
          value = dog ? format_number(x.value) : go_float(x.value);
          type = "g";
          break;
        case metric_type::counter:
        case metric_type::untyped: {
          auto& last = previous.last[id];
          double delta = x.value - last;
          if (x.value < last) delta = x.value;  // the source restarted from zero
          last = x.value;
          if (delta <= 0) continue;
          value = dog ? format_number(std::floor(delta)) : go_float(delta);
          type = "c";
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
          type = "ms";
          break;
        }
        case metric_type::summary: continue;
      }
      std::string line = key + ":" + value + "|" + type;
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

struct udp_target {
  std::string name;  // "statsd", "dogstatsd"
  std::string address;
  std::size_t max_packet = 1400;
  sink_kind kind = sink_kind::statsd;
  flush_state previous;
  std::optional<asio::ip::udp::endpoint> endpoint;
  std::unique_ptr<asio::ip::udp::socket> socket;
  bool failing = false;
};

// The statsite sink's TCP connection: callbacks on the loop's executor, a bounded buffer, and
// reconnection with capped backoff. Kept alive by its pending handlers after close().
class statsite_conn : public std::enable_shared_from_this<statsite_conn> {
 public:
  statsite_conn(asio::any_io_executor ex, std::string address, const sink_options& o, sink_stats& st)
      : socket_(ex), resolver_(ex), timer_(ex), address_(std::move(address)), opts_(o), stats_(st),
        backoff_(o.reconnect_min) {}

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

  void close() {
    closed_ = true;
    boost::system::error_code ignored;
    timer_.cancel();
    resolver_.cancel();
    socket_.close(ignored);
  }

 private:
  void connect() {
    if (closed_) return;
    std::string host, port;
    if (!split_address(address_, host, port)) {
      fail("invalid address");
      return;
    }
    resolver_.async_resolve(host, port, [self = shared_from_this()](boost::system::error_code ec,
                                                                    asio::ip::tcp::resolver::results_type r) {
      if (self->closed_) return;
      if (ec) {
        ++self->stats_.resolve_failures;
        self->fail(ec.message());
        return;
      }
      asio::async_connect(self->socket_, r, [self](boost::system::error_code ec2, const asio::ip::tcp::endpoint&) {
        if (self->closed_) return;
        if (ec2) {
          ++self->stats_.statsite_connect_failures;
          self->fail(ec2.message());
          return;
        }
        ++self->stats_.statsite_connects;
        self->connected_ = true;
        self->backoff_ = self->opts_.reconnect_min;
        if (self->failing_) log::info("Connected to statsite", {{"address", self->address_}});
        self->failing_ = false;
        if (!self->pending_.empty()) self->write();
      });
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
    if (!failing_) log::warn("Error sending to statsite, reconnecting", {{"address", address_}, {"error", why}});
    failing_ = true;
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
  asio::ip::tcp::resolver resolver_;
  asio::steady_timer timer_;
  std::string address_;
  sink_options opts_;
  sink_stats& stats_;
  std::chrono::milliseconds backoff_;
  std::string pending_, sending_;
  bool connected_ = false, writing_ = false, closed_ = false, failing_ = false;
};

// Resolves a UDP target's address once (numeric addresses without a query).
asio::awaitable<void> resolve(udp_target& t, sink_stats& stats) {
  std::string host, port;
  if (!split_address(t.address, host, port)) {
    ++stats.resolve_failures;
    co_return;
  }
  asio::ip::udp::resolver resolver(co_await asio::this_coro::executor);
  auto [ec, r] = co_await resolver.async_resolve(host, port, tuple_awaitable);
  if (ec || r.empty()) {
    ++stats.resolve_failures;
    co_return;
  }
  t.endpoint = r.begin()->endpoint();
}

void send_udp(udp_target& t, const std::vector<std::string>& lines, sink_stats& stats) {
  if (!t.endpoint || !t.socket) return;
  for (auto& packet : pack_lines(lines, t.max_packet)) {
    boost::system::error_code ec;
    t.socket->send_to(asio::buffer(packet), *t.endpoint, 0, ec);
    if (ec) {
      ++stats.send_errors;
      if (!t.failing) log::warn("Error sending metrics", {{"sink", t.name}, {"address", t.address}, {"error", ec.message()}});
      t.failing = true;
      continue;
    }
    t.failing = false;
    ++stats.packets;
    stats.packet_bytes += packet.size();
  }
}

bool open_socket(asio::any_io_executor ex, udp_target& t, sink_stats& stats) {
  if (t.socket || !t.endpoint) return static_cast<bool>(t.socket);
  boost::system::error_code ec;
  auto sock = std::make_unique<asio::ip::udp::socket>(ex);
  sock->open(t.endpoint->protocol(), ec);
  if (!ec) sock->non_blocking(true, ec);
  if (ec) {
    ++stats.send_errors;
    return false;
  }
  t.socket = std::move(sock);
  return true;
}

}  // namespace

asio::awaitable<void> run_statsd_sinks(asio::any_io_executor ex, const daemon::daemon_status& st,
                                       telemetry_settings s, sink_options o, sink_stats* stats) {
  sink_stats local;
  auto& ss = stats ? *stats : local;
  std::vector<udp_target> udp;
  if (!s.statsd_address.empty()) {
    udp_target t;
    t.name = "statsd";
    t.address = s.statsd_address;
    t.max_packet = o.statsd_max_packet;
    t.kind = sink_kind::statsd;
    udp.push_back(std::move(t));
  }
  if (!s.dogstatsd_address.empty()) {
    udp_target t;
    t.name = "dogstatsd";
    t.address = s.dogstatsd_address;
    t.max_packet = o.dogstatsd_max_packet;
    t.kind = sink_kind::dogstatsd;
    udp.push_back(std::move(t));
  }
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
  for (;;) {
    bool ran = co_await async::sleep_for(o.interval);
    if (!ran) break;
    for (auto& t : udp)
      if (!t.endpoint) co_await resolve(t, ss);
    if (async::is_cancelled(co_await asio::this_coro::cancellation_state)) break;
    auto families = collect_all(st, s);
    ++ss.flushes;
    for (auto& t : udp) {
      auto lines = format_lines(families, s, t.kind, t.previous);
      if (open_socket(ex, t, ss)) send_udp(t, lines, ss);
    }
    if (site) site->enqueue(format_lines(families, s, sink_kind::statsite, site_previous));
  }
  if (site) site->close();
}

}  // namespace esm::telemetry
