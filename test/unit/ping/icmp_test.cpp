#include <doctest/doctest.h>

#include <cstdint>
#include <random>
#include <vector>

#include "esm/ping/icmp.hpp"

using namespace esm::ping;
using icmp::family;

namespace {

using bytes = std::vector<std::uint8_t>;

bytes request(family f, std::uint16_t id, std::uint16_t seq, std::uint64_t key = 0x1122334455667788,
              std::uint64_t nonce = 42) {
  auto c = icmp::make_cookie(key, nonce);
  bytes out(icmp::request_size);
  REQUIRE(icmp::build_echo_request(f, id, seq, c, out) == icmp::request_size);
  return out;
}

// Turns a request into the reply a host would send (type, then the IPv4 checksum again).
bytes reply_of(family f, bytes m) {
  m[0] = f == family::v4 ? icmp::v4_echo_reply : icmp::v6_echo_reply;
  m[2] = m[3] = 0;
  if (f == family::v4) {
    auto sum = icmp::checksum(m);
    m[2] = static_cast<std::uint8_t>(sum >> 8);
    m[3] = static_cast<std::uint8_t>(sum);
  }
  return m;
}

void fix_ip_checksum(bytes& p, std::size_t ihl) {
  p[10] = p[11] = 0;
  auto sum = icmp::checksum(std::span<const std::uint8_t>(p.data(), ihl));
  p[10] = static_cast<std::uint8_t>(sum >> 8);
  p[11] = static_cast<std::uint8_t>(sum);
}

// An IPv4 header (IHL in words, options zero) in front of `payload`.
bytes ipv4(const bytes& payload, std::uint8_t ihl_words = 5, std::uint32_t src = 0x7f000001,
           std::uint32_t dst = 0x7f000001) {
  std::size_t ihl = ihl_words * 4u;
  bytes p(ihl, 0);
  p[0] = static_cast<std::uint8_t>(0x40 | ihl_words);
  std::size_t total = ihl + payload.size();
  p[2] = static_cast<std::uint8_t>(total >> 8);
  p[3] = static_cast<std::uint8_t>(total);
  p[8] = 64;
  p[9] = 1;
  for (int i = 0; i < 4; ++i) {
    p[12 + i] = static_cast<std::uint8_t>(src >> (24 - 8 * i));
    p[16 + i] = static_cast<std::uint8_t>(dst >> (24 - 8 * i));
  }
  fix_ip_checksum(p, ihl);
  p.insert(p.end(), payload.begin(), payload.end());
  return p;
}

}  // namespace

TEST_CASE("icmp: an IPv4 echo request has type 8 and a checksum that verifies") {
  auto m = request(family::v4, 0xBEEF, 0x0102);
  CHECK(m[0] == 8);
  CHECK(m[1] == 0);
  CHECK(m[4] == 0xBE);
  CHECK(m[5] == 0xEF);
  CHECK(m[6] == 0x01);
  CHECK(m[7] == 0x02);
  CHECK(icmp::checksum(m) == 0);
  auto c = icmp::read_cookie(std::span<const std::uint8_t>(m).subspan(8));
  REQUIRE(c);
  CHECK(c->key == 0x1122334455667788u);
  CHECK(c->nonce == 42u);
}

TEST_CASE("icmp: an IPv6 echo request has type 128 and leaves the checksum to the kernel") {
  auto m = request(family::v6, 7, 9);
  CHECK(m[0] == 128);
  CHECK(m[2] == 0);
  CHECK(m[3] == 0);
}

TEST_CASE("icmp: build refuses a buffer that is too small") {
  auto c = icmp::make_cookie(1, 2);
  bytes out(icmp::request_size - 1);
  CHECK(icmp::build_echo_request(family::v4, 1, 1, c, out) == 0);
}

TEST_CASE("icmp: checksum of RFC 1071's example and of an odd length") {
  bytes b = {0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7};
  CHECK(icmp::checksum(b) == static_cast<std::uint16_t>(~0xddf2 & 0xFFFF));
  bytes odd = {0x01};
  CHECK(icmp::checksum(odd) == static_cast<std::uint16_t>(~0x0100 & 0xFFFF));
}

TEST_CASE("icmp: replies parse for every delivery form") {
  SUBCASE("IPv4 datagram socket: the ICMP message") {
    auto r = icmp::parse_echo_reply(family::v4, false, reply_of(family::v4, request(family::v4, 5, 6)));
    REQUIRE(r);
    CHECK(r->id == 5);
    CHECK(r->sequence == 6);
    CHECK(r->payload.size() == icmp::cookie_size);
  }
  SUBCASE("IPv4 raw socket: IP header first, options honoured") {
    for (std::uint8_t ihl : {5, 6, 15}) {
      auto packet = ipv4(reply_of(family::v4, request(family::v4, 5, 6)), ihl);
      auto r = icmp::parse_echo_reply(family::v4, true, packet);
      REQUIRE(r);
      CHECK(r->sequence == 6);
      auto c = icmp::read_cookie(r->payload);
      REQUIRE(c);
      CHECK(c->nonce == 42u);
    }
  }
  SUBCASE("IPv4 raw socket: padding after the total length is ignored") {
    auto packet = ipv4(reply_of(family::v4, request(family::v4, 5, 6)));
    packet.push_back(0);
    packet.push_back(0);
    auto r = icmp::parse_echo_reply(family::v4, true, packet);
    REQUIRE(r);
    CHECK(r->payload.size() == icmp::cookie_size);
  }
  SUBCASE("IPv6") {
    auto r = icmp::parse_echo_reply(family::v6, false, reply_of(family::v6, request(family::v6, 5, 6)));
    REQUIRE(r);
    CHECK(r->id == 5);
  }
}

