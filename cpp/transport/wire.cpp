// SPDX-License-Identifier: BSD-3-Clause
#include "wire.hpp"

#include <cstring>

namespace melissa::wire {
namespace {

template <class T> void put(HeaderBytes &bytes, std::size_t at, T v) {
    v = to_little(v);
    std::memcpy(bytes.data() + at, &v, sizeof(T));
}

template <class T> T get(const std::byte *bytes, std::size_t at) {
    T v;
    std::memcpy(&v, bytes + at, sizeof(T));
    return to_little(v);
}

// Field offsets in the header.
enum Offset : std::size_t {
    kMagicAt = 0,
    kVersionAt = 4,
    kKindAt = 6,
    kDTypeAt = 7,
    kTokenAt = 8,
    kSimulationAt = 16,
    kTimeStepAt = 20,
    kFieldAt = 24,
    kClientRankAt = 28,
    kClientRanksAt = 32,
    kFieldSizeAt = 36,
    kOffsetAt = 44,
    kCountAt = 52,
    kRunAt = 60,
};
static_assert(kRunAt + 4 == kHeaderSize);

} // namespace

HeaderBytes encode(const Header &h) {
    HeaderBytes bytes{};
    put(bytes, kMagicAt, kMagic);
    put(bytes, kVersionAt, kVersion);
    put(bytes, kKindAt, static_cast<std::uint8_t>(h.kind));
    put(bytes, kDTypeAt, static_cast<std::uint8_t>(h.dtype));
    put(bytes, kTokenAt, h.token);
    put(bytes, kSimulationAt, h.simulation_id);
    put(bytes, kTimeStepAt, h.time_step);
    put(bytes, kFieldAt, h.field_id);
    put(bytes, kClientRankAt, h.client_rank);
    put(bytes, kClientRanksAt, h.n_client_ranks);
    put(bytes, kFieldSizeAt, h.field_size);
    put(bytes, kOffsetAt, h.offset);
    put(bytes, kCountAt, h.count);
    put(bytes, kRunAt, h.run);
    return bytes;
}

const char *describe(Defect defect) {
    switch (defect) {
    case Defect::None:
        return "no defect";
    case Defect::Truncated:
        return "shorter than a header";
    case Defect::BadMagic:
        return "not a melissa message";
    case Defect::BadVersion:
        return "another protocol version";
    case Defect::BadKind:
        return "unknown message kind";
    case Defect::BadDType:
        return "unknown value type";
    case Defect::BadRange:
        return "cells outside the field";
    case Defect::BadPayloadSize:
        return "values do not match the header's count";
    }
    return "unknown defect";
}

std::optional<Header> decode(const void *data, std::size_t size, std::size_t payload_size,
                             Defect &defect) {
    const auto *bytes = static_cast<const std::byte *>(data);
    auto fail = [&defect](Defect d) {
        defect = d;
        return std::optional<Header>{};
    };
    if (size < kHeaderSize)
        return fail(Defect::Truncated);
    if (get<std::uint32_t>(bytes, kMagicAt) != kMagic)
        return fail(Defect::BadMagic);
    if (get<std::uint16_t>(bytes, kVersionAt) != kVersion)
        return fail(Defect::BadVersion);
    Header h;
    const auto kind = get<std::uint8_t>(bytes, kKindAt);
    if (kind != static_cast<std::uint8_t>(Kind::Data) &&
        kind != static_cast<std::uint8_t>(Kind::End))
        return fail(Defect::BadKind);
    h.kind = static_cast<Kind>(kind);
    const auto dtype = get<std::uint8_t>(bytes, kDTypeAt);
    if (dtype != static_cast<std::uint8_t>(DType::Float32) &&
        dtype != static_cast<std::uint8_t>(DType::Float64))
        return fail(Defect::BadDType);
    h.dtype = static_cast<DType>(dtype);
    h.token = get<std::uint64_t>(bytes, kTokenAt);
    h.simulation_id = get<std::uint32_t>(bytes, kSimulationAt);
    h.time_step = get<std::uint32_t>(bytes, kTimeStepAt);
    h.field_id = get<std::uint32_t>(bytes, kFieldAt);
    h.client_rank = get<std::uint32_t>(bytes, kClientRankAt);
    h.n_client_ranks = get<std::uint32_t>(bytes, kClientRanksAt);
    h.field_size = get<std::uint64_t>(bytes, kFieldSizeAt);
    h.offset = get<std::uint64_t>(bytes, kOffsetAt);
    h.count = get<std::uint64_t>(bytes, kCountAt);
    h.run = get<std::uint32_t>(bytes, kRunAt);
    if (h.client_rank >= h.n_client_ranks)
        return fail(Defect::BadRange);
    if (h.kind == Kind::Data) {
        // Written so that nothing overflows: offset + count could wrap around.
        if (h.field_size == 0 || h.count == 0 || h.offset >= h.field_size ||
            h.count > h.field_size - h.offset)
            return fail(Defect::BadRange);
        if (h.count > payload_size / dtype_size(h.dtype) ||
            h.count * dtype_size(h.dtype) != payload_size)
            return fail(Defect::BadPayloadSize);
    } else if (payload_size != 0) {
        return fail(Defect::BadPayloadSize);
    }
    defect = Defect::None;
    return h;
}

void Reader::take(void *out, std::size_t n) {
    if (n > size_ - at_)
        throw MalformedMessage("control message ends early");
    std::memcpy(out, data_ + at_, n);
    at_ += n;
}

std::uint8_t Reader::u8() {
    std::uint8_t v;
    take(&v, sizeof(v));
    return v;
}

std::uint32_t Reader::u32() {
    std::uint32_t v;
    take(&v, sizeof(v));
    return to_little(v);
}

std::uint64_t Reader::u64() {
    std::uint64_t v;
    take(&v, sizeof(v));
    return to_little(v);
}

std::string Reader::str() {
    const std::uint32_t n = u32();
    if (n > size_ - at_)
        throw MalformedMessage("control message ends early");
    std::string s(reinterpret_cast<const char *>(data_ + at_), n);
    at_ += n;
    return s;
}

void Reader::words(void *values, std::size_t n, std::size_t width) {
    if (n > remaining() / width)
        throw MalformedMessage("control message ends early");
    take(values, width * n);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    for (std::size_t i = 0; i < n; ++i) {
        if (width == 4) {
            auto *p = static_cast<std::uint32_t *>(values);
            p[i] = to_little(p[i]);
        } else {
            auto *p = static_cast<std::uint64_t *>(values);
            p[i] = to_little(p[i]);
        }
    }
#endif
}

namespace {
// Tags the two control messages, so that one is never read as the other.
constexpr std::uint32_t kHelloTag = 0x4C45'4C48;   // "HLEL"
constexpr std::uint32_t kWelcomeTag = 0x4D4F'4357; // "WCOM"
constexpr std::uint32_t kFlushTag = 0x4855'4C46;   // "FLUH"
constexpr std::uint32_t kFlushedTag = 0x4445'4C46; // "FLED"

void expect_tag(Reader &r, std::uint32_t tag) {
    if (r.u32() != tag || r.u32() != kVersion)
        throw MalformedMessage("not a melissa control message of this protocol version");
}

void expect_end(const Reader &r) {
    if (!r.done())
        throw MalformedMessage("control message has trailing bytes");
}
} // namespace

std::vector<std::byte> encode_hello(const Hello &h) {
    Writer w;
    w.u32(kHelloTag).u32(kVersion).u64(h.token).u32(h.simulation_id).str(h.field_name);
    w.u64(h.field_size).u32(h.n_client_ranks);
    return w.bytes();
}

Hello decode_hello(const void *data, std::size_t size) {
    Reader r(data, size);
    expect_tag(r, kHelloTag);
    Hello h;
    h.token = r.u64();
    h.simulation_id = r.u32();
    h.field_name = r.str();
    h.field_size = r.u64();
    h.n_client_ranks = r.u32();
    expect_end(r);
    return h;
}

std::vector<std::byte> encode_welcome(const Welcome &welcome) {
    Writer w;
    w.u32(kWelcomeTag).u32(kVersion).u32(welcome.status).str(welcome.message);
    w.u32(welcome.field_id).u32(static_cast<std::uint32_t>(welcome.routing));
    w.u32(static_cast<std::uint32_t>(welcome.servers.size()));
    for (const auto &s : welcome.servers)
        w.str(s.host).str(s.tcp).str(s.ipc).str(s.control).str(s.ucx);
    return w.bytes();
}

Welcome decode_welcome(const void *data, std::size_t size) {
    Reader r(data, size);
    expect_tag(r, kWelcomeTag);
    Welcome welcome;
    welcome.status = r.u32();
    welcome.message = r.str();
    welcome.field_id = r.u32();
    const std::uint32_t routing = r.u32();
    if (routing > static_cast<std::uint32_t>(Routing::WholeByTimeStep))
        throw MalformedMessage("unknown routing");
    welcome.routing = static_cast<Routing>(routing);
    const std::uint32_t n = r.u32();
    // Each endpoint takes at least 20 bytes: a count beyond what is left is a lie, not a reason
    // to allocate.
    if (n > size / 20)
        throw MalformedMessage("control message lists more servers than it holds");
    for (std::uint32_t i = 0; i < n; ++i) {
        ServerEndpoint s;
        s.host = r.str();
        s.tcp = r.str();
        s.ipc = r.str();
        s.control = r.str();
        s.ucx = r.str();
        welcome.servers.push_back(std::move(s));
    }
    expect_end(r);
    return welcome;
}

Request request_kind(const void *data, std::size_t size) {
    Reader r(data, size);
    const std::uint32_t tag = r.u32();
    if (tag == kHelloTag)
        return Request::Hello;
    if (tag == kFlushTag)
        return Request::Flush;
    throw MalformedMessage("not a melissa control request");
}

std::vector<std::byte> encode_flush(const Flush &f) {
    Writer w;
    w.u32(kFlushTag).u32(kVersion).u64(f.token).u32(f.simulation_id).u32(f.client_rank);
    w.u32(f.run).u64(f.messages);
    return w.bytes();
}

Flush decode_flush(const void *data, std::size_t size) {
    Reader r(data, size);
    expect_tag(r, kFlushTag);
    Flush f;
    f.token = r.u64();
    f.simulation_id = r.u32();
    f.client_rank = r.u32();
    f.run = r.u32();
    f.messages = r.u64();
    expect_end(r);
    return f;
}

std::vector<std::byte> encode_flushed(const Flushed &f) {
    Writer w;
    w.u32(kFlushedTag).u32(kVersion).u64(f.received);
    return w.bytes();
}

Flushed decode_flushed(const void *data, std::size_t size) {
    Reader r(data, size);
    expect_tag(r, kFlushedTag);
    Flushed f;
    f.received = r.u64();
    expect_end(r);
    return f;
}

} // namespace melissa::wire
