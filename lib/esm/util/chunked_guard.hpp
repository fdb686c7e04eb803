// A guard against an assertion in Beast 1.81's HTTP parser, shared by the HTTP probe and the
// admin server (both read bodies from peers esmd does not trust).
//
// Beast asserts (BOOST_ASSERT, live unless NDEBUG) that it holds at least 5 bytes when it
// resumes the final chunk of a chunked body, though a first chunk can leave it 3 or 4:
// "0\r\n" arriving alone, then one more byte, aborts the process (upstream
// boostorg/beast#2861, found here by test/fuzz/probe_http_fuzz). While
// may_be_last_chunk_line holds and fewer than 5 bytes are buffered, the callers read more
// before handing the bytes to the parser; a valid empty body ("0\r\n\r\n") has 5, so no valid
// message waits, and malformed bytes still reach the parser at once.
#pragma once

#include <cstddef>
#include <string_view>

namespace esm::util {

// Whether `b`, the first bytes of a chunked body, may still be an empty body's last-chunk
// line: zeros, an optional extension, CRLF, then anything.
inline bool may_be_last_chunk_line(std::string_view b) {
  if (b.empty()) return true;
  if (b[0] != '0') return false;
  std::size_t i = 0;
  while (i < b.size() && b[i] == '0') ++i;
  if (i < b.size() && b[i] == ';')
    while (i < b.size() && b[i] != '\r' && b[i] != '\n') ++i;
  if (i == b.size()) return true;
  if (b[i] != '\r') return false;
  return ++i == b.size() || b[i] == '\n';
}

}  // namespace esm::util
