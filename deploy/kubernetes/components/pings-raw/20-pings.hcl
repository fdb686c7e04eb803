# Ping external nodes (node meta external-probe = "true") with raw ICMP sockets, which need
# CAP_NET_RAW (README.md, "Node probing").
ping_type = "socket"
