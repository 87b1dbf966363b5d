// SPDX-License-Identifier: BSD-3-Clause
//
// Fuzz tests of the decoders, built with AddressSanitizer and UndefinedBehaviorSanitizer: random
// mutations of valid messages (bit flips, truncations, random bytes, spliced fields) must never
// read out of bounds, overflow or crash, and whatever the header decoder accepts must be a
// header it would have written itself.
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <vector>

#include "transport/wire.hpp"

namespace wire = melissa::wire;

namespace {

wire::Header valid_header(std::mt19937_64 &rng) {
    wire::Header h;
    h.kind = rng() % 2 ? wire::Kind::Data : wire::Kind::End;
    h.dtype = rng() % 2 ? wire::DType::Float32 : wire::DType::Float64;
    h.token = rng();
    h.simulation_id = static_cast<std::uint32_t>(rng());
    h.time_step = static_cast<std::uint32_t>(rng() % 1000);
    h.field_id = static_cast<std::uint32_t>(rng() % 4);
    h.n_client_ranks = 1 + static_cast<std::uint32_t>(rng() % 8);
    h.client_rank = static_cast<std::uint32_t>(rng() % h.n_client_ranks);
    h.field_size = 1 + rng() % 100000;
    h.offset = rng() % h.field_size;
    h.count = h.kind == wire::Kind::Data ? 1 + rng() % (h.field_size - h.offset) : rng() % 100;
    return h;
}

/// One random mutation of `bytes`, which may change its size.
void mutate(std::vector<std::byte> &bytes, std::mt19937_64 &rng) {
    switch (rng() % 5) {
    case 0: // flip a few bits
        for (int k = 0, n = 1 + static_cast<int>(rng() % 4); k < n && !bytes.empty(); ++k)
            bytes[rng() % bytes.size()] ^= std::byte{static_cast<unsigned char>(1u << (rng() % 8))};
        break;
    case 1: // truncate
        bytes.resize(bytes.empty() ? 0 : rng() % bytes.size());
        break;
    case 2: // overwrite a run with random bytes
        for (std::size_t i = bytes.empty() ? 0 : rng() % bytes.size(), n = rng() % 16;
             n-- > 0 && i < bytes.size(); ++i)
            bytes[i] = std::byte{static_cast<unsigned char>(rng())};
        break;
    case 3: // extreme values in an aligned 8-byte slot
        if (bytes.size() >= 8) {
            const std::uint64_t extremes[] = {0, 1, ~0ull, 1ull << 63, 0xFFFFFFFFull};
            const std::size_t at = (rng() % (bytes.size() / 8)) * 8;
            std::memcpy(bytes.data() + at, &extremes[rng() % 5], 8);
        }
        break;
    default: // grow with garbage
        for (std::size_t n = rng() % 32; n-- > 0;)
            bytes.push_back(std::byte{static_cast<unsigned char>(rng())});
    }
}

} // namespace

TEST(WireFuzz, HeaderDecoderNeverMisreads) {
    std::mt19937_64 rng(20261125);
    std::size_t accepted = 0, rejected = 0;
    for (int round = 0; round < 200000; ++round) {
        const wire::Header original = valid_header(rng);
        const wire::HeaderBytes encoded = wire::encode(original);
        std::vector<std::byte> bytes(encoded.begin(), encoded.end());
        for (int k = 0, n = 1 + static_cast<int>(rng() % 3); k < n; ++k)
            mutate(bytes, rng);
        // Payload sizes: the right one, a wrong one, or a huge one.
        const std::size_t payloads[] = {original.payload_bytes(), rng() % 4096,
                                        static_cast<std::size_t>(rng())};
        const std::size_t payload = payloads[rng() % 3];
        // A heap copy of exactly the mutated size: ASan catches any read past it.
        std::vector<std::byte> exact(bytes);
        wire::Defect defect = wire::Defect::None;
        const auto decoded = wire::decode(exact.data(), exact.size(), payload, defect);
        if (!decoded) {
            ++rejected;
            EXPECT_NE(defect, wire::Defect::None);
            continue;
        }
        ++accepted;
        // Accepted: consistent with itself, and exactly what encode() writes for it.
        EXPECT_EQ(decoded->payload_bytes(), payload);
        EXPECT_LT(decoded->client_rank, decoded->n_client_ranks);
        if (decoded->kind == wire::Kind::Data) {
            EXPECT_LE(decoded->offset + decoded->count, decoded->field_size);
            EXPECT_GT(decoded->count, 0u);
        }
        const wire::HeaderBytes again = wire::encode(*decoded);
        EXPECT_EQ(std::memcmp(again.data(), exact.data(), wire::kHeaderSize), 0);
    }
    // Both outcomes must be exercised, or the mutations test nothing.
    EXPECT_GT(accepted, 1000u);
    EXPECT_GT(rejected, 1000u);
}

