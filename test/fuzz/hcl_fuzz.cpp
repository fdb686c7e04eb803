// libFuzzer target for the configuration parsers (HCL v1 and, for input starting with '{',
// JSON) and the decoder behind them. Any input must give a tree or an error value (or a
// config_error from the decoder), never a crash, a hang or an out-of-bounds read.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "esm/config/config.hpp"
#include "esm/config/hcl.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto parsed = esm::config::hcl::parse(text);
  if (parsed.error && parsed.error->message.empty()) __builtin_trap();
  auto hcl_only = esm::config::hcl::parse_hcl(text);
  if (hcl_only.error && (hcl_only.error->pos.line < 1 || hcl_only.error->pos.column < 1))
    __builtin_trap();
  if (!parsed.error) {
    try {
      esm::config::config c;
      esm::config::merge_text(c, text, "fuzz.hcl");
      esm::config::validate(c);
      (void)esm::config::to_json(c);
    } catch (const esm::config::config_error&) {
      // Expected for most inputs.
    }
  }
  return 0;
}
