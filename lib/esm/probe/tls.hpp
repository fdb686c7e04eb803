// The base TLS client context for checks, built from consul-esm's https_ca_file,
// https_ca_path, https_cert_file and https_key_file. Per-check settings (TLSServerName,
// TLSSkipVerify, ALPN) are applied to each connection, so one base context serves all checks.
#pragma once

#include <memory>
#include <string>

namespace boost::asio::ssl {
class context;
}

namespace esm::probe {

struct tls_files {
  std::string ca_file{};    // https_ca_file: PEM bundle of trusted CAs
  std::string ca_path{};    // https_ca_path: directory whose every file is a PEM CA certificate
  std::string cert_file{};  // https_cert_file: client certificate (chain), PEM
  std::string key_file{};   // https_key_file: its private key, PEM
};

// Without CA settings the system's trust store is used, as Go does. Throws
// std::runtime_error naming the configuration key and the file at fault when material is
// unreadable or inconsistent (consul-esm silently stops running checks instead: W4).
std::unique_ptr<boost::asio::ssl::context> make_base_tls_context(const tls_files& files);

}  // namespace esm::probe
