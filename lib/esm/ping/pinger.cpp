#include "esm/ping/pinger.hpp"

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <optional>
#include <random>
#include <span>
#include <utility>
#include <vector>

#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/errqueue.h>
#include <netinet/icmp6.h>
#include <netinet/in.h>
#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <boost/asio/any_completion_handler.hpp>
#include <boost/asio/associated_cancellation_slot.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>

#include "esm/ping/icmp.hpp"
#include "esm/util/async.hpp"

namespace esm::ping {

namespace {

namespace asio = boost::asio;
using clock = std::chrono::steady_clock;
using error_code = boost::system::error_code;

constexpr std::size_t sequence_space = 65536;
// Packets read per wake-up before the loop lets other handlers run (it goes on right after).
constexpr int drain_budget = 512;
// Replies to a burst of pings arrive together; the default receive buffer (about 200 kB, some
// 300 small packets on loopback) would drop some. Capped by net.core.rmem_max unless the
// process has CAP_NET_ADMIN (SO_RCVBUFFORCE).
constexpr int receive_buffer = 4 << 20;
// <linux/icmp.h>'s ICMP_FILTER (level SOL_RAW): a bit set per ICMPv4 type to drop. Not
// included: it clashes with the C library's network headers.
constexpr int icmp_filter_option = 1;

std::int64_t realtime_ns() {
  timespec ts{};
  ::clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

// A bijection on 64 bits (splitmix64's finaliser): nonces from a counter never repeat, and
// do not look like one.
std::uint64_t mix(std::uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

std::uint64_t random64() {
  std::random_device rd;
  return (static_cast<std::uint64_t>(rd()) << 32) ^ rd();
}

std::string quoted(const asio::ip::address& a) { return "\"" + a.to_string() + "\""; }

std::string timed_out(const asio::ip::address& a) { return "ping to " + quoted(a) + " timed out"; }
std::string failed(const asio::ip::address& a, const std::string& why) {
  return "ping to " + quoted(a) + " failed: " + why;
}

// Whether a send error is this host's fault rather than the node's (see ping_outcome).
bool is_local_send_error(int err) {
  return err != ENETUNREACH && err != EHOSTUNREACH && err != EHOSTDOWN && err != ENETDOWN;
}

std::optional<asio::ip::address> address_of(const sockaddr_storage& ss) {
  if (ss.ss_family == AF_INET) {
    auto& in = reinterpret_cast<const sockaddr_in&>(ss);
    return asio::ip::address_v4(ntohl(in.sin_addr.s_addr));
  }
  if (ss.ss_family == AF_INET6) {
    auto& in6 = reinterpret_cast<const sockaddr_in6&>(ss);
    asio::ip::address_v6::bytes_type b;
    std::memcpy(b.data(), &in6.sin6_addr, 16);
    return asio::ip::address_v6(b, in6.sin6_scope_id);
  }
  return std::nullopt;
}

// Same host: the bytes (a scope id on one side only still names the same link-local host).
bool same_host(const asio::ip::address& a, const asio::ip::address& b) {
  if (a.is_v4() != b.is_v4()) return false;
  if (a.is_v4()) return a.to_v4() == b.to_v4();
  return a.to_v6().to_bytes() == b.to_v6().to_bytes();
}

std::string read_ping_group_range() {
  std::ifstream in("/proc/sys/net/ipv4/ping_group_range");
  std::string low, high;
  if (!(in >> low >> high)) return "(unreadable)";
  return low + " " + high;
}

std::string process_groups() {
  std::string out = std::to_string(::getegid());
  std::array<gid_t, 64> groups{};
  int n = ::getgroups(static_cast<int>(groups.size()), groups.data());
  std::string extra;
  for (int i = 0; i < n; ++i)
    if (groups[static_cast<std::size_t>(i)] != ::getegid())
      extra += (extra.empty() ? "" : ", ") + std::to_string(groups[static_cast<std::size_t>(i)]);
  if (!extra.empty()) out += " (supplementary: " + extra + ")";
  return out;
}

enum class pstate : std::uint8_t { idle, queued, waiting, done };

using waiter_type = asio::any_completion_handler<void(error_code)>;

// Resumes a ping's coroutine. Move-only on purpose: Boost 1.81's any_completion_handler has a
// converting constructor template that also matches its own lvalues (a copy, or its move
// assignment, wraps the handler in itself without end), so it is only ever move-constructed
// and swapped here.
struct wake {
  explicit wake(waiter_type&& h) : h_(std::move(h)) {}
  wake(wake&& o) noexcept : h_(std::move(o.h_)) {}
  wake(const wake&) = delete;
  wake& operator=(const wake&) = delete;
  wake& operator=(wake&&) = delete;
  void operator()() { std::move(h_)(error_code()); }
  waiter_type h_;
};

}  // namespace

// One ping's state, in its coroutine frame. The engine's sequence table points to it while it
// is queued or waiting; whoever ends it (reply, timeout, ICMP error, cancellation, close)
// unregisters it first and then posts its waiter, so the resumed coroutine touches nothing but
// its own frame.
struct ping_state {
  pinger::engine* owner = nullptr;
  asio::ip::address to;
  std::uint64_t nonce = 0;
  std::uint16_t seq = 0;
  std::uint8_t fam = 0;
  pstate state = pstate::idle;
  clock::time_point sent_steady{};
  std::int64_t sent_real = 0;
  ping_state* prev = nullptr;  // the send queue (writes that met EAGAIN), intrusive
  ping_state* next = nullptr;
  ping_outcome result;
  waiter_type waiter;  // set while the coroutine awaits; swapped in, moved out (see wake)

  ping_state() = default;
  ping_state(const ping_state&) = delete;
  ping_state& operator=(const ping_state&) = delete;
  ~ping_state();
};

class pinger::engine : public std::enable_shared_from_this<pinger::engine> {
 public:
  engine(asio::any_io_executor ex, socket_kind kind)
      : ex_(ex), kind_(kind), channels_{channel(ex), channel(ex)}, timer_(ex) {
    key_ = random64();
    nonce_ = random64();
    auto r = random64();
    auto id = static_cast<std::uint16_t>(r);
    for (auto& c : channels_) {
      c.id = id;
      c.next_seq = static_cast<std::uint16_t>(r >> 16);
    }
  }

  std::string open() {
    for (int f = 0; f < 2; ++f) open_family(f);
    reason_ = compose_reason();
    return channels_[0].open ? std::string() : reason_;
  }
  bool available(bool v6) const { return channels_[v6 ? 1 : 0].open; }
  std::string unavailable_reason() const { return reason_; }
  const pinger_stats& stats() const { return stats_; }
  void set_next_sequence(std::uint16_t s) {
    for (auto& c : channels_) c.next_seq = s;
  }

  void close() {
    for (int f = 0; f < 2; ++f) {
      auto& c = channels_[f];
      if (c.open) {
        error_code ec;
        c.fd.close(ec);
        c.open = false;
        c.reason = "the pinger was closed";
      }
      ++c.epoch;
      c.reading = c.writing = false;
      for (std::size_t s = 0; s < c.slots.size(); ++s)
        if (ping_state* p = c.slots[s]) {
          p->result.error = failed(p->to, "the pinger was closed");
          p->result.local_error = true;
          finish(*p);
        }
    }
    heap_.clear();
    ++timer_gen_;
    armed_ = false;
    timer_.cancel();
    reason_ = compose_reason();
  }

  // Registers and sends `p`. On return p is queued or waiting (the caller awaits it) or done
  // with its result (an error: nothing to wait for).
  void start(ping_state& p, asio::ip::address to, std::chrono::milliseconds timeout) {
    if (to.is_v6() && to.to_v6().is_v4_mapped())
      to = asio::ip::make_address_v4(asio::ip::v4_mapped, to.to_v6());
    p.to = to;
    p.fam = to.is_v6() ? 1 : 0;
    auto& c = channels_[p.fam];
    if (!c.open && !c.tried) {
      open_family(p.fam);
      reason_ = compose_reason();
    }
    if (!c.open) {
      ++stats_.send_errors;
      p.result.error = failed(to, std::string("no ") + (p.fam ? "IPv6" : "IPv4") + " ICMP socket: " + c.reason);
      p.result.local_error = true;
      p.state = pstate::done;
      return;
    }
    if (c.in_flight >= sequence_space) {
      ++stats_.send_errors;
      p.result.error = failed(to, "65536 pings already in flight over " + std::string(p.fam ? "IPv6" : "IPv4") +
                                      " (the ICMP sequence space is full)");
      p.result.local_error = true;
      p.state = pstate::done;
      return;
    }
    if (c.slots.empty()) c.slots.assign(sequence_space, nullptr);
    // in_flight < 65536, so a free number exists; numbers rotate, so one is reused only
    // after 65535 others, and the nonce tells a late reply to its previous user apart.
    std::uint16_t seq = c.next_seq++;
    while (c.slots[seq]) seq = c.next_seq++;
    p.owner = this;
    p.seq = seq;
    p.nonce = mix(nonce_++);
    c.slots[seq] = &p;
    p.state = pstate::waiting;  // registered: every way out below unregisters it
    ++c.in_flight;
    ++stats_.in_flight;
    push_deadline(clock::now() + timeout, p);
    if (c.queue_head) {
      enqueue(c, p);  // keep the order of sends
      return;
    }
    int err = send_now(c, p);
    if (buffer_full(c, err)) {
      enqueue(c, p);
      arm_writer(p.fam);
    } else if (err != 0) {
      ++stats_.send_errors;
      p.result.error = failed(to, std::strerror(err));
      p.result.local_error = is_local_send_error(err);
      finish(p);
    }
  }

  void cancel(ping_state& p) {
    ++stats_.cancelled;
    p.result.error = "cancelled";
    finish(p);
  }

  // Unregisters `p` without waking anyone: its frame is going away.
  void forget(ping_state& p) { unregister(p); }

 private:
  struct channel {
    explicit channel(asio::any_io_executor ex) : fd(ex) {}
    asio::posix::stream_descriptor fd;
    bool open = false;
    bool tried = false;  // open attempted: a ping opens only a family never tried
    bool raw = false;
    bool reading = false;
    bool writing = false;
    std::uint64_t epoch = 0;  // bumped by every open and close: stale loops end
    std::uint16_t id = 0;
    std::uint16_t next_seq = 0;
    int send_buffer = 0;  // SO_SNDBUF as the kernel holds it
    std::size_t in_flight = 0;
    std::vector<ping_state*> slots;  // by sequence number; allocated on the first ping
    ping_state* queue_head = nullptr;
    ping_state* queue_tail = nullptr;
    std::string reason;
    std::array<std::uint8_t, 4096> buffer{};
    alignas(cmsghdr) std::array<char, 512> control{};
  };

  struct deadline {
    clock::time_point at;
    std::uint64_t nonce;
    std::uint16_t seq;
    std::uint8_t fam;
    // std::push_heap builds a max-heap: "less" means later.
    friend bool operator<(const deadline& a, const deadline& b) { return a.at > b.at; }
  };

  std::string compose_reason() const {
    const auto& v4 = channels_[0];
    const auto& v6 = channels_[1];
    if (v4.open && v6.open) return {};
    if (!v4.open && !v6.open) {
      if (v4.reason == v6.reason) return v4.reason;
      return v4.reason + "; IPv6: " + v6.reason;
    }
    if (!v4.open) return v4.reason + " (IPv6 is open)";
    return "IPv6: " + v6.reason;
  }

  std::string open_failure(int f, int err) const {
    const char* fam = f ? "IPv6" : "IPv4";
    std::string what = std::string("cannot open an ") + fam + " ICMP socket";
    if (kind_ == socket_kind::udp) {
      what += " (ping_type \"udp\", SOCK_DGRAM): " + std::string(std::strerror(err));
      if (err == EACCES || err == EPERM)
        what += ". Linux allows unprivileged ICMP only to groups within net.ipv4.ping_group_range, which is \"" +
                read_ping_group_range() + "\" in this network namespace; this process has group " +
                process_groups() + ". Allow one of them (sysctl -w net.ipv4.ping_group_range=\"" +
                std::to_string(::getegid()) + " " + std::to_string(::getegid()) +
                "\") or use ping_type \"socket\" with CAP_NET_RAW";
    } else {
      what += " (ping_type \"socket\", SOCK_RAW): " + std::string(std::strerror(err));
      if (err == EACCES || err == EPERM)
        what += ". Raw ICMP sockets need CAP_NET_RAW (run as root, or grant it: setcap cap_net_raw+ep "
                "on the binary, AmbientCapabilities=CAP_NET_RAW under systemd), or use ping_type \"udp\" "
                "with net.ipv4.ping_group_range covering the process's group";
    }
    return what;
  }

  void open_family(int f) {
    auto& c = channels_[f];
    if (c.open) return;
    c.tried = true;
    const int domain = f ? AF_INET6 : AF_INET;
    const int protocol = f ? static_cast<int>(IPPROTO_ICMPV6) : static_cast<int>(IPPROTO_ICMP);
    const bool raw = kind_ == socket_kind::raw;
    int fd = ::socket(domain, (raw ? SOCK_RAW : SOCK_DGRAM) | SOCK_NONBLOCK | SOCK_CLOEXEC, protocol);
    if (fd < 0) {
      c.reason = open_failure(f, errno);
      return;
    }
    auto fail = [&](const std::string& why) {
      ::close(fd);
      c.reason = why;
    };
    int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPNS, &one, sizeof one);  // else user-space time
    int size = receive_buffer;
    if (::setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof size) != 0)
      ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
    std::uint16_t id = c.id;
    if (raw) {
      if (f == 0) {
        std::uint32_t drop = ~((1u << icmp::v4_echo_reply) | (1u << icmp::v4_destination_unreachable) |
                               (1u << icmp::v4_time_exceeded));
        ::setsockopt(fd, SOL_RAW, icmp_filter_option, &drop, sizeof drop);
      } else {
        icmp6_filter filter;
        ICMP6_FILTER_SETBLOCKALL(&filter);
        ICMP6_FILTER_SETPASS(icmp::v6_echo_reply, &filter);
        ICMP6_FILTER_SETPASS(icmp::v6_destination_unreachable, &filter);
        ICMP6_FILTER_SETPASS(icmp::v6_time_exceeded, &filter);
        ::setsockopt(fd, IPPROTO_ICMPV6, ICMP6_FILTER, &filter, sizeof filter);
      }
    } else {
      // ICMP errors about our requests into the error queue (else they are dropped).
      if (f == 0)
        ::setsockopt(fd, IPPROTO_IP, IP_RECVERR, &one, sizeof one);
      else
        ::setsockopt(fd, IPPROTO_IPV6, IPV6_RECVERR, &one, sizeof one);
      // Binding to port 0 makes the kernel choose the identifier it will write into our
      // requests (the socket's "port"); replies carry it.
      sockaddr_storage ss{};
      socklen_t len = 0;
      if (f == 0) {
        auto& in = reinterpret_cast<sockaddr_in&>(ss);
        in.sin_family = AF_INET;
        len = sizeof in;
      } else {
        auto& in6 = reinterpret_cast<sockaddr_in6&>(ss);
        in6.sin6_family = AF_INET6;
        len = sizeof in6;
      }
      if (::bind(fd, reinterpret_cast<sockaddr*>(&ss), len) != 0) {
        fail(std::string("cannot bind the ICMP datagram socket: ") + std::strerror(errno));
        return;
      }
      len = sizeof ss;
      if (::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) {
        fail(std::string("getsockname on the ICMP datagram socket: ") + std::strerror(errno));
        return;
      }
      id = ntohs(f == 0 ? reinterpret_cast<sockaddr_in&>(ss).sin_port : reinterpret_cast<sockaddr_in6&>(ss).sin6_port);
    }
    int sndbuf = 0;
    socklen_t optlen = sizeof sndbuf;
    if (::getsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, &optlen) != 0) sndbuf = 0;
    error_code ec;
    c.fd.assign(fd, ec);
    if (ec) {
      fail("cannot register the ICMP socket: " + ec.message());
      return;
    }
    c.open = true;
    c.raw = raw;
    c.send_buffer = sndbuf;
    c.id = id;
    c.reason.clear();
    ++c.epoch;
    c.reading = c.writing = false;
    arm_reader(f);
  }

