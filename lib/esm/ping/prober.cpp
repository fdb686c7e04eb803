#include "esm/ping/prober.hpp"

#include <algorithm>
#include <map>
#include <unordered_set>

#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/this_coro.hpp>

#include "esm/checks/write_plan.hpp"
#include "esm/consul/client.hpp"
#include "esm/log/log.hpp"
#include "esm/util/async.hpp"
#include "esm/util/backoff.hpp"

namespace esm::ping {

namespace asio = boost::asio;
using namespace asio::experimental::awaitable_operators;
using namespace std::chrono_literals;
using clock = std::chrono::steady_clock;
using async::tuple_awaitable;

namespace {

// The segment a node's coordinate belongs to (consul's MetaSegmentKey).
constexpr std::string_view segment_meta = "consul-network-segment";
// How long a resolved name is used before it is looked up again.
constexpr auto resolve_ttl = 60s;
// Nodes that join later are first pinged within this (or the interval, if shorter).
constexpr auto join_window = 1s;
// Key lists after nodes joined are at least this far apart.
constexpr auto relist_spacing = 1s;
// A coordinate that moved less than this is not written (consul-esm's rule).
constexpr double min_coordinate_move = 1e-3;

asio::awaitable<bool> stopped() {
  co_return async::is_cancelled(co_await asio::this_coro::cancellation_state);
}

sys_nanoseconds wall_now() {
  return std::chrono::time_point_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now());
}

coordinate from_consul(const consul::coordinate_vec& c) {
  coordinate out;
  out.vec = c.vec;
  out.error = c.error;
  out.adjustment = c.adjustment;
  out.height = c.height;
  return out;
}

consul::coordinate_vec to_consul(const coordinate& c) {
  consul::coordinate_vec out;
  out.vec = c.vec;
  out.error = c.error;
  out.adjustment = c.adjustment;
  out.height = c.height;
  return out;
}

std::string_view to_string(node_status s) {
  switch (s) {
    case node_status::alive: return "passing";
    case node_status::dead: return "critical";
    case node_status::unknown: break;
  }
  return "unknown";
}

bool is_stale(const consul::txn_error& e) {
  return e.what.find("index is stale") != std::string::npos;
}

std::optional<asio::ip::address> literal_address(const std::string& text) {
  boost::system::error_code bad;
  auto ip = asio::ip::make_address(text, bad);
  if (bad) return std::nullopt;
  return ip;
}

// IPv6 proper: a v4-mapped address is pinged over IPv4.
bool is_v6(const asio::ip::address& a) { return a.is_v6() && !a.to_v6().is_v4_mapped(); }

// How long a failed lookup is reused before the name is looked up again.
constexpr auto resolve_failure_ttl = 10s;

}  // namespace

struct node_prober::slot {
  std::string name, address, partition, segment;
  std::uint64_t modify_index = 0;  // the catalog node's, for the reaping delete-cas
  std::uint64_t incarnation = 0;
  bool live = false;
  // The address to ping: the catalog address when it is one (parsed once, `literal`), else
  // the name's last lookup (until resolved_at + resolve_ttl).
  std::optional<asio::ip::address> ip;
  bool literal = false;
  clock::time_point resolved_at{};
  std::string resolve_error;                 // the last lookup's failure, cached briefly
  bool key_unknown = true;   // no key list or read covered this node since it joined or a
                             // write of its key had an unknown outcome
  bool node_gone = false;    // a reap found the node already deleted: only its key is left
  bool coord_known = false;  // `coord` says what Consul has (read, or written by us)
  node_status outcome = node_status::unknown;
  health_record record;
  probe_key key;
  std::uint64_t key_epoch = 0;       // write_epoch_ when this prober last changed the key
  bool reaped = false;               // deleted from the catalog by us: nothing more to write
  std::optional<coordinate> coord;   // what Consul has, as far as this prober knows
  bool coord_queued = false;
  bool write_queued = false;
  // A refusal (403) was logged at WARN: the next ones for this node go to DEBUG until a write
  // of it commits (every ping would otherwise log a line per node: a flood at 10 000 nodes).
  bool refusal_logged = false;
  bool coordinate_refusal_logged = false;  // a 403 on its coordinate update was logged
  std::uint64_t pings = 0;
  std::chrono::nanoseconds last_rtt{0};
  std::shared_ptr<async::stop_handle> running;
};

node_prober::node_prober(asio::any_io_executor ex, consul::client* consul, prober_settings s)
    : ex_(ex),
      consul_(consul),
      settings_(std::move(s)),
      pinger_(ex, settings_.kind),
      rng_(std::random_device{}()),
      resolver_(ex),
      schedule_wake_(ex),
      writer_wake_(ex),
      coordinate_wake_(ex),
      upkeep_wake_(ex),
      drained_(ex) {
  if (settings_.interval <= 0ms) settings_.interval = 10s;
  if (settings_.max_in_flight == 0) settings_.max_in_flight = 1;
  if (settings_.coordinate_writes_per_second <= 0) settings_.coordinate_writes_per_second = 1;
}

node_prober::~node_prober() = default;

bool node_prober::usable_coordinate(const coordinate& c) const {
  return is_valid(c) && c.vec.size() == vivaldi_.dimensionality;
}

node_prober::slot_ref node_prober::ref_of(std::uint32_t i) const {
  return {i, slots_[i]->incarnation};
}

node_prober::slot* node_prober::holder(slot_ref r) {
  if (r.index >= slots_.size()) return nullptr;
  auto* s = slots_[r.index].get();
  return s->live && s->incarnation == r.incarnation ? s : nullptr;
}

std::uint32_t node_prober::allocate() {
  std::uint32_t i;
  if (!free_.empty()) {
    i = free_.back();
    free_.pop_back();
    *slots_[i] = slot{};
  } else {
    i = static_cast<std::uint32_t>(slots_.size());
    slots_.push_back(std::make_unique<slot>());
  }
  slots_[i]->live = true;
  slots_[i]->incarnation = ++incarnations_;
  return i;
}

