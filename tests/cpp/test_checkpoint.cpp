// SPDX-License-Identifier: BSD-3-Clause
//
// A statistics server rank's checkpoint: taken up by fresh objects, it gives them the state of
// the ones it was taken from, to the byte; each way it can be refused is, with its reason, and
// a refused checkpoint leaves the receiver and the statistics as they were. And what the
// statistics make of pairs of variables whose covariance they keep, which checkpoints hold
// half-arrived.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <stdexcept>
#include <system_error>
#include <type_traits>

#include "receiver_fixture.hpp"
#include "server/checkpoint.hpp"

namespace server = melissa::server;
namespace transport = melissa::transport;
namespace wire = melissa::wire;
using namespace melissa::testing;

namespace {

using Bytes = std::vector<std::byte>;

/// Every statistic: moments, extrema, thresholds, quantiles, and Sobol indices of one parameter
/// (groups of three simulations).
server::StatisticsSpec every_statistic() { return {4, true, {0.5, 2.0}, {0.1, 0.5, 0.9}, 1}; }

/// A receiver feeding statistics.
struct StatisticsServer {
    std::shared_ptr<server::FieldStatistics> statistics;
    server::Receiver receiver;

    explicit StatisticsServer(server::StatisticsSpec spec = every_statistic(),
                              server::ReceiverConfig config = test_config())
        : statistics(std::make_shared<server::FieldStatistics>(std::move(spec))),
          receiver(std::move(config), statistics) {}

    /// The checkpoint write_checkpoint writes to a file, read back.
    Bytes checkpoint() {
        const std::unique_ptr<FILE, int (*)(FILE *)> file(std::tmpfile(), &std::fclose);
        const int fd = fileno(file.get());
        const server::CheckpointSummary written =
            server::write_checkpoint(receiver, *statistics, fd);
        Bytes bytes(written.size);
        EXPECT_EQ(pread(fd, bytes.data(), bytes.size(), 0), static_cast<ssize_t>(written.size));
        EXPECT_EQ(lseek(fd, 0, SEEK_END), static_cast<off_t>(written.size))
            << "the file holds more than the checkpoint says it does";
        return bytes;
    }