  // --- sending ---------------------------------------------------------------------------

  int send_now(channel& c, ping_state& p) {
    std::array<std::uint8_t, icmp::request_size> packet{};
    auto cookie = icmp::make_cookie(key_, p.nonce);
    auto n = icmp::build_echo_request(p.fam ? icmp::family::v6 : icmp::family::v4, c.id, p.seq, cookie, packet);
    sockaddr_storage ss{};
    socklen_t len = 0;
    if (p.fam == 0) {
      auto& in = reinterpret_cast<sockaddr_in&>(ss);
      in.sin_family = AF_INET;
      in.sin_addr.s_addr = htonl(p.to.to_v4().to_uint());
      len = sizeof in;
    } else {
      auto& in6 = reinterpret_cast<sockaddr_in6&>(ss);
      in6.sin6_family = AF_INET6;
      auto b = p.to.to_v6().to_bytes();
      std::memcpy(&in6.sin6_addr, b.data(), 16);
      in6.sin6_scope_id = static_cast<std::uint32_t>(p.to.to_v6().scope_id());
      len = sizeof in6;
    }
    int err = 0;
    for (int attempt = 0; attempt < 3; ++attempt) {  // EINTR only
      p.sent_real = realtime_ns();
      p.sent_steady = clock::now();
      auto r = ::sendto(c.fd.native_handle(), packet.data(), n, MSG_DONTWAIT | MSG_NOSIGNAL,
                        reinterpret_cast<sockaddr*>(&ss), len);
      err = r < 0 ? errno : 0;
      if (err != EINTR) break;
    }
    if (err == 0) ++stats_.sent;
    return err;
  }