void node_prober::release(std::uint32_t i) {
  auto& s = *slots_[i];
  if (s.running) s.running->cancel();  // its coroutine finds the slot gone (incarnation)
  if (s.outcome == node_status::alive) --stats_.alive;
  if (s.outcome == node_status::dead) --stats_.dead;
  // Keep the incarnation: a reused slot gets a new one, so late answers miss it.
  auto inc = s.incarnation;
  s = slot{};
  s.incarnation = inc;
  free_.push_back(i);
}

void node_prober::set_nodes(const std::vector<consul::node>& nodes) {
  std::unordered_set<std::string_view> seen;
  seen.reserve(nodes.size());
  std::vector<std::uint32_t> added;
  for (auto& n : nodes) {
    seen.insert(n.name);
    auto seg_it = n.meta.find(std::string(segment_meta));
    std::string segment = seg_it == n.meta.end() ? std::string() : seg_it->second;
    auto it = index_.find(n.name);
    if (it != index_.end() && slots_[it->second]->reaped && slots_[it->second]->modify_index != n.modify_index) {
      // Reaped by us and registered again under the same name: a new node, fresh state.
      release(it->second);
      index_.erase(it);
      it = index_.end();
    }
    if (it != index_.end()) {
      auto& s = *slots_[it->second];
      if (s.address != n.address) {
        s.address = n.address;
        s.ip = literal_address(n.address);
        s.literal = s.ip.has_value();
        s.resolve_error.clear();
      }
      s.modify_index = n.modify_index;
      s.partition = n.partition;
      s.segment = std::move(segment);
      continue;
    }
    auto i = allocate();
    auto& s = *slots_[i];
    s.name = n.name;
    s.address = n.address;
    s.ip = literal_address(n.address);
    s.literal = s.ip.has_value();
    s.partition = n.partition;
    s.segment = std::move(segment);
    s.modify_index = n.modify_index;
    index_.emplace(n.name, i);
    added.push_back(i);
  }
  std::vector<std::string> gone;
  for (auto& [name, i] : index_)
    if (!seen.count(name)) gone.push_back(name);
  for (auto& name : gone) {
    auto it = index_.find(name);
    release(it->second);
    index_.erase(it);
  }
  stats_.nodes = index_.size();
  if (!added.empty()) {
    // Spread the newcomers so the ping rate stays even: over the whole interval at the start,
    // else over their share of it (a few within a second).
    auto now = clock::now();
    std::chrono::nanoseconds window = settings_.interval;
    if (started_) {
      auto share = std::chrono::nanoseconds(settings_.interval) * static_cast<std::int64_t>(added.size()) /
                   static_cast<std::int64_t>(std::max<std::size_t>(index_.size(), 1));
      window = std::clamp<std::chrono::nanoseconds>(share, std::min<std::chrono::nanoseconds>(join_window, settings_.interval),
                                                    settings_.interval);
    }
    started_ = true;
    std::shuffle(added.begin(), added.end(), rng_);
    std::uniform_real_distribution<double> jitter(0.0, 1.0);
    for (std::size_t k = 0; k < added.size(); ++k) {
      auto offset = std::chrono::duration_cast<std::chrono::nanoseconds>(
          window * ((static_cast<double>(k) + jitter(rng_)) / static_cast<double>(added.size())));
      schedule(added[k], now + offset);
    }
    relist_keys_ = true;
    upkeep_wake_.cancel();
    schedule_wake_.cancel();
  }
  compact();
  if (!gone.empty() || !added.empty())
    log::debug("Probe nodes changed", {{"nodes", index_.size()}, {"added", added.size()}, {"removed", gone.size()}});
}

// Removed nodes leave heap entries (skipped when popped) and write-queue entries (skipped at
// the flush); churn while the sockets are closed or the writer waits could pile them up.
void node_prober::compact() {
  auto limit = 2 * index_.size() + 1024;
  if (heap_.size() > limit) {
    std::erase_if(heap_, [&](const due_entry& e) { return holder({e.index, e.incarnation}) == nullptr; });
    std::make_heap(heap_.begin(), heap_.end(), std::greater<>());
  }
  if (write_queue_.size() > limit) {
    std::vector<std::uint32_t> kept;
    std::vector<bool> seen(slots_.size(), false);
    for (auto i : write_queue_)
      if (slots_[i]->live && slots_[i]->write_queued && !seen[i]) {
        seen[i] = true;
        kept.push_back(i);
      }
    write_queue_ = std::move(kept);
  }
}

void node_prober::schedule(std::uint32_t i, clock::time_point due) {
  heap_.push_back({due, i, slots_[i]->incarnation});
  std::push_heap(heap_.begin(), heap_.end(), std::greater<>());
}

void node_prober::respread(clock::time_point now) {
  heap_.clear();
  std::vector<std::uint32_t> all;
  all.reserve(index_.size());
  for (auto& [name, i] : index_) all.push_back(i);
  std::shuffle(all.begin(), all.end(), rng_);
  for (std::size_t k = 0; k < all.size(); ++k)
    schedule(all[k], now + std::chrono::nanoseconds(settings_.interval) * static_cast<std::int64_t>(k) /
                               static_cast<std::int64_t>(all.size()));
}

void node_prober::dispatch(clock::time_point now) {
  while (!heap_.empty() && heap_.front().due <= now && stats_.in_flight < settings_.max_in_flight) {
    std::pop_heap(heap_.begin(), heap_.end(), std::greater<>());
    auto e = heap_.back();
    heap_.pop_back();
    auto* s = holder({e.index, e.incarnation});
    if (!s) continue;  // removed; a re-added node has its own entry
    auto next = e.due + settings_.interval;
    if (s->running && !s->running->done()) {
      ++stats_.skipped_busy;  // one ping per node in flight
    } else if (!s->reaped) {
      start_ping(e.index, e.due);
    }
    schedule(e.index, next);
  }
}

