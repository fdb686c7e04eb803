// libFuzzer target: the ICMP packet codec (lib/esm/ping/icmp.hpp) on what a socket delivers:
// every parser, for both families, with and without an IPv4 header, on the same bytes. The
// parsers must return nullopt or a view inside the input (never past it), agree with the
// bytes they read (type, code, identifier, sequence, the quoted destination), and a reply
// built by build_echo_request must parse back.
#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <span>

#include "esm/ping/icmp.hpp"

namespace icmp = esm::ping::icmp;

namespace {

bool inside(std::span<const std::uint8_t> view, std::span<const std::uint8_t> whole) {
  if (view.empty()) return view.data() == nullptr || (view.data() >= whole.data() && view.data() <= whole.data() + whole.size());
  return view.data() >= whole.data() && view.data() + view.size() <= whole.data() + whole.size();
}

void check_echo(const icmp::echo& e, std::span<const std::uint8_t> whole) {
  if (!inside(e.payload, whole)) __builtin_trap();
  // The 8-byte header precedes the payload; its id and sequence are what was read.
  const std::uint8_t* h = e.payload.data() - icmp::header_size;
  if (h < whole.data()) __builtin_trap();
  if (e.id != ((h[4] << 8) | h[5]) || e.sequence != ((h[6] << 8) | h[7])) __builtin_trap();
  if (auto c = icmp::read_cookie(e.payload)) {
    auto again = icmp::make_cookie(c->key, c->nonce);
    if (!std::equal(again.begin(), again.end(), e.payload.begin())) __builtin_trap();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::span<const std::uint8_t> in(data, size);
  for (auto f : {icmp::family::v4, icmp::family::v6}) {
    for (bool ip : {false, true}) {
      if (auto r = icmp::parse_echo_reply(f, ip, in)) {
        check_echo(*r, in);
        const std::uint8_t* h = r->payload.data() - icmp::header_size;
        if (h[0] != (f == icmp::family::v4 ? icmp::v4_echo_reply : icmp::v6_echo_reply) || h[1] != 0) __builtin_trap();
        if (f == icmp::family::v4 &&
            icmp::checksum(std::span<const std::uint8_t>(h, icmp::header_size + r->payload.size())) != 0)
          __builtin_trap();
      }
      if (auto e = icmp::parse_echo_error(f, ip, in)) {
        check_echo(e->request, in);
        if (f == icmp::family::v4 ? !e->destination.is_v4() : !e->destination.is_v6()) __builtin_trap();
        const auto text = icmp::describe_error(f, e->type, e->code);
        if (text.empty() || text.size() > 128) __builtin_trap();
      }
    }
    if (auto q = icmp::parse_echo_request(f, in)) check_echo(*q, in);
  }
  // Any type and code has a description.
  if (size >= 2)
    for (auto f : {icmp::family::v4, icmp::family::v6})
      if (icmp::describe_error(f, data[0], data[1]).empty()) __builtin_trap();

  // A request with this input as payload parses back, as a request and (turned into a reply
  // with the checksum fixed up) as a reply.
  std::array<std::uint8_t, 1500> out{};
  const std::uint16_t id = size >= 2 ? static_cast<std::uint16_t>(data[0] << 8 | data[1]) : 7;
  const std::uint16_t seq = size >= 4 ? static_cast<std::uint16_t>(data[2] << 8 | data[3]) : 9;
  for (auto f : {icmp::family::v4, icmp::family::v6}) {
    std::size_t n = icmp::build_echo_request(f, id, seq, in, out);
    if (icmp::header_size + size > out.size()) {
      if (n != 0) __builtin_trap();
      continue;
    }
    if (n != icmp::header_size + size) __builtin_trap();
    std::span<const std::uint8_t> msg(out.data(), n);
    auto q = icmp::parse_echo_request(f, msg);
    if (!q || q->id != id || q->sequence != seq || !std::equal(q->payload.begin(), q->payload.end(), in.begin(), in.end()))
      __builtin_trap();
    if (f == icmp::family::v4) {
      if (icmp::checksum(msg) != 0) __builtin_trap();
      out[0] = icmp::v4_echo_reply;  // type 8 -> 0: the checksum grows by 0x0800
      out[2] = out[3] = 0;
      auto sum = icmp::checksum(msg);
      out[2] = static_cast<std::uint8_t>(sum >> 8);
      out[3] = static_cast<std::uint8_t>(sum);
      auto r = icmp::parse_echo_reply(f, false, msg);
      if (!r || r->id != id || r->sequence != seq) __builtin_trap();
    }
  }
  return 0;
}