    /// restore_checkpoint's refusal of `bytes`, or "" if it takes them up.
    std::string refusal(const Bytes &bytes) {
        try {
            server::restore_checkpoint(receiver, *statistics, bytes.data(), bytes.size());
        } catch (const server::CheckpointError &e) {
            return e.what();
        }
        return "";
    }
};

/// Simulations 0 and 1 whole (END), 2 without its END, 3 and 4 of the second Sobol group
/// (still in flight): fields u (10 cells) and v (3), two time steps each.
void stream(const server::Receiver &receiver) {
    auto t = transport::make_zmq_transport();
    auto sender = connect(*t, receiver);
    for (std::uint32_t simulation = 0; simulation < 5; ++simulation)
        for (std::uint32_t field = 0; field < 2; ++field) {
            const std::uint64_t size = field == 0 ? 10 : 3;
            wire::Header h;
            h.token = kToken;
            h.simulation_id = simulation;
            h.field_id = field;
            h.n_client_ranks = 1;
            h.field_size = size;
            h.count = size;
            std::vector<double> values(size);
            for (h.time_step = 0; h.time_step < 2; ++h.time_step) {
                for (std::uint64_t c = 0; c < size; ++c)
                    values[c] = std::sin(1.0 + simulation * 0.7 + field * 0.3 + h.time_step) * c;
                sender->send(wire::encode(h), values.data(), size * sizeof(double));
            }
            if (simulation < 2) {
                h.kind = wire::Kind::End;
                h.count = 2;
                h.offset = 2;
                sender->send(wire::encode(h), nullptr, 0);
            }
        }
    settle(receiver, *sender);
}

std::vector<double> mean(server::FieldStatistics &statistics, std::uint32_t field,
                         std::uint32_t step) {
    std::vector<double> out;
    statistics.visit([&](std::uint32_t f, std::uint32_t s, server::Accumulators &a) {
        if (f == field && s == step) {
            out.resize(a.cells);
            a.moments->mean(out.data());
        }
    });
    return out;
}

/// The moments' shift of one (field, time step).
std::vector<float> moments_shift(server::FieldStatistics &statistics, std::uint32_t field,
                                 std::uint32_t step) {
    std::vector<float> out;
    statistics.visit([&](std::uint32_t f, std::uint32_t s, server::Accumulators &a) {
        if (f == field && s == step) {
            const auto *shift = static_cast<const float *>(a.moments->state()[1].data);
            out.assign(shift, shift + a.cells);
        }
    });
    return out;
}

std::uint64_t fnv1a(const std::byte *data, std::size_t size) {
    std::uint64_t hash = 0xcbf29ce484222325ull;
    for (std::size_t i = 0; i < size; ++i)
        hash = (hash ^ static_cast<std::uint8_t>(data[i])) * 0x100000001b3ull;
    return hash;
}

/// A checkpoint of the test study (one rank, routed by cells, every statistic, fields u of 10
/// cells and v of `v_cells`), whose contents after the statistics `body` writes: what another
/// program, or a melissa with a bug, might write. Its size and checksum are right; the statistics
/// have `pairs` for covariance, if any.
Bytes forged(const std::function<void(wire::Writer &)> &body,
             const std::vector<server::CovariancePair> *pairs = nullptr,
             std::uint64_t v_cells = 3) {
    wire::Writer w;
    for (char c : std::string("MLSACKPT"))
        w.u8(static_cast<std::uint8_t>(c));
    w.u32(server::kCheckpointVersion).u64(0).u32(0).u32(1).u32(0); // version, size, rank, ranks,
                                                                   // cells
    w.u32(2).str("u").str("v").u32(0);                             // fields, none finished
    w.u32(2).u32(0).u64(10).u32(1).u64(v_cells).u32(0);            // field sizes, nothing delivered
    const double thresholds[] = {0.5, 2.0}, probabilities[] = {0.1, 0.5, 0.9};
    w.u32(4).u8(1).u32(2).words(thresholds, 2).u32(3).words(probabilities, 3).u64(1);
    w.u32(pairs ? static_cast<std::uint32_t>(pairs->size()) : 0);
    if (pairs)
        for (const auto &pair : *pairs)
            w.u32(pair.field).u32(pair.other).u8(pair.parameter ? 1 : 0);
    body(w);
    Bytes bytes = w.take();
    const std::uint64_t size = bytes.size() + 8;
    std::memcpy(bytes.data() + 12, &size, 8);
    const std::uint64_t checksum = fnv1a(bytes.data(), bytes.size());
    const auto *end = reinterpret_cast<const std::byte *>(&checksum);
    bytes.insert(bytes.end(), end, end + 8);
    return bytes;
}

/// A state array's type as checkpoint.hpp lists the codes.
std::uint8_t type_code(melissa::stats::StateArray::Type type) {
    switch (type) {
    case melissa::stats::StateArray::Type::Float64:
        return 0;
    case melissa::stats::StateArray::Type::UInt64:
        return 1;
    case melissa::stats::StateArray::Type::Float32:
        return 2;
    }
    return 255;
}

/// One (field, time step)'s accumulators of `spec`, as a checkpoint holds them; the moments
/// named `moments_as` (a forgery's misnaming).
void write_accumulator(wire::Writer &w, const server::StatisticsSpec &spec, std::uint32_t field,
                       std::uint32_t step, std::uint64_t cells,
                       const char *moments_as = "moments") {
    server::Accumulators a = server::make_accumulators(spec, field, 0, cells);
    w.u32(field).u32(step).u64(0).u64(cells);
    auto kernels = server::kernel_states(a);
    w.u32(static_cast<std::uint32_t>(kernels.size()));
    for (auto &[kernel, arrays] : kernels) {
        w.str(kernel == "moments" ? moments_as : kernel);
        w.u32(static_cast<std::uint32_t>(arrays.size()));
        for (auto &array : arrays) {
            w.str(array.name).u8(type_code(array.type));
            w.u32(static_cast<std::uint32_t>(array.shape.size()));
            std::size_t n = 1;
            for (auto d : array.shape) {
                w.u64(d);
                n *= d;
            }
            w.words(array.data, n, array.value_bytes());
        }
    }
}

} // namespace