  // Whether a failed send should wait for room. Datagram sockets say EAGAIN; raw ones say
  // ENOBUFS once twice their send buffer is queued (and IPv4 also when a qdisc drops, which
  // must not be waited for: the socket's queue then is short).
  bool buffer_full(channel& c, int err) {
    if (err == EAGAIN || err == EWOULDBLOCK) return true;
    if (err != ENOBUFS || !c.raw) return false;
    int queued = 0;
    return ::ioctl(c.fd.native_handle(), SIOCOUTQ, &queued) == 0 && queued > c.send_buffer / 2;
  }

  void enqueue(channel& c, ping_state& p) {
    ++stats_.deferred;
    p.state = pstate::queued;
    p.prev = c.queue_tail;
    p.next = nullptr;
    (c.queue_tail ? c.queue_tail->next : c.queue_head) = &p;
    c.queue_tail = &p;
  }

  void dequeue(channel& c, ping_state& p) {
    (p.prev ? p.prev->next : c.queue_head) = p.next;
    (p.next ? p.next->prev : c.queue_tail) = p.prev;
    p.prev = p.next = nullptr;
  }

  void arm_writer(int f) {
    auto& c = channels_[f];
    if (c.writing || !c.open) return;
    c.writing = true;
    c.fd.async_wait(asio::posix::descriptor_base::wait_write,
                    [self = shared_from_this(), f, epoch = c.epoch](error_code) { self->on_writable(f, epoch); });
  }

