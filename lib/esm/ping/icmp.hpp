// ICMP echo packets (RFC 792, RFC 4443) for the pinger: building requests and parsing what an
// ICMP socket delivers, without sockets. Everything received is untrusted: a parser returns
// nullopt for anything that is not well-formed, and never reads past its input.
//
// What a Linux socket delivers: an IPv4 raw socket gives the whole IP packet (header first,
// its length in the IHL field); an IPv4 datagram ("ping") socket and both kinds of IPv6 socket
// give the ICMP message only. The kernel computes the ICMPv6 checksum on send (it covers a
// pseudo-header the sender does not see) and verifies it on receive; for IPv4 we compute it
// and check it.
//
// The payload is a 16-byte cookie: 8 bytes chosen at random per pinger, then 8 bytes of the
// send's own nonce, so that a reply is matched by address, identifier, sequence and cookie,
// and a late reply to an earlier send with the same sequence number is recognised as such.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>

#include <boost/asio/ip/address.hpp>

namespace esm::ping::icmp {

enum class family : std::uint8_t { v4, v6 };

inline constexpr std::size_t header_size = 8;
inline constexpr std::size_t cookie_size = 16;
inline constexpr std::size_t request_size = header_size + cookie_size;

// Types (IPv4, then IPv6).
inline constexpr std::uint8_t v4_echo_reply = 0;
inline constexpr std::uint8_t v4_destination_unreachable = 3;
inline constexpr std::uint8_t v4_echo_request = 8;
inline constexpr std::uint8_t v4_time_exceeded = 11;
inline constexpr std::uint8_t v6_destination_unreachable = 1;
inline constexpr std::uint8_t v6_time_exceeded = 3;
inline constexpr std::uint8_t v6_echo_request = 128;
inline constexpr std::uint8_t v6_echo_reply = 129;

using cookie = std::array<std::uint8_t, cookie_size>;

// The pinger's key then the send's nonce, both big-endian.
cookie make_cookie(std::uint64_t key, std::uint64_t nonce);
struct cookie_parts {
  std::uint64_t key = 0;
  std::uint64_t nonce = 0;
};
// nullopt unless the payload is exactly one cookie.
std::optional<cookie_parts> read_cookie(std::span<const std::uint8_t> payload);

// The Internet checksum (RFC 1071) of `data`: 0 over a message whose checksum field is right.
std::uint16_t checksum(std::span<const std::uint8_t> data);

struct echo {
  std::uint16_t id = 0;
  std::uint16_t sequence = 0;
  std::span<const std::uint8_t> payload;  // a view into the parsed packet
};

// Writes an echo request into `out` (IPv4: type 8 with its checksum; IPv6: type 128, checksum
// left 0 for the kernel). Returns the bytes written, 0 when `out` is too small.
std::size_t build_echo_request(family f, std::uint16_t id, std::uint16_t sequence,
                               std::span<const std::uint8_t> payload, std::span<std::uint8_t> out);

// An echo reply as a socket delivered it; `with_ip_header` for IPv4 raw sockets (IHL honoured,
// IPv4 only). nullopt for anything else: truncated, another type or a non-zero code, a bad
// IPv4 checksum, an IP header that is not IPv4/ICMP or whose IHL or total length is out of
// range.
std::optional<echo> parse_echo_reply(family f, bool with_ip_header, std::span<const std::uint8_t> packet);

// An echo request as the kernel quotes it in a datagram socket's error queue (IP_RECVERR): the
// ICMP message we sent, possibly truncated by the router that quoted it (its checksum is not
// checked; its payload may be shorter than a cookie).
std::optional<echo> parse_echo_request(family f, std::span<const std::uint8_t> message);

// An ICMP error (destination unreachable, time exceeded) that quotes one of our echo requests,
// as a raw socket delivered it. The quoted request's payload may be truncated.
struct echo_error {
  std::uint8_t type = 0;
  std::uint8_t code = 0;
  boost::asio::ip::address destination;  // of the quoted request
  echo request;
};
std::optional<echo_error> parse_echo_error(family f, bool with_ip_header, std::span<const std::uint8_t> packet);

// "destination unreachable (host unreachable)", "time exceeded (TTL expired in transit)", ...
std::string describe_error(family f, std::uint8_t type, std::uint8_t code);

}  // namespace esm::ping::icmp
