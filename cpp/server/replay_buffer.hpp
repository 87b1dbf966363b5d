// SPDX-License-Identifier: BSD-3-Clause
//
// The training server's replay buffer: a consumer that assembles each (simulation, time step)
// from all of its fields into one sample and keeps samples for training, on the receiver thread,
// while Python trains from batches drawn on another thread. Receiving never waits on training
// except when a buffer that must not lose data (FIFO, FIRO) is full: then the clients slow down.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <set>
#include <vector>

#include "receiver.hpp"

namespace melissa::server {

enum class BufferPolicy {
    Fifo,     // first in, first out; each sample used once
    Firo,     // first in, random out; each sample used once
    Reservoir // a uniform random sample of everything seen; samples drawn with replacement
};

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

  private:
    bool ready(std::size_t n) const; // under mutex_
    void store(Sample sample, const std::atomic<bool> &stopping);
    void record_departure(const Sample &sample);

    BufferConfig config_;
    std::size_t sample_cells_ = 0;
    std::mutex mutex_;
    std::condition_variable changed_;
    std::vector<Sample> held_; // FIFO: oldest first
    std::vector<Sample> validation_;
    // (simulation, time step) -> its fields received so far, by field id
    std::map<std::pair<std::uint32_t, std::uint32_t>, std::map<std::uint32_t, std::vector<float>>>
        partial_;
    std::mt19937_64 rng_;
    BufferStats stats_;
};

} // namespace melissa::server