  void on_writable(int f, std::uint64_t epoch) {
    auto& c = channels_[f];
    if (epoch != c.epoch || !c.open) return;
    c.writing = false;
    while (ping_state* p = c.queue_head) {
      int err = send_now(c, *p);
      if (buffer_full(c, err)) {
        arm_writer(f);
        return;
      }
      dequeue(c, *p);
      p->state = pstate::waiting;
      if (err != 0) {
        ++stats_.send_errors;
        p->result.error = failed(p->to, std::strerror(err));
        p->result.local_error = is_local_send_error(err);
        finish(*p);
      }
    }
  }

  // --- ending a ping -----------------------------------------------------------------------

  void unregister(ping_state& p) {
    if (p.state != pstate::queued && p.state != pstate::waiting) return;
    auto& c = channels_[p.fam];
    if (p.state == pstate::queued) dequeue(c, p);
    if (!c.slots.empty() && c.slots[p.seq] == &p) {
      c.slots[p.seq] = nullptr;
      --c.in_flight;
      --stats_.in_flight;
    }
    p.state = pstate::done;
  }

  void finish(ping_state& p) {
    unregister(p);
    p.state = pstate::done;
    if (p.waiter) {
      // Posted, never invoked here: the resumed caller may start pings or destroy the pinger,
      // which must not happen inside our loops.
      asio::post(ex_, wake(std::move(p.waiter)));
    }
  }

