token = <<EOF
abc
EOF
client_address = <<-EOT
    127.0.0.1:8080
    EOT
