# esmd configuration (HCL; the keys and defaults of consul-esm). See esmd(1) and README.md.
#
# The Debian package installs this file as /etc/esmd/config.hcl. The service reads every
# *.hcl and *.json file in /etc/esmd in byte-wise name order; later files override earlier
# ones key by key (the external_node_meta and telemetry blocks are replaced whole). This
# file sets only client_address: every other line below is commented out and shows the
# default, so that a file of your own wins whatever its name. Put local settings into one,
# e.g. /etc/esmd/local.hcl (a name sorting before "config.hcl", such as 50-local.hcl, is
# overridden for client_address only), or uncomment lines here.
# Check a change before reloading:  esmd -validate -config-dir=/etc/esmd
# Apply log_level at once:          systemctl reload esmd   (other keys: systemctl restart esmd)

# TRACE, DEBUG, INFO, WARN or ERR.
# log_level = "INFO"

# One JSON object per log line (no banner). The journal stores the lines as they are.
# log_json = false

# Also log to a file. /var/log/esmd/ is writable by the service (a value ending in "/" means
# <dir>/consul.log); other directories need ReadWritePaths= in a drop-in of esmd.service.
# log_file = "/var/log/esmd/"
# log_rotate_max_files = 7

# The service name (and tag) esmd instances register under and find their peers by; the KV
# prefix of the leader lock and of the work assignments. Keep consul-esm's values to share a
# cluster with consul-esm instances during a migration.
# consul_service = "consul-esm"
# consul_service_tag = ""
# consul_kv_path = "consul-esm/"

# The Consul agent. The default is the local agent, 127.0.0.1:8500. A value here overrides
# CONSUL_HTTP_ADDR, so it is left unset: set CONSUL_HTTP_ADDR in /etc/default/esmd, or
# uncomment this (http://, https://host[/prefix] or unix:///path are accepted).
# http_addr = "127.0.0.1:8500"
# datacenter = "dc1"

# The ACL token: do not put it here. Write it to /etc/esmd/consul-token (mode 0600, owner
# root); the service passes that file to esmd as CONSUL_HTTP_TOKEN_FILE.
# token = ""

# TLS to Consul (or CONSUL_CACERT, CONSUL_CLIENT_CERT, ... in /etc/default/esmd).
# ca_file = "/etc/esmd/consul-ca.pem"
# cert_file = "/etc/esmd/client.pem"
# key_file = "/etc/esmd/client-key.pem"
# tls_server_name = "consul.example"

# Register this instance in the catalog instead of on a local agent.
# enable_agentless = false

# The admin server: /healthz, /readyz, /metrics, /v1/status and a status page. Without it
# (esmd's and consul-esm's default) there is none; the package turns it on, on loopback:
# ":8080" listens on every interface (e.g. for a Prometheus server elsewhere).
client_address = "127.0.0.1:8080"
# enable_debug = false

# Node pings (nodes with node meta external-probe = "true").
#   "udp":    unprivileged ICMP. Needs the host's net.ipv4.ping_group_range to include the
#             group esmd (see /usr/share/doc/esmd/examples/50-esmd-ping.conf).
#   "socket": raw ICMP. Needs CAP_NET_RAW (see /usr/share/doc/esmd/examples/ping-socket.conf).
# Without the permission esmd logs the problem and writes nothing for the nodes it pings.
# ping_type = "udp"
# node_probe_interval = "10s"
# node_reconnect_timeout = "72h"

# Which catalog nodes are external nodes (node meta, ANDed).
# external_node_meta {
#   external-node = "true"
# }

# Consecutive results before a check changes status (0: at once).
# passing_threshold = 0
# critical_threshold = 0

# Metrics sinks besides /metrics.
# telemetry {
#   statsd_address = "127.0.0.1:8125"
#   metrics_prefix = ""
# }
