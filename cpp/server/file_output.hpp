// SPDX-License-Identifier: BSD-3-Clause
//
// Where a server rank's state goes on disk (a statistics checkpoint, a replay buffer's state):
// streamed to a file a buffer at a time, with a checksum of what went through.
#pragma once

#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <system_error>
#include <vector>

#include "transport/wire.hpp"

namespace melissa::server {

inline constexpr std::uint64_t kFnvOffset = 0xcbf29ce484222325ull;

/// FNV-1a of `size` bytes, continued from `hash`, that of the bytes before them.
inline std::uint64_t fnv1a(const std::byte *data, std::size_t size,
                           std::uint64_t hash = kFnvOffset) {
    for (std::size_t i = 0; i < size; ++i) {
        hash ^= static_cast<std::uint8_t>(data[i]);
        hash *= 0x100000001b3ull;
    }
    return hash;
}

/// A state ends with the FNV-1a of all before it.
inline constexpr std::size_t kChecksumSize = 8;

/// Whether a state of `size` bytes (at least kChecksumSize) ends with its checksum.
inline bool checksum_holds(const std::byte *bytes, std::size_t size) {
    std::uint64_t checksum;
    std::memcpy(&checksum, bytes + size - kChecksumSize, kChecksumSize);
    return fnv1a(bytes, size - kChecksumSize) == wire::to_little(checksum);
}

/// Whether `n` entries of at least `entry_bytes` each can be in what `r` has left: a count
/// beyond is a wrong one, which must not become an allocation.
inline bool fits(const wire::Reader &r, std::uint64_t n, std::size_t entry_bytes) {
    return n <= r.remaining() / entry_bytes;
}

/// Where a state goes: a file, through a buffer, with the checksum of what went through so
/// far; or nowhere, only counting the bytes, to learn a size before anything
/// is written. A whole state in memory would double the rank's memory at every checkpoint.
class FileOutput : public wire::Encoder<FileOutput> {
  public:
    /// Writes to the file descriptor `fd`; counts only if fd < 0.
    explicit FileOutput(int fd) : fd_(fd) {
        if (fd_ >= 0)
            buffer_.reserve(kBufferBytes);
    }

    std::uint64_t size() const { return size_; }
    std::uint64_t checksum() const { return checksum_; }

    /// Writes what the buffer holds; throws std::system_error if the file does not take it.
    void flush() {
        const std::byte *data = buffer_.data();
        std::size_t left = buffer_.size();
        while (left > 0) {
            const ssize_t written = ::write(fd_, data, left);
            if (written < 0 && errno == EINTR)
                continue;
            if (written < 0)
                throw std::system_error(errno, std::generic_category(), "checkpoint not written");
            data += written;
            left -= static_cast<std::size_t>(written);
        }
        buffer_.clear();
    }

  private:
    friend class wire::Encoder<FileOutput>;
    static constexpr std::size_t kBufferBytes = std::size_t{1} << 20;

    void append(const std::byte *data, std::size_t n) {
        size_ += n;
        if (fd_ < 0)
            return;
        checksum_ = fnv1a(data, n, checksum_);
        while (n > 0) {
            const std::size_t taken = std::min(n, kBufferBytes - buffer_.size());
            buffer_.insert(buffer_.end(), data, data + taken);
            data += taken;
            n -= taken;
            if (buffer_.size() == kBufferBytes)
                flush();
        }
    }

    int fd_;
    std::uint64_t size_ = 0, checksum_ = kFnvOffset;
    std::vector<std::byte> buffer_;
};

} // namespace melissa::server
