// SPDX-License-Identifier: BSD-3-Clause
//
// The wire format between clients and servers, independent of the transport that carries it.
//
// A data message is two frames: a fixed 64-byte header, then the values (count x dtype bytes,
// little-endian). An END message (one frame, the header alone) tells a server rank how many data
// messages a simulation sent it, so that it knows when the simulation is complete. Control
// messages (the handshake) are length-prefixed fields, see Writer and Reader.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace melissa::wire {

constexpr std::uint32_t kMagic = 0x4153'4C4D; // "MLSA" in memory order
// 2: server endpoints carry a UCX worker address.
constexpr std::uint16_t kVersion = 2;
constexpr std::size_t kHeaderSize = 64;

enum class Kind : std::uint8_t { Data = 1, End = 2 };
enum class DType : std::uint8_t { Float32 = 1, Float64 = 2 };

inline std::size_t dtype_size(DType dtype) { return dtype == DType::Float32 ? 4 : 8; }

/// `v` with its bytes in little-endian order, the order of every multi-byte field on the wire
/// and in checkpoints, whatever the host's.
template <class T> T to_little(T v) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    T out;
    auto *src = reinterpret_cast<const unsigned char *>(&v);
    auto *dst = reinterpret_cast<unsigned char *>(&out);
    for (std::size_t i = 0; i < sizeof(T); ++i)
        dst[i] = src[sizeof(T) - 1 - i];
    return out;
#else
    return v;
#endif
}

struct Header {
    Kind kind = Kind::Data;
    DType dtype = DType::Float64;
    std::uint64_t token = 0;
    std::uint32_t simulation_id = 0;
    std::uint32_t time_step = 0;
    std::uint32_t field_id = 0;
    std::uint32_t client_rank = 0;
    std::uint32_t n_client_ranks = 0;
    std::uint64_t field_size = 0; // cells of the whole field, over all client ranks
    std::uint64_t offset = 0;     // first cell of this piece in the whole field
    std::uint64_t count = 0;      // cells in this piece; for END: time steps sent
    // Random per client process: tells a restarted simulation's messages from its earlier
    // attempt's, whose flush counts must not mix.
    std::uint32_t run = 0;

    std::size_t payload_bytes() const {
        return kind == Kind::Data ? static_cast<std::size_t>(count) * dtype_size(dtype) : 0;
    }
};

using HeaderBytes = std::array<std::byte, kHeaderSize>;

HeaderBytes encode(const Header &header);

/// Why a message was dropped.
enum class Defect {
    None,
    Truncated,      // fewer bytes than a header
    BadMagic,       // not a melissa message
    BadVersion,     // another protocol version
    BadKind,        // neither data nor END
    BadDType,       // neither float32 nor float64
    BadRange,       // offset + count outside the field, or a field of no cells
    BadPayloadSize, // the values frame does not hold count values
};

const char *describe(Defect defect);

/// Decodes and checks what a header can say about itself (its size, magic, version, kind, dtype,
/// range and the size of the values that came with it). Never reads past `size` bytes.
std::optional<Header> decode(const void *bytes, std::size_t size, std::size_t payload_size,
                             Defect &defect);

/// The encoding of control messages and checkpoints: fields appended in order, strings
/// length-prefixed. Sink::append(data, n) takes the bytes: a Writer keeps them, a checkpoint
/// streams them to its file.
template <class Sink> class Encoder {
  public:
    Sink &u8(std::uint8_t v) { return put(&v, sizeof(v)); }
    Sink &u32(std::uint32_t v) {
        v = to_little(v);
        return put(&v, sizeof(v));
    }
    Sink &u64(std::uint64_t v) {
        v = to_little(v);
        return put(&v, sizeof(v));
    }
    Sink &str(const std::string &s) {
        u32(static_cast<std::uint32_t>(s.size()));
        return put(s.data(), s.size());
    }
    /// n values of `width` bytes each (8: float64 or uint64; 4: float32), as a block.
    Sink &words(const void *values, std::size_t n, std::size_t width = 8) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
        const auto *bytes = static_cast<const std::byte *>(values);
        for (std::size_t i = 0; i < n; ++i) {
            if (width == 4) {
                std::uint32_t v;
                std::memcpy(&v, bytes + 4 * i, 4);
                u32(v);
            } else {
                std::uint64_t v;
                std::memcpy(&v, bytes + 8 * i, 8);
                u64(v);
            }
        }
        return static_cast<Sink &>(*this);
#else
        return put(values, width * n);
#endif
    }

  private:
    Sink &put(const void *data, std::size_t n) {
        auto &sink = static_cast<Sink &>(*this);
        sink.append(static_cast<const std::byte *>(data), n);
        return sink;
    }
};