TEST(Checkpoint, TakenUpByFreshObjectsGivesThemTheSameState) {
    StatisticsServer original;
    stream(original.receiver);
    ASSERT_GT(original.statistics->pending_groups(), 0u) << "a Sobol group should be in flight";
    const Bytes bytes = original.checkpoint();

    StatisticsServer fresh;
    ASSERT_EQ(fresh.refusal(bytes), "");
    EXPECT_EQ(fresh.checkpoint(), bytes) << "the state taken up differs from the one saved";
    EXPECT_EQ(fresh.receiver.finished_simulations(), (std::vector<std::uint32_t>{0, 1}));
    EXPECT_EQ(fresh.receiver.field_sizes(), original.receiver.field_sizes());
    EXPECT_EQ(fresh.statistics->pending_groups(), original.statistics->pending_groups());
    EXPECT_EQ(mean(*fresh.statistics, 0, 1), mean(*original.statistics, 0, 1));
    EXPECT_EQ(mean(*fresh.statistics, 0, 1).size(), 10u);

    // What it held is not counted again.
    auto t = transport::make_zmq_transport();
    auto sender = connect(*t, fresh.receiver);
    std::vector<double> values(10, 1.0);
    wire::Header h;
    h.token = kToken;
    h.n_client_ranks = 1;
    h.field_size = 10;
    h.count = 10;
    h.simulation_id = 2;
    sender->send(wire::encode(h), values.data(), 80);
    h.simulation_id = 0;
    sender->send(wire::encode(h), values.data(), 80);
    settle(fresh.receiver, *sender);
    EXPECT_EQ(dropped(fresh.receiver, "time step already received"), 1u);
    EXPECT_EQ(dropped(fresh.receiver, "simulation already complete"), 1u);

    const server::CheckpointSummary summary =
        server::checkpoint_summary(bytes.data(), bytes.size());
    EXPECT_EQ(summary.version, server::kCheckpointVersion);
    EXPECT_EQ(summary.rank, 0u);
    EXPECT_EQ(summary.n_ranks, 1u);
    EXPECT_EQ(summary.field_names, (std::vector<std::string>{"u", "v"}));
    EXPECT_EQ(summary.finished, (std::vector<std::uint32_t>{0, 1}));
    EXPECT_EQ(summary.size, bytes.size());
}

TEST(Checkpoint, IsWrittenInItsFormat) {
    // Nothing received yet: the checkpoint of the declared fields alone, encoded by hand.
    auto config = test_config();
    config.field_sizes = {10, 3};
    StatisticsServer declared(every_statistic(), config);
    EXPECT_EQ(declared.checkpoint(), forged([](wire::Writer &w) { w.u64(0).u64(0).u64(0); }));
}

TEST(Checkpoint, OfStateArraysLargerThanItsBufferRoundTrips) {
    // 200,000 cells: the mean and m2 (1.6 MB each) are each more than a buffer of the file's
    // (1 MiB), the shift (0.8 MB, in float) less.
    auto config = test_config();
    config.field_sizes = {200000, 3};
    const server::StatisticsSpec spec{2, false, {}, {}, 0};
    StatisticsServer original(spec, config);
    std::vector<double> values(200000);
    for (std::size_t c = 0; c < values.size(); ++c)
        values[c] = std::sin(0.001 * static_cast<double>(c));
    const std::atomic<bool> stopping{false};
    for (std::uint32_t simulation = 0; simulation < 2; ++simulation)
        original.statistics->deliver(
            {simulation, 0, 0, 0, values.size(), wire::DType::Float64, values.data(), {}},
            stopping);
    const Bytes bytes = original.checkpoint();
    ASSERT_GT(bytes.size(), values.size() * (sizeof(float) + 2 * sizeof(double)));

    StatisticsServer fresh(spec, config);
    ASSERT_EQ(fresh.refusal(bytes), "");
    EXPECT_EQ(mean(*fresh.statistics, 0, 0), mean(*original.statistics, 0, 0));
    EXPECT_EQ(fresh.checkpoint(), bytes);
}

TEST(Checkpoint, KeepsTheMomentsShift) {
    // Near 1e9 a float shift is not the value it was rounded from: a restored shift other than
    // the one the sums are taken about would move every later mean by the difference.
    auto config = test_config();
    config.field_sizes = {100, 3};
    const server::StatisticsSpec spec{2, false, {}, {}, 0};
    StatisticsServer original(spec, config), fresh(spec, config);
    const std::atomic<bool> stopping{false};
    auto deliver = [&](StatisticsServer &server, std::uint32_t simulation) {
        std::vector<double> values(100);
        for (std::size_t c = 0; c < values.size(); ++c)
            values[c] = 1e9 + std::sin(0.1 * static_cast<double>(c) + simulation);
        server.statistics->deliver(
            {simulation, 0, 0, 0, values.size(), wire::DType::Float64, values.data(), {}},
            stopping);
    };
    deliver(original, 0);
    deliver(original, 1);
    ASSERT_EQ(fresh.refusal(original.checkpoint()), "");
    EXPECT_EQ(moments_shift(*fresh.statistics, 0, 0), moments_shift(*original.statistics, 0, 0));
    deliver(original, 2);
    deliver(fresh, 2);
    EXPECT_EQ(mean(*fresh.statistics, 0, 0), mean(*original.statistics, 0, 0));
}

