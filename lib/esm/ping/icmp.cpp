#include "esm/ping/icmp.hpp"

#include <algorithm>

namespace esm::ping::icmp {

namespace {

using bytes = std::span<const std::uint8_t>;

std::uint16_t be16(bytes b, std::size_t at) {
  return static_cast<std::uint16_t>((b[at] << 8) | b[at + 1]);
}

std::uint64_t be64(bytes b, std::size_t at) {
  std::uint64_t v = 0;
  for (std::size_t i = 0; i < 8; ++i) v = (v << 8) | b[at + i];
  return v;
}

void put64(std::uint8_t* out, std::uint64_t v) {
  for (int i = 0; i < 8; ++i) out[i] = static_cast<std::uint8_t>(v >> (56 - 8 * i));
}

// The ICMP message inside an IPv4 packet (a raw socket's delivery, or the packet an ICMP error
// quotes): version 4, protocol ICMP, IHL within the packet. `exact` also requires the total
// length to cover the whole header and not exceed the bytes we have (a quoted packet's total
// length is that of the original, which the quote may have cut).
std::optional<bytes> ipv4_payload(bytes packet, bool exact) {
  if (packet.size() < 20) return std::nullopt;
  if ((packet[0] >> 4) != 4) return std::nullopt;
  std::size_t ihl = static_cast<std::size_t>(packet[0] & 0x0F) * 4;
  if (ihl < 20 || ihl > packet.size()) return std::nullopt;
  if (packet[9] != 1) return std::nullopt;  // IPPROTO_ICMP
  std::size_t total = be16(packet, 2);
  if (total < ihl) return std::nullopt;
  if (exact) {
    if (total > packet.size()) return std::nullopt;  // truncated
    packet = packet.first(total);                    // link-layer padding beyond it
  }
  return packet.subspan(ihl);
}

std::optional<echo> echo_of(bytes m, std::uint8_t type) {
  if (m.size() < header_size) return std::nullopt;
  if (m[0] != type || m[1] != 0) return std::nullopt;
  echo e;
  e.id = be16(m, 4);
  e.sequence = be16(m, 6);
  e.payload = m.subspan(header_size);
  return e;
}

}  // namespace

cookie make_cookie(std::uint64_t key, std::uint64_t nonce) {
  cookie c{};
  put64(c.data(), key);
  put64(c.data() + 8, nonce);
  return c;
}

std::optional<cookie_parts> read_cookie(std::span<const std::uint8_t> payload) {
  if (payload.size() != cookie_size) return std::nullopt;
  return cookie_parts{be64(payload, 0), be64(payload, 8)};
}

std::uint16_t checksum(std::span<const std::uint8_t> data) {
  std::uint32_t sum = 0;
  std::size_t i = 0;
  for (; i + 1 < data.size(); i += 2) sum += static_cast<std::uint32_t>((data[i] << 8) | data[i + 1]);
  if (i < data.size()) sum += static_cast<std::uint32_t>(data[i] << 8);
  while (sum >> 16) sum = (sum & 0xFFFF) + (sum >> 16);
  return static_cast<std::uint16_t>(~sum & 0xFFFF);
}

std::size_t build_echo_request(family f, std::uint16_t id, std::uint16_t sequence,
                               std::span<const std::uint8_t> payload, std::span<std::uint8_t> out) {
  std::size_t n = header_size + payload.size();
  if (out.size() < n) return 0;
  out[0] = f == family::v4 ? v4_echo_request : v6_echo_request;
  out[1] = 0;
  out[2] = out[3] = 0;
  out[4] = static_cast<std::uint8_t>(id >> 8);
  out[5] = static_cast<std::uint8_t>(id);
  out[6] = static_cast<std::uint8_t>(sequence >> 8);
  out[7] = static_cast<std::uint8_t>(sequence);
  std::copy(payload.begin(), payload.end(), out.begin() + header_size);
  if (f == family::v4) {
    std::uint16_t sum = checksum(out.first(n));
    out[2] = static_cast<std::uint8_t>(sum >> 8);
    out[3] = static_cast<std::uint8_t>(sum);
  }
  return n;
}

std::optional<echo> parse_echo_reply(family f, bool with_ip_header, std::span<const std::uint8_t> packet) {
  bytes m = packet;
  if (f == family::v4 && with_ip_header) {
    auto inner = ipv4_payload(packet, true);
    if (!inner) return std::nullopt;
    m = *inner;
  }
  if (f == family::v4) {
    if (m.size() < header_size || checksum(m) != 0) return std::nullopt;
    return echo_of(m, v4_echo_reply);
  }
  return echo_of(m, v6_echo_reply);
}

std::optional<echo> parse_echo_request(family f, std::span<const std::uint8_t> message) {
  return echo_of(message, f == family::v4 ? v4_echo_request : v6_echo_request);
}

std::optional<echo_error> parse_echo_error(family f, bool with_ip_header, std::span<const std::uint8_t> packet) {
  bytes m = packet;
  if (f == family::v4 && with_ip_header) {
    auto inner = ipv4_payload(packet, true);
    if (!inner) return std::nullopt;
    m = *inner;
  }
  if (m.size() < header_size) return std::nullopt;
  echo_error out;
  out.type = m[0];
  out.code = m[1];
  bytes quoted = m.subspan(header_size);  // after type, code, checksum and 4 unused bytes
  if (f == family::v4) {
    if (out.type != v4_destination_unreachable && out.type != v4_time_exceeded) return std::nullopt;
    if (checksum(m) != 0) return std::nullopt;
    auto inner = ipv4_payload(quoted, false);
    if (!inner) return std::nullopt;
    boost::asio::ip::address_v4::bytes_type dst{};
    std::copy_n(quoted.begin() + 16, 4, dst.begin());
    out.destination = boost::asio::ip::address_v4(dst);
    auto request = echo_of(*inner, v4_echo_request);
    if (!request) return std::nullopt;
    out.request = *request;
    return out;
  }
  if (out.type != v6_destination_unreachable && out.type != v6_time_exceeded) return std::nullopt;
  // The quoted IPv6 header; an echo request we sent carries no extension header.
  if (quoted.size() < 40 || (quoted[0] >> 4) != 6 || quoted[6] != 58) return std::nullopt;
  boost::asio::ip::address_v6::bytes_type dst{};
  std::copy_n(quoted.begin() + 24, 16, dst.begin());
  out.destination = boost::asio::ip::address_v6(dst);
  auto request = echo_of(quoted.subspan(40), v6_echo_request);
  if (!request) return std::nullopt;
  out.request = *request;
  return out;
}

std::string describe_error(family f, std::uint8_t type, std::uint8_t code) {
  auto with = [](const char* what, const char* detail) {
    return detail ? std::string(what) + " (" + detail + ")" : std::string(what);
  };
  if (f == family::v4) {
    if (type == v4_destination_unreachable) {
      static const char* const codes[] = {
          "network unreachable", "host unreachable", "protocol unreachable", "port unreachable",
          "fragmentation needed", "source route failed", "network unknown", "host unknown",
          "source host isolated", "network prohibited", "host prohibited",
          "network unreachable for TOS", "host unreachable for TOS", "administratively prohibited",
          "host precedence violation", "precedence cut-off"};
      return with("destination unreachable", code < std::size(codes) ? codes[code] : nullptr);
    }
    if (type == v4_time_exceeded)
      return with("time exceeded", code == 0   ? "TTL expired in transit"
                                   : code == 1 ? "fragment reassembly time exceeded"
                                               : nullptr);
    return "ICMP type " + std::to_string(type) + " code " + std::to_string(code);
  }
  if (type == v6_destination_unreachable) {
    static const char* const codes[] = {"no route to destination", "administratively prohibited",
                                        "beyond scope of source address", "address unreachable",
                                        "port unreachable", "source address failed policy",
                                        "reject route to destination"};
    return with("destination unreachable", code < std::size(codes) ? codes[code] : nullptr);
  }
  if (type == v6_time_exceeded)
    return with("time exceeded", code == 0   ? "hop limit exceeded in transit"
                                 : code == 1 ? "fragment reassembly time exceeded"
                                             : nullptr);
  return "ICMPv6 type " + std::to_string(type) + " code " + std::to_string(code);
}

}  // namespace esm::ping::icmp