TEST_CASE("icmp: malformed replies are refused") {
  auto good4 = reply_of(family::v4, request(family::v4, 5, 6));
  auto good6 = reply_of(family::v6, request(family::v6, 5, 6));

  SUBCASE("truncated, at every length") {
    for (std::size_t n = 0; n < icmp::header_size; ++n) {
      CHECK_FALSE(icmp::parse_echo_reply(family::v4, false, std::span(good4.data(), n)));
      CHECK_FALSE(icmp::parse_echo_reply(family::v6, false, std::span(good6.data(), n)));
    }
    // A cut payload breaks the IPv4 checksum.
    for (std::size_t n = icmp::header_size; n < good4.size(); ++n)
      CHECK_FALSE(icmp::parse_echo_reply(family::v4, false, std::span(good4.data(), n)));
    auto packet = ipv4(good4);
    for (std::size_t n = 0; n < packet.size(); ++n)
      CHECK_FALSE(icmp::parse_echo_reply(family::v4, true, std::span(packet.data(), n)));
  }
  SUBCASE("a wrong checksum, one bit at a time") {
    for (std::size_t bit = 0; bit < good4.size() * 8; ++bit) {
      auto m = good4;
      m[bit / 8] ^= static_cast<std::uint8_t>(1u << (bit % 8));
      CHECK_FALSE(icmp::parse_echo_reply(family::v4, false, m));
    }
  }
  SUBCASE("a wrong type or code") {
    auto req4 = request(family::v4, 5, 6);  // our own request, looped back
    CHECK_FALSE(icmp::parse_echo_reply(family::v4, false, req4));
    CHECK_FALSE(icmp::parse_echo_reply(family::v6, false, request(family::v6, 5, 6)));
    auto m = good4;
    m[1] = 1;
    m[2] = m[3] = 0;
    auto sum = icmp::checksum(m);
    m[2] = static_cast<std::uint8_t>(sum >> 8);
    m[3] = static_cast<std::uint8_t>(sum);
    CHECK_FALSE(icmp::parse_echo_reply(family::v4, false, m));
    // An IPv4 reply read as IPv6 and the reverse.
    CHECK_FALSE(icmp::parse_echo_reply(family::v6, false, good4));
    CHECK_FALSE(icmp::parse_echo_reply(family::v4, false, good6));
  }
  SUBCASE("IHL out of range, wrong version or protocol, bad total length") {
    auto packet = ipv4(good4);
    for (std::uint8_t ihl = 0; ihl < 5; ++ihl) {
      auto p = packet;
      p[0] = static_cast<std::uint8_t>(0x40 | ihl);
      CHECK_FALSE(icmp::parse_echo_reply(family::v4, true, p));
    }
    auto too_large = packet;
    too_large[0] = 0x4F;  // 60 bytes of header in a 44-byte packet
    CHECK_FALSE(icmp::parse_echo_reply(family::v4, true, too_large));
    auto v6 = packet;
    v6[0] = 0x65;
    CHECK_FALSE(icmp::parse_echo_reply(family::v4, true, v6));
    auto udp = packet;
    udp[9] = 17;
    CHECK_FALSE(icmp::parse_echo_reply(family::v4, true, udp));
    auto long_total = packet;
    long_total[3] = static_cast<std::uint8_t>(long_total[3] + 1);
    CHECK_FALSE(icmp::parse_echo_reply(family::v4, true, long_total));
    auto short_total = packet;
    short_total[2] = 0;
    short_total[3] = 10;  // less than the header
    CHECK_FALSE(icmp::parse_echo_reply(family::v4, true, short_total));
  }
  SUBCASE("a cookie of the wrong size") {
    bytes shorter(good4.begin(), good4.end() - 1);
    CHECK_FALSE(icmp::read_cookie(std::span<const std::uint8_t>(shorter).subspan(8)));
    bytes longer = good4;
    longer.push_back(0);
    CHECK_FALSE(icmp::read_cookie(std::span<const std::uint8_t>(longer).subspan(8)));
  }
}