TEST(Checkpoint, ThatTheFileDoesNotTakeThrowsWithTheReason) {
    StatisticsServer original;
    stream(original.receiver);
    const int full = open("/dev/full", O_WRONLY);
    ASSERT_GE(full, 0);
    try {
        server::write_checkpoint(original.receiver, *original.statistics, full);
        ADD_FAILURE() << "a checkpoint written to a full disk";
    } catch (const std::system_error &e) {
        EXPECT_EQ(e.code(), std::errc::no_space_on_device);
        EXPECT_STREQ(e.what(), "checkpoint not written: No space left on device");
    }
    close(full);
    // The receiver is not left waiting: the next checkpoint is taken, and taken up.
    EXPECT_EQ(StatisticsServer().refusal(original.checkpoint()), "");
}

TEST(Checkpoint, RefusesWhatIsNotAnIntactCheckpointOfThisFormat) {
    StatisticsServer original;
    stream(original.receiver);
    const Bytes good = original.checkpoint();
    auto changed = [&](const std::function<void(Bytes &)> &change) {
        Bytes bytes = good;
        change(bytes);
        return bytes;
    };
    const std::uint64_t size = good.size();
    const std::vector<std::pair<Bytes, std::string>> cases = {
        {changed([](Bytes &b) { b[3] = std::byte{'X'}; }), "not a melissa checkpoint"},
        {changed([](Bytes &b) { b.resize(20); }), "checkpoint truncated: 20 bytes"},
        {changed([](Bytes &b) { b[8] = std::byte{server::kCheckpointVersion + 1}; }),
         "checkpoint written by a newer melissa (format " +
             std::to_string(server::kCheckpointVersion + 1) + ", this one reads up to " +
             std::to_string(server::kCheckpointVersion) + ")"},
        {changed([](Bytes &b) { b[8] = std::byte{server::kCheckpointVersion - 1}; }),
         "checkpoint written by an older melissa (format " +
             std::to_string(server::kCheckpointVersion - 1) + ", this one reads format " +
             std::to_string(server::kCheckpointVersion) +
             "): finish the study with that melissa, or run it again"},
        {changed([](Bytes &b) { b.pop_back(); }),
         "checkpoint truncated: " + std::to_string(size - 1) + " of its " + std::to_string(size) +
             " bytes"},
        {changed([](Bytes &b) { b.push_back(std::byte{0}); }),
         "checkpoint followed by 1 bytes that are not its own"},
        {changed([](Bytes &b) { b[b.size() / 2] ^= std::byte{1}; }),
         "checkpoint damaged: its checksum does not match its contents"},
    };
    for (const auto &[bytes, reason] : cases) {
        StatisticsServer fresh;
        EXPECT_EQ(fresh.refusal(bytes), reason);
        EXPECT_THROW(server::checkpoint_summary(bytes.data(), bytes.size()),
                     server::CheckpointError)
            << reason;
    }
}

TEST(Checkpoint, RefusesAnotherStudysRankOrStatistics) {
    StatisticsServer original;
    stream(original.receiver);
    const Bytes bytes = original.checkpoint();

    auto config = test_config();
    config.field_names = {"u", "w"};
    EXPECT_EQ(StatisticsServer(every_statistic(), config).refusal(bytes),
              "checkpoint of another study: its fields are 'u', 'v', this study's 'u', 'w'");
    config = test_config();
    config.n_ranks = 2;
    EXPECT_EQ(StatisticsServer(every_statistic(), config).refusal(bytes),
              "checkpoint of server rank 0 of 1; this is rank 0 of 2");
    config = test_config(wire::Routing::WholeBySimulation);
    EXPECT_EQ(StatisticsServer(every_statistic(), config).refusal(bytes),
              "checkpoint of a server that routes otherwise (routing 0, this one 1)");
    EXPECT_EQ(StatisticsServer({2, false, {}, {}, 0}).refusal(bytes),
              "checkpoint of other statistics (moments to order 4, extrema, thresholds [0.5, 2], "
              "quantiles [0.1, 0.5, 0.9], Sobol indices of 1 parameters) than this server's "
              "(moments to order 2, thresholds [], quantiles [], Sobol indices of 0 parameters)");

    // Refused after its statistics were read: neither the receiver nor they changed.
    config = test_config();
    config.field_sizes = {12, 3};
    StatisticsServer declared(every_statistic(), config);
    const Bytes untouched = declared.checkpoint();
    EXPECT_EQ(declared.refusal(bytes), "checkpoint does not fit this server: Receiver.restore: "
                                       "field 'u': 10 cells received, 12 declared");
    EXPECT_EQ(declared.checkpoint(), untouched);

    // Accumulators of cells other than those a delivery would bring: 7 cells of u's 10.
    StatisticsServer odd;
    stream(odd.receiver);
    const std::vector<double> values(7, 1.0);
    const std::atomic<bool> stopping{false};
    odd.statistics->deliver({9, 0, 5, 0, 7, wire::DType::Float64, values.data(), {}}, stopping);
    EXPECT_EQ(StatisticsServer().refusal(odd.checkpoint()),
              "checkpoint holds accumulators of field 0 at time step 5 that are not of the cells "
              "this rank owns");
}

