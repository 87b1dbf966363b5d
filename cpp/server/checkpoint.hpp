// SPDX-License-Identifier: BSD-3-Clause
//
// A statistics server rank's checkpoint: the receiver's delivery state, and the accumulators,
// Sobol groups and covariance halves in flight of its FieldStatistics, as bytes in a versioned
// format of its own, so that a checkpoint is read back by any later melissa, or refused with the
// reason.
//
// Little-endian throughout, in wire::Encoder's encoding (u32, u64, strings length-prefixed):
//
//   "MLSACKPT"            8 bytes
//   version               u32 (kCheckpointVersion)
//   size                  u64, of the whole checkpoint, checksum included
//   rank, n_ranks         u32, u32
//   routing               u32 (wire::Routing)
//   field names           u32 count, strings
//   finished simulations  u32 count, u32 each
//   field sizes           u32 count, (u32 field, u64 cells) each
//   delivered time steps  u32 count, (u32 simulation, u32 field, u32 count, u32 step each) each
//   statistics            moments order u32, extrema u8, thresholds and probabilities (u32
//                         count, float64 each), Sobol parameters u64, covariance pairs (from
//                         format 2: u32 count, each: u32 field, u32 other, u8 other is a
//                         parameter)
//   accumulators          u64 count, each: u32 field, u32 step, u64 offset, u64 cells, u32
//                         kernels, each: name, u32 arrays, each: name, u8 type (0 float64, 1
//                         uint64, from format 4: 2 float32), u32 rank, u64 each dimension, the
//                         values (8 bytes each, 4 for float32)
//   Sobol groups          u64 count, each: u32 field, u32 step, u32 group, u32 members, u8
//                         arrived each, u64 values (members x cells), the values (float64)
//   covariance halves     from format 2: u64 count, each: u32 pair, u32 step, u32 simulation,
//                         u8 first (1: the pair's first field), u64 offset, u64 values, the
//                         values (float64)
//   checksum              u64, FNV-1a of every byte before it
#pragma once

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "consumers.hpp"
#include "receiver.hpp"

namespace melissa::server {

/// The format this melissa writes and reads; earlier ones are refused with the reason. 2:
/// covariance pairs and their halves in flight. 3: the moments' shift. 4: the shift in float32,
/// none at order 1.
constexpr std::uint32_t kCheckpointVersion = 4;

/// A checkpoint that cannot be taken up here, and why.
struct CheckpointError : std::invalid_argument {
    using std::invalid_argument::invalid_argument;
};

/// What a checkpoint says of itself, without its statistics.
struct CheckpointSummary {
    std::uint32_t version = 0, rank = 0, n_ranks = 0;
    wire::Routing routing = wire::Routing::Cells;
    std::vector<std::string> field_names;
    std::vector<std::uint32_t> finished;
    std::uint64_t size = 0; // bytes, checksum included
};

/// Writes the checkpoint of `receiver` and `statistics`, its consumer, to the file open for
/// writing as `fd`, a buffer at a time: consistent, the receiver held between two messages
/// meanwhile. Returns what checkpoint_summary will say of it. Throws std::system_error if the
/// file does not take it (a full disk), which then holds a part of it: write to a temporary file,
/// renamed once synced.
CheckpointSummary write_checkpoint(Receiver &receiver, FieldStatistics &statistics, int fd);

/// Takes up a checkpoint of this rank of this study, before any client connects; throws
/// CheckpointError, leaving both as they were, if it is not one (or is damaged).
void restore_checkpoint(Receiver &receiver, FieldStatistics &statistics, const void *data,
                        std::size_t size);

/// Checks a checkpoint as restore_checkpoint does its format (CheckpointError) and returns what
/// it says of itself.
CheckpointSummary checkpoint_summary(const void *data, std::size_t size);

} // namespace melissa::server