void node_prober::start_ping(std::uint32_t i, clock::time_point due) {
  auto& s = *slots_[i];
  stats_.lateness.add(clock::now() - due);
  ++stats_.pings;
  ++s.pings;
  ++stats_.in_flight;
  stats_.max_in_flight = std::max(stats_.max_in_flight, stats_.in_flight);
  auto h = std::make_shared<async::stop_handle>();
  s.running = h;  // before start: the body may run inside it
  async::stop_handle::start(h, ex_, ping_node(ref_of(i)), [this](std::exception_ptr e) {
    bool was_full = stats_.in_flight >= settings_.max_in_flight;
    --stats_.in_flight;
    if (e) log::error("A node ping failed by an internal error", {{"error", async::what_of(e)}});
    if (was_full) schedule_wake_.cancel();
    if (stopping_ && stats_.in_flight == 0) drained_.cancel();
  });
}

namespace {

// One name lookup, waited for at most `timeout`. Asio 1.81 runs getaddrinfo on one private
// thread and cannot cancel it, so the lookup is left to finish on its own: its answer lands in
// this shared state, never in a coroutine frame that may be gone.
struct lookup {
  explicit lookup(asio::any_io_executor ex) : wake(ex) {}
  asio::steady_timer wake;
  bool done = false;
  boost::system::error_code ec;
  asio::ip::udp::resolver::results_type found;
};

}  // namespace

// Honours any cancellation (the node removed, the prober stopping): returns without an outcome.
asio::awaitable<void> node_prober::ping_node(slot_ref r) {
  co_await asio::this_coro::throw_if_cancelled(false);
  auto* s = holder(r);
  if (!s) co_return;
  std::string address = s->address;
  ping_outcome out;
  asio::ip::address ip;
  bool have = false;
  auto now = clock::now();
  if (s->ip && (s->literal || now - s->resolved_at < resolve_ttl)) {
    ip = *s->ip;
    have = true;
  } else if (!s->resolve_error.empty() && now - s->resolved_at < resolve_failure_ttl) {
    out.error = s->resolve_error;
  } else if (address.empty()) {
    out.error = "the node has no address";
  } else {
    auto l = std::make_shared<lookup>(ex_);
    resolver_.async_resolve(address, "", [l](boost::system::error_code ec, asio::ip::udp::resolver::results_type found) {
      l->ec = ec;
      l->found = std::move(found);
      l->done = true;
      l->wake.cancel();
    });
    l->wake.expires_after(settings_.timeout);
    if (!l->done) co_await l->wake.async_wait(tuple_awaitable);
    bool stop_now = co_await stopped();
    if (stop_now) co_return;
    s = holder(r);
    if (!s) co_return;
    s->resolved_at = clock::now();
    if (!l->done) {
      out.error = "resolving \"" + address + "\": no answer within " + std::to_string(settings_.timeout.count()) + " ms";
    } else if (l->ec || l->found.empty()) {
      out.error = "resolving \"" + address + "\": " + (l->ec ? l->ec.message() : std::string("no address"));
    } else {
      // IPv4 first when the name has both, as ping does by default.
      ip = l->found.begin()->endpoint().address();
      for (auto& e : l->found)
        if (e.endpoint().address().is_v4()) {
          ip = e.endpoint().address();
          break;
        }
      s->ip = ip;
      s->resolve_error.clear();
      have = true;
    }
    if (!have) s->resolve_error = out.error;
  }
  if (have) {
    // A family this process may not ping says nothing about the node: no outcome at all.
    if (!pinger_.available(is_v6(ip))) co_return;
    out = co_await pinger_.ping(ip, settings_.timeout);
    bool stop_now = co_await stopped();
    if (stop_now) co_return;
    if (out.local_error) {
      // This host's fault (a firewall refusing the send, no buffers): not the node's status.
      ++stats_.local_errors;
      stats_.last_local_error = out.error;
      co_return;
    }
  }
  auto* now_held = holder(r);
  if (!now_held) co_return;
  apply_outcome(r.index, out);
}

void node_prober::apply_outcome(std::uint32_t i, const ping_outcome& o) {
  auto& s = *slots_[i];
  auto before = s.outcome;
  auto now_status = o.ok ? node_status::alive : node_status::dead;
  if (before != now_status) {
    if (before == node_status::alive) --stats_.alive;
    if (before == node_status::dead) --stats_.dead;
    if (now_status == node_status::alive) ++stats_.alive;
    else ++stats_.dead;
  }
  s.outcome = now_status;
  if (o.ok) {
    ++stats_.replies;
    s.last_rtt = o.rtt;
    s.record.alive_at = wall_now();
  } else {
    ++stats_.failures;
    log::debug("Node ping failed", {{"node", s.name}, {"error", o.error}});
  }
  if (!consul_ || s.reaped) return;
  auto d = decide_health(o.ok, s.record, s.key, settings_.health, wall_now(), clock::now());
  if (d.write_check || d.key != key_action::none || d.reap) queue_write(i);
  if (!o.ok || !settings_.coordinates || !local_) return;
  if (!s.coord_known) {
    // Never written before Consul's copy is known: a node that joined the share keeps the
    // coordinate its previous owner built. Read it first (the coordinate loop does).
    if (coordinates_read_) queue_coordinate(i);
    return;
  }
  // One Vivaldi step of the node's coordinate against the agent's, as consul-esm does; the
  // base is Consul's copy (or the origin), so a node that moves less than 1 ms per ping
  // never drifts unwritten.
  bool usable = s.coord && is_compatible_with(*s.coord, *local_);
  auto base = usable ? *s.coord : new_coordinate(vivaldi_);
  auto next = update_external(base, *local_, o.rtt, vivaldi_, rng_);
  if (!next) return;
  if (usable && distance_to(*s.coord, *next) < min_coordinate_move) {
    ++stats_.coordinate_skips;
    return;
  }
  // Not kept: the write recomputes the step from Consul's copy and the newest RTT, so a
  // backlog of writes costs a queue entry per node, not a coordinate.
  queue_coordinate(i);
}

