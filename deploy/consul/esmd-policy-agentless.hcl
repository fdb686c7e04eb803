# A narrower ACL policy for esmd in agentless mode (enable_agentless = true), tested with
# test/deploy/acl_test.py like esmd-policy.hcl. esmd's own objects are scoped to its names,
# with consul_service = "consul-esm" (the default) and consul_kv_path = "consul-esm/":
#   synthetic nodes   consul-esm:<instance_id>:node   (node_prefix "consul-esm:")
#   sessions          on those nodes                   (session_prefix "consul-esm:")
#   own service       consul-esm                       (service "consul-esm")
# The external nodes and the services whose checks esmd runs need write too. The rules below
# assume that their names start with "ext-": EDIT the two rules marked EDIT to match yours
# (one node_prefix / service_prefix rule per naming scheme, or node_prefix "" / service_prefix
# "" write as in esmd-policy.hcl when the names follow no scheme). A check or node the token
# cannot write is reported by esmd ("Check status write refused by Consul", "Node status
# write refused by Consul") and stays as it is in the catalog.
#
#   consul acl policy create -name esmd -rules @deploy/consul/esmd-policy-agentless.hcl

# GET /v1/agent/self of the agent or server CONSUL_HTTP_ADDR points at (version check at
# startup, the coordinate the node prober measures from). Narrow it to that agent's node
# name (agent "<node>" { policy = "read" }) when esmd always talks to the same one.
agent_prefix "" {
  policy = "read"
}

# The leader lock, the assignments and the probes keys (see esmd-policy.hcl).
key_prefix "consul-esm/" {
  policy = "write"
}

# Read every node: esmd sees external nodes, ESM instances and Consul servers only on nodes
# the token can read (a missing read is silent: Consul filters them out).
node_prefix "" {
  policy = "read"
}

# The synthetic node of each instance (catalog register and deregister).
node_prefix "consul-esm:" {
  policy = "write"
}

# EDIT: the external nodes: externalNodeHealth, coordinates, node reaping.
node_prefix "ext-" {
  policy = "write"
}

# Read every service: /v1/catalog/service/consul (server versions) and the instances.
service_prefix "" {
  policy = "read"
}

# esmd's own service (consul_service).
service "consul-esm" {
  policy = "write"
}

# EDIT: the services of the external nodes: their check statuses (/v1/txn Check "cas") and
# service reaping (DeregisterCriticalServiceAfter).
service_prefix "ext-" {
  policy = "write"
}

# The leader session and the health sessions, created on the synthetic nodes.
session_prefix "consul-esm:" {
  policy = "write"
}
