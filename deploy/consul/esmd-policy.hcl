# The minimum ACL policy of esmd: consul-esm's documented minimum, rule for rule. Tested
# against Consul 1.8.7 with ACLs enforced (default_policy = "deny") by test/deploy/acl_test.py
# in agent and agentless mode; that test also removes each rule (and downgrades each write to
# read) and shows what then fails. No `operator` rule is needed: esmd reads the servers'
# versions from the catalog (GET /v1/catalog/service/consul), not from /v1/operator.
#
#   consul acl policy create -name esmd -rules @deploy/consul/esmd-policy.hcl
#   consul acl token create -description esmd -policy-name esmd
#
# consul_kv_path other than "consul-esm/": change the key_prefix to it.
# Consul Enterprise with namespaces: add  namespace_prefix "" { acl = "read" }  (or a
# namespace "<name>" block per namespace whose checks esmd runs).
# A narrower policy: esmd-policy-agentless.hcl and deploy/OPERATING.md.

# GET /v1/agent/self: the local agent's version at startup (older than 1.4.1 is refused) and
# its network coordinate for the node prober (every 5 min). Read is enough.
# Without it: esmd exits 11 at startup ("Error querying agent version: ... 403").
agent_prefix "" {
  policy = "read"
}

# <consul_kv_path>leader: the leader lock (GET, PUT ?acquire= / ?release=);
# <consul_kv_path>agents/<service id>: the assignments (written by the leader in /v1/txn behind
# a check-session fence, watched by every instance); <consul_kv_path>probes/<node>: the
# critical-since of unreachable nodes (listed at start, created and deleted in /v1/txn).
# Without it: no leader, nothing assigned ("Failed to read the leader key ... 403");
# with read only: "Failed to acquire the leader key ... needs=key_prefix "consul-esm/" write".
key_prefix "consul-esm/" {
  policy = "write"
}

# Read: GET /v1/catalog/nodes and /v1/health/state/any (the external nodes and their checks),
# /v1/health/service/<consul_service> and /v1/catalog/service/consul (instances and servers
# are seen only on nodes the token can read), /v1/coordinate/nodes.
# Write: externalNodeHealth (/v1/txn Check "set"), node reaping (/v1/txn Node "delete-cas"),
# PUT /v1/coordinate/update; agentless mode: the synthetic node <consul_service>:<id>:node
# (PUT /v1/catalog/register, /v1/catalog/deregister).
# Without it (agent mode): Consul hides every node (no 403 anywhere): no instance is seen
# healthy and nothing is assigned ("No healthy ESM instances"). With read only: every
# externalNodeHealth write and coordinate update is refused. Agentless mode, without it or
# with read only: the registration is refused and esmd exits 11.
node_prefix "" {
  policy = "write"
}

# Write: this instance's service <consul_service> and its TTL check (PUT
# /v1/agent/service/register, /v1/agent/check/register; agentless: PUT /v1/catalog/register),
# the status of service checks (/v1/txn Check "cas" needs write on the check's service),
# service reaping (PUT /v1/catalog/deregister). Read: /v1/catalog/service/consul,
# /v1/health/service/<consul_service>.
# Without it, or with read only: the registration is refused and esmd exits 11.
service_prefix "" {
  policy = "write"
}

# PUT /v1/session/create, /v1/session/renew, /v1/session/destroy: the leader session (and in
# agentless mode each instance's health session); GET /v1/session/info and /v1/session/list.
# Without it, or with read only: "Failed to create the leader session ... 403": no leader.
session_prefix "" {
  policy = "write"
}