std::optional<coordinate> node_prober::next_coordinate(const slot& s) {
  if (!local_) return std::nullopt;
  bool usable = s.coord && is_compatible_with(*s.coord, *local_);
  auto next = update_external(usable ? *s.coord : new_coordinate(vivaldi_), *local_, s.last_rtt, vivaldi_, rng_);
  if (!next || (usable && distance_to(*s.coord, *next) < min_coordinate_move)) return std::nullopt;
  return next;
}

void node_prober::queue_write(std::uint32_t i) {
  auto& s = *slots_[i];
  if (s.write_queued) return;
  s.write_queued = true;
  if (write_queue_.empty()) first_queued_ = clock::now();
  write_queue_.push_back(i);
  if (write_queue_.size() == 1 || write_queue_.size() * 2 >= consul::max_txn_ops) writer_wake_.cancel();
}

void node_prober::queue_coordinate(std::uint32_t i) {
  auto& s = *slots_[i];
  if (s.coord_queued) return;  // the queued entry writes the newest
  s.coord_queued = true;
  coordinate_queue_.push_back(ref_of(i));
  if (coordinate_queue_.size() == 1) coordinate_wake_.cancel();
}

void node_prober::requeue(const std::vector<slot_ref>& refs) {
  for (auto r : refs)
    if (auto* s = holder(r); s && !s->reaped) queue_write(r.index);
}

// Honours any cancellation with `terminal` set.
asio::awaitable<void> node_prober::schedule_loop() {
  co_await asio::this_coro::throw_if_cancelled(false);
  for (;;) {
    bool stop_now = co_await stopped();  // named: see async.hpp on g++ 12
    if (stop_now) break;
    auto now = clock::now();
    if (open_) dispatch(now);
    auto next = clock::time_point::max();
    if (open_ && !heap_.empty() && stats_.in_flight < settings_.max_in_flight) next = heap_.front().due;
    schedule_wake_.expires_at(next);
    co_await schedule_wake_.async_wait(tuple_awaitable);
  }
}

asio::awaitable<bool> node_prober::open_sockets() {
  auto message = pinger_.open();
  if (!message.empty()) {
    if (stats_.unavailable != message)
      log::error("Cannot ping nodes; no node status is written until this is fixed (retrying)",
                 {{"ping_type", settings_.kind == socket_kind::raw ? "socket" : "udp"}, {"error", message}});
    stats_.unavailable = message;
    co_return false;
  }
  if (!stats_.unavailable.empty()) log::info("Node pings can be sent now");
  stats_.unavailable.clear();
  stats_.unavailable_v6 = pinger_.unavailable_reason();
  if (!stats_.unavailable_v6.empty())
    log::warn("IPv6 nodes cannot be pinged; their status is not written (retrying)",
              {{"error", stats_.unavailable_v6}});
  open_ = true;
  respread(clock::now());
  schedule_wake_.cancel();
  co_return true;
}

// Lists every probes key once. Keys this prober changed while the list was on its way are
// kept as the prober knows them (its write is newer than the list).
asio::awaitable<bool> node_prober::list_keys() {
  auto epoch = write_epoch_;
  ++stats_.consul_reads;
  consul::query_options q;
  q.partition = settings_.partition;
  auto prefix = settings_.kv_path + "probes/";
  listing_ = true;
  auto r = co_await consul_->kv_list(prefix, q);
  listing_ = false;
  if (!r) {
    if (!r.error().is_cancelled())
      log::warn("Failed to list the probes keys; will retry", {{"error", r.error().to_string()}});
    co_return false;
  }
  std::unordered_map<std::string_view, const consul::kv_pair*> found;
  for (auto& kv : r->value)
    if (kv.key.size() > prefix.size()) found.emplace(std::string_view(kv.key).substr(prefix.size()), &kv);
  for (auto& [name, i] : index_) {
    auto& s = *slots_[i];
    if (s.key_epoch > epoch) continue;
    s.key_unknown = false;
    auto it = found.find(name);
    if (it == found.end()) {
      s.key = probe_key{};
      continue;
    }
    s.key.exists = true;
    s.key.modify_index = it->second->modify_index;
    s.key.since = decode_go_time(it->second->value);
  }
  keys_listed_ = true;
  if (!write_queue_.empty()) writer_wake_.cancel();
  co_return true;
}

asio::awaitable<void> node_prober::reread_key(std::string node) {
  ++stats_.consul_reads;
  consul::query_options q;
  q.partition = settings_.partition;
  auto r = co_await consul_->kv_get(key_of(node), q);
  auto it = index_.find(node);
  if (it == index_.end() || !r) co_return;
  auto& s = *slots_[it->second];
  s.key_unknown = false;
  if (!r->value) {
    s.key = probe_key{};
  } else {
    s.key.exists = true;
    s.key.modify_index = r->value->modify_index;
    s.key.since = decode_go_time(r->value->value);
  }
  s.key_epoch = ++write_epoch_;
}

// The catalog node after a stale node delete-cas: its current ModifyIndex, or gone.
asio::awaitable<void> node_prober::reread_node(std::string node) {
  ++stats_.consul_reads;
  consul::query_options q;
  q.partition = settings_.partition;
  auto r = co_await consul_->catalog_node_info(node, q);
  auto it = index_.find(node);
  if (it == index_.end() || !r) co_return;
  auto& s = *slots_[it->second];
  if (!r->value) s.node_gone = true;
  else s.modify_index = r->value->node.modify_index;
}

