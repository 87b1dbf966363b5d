// SPDX-License-Identifier: BSD-3-Clause
#include "replay_buffer.hpp"

#include <algorithm>
#include <cstring>
#include <numeric>
#include <sstream>
#include <stdexcept>

#include "file_output.hpp"

namespace melissa::server {

using namespace std::chrono_literals;

ReplayBuffer::ReplayBuffer(BufferConfig config) : config_(std::move(config)), rng_(config_.seed) {
    if (config_.capacity == 0)
        throw std::invalid_argument("ReplayBuffer: the capacity must be at least 1");
    if (config_.n_fields == 0)
        throw std::invalid_argument("ReplayBuffer: no field");
    if (config_.policy == BufferPolicy::Fifo && config_.pseudo_epochs > 1)
        throw std::invalid_argument("ReplayBuffer: a FIFO buffer uses each sample once "
                                    "(pseudo_epochs 1); reuse needs FIRO, Reservoir or "
                                    "BatchReservoir");
}

std::uint64_t ReplayBuffer::max_uses() const {
    if (config_.pseudo_epochs > 0)
        return config_.pseudo_epochs;
    const bool once = config_.policy == BufferPolicy::Fifo || config_.policy == BufferPolicy::Firo;
    return once ? 1 : 0;
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
        validation_[{sample.simulation_id, sample.time_step}] = std::move(sample);
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
    } else if (config_.policy == BufferPolicy::BatchReservoir) {
        while (held_.size() >= config_.capacity) {
            if (!make_room_for(sample)) {
                record_departure(sample);
                ++stats_.evicted;
                return;
            }
        }
        held_.push_back(std::move(sample));
    } else {
        // Nothing may be lost: a full buffer holds the receiver, and so the clients, back.
        while (held_.size() >= config_.capacity)
            if (changed_.wait_for(lock, 50ms) == std::cv_status::timeout && stopping)
                return;
        held_.push_back(std::move(sample));
    }
    changed_.notify_all();
}

bool ReplayBuffer::make_room_for(const Sample &arriving) {
    std::set<std::uint32_t> others;
    for (const Sample &s : held_)
        if (s.simulation_id != arriving.simulation_id)
            others.insert(s.simulation_id);
    if (others.empty())
        return false;
    const auto victim =
        *std::next(others.begin(),
                   static_cast<std::ptrdiff_t>(
                       std::uniform_int_distribution<std::size_t>(0, others.size() - 1)(rng_)));
    const auto gone = std::stable_partition(
        held_.begin(), held_.end(), [&](const Sample &s) { return s.simulation_id != victim; });
    for (auto s = gone; s != held_.end(); ++s) {
        record_departure(*s);
        ++stats_.evicted;
    }
    held_.erase(gone, held_.end());
    return true;
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
    const bool replacing = (config_.policy == BufferPolicy::Reservoir ||
                            config_.policy == BufferPolicy::BatchReservoir) &&
                           !stats_.draining;
    const std::uint64_t limit = stats_.draining ? 1 : max_uses();
    const auto take = [&](Sample &s) {
        ++s.uses;
        out.simulation_ids.push_back(s.simulation_id);
        out.time_steps.push_back(s.time_step);
        out.values.insert(out.values.end(), s.values.begin(), s.values.end());
    };
    const auto used_up = [&](const Sample &s) { return limit > 0 && s.uses >= limit; };
    const auto leave = [&](auto first) {
        const auto gone =
            std::stable_partition(first, held_.end(), [&](const Sample &s) { return !used_up(s); });
        for (auto s = gone; s != held_.end(); ++s)
            record_departure(*s);
        held_.erase(gone, held_.end());
    };
    out.values.reserve(std::min(n, held_.size()) * sample_cells_);
    if (replacing) {
        // With replacement: a sample used up leaves at once, so that it is not drawn again.
        for (std::size_t k = 0; k < n && !held_.empty(); ++k) {
            const std::size_t at =
                std::uniform_int_distribution<std::size_t>(0, held_.size() - 1)(rng_);
            take(held_[at]);
            if (used_up(held_[at])) {
                record_departure(held_[at]);
                std::swap(held_[at], held_.back());
                held_.pop_back();
            }
        }
    } else if (config_.policy == BufferPolicy::Fifo) {
        const std::size_t count = std::min(n, held_.size());
        for (std::size_t k = 0; k < count; ++k)
            take(held_[k]);
        // Each used once: the batch leaves, the rest keeps its order.
        for (std::size_t k = 0; k < count; ++k)
            record_departure(held_[k]);
        held_.erase(held_.begin(), held_.begin() + static_cast<std::ptrdiff_t>(count));
    } else {
        // Distinct samples: each one drawn moves to the tail, out of reach of the next draws.
        std::size_t end = held_.size();
        for (std::size_t k = 0; k < n && end > 0; ++k, --end) {
            const std::size_t at = std::uniform_int_distribution<std::size_t>(0, end - 1)(rng_);
            std::swap(held_[at], held_[end - 1]);
            take(held_[end - 1]);
        }
        leave(held_.begin() + static_cast<std::ptrdiff_t>(end));
    }
    stats_.drawn += out.size();
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
    for (const auto &[key, s] : validation_) {
        out.simulation_ids.push_back(s.simulation_id);
        out.time_steps.push_back(s.time_step);
        out.values.insert(out.values.end(), s.values.begin(), s.values.end());
    }
    return out;
}