TEST(WireFuzz, ControlDecodersThrowOrSucceed) {
    std::mt19937_64 rng(7);
    std::size_t thrown = 0;
    for (int round = 0; round < 100000; ++round) {
        std::vector<std::byte> bytes;
        const int kind = static_cast<int>(rng() % 4);
        if (kind == 0) {
            wire::Hello h{rng(), static_cast<std::uint32_t>(rng()), "temperature", rng(), 3};
            bytes = wire::encode_hello(h);
        } else if (kind == 1) {
            wire::Welcome w;
            w.message = "a reason";
            w.servers = {{"node1", "tcp://node1:1", "ipc:///tmp/a", "tcp://node1:2"},
                         {"node2", "tcp://node2:2", "", "tcp://node2:3"}};
            bytes = wire::encode_welcome(w);
        } else if (kind == 2) {
            bytes = wire::encode_flush({rng(), 3, 1, 7, rng()});
        } else {
            bytes = wire::encode_flushed({rng()});
        }
        for (int k = 0, n = 1 + static_cast<int>(rng() % 3); k < n; ++k)
            mutate(bytes, rng);
        try {
            (void)wire::request_kind(bytes.data(), bytes.size());
            if (kind == 0)
                (void)wire::decode_hello(bytes.data(), bytes.size());
            else if (kind == 1)
                (void)wire::decode_welcome(bytes.data(), bytes.size());
            else if (kind == 2)
                (void)wire::decode_flush(bytes.data(), bytes.size());
            else
                (void)wire::decode_flushed(bytes.data(), bytes.size());
        } catch (const wire::MalformedMessage &) {
            ++thrown;
        }
    }
    EXPECT_GT(thrown, 10000u);
}

TEST(Wire, EachDefectIsNamed) {
    std::mt19937_64 rng(3);
    wire::Header h = valid_header(rng);
    h.kind = wire::Kind::Data;
    const auto good = wire::encode(h);
    auto decode_with = [&](auto edit, std::size_t payload) {
        wire::HeaderBytes bytes = good;
        edit(bytes);
        wire::Defect defect = wire::Defect::None;
        EXPECT_FALSE(wire::decode(bytes.data(), bytes.size(), payload, defect));
        return defect;
    };
    const std::size_t payload = h.payload_bytes();
    EXPECT_EQ(decode_with([](auto &b) { b[0] = std::byte{0}; }, payload), wire::Defect::BadMagic);
    EXPECT_EQ(decode_with([](auto &b) { b[4] = std::byte{9}; }, payload), wire::Defect::BadVersion);
    EXPECT_EQ(decode_with([](auto &b) { b[6] = std::byte{7}; }, payload), wire::Defect::BadKind);
    EXPECT_EQ(decode_with([](auto &b) { b[7] = std::byte{3}; }, payload), wire::Defect::BadDType);
    EXPECT_EQ(decode_with([](auto &) {}, payload + 1), wire::Defect::BadPayloadSize);
    wire::Defect defect = wire::Defect::None;
    EXPECT_FALSE(wire::decode(good.data(), wire::kHeaderSize - 1, payload, defect));
    EXPECT_EQ(defect, wire::Defect::Truncated);
    wire::Header past_end = h;
    past_end.offset = h.field_size - 1;
    past_end.count = 2;
    const auto bad_range = wire::encode(past_end);
    EXPECT_FALSE(wire::decode(bad_range.data(), bad_range.size(), 2 * 8, defect));
    EXPECT_EQ(defect, wire::Defect::BadRange);
}