asio::awaitable<void> node_prober::read_agent_coordinate() {
  ++stats_.consul_reads;
  auto r = co_await consul_->agent_self_info();
  if (!r) {
    if (!r.error().is_cancelled())
      log::warn("Failed to read the agent's coordinate; coordinates wait", {{"error", r.error().to_string()}});
    co_return;
  }
  if (!r->coord) {
    if (local_ || !agent_coordinate_missing_logged_)
      log::warn("The agent has no network coordinate; node coordinates are not updated");
    agent_coordinate_missing_logged_ = true;
    local_.reset();
    co_return;
  }
  auto c = from_consul(*r->coord);
  if (!usable_coordinate(c)) {
    log::warn("The agent's coordinate is not usable; node coordinates are not updated");
    local_.reset();
    co_return;
  }
  local_ = std::move(c);
}

asio::awaitable<void> node_prober::read_coordinates() {
  ++stats_.consul_reads;
  consul::query_options q;
  q.partition = settings_.partition;
  auto r = co_await consul_->coordinate_nodes(q);
  if (!r) {
    if (!r.error().is_cancelled())
      log::warn("Failed to read the node coordinates; will retry", {{"error", r.error().to_string()}});
    co_return;
  }
  for (auto& [name, i] : index_) slots_[i]->coord_known = true;  // absent: none yet
  for (auto& e : r->value) {
    auto it = index_.find(e.node);
    if (it == index_.end()) continue;
    auto& s = *slots_[it->second];
    if (e.segment != s.segment || s.coord_queued) continue;
    auto c = from_consul(e.coord);
    if (usable_coordinate(c)) s.coord = std::move(c);
  }
  coordinates_read_ = true;
}

// Sockets (retried slowly while they cannot be opened), the probes key list (at start and
// after nodes joined), the agent's coordinate (periodically) and the node coordinates (once).
// Honours any cancellation with `terminal` set.
asio::awaitable<void> node_prober::upkeep_loop() {
  co_await asio::this_coro::throw_if_cancelled(false);
  util::backoff retry(settings_.retry_base, settings_.retry_cap);
  auto next_open = clock::now();
  auto next_agent = clock::now();
  auto next_list = clock::now();
  for (;;) {
    bool stop_now = co_await stopped();
    if (stop_now) break;
    auto now = clock::now();
    auto wake = clock::time_point::max();
    if (!open_ && now >= next_open) {
      bool opened = co_await open_sockets();
      if (!opened) next_open = clock::now() + settings_.reopen_interval;
    }
    if (open_ && !pinger_.available(true) && clock::now() >= next_open) {
      pinger_.open();  // IPv4 stays as it is; IPv6 is tried again
      stats_.unavailable_v6 = pinger_.unavailable_reason();
      if (pinger_.available(true)) log::info("IPv6 nodes can be pinged now");
      next_open = clock::now() + settings_.reopen_interval;
    }
    if (!open_ || !pinger_.available(true)) wake = std::min(wake, next_open);
    bool failed = false;
    if (consul_) {
      if ((!keys_listed_ || relist_keys_) && clock::now() >= next_list) {
        relist_keys_ = false;
        bool listed = co_await list_keys();
        if (!listed) {
          relist_keys_ = true;
          failed = true;
        }
        next_list = clock::now() + relist_spacing;
      }
      if (relist_keys_ || !keys_listed_) wake = std::min(wake, next_list);
      if (settings_.coordinates) {
        if (clock::now() >= next_agent) {
          co_await read_agent_coordinate();
          next_agent = clock::now() + (local_ ? settings_.agent_coordinate_refresh : settings_.retry_cap);
        }
        wake = std::min(wake, next_agent);
        if (!coordinates_read_) {
          co_await read_coordinates();
          if (!coordinates_read_) failed = true;
        }
      }
    }
    if (failed) wake = std::min(wake, clock::now() + retry.next());
    else retry.reset();
    stop_now = co_await stopped();
    if (stop_now) break;
    upkeep_wake_.expires_at(wake);
    co_await upkeep_wake_.async_wait(tuple_awaitable);
  }
}

// Honours any cancellation with `terminal` set: a transaction in flight is abandoned (its
// nodes stay queued for the flush after the stop).
asio::awaitable<void> node_prober::writer_loop() {
  co_await asio::this_coro::throw_if_cancelled(false);
  if (!consul_) co_return;
  util::backoff retry(settings_.retry_base, settings_.retry_cap);
  asio::steady_timer pause(ex_);
  for (;;) {
    bool stop_now = co_await stopped();
    if (stop_now) break;
    auto now = clock::now();
    std::optional<clock::time_point> flush_at;
    // Nothing is written before the keys are known, nor while nodes that joined wait for
    // their list: a decision from an unknown key could count an outage from the wrong time.
    if (keys_listed_ && !relist_keys_ && !listing_)
      flush_at = checks::flush_time(write_queue_.size() * 2, first_queued_, settings_.batch_flush_interval,
                                    consul::max_txn_ops, now);
    if (!flush_at || now < *flush_at) {
      writer_wake_.expires_at(flush_at.value_or(clock::time_point::max()));
      co_await writer_wake_.async_wait(tuple_awaitable);
      continue;
    }
    bool flushed = co_await flush();
    if (flushed) {
      retry.reset();
      continue;
    }
    pause.expires_after(retry.next());
    co_await pause.async_wait(tuple_awaitable);
  }
}

