# esmd configuration shared by every mode (consul-esm's keys; see README.md, "Configuration").
# Files in /etc/esmd are read in name order: the overlays' 10-*.hcl and 20-*.hcl come later
# and override keys of this one.

log_level = "INFO"

# The admin server on every interface, port 8080: /healthz (liveness), /readyz (readiness),
# /metrics (Prometheus), /v1/status. The Deployment's probes and scrape annotations use it.
client_address = ":8080"

# consul-esm's defaults, written out: instances with the same service name (and tag) and KV
# path share the work, esmd and consul-esm alike.
consul_service = "consul-esm"
consul_kv_path = "consul-esm/"

# No instance_id is set, so every start of the container (a new pod, or the kubelet
# restarting a crashed container) registers under a new random one. A graceful stop
# deregisters; after a crash (kill, OOM, node failure) the old registration stays in Consul,
# critical once its TTL check (agent mode) or health session (agentless) has expired, until
# it is removed instance_deregister_after later: 5 minutes here instead of the default 30,
# since it can never come back. Not lower than the time a live instance may lose Consul
# (a network partition) without being dropped: it registers again, but its share moves.
# An esmd-only key: keep it out of files consul-esm reads.
instance_deregister_after = "5m"

# The Consul address and the mode (agent or agentless) come from the overlay; the ACL token
# from the Secret through CONSUL_HTTP_TOKEN_FILE (never put a token in this file: a
# ConfigMap is not secret).
