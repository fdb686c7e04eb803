// glibc's heap and esmd's memory profile: a few tens of thousands of long-lived check objects,
// and now and then a share answer of tens of MB that is decoded and dropped (see
// decode_array in consul/json.hpp). Without help glibc keeps what such an answer freed, as
// holes between the objects kept, and resident memory follows the largest answer ever read.
#pragma once

#include <chrono>
#include <cstddef>

namespace esm::util {

// At daemon start: large blocks (answer bodies, vectors of checks) always in their own
// mappings, given back when freed, instead of glibc's dynamic threshold that after the first
// large free serves blocks of up to 32 MB from the heap. No effect without glibc.
void tune_heap();

// After a large answer was applied (`items` elements decoded): gives the heap's free pages
// back to the system (malloc_trim), unless the answer was small (under 1 000 elements) or the
// last trim is less than `min_gap` ago (the garbage of a skipped answer is reused by the next
// one, so resident memory stays bounded by one answer). Returns whether it trimmed. No
// effect without glibc.
//
// Measured (bench_daemon_memory.py, release build; RSS growth per check at 2 000 / 20 000
// checks): with decode_array alone, fat checks 10 121 / 8 123 B and lean ones 3 054 / 2 881 B;
// with tune_heap and this, fat 5 011 / 5 008 B, lean unchanged (3 052 / 2 883 B: its answers
// leave little garbage). Cost: malloc_trim walks the free chunks on the io_context's thread,
// 30-140 ms on a synthetic 270 MB heap with half its blocks freed in holes, hence the gap.
bool trim_heap_after(std::size_t items,
                     std::chrono::steady_clock::duration min_gap = std::chrono::seconds(30));

}  // namespace esm::util