// A cancellation ends it after the transaction in flight; what it did not write stays queued.
asio::awaitable<bool> node_prober::flush() {
  std::vector<std::uint32_t> batch;
  batch.swap(write_queue_);
  std::vector<slot_ref> todo;
  todo.reserve(batch.size());
  for (auto i : batch) {
    auto& s = *slots_[i];
    if (!s.write_queued) continue;
    s.write_queued = false;
    if (s.live && !s.reaped) todo.push_back(ref_of(i));
  }
  bool ok = true;
  constexpr std::size_t nodes_per_txn = consul::max_txn_ops / 2;  // two operations per node at most
  for (std::size_t at = 0; at < todo.size(); at += nodes_per_txn) {
    auto end = std::min(todo.size(), at + nodes_per_txn);
    std::vector<slot_ref> chunk(todo.begin() + static_cast<std::ptrdiff_t>(at),
                                todo.begin() + static_cast<std::ptrdiff_t>(end));
    bool stop_now = co_await stopped();
    if (stop_now) {
      requeue(chunk);
      ok = false;
      continue;
    }
    bool written = co_await write_chunk(std::move(chunk));
    if (!written) ok = false;
  }
  co_return ok;
}

// One transaction for up to 32 nodes, each node's operations together, decided at sending
// time. Answers are applied by slot_ref: during the await set_nodes may drop a node and give
// its slot to another.
asio::awaitable<bool> node_prober::write_chunk(std::vector<slot_ref> chunk) {
  struct sent_node {
    slot_ref ref;
    health_decision d;
    std::size_t first_op = 0, ops = 0;
    std::string name;
    bool node_gone = false;  // a reap of a node already deleted: its key only
  };
  // A node whose key no list or read covered (a write of it had an unknown outcome): what
  // Consul holds decides what is sent. The writer waits for pending key lists, so joiners
  // are covered by those.
  std::vector<slot_ref> unknown;
  for (auto ref : chunk)
    if (auto* s = holder(ref); s && s->key_unknown) unknown.push_back(ref);
  for (auto ref : unknown) {
    auto* s = holder(ref);
    if (s) co_await reread_key(s->name);
  }
  std::vector<slot_ref> still_unknown;
  std::erase_if(chunk, [&](slot_ref r) {
    auto* s = holder(r);
    bool left = s && s->key_unknown;
    if (left) still_unknown.push_back(r);
    return left;
  });
  requeue(still_unknown);  // the read failed: next flush (after the writer's backoff)
  if (!still_unknown.empty() && chunk.empty()) co_return false;
  for (int attempt = 0;; ++attempt) {
    std::vector<consul::txn_op> ops;
    std::vector<sent_node> sent;
    auto wall = wall_now();
    auto now = clock::now();
    for (auto ref : chunk) {
      auto* s = holder(ref);
      if (!s || s->reaped || s->outcome == node_status::unknown) continue;
      auto d = decide_health(s->outcome == node_status::alive, s->record, s->key, settings_.health, wall, now);
      sent_node n{ref, d, ops.size(), 0, s->name, s->node_gone};
      auto kv_op = [&](std::string verb, std::uint64_t index, std::optional<std::string> value) {
        consul::txn_kv_op kv;
        kv.verb = std::move(verb);
        kv.key = key_of(s->name);
        kv.index = index;
        kv.value = std::move(value);
        kv.partition = s->partition.empty() ? settings_.partition : s->partition;
        consul::txn_op t;
        t.kv = std::move(kv);
        ops.push_back(std::move(t));
      };
      if (d.reap) {
        if (!s->node_gone) {
          consul::txn_node_op nop;
          nop.verb = "delete-cas";
          nop.node.name = s->name;
          nop.node.modify_index = s->modify_index;
          nop.node.partition = s->partition.empty() ? settings_.partition : s->partition;
          consul::txn_op t;
          t.node = std::move(nop);
          ops.push_back(std::move(t));
        }
        kv_op("delete-cas", s->key.modify_index, std::nullopt);
      } else {
        if (d.write_check) {
          consul::txn_check_op c;
          c.verb = "set";
          c.check.node = s->name;
          c.check.check_id = std::string(node_check_id);
          c.check.name = std::string(node_check_name);
          c.check.status = to_string(d.status);
          c.check.output = std::string(d.status == node_status::alive ? node_alive_output : node_dead_output);
          c.check.partition = s->partition.empty() ? settings_.partition : s->partition;
          consul::txn_op t;
          t.check = std::move(c);
          ops.push_back(std::move(t));
        }
        if (d.key == key_action::create) kv_op("cas", 0, encode_go_time(d.since));
        if (d.key == key_action::replace) kv_op("cas", s->key.modify_index, encode_go_time(d.since));
        if (d.key == key_action::remove) kv_op("delete-cas", s->key.modify_index, std::nullopt);
        if (d.key_undecodable)
          log::warn("A probes key does not hold a Go binary time; counting the outage from now",
                    {{"node", s->name}, {"key", key_of(s->name)}});
      }
      n.ops = ops.size() - n.first_op;
      if (n.ops > 0) sent.push_back(std::move(n));
    }
    if (ops.empty()) co_return true;
    ++stats_.transactions;
    auto r = co_await consul_->txn(std::move(ops));
    std::vector<slot_ref> refs;
    for (auto& n : sent) refs.push_back(n.ref);
    if (!r) {
      if (!r.error().is_cancelled()) {
        ++stats_.write_failures;
        log::warn("Failed to write node statuses; will retry", {{"nodes", sent.size()}, {"error", r.error().to_string()}});
      }
      // The transaction may have been applied (a timeout after Consul committed it): the
      // keys it touched are read again before anything is decided from them.
      for (auto& n : sent)
        if (auto* s = holder(n.ref); s && (n.d.key != key_action::none || n.d.reap)) s->key_unknown = true;
      requeue(refs);
      co_return false;
    }
    if (r->committed) {
      std::unordered_map<std::string_view, std::uint64_t> key_index;
      for (auto& res : r->results)
        if (res.kv) key_index[res.kv->key] = res.kv->modify_index;
      std::size_t changed = 0;
      std::vector<std::string> changes;
      for (auto& n : sent) {
        auto* s = holder(n.ref);
        if (n.d.reap) {
          // Counted and logged even when the node left the share while the transaction was
          // in flight (the reap itself removes it from the catalog, so the worker's share
          // watch can answer before this does).
          ++stats_.nodes_reaped;
          log::info("reaping node has been failed for too long",
                    {{"node", n.name}, {"node_reconnect_timeout", std::chrono::duration_cast<std::chrono::seconds>(
                                                                      settings_.health.reconnect_timeout).count()}});
          if (!s) continue;
          s->reaped = true;
          s->key = probe_key{};
          s->key_epoch = ++write_epoch_;
          continue;
        }
        if (!s) continue;  // dropped from the share meanwhile
        s->refusal_logged = false;
        if (n.d.write_check) {
          if (s->record.written != n.d.status) {
            ++changed;
            if (changes.size() < 10) changes.push_back(s->name + "=" + std::string(to_string(n.d.status)));
          }
          s->record.written = n.d.status;
          s->record.written_at = now;
          ++stats_.check_writes;
        }
        if (n.d.key != key_action::none) s->key_unknown = false;
        if (n.d.key == key_action::create || n.d.key == key_action::replace) {
          s->key.exists = true;
          s->key.since = n.d.since;
          auto it = key_index.find(key_of(s->name));
          if (it != key_index.end()) s->key.modify_index = it->second;
          s->key_epoch = ++write_epoch_;
          ++stats_.key_creates;
        } else if (n.d.key == key_action::remove) {
          s->key = probe_key{};
          s->key_epoch = ++write_epoch_;
          ++stats_.key_deletes;
        }
      }
      // Reachability changes at INFO, a summary when many change at once.
      if (changed > 0 && changed <= 10) {
        for (auto& c : changes) {
          auto eq = c.rfind('=');
          log::info("Node reachability changed", {{"node", c.substr(0, eq)}, {"status", c.substr(eq + 1)}});
        }
      } else if (changed > 10) {
        log::info("Node reachability changed", {{"nodes", changed}, {"first", changes.front()}});
      }
      co_return true;
    }
    // Rolled back: nothing was written. Map each error to its node; a stale index (a key
    // another instance created or removed, a node modified) re-reads that node's key.
    // One entry per node: stale when every error of it was, with whether its node op failed.
    std::map<std::size_t, std::pair<bool, bool>> by_node;  // node -> (stale, node op failed)
    std::size_t newly_refused = 0;
    std::string first_refused, refusal;
    std::vector<checks::rolled_back_op> failed;
    for (auto& e : r->errors) {
      std::ptrdiff_t owner = -1;
      for (std::size_t k = 0; k < sent.size(); ++k)
        if (e.op_index >= 0 && static_cast<std::size_t>(e.op_index) >= sent[k].first_op &&
            static_cast<std::size_t>(e.op_index) < sent[k].first_op + sent[k].ops)
          owner = static_cast<std::ptrdiff_t>(k);
      if (owner < 0) {
        failed.push_back({-1, false});  // malformed: ignored by plan_rollback
        continue;
      }
      auto k = static_cast<std::size_t>(owner);
      auto [it, fresh] = by_node.try_emplace(k, true, false);
      it->second.first = it->second.first && is_stale(e);
      if (sent[k].d.reap && static_cast<std::size_t>(e.op_index) == sent[k].first_op && !sent[k].node_gone)
        it->second.second = true;
      if (!is_stale(e)) {
        ++stats_.refused;
        auto* s = holder(sent[k].ref);
        if (s && !s->refusal_logged) {
          s->refusal_logged = true;
          if (newly_refused++ == 0) {
            first_refused = sent[k].name;
            refusal = e.what;
          }
        }
        log::debug("Node status write refused by Consul", {{"node", sent[k].name}, {"error", e.what}});
      }
    }
    // One line per transaction for the nodes refused for the first time (a token without node
    // write refuses every node: one line per node would be 10 000 lines at 10 000 nodes).
    if (newly_refused > 0)
      log::warn("Node status write refused by Consul (each node logged again at DEBUG until a write of it succeeds)",
                {{"nodes", newly_refused}, {"node", first_refused}, {"error", refusal}});
    for (auto& [k, v] : by_node) failed.push_back({static_cast<std::ptrdiff_t>(k), v.first});
    auto plan = checks::plan_rollback(sent.size(), failed, attempt);
    stats_.conflicts += plan.stale.size();
    if (plan.unwritten.empty()) co_return true;
    bool stop_now = false;
    if (plan.retry_now) stop_now = co_await stopped();
    if (!plan.retry_now || stop_now) {
      if (!plan.retry_now) ++stats_.write_failures;
      std::vector<slot_ref> unwritten;
      for (auto k : plan.unwritten) unwritten.push_back(sent[k].ref);
      requeue(unwritten);
      co_return false;
    }
    for (auto k : plan.stale) {
      // A node op at a stale index: the node was modified (or deleted); its key, or both.
      if (by_node[k].second) co_await reread_node(sent[k].name);
      co_await reread_key(sent[k].name);
    }
    std::vector<slot_ref> again;
    for (auto k : plan.unwritten) again.push_back(sent[k].ref);
    chunk = std::move(again);
  }
}

