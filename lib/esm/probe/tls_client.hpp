// Internal: per-connection TLS settings the way Go's crypto/tls client applies them, and Go's
// texts for TLS failures.
#pragma once

#include <string>
#include <string_view>

#include <boost/system/error_code.hpp>
#include <openssl/ssl.h>

namespace esm::probe::detail {

// server_name: the check's TLSServerName, else the host being dialled. An IP address gets
// no SNI and is verified against the certificate's IP SANs; a name gets SNI and is verified
// against DNS SANs. alpn: a protocol name such as "h2", or empty.
bool prepare_tls_client(SSL* ssl, std::string_view server_name, bool skip_verify,
                        std::string_view alpn);

// The text Go prints for a failed handshake, e.g.
// "tls: failed to verify certificate: x509: certificate signed by unknown authority".
std::string tls_error_text(const boost::system::error_code& ec, SSL* ssl,
                           std::string_view server_name);

}  // namespace esm::probe::detail
