// SPDX-License-Identifier: BSD-3-Clause
//
// The training server's replay buffer: a consumer that assembles each (simulation, time step)
// from all of its fields into one sample and keeps samples for training, on the receiver thread,
// while Python trains from batches drawn on another thread. Receiving never waits on training
// except when a buffer that must not lose data (FIFO, FIRO) is full: then the clients slow down.
//
// The policies, and what pseudo_epochs (the uses after which a sample leaves) means for each:
//   FIFO            the oldest samples first, in arrival order; each used once (pseudo_epochs must
//                   be 1: more would only serve the same batch again).
//   FIRO            random samples, distinct within a batch; a sample leaves after pseudo_epochs
//                   uses (default 1).
//   Reservoir       Algorithm R: a uniform random sample of everything received; batches drawn
//                   with replacement; a sample stays until replaced, or until pseudo_epochs uses
//                   if set (default: no limit), which makes room for newer samples.
//   BatchReservoir  a simulation's time series is kept together: when the buffer is full, a
//                   whole simulation, drawn uniformly among those held but the arriving sample's,
//                   makes room (where it is the only one held, the arriving sample is dropped: a
//                   series longer than the buffer keeps its first steps; a simulation evicted
//                   while it still sends starts a new group with its later steps); batches
//                   drawn with replacement, and pseudo_epochs as for Reservoir.
// Once draining, every policy serves each remaining sample once more, distinct within a batch,
// and removes it, whatever its uses.
//
// The state (held samples with their uses, held-out samples, incomplete samples, counters, the
// random generator) is written to a file and read back by a fresh buffer, so that a training
// study resumed from a checkpoint trains on the buffers it had. Format, little-endian, in
// wire::Encoder's encoding:
//
//   "MLSABUFR"          8 bytes
//   version             u32 (kBufferStateVersion)
//   tag                 u64, the caller's (the training server: the checkpoint's number)
//   policy, n_fields    u32, u32
//   sample cells        u64
//   random generator    string (std::mt19937_64's text form)
//   counters            u64 received, evicted, drawn; uses histogram: u32 count, (u64 uses,
//                       u64 samples) each
//   held, held out      each: u64 count, each: u32 simulation, u32 step, u64 uses, u64 cells,
//                       the values (float32)
//   incomplete          u64 count, each: u32 simulation, u32 step, u32 fields, each: u32 field,
//                       u64 cells, the values (float32)
//   checksum            u64, FNV-1a of every byte before it
#pragma once

#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <vector>

#include "receiver.hpp"

namespace melissa::server {

enum class BufferPolicy {
    Fifo,          // first in, first out; each sample used once
    Firo,          // first in, random out; each sample used once
    Reservoir,     // a uniform random sample of everything seen; samples drawn with replacement
    BatchReservoir // whole simulations kept and evicted together; drawn with replacement
};

/// The buffer state format this melissa writes and reads.
constexpr std::uint32_t kBufferStateVersion = 1;

struct Sample {
    std::uint32_t simulation_id = 0, time_step = 0;
    std::vector<float> values; // every field, one after the other
    std::uint64_t uses = 0;    // batches this sample has been in
};

/// Samples side by side: values is (size, cells), row-major.
struct Batch {
    std::vector<std::uint32_t> simulation_ids, time_steps;
    std::vector<float> values;
    std::size_t size() const { return simulation_ids.size(); }
};

struct BufferConfig {
    BufferPolicy policy = BufferPolicy::Fifo;
    std::size_t capacity = 1000;
    std::size_t watermark = 100;        // samples held before the first batch
    std::size_t n_fields = 1;           // a sample is complete when all of them arrived
    std::set<std::uint32_t> validation; // simulations held out for validation
    std::uint64_t seed = 0;
    std::uint64_t pseudo_epochs = 0; // uses after which a sample leaves; 0: the policy's default
};

/// What the buffer has seen and done, for logs and tests.
struct BufferStats {
    std::size_t size = 0, validation_samples = 0;
    std::uint64_t received = 0, evicted = 0, drawn = 0;
    // uses of every sample that left the buffer (plus those still in), as a histogram
    std::map<std::uint64_t, std::uint64_t> uses;
    bool draining = false;
};

class ReplayBuffer final : public Consumer {
  public:
    explicit ReplayBuffer(BufferConfig config);
    void deliver(const Delivery &delivery, const std::atomic<bool> &stopping) override;

    /// Whether batch(n) would return samples now: before draining, while at least
    /// max(watermark, n) samples are held (training starts at the watermark); while draining,
    /// while any is left.
    bool has_batch(std::size_t n);

    /// Up to `n` samples, waiting at most `timeout` for has_batch(n). FIFO takes the oldest,
    /// FIRO random ones, both removing them; Reservoir draws with replacement, and once
    /// draining, without, until empty. Empty after the timeout, or once exhausted.
    Batch batch(std::size_t n, std::chrono::milliseconds timeout);

    /// No more data will come: lets the buffer empty itself per its policy.
    void drain();
    bool exhausted();
    /// The held-out samples (copies), for validation.
    Batch validation_samples();
    BufferStats stats();
    /// Cells of a sample (every field, in field id order); 0 until the first one is complete.
    std::size_t sample_cells();

    /// Writes the whole state to the file open for writing as `fd`, a buffer at a time (a copy
    /// in memory would double the rank's memory), receiving held meanwhile; `tag` is written
    /// along, for the caller to match the state with its own checkpoint. Throws
    /// std::system_error if the file does not take it.
    struct Written {
        std::uint64_t bytes = 0;
        BufferStats stats; // of the state written: samples may arrive once it is
    };
    Written write_state(int fd, std::uint64_t tag);
    /// Takes up a state written by write_state, in a buffer that has received nothing yet and
    /// has the same policy and fields, and, if given, written with `tag`; returns its tag.
    /// Throws std::invalid_argument, changing nothing, for anything else (or a state beyond the
    /// capacity).
    std::uint64_t load_state(const void *data, std::size_t size,
                             std::optional<std::uint64_t> tag = std::nullopt);

  private:
    bool ready(std::size_t n) const;  // under mutex_
    BufferStats stats_locked() const; // under mutex_
    void store(Sample sample, const std::atomic<bool> &stopping);
    void record_departure(const Sample &sample);
    std::uint64_t max_uses() const; // 0: no limit
    // BatchReservoir, full: evicts a whole simulation; false if the arriving sample must go
    // instead. Under mutex_.
    bool make_room_for(const Sample &arriving);

    BufferConfig config_;
    std::size_t sample_cells_ = 0;
    std::mutex mutex_;
    std::condition_variable changed_;
    std::vector<Sample> held_; // FIFO: oldest first
    // By (simulation, time step): a held-out simulation run again (after a resume) sends its
    // steps again, which replace their copies rather than count twice in the validation loss.
    std::map<std::pair<std::uint32_t, std::uint32_t>, Sample> validation_;
    // (simulation, time step) -> its fields received so far, by field id
    std::map<std::pair<std::uint32_t, std::uint32_t>, std::map<std::uint32_t, std::vector<float>>>
        partial_;
    std::mt19937_64 rng_;
    BufferStats stats_;
};

} // namespace melissa::server
