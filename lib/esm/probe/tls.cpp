#include "esm/probe/tls.hpp"
#include "esm/probe/tls_client.hpp"

#include <filesystem>
#include <stdexcept>
#include <vector>

#include <boost/asio/ip/address.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/error.hpp>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

namespace esm::probe {
namespace {

std::string openssl_reason() {
  unsigned long e = ERR_peek_last_error();
  std::string text = e ? ERR_reason_error_string(e) ? ERR_reason_error_string(e) : "unknown error"
                       : "unknown error";
  ERR_clear_error();
  return text;
}

[[noreturn]] void fail(std::string_view key, const std::string& file, std::string_view what) {
  throw std::runtime_error(std::string(key) + " \"" + file + "\": " + std::string(what));
}

// Adds every certificate of one PEM file to the store; returns how many were found.
int add_pem_certificates(X509_STORE* store, const std::string& file) {
  BIO* bio = BIO_new_file(file.c_str(), "r");
  if (!bio) return -1;
  int count = 0;
  while (X509* cert = PEM_read_bio_X509(bio, nullptr, nullptr, nullptr)) {
    if (X509_STORE_add_cert(store, cert) == 1) ++count;
    X509_free(cert);
  }
  BIO_free(bio);
  ERR_clear_error();  // the loop ends on a "no start line" error
  return count;
}

}  // namespace

std::unique_ptr<boost::asio::ssl::context> make_base_tls_context(const tls_files& files) {
  namespace ssl = boost::asio::ssl;
  auto ctx = std::make_unique<ssl::context>(ssl::context::tls_client);
  // Go's crypto/tls client default: TLS 1.2 at least.
  SSL_CTX_set_min_proto_version(ctx->native_handle(), TLS1_2_VERSION);
  ctx->set_options(ssl::context::default_workarounds | ssl::context::no_compression);
  ctx->set_verify_mode(ssl::verify_peer);
  X509_STORE* store = SSL_CTX_get_cert_store(ctx->native_handle());

  if (!files.ca_file.empty()) {
    int n = add_pem_certificates(store, files.ca_file);
    if (n < 0) fail("https_ca_file", files.ca_file, "cannot be read: " + openssl_reason());
    if (n == 0) fail("https_ca_file", files.ca_file, "contains no PEM certificate");
  }
  if (!files.ca_path.empty()) {
    // Go (go-rootcerts) loads every file of the directory, not OpenSSL's hashed names.
    std::error_code fec;
    std::filesystem::directory_iterator it(files.ca_path, fec);
    if (fec) fail("https_ca_path", files.ca_path, "cannot be read: " + fec.message());
    std::vector<std::filesystem::path> paths;
    for (; it != std::filesystem::directory_iterator(); it.increment(fec)) {
      if (fec) fail("https_ca_path", files.ca_path, "cannot be read: " + fec.message());
      if (it->is_regular_file(fec)) paths.push_back(it->path());
    }
    for (const auto& p : paths) {
      int n = add_pem_certificates(store, p.string());
      if (n < 0) fail("https_ca_path", p.string(), "cannot be read: " + openssl_reason());
      if (n == 0) fail("https_ca_path", p.string(), "contains no PEM certificate");
    }
  }
  if (files.ca_file.empty() && files.ca_path.empty()) {
    boost::system::error_code ec;
    ctx->set_default_verify_paths(ec);  // a machine without a trust store still runs checks
  }

  if (files.cert_file.empty() != files.key_file.empty()) {
    throw std::runtime_error(
        files.cert_file.empty()
            ? "https_key_file \"" + files.key_file + "\" is set without https_cert_file"
            : "https_cert_file \"" + files.cert_file + "\" is set without https_key_file");
  }
  if (!files.cert_file.empty()) {
    boost::system::error_code ec;
    ctx->use_certificate_chain_file(files.cert_file, ec);
    if (ec) fail("https_cert_file", files.cert_file, "is not a usable PEM certificate: " + ec.message());
    ctx->use_private_key_file(files.key_file, ssl::context::pem, ec);
    if (ec && ec.message().find("key values mismatch") != std::string::npos)
      fail("https_key_file", files.key_file,
           "does not match the certificate in https_cert_file \"" + files.cert_file + "\"");
    if (ec) fail("https_key_file", files.key_file, "is not a usable PEM private key: " + ec.message());
    if (SSL_CTX_check_private_key(ctx->native_handle()) != 1) {
      ERR_clear_error();
      fail("https_key_file", files.key_file,
           "does not match the certificate in https_cert_file \"" + files.cert_file + "\"");
    }
  }
  return ctx;
}

namespace detail {
namespace {

bool is_ip(std::string_view host) {
  boost::system::error_code ec;
  boost::asio::ip::make_address(std::string(host), ec);
  return !ec;
}

std::string join_sans(X509* cert, bool ip) {
  std::string out;
  auto* names = static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr));
  if (!names) return out;
  for (int i = 0; i < sk_GENERAL_NAME_num(names); ++i) {
    const GENERAL_NAME* gn = sk_GENERAL_NAME_value(names, i);
    std::string item;
    if (!ip && gn->type == GEN_DNS) {
      item.assign(reinterpret_cast<const char*>(ASN1_STRING_get0_data(gn->d.dNSName)),
                  static_cast<std::size_t>(ASN1_STRING_length(gn->d.dNSName)));
    } else if (ip && gn->type == GEN_IPADD) {
      const unsigned char* d = ASN1_STRING_get0_data(gn->d.iPAddress);
      int len = ASN1_STRING_length(gn->d.iPAddress);
      if (len == 4) {
        boost::asio::ip::address_v4::bytes_type b;
        std::copy(d, d + 4, b.begin());
        item = boost::asio::ip::address_v4(b).to_string();
      } else if (len == 16) {
        boost::asio::ip::address_v6::bytes_type b;
        std::copy(d, d + 16, b.begin());
        item = boost::asio::ip::address_v6(b).to_string();
      }
    }
    if (item.empty()) continue;
    if (!out.empty()) out += ", ";
    out += item;
  }
  GENERAL_NAMES_free(names);
  return out;
}

// The peer's leaf certificate, kept by the verify callback: OpenSSL does not keep it in the
// session when verification fails, and the mismatch text names its SANs.
void free_leaf(void*, void* ptr, CRYPTO_EX_DATA*, int, long, void*) {
  if (ptr) X509_free(static_cast<X509*>(ptr));
}

int leaf_index() {
  static const int index = SSL_get_ex_new_index(0, nullptr, nullptr, nullptr, free_leaf);
  return index;
}

int keep_leaf(int preverify_ok, X509_STORE_CTX* store) {
  if (X509_STORE_CTX_get_error_depth(store) == 0) {
    auto* ssl = static_cast<SSL*>(
        X509_STORE_CTX_get_ex_data(store, SSL_get_ex_data_X509_STORE_CTX_idx()));
    X509* cert = X509_STORE_CTX_get_current_cert(store);
    if (ssl && cert && !SSL_get_ex_data(ssl, leaf_index()) && X509_up_ref(cert) == 1)
      SSL_set_ex_data(ssl, leaf_index(), cert);
  }
  return preverify_ok;
}

std::string verify_text(long result, SSL* ssl, std::string_view server_name) {
  switch (result) {
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
    case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
    case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
    case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
      return "x509: certificate signed by unknown authority";
    case X509_V_ERR_CERT_HAS_EXPIRED:
    case X509_V_ERR_CERT_NOT_YET_VALID:
      return "x509: certificate has expired or is not yet valid";
    case X509_V_ERR_HOSTNAME_MISMATCH:
    case X509_V_ERR_IP_ADDRESS_MISMATCH: {
      bool ip = result == X509_V_ERR_IP_ADDRESS_MISMATCH;
      auto* cert = static_cast<X509*>(SSL_get_ex_data(ssl, leaf_index()));
      std::string sans = cert ? join_sans(cert, ip) : std::string();
      if (ip && sans.empty())
        return "x509: cannot validate certificate for " + std::string(server_name) +
               " because it doesn't contain any IP SANs";
      if (sans.empty())
        return "x509: certificate is not valid for any names, but wanted to match " +
               std::string(server_name);
      return "x509: certificate is valid for " + sans + ", not " + std::string(server_name);
    }
    default:
      return std::string("x509: ") + X509_verify_cert_error_string(result);
  }
}

}  // namespace

