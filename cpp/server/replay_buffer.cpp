// SPDX-License-Identifier: BSD-3-Clause
#include "replay_buffer.hpp"

#include <algorithm>
#include <numeric>
#include <stdexcept>

namespace melissa::server {

using namespace std::chrono_literals;

ReplayBuffer::ReplayBuffer(BufferConfig config) : config_(std::move(config)), rng_(config_.seed) {
    if (config_.capacity == 0)
        throw std::invalid_argument("ReplayBuffer: the capacity must be at least 1");
    if (config_.n_fields == 0)
        throw std::invalid_argument("ReplayBuffer: no field");
}

void ReplayBuffer::deliver(const Delivery &d, const std::atomic<bool> &stopping) {
    // Converted to float32 once, here: what training uses, at half the memory of doubles.
    std::vector<float> values(d.count);
    if (d.dtype == wire::DType::Float32)
        std::copy_n(static_cast<const float *>(d.values), d.count, values.begin());
    else
        std::copy_n(static_cast<const double *>(d.values), d.count, values.begin());
    Sample complete;
    {
        std::lock_guard<std::mutex> lock(mutex_);
        auto found = partial_.find({d.simulation_id, d.time_step});
        if (found == partial_.end())
            found = partial_.try_emplace({d.simulation_id, d.time_step}).first;
        found->second[d.field_id] = std::move(values);
        if (found->second.size() < config_.n_fields)
            return;
        complete.simulation_id = d.simulation_id;
        complete.time_step = d.time_step;
        auto &parts = found->second;
        if (parts.size() == 1) {
            complete.values = std::move(parts.begin()->second); // one field: no second copy
        } else {
            std::size_t cells = 0;
            for (const auto &[field, part] : parts)
                cells += part.size();
            complete.values.reserve(cells);
            for (const auto &[field, part] : parts) // in field id order
                complete.values.insert(complete.values.end(), part.begin(), part.end());
        }
        partial_.erase(found);
        if (sample_cells_ == 0)
            sample_cells_ = complete.values.size();
    }
    store(std::move(complete), stopping);
}

std::size_t ReplayBuffer::sample_cells() {
    std::lock_guard<std::mutex> lock(mutex_);
    return sample_cells_;
}

void ReplayBuffer::store(Sample sample, const std::atomic<bool> &stopping) {
    std::unique_lock<std::mutex> lock(mutex_);
    if (config_.validation.count(sample.simulation_id)) {
        validation_.push_back(std::move(sample));
        return;
    }
    ++stats_.received;
    if (config_.policy == BufferPolicy::Reservoir) {
        // Algorithm R: the n-th sample replaces a random one with probability capacity / n, so
        // that what is held is a uniform sample of everything received.
        if (held_.size() < config_.capacity) {
            held_.push_back(std::move(sample));
        } else {
            const std::uint64_t j =
                std::uniform_int_distribution<std::uint64_t>(0, stats_.received - 1)(rng_);
            if (j < config_.capacity) {
                record_departure(held_[j]);
                ++stats_.evicted;
                held_[j] = std::move(sample);
            } else {
                record_departure(sample);
                ++stats_.evicted;
            }
        }
    } else {
        // Nothing may be lost: a full buffer holds the receiver, and so the clients, back.
        while (held_.size() >= config_.capacity)
            if (changed_.wait_for(lock, 50ms) == std::cv_status::timeout && stopping)
                return;
        held_.push_back(std::move(sample));
    }
    changed_.notify_all();
}

bool ReplayBuffer::ready(std::size_t n) const {
    if (stats_.draining)
        return !held_.empty();
    return held_.size() >= std::max(config_.watermark, n) && !held_.empty();
}

bool ReplayBuffer::has_batch(std::size_t n) {
    std::lock_guard<std::mutex> lock(mutex_);
    return ready(n);
}

Batch ReplayBuffer::batch(std::size_t n, std::chrono::milliseconds timeout) {
    std::unique_lock<std::mutex> lock(mutex_);
    Batch out;
    if (n == 0 || !changed_.wait_for(lock, timeout, [&] { return ready(n); }))
        return out;
    const bool removing = config_.policy != BufferPolicy::Reservoir || stats_.draining;
    const std::size_t count = removing ? std::min(n, held_.size()) : n;
    out.values.resize(count * sample_cells_);
    for (std::size_t k = 0; k < count; ++k) {
        std::size_t at = 0;
        if (config_.policy == BufferPolicy::Fifo)
            at = k; // the oldest, in order; removed together below
        else
            at = std::uniform_int_distribution<std::size_t>(0, held_.size() - 1)(rng_);
        Sample &s = held_[at];
        ++s.uses;
        out.simulation_ids.push_back(s.simulation_id);
        out.time_steps.push_back(s.time_step);
        std::copy(s.values.begin(), s.values.end(), out.values.begin() + k * sample_cells_);
        if (removing && config_.policy != BufferPolicy::Fifo) {
            record_departure(s);
            std::swap(s, held_.back());
            held_.pop_back();
        }
    }
    if (config_.policy == BufferPolicy::Fifo) {
        for (std::size_t k = 0; k < count; ++k)
            record_departure(held_[k]);
        held_.erase(held_.begin(), held_.begin() + static_cast<std::ptrdiff_t>(count));
    }
    stats_.drawn += count;
    changed_.notify_all();
    return out;
}

void ReplayBuffer::record_departure(const Sample &sample) { ++stats_.uses[sample.uses]; }

void ReplayBuffer::drain() {
    std::lock_guard<std::mutex> lock(mutex_);
    stats_.draining = true;
    changed_.notify_all();
}

bool ReplayBuffer::exhausted() {
    std::lock_guard<std::mutex> lock(mutex_);
    return stats_.draining && held_.empty();
}

Batch ReplayBuffer::validation_samples() {
    std::lock_guard<std::mutex> lock(mutex_);
    Batch out;
    out.values.reserve(validation_.size() * sample_cells_);
    for (const Sample &s : validation_) {
        out.simulation_ids.push_back(s.simulation_id);
        out.time_steps.push_back(s.time_step);
        out.values.insert(out.values.end(), s.values.begin(), s.values.end());
    }
    return out;
}

BufferStats ReplayBuffer::stats() {
    std::lock_guard<std::mutex> lock(mutex_);
    BufferStats out = stats_;
    out.size = held_.size();
    out.validation_samples = validation_.size();
    for (const Sample &s : held_)
        ++out.uses[s.uses];
    return out;
}

} // namespace melissa::server