TEST(Checkpoint, RefusesContentsThatContradictThemselves) {
    auto accumulator = [](wire::Writer &w, std::uint32_t step, const char *first_kernel) {
        write_accumulator(w, every_statistic(), 0, step, 10, first_kernel);
    };
    auto group = [](wire::Writer &w, std::uint32_t step, std::uint32_t members) {
        const std::vector<double> values(members * 10, 1.0);
        w.u32(0).u32(step).u32(0).u32(members);
        for (std::uint32_t m = 0; m < members; ++m)
            w.u8(m == 0);
        w.u64(values.size()).words(values.data(), values.size());
    };
    const std::vector<std::pair<Bytes, std::string>> cases = {
        {forged([&](wire::Writer &w) { w.u64(1000).u64(0); }),
         "it counts more entries than it holds"},
        {forged([&](wire::Writer &w) {
             w.u64(1);
             accumulator(w, 0, "moments");
         }),
         "it ends before its contents do"},
        {forged([&](wire::Writer &w) {
             w.u64(1);
             accumulator(w, 0, "momentz");
             w.u64(0);
         }),
         "its accumulators are not laid out as the statistics it names"},
        {forged([&](wire::Writer &w) {
             w.u64(2);
             accumulator(w, 0, "moments");
             accumulator(w, 0, "moments");
             w.u64(0);
         }),
         "it holds accumulators twice"},
        {forged([&](wire::Writer &w) {
             w.u64(0).u64(1);
             group(w, 0, 3);
         }),
         "it holds a Sobol group without accumulators"},
        {forged([&](wire::Writer &w) {
             w.u64(1);
             accumulator(w, 0, "moments");
             w.u64(1);
             group(w, 0, 4);
         }),
         "a Sobol group's size is not its statistics'"},
        {forged([&](wire::Writer &w) {
             w.u64(1);
             accumulator(w, 0, "moments");
             w.u64(2);
             group(w, 0, 3);
             group(w, 0, 3);
         }),
         "it holds a Sobol group twice"},
        {forged([&](wire::Writer &w) { w.u64(0).u64(0).u64(0).u8(0); }),
         "bytes are left after its contents"},
    };
    for (const auto &[bytes, reason] : cases) {
        StatisticsServer fresh;
        EXPECT_EQ(fresh.refusal(bytes), "checkpoint malformed: " + reason);
    }
    // The forgery itself, without contradictions, is taken up.
    StatisticsServer fresh;
    EXPECT_EQ(fresh.refusal(forged([&](wire::Writer &w) {
        w.u64(1);
        accumulator(w, 0, "moments");
        w.u64(1);
        group(w, 0, 3);
        w.u64(0); // no covariance half
    })),
              "");
    EXPECT_EQ(fresh.statistics->pending_groups(), 1u);
}

