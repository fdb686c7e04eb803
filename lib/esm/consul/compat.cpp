#include "esm/consul/compat.hpp"

#include <charconv>
#include <set>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "esm/consul/client.hpp"
#include "esm/log/log.hpp"

namespace esm::consul {

namespace asio = boost::asio;

std::optional<version> parse_version(std::string_view text) {
  if (!text.empty() && text.front() == 'v') text.remove_prefix(1);
  if (auto dash = text.find('-'); dash != std::string_view::npos) text = text.substr(0, dash);
  if (auto plus = text.find('+'); plus != std::string_view::npos) text = text.substr(0, plus);
  version v;
  int* parts[] = {&v.major, &v.minor, &v.patch};
  const char* p = text.data();
  const char* end = text.data() + text.size();
  for (int i = 0; i < 3; ++i) {
    auto [next, ec] = std::from_chars(p, end, *parts[i]);
    if (ec != std::errc{} || next == p || *parts[i] < 0) return std::nullopt;
    p = next;
    if (i < 2) {
      if (p == end) return i == 1 ? std::optional<version>(v) : std::nullopt;  // "1.9" is 1.9.0
      if (*p != '.') return std::nullopt;
      ++p;
    }
  }
  if (p != end) return std::nullopt;
  return v;
}

std::optional<std::string> check_consul_versions(const std::vector<std::string>& versions,
                                                 std::string_view esmd_version) {
  std::vector<std::string> bad;
  for (auto& text : versions) {
    auto v = parse_version(text);
    if (!v) bad.push_back("\"" + text + "\" (not a version)");
    else if (*v < minimum_consul_version) bad.push_back(text);
  }
  if (versions.empty()) return "no Consul version to check";
  if (bad.empty()) return std::nullopt;
  std::string msg = "esmd v" + std::string(esmd_version) +
                    " requires Consul >= 1.4.1 on the local agent and every server; found:";
  for (auto& b : bad) msg += "\n  " + b;
  return msg;
}

namespace {
awaitable<bool> pause(std::chrono::milliseconds d) {
  asio::steady_timer t(co_await asio::this_coro::executor, d);
  auto [ec] = co_await t.async_wait(asio::as_tuple(asio::use_awaitable));
  co_return !ec;
}
}  // namespace

awaitable<std::optional<std::string>> wait_for_leader(client& c, std::chrono::milliseconds retry) {
  for (;;) {
    auto r = co_await c.status_leader();
    if (r && !r->empty()) co_return *r;
    if (!r && r.error().is_cancelled()) co_return std::nullopt;
    if (!r) log::error("Error getting leader status", {{"error", r.error().to_string()}});
    else log::info("waiting for cluster to elect a leader");
    if (!co_await pause(retry)) co_return std::nullopt;
  }
}

awaitable<std::optional<std::string>> verify_consul_compatibility(client& c,
                                                                  std::string esmd_version,
                                                                  std::chrono::milliseconds retry,
                                                                  std::string* agent_version) {
  auto self = co_await c.agent_self_info();
  if (!self && self.error().is_cancelled()) co_return std::nullopt;
  if (!self) co_return "Error querying agent version: " + self.error().to_string();
  if (agent_version) *agent_version = self->version;
  std::vector<std::string> versions;
  versions.push_back(self->version.empty() ? std::string("<missing>") : self->version);

  for (;;) {
    auto servers = co_await c.catalog_service_instances("consul");
    if (servers) {
      std::set<std::string> seen;
      for (auto& s : servers->value)
        if (auto it = s.service_meta.find("version"); it != s.service_meta.end()) seen.insert(it->second);
      if (seen.empty())
        log::warn("Unable to determine the Consul server versions; only the agent's was checked",
                  {{"constraint", ">= 1.4.1"}});
      versions.insert(versions.end(), seen.begin(), seen.end());
      break;
    }
    if (servers.error().is_cancelled()) co_return std::nullopt;
    if (servers.error().status != 429) co_return "Error querying server versions: " + servers.error().to_string();
    log::warn("Rate limited while querying server versions, retrying", {{"retry", retry}});
    if (!co_await pause(retry)) co_return std::nullopt;
  }
  if (auto bad = check_consul_versions(versions, esmd_version)) co_return bad;
  std::string all;
  for (auto& v : versions) all += (all.empty() ? "" : ",") + v;
  log::debug("Consul versions are compatible", {{"versions", all}});
  co_return std::nullopt;
}

}  // namespace esm::consul
