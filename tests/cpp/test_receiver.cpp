// SPDX-License-Identifier: BSD-3-Clause
//
// What a receiver takes as the study's truth: field sizes and the number of time steps when the
// study declares them, the first size seen when it does not; when a simulation is finished on a
// rank, under each routing; and what no message, however large it claims to be, may cost.
#include <gtest/gtest.h>

#include <fstream>
#include <numeric>
#include <stdexcept>
#include <vector>

#include "receiver_fixture.hpp"

namespace server = melissa::server;
namespace transport = melissa::transport;
namespace wire = melissa::wire;
using namespace melissa::testing;

namespace {

/// A whole field of simulation `simulation` at `step`, from one client rank.
wire::Header whole(std::uint32_t simulation, std::uint32_t field, std::uint32_t step,
                   std::uint64_t size) {
    wire::Header h;
    h.token = kToken;
    h.simulation_id = simulation;
    h.field_id = field;
    h.time_step = step;
    h.n_client_ranks = 1;
    h.field_size = size;
    h.count = size;
    return h;
}

/// The END client rank 0 sends for one field: `steps` sent, of `fields` fields.
wire::Header end(std::uint32_t simulation, std::uint32_t field, std::uint64_t size,
                 std::uint64_t steps, std::uint64_t fields = 2) {
    wire::Header h = whole(simulation, field, 0, size);
    h.kind = wire::Kind::End;
    h.count = steps;
    h.offset = fields;
    return h;
}

/// Sends a header and as many values as it announces.
void send(transport::Sender &sender, const wire::Header &h) {
    const std::vector<double> values(h.kind == wire::Kind::Data ? h.count : 0, 1.0);
    sender.send(wire::encode(h), values.data(), values.size() * sizeof(double));
}

bool finished(const server::Receiver &receiver, std::uint32_t simulation) {
    const auto done = receiver.finished_simulations();
    return std::find(done.begin(), done.end(), simulation) != done.end();
}

/// This process's resident memory, in bytes.
std::uint64_t resident_bytes() {
    std::ifstream status("/proc/self/status");
    for (std::string line; std::getline(status, line);)
        if (line.rfind("VmRSS:", 0) == 0)
            return std::stoull(line.substr(6)) * 1024;
    return 0;
}

} // namespace

TEST(Receiver, RefusesAFieldOfAnotherSizeAndGoesOnAnswering) {
    TestServer server;
    ASSERT_EQ(handshake(server.address, "u", 10).status, 0u);
    const wire::Welcome refused = handshake(server.address, "u", 11);
    EXPECT_EQ(refused.status, 1u);
    EXPECT_EQ(refused.message, "field 'u' has 10 cells in the other simulations, 11 in this one");
    // The refusal used to leave rank 0's control thread waiting on a lock it held itself.
    EXPECT_EQ(handshake(server.address, "u", 10).status, 0u);
    EXPECT_EQ(handshake(server.address, "v", 3).status, 0u);
    const server::Counters c = server.receiver.counters();
    EXPECT_EQ(c.handshakes, 3u);
    EXPECT_EQ(c.rejected_handshakes, 1u);
}

TEST(Receiver, DeclaredFieldSizesAreTheTruth) {
    auto config = test_config();
    config.field_sizes = {10, 3};
    TestServer server(config);
    EXPECT_EQ(server.receiver.field_sizes(),
              (std::map<std::uint32_t, std::uint64_t>{{0, 10}, {1, 3}}));

    // The first handshake of v sets nothing: the declaration does.
    const wire::Welcome refused = handshake(server.address, "v", 4);
    EXPECT_EQ(refused.status, 1u);
    EXPECT_EQ(refused.message, "field 'v' is declared with 3 cells, this simulation has 4");
    EXPECT_EQ(handshake(server.address, "v", 3).status, 0u);
    EXPECT_EQ(handshake(server.address, "u", 11).status, 1u);
    EXPECT_EQ(handshake(server.address, "u", 10).status, 0u);

    auto t = transport::make_zmq_transport();
    auto sender = connect(*t, server);
    // Pieces of no more cells than declared: a larger frame would close the connection.
    wire::Header larger_u = whole(1, 0, 0, 11);
    larger_u.count = 10;
    send(*sender, larger_u);
    send(*sender, end(1, 0, 11, 1));
    wire::Header larger_v = whole(1, 1, 0, 4); // before any handshake of v on this rank
    larger_v.count = 3;
    send(*sender, larger_v);
    send(*sender, whole(1, 0, 0, 10));
    server.settle(*sender);
    EXPECT_EQ(server.dropped("field 'u': 11 cells received, 10 declared"), 2u);
    EXPECT_EQ(server.dropped("field 'v': 4 cells received, 3 declared"), 1u);
    const auto d = server.collector->pop(1s);
    ASSERT_TRUE(d);
    EXPECT_EQ(d->count, 10u);
    EXPECT_FALSE(server.collector->pop(0ms));
}