namespace {

const std::atomic<bool> kRunning{false};

/// Delivers simulation `simulation`'s field `field` at `step`, whole, as the receiver would.
template <class T>
void deliver(server::FieldStatistics &statistics, std::uint32_t simulation, std::uint32_t field,
             std::uint32_t step, const std::vector<T> &values) {
    const auto dtype = std::is_same_v<T, double> ? wire::DType::Float64 : wire::DType::Float32;
    statistics.deliver({simulation, field, step, 0, values.size(), dtype, values.data(), {}},
                       kRunning);
}

/// A field of one simulation: every cell differs, and so does every simulation.
std::vector<double> field_values(std::uint32_t simulation, std::uint32_t field,
                                 std::size_t cells = 10) {
    std::vector<double> values(cells);
    for (std::size_t c = 0; c < cells; ++c)
        values[c] = std::sin(1.0 + simulation * 0.7 + field * 0.3 + c * 0.2) * (c + 1) +
                    field * simulation * simulation * 0.1;
    return values;
}

std::vector<float> as_float(const std::vector<double> &values) {
    return {values.begin(), values.end()};
}

struct CovarianceOf {
    std::uint64_t count = 0;
    std::vector<double> covariance, correlation;
};

/// What the kernel of pair `pair` holds at (field, step).
CovarianceOf covariance_of(server::FieldStatistics &statistics, std::uint32_t field,
                           std::uint32_t step, std::size_t pair) {
    CovarianceOf out;
    statistics.visit([&](std::uint32_t f, std::uint32_t s, server::Accumulators &a) {
        if (f != field || s != step)
            return;
        const auto &kernel = a.covariance.at(pair);
        out.count = kernel.count();
        out.covariance.resize(a.cells);
        out.correlation.resize(a.cells);
        kernel.covariance(out.covariance.data(), 1);
        kernel.correlation(out.correlation.data());
    });
    return out;
}

/// Two-pass sample covariance (ddof 1) and correlation of x and y, cell by cell, over samples.
void expect_matches(const CovarianceOf &got, const std::vector<std::vector<double>> &x,
                    const std::vector<std::vector<double>> &y) {
    ASSERT_EQ(got.count, x.size());
    const std::size_t n = x.size(), cells = x[0].size();
    ASSERT_EQ(got.covariance.size(), cells);
    for (std::size_t c = 0; c < cells; ++c) {
        double mx = 0, my = 0;
        for (std::size_t s = 0; s < n; ++s) {
            mx += x[s][c] / n;
            my += y[s][c] / n;
        }
        double sxy = 0, sxx = 0, syy = 0;
        for (std::size_t s = 0; s < n; ++s) {
            sxy += (x[s][c] - mx) * (y[s][c] - my);
            sxx += (x[s][c] - mx) * (x[s][c] - mx);
            syy += (y[s][c] - my) * (y[s][c] - my);
        }
        EXPECT_NEAR(got.covariance[c], sxy / (n - 1), 1e-12 * (1 + std::abs(sxy))) << "cell " << c;
        EXPECT_NEAR(got.correlation[c], sxy / std::sqrt(sxx * syy), 1e-12) << "cell " << c;
    }
}

std::vector<std::string> kernel_names(server::FieldStatistics &statistics, std::uint32_t field) {
    std::vector<std::string> names;
    statistics.visit([&](std::uint32_t f, std::uint32_t s, server::Accumulators &a) {
        if (f == field && s == 0)
            for (const auto &[name, arrays] : server::kernel_states(a))
                names.push_back(name);
    });
    return names;
}

std::uint64_t dropped(server::FieldStatistics &statistics, const std::string &reason) {
    const auto dropped = statistics.dropped();
    const auto found = dropped.find(reason);
    return found == dropped.end() ? 0 : found->second;
}

} // namespace

TEST(FieldStatisticsCovariance, PairsTwoFieldsArrivingInEitherOrder) {
    server::StatisticsSpec spec{1, false, {}, {}, 0};
    spec.covariance = {{0, 1, false}};
    server::FieldStatistics statistics(spec);
    std::vector<std::vector<double>> u, v;
    for (std::uint32_t simulation = 0; simulation < 6; ++simulation) {
        u.push_back(field_values(simulation, 0));
        // v as float32, u as float64: a pair may mix them.
        const std::vector<float> v32 = as_float(field_values(simulation, 1));
        v.emplace_back(v32.begin(), v32.end());
        if (simulation % 2 == 0)
            deliver(statistics, simulation, 0, 0, u.back());
        else
            deliver(statistics, simulation, 1, 0, v32);
        EXPECT_EQ(statistics.pending_halves(), 1u) << "the first of a pair waits for the other";
        if (simulation % 2 == 0)
            deliver(statistics, simulation, 1, 0, v32);
        else
            deliver(statistics, simulation, 0, 0, u.back());
        EXPECT_EQ(statistics.pending_halves(), 0u);
    }
    expect_matches(covariance_of(statistics, 0, 0, 0), u, v);
    EXPECT_EQ(kernel_names(statistics, 0), (std::vector<std::string>{"moments", "covariance:0"}));
    EXPECT_EQ(kernel_names(statistics, 1), (std::vector<std::string>{"moments"}));
    EXPECT_TRUE(statistics.dropped().empty());
}