/// Builds a control message in memory.
class Writer : public Encoder<Writer> {
  public:
    const std::vector<std::byte> &bytes() const { return bytes_; }
    std::vector<std::byte> take() { return std::move(bytes_); }

  private:
    friend class Encoder<Writer>;
    void append(const std::byte *data, std::size_t n) {
        bytes_.insert(bytes_.end(), data, data + n);
    }

    std::vector<std::byte> bytes_;
};

/// Reads what Writer wrote; throws MalformedMessage on any shortfall.
class Reader {
  public:
    Reader(const void *data, std::size_t size)
        : data_(static_cast<const std::byte *>(data)), size_(size) {}
    std::uint8_t u8();
    std::uint32_t u32();
    std::uint64_t u64();
    std::string str();
    /// n values of `width` bytes each, as Encoder::words wrote them.
    void words(void *values, std::size_t n, std::size_t width = 8);
    bool done() const { return at_ == size_; }
    std::size_t consumed() const { return at_; }
    std::size_t remaining() const { return size_ - at_; }

  private:
    void take(void *out, std::size_t n);
    const std::byte *data_;
    std::size_t size_, at_ = 0;
};

struct MalformedMessage : std::runtime_error {
    using std::runtime_error::runtime_error;
};

/// How a server rank's cells are chosen: a contiguous share of every field (NxM), or whole
/// fields, round robin over simulations or over time steps (for training).
enum class Routing : std::uint32_t { Cells = 0, WholeBySimulation = 1, WholeByTimeStep = 2 };

/// First cell owned by `rank` of `n_ranks` in a field of `size` cells (Routing::Cells); rank
/// n_ranks gives the end. Clients and servers must agree on it exactly.
inline std::uint64_t range_begin(std::uint64_t size, std::uint32_t rank, std::uint32_t n_ranks) {
    // 128-bit product: size * rank overflows 64 bits for fields beyond 2^32 cells on many ranks.
    return static_cast<std::uint64_t>(static_cast<unsigned __int128>(size) * rank / n_ranks);
}

/// What client rank 0 asks server rank 0 for each field.
struct Hello {
    std::uint64_t token = 0;
    std::uint32_t simulation_id = 0;
    std::string field_name;
    std::uint64_t field_size = 0;
    std::uint32_t n_client_ranks = 0;
};

/// Where a server rank receives data, and answers requests (handshakes on rank 0, flushes).
struct ServerEndpoint {
    std::string host, tcp, ipc, control;
    std::string ucx; // the UCX worker's address, in hex; empty: the rank takes data on ZeroMQ
};

/// Server rank 0's answer: status 0 and the layout, or an error and why.
struct Welcome {
    std::uint32_t status = 0;
    std::string message;
    std::uint32_t field_id = 0;
    Routing routing = Routing::Cells;
    std::vector<ServerEndpoint> servers;
};

std::vector<std::byte> encode_hello(const Hello &hello);
Hello decode_hello(const void *data, std::size_t size);
std::vector<std::byte> encode_welcome(const Welcome &welcome);
Welcome decode_welcome(const void *data, std::size_t size);

/// What a client rank asks each server rank it sent to before it closes its connections: to
/// answer once it holds every message the client rank sent it. Closing a connection may drop
/// what is still queued (ZeroMQ over Unix sockets does), so nothing is closed before that.
struct Flush {
    std::uint64_t token = 0;
    std::uint32_t simulation_id = 0, client_rank = 0, run = 0;
    std::uint64_t messages = 0;
};

/// A server rank's answer: how many of the client rank's messages it holds.
struct Flushed {
    std::uint64_t received = 0;
};

/// A control request: a handshake or a flush.
enum class Request { Hello, Flush };

/// Which control request `data` holds; throws MalformedMessage if neither.
Request request_kind(const void *data, std::size_t size);
std::vector<std::byte> encode_flush(const Flush &flush);
Flush decode_flush(const void *data, std::size_t size);
std::vector<std::byte> encode_flushed(const Flushed &flushed);
Flushed decode_flushed(const void *data, std::size_t size);

} // namespace melissa::wire