// Coordinates one request each (Consul has no batch for them), at most
// coordinate_writes_per_second. Honours any cancellation with `terminal` set.
asio::awaitable<void> node_prober::coordinate_loop() {
  co_await asio::this_coro::throw_if_cancelled(false);
  if (!consul_) co_return;
  util::backoff retry(settings_.retry_base, settings_.retry_cap);
  auto spacing = std::chrono::duration_cast<clock::duration>(
      std::chrono::duration<double>(1.0 / settings_.coordinate_writes_per_second));
  asio::steady_timer pause(ex_);
  for (;;) {
    bool stop_now = co_await stopped();
    if (stop_now) break;
    if (coordinate_queue_.empty()) {
      coordinate_wake_.expires_at(clock::time_point::max());
      co_await coordinate_wake_.async_wait(tuple_awaitable);
      continue;
    }
    auto ref = coordinate_queue_.front();
    coordinate_queue_.pop_front();
    auto* s = holder(ref);
    if (!s) continue;
    s->coord_queued = false;
    if (s->reaped) continue;
    if (!s->coord_known) {
      // A node that joined the share: read the coordinate its previous owner kept current.
      ++stats_.consul_reads;
      consul::query_options q;
      q.partition = s->partition.empty() ? settings_.partition : s->partition;
      auto name = s->name;
      auto got = co_await consul_->coordinate_node(name, q);
      s = holder(ref);
      if (got && s) {
        s->coord_known = true;
        for (auto& entry : got->value) {
          auto c = from_consul(entry.coord);
          if (entry.segment == s->segment && usable_coordinate(c)) s->coord = std::move(c);
        }
      }
      pause.expires_after(got ? spacing : std::max<clock::duration>(spacing, retry.next()));
      co_await pause.async_wait(tuple_awaitable);
      continue;
    }
    auto next = next_coordinate(*s);
    if (!next) continue;
    consul::coordinate_entry e;
    e.node = s->name;
    e.segment = s->segment;
    e.partition = s->partition.empty() ? settings_.partition : s->partition;
    e.coord = to_consul(*next);
    auto moved = std::move(*next);
    consul::write_options w;
    w.partition = e.partition;
    auto name = s->name;  // s may be gone after the request: the node left the share
    auto r = co_await consul_->coordinate_update(std::move(e), w);
    s = holder(ref);
    auto wait = spacing;
    if (!r && r.error().is_http(403)) {
      // The token may not write this node (a policy narrowed to some node names). Consul
      // answered: the other nodes' updates go on at the usual pace, without a backoff.
      ++stats_.coordinate_failures;
      ++stats_.coordinate_refusals;
      bool first = s && !s->coordinate_refusal_logged;
      if (first) s->coordinate_refusal_logged = true;
      if (first && clock::now() >= next_coordinate_warning_) {
        next_coordinate_warning_ = clock::now() + std::chrono::minutes(1);
        log::warn("Coordinate update refused by Consul (at most one such line a minute; the rest, and each "
                  "node again until an update of it succeeds, at DEBUG)",
                  {{"node", name}, {"error", r.error().to_string()}});
      } else {
        log::debug("Coordinate update refused by Consul", {{"node", name}, {"error", r.error().to_string()}});
      }
    } else if (!r) {
      ++stats_.coordinate_failures;
      if (!r.error().is_cancelled())
        log::debug("Failed to update a node's coordinate", {{"node", name}, {"error", r.error().to_string()}});
      wait = std::max<clock::duration>(spacing, retry.next());
    } else {
      retry.reset();
      ++stats_.coordinate_writes;
      if (s) {
        s->coord = std::move(moved);
        s->coord_known = true;
        s->coordinate_refusal_logged = false;
      }
    }
    pause.expires_after(wait);
    co_await pause.async_wait(tuple_awaitable);
  }
}

