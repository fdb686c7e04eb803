# esmd's default configuration in the container image. Mount your own directory of .hcl or
# .json files over /etc/esmd to replace it (Kubernetes: a ConfigMap), or pass flags after the
# image name (`-config-dir=/etc/esmd -config-file=/more.hcl`). Set the Consul address with
# CONSUL_HTTP_ADDR and the ACL token with CONSUL_HTTP_TOKEN_FILE (a mounted secret).

# The admin server on every interface of the container: liveness /healthz (the image's
# HEALTHCHECK), readiness /readyz and Prometheus /metrics.
client_address = ":8080"
log_level = "INFO"