BufferStats ReplayBuffer::stats() {
    std::lock_guard<std::mutex> lock(mutex_);
    return stats_locked();
}

BufferStats ReplayBuffer::stats_locked() const {
    BufferStats out = stats_;
    out.size = held_.size();
    out.validation_samples = validation_.size();
    for (const Sample &s : held_)
        ++out.uses[s.uses];
    return out;
}

namespace {

constexpr char kStateMagic[8] = {'M', 'L', 'S', 'A', 'B', 'U', 'F', 'R'};

const char *policy_name(BufferPolicy policy) {
    switch (policy) {
    case BufferPolicy::Fifo:
        return "FIFO";
    case BufferPolicy::Firo:
        return "FIRO";
    case BufferPolicy::Reservoir:
        return "Reservoir";
    case BufferPolicy::BatchReservoir:
        return "BatchReservoir";
    }
    return "?";
}

void write_sample(FileOutput &w, const Sample &s) {
    w.u32(s.simulation_id)
        .u32(s.time_step)
        .u64(s.uses)
        .u64(s.values.size())
        .words(s.values.data(), s.values.size(), 4);
}

/// `n` entries of at least `entry_bytes` each, refused if they cannot all be in what is left: a
/// wrong count must not become an allocation.
std::uint64_t checked_count(wire::Reader &r, std::uint64_t n, std::size_t entry_bytes) {
    if (!fits(r, n, entry_bytes))
        throw std::invalid_argument("buffer state malformed: it counts more entries than it "
                                    "holds");
    return n;
}

std::vector<float> read_floats(wire::Reader &r) {
    std::vector<float> values(checked_count(r, r.u64(), 4));
    r.words(values.data(), values.size(), 4);
    return values;
}

std::vector<Sample> read_samples(wire::Reader &r) {
    std::vector<Sample> samples(checked_count(r, r.u64(), 24));
    for (Sample &s : samples) {
        s.simulation_id = r.u32();
        s.time_step = r.u32();
        s.uses = r.u64();
        s.values = read_floats(r);
    }
    return samples;
}

} // namespace

ReplayBuffer::Written ReplayBuffer::write_state(int fd, std::uint64_t tag) {
    std::lock_guard<std::mutex> lock(mutex_);
    FileOutput w(fd);
    for (char c : kStateMagic)
        w.u8(static_cast<std::uint8_t>(c));
    w.u32(kBufferStateVersion).u64(tag);
    w.u32(static_cast<std::uint32_t>(config_.policy))
        .u32(static_cast<std::uint32_t>(config_.n_fields))
        .u64(sample_cells_);
    std::ostringstream rng;
    rng << rng_;
    w.str(rng.str());
    w.u64(stats_.received).u64(stats_.evicted).u64(stats_.drawn);
    w.u32(static_cast<std::uint32_t>(stats_.uses.size()));
    for (const auto &[uses, samples] : stats_.uses)
        w.u64(uses).u64(samples);
    w.u64(held_.size());
    for (const Sample &s : held_)
        write_sample(w, s);
    w.u64(validation_.size());
    for (const auto &[key, s] : validation_)
        write_sample(w, s);
    w.u64(partial_.size());
    for (const auto &[key, fields] : partial_) {
        w.u32(key.first).u32(key.second).u32(static_cast<std::uint32_t>(fields.size()));
        for (const auto &[field, values] : fields)
            w.u32(field).u64(values.size()).words(values.data(), values.size(), 4);
    }
    w.u64(w.checksum());
    w.flush();
    return {w.size(), stats_locked()};
}

