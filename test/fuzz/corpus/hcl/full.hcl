# comment
log_level = "DEBUG" // trailing
/* block */ instance_id = "i-1"
consul_kv_path = "consul-esm/"
external_node_meta {
  "external-node" = "true"
}
node_probe_interval = "10s"
passing_threshold = 3
telemetry {
  dogstatsd_tags = ["a", "b",]
  prefix_filter = ["+good", "-bad", "x", ""]
  prometheus_retention_time = "5h"
  disable_hostname = true
}
