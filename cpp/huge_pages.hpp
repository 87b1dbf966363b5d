// SPDX-License-Identifier: BSD-3-Clause
// Large arrays in transparent huge pages, for the statistics' state and the transport's receive
// buffers alike: with 4 KiB pages, walking and faulting the pages of a large array costs a
// memory-bound kernel or a cross-process copy a large share of its time (bench/RESULTS.md).
#pragma once

#include <cstddef>
#include <new>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace melissa::huge_pages {

constexpr std::size_t kHugePage = std::size_t{2} << 20;
// numpy's threshold for huge pages too: below it, an array's pages hardly matter.
constexpr std::size_t kFrom = 2 * kHugePage;

inline std::align_val_t alignment(std::size_t bytes) {
    return std::align_val_t{bytes >= kFrom ? kHugePage : std::size_t{64}};
}

/// `bytes` on a cache line and, from kFrom on, in huge pages where the kernel gives them;
/// throws std::bad_alloc. Free with release(data, bytes).
inline void *allocate(std::size_t bytes) {
    void *data = ::operator new(bytes, alignment(bytes));
#if defined(MADV_HUGEPAGE)
    // Advice only (transparent huge pages in "madvise" mode, the usual default, need it): where
    // none are given the array is only cache-line aligned. Whole huge pages only, so that the
    // array's end takes no more memory than it fills, as the memory estimates count it.
    if (bytes >= kFrom)
        madvise(data, bytes / kHugePage * kHugePage, MADV_HUGEPAGE);
#endif
    return data;
}

inline void release(void *data, std::size_t bytes) noexcept {
    ::operator delete(data, alignment(bytes));
}

} // namespace melissa::huge_pages