  // --- timeouts: one timer for the earliest deadline ----------------------------------------

  ping_state* live(std::uint8_t fam, std::uint16_t seq, std::uint64_t nonce) const {
    const auto& c = channels_[fam];
    if (c.slots.empty()) return nullptr;
    ping_state* p = c.slots[seq];
    return p && p->nonce == nonce ? p : nullptr;
  }

  void push_deadline(clock::time_point at, ping_state& p) {
    // Entries of pings that ended early stay until their time (or this sweep): bounded by
    // the pings started within one timeout.
    if (heap_.size() > 2 * stats_.in_flight + 4096) {
      std::erase_if(heap_, [&](const deadline& d) { return !live(d.fam, d.seq, d.nonce); });
      std::make_heap(heap_.begin(), heap_.end());
    }
    heap_.push_back(deadline{at, p.nonce, p.seq, p.fam});
    std::push_heap(heap_.begin(), heap_.end());
    arm_timer();
  }

  void arm_timer() {
    if (heap_.empty()) return;
    auto at = heap_.front().at;
    if (armed_ && at >= armed_at_) return;  // pings of one timeout come in deadline order
    armed_ = true;
    armed_at_ = at;
    auto gen = ++timer_gen_;
    timer_.expires_at(at);
    timer_.async_wait([self = shared_from_this(), gen](error_code) { self->on_timer(gen); });
  }