std::uint64_t ReplayBuffer::load_state(const void *data, std::size_t size,
                                       std::optional<std::uint64_t> tag) {
    const auto *bytes = static_cast<const std::byte *>(data);
    if (size < sizeof(kStateMagic) || std::memcmp(bytes, kStateMagic, sizeof(kStateMagic)) != 0)
        throw std::invalid_argument("not a melissa replay buffer state");
    if (size < sizeof(kStateMagic) + 4 + kChecksumSize)
        throw std::invalid_argument("buffer state truncated: " + std::to_string(size) + " bytes");
    if (!checksum_holds(bytes, size))
        throw std::invalid_argument("buffer state damaged or truncated: its checksum does not "
                                    "match its contents");
    wire::Reader r(bytes + sizeof(kStateMagic), size - sizeof(kStateMagic) - kChecksumSize);
    std::lock_guard<std::mutex> lock(mutex_);
    if (stats_.received > 0 || !held_.empty() || !validation_.empty() || !partial_.empty())
        throw std::invalid_argument("load_state: this buffer has received samples already: "
                                    "a state is taken up by a fresh buffer only");
    try {
        const std::uint32_t version = r.u32();
        if (version != kBufferStateVersion)
            throw std::invalid_argument("buffer state of format " + std::to_string(version) +
                                        ", this melissa reads " +
                                        std::to_string(kBufferStateVersion) +
                                        ": finish the study with the melissa that "
                                        "wrote it, or run it again");
        const std::uint64_t written_tag = r.u64();
        if (tag && *tag != written_tag)
            throw std::invalid_argument("buffer state tagged " + std::to_string(written_tag) +
                                        ", not " + std::to_string(*tag));
        const auto policy = static_cast<BufferPolicy>(r.u32());
        const std::uint32_t n_fields = r.u32();
        if (policy != config_.policy)
            throw std::invalid_argument(std::string("buffer state of a '") + policy_name(policy) +
                                        "' buffer, this one is '" + policy_name(config_.policy) +
                                        "' (dl_config.buffer)");
        if (n_fields != config_.n_fields)
            throw std::invalid_argument("buffer state of samples of " + std::to_string(n_fields) +
                                        " fields, this buffer's have " +
                                        std::to_string(config_.n_fields));
        const std::uint64_t cells = r.u64();
        std::mt19937_64 rng;
        std::istringstream(r.str()) >> rng;
        BufferStats stats;
        stats.received = r.u64();
        stats.evicted = r.u64();
        stats.drawn = r.u64();
        for (std::uint64_t k = checked_count(r, r.u32(), 16); k > 0; --k) {
            const std::uint64_t uses = r.u64();
            stats.uses[uses] = r.u64();
        }
        std::vector<Sample> held = read_samples(r);
        if (held.size() > config_.capacity)
            throw std::invalid_argument("buffer state of " + std::to_string(held.size()) +
                                        " samples, beyond this "
                                        "buffer's capacity of " +
                                        std::to_string(config_.capacity) +
                                        " (dl_config.buffer_size per server rank)");
        decltype(validation_) validation;
        for (Sample &s : read_samples(r))
            validation[{s.simulation_id, s.time_step}] = std::move(s);
        decltype(partial_) partial;
        for (std::uint64_t k = checked_count(r, r.u64(), 12); k > 0; --k) {
            const std::uint32_t simulation = r.u32(), step = r.u32();
            auto &fields = partial[{simulation, step}];
            for (std::uint32_t f = static_cast<std::uint32_t>(checked_count(r, r.u32(), 12)); f > 0;
                 --f) {
                const std::uint32_t field = r.u32();
                fields[field] = read_floats(r);
            }
        }
        if (!r.done())
            throw std::invalid_argument("buffer state malformed: bytes beyond its contents");
        sample_cells_ = static_cast<std::size_t>(cells);
        rng_ = rng;
        stats_ = std::move(stats);
        held_ = std::move(held);
        validation_ = std::move(validation);
        partial_ = std::move(partial);
        changed_.notify_all();
        return written_tag;
    } catch (const wire::MalformedMessage &) {
        throw std::invalid_argument("buffer state malformed: it ends early");
    }
}

} // namespace melissa::server
