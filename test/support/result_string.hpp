// Lets doctest print a Consul client result in a failed assertion: "ok" or the error text.
#pragma once

#include <doctest/doctest.h>

#include "esm/consul/error.hpp"

namespace doctest {
template <class T>
struct StringMaker<boost::system::result<T, esm::consul::error>> {
  static String convert(const boost::system::result<T, esm::consul::error>& r) {
    return r ? String("ok") : String(r.error().to_string().c_str());
  }
};
}  // namespace doctest
