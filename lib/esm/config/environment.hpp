// Helpers for reading CONSUL_* variables as the Consul API client does (Go's ParseBool), shared
// by the loader and the command line.
#pragma once

#include <optional>
#include <string_view>

#include "esm/config/config.hpp"

namespace esm::config {

// Go's strconv.ParseBool: 1 t T TRUE true True / 0 f F FALSE false False.
std::optional<bool> parse_go_bool(std::string_view s);

// A boolean variable: `fallback` when unset or empty; config_error when not a Go boolean.
bool env_bool(const env_lookup& env, std::string_view name, bool fallback);

}  // namespace esm::config
