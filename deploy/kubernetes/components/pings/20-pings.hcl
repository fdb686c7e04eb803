# Ping external nodes (node meta external-probe = "true") with unprivileged ICMP sockets;
# the pod's sysctl net.ipv4.ping_group_range allows esmd's group (README.md, "Node probing").
ping_type = "udp"