bool prepare_tls_client(SSL* ssl, std::string_view server_name, bool skip_verify,
                        std::string_view alpn) {
  std::string name(server_name);
  bool ip = is_ip(name);
  if (!ip && !name.empty() && SSL_set_tlsext_host_name(ssl, name.c_str()) != 1) return false;
  if (skip_verify) {
    SSL_set_verify(ssl, SSL_VERIFY_NONE, nullptr);
  } else {
    SSL_set_verify(ssl, SSL_VERIFY_PEER, keep_leaf);
    X509_VERIFY_PARAM* param = SSL_get0_param(ssl);
    if (ip) {
      if (X509_VERIFY_PARAM_set1_ip_asc(param, name.c_str()) != 1) return false;
    } else if (!name.empty()) {
      X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
      if (X509_VERIFY_PARAM_set1_host(param, name.c_str(), name.size()) != 1) return false;
    }
  }
  if (!alpn.empty()) {
    std::string wire(1, static_cast<char>(alpn.size()));
    wire += alpn;
    if (SSL_set_alpn_protos(ssl, reinterpret_cast<const unsigned char*>(wire.data()),
                            static_cast<unsigned>(wire.size())) != 0)
      return false;
  }
  return true;
}

std::string tls_error_text(const boost::system::error_code& ec, SSL* ssl,
                           std::string_view server_name) {
  // With verification off OpenSSL still records chain errors; they did not fail anything.
  long vr = (SSL_get_verify_mode(ssl) & SSL_VERIFY_PEER) ? SSL_get_verify_result(ssl) : X509_V_OK;
  if (vr != X509_V_OK) return "tls: failed to verify certificate: " + verify_text(vr, ssl, server_name);
  if (ec == boost::asio::ssl::error::stream_truncated) return "EOF";
  if (ec.category() == boost::asio::error::get_ssl_category()) {
    std::string msg = ec.message();
    // OpenSSL reports a peer's alert as e.g. "tlsv13 alert certificate required"; Go as
    // "remote error: tls: certificate required".
    if (auto pos = msg.find("alert "); pos != std::string::npos)
      return "remote error: tls: " + msg.substr(pos + 6);
    return "tls: " + msg;
  }
  return {};  // not a TLS error: the caller formats it as a socket error
}

}  // namespace detail
}  // namespace esm::probe