  void on_timer(std::uint64_t gen) {
    if (gen != timer_gen_) return;  // re-armed or closed since
    armed_ = false;
    auto now = clock::now();
    while (!heap_.empty() && heap_.front().at <= now) {
      auto d = heap_.front();
      std::pop_heap(heap_.begin(), heap_.end());
      heap_.pop_back();
      if (ping_state* p = live(d.fam, d.seq, d.nonce)) {
        ++stats_.timeouts;
        p->result.error = timed_out(p->to);
        finish(*p);
      }
    }
    arm_timer();
  }

  // --- receiving ---------------------------------------------------------------------------

  void arm_reader(int f) {
    auto& c = channels_[f];
    if (c.reading || !c.open) return;
    c.reading = true;
    c.fd.async_wait(asio::posix::descriptor_base::wait_read,
                    [self = shared_from_this(), f, epoch = c.epoch](error_code) { self->on_readable(f, epoch); });
  }

  void on_readable(int f, std::uint64_t epoch) {
    auto& c = channels_[f];
    if (epoch != c.epoch || !c.open) return;
    c.reading = false;
    // Asio's epoll is edge-triggered: read until EAGAIN before waiting again, or yield and
    // come straight back when the budget runs out.
    bool more = false;
    if (!c.raw) more = drain(f, true);
    more = drain(f, false) || more;
    if (more)
      asio::post(ex_, [self = shared_from_this(), f, epoch] { self->on_readable(f, epoch); });
    else
      arm_reader(f);
  }

  // Reads up to drain_budget packets; true when more may be waiting.
  bool drain(int f, bool error_queue) {
    auto& c = channels_[f];
    for (int i = 0; i < drain_budget; ++i) {
      if (!c.open) return false;
      sockaddr_storage from{};
      iovec iov{c.buffer.data(), c.buffer.size()};
      msghdr msg{};
      msg.msg_name = &from;
      msg.msg_namelen = sizeof from;
      msg.msg_iov = &iov;
      msg.msg_iovlen = 1;
      msg.msg_control = c.control.data();
      msg.msg_controllen = c.control.size();
      auto n = ::recvmsg(c.fd.native_handle(), &msg, MSG_DONTWAIT | (error_queue ? MSG_ERRQUEUE : 0));
      if (n < 0) {
        int err = errno;
        if (err == EAGAIN || err == EWOULDBLOCK) return false;
        if (err == EBADF || err == ENOTSOCK || err == EFAULT || err == EINVAL) return false;
        continue;  // EINTR, or a pending socket error reported once (ECONNREFUSED...)
      }
      if (msg.msg_flags & MSG_TRUNC) {
        ++stats_.ignored;
        continue;
      }
      std::span<const std::uint8_t> data(c.buffer.data(), static_cast<std::size_t>(n));
      auto source = address_of(from);
      if (error_queue)
        on_error_queue(f, data, source, msg);
      else
        on_packet(f, data, source, kernel_time(msg));
    }
    return true;
  }

