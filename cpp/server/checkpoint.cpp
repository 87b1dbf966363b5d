// SPDX-License-Identifier: BSD-3-Clause
#include "checkpoint.hpp"

#include "file_output.hpp"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <sstream>
#include <stdexcept>
#include <system_error>

namespace melissa::server {
namespace {

constexpr char kMagic[8] = {'M', 'L', 'S', 'A', 'C', 'K', 'P', 'T'};
constexpr std::size_t kSizeAt = sizeof(kMagic) + 4; // after the magic and the version
constexpr std::size_t kBodyAt = kSizeAt + 8;

std::string quoted(const std::vector<std::string> &names) {
    std::string out;
    for (const auto &name : names)
        out += (out.empty() ? "'" : ", '") + name + "'";
    return out.empty() ? "none" : out;
}

/// A checkpoint whose checksum holds but whose contents do not: written by something else than
/// melissa, or by a melissa with a bug.
[[noreturn]] void malformed(const std::string &what) {
    throw CheckpointError("checkpoint malformed: " + what);
}

/// `n`, the count of entries of at least `entry_bytes` each that `r` holds next, refused if
/// they cannot all be in what is left: a wrong count must not become an allocation.
std::uint64_t count(wire::Reader &r, std::uint64_t n, std::size_t entry_bytes) {
    if (!fits(r, n, entry_bytes))
        malformed("it counts more entries than it holds");
    return n;
}

void write_values(FileOutput &w, const std::vector<double> &values) {
    w.u32(static_cast<std::uint32_t>(values.size())).words(values.data(), values.size());
}

std::vector<double> read_values(wire::Reader &r) {
    std::vector<double> values(count(r, r.u32(), 8));
    r.words(values.data(), values.size());
    return values;
}

void write_spec(FileOutput &w, const StatisticsSpec &spec) {
    w.u32(static_cast<std::uint32_t>(spec.moments_order)).u8(spec.extrema ? 1 : 0);
    write_values(w, spec.thresholds);
    write_values(w, spec.probabilities);
    w.u64(spec.sobol_params);
    w.u32(static_cast<std::uint32_t>(spec.covariance.size()));
    for (const CovariancePair &pair : spec.covariance)
        w.u32(pair.field).u32(pair.other).u8(pair.parameter ? 1 : 0);
}

StatisticsSpec read_spec(wire::Reader &r) {
    StatisticsSpec spec;
    spec.moments_order = static_cast<int>(r.u32());
    spec.extrema = r.u8() != 0;
    spec.thresholds = read_values(r);
    spec.probabilities = read_values(r);
    spec.sobol_params = r.u64();
    spec.covariance.resize(count(r, r.u32(), 9));
    for (CovariancePair &pair : spec.covariance) {
        pair.field = r.u32();
        pair.other = r.u32();
        pair.parameter = r.u8() != 0;
    }
    return spec;
}

bool same(const StatisticsSpec &a, const StatisticsSpec &b) {
    return a.moments_order == b.moments_order && a.extrema == b.extrema &&
           a.thresholds == b.thresholds && a.probabilities == b.probabilities &&
           a.sobol_params == b.sobol_params && a.covariance == b.covariance;
}

std::string describe(const StatisticsSpec &spec) {
    std::ostringstream out;
    out << "moments to order " << spec.moments_order << (spec.extrema ? ", extrema" : "");
    auto list = [&](const char *what, const std::vector<double> &values) {
        out << ", " << what << " [";
        for (std::size_t i = 0; i < values.size(); ++i)
            out << (i ? ", " : "") << values[i];
        out << "]";
    };
    list("thresholds", spec.thresholds);
    list("quantiles", spec.probabilities);
    out << ", Sobol indices of " << spec.sobol_params << " parameters";
    if (!spec.covariance.empty()) {
        out << ", covariance of [";
        for (std::size_t i = 0; i < spec.covariance.size(); ++i) {
            const CovariancePair &pair = spec.covariance[i];
            out << (i ? ", " : "") << "field " << pair.field << " with "
                << (pair.parameter ? "parameter " : "field ") << pair.other;
        }
        out << "]";
    }
    return out.str();
}

/// A checkpoint whose preamble (magic, version, size) and checksum are checked: what follows.
struct Opened {
    std::uint32_t version;
    std::uint64_t size;
    wire::Reader body;
};

Opened open(const void *data, std::size_t size) {
    const auto *bytes = static_cast<const std::byte *>(data);
    if (size < sizeof(kMagic) || std::memcmp(bytes, kMagic, sizeof(kMagic)) != 0)
        throw CheckpointError("not a melissa checkpoint");
    if (size < kBodyAt + kChecksumSize)
        throw CheckpointError("checkpoint truncated: " + std::to_string(size) + " bytes");
    wire::Reader preamble(bytes + sizeof(kMagic), kBodyAt - sizeof(kMagic));
    const std::uint32_t version = preamble.u32();
    if (version > kCheckpointVersion)
        throw CheckpointError("checkpoint written by a newer melissa (format " +
                              std::to_string(version) + ", this one reads up to " +
                              std::to_string(kCheckpointVersion) + ")");
    if (version < kCheckpointVersion)
        throw CheckpointError("checkpoint written by an older melissa (format " +
                              std::to_string(version) + ", this one reads format " +
                              std::to_string(kCheckpointVersion) +
                              "): finish the study with that melissa, or run it again");
    const std::uint64_t expected = preamble.u64();
    if (size < expected)
        throw CheckpointError("checkpoint truncated: " + std::to_string(size) + " of its " +
                              std::to_string(expected) + " bytes");
    if (size > expected)
        throw CheckpointError("checkpoint followed by " + std::to_string(size - expected) +
                              " bytes that are not its own");
    if (!checksum_holds(bytes, size))
        throw CheckpointError("checkpoint damaged: its checksum does not match its contents");
    return {version, size, wire::Reader(bytes + kBodyAt, size - kBodyAt - kChecksumSize)};
}

/// Reads what a checkpoint says of itself, up to the finished simulations.
CheckpointSummary read_summary(Opened &opened) {
    wire::Reader &r = opened.body;
    CheckpointSummary s;
    s.version = opened.version;
    s.size = opened.size;
    s.rank = r.u32();
    s.n_ranks = r.u32();
    s.routing = static_cast<wire::Routing>(r.u32());
    s.field_names.resize(count(r, r.u32(), 4));
    for (auto &name : s.field_names)
        name = r.str();
    s.finished.resize(count(r, r.u32(), 4));
    for (auto &simulation : s.finished)
        simulation = r.u32();
    return s;
}

/// The rest of the delivery state, after the finished simulations.
void read_delivery(wire::Reader &r, DeliveryState &delivery) {
    for (std::uint64_t n = count(r, r.u32(), 12); n > 0; --n) {
        const std::uint32_t field = r.u32();
        delivery.field_sizes[field] = r.u64();
    }
    for (std::uint64_t n = count(r, r.u32(), 12); n > 0; --n) {
        const std::uint32_t simulation = r.u32();
        const std::uint32_t field = r.u32();
        std::vector<std::uint32_t> &steps = delivery.delivered[{simulation, field}];
        steps.resize(count(r, r.u32(), 4));
        for (auto &step : steps)
            step = r.u32();
    }
}

/// A state array's type as a checkpoint encodes it.
std::uint8_t type_code(stats::StateArray::Type type) {
    switch (type) {
    case stats::StateArray::Type::Float64:
        return 0;
    case stats::StateArray::Type::UInt64:
        return 1;
    case stats::StateArray::Type::Float32:
        return 2;
    }
    throw std::logic_error("checkpoint: a state array of an unknown type");
}

void write_accumulators(FileOutput &w, FieldStatistics &statistics) {
    std::uint64_t n = 0;
    statistics.visit([&](std::uint32_t, std::uint32_t, Accumulators &) { ++n; });
    w.u64(n);
    statistics.visit([&](std::uint32_t field, std::uint32_t step, Accumulators &a) {
        w.u32(field).u32(step).u64(a.offset).u64(a.cells);
        const auto kernels = kernel_states(a);
        w.u32(static_cast<std::uint32_t>(kernels.size()));
        for (const auto &[kernel, arrays] : kernels) {
            w.str(kernel).u32(static_cast<std::uint32_t>(arrays.size()));
            for (const auto &array : arrays) {
                w.str(array.name).u8(type_code(array.type));
                w.u32(static_cast<std::uint32_t>(array.shape.size()));
                std::size_t values = 1;
                for (std::size_t d : array.shape) {
                    w.u64(d);
                    values *= d;
                }
                w.words(array.data, values, array.value_bytes());
            }
        }
    });
}

/// Reads one (field, time step)'s kernels into `a`, fresh accumulators of the same statistics
/// and cells, whose arrays the checkpoint's must match in name, type and shape: what is read
/// into an array is what it holds.
void read_kernels(wire::Reader &r, Accumulators &a) {
    auto expect = [](bool same) {
        if (!same)
            malformed("its accumulators are not laid out as the statistics it names");
    };
    auto kernels = kernel_states(a);
    expect(r.u32() == kernels.size());
    for (auto &[kernel, arrays] : kernels) {
        expect(r.str() == kernel && r.u32() == arrays.size());
        for (auto &array : arrays) {
            expect(r.str() == array.name && r.u8() == type_code(array.type) &&
                   r.u32() == array.shape.size());
            std::size_t values = 1;
            for (std::size_t d : array.shape) {
                expect(r.u64() == d);
                values *= d;
            }
            r.words(array.data, values, array.value_bytes());
        }
    }
}

void write_groups(FileOutput &w, FieldStatistics &statistics) {
    std::uint64_t n = 0;
    statistics.visit_groups(
        [&](const FieldStatistics::GroupKey &, const FieldStatistics::Group &) { ++n; });
    w.u64(n);
    statistics.visit_groups(
        [&](const FieldStatistics::GroupKey &key, const FieldStatistics::Group &g) {
            w.u32(std::get<0>(key)).u32(std::get<1>(key)).u32(std::get<2>(key));
            w.u32(static_cast<std::uint32_t>(g.arrived.size()));
            for (bool arrived : g.arrived)
                w.u8(arrived ? 1 : 0);
            w.u64(g.values.size()).words(g.values.data(), g.values.size());
        });
}

FieldStatistics::GroupMap read_groups(wire::Reader &r, const StatisticsSpec &spec,
                                      const FieldStatistics::AccumulatorMap &accumulators) {
    FieldStatistics::GroupMap groups;
    for (std::uint64_t n = count(r, r.u64(), 24); n > 0; --n) {
        const std::uint32_t field = r.u32(), step = r.u32(), group = r.u32();
        const auto found = accumulators.find({field, step});
        if (found == accumulators.end())
            malformed("it holds a Sobol group without accumulators");
        FieldStatistics::Group g;
        g.arrived.resize(count(r, r.u32(), 1));
        for (std::size_t m = 0; m < g.arrived.size(); ++m) {
            g.arrived[m] = r.u8() != 0;
            g.n_arrived += g.arrived[m] ? 1 : 0;
        }
        g.values.resize(count(r, r.u64(), 8));
        if (g.arrived.size() != spec.sobol_params + 2 ||
            g.values.size() != g.arrived.size() * found->second.cells)
            malformed("a Sobol group's size is not its statistics'");
        r.words(g.values.data(), g.values.size());
        if (!groups.emplace(std::make_tuple(field, step, group), std::move(g)).second)
            malformed("it holds a Sobol group twice");
    }
    return groups;
}

void write_halves(FileOutput &w, FieldStatistics &statistics) {
    std::uint64_t n = 0;
    statistics.visit_halves(
        [&](const FieldStatistics::HalfKey &, const FieldStatistics::Half &) { ++n; });
    w.u64(n);
    statistics.visit_halves(
        [&](const FieldStatistics::HalfKey &key, const FieldStatistics::Half &half) {
            w.u32(std::get<0>(key)).u32(std::get<1>(key)).u32(std::get<2>(key));
            w.u8(half.first ? 1 : 0).u64(half.offset);
            w.u64(half.values.size()).words(half.values.data(), half.values.size());
        });
}

/// The halves of pairs of fields in flight, each of the cells of its field's accumulators at its
/// time step: those its partner will be paired with.
FieldStatistics::HalfMap read_halves(wire::Reader &r, const StatisticsSpec &spec,
                                     const FieldStatistics::AccumulatorMap &accumulators) {
    FieldStatistics::HalfMap halves;
    for (std::uint64_t n = count(r, r.u64(), 29); n > 0; --n) {
        const std::uint32_t pair = r.u32(), step = r.u32(), simulation = r.u32();
        FieldStatistics::Half half;
        half.first = r.u8() != 0;
        half.offset = r.u64();
        half.values.resize(count(r, r.u64(), 8));
        if (pair >= spec.covariance.size() || spec.covariance[pair].parameter)
            malformed("it holds a covariance half of no pair of two fields");
        const CovariancePair &p = spec.covariance[pair];
        const auto found = accumulators.find({half.first ? p.field : p.other, step});
        if (found == accumulators.end())
            malformed("it holds a covariance half without accumulators");
        if (found->second.offset != half.offset || found->second.cells != half.values.size())
            malformed("a covariance half's cells are not its field's");
        r.words(half.values.data(), half.values.size());
        if (!halves.emplace(std::make_tuple(pair, step, simulation), std::move(half)).second)
            malformed("it holds a covariance half twice");
    }
    return halves;
}

void check_study(const CheckpointSummary &s, const ReceiverConfig &config) {
    if (s.field_names != config.field_names)
        throw CheckpointError("checkpoint of another study: its fields are " +
                              quoted(s.field_names) + ", this study's " +
                              quoted(config.field_names));
    if (s.rank != config.rank || s.n_ranks != config.n_ranks)
        throw CheckpointError("checkpoint of server rank " + std::to_string(s.rank) + " of " +
                              std::to_string(s.n_ranks) + "; this is rank " +
                              std::to_string(config.rank) + " of " +
                              std::to_string(config.n_ranks));
    if (s.routing != config.routing)
        throw CheckpointError("checkpoint of a server that routes otherwise (routing " +
                              std::to_string(static_cast<std::uint32_t>(s.routing)) +
                              ", this one " +
                              std::to_string(static_cast<std::uint32_t>(config.routing)) + ")");
}

/// Whether `field` is one of the study's and [offset, offset + cells) what this rank owns of
/// it, by the size the checkpoint or the study gives it: deliveries to come hold what the rank
/// owns, and accumulators of other cells would be read past their end.
bool owns(const Receiver &receiver, const DeliveryState &delivery, std::uint32_t field,
          std::uint64_t offset, std::uint64_t cells) {
    auto size = delivery.field_sizes.find(field);
    const auto declared = receiver.field_sizes();
    if (size == delivery.field_sizes.end() && (size = declared.find(field)) == declared.end())
        return false;
    return field < receiver.config().field_names.size() &&
           receiver.owned_cells(size->second) == std::make_pair(offset, offset + cells);
}

/// Everything before the checksum; `size` is the whole checkpoint's, checksum included.
void write_contents(FileOutput &w, std::uint64_t size, const ReceiverConfig &config,
                    const DeliveryState &delivery, FieldStatistics &statistics) {
    for (char c : kMagic)
        w.u8(static_cast<std::uint8_t>(c));
    w.u32(kCheckpointVersion).u64(size);
    w.u32(config.rank).u32(config.n_ranks).u32(static_cast<std::uint32_t>(config.routing));
    w.u32(static_cast<std::uint32_t>(config.field_names.size()));
    for (const auto &name : config.field_names)
        w.str(name);
    w.u32(static_cast<std::uint32_t>(delivery.finished.size()));
    for (std::uint32_t simulation : delivery.finished)
        w.u32(simulation);
    w.u32(static_cast<std::uint32_t>(delivery.field_sizes.size()));
    for (const auto &[field, size] : delivery.field_sizes)
        w.u32(field).u64(size);
    w.u32(static_cast<std::uint32_t>(delivery.delivered.size()));
    for (const auto &[key, steps] : delivery.delivered) {
        w.u32(key.first).u32(key.second).u32(static_cast<std::uint32_t>(steps.size()));
        for (std::uint32_t step : steps)
            w.u32(step);
    }
    write_spec(w, statistics.spec());
    write_accumulators(w, statistics);
    write_groups(w, statistics);
    write_halves(w, statistics);
}

} // namespace

CheckpointSummary write_checkpoint(Receiver &receiver, FieldStatistics &statistics, int fd) {
    const auto paused = receiver.pause();
    const DeliveryState delivery = receiver.delivery_state();
    const ReceiverConfig &config = receiver.config();
    // The preamble gives the size: a first pass counts it, over the same state, which the pause
    // holds still.
    FileOutput counted(-1);
    write_contents(counted, 0, config, delivery, statistics);
    const std::uint64_t size = counted.size() + kChecksumSize;
    FileOutput out(fd);
    write_contents(out, size, config, delivery, statistics);
    out.u64(out.checksum());
    out.flush();
    if (out.size() != size)
        throw std::logic_error("checkpoint: its state changed while it was written");
    return {kCheckpointVersion, config.rank, config.n_ranks, config.routing, config.field_names,
            delivery.finished,  size};
}

void restore_checkpoint(Receiver &receiver, FieldStatistics &statistics, const void *data,
                        std::size_t size) {
    const auto paused = receiver.pause();
    try {
        Opened opened = open(data, size);
        wire::Reader &r = opened.body;
        const CheckpointSummary summary = read_summary(opened);
        check_study(summary, receiver.config());
        DeliveryState delivery;
        delivery.finished = summary.finished;
        read_delivery(r, delivery);
        const StatisticsSpec spec = read_spec(r);
        if (!same(spec, statistics.spec()))
            throw CheckpointError("checkpoint of other statistics (" + describe(spec) +
                                  ") than this server's (" + describe(statistics.spec()) + ")");

        // Everything is read into objects of its own first: a checkpoint refused half-way
        // leaves the receiver and the statistics as they were.
        FieldStatistics::AccumulatorMap accumulators;
        for (std::uint64_t n = count(r, r.u64(), 28); n > 0; --n) {
            const std::uint32_t field = r.u32(), step = r.u32();
            const std::uint64_t offset = r.u64(), cells = r.u64();
            Accumulators none = make_accumulators(spec, field, 0, 0);
            const bool stateless = kernel_states(none).empty();
            if (!owns(receiver, delivery, field, offset, cells))
                throw CheckpointError("checkpoint holds accumulators of field " +
                                      std::to_string(field) + " at time step " +
                                      std::to_string(step) +
                                      " that are not of the cells this rank owns");
            if (accumulators.count({field, step}))
                malformed("it holds accumulators twice");
            // Each kernel holds at least a value per cell: cells beyond what the checkpoint
            // holds are not allocated.
            Accumulators a =
                make_accumulators(spec, field, offset, stateless ? cells : count(r, cells, 8));
            read_kernels(r, a);
            accumulators.emplace(std::make_pair(field, step), std::move(a));
        }
        FieldStatistics::GroupMap groups = read_groups(r, spec, accumulators);
        FieldStatistics::HalfMap halves = read_halves(r, spec, accumulators);
        if (!r.done())
            malformed("bytes are left after its contents");
        try {
            receiver.restore(delivery);
        } catch (const std::invalid_argument &e) {
            throw CheckpointError(std::string("checkpoint does not fit this server: ") + e.what());
        }
        statistics.replace(std::move(accumulators), std::move(groups), std::move(halves));
    } catch (const wire::MalformedMessage &) {
        malformed("it ends before its contents do");
    }
}

CheckpointSummary checkpoint_summary(const void *data, std::size_t size) {
    try {
        Opened opened = open(data, size);
        return read_summary(opened);
    } catch (const wire::MalformedMessage &) {
        malformed("it ends before its contents do");
    }
}

} // namespace melissa::server
