#include "esm/util/heap.hpp"

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace esm::util {

namespace {
// Below this many elements an answer's garbage is small next to what is kept.
constexpr std::size_t large_answer = 1000;
std::chrono::steady_clock::time_point last_trim{};
}  // namespace

void tune_heap() {
#if defined(__GLIBC__)
  // 256 KiB: the element arenas and per-connection buffers stay in the heap, bodies and the
  // vectors of a share do not.
  mallopt(M_MMAP_THRESHOLD, 256 * 1024);
#endif
}

bool trim_heap_after(std::size_t items, std::chrono::steady_clock::duration min_gap) {
#if defined(__GLIBC__)
  if (items < large_answer) return false;
  auto now = std::chrono::steady_clock::now();
  if (last_trim != std::chrono::steady_clock::time_point{} && now - last_trim < min_gap) return false;
  last_trim = now;
  malloc_trim(0);
  return true;
#else
  (void)items;
  (void)min_gap;
  return false;
#endif
}

}  // namespace esm::util