TEST(Receiver, RefusesADeclarationThatDoesNotFitTheFields) {
    auto config = test_config();
    config.field_sizes = {10};
    EXPECT_THROW(server::Receiver(config, std::make_shared<server::Collector>(1)),
                 std::invalid_argument);
    config = test_config();
    config.nb_time_steps = (1u << 26) + 1;
    EXPECT_THROW(server::Receiver(config, std::make_shared<server::Collector>(1)),
                 std::invalid_argument);
}

TEST(Receiver, DropsTimeStepsBeyondTheDeclaredCount) {
    auto config = test_config();
    config.nb_time_steps = 2;
    TestServer server(config);
    auto t = transport::make_zmq_transport();
    auto sender = connect(*t, server);
    send(*sender, whole(1, 0, 2, 10));
    send(*sender, whole(1, 0, 1, 10));
    send(*sender, end(1, 0, 10, 3)); // more time steps than the study has
    send(*sender, end(1, 0, 10, 1)); // fewer
    server.settle(*sender);
    EXPECT_EQ(server.dropped("time step beyond nb_time_steps"), 1u);
    EXPECT_EQ(server.dropped("END's time steps differ from nb_time_steps"), 2u);
    EXPECT_TRUE(server.collector->pop(1s));

    TestServer undeclared;
    auto to_undeclared = connect(*t, undeclared);
    send(*to_undeclared, whole(1, 0, 1u << 26, 10));
    undeclared.settle(*to_undeclared);
    EXPECT_EQ(undeclared.dropped("time step beyond 2^26"), 1u);
}

TEST(Receiver, FinishedOnlyWithEveryOwnedTimeStepOfEveryField) {
    auto config = test_config();
    config.nb_time_steps = 3;
    TestServer server(config);
    auto t = transport::make_zmq_transport();
    auto sender = connect(*t, server);
    auto steps = [&](std::uint32_t simulation, std::uint32_t field, std::uint32_t n) {
        for (std::uint32_t step = 0; step < n; ++step)
            send(*sender, whole(simulation, field, step, 10));
    };
    // 1: everything. 2: two of three time steps, although its END says three. 3: field u alone,
    // its END claiming it is the only field. 4: everything but no END (no finalize).
    for (std::uint32_t field : {0, 1}) {
        steps(1, field, 3);
        send(*sender, end(1, field, 10, 3));
        steps(2, field, 2);
        send(*sender, end(2, field, 10, 3));
        steps(4, field, 3);
    }
    steps(3, 0, 3);
    send(*sender, end(3, 0, 10, 3, 1));
    server.settle(*sender);
    EXPECT_EQ(server.receiver.finished_simulations(), std::vector<std::uint32_t>{1});

    // What each lacked, and each is finished.
    send(*sender, whole(2, 0, 2, 10));
    send(*sender, whole(2, 1, 2, 10));
    steps(3, 1, 3);
    send(*sender, end(3, 1, 10, 3, 1));
    send(*sender, end(4, 0, 10, 3));
    server.settle(*sender);
    EXPECT_FALSE(finished(server.receiver, 4)) << "one END of two";
    send(*sender, end(4, 1, 10, 3));
    server.settle(*sender);
    EXPECT_EQ(server.receiver.finished_simulations(), (std::vector<std::uint32_t>{1, 2, 3, 4}));
}