asio::awaitable<void> node_prober::run() {
  co_await asio::this_coro::throw_if_cancelled(false);
  stopping_ = false;
  std::exception_ptr failure;
  try {
    co_await (schedule_loop() && writer_loop() && coordinate_loop() && upkeep_loop());
  } catch (...) {
    failure = std::current_exception();  // a bug: the loops see a stop as a value
  }
  stopping_ = true;
  for (auto& s : slots_)
    if (s->running) s->running->cancel();
  resolver_.cancel();
  // Forget the first stop so that a second one (terminal, after the daemon's grace period)
  // cuts the flush short.
  co_await asio::this_coro::reset_cancellation_state();
  // The queued statuses are written once (each transaction bounded by the client's request
  // timeout; the daemon's grace period bounds the whole), unless the keys were never listed.
  if (!failure && consul_ && keys_listed_) {
    for (;;) {
      if (write_queue_.empty()) break;
      bool stop_now = co_await stopped();
      if (stop_now) break;
      bool flushed = co_await flush();
      if (!flushed) break;
    }
  }
  std::size_t left = 0;
  for (auto i : write_queue_) left += slots_[i]->live && slots_[i]->write_queued;
  if (left > 0) log::warn("Stopped with node statuses not written", {{"nodes", left}});
  while (stats_.in_flight > 0) {
    drained_.expires_after(100ms);
    co_await drained_.async_wait(tuple_awaitable);
  }
  heap_.clear();
  open_ = false;  // a later run re-opens and re-spreads
  if (failure) {
    log::error("Node prober stopped by an internal error", {{"error", async::what_of(failure)}});
    std::rethrow_exception(failure);
  }
}

std::optional<node_prober::node_view> node_prober::find(const std::string& node) const {
  auto it = index_.find(node);
  if (it == index_.end()) return std::nullopt;
  return view_of(*slots_[it->second]);
}

void node_prober::visit_nodes(const std::function<void(const std::string&, const std::string&,
                                                       const node_view&)>& f) const {
  for (auto& [name, i] : index_) {
    auto& s = *slots_[i];
    f(s.name, s.address, view_of(s));
  }
}

node_prober::node_view node_prober::view_of(const slot& s) {
  node_view v;
  v.outcome = s.outcome;
  v.written = s.record.written;
  v.key_exists = s.key.exists;
  v.since = s.key.since;
  v.coord = s.coord;
  v.pings = s.pings;
  v.in_flight = s.running && !s.running->done();
  v.queued = s.write_queued;
  v.last_rtt = s.last_rtt;
  return v;
}

}  // namespace esm::ping
