// Errors of the Consul client, as values: every call returns result<T>, whose error says
// whether Consul answered with an HTTP error (status and Consul's body text), the transport
// failed, the request timed out, or the caller cancelled it. Timeouts and cancellation are
// distinct so that callers can retry the first and stop on the second.
#pragma once

#include <iosfwd>
#include <string>

#include <boost/system/error_code.hpp>
#include <boost/system/result.hpp>

namespace esm::consul {

enum class errc {
  http_status = 1,  // Consul answered with a non-2xx status
  timeout,          // the request's deadline passed (connect, send or receive)
  bad_response,     // Consul's answer could not be decoded
  not_found,        // a 404 where the API means "no such object"
  too_many_connections,
};

const boost::system::error_category& consul_category() noexcept;

inline boost::system::error_code make_error_code(errc e) noexcept {
  return {static_cast<int>(e), consul_category()};
}

struct error {
  boost::system::error_code code;
  unsigned status = 0;   // HTTP status, when Consul answered
  std::string message;   // Consul's body text, or a description of the transport failure

  bool is_timeout() const noexcept;
  bool is_cancelled() const noexcept;
  bool is_http(unsigned s) const noexcept { return status == s; }
  // Worth retrying with backoff: transport errors, timeouts, 5xx and 429.
  bool is_transient() const noexcept;
  // "Unexpected response code: 500 (rpc error...)" style text for logs; never contains
  // request headers, so no token can leak through it.
  std::string to_string() const;
};

template <class T>
using result = boost::system::result<T, error>;

// Lets result<T, error>::value() throw on an error, as boost::system requires.
[[noreturn]] void throw_exception_from_error(const error& e, const boost::source_location& loc);

error make_error(boost::system::error_code ec, std::string message = {});

std::ostream& operator<<(std::ostream& os, const error& e);

}  // namespace esm::consul

namespace boost::system {
template <>
struct is_error_code_enum<esm::consul::errc> : std::true_type {};
}  // namespace boost::system