TEST(Receiver, FinishedWithTheTimeStepsRoutedToItsRank) {
    // Rank 1 of 2, time steps round robin: it owns steps 1 and 3 of 5.
    auto config = test_config(wire::Routing::WholeByTimeStep);
    config.rank = 1;
    config.n_ranks = 2;
    config.nb_time_steps = 5;
    TestServer by_step(config);
    auto t = transport::make_zmq_transport();
    auto sender = connect(*t, by_step);
    for (std::uint32_t field : {0, 1}) {
        send(*sender, whole(1, field, 0, 10)); // rank 0's
        send(*sender, whole(1, field, 1, 10));
        send(*sender, end(1, field, 10, 5));
    }
    by_step.settle(*sender);
    EXPECT_EQ(by_step.dropped("cells not routed to this rank"), 2u);
    EXPECT_FALSE(finished(by_step.receiver, 1));
    send(*sender, whole(1, 0, 3, 10));
    send(*sender, whole(1, 1, 3, 10));
    by_step.settle(*sender);
    EXPECT_TRUE(finished(by_step.receiver, 1));

    // Rank 1 of 2, simulations round robin: simulation 2 is rank 0's, 3 is its own.
    config = test_config(wire::Routing::WholeBySimulation);
    config.rank = 1;
    config.n_ranks = 2;
    config.nb_time_steps = 2;
    TestServer by_simulation(config);
    sender = connect(*t, by_simulation);
    for (std::uint32_t field : {0, 1}) {
        send(*sender, end(2, field, 10, 2));
        send(*sender, end(3, field, 10, 2));
    }
    by_simulation.settle(*sender);
    EXPECT_EQ(by_simulation.receiver.finished_simulations(), std::vector<std::uint32_t>{2});
    for (std::uint32_t field : {0, 1})
        for (std::uint32_t step : {0, 1})
            send(*sender, whole(3, field, step, 10));
    by_simulation.settle(*sender);
    EXPECT_EQ(by_simulation.receiver.finished_simulations(), (std::vector<std::uint32_t>{2, 3}));

    // Rank 0 of 2, cells: u has one cell, which is rank 1's; rank 0 owns cells 0 and 1 of v.
    config = test_config();
    config.n_ranks = 2;
    config.nb_time_steps = 2;
    config.field_sizes = {1, 4};
    TestServer by_cells(config);
    sender = connect(*t, by_cells);
    for (std::uint32_t step : {0, 1}) {
        wire::Header h = whole(5, 1, step, 4);
        h.count = 2;
        send(*sender, h);
    }
    send(*sender, end(5, 1, 4, 2));
    by_cells.settle(*sender);
    EXPECT_FALSE(finished(by_cells.receiver, 5)) << "no END of u";
    send(*sender, end(5, 0, 1, 2));
    by_cells.settle(*sender);
    EXPECT_TRUE(finished(by_cells.receiver, 5));
}

TEST(Receiver, SurvivesFieldsTooLargeForMemory) {
    TestServer server;
    auto t = transport::make_zmq_transport();
    auto sender = connect(*t, server);
    const std::uint64_t before = resident_bytes();
    // A piece of a field that no machine holds: 2^53 bytes, beyond any address space; then one
    // whose size in bytes does not fit 64 bits; then one of a million million client ranks.
    for (std::uint64_t size : {std::uint64_t{1} << 50, (std::uint64_t{1} << 61) + 1}) {
        wire::Header h = piece(0, 0, 1);
        h.field_size = size;
        send(*sender, h);
    }
    wire::Header many = piece(0, 0, 4);
    many.n_client_ranks = ~0u;
    send(*sender, many);
    server.settle(*sender);
    EXPECT_EQ(server.dropped("no memory to assemble the field"), 2u);
    EXPECT_LT(resident_bytes(), before + (64u << 20));

    // Neither was taken as the field's size: a good client gets through.
    send(*sender, piece(0, 4, 6));
    send(*sender, whole(4, 0, 0, 10));
    server.settle(*sender);
    EXPECT_TRUE(server.collector->pop(1s));
    EXPECT_TRUE(server.collector->pop(1s));
    EXPECT_EQ(server.receiver.field_sizes().at(0), 10u);

    // Declared, the size is refused before anything is allocated.
    auto config = test_config();
    config.field_sizes = {10, 3};
    TestServer declared(config);
    sender = connect(*t, declared);
    wire::Header h = piece(0, 0, 1);
    h.field_size = std::uint64_t{1} << 40;
    send(*sender, h);
    declared.settle(*sender);
    EXPECT_EQ(declared.dropped("field 'u': 1099511627776 cells received, 10 declared"), 1u);
}