TEST(FieldStatisticsCovariance, OfAFieldWithAParameterTakesItsValueOnEveryCell) {
    server::StatisticsSpec spec{1, false, {}, {}, 0};
    spec.covariance = {{0, 1, true}};
    spec.n_parameters = 2;
    spec.parameters = {0.5, 3.0, 0.1, -1.0, 0.9, 2.5, 0.4, 7.0}; // 4 simulations
    server::FieldStatistics statistics(spec);
    std::vector<std::vector<double>> u, x2;
    for (std::uint32_t simulation = 0; simulation < 4; ++simulation) {
        u.push_back(field_values(simulation, 0));
        x2.emplace_back(10, spec.parameters[simulation * 2 + 1]);
        deliver(statistics, simulation, 0, 0, u.back());
    }
    // A simulation beyond the table: counted, and nothing else changes.
    deliver(statistics, 4, 0, 0, field_values(4, 0));
    EXPECT_EQ(dropped(statistics, "covariance with a parameter of a simulation without parameters"),
              1u);
    expect_matches(covariance_of(statistics, 0, 0, 0), u, x2);
    EXPECT_EQ(statistics.pending_halves(), 0u);
}

TEST(FieldStatisticsCovariance, InSobolStudiesCountsTheIndependentDrawsOnly) {
    server::StatisticsSpec spec{1, false, {}, {}, 1}; // groups of 3: A, B, C_1
    spec.covariance = {{0, 1, false}, {0, 0, true}};
    spec.n_parameters = 1;
    for (std::uint32_t simulation = 0; simulation < 9; ++simulation)
        spec.parameters.push_back(0.3 * simulation * simulation - simulation);
    server::FieldStatistics statistics(spec);
    std::vector<std::vector<double>> u, v, x1;
    for (std::uint32_t simulation = 0; simulation < 9; ++simulation) {
        deliver(statistics, simulation, 1, 0, field_values(simulation, 1));
        deliver(statistics, simulation, 0, 0, field_values(simulation, 0));
        if (simulation % 3 < 2) {
            u.push_back(field_values(simulation, 0));
            v.push_back(field_values(simulation, 1));
            x1.emplace_back(10, spec.parameters[simulation]);
        }
    }
    EXPECT_EQ(statistics.pending_halves(), 0u) << "C runs are not held for a pair";
    expect_matches(covariance_of(statistics, 0, 0, 0), u, v);
    expect_matches(covariance_of(statistics, 0, 0, 1), u, x1);
}

TEST(FieldStatisticsCovariance, DropsPairsOfFieldsWhoseCellsDiffer) {
    server::StatisticsSpec spec{0, false, {}, {}, 0};
    spec.covariance = {{0, 1, false}};
    server::FieldStatistics statistics(spec);
    deliver(statistics, 0, 0, 0, field_values(0, 0, 10));
    deliver(statistics, 0, 1, 0, field_values(0, 1, 3));
    EXPECT_EQ(dropped(statistics, "covariance of two fields whose cells differ"), 1u);
    EXPECT_EQ(statistics.pending_halves(), 0u);
    EXPECT_EQ(covariance_of(statistics, 0, 0, 0).count, 0u);
}

TEST(FieldStatisticsCovariance, RefusesPairsThatContradictTheSpec) {
    auto refusal = [](std::vector<server::CovariancePair> pairs, std::size_t n_parameters,
                      std::vector<double> parameters) -> std::string {
        server::StatisticsSpec spec;
        spec.covariance = std::move(pairs);
        spec.n_parameters = n_parameters;
        spec.parameters = std::move(parameters);
        try {
            server::FieldStatistics statistics(std::move(spec));
        } catch (const std::invalid_argument &e) {
            return e.what();
        }
        return "";
    };
    EXPECT_EQ(refusal({{1, 1, false}}, 0, {}),
              "FieldStatistics: covariance of field 1 with field 1: a field with itself");
    EXPECT_EQ(refusal({{0, 2, true}}, 2, {1, 2}),
              "FieldStatistics: covariance of field 0 with parameter 2, of 2 parameters");
    EXPECT_EQ(refusal({}, 2, {1, 2, 3}), "FieldStatistics: 3 parameter values are not rows of 2");
    EXPECT_EQ(refusal({{0, 1, true}, {1, 0, false}}, 2, {1, 2}), "");
}

