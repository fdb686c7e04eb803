# Agentless mode (README.md, "Instances, leadership and work sharing"): no local agent; each
# instance registers the node <consul_service>:<instance_id>:node with its service and a
# session-backed check in the catalog.
enable_agentless = true

# The Consul servers: a Service (the consul-k8s Helm chart names it consul-server in the
# consul namespace), a load balancer or a DNS name outside the cluster. Servers with TLS:
#   http_addr = "https://consul-server.consul.svc:8501"   and   ca_file = "/etc/esmd-ca/ca.crt"
# (mount the CA from a Secret or ConfigMap at /etc/esmd-ca in your own overlay).
http_addr = "consul-server.consul.svc:8500"
