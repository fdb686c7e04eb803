#include "esm/consul/json.hpp"

#include <algorithm>
#include <memory>

#include <boost/json/error.hpp>
#include <boost/json/monotonic_resource.hpp>
#include <boost/json/parse_options.hpp>
#include <boost/json/value_from.hpp>
#include <boost/json/value_to.hpp>
#include <boost/system/system_error.hpp>

#include "esm/util/base64.hpp"
#include "esm/util/duration.hpp"

namespace esm::consul {
namespace {

using std::chrono::nanoseconds;

const json::object& as_object(const json::value& jv) { return jv.as_object(); }

template <class T>
void get(const json::object& o, std::string_view key, T& out) {
  auto* v = o.if_contains(key);
  if (!v || v->is_null()) return;
  out = json::value_to<T>(*v);
}

// Consul writes durations as Go duration strings in most places and as integer nanoseconds
// in others (session LockDelay, api *Duration fields).
void get_duration(const json::object& o, std::string_view key, nanoseconds& out) {
  auto* v = o.if_contains(key);
  if (!v || v->is_null()) return;
  if (v->is_string()) {
    std::string err;
    auto d = util::parse_go_duration(v->get_string(), &err);
    if (!d) throw std::invalid_argument(std::string(key) + ": " + err);
    out = *d;
    return;
  }
  out = nanoseconds{v->to_number<std::int64_t>()};
}

// For check definitions read from the catalog: a duration member that does not parse is
// reported (false) instead of failing the whole list, so one odd check cannot stop an
// instance from reading its share; the caller keeps the raw member for the write-back.
bool get_duration_lenient(const json::object& o, std::string_view key, nanoseconds& out) {
  auto* v = o.if_contains(key);
  if (!v || v->is_null()) return true;
  if (v->is_string()) {
    auto d = util::parse_go_duration(v->get_string());
    if (!d) return false;
    out = *d;
    return true;
  }
  if (v->is_int64()) {
    out = nanoseconds{v->get_int64()};
    return true;
  }
  if (v->is_uint64() && v->get_uint64() <= std::uint64_t(INT64_MAX)) {
    out = nanoseconds{std::int64_t(v->get_uint64())};
    return true;
  }
  return false;
}

template <class T>
void put(json::object& o, std::string_view key, const T& v) {
  o[key] = json::value_from(v);
}

void put_if(json::object& o, std::string_view key, const std::string& v) {
  if (!v.empty()) o[key] = v;
}

template <std::size_t B>
void put_if(json::object& o, std::string_view key, const compact_string<B>& v) {
  if (!v.empty()) o[key] = v.view();
}

// As get<std::string>: the same members accepted, the same errors.
template <std::size_t B>
void get(const json::object& o, std::string_view key, compact_string<B>& out) {
  auto* v = o.if_contains(key);
  if (!v || v->is_null()) return;
  if (v->is_string()) {
    out = std::string_view(v->get_string());
    return;
  }
  out = json::value_to<std::string>(*v);  // throws what get<std::string> throws
}

template <class C>
void put_if_any(json::object& o, std::string_view key, const C& v) {
  if (!v.empty()) o[key] = json::value_from(v);
}

// A Definition's Header, {"Name": ["value", ...]}: what get<std::map<std::string,
// std::vector<std::string>>> accepts, with its errors (a member that is not an array of
// strings throws), built straight into one block.
void get(const json::object& o, std::string_view key, util::header_block& out) {
  auto* v = o.if_contains(key);
  if (!v || v->is_null()) return;
  auto fail = [](json::error e) { throw boost::system::system_error(make_error_code(e)); };
  const auto* names = v->if_object();
  if (!names) fail(json::error::not_object);
  std::vector<std::pair<std::string_view, std::vector<std::string_view>>> entries;
  entries.reserve(names->size());
  for (const auto& m : *names) {
    const auto* values = m.value().if_array();
    if (!values) fail(json::error::not_array);
    auto& e = entries.emplace_back(std::string_view(m.key()), std::vector<std::string_view>());
    e.second.reserve(values->size());
    for (const auto& value : *values) {
      const auto* s = value.if_string();
      if (!s) fail(json::error::not_string);
      e.second.emplace_back(*s);
    }
  }
  out = util::header_block(std::move(entries));
}

void put_if_any(json::object& o, std::string_view key, const util::header_block& v) {
  if (v.empty()) return;
  json::object names;
  names.reserve(v.size());
  for (auto e : v) {
    json::array values;
    values.reserve(e.values.size());
    for (auto value : e.values) values.emplace_back(value);
    names.emplace(e.name, std::move(values));
  }
  o[key] = std::move(names);
}

void put_duration_if(json::object& o, std::string_view key, nanoseconds d) {
  if (d.count() != 0) o[key] = util::format_go_duration(d);
}

// A base64 member (KV values); null or absent leaves `out` empty.
void get_base64(const json::object& o, std::string_view key, const std::string& what, std::string& out) {
  auto* v = o.if_contains(key);
  if (!v || v->is_null()) return;
  auto decoded = util::base64_decode(v->as_string());
  if (!decoded) throw std::invalid_argument("KV value of " + what + " is not base64");
  out = std::move(*decoded);
}

// The members of `o` not in `known`, kept for writing back.
json::object rest(const json::object& o, std::initializer_list<std::string_view> known) {
  json::object r;
  for (auto& kv : o) {
    bool modelled = false;
    for (auto k : known) modelled = modelled || kv.key() == k;
    if (!modelled) r.emplace(kv.key(), kv.value());
  }
  return r;
}

}  // namespace

// --- node -------------------------------------------------------------------------------

void tag_invoke(json::value_from_tag, json::value& jv, const node& v) {
  json::object o;
  put_if(o, "ID", v.id);
  o["Node"] = v.name;
  put_if(o, "Address", v.address);
  put_if(o, "Datacenter", v.datacenter);
  put_if(o, "Partition", v.partition);
  put_if_any(o, "TaggedAddresses", v.tagged_addresses);
  put_if_any(o, "Meta", v.meta);
  if (v.create_index) o["CreateIndex"] = v.create_index;
  if (v.modify_index) o["ModifyIndex"] = v.modify_index;
  jv = std::move(o);
}

node tag_invoke(json::value_to_tag<node>, const json::value& jv) {
  auto& o = as_object(jv);
  node n;
  get(o, "ID", n.id);
  get(o, "Node", n.name);
  get(o, "Address", n.address);
  get(o, "Datacenter", n.datacenter);
  get(o, "Partition", n.partition);
  get(o, "TaggedAddresses", n.tagged_addresses);
  get(o, "Meta", n.meta);
  get(o, "CreateIndex", n.create_index);
  get(o, "ModifyIndex", n.modify_index);
  return n;
}

// --- check definition --------------------------------------------------------------------

void tag_invoke(json::value_from_tag, json::value& jv, const check_definition& v) {
  json::object o = v.extra.object();
  put_if(o, "HTTP", v.http);
  put_if_any(o, "Header", v.header);
  put_if(o, "Method", v.method);
  put_if(o, "Body", v.body);
  if (v.disable_redirects) o["DisableRedirects"] = true;
  put_if(o, "TLSServerName", v.tls_server_name);
  if (v.tls_skip_verify) o["TLSSkipVerify"] = true;
  put_if(o, "TCP", v.tcp);
  if (v.tcp_use_tls) o["TCPUseTLS"] = true;
  put_if(o, "UDP", v.udp);
  put_if(o, "GRPC", v.grpc);
  if (v.grpc_use_tls) o["GRPCUseTLS"] = true;
  put_if(o, "H2PING", v.h2ping);
  if (!v.h2ping.empty()) o["H2PingUseTLS"] = v.h2ping_use_tls;
  put_if(o, "OSService", v.os_service);
  put_if_any(o, "ScriptArgs", v.script_args);
  put_if(o, "DockerContainerID", v.docker_container_id);
  put_if(o, "AliasNode", v.alias_node);
  put_if(o, "AliasService", v.alias_service);
  put_duration_if(o, "Interval", v.interval);
  put_duration_if(o, "Timeout", v.timeout);
  put_duration_if(o, "TTL", v.ttl);
  put_duration_if(o, "DeregisterCriticalServiceAfter", v.deregister_critical_service_after);
  jv = std::move(o);
}

check_definition tag_invoke(json::value_to_tag<check_definition>, const json::value& jv) {
  auto& o = as_object(jv);
  check_definition d;
  get(o, "HTTP", d.http);
  get(o, "Header", d.header);
  get(o, "Method", d.method);
  get(o, "Body", d.body);
  get(o, "DisableRedirects", d.disable_redirects);
  get(o, "TLSServerName", d.tls_server_name);
  get(o, "TLSSkipVerify", d.tls_skip_verify);
  get(o, "TCP", d.tcp);
  get(o, "TCPUseTLS", d.tcp_use_tls);
  get(o, "UDP", d.udp);
  get(o, "GRPC", d.grpc);
  get(o, "GRPCUseTLS", d.grpc_use_tls);
  get(o, "H2PING", d.h2ping);
  get(o, "H2PingUseTLS", d.h2ping_use_tls);
  get(o, "OSService", d.os_service);
  get(o, "ScriptArgs", d.script_args);
  get(o, "DockerContainerID", d.docker_container_id);
  get(o, "AliasNode", d.alias_node);
  get(o, "AliasService", d.alias_service);
  // The api package's *Duration members carry the same values as integer nanoseconds; the
  // plain names win when both are present.
  std::vector<std::string_view> invalid;
  auto duration = [&](std::string_view key, nanoseconds& out) {
    if (!get_duration_lenient(o, key, out)) invalid.push_back(key);
  };
  duration("IntervalDuration", d.interval);
  duration("Interval", d.interval);
  duration("TimeoutDuration", d.timeout);
  duration("Timeout", d.timeout);
  duration("TTL", d.ttl);
  duration("DeregisterCriticalServiceAfterDuration", d.deregister_critical_service_after);
  duration("DeregisterCriticalServiceAfter", d.deregister_critical_service_after);
  d.extra = rest(o, {"HTTP", "Header", "Method", "Body", "DisableRedirects", "TLSServerName",
                     "TLSSkipVerify", "TCP", "TCPUseTLS", "UDP", "GRPC", "GRPCUseTLS", "H2PING",
                     "H2PingUseTLS", "OSService", "ScriptArgs", "DockerContainerID", "AliasNode",
                     "AliasService", "Interval", "IntervalDuration", "Timeout",
                     "TimeoutDuration", "TTL", "DeregisterCriticalServiceAfter",
                     "DeregisterCriticalServiceAfterDuration"});
  for (auto key : invalid) d.extra[key] = o.at(key);  // written back as it came
  return d;
}

// --- health check ------------------------------------------------------------------------

void tag_invoke(json::value_from_tag, json::value& jv, const health_check& v) {
  json::object o = v.extra.object();
  o["Node"] = v.node.view();
  o["CheckID"] = v.check_id.view();
  o["Name"] = v.name.view();
  o["Status"] = v.status.view();
  o["Notes"] = v.notes.view();
  o["Output"] = v.output.view();
  o["ServiceID"] = v.service_id.view();
  o["ServiceName"] = v.service_name.view();
  put(o, "ServiceTags", v.service_tags);
  put_if(o, "Type", v.type);
  put_if(o, "Namespace", v.name_space);
  put_if(o, "Partition", v.partition);
  put(o, "Definition", v.definition);
  if (v.create_index) o["CreateIndex"] = v.create_index;
  if (v.modify_index) o["ModifyIndex"] = v.modify_index;
  jv = std::move(o);
}

health_check tag_invoke(json::value_to_tag<health_check>, const json::value& jv) {
  auto& o = as_object(jv);
  health_check c;
  get(o, "Node", c.node);
  get(o, "CheckID", c.check_id);
  get(o, "Name", c.name);
  get(o, "Status", c.status);
  get(o, "Notes", c.notes);
  get(o, "Output", c.output);
  get(o, "ServiceID", c.service_id);
  get(o, "ServiceName", c.service_name);
  get(o, "ServiceTags", c.service_tags);
  get(o, "Type", c.type);
  get(o, "Namespace", c.name_space);
  get(o, "Partition", c.partition);
  get(o, "Definition", c.definition);
  get(o, "CreateIndex", c.create_index);
  get(o, "ModifyIndex", c.modify_index);
  c.extra = rest(o, {"Node", "CheckID", "Name", "Status", "Notes", "Output", "ServiceID",
                     "ServiceName", "ServiceTags", "Type", "Namespace", "Partition",
                     "Definition", "CreateIndex", "ModifyIndex"});
  return c;
}

std::optional<check_key> check_key_of(const json::value& jv) {
  auto* o = jv.if_object();
  if (!o) return std::nullopt;
  bool ok = true;
  auto str = [&](std::string_view key) -> std::string_view {
    auto* v = o->if_contains(key);
    if (!v || v->is_null()) return {};
    if (auto* s = v->if_string()) return *s;
    ok = false;
    return {};
  };
  check_key k;
  k.node = str("Node");
  k.check_id = str("CheckID");
  k.service_id = str("ServiceID");
  k.name_space = str("Namespace");
  k.partition = str("Partition");
  if (auto* m = o->if_contains("ModifyIndex")) {
    if (m->is_uint64()) k.modify_index = m->get_uint64();
    else if (m->is_int64() && m->get_int64() > 0) k.modify_index = static_cast<std::uint64_t>(m->get_int64());
  }
  if (!ok || k.modify_index == 0) return std::nullopt;
  return k;
}

// --- services ----------------------------------------------------------------------------

void tag_invoke(json::value_from_tag, json::value& jv, const agent_service& v) {
  json::object o;
  o["ID"] = v.id;
  o["Service"] = v.service;
  put_if_any(o, "Tags", v.tags);
  put_if_any(o, "Meta", v.meta);
  put_if(o, "Address", v.address);
  if (v.port) o["Port"] = v.port;
  put_if(o, "Namespace", v.name_space);
  put_if(o, "Partition", v.partition);
  jv = std::move(o);
}

agent_service tag_invoke(json::value_to_tag<agent_service>, const json::value& jv) {
  auto& o = as_object(jv);
  agent_service s;
  get(o, "ID", s.id);
  get(o, "Service", s.service);
  get(o, "Tags", s.tags);
  get(o, "Meta", s.meta);
  get(o, "Address", s.address);
  get(o, "Port", s.port);
  get(o, "Namespace", s.name_space);
  get(o, "Partition", s.partition);
  get(o, "CreateIndex", s.create_index);
  get(o, "ModifyIndex", s.modify_index);
  return s;
}

void tag_invoke(json::value_from_tag, json::value& jv, const catalog_service& v) {
  json::object o;
  o["ID"] = v.id;
  o["Node"] = v.node;
  o["Address"] = v.address;
  o["Datacenter"] = v.datacenter;
  put(o, "NodeMeta", v.node_meta);
  o["ServiceID"] = v.service_id;
  o["ServiceName"] = v.service_name;
  put(o, "ServiceTags", v.service_tags);
  put(o, "ServiceMeta", v.service_meta);
  o["ServiceAddress"] = v.service_address;
  o["ServicePort"] = v.service_port;
  put_if(o, "Namespace", v.name_space);
  put_if(o, "Partition", v.partition);
  o["CreateIndex"] = v.create_index;
  o["ModifyIndex"] = v.modify_index;
  jv = std::move(o);
}

catalog_service tag_invoke(json::value_to_tag<catalog_service>, const json::value& jv) {
  auto& o = as_object(jv);
  catalog_service s;
  get(o, "ID", s.id);
  get(o, "Node", s.node);
  get(o, "Address", s.address);
  get(o, "Datacenter", s.datacenter);
  get(o, "NodeMeta", s.node_meta);
  get(o, "ServiceID", s.service_id);
  get(o, "ServiceName", s.service_name);
  get(o, "ServiceTags", s.service_tags);
  get(o, "ServiceMeta", s.service_meta);
  get(o, "ServiceAddress", s.service_address);
  get(o, "ServicePort", s.service_port);
  get(o, "Namespace", s.name_space);
  get(o, "Partition", s.partition);
  get(o, "CreateIndex", s.create_index);
  get(o, "ModifyIndex", s.modify_index);
  return s;
}

void tag_invoke(json::value_from_tag, json::value& jv, const service_entry& v) {
  json::object o;
  put(o, "Node", v.node);
  put(o, "Service", v.service);
  put(o, "Checks", v.checks);
  jv = std::move(o);
}

service_entry tag_invoke(json::value_to_tag<service_entry>, const json::value& jv) {
  auto& o = as_object(jv);
  service_entry e;
  get(o, "Node", e.node);
  get(o, "Service", e.service);
  get(o, "Checks", e.checks);
  return e;
}

void tag_invoke(json::value_from_tag, json::value& jv, const catalog_node& v) {
  json::object o;
  put(o, "Node", v.node);
  put(o, "Services", v.services);
  jv = std::move(o);
}

catalog_node tag_invoke(json::value_to_tag<catalog_node>, const json::value& jv) {
  auto& o = as_object(jv);
  catalog_node n;
  get(o, "Node", n.node);
  get(o, "Services", n.services);
  return n;
}

// --- KV and sessions ---------------------------------------------------------------------

void tag_invoke(json::value_from_tag, json::value& jv, const kv_pair& v) {
  json::object o;
  o["Key"] = v.key;
  o["Value"] = util::base64_encode(v.value);
  o["Flags"] = v.flags;
  put_if(o, "Session", v.session);
  o["CreateIndex"] = v.create_index;
  o["ModifyIndex"] = v.modify_index;
  o["LockIndex"] = v.lock_index;
  jv = std::move(o);
}

kv_pair tag_invoke(json::value_to_tag<kv_pair>, const json::value& jv) {
  auto& o = as_object(jv);
  kv_pair p;
  get(o, "Key", p.key);
  get_base64(o, "Value", p.key, p.value);
  get(o, "Flags", p.flags);
  get(o, "Session", p.session);
  get(o, "CreateIndex", p.create_index);
  get(o, "ModifyIndex", p.modify_index);
  get(o, "LockIndex", p.lock_index);
  return p;
}

void tag_invoke(json::value_from_tag, json::value& jv, const session_request& v) {
  json::object o;
  put_if(o, "Name", v.name);
  put_if(o, "Node", v.node);
  if (v.lock_delay.count() >= 0) o["LockDelay"] = util::format_go_duration(v.lock_delay);
  put_if(o, "Behavior", v.behavior);
  put_duration_if(o, "TTL", v.ttl);
  if (v.checks) put(o, "Checks", *v.checks);
  put_if_any(o, "NodeChecks", v.node_checks);
  jv = std::move(o);
}

void tag_invoke(json::value_from_tag, json::value& jv, const session& v) {
  json::object o;
  o["ID"] = v.id;
  o["Name"] = v.name;
  o["Node"] = v.node;
  o["LockDelay"] = v.lock_delay.count();
  o["Behavior"] = v.behavior;
  o["TTL"] = v.ttl.count() ? util::format_go_duration(v.ttl) : std::string();
  put(o, "Checks", v.checks);
  put_if_any(o, "NodeChecks", v.node_checks);
  o["CreateIndex"] = v.create_index;
  o["ModifyIndex"] = v.modify_index;
  jv = std::move(o);
}

session tag_invoke(json::value_to_tag<session>, const json::value& jv) {
  auto& o = as_object(jv);
  session s;
  get(o, "ID", s.id);
  get(o, "Name", s.name);
  get(o, "Node", s.node);
  get_duration(o, "LockDelay", s.lock_delay);
  get(o, "Behavior", s.behavior);
  if (auto* ttl = o.if_contains("TTL"); ttl && ttl->is_string() && !ttl->get_string().empty())
    get_duration(o, "TTL", s.ttl);
  get(o, "Checks", s.checks);
  get(o, "NodeChecks", s.node_checks);
  get(o, "CreateIndex", s.create_index);
  get(o, "ModifyIndex", s.modify_index);
  return s;
}

// --- coordinates and agent ---------------------------------------------------------------

void tag_invoke(json::value_from_tag, json::value& jv, const coordinate_vec& v) {
  json::object o;
  put(o, "Vec", v.vec);
  o["Error"] = v.error;
  o["Adjustment"] = v.adjustment;
  o["Height"] = v.height;
  jv = std::move(o);
}

coordinate_vec tag_invoke(json::value_to_tag<coordinate_vec>, const json::value& jv) {
  auto& o = as_object(jv);
  coordinate_vec c;
  get(o, "Vec", c.vec);
  get(o, "Error", c.error);
  get(o, "Adjustment", c.adjustment);
  get(o, "Height", c.height);
  return c;
}

void tag_invoke(json::value_from_tag, json::value& jv, const coordinate_entry& v) {
  json::object o;
  o["Node"] = v.node;
  o["Segment"] = v.segment;
  put_if(o, "Partition", v.partition);
  put(o, "Coord", v.coord);
  jv = std::move(o);
}

coordinate_entry tag_invoke(json::value_to_tag<coordinate_entry>, const json::value& jv) {
  auto& o = as_object(jv);
  coordinate_entry e;
  get(o, "Node", e.node);
  get(o, "Segment", e.segment);
  get(o, "Partition", e.partition);
  get(o, "Coord", e.coord);
  return e;
}

agent_self tag_invoke(json::value_to_tag<agent_self>, const json::value& jv) {
  auto& o = as_object(jv);
  agent_self s;
  if (auto* cfg = o.if_contains("Config"); cfg && cfg->is_object()) {
    auto& c = cfg->get_object();
    get(c, "Datacenter", s.datacenter);
    get(c, "NodeName", s.node_name);
    get(c, "NodeID", s.node_id);
    get(c, "Server", s.server);
    // A non-string Version is reported as an unknown version, never a crash (W15).
    if (auto* ver = c.if_contains("Version"); ver && ver->is_string())
      s.version = std::string(ver->get_string());
  }
  if (auto* coord = o.if_contains("Coord"); coord && coord->is_object())
    s.coord = json::value_to<coordinate_vec>(*coord);
  if (auto* member = o.if_contains("Member"); member && member->is_object())
    get(member->get_object(), "Addr", s.member_addr);
  return s;
}

void tag_invoke(json::value_from_tag, json::value& jv, const agent_service_registration& v) {
  json::object o;
  o["ID"] = v.id;
  o["Name"] = v.name;
  put_if_any(o, "Tags", v.tags);
  put_if_any(o, "Meta", v.meta);
  put_if(o, "Address", v.address);
  if (v.port) o["Port"] = v.port;
  put_if(o, "Partition", v.partition);
  put_if(o, "Namespace", v.name_space);
  jv = std::move(o);
}

void tag_invoke(json::value_from_tag, json::value& jv, const agent_check_registration& v) {
  json::object o;
  o["ID"] = v.id;
  o["Name"] = v.name;
  put_if(o, "Notes", v.notes);
  put_if(o, "ServiceID", v.service_id);
  put_duration_if(o, "TTL", v.ttl);
  put_if(o, "Status", v.status);
  put_duration_if(o, "DeregisterCriticalServiceAfter", v.deregister_critical_service_after);
  put_if(o, "Partition", v.partition);
  put_if(o, "Namespace", v.name_space);
  jv = std::move(o);
}

void tag_invoke(json::value_from_tag, json::value& jv, const catalog_registration& v) {
  json::object o;
  put_if(o, "ID", v.id);
  o["Node"] = v.node;
  o["Address"] = v.address;
  put_if(o, "Datacenter", v.datacenter);
  put_if(o, "Partition", v.partition);
  put_if_any(o, "TaggedAddresses", v.tagged_addresses);
  put_if_any(o, "NodeMeta", v.node_meta);
  if (v.service) put(o, "Service", *v.service);
  put_if_any(o, "Checks", v.checks);
  if (v.skip_node_update) o["SkipNodeUpdate"] = true;
  jv = std::move(o);
}

void tag_invoke(json::value_from_tag, json::value& jv, const catalog_deregistration& v) {
  json::object o;
  o["Node"] = v.node;
  put_if(o, "ServiceID", v.service_id);
  put_if(o, "CheckID", v.check_id);
  put_if(o, "Datacenter", v.datacenter);
  put_if(o, "Partition", v.partition);
  put_if(o, "Namespace", v.name_space);
  jv = std::move(o);
}

// --- transactions ------------------------------------------------------------------------

void tag_invoke(json::value_from_tag, json::value& jv, const txn_op& v) {
  json::object o;
  if (v.kv) {
    json::object kv;
    kv["Verb"] = v.kv->verb;
    kv["Key"] = v.kv->key;
    if (v.kv->value) kv["Value"] = util::base64_encode(*v.kv->value);
    if (v.kv->flags) kv["Flags"] = v.kv->flags;
    if (v.kv->index) kv["Index"] = v.kv->index;
    put_if(kv, "Session", v.kv->session);
    put_if(kv, "Partition", v.kv->partition);
    put_if(kv, "Namespace", v.kv->name_space);
    o["KV"] = std::move(kv);
  }
  if (v.check) {
    o["Check"] = json::object{{"Verb", v.check->verb}, {"Check", json::value_from(v.check->check)}};
  }
  if (v.node) {
    o["Node"] = json::object{{"Verb", v.node->verb}, {"Node", json::value_from(v.node->node)}};
  }
  jv = std::move(o);
}

txn_op tag_invoke(json::value_to_tag<txn_op>, const json::value& jv) {
  auto& o = as_object(jv);
  txn_op op;
  if (auto* kv = o.if_contains("KV"); kv && kv->is_object()) {
    auto& k = kv->get_object();
    txn_kv_op x;
    get(k, "Verb", x.verb);
    get(k, "Key", x.key);
    if (auto* val = k.if_contains("Value"); val && !val->is_null()) {
      x.value.emplace();
      get_base64(k, "Value", x.key, *x.value);
    }
    get(k, "Flags", x.flags);
    get(k, "Index", x.index);
    get(k, "Session", x.session);
    get(k, "Partition", x.partition);
    get(k, "Namespace", x.name_space);
    op.kv = std::move(x);
  }
  if (auto* c = o.if_contains("Check"); c && c->is_object()) {
    txn_check_op x;
    get(c->get_object(), "Verb", x.verb);
    get(c->get_object(), "Check", x.check);
    op.check = std::move(x);
  }
  if (auto* n = o.if_contains("Node"); n && n->is_object()) {
    txn_node_op x;
    get(n->get_object(), "Verb", x.verb);
    get(n->get_object(), "Node", x.node);
    op.node = std::move(x);
  }
  return op;
}

void tag_invoke(json::value_from_tag, json::value& jv, const txn_result& v) {
  json::object o;
  if (v.kv) put(o, "KV", *v.kv);
  if (v.check) put(o, "Check", *v.check);
  if (v.node) put(o, "Node", *v.node);
  jv = std::move(o);
}

txn_result tag_invoke(json::value_to_tag<txn_result>, const json::value& jv) {
  auto& o = as_object(jv);
  txn_result r;
  // KV results of verbs without a value (check-session, delete) carry Value null.
  if (auto* kv = o.if_contains("KV"); kv && kv->is_object()) r.kv = json::value_to<kv_pair>(*kv);
  if (auto* c = o.if_contains("Check"); c && c->is_object()) r.check = json::value_to<health_check>(*c);
  if (auto* n = o.if_contains("Node"); n && n->is_object()) r.node = json::value_to<node>(*n);
  return r;
}

void tag_invoke(json::value_from_tag, json::value& jv, const txn_error& v) {
  jv = json::object{{"OpIndex", v.op_index}, {"What", v.what}};
}

txn_error tag_invoke(json::value_to_tag<txn_error>, const json::value& jv) {
  auto& o = as_object(jv);
  txn_error e;
  get(o, "OpIndex", e.op_index);
  get(o, "What", e.what);
  return e;
}

// --- large arrays -------------------------------------------------------------------------

bool for_each_array_element(std::string_view body, const std::function<void(std::size_t)>& on_size,
                            const std::function<void(const json::value&)>& fn) {
  auto ws = [](char ch) { return ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r'; };
  auto fail = [](json::error e) { throw boost::system::system_error(make_error_code(e)); };
  std::size_t at = 0;
  while (at < body.size() && ws(body[at])) ++at;
  if (at == body.size() || body[at] != '[') return false;
  // The elements' extents: commas and the closing bracket outside strings at depth 1. Each
  // extent is then parsed as one complete JSON text, which checks all the scan skips
  // (brackets of the right kind, literals, numbers, escapes, UTF-8, a missing element).
  std::vector<std::string_view> elements;
  std::size_t start = ++at;
  int depth = 1;
  bool in_string = false;
  for (; at < body.size() && depth > 0; ++at) {
    char ch = body[at];
    if (in_string) {
      if (ch == '\\')
        ++at;  // the escaped character; a cut after it is an incomplete element
      else if (ch == '"')
        in_string = false;
      continue;
    }
    switch (ch) {
      case '"': in_string = true; break;
      case '[': case '{': ++depth; break;
      case ']': case '}':
        if (--depth > 0) break;
        if (ch != ']') fail(json::error::syntax);  // "[}"; the elements check their own
        elements.push_back(body.substr(start, at - start));
        break;
      case ',':
        if (depth == 1) {
          elements.push_back(body.substr(start, at - start));
          start = at + 1;
        }
        break;
      default: break;
    }
  }
  if (depth > 0) fail(json::error::incomplete);
  while (at < body.size() && ws(body[at])) ++at;
  if (at < body.size()) fail(json::error::extra_data);
  // "[]" and "[ ]": one blank extent and no comma.
  if (elements.size() == 1 &&
      std::all_of(elements[0].begin(), elements[0].end(), [&](char ch) { return ws(ch); }))
    elements.clear();
  on_size(elements.size());
  // The whole text's depth limit, less the array's own level.
  json::parse_options opts;
  opts.max_depth = json::parse_options{}.max_depth - 1;
  constexpr std::size_t arena_bytes = 16 * 1024;  // most single checks fit; more grows it
  auto first_block = std::make_unique<unsigned char[]>(arena_bytes);
  json::monotonic_resource arena(first_block.get(), arena_bytes);
  for (auto text : elements) {
    {
      boost::system::error_code ec;
      json::value jv = json::parse(text, ec, json::storage_ptr(&arena), opts);
      if (ec) throw boost::system::system_error(ec);
      fn(jv);
    }  // jv is gone before its storage is
    arena.release();
  }
  return true;
}

}  // namespace esm::consul