TEST(Checkpoint, HoldsCovarianceHalvesInFlight) {
    server::StatisticsSpec spec = every_statistic();
    spec.covariance = {{0, 1, false}, {0, 0, true}};
    spec.n_parameters = 1;
    spec.parameters = {0.5, 0.2, 0.9, 0.7};
    auto config = test_config();
    config.field_sizes = {10, 10};
    StatisticsServer original(spec, config);
    // Simulations 0, 1 and 3 are the A and B runs of Sobol groups 0 and 1; 3's v is on its way.
    for (std::uint32_t simulation : {0u, 1u, 3u})
        deliver(*original.statistics, simulation, 0, 0, field_values(simulation, 0));
    for (std::uint32_t simulation : {0u, 1u})
        deliver(*original.statistics, simulation, 1, 0, field_values(simulation, 1));
    ASSERT_EQ(original.statistics->pending_halves(), 1u);
    const Bytes bytes = original.checkpoint();

    StatisticsServer fresh(spec, config);
    ASSERT_EQ(fresh.refusal(bytes), "");
    EXPECT_EQ(fresh.checkpoint(), bytes);
    EXPECT_EQ(fresh.statistics->pending_halves(), 1u);
    for (auto *server : {&original, &fresh})
        deliver(*server->statistics, 3, 1, 0, field_values(3, 1));
    const CovarianceOf paired = covariance_of(*fresh.statistics, 0, 0, 0);
    EXPECT_EQ(paired.count, 3u);
    EXPECT_EQ(paired.covariance, covariance_of(*original.statistics, 0, 0, 0).covariance);
    EXPECT_EQ(fresh.statistics->pending_halves(), 0u);

    EXPECT_EQ(StatisticsServer(every_statistic(), config).refusal(bytes),
              "checkpoint of other statistics (moments to order 4, extrema, thresholds [0.5, 2], "
              "quantiles [0.1, 0.5, 0.9], Sobol indices of 1 parameters, covariance of [field 0 "
              "with field 1, field 0 with parameter 0]) than this server's (moments to order 4, "
              "extrema, thresholds [0.5, 2], quantiles [0.1, 0.5, 0.9], Sobol indices of 1 "
              "parameters)");
}

TEST(Checkpoint, RefusesCovarianceHalvesThatContradictTheirStatistics) {
    const std::vector<server::CovariancePair> pairs = {{0, 1, false}, {0, 0, true}};
    server::StatisticsSpec spec = every_statistic();
    spec.covariance = pairs;
    spec.n_parameters = 1;
    auto config = test_config();
    config.field_sizes = {10, 10};
    auto half = [](wire::Writer &w, std::uint32_t pair, std::uint32_t step, std::size_t cells) {
        const std::vector<double> values(cells, 1.0);
        w.u32(pair).u32(step).u32(4).u8(1).u64(0).u64(cells).words(values.data(), cells);
    };
    auto with_halves = [&](const std::function<void(wire::Writer &)> &halves) {
        return forged(
            [&](wire::Writer &w) {
                w.u64(1);
                write_accumulator(w, spec, 0, 0, 10);
                w.u64(0); // no Sobol group
                halves(w);
            },
            &pairs, 10);
    };
    const std::vector<std::pair<Bytes, std::string>> cases = {
        {with_halves([&](wire::Writer &w) { half(w.u64(1), 1, 0, 10); }),
         "it holds a covariance half of no pair of two fields"},
        {with_halves([&](wire::Writer &w) { half(w.u64(1), 7, 0, 10); }),
         "it holds a covariance half of no pair of two fields"},
        {with_halves([&](wire::Writer &w) { half(w.u64(1), 0, 1, 10); }),
         "it holds a covariance half without accumulators"},
        {with_halves([&](wire::Writer &w) { half(w.u64(1), 0, 0, 9); }),
         "a covariance half's cells are not its field's"},
        {with_halves([&](wire::Writer &w) {
             half(w.u64(2), 0, 0, 10);
             half(w, 0, 0, 10);
         }),
         "it holds a covariance half twice"},
    };
    for (const auto &[bytes, reason] : cases)
        EXPECT_EQ(StatisticsServer(spec, config).refusal(bytes), "checkpoint malformed: " + reason);
    StatisticsServer fresh(spec, config);
    EXPECT_EQ(fresh.refusal(with_halves([&](wire::Writer &w) { half(w.u64(1), 0, 0, 10); })), "");
    EXPECT_EQ(fresh.statistics->pending_halves(), 1u);
}