TEST_CASE("icmp: random bytes never crash a parser and are almost never a reply") {
  std::mt19937 rng(12345);
  int accepted = 0;
  for (int i = 0; i < 200000; ++i) {
    bytes b(rng() % 96);
    for (auto& x : b) x = static_cast<std::uint8_t>(rng());
    if (i % 3 == 0 && b.size() > 20) b[0] = static_cast<std::uint8_t>(0x40 | (b[0] & 0x0F));
    for (auto f : {family::v4, family::v6}) {
      for (bool ip : {false, true}) {
        if (auto r = icmp::parse_echo_reply(f, ip, b)) {
          ++accepted;
          CHECK(r->payload.data() >= b.data());
          CHECK(r->payload.data() + r->payload.size() <= b.data() + b.size());
        }
        (void)icmp::parse_echo_error(f, ip, b);
      }
      (void)icmp::parse_echo_request(f, b);
    }
  }
  // IPv6 accepts any type-129/code-0 message (the kernel checked its checksum): about
  // 1 in 65536 of the random ones.
  CHECK(accepted < 200);
}

TEST_CASE("icmp: an IPv4 destination unreachable quoting our request") {
  auto req = request(family::v4, 5, 6);
  auto quoted = ipv4(req, 5, 0x0a000001, 0xc6120002);  // 10.0.0.1 -> 198.18.0.2
  bytes err = {3, 1, 0, 0, 0, 0, 0, 0};
  err.insert(err.end(), quoted.begin(), quoted.end());
  auto sum = icmp::checksum(err);
  err[2] = static_cast<std::uint8_t>(sum >> 8);
  err[3] = static_cast<std::uint8_t>(sum);
  auto packet = ipv4(err, 5, 0x0a0000fe, 0x0a000001);

  auto e = icmp::parse_echo_error(family::v4, true, packet);
  REQUIRE(e);
  CHECK(e->type == 3);
  CHECK(e->code == 1);
  CHECK(e->destination.to_string() == "198.18.0.2");
  CHECK(e->request.id == 5);
  CHECK(e->request.sequence == 6);
  CHECK(icmp::read_cookie(e->request.payload));
  CHECK(icmp::describe_error(family::v4, e->type, e->code) == "destination unreachable (host unreachable)");
  CHECK_FALSE(icmp::parse_echo_reply(family::v4, true, packet));

  SUBCASE("a bad outer checksum is refused") {
    auto bad = packet;
    bad.back() ^= 1;
    CHECK_FALSE(icmp::parse_echo_error(family::v4, true, bad));
  }
  SUBCASE("a quote cut after 8 bytes of the request still names it, without a cookie") {
    bytes cut(err.begin(), err.begin() + 8 + 20 + 8);
    cut[2] = cut[3] = 0;
    auto s = icmp::checksum(cut);
    cut[2] = static_cast<std::uint8_t>(s >> 8);
    cut[3] = static_cast<std::uint8_t>(s);
    auto c = icmp::parse_echo_error(family::v4, true, ipv4(cut));
    REQUIRE(c);
    CHECK(c->request.sequence == 6);
    CHECK_FALSE(icmp::read_cookie(c->request.payload));
  }
  SUBCASE("a quote of something other than an echo request is refused") {
    bytes other = err;
    other[8 + 20] = 0;  // the quoted message is an echo reply
    other[2] = other[3] = 0;
    auto s = icmp::checksum(other);
    other[2] = static_cast<std::uint8_t>(s >> 8);
    other[3] = static_cast<std::uint8_t>(s);
    CHECK_FALSE(icmp::parse_echo_error(family::v4, true, ipv4(other)));
  }
}

TEST_CASE("icmp: an IPv6 destination unreachable quoting our request") {
  auto req = request(family::v6, 5, 6);
  bytes err = {1, 3, 0, 0, 0, 0, 0, 0};
  bytes ip6(40, 0);
  ip6[0] = 0x60;
  ip6[4] = 0;
  ip6[5] = static_cast<std::uint8_t>(req.size());
  ip6[6] = 58;
  ip6[7] = 64;
  ip6[24] = 0x20;
  ip6[25] = 0x01;
  ip6[26] = 0x0d;
  ip6[27] = 0xb8;
  ip6[39] = 1;
  err.insert(err.end(), ip6.begin(), ip6.end());
  err.insert(err.end(), req.begin(), req.end());
  auto e = icmp::parse_echo_error(family::v6, false, err);
  REQUIRE(e);
  CHECK(e->destination.to_string() == "2001:db8::1");
  CHECK(e->request.sequence == 6);
  CHECK(icmp::describe_error(family::v6, e->type, e->code) == "destination unreachable (address unreachable)");
  for (std::size_t n = 0; n < 8 + 40 + 8; ++n) CHECK_FALSE(icmp::parse_echo_error(family::v6, false, std::span(err.data(), n)));
  auto ext = err;
  ext[8 + 6] = 0;  // a hop-by-hop header first: not ours
  CHECK_FALSE(icmp::parse_echo_error(family::v6, false, ext));
}

TEST_CASE("icmp: descriptions of unknown types and codes") {
  CHECK(icmp::describe_error(family::v4, 3, 200) == "destination unreachable");
  CHECK(icmp::describe_error(family::v4, 11, 0) == "time exceeded (TTL expired in transit)");
  CHECK(icmp::describe_error(family::v4, 5, 0) == "ICMP type 5 code 0");
  CHECK(icmp::describe_error(family::v6, 3, 0) == "time exceeded (hop limit exceeded in transit)");
}