  static std::optional<std::int64_t> kernel_time(msghdr& msg) {
    if (msg.msg_flags & MSG_CTRUNC) return std::nullopt;
    for (cmsghdr* cm = CMSG_FIRSTHDR(&msg); cm; cm = CMSG_NXTHDR(&msg, cm)) {
      if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SO_TIMESTAMPNS &&
          cm->cmsg_len >= CMSG_LEN(sizeof(timespec))) {
        timespec ts;
        std::memcpy(&ts, CMSG_DATA(cm), sizeof ts);
        return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
      }
    }
    return std::nullopt;
  }

  // The pending ping a message about (id, sequence, payload) from/to `peer` belongs to, or
  // nullptr after counting it as ignored or late.
  ping_state* match(int f, const icmp::echo& e, const std::optional<asio::ip::address>& peer) {
    auto& c = channels_[f];
    auto cookie = icmp::read_cookie(e.payload);
    if (e.id != c.id || !cookie || cookie->key != key_) {
      ++stats_.ignored;  // another process's, or not ours at all
      return nullptr;
    }
    ping_state* p = live(static_cast<std::uint8_t>(f), e.sequence, cookie->nonce);
    if (!p || p->state != pstate::waiting) {
      ++stats_.late;  // ours, but that send no longer waits
      return nullptr;
    }
    if (!peer || !same_host(*peer, p->to)) {
      ++stats_.ignored;
      return nullptr;
    }
    return p;
  }

  void on_packet(int f, std::span<const std::uint8_t> data, const std::optional<asio::ip::address>& from,
                 std::optional<std::int64_t> kernel_ns) {
    auto& c = channels_[f];
    auto fam = f ? icmp::family::v6 : icmp::family::v4;
    bool ip_header = c.raw && f == 0;
    if (auto reply = icmp::parse_echo_reply(fam, ip_header, data)) {
      ping_state* p = match(f, *reply, from);
      if (!p) return;
      auto steady = std::chrono::duration_cast<std::chrono::nanoseconds>(clock::now() - p->sent_steady);
      auto rtt = steady;
      if (kernel_ns) {
        std::chrono::nanoseconds k(*kernel_ns - p->sent_real);
        if (k.count() > 0 && k <= steady) rtt = k;  // the wall clock may have stepped
      }
      ++stats_.replies;
      p->result.ok = true;
      p->result.rtt = std::max(rtt, std::chrono::nanoseconds(1));
      p->result.error.clear();
      finish(*p);
      return;
    }
    if (c.raw) {
      if (auto err = icmp::parse_echo_error(fam, ip_header, data)) {
        ping_state* p = match(f, err->request, err->destination);
        if (!p) return;
        std::string why = icmp::describe_error(fam, err->type, err->code);
        if (from) why += " from " + from->to_string();
        fail_unreachable(*p, why);
        return;
      }
    }
    ++stats_.ignored;
  }

  // A datagram socket's error queue: the request we sent (as quoted), its destination as the
  // message's name, and the error in an IP_RECVERR/IPV6_RECVERR control message.
  void on_error_queue(int f, std::span<const std::uint8_t> data, const std::optional<asio::ip::address>& to,
                      msghdr& msg) {
    auto fam = f ? icmp::family::v6 : icmp::family::v4;
    const sock_extended_err* ee = nullptr;
    std::size_t ee_len = 0;
    for (cmsghdr* cm = CMSG_FIRSTHDR(&msg); cm; cm = CMSG_NXTHDR(&msg, cm)) {
      bool recverr = (cm->cmsg_level == IPPROTO_IP && cm->cmsg_type == IP_RECVERR) ||
                     (cm->cmsg_level == IPPROTO_IPV6 && cm->cmsg_type == IPV6_RECVERR);
      if (recverr && cm->cmsg_len >= CMSG_LEN(sizeof(sock_extended_err))) {
        ee = reinterpret_cast<const sock_extended_err*>(CMSG_DATA(cm));
        ee_len = cm->cmsg_len - CMSG_LEN(0);
      }
    }
    auto request = icmp::parse_echo_request(fam, data);
    if (!ee || !request) {
      ++stats_.ignored;
      return;
    }
    ping_state* p = match(f, *request, to);
    if (!p) return;
    std::string why;
    if (ee->ee_origin == SO_EE_ORIGIN_ICMP || ee->ee_origin == SO_EE_ORIGIN_ICMP6) {
      why = icmp::describe_error(fam, ee->ee_type, ee->ee_code);
      // The offender (the router that sent the error) follows the structure.
      sockaddr_storage offender{};
      std::size_t room = std::min(ee_len - sizeof(sock_extended_err), sizeof offender);
      std::memcpy(&offender, reinterpret_cast<const char*>(ee) + sizeof(sock_extended_err), room);
      bool whole = (offender.ss_family == AF_INET && room >= sizeof(sockaddr_in)) ||
                   (offender.ss_family == AF_INET6 && room >= sizeof(sockaddr_in6));
      if (whole)
        if (auto who = address_of(offender)) why += " from " + who->to_string();
    } else {
      why = std::strerror(static_cast<int>(ee->ee_errno));
    }
    fail_unreachable(*p, why);
  }

  void fail_unreachable(ping_state& p, const std::string& why) {
    ++stats_.unreachable;
    p.result.error = failed(p.to, why);
    finish(p);
  }

  asio::any_io_executor ex_;
  socket_kind kind_;
  std::array<channel, 2> channels_;
  asio::steady_timer timer_;
  std::vector<deadline> heap_;
  bool armed_ = false;
  clock::time_point armed_at_{};
  std::uint64_t timer_gen_ = 0;
  std::uint64_t key_ = 0;
  std::uint64_t nonce_ = 0;
  std::string reason_ = "not opened yet";
  pinger_stats stats_;
};

