#include "esm/consul/error.hpp"

#include <ostream>
#include <stdexcept>

#include <boost/asio/error.hpp>
#include <boost/beast/core/error.hpp>

namespace esm::consul {
namespace {

class category final : public boost::system::error_category {
 public:
  const char* name() const noexcept override { return "consul"; }
  std::string message(int ev) const override {
    switch (static_cast<errc>(ev)) {
      case errc::http_status: return "unexpected HTTP status";
      case errc::timeout: return "request timed out";
      case errc::bad_response: return "malformed response";
      case errc::not_found: return "not found";
      case errc::too_many_connections: return "connection pool exhausted";
    }
    return "unknown consul client error";
  }
};

}  // namespace

const boost::system::error_category& consul_category() noexcept {
  static const category c;
  return c;
}

bool error::is_timeout() const noexcept {
  return code == errc::timeout || code == boost::beast::error::timeout ||
         code == boost::asio::error::timed_out;
}

bool error::is_cancelled() const noexcept {
  return code == boost::asio::error::operation_aborted && !is_timeout();
}

bool error::is_transient() const noexcept {
  if (is_cancelled()) return false;
  if (code == errc::http_status) return status >= 500 || status == 429;
  return code != errc::not_found && code != errc::bad_response;
}

std::string error::to_string() const {
  if (code == errc::http_status || code == errc::not_found) {
    std::string s = "Unexpected response code: " + std::to_string(status);
    if (!message.empty()) s += " (" + message + ")";
    return s;
  }
  if (message.empty()) return code.message();
  return message + ": " + code.message();
}

void throw_exception_from_error(const error& e, const boost::source_location&) {
  throw std::runtime_error(e.to_string());
}

error make_error(boost::system::error_code ec, std::string message) {
  return error{ec, 0, std::move(message)};
}

std::ostream& operator<<(std::ostream& os, const error& e) { return os << e.to_string(); }

}  // namespace esm::consul
