# Agent mode (the default, written out so that CONSUL_ENABLEAGENTLESS cannot flip it): the
# instance's service <consul_service>:<instance_id> and its TTL check live on the node's
# agent. No http_addr here: a value in a file would beat CONSUL_HTTP_ADDR, which the
# Deployment builds from the node's IP (downward API).
enable_agentless = false