ping_state::~ping_state() {
  if (owner && (state == pstate::queued || state == pstate::waiting)) owner->forget(*this);
}

namespace {

// Cancels a waiting ping from its caller's cancellation slot (any type).
struct cancel_ping {
  ping_state* p;
  void operator()(asio::cancellation_type t) const {
    if (t == asio::cancellation_type::none) return;
    if (p->state == pstate::queued || p->state == pstate::waiting) p->owner->cancel(*p);
  }
};

// Suspends until the engine ends `p`. The handler is kept in p (the frame), so no timer or
// other object exists per ping.
template <class Token>
auto wait_done(ping_state& p, Token&& token) {
  return asio::async_initiate<Token, void(error_code)>(
      [&p](auto handler) {
        waiter_type h(std::move(handler));
        // The type-erased handler puts a cancellation state of its own (every type passes)
        // on the caller's slot; ours goes on its slot.
        auto slot = h.get_cancellation_slot();
        if (slot.is_connected()) slot.template emplace<cancel_ping>(cancel_ping{&p});
        p.waiter.swap(h);
      },
      token);
}

}  // namespace

pinger::pinger(asio::any_io_executor ex, socket_kind kind) : engine_(std::make_shared<engine>(ex, kind)) {}
pinger::~pinger() { engine_->close(); }

std::string pinger::open() { return engine_->open(); }
bool pinger::available(bool v6) const { return engine_->available(v6); }
std::string pinger::unavailable_reason() const { return engine_->unavailable_reason(); }
const pinger_stats& pinger::stats() const { return engine_->stats(); }
void pinger::close() { engine_->close(); }
void pinger::set_next_sequence(std::uint16_t s) { engine_->set_next_sequence(s); }

// Honours cancellation of any type that reaches the caller's slot. A stop that arrived before
// the call ends it at once without sending (so the co_await below never throws).
asio::awaitable<ping_outcome> pinger::ping(asio::ip::address to, std::chrono::milliseconds timeout) {
  auto keep = engine_;  // the engine outlives this frame's registration, even past ~pinger
  auto cs = co_await asio::this_coro::cancellation_state;
  ping_state p;
  if (async::is_cancelled(cs)) {
    p.result.error = "cancelled";
  } else {
    keep->start(p, to, timeout);
  }
  if (p.state == pstate::queued || p.state == pstate::waiting) {
    auto [ec] = co_await wait_done(p, async::tuple_awaitable);
    (void)ec;
  }
  ping_outcome out = std::move(p.result);
  co_return out;
}

}  // namespace esm::ping
