// SPDX-License-Identifier: BSD-3-Clause
//
// The receiver over real ZeroMQ sockets, in one process: what it delivers, what it drops and
// counts, and the client C ABI's error paths (no server configured, a dead server, refusals).
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <future>
#include <numeric>
#include <optional>
#include <thread>
#include <zmq.hpp>

#include "melissa/melissa_api.h"
#include "receiver_fixture.hpp"

namespace server = melissa::server;
namespace transport = melissa::transport;
namespace wire = melissa::wire;
using namespace std::chrono_literals;

using namespace melissa::testing;

namespace {

/// Sets the client's environment for this test and restores nothing: each test sets all three.
void client_environment(const std::string &address, std::uint64_t token, double timeout) {
    char hex[17];
    std::snprintf(hex, sizeof(hex), "%llx", static_cast<unsigned long long>(token));
    setenv("MELISSA_SERVER_ADDRESS", address.c_str(), 1);
    setenv("MELISSA_SIMULATION_ID", "5", 1);
    setenv("MELISSA_STUDY_TOKEN", hex, 1);
    setenv("MELISSA_TIMEOUT", std::to_string(timeout).c_str(), 1);
}

} // namespace

TEST(Receiver, AssemblesPiecesAndDropsWhatIsWrong) {
    TestServer server;
    auto t = transport::make_zmq_transport();
    auto sender = connect(*t, server);
    std::vector<double> values(10);
    std::iota(values.begin(), values.end(), 0.0);

    // Two pieces of time step 0, then garbage of every kind, then time step 1 whole.
    sender->send(wire::encode(piece(0, 0, 4)), values.data(), 4 * 8);
    sender->send(wire::encode(piece(0, 4, 6)), values.data() + 4, 6 * 8);
    wire::Header wrong_token = piece(1, 0, 4);
    wrong_token.token = 1;
    sender->send(wire::encode(wrong_token), values.data(), 4 * 8);
    wire::Header unknown_field = piece(1, 0, 4);
    unknown_field.field_id = 7;
    sender->send(wire::encode(unknown_field), values.data(), 4 * 8);
    sender->send(wire::encode(piece(1, 0, 4)), values.data(), 3 * 8); // short values
    sender->send(wire::encode(piece(0, 0, 4)), values.data(), 4 * 8); // step 0 again
    wire::HeaderBytes not_ours{};
    sender->send(not_ours, values.data(), 8);
    wire::Header resized = piece(1, 0, 4);
    resized.field_size = 11; // not the size this field was first seen with
    sender->send(wire::encode(resized), values.data(), 4 * 8);
    wire::Header whole = piece(1, 0, 10);
    whole.client_rank = 0;
    sender->send(wire::encode(whole), values.data(), 10 * 8);
    {
        // Three frames: not something the client library ever sends.
        zmq::context_t context;
        zmq::socket_t raw = raw_push(context, server, token_hex());
        const auto header = wire::encode(piece(2, 0, 10));
        raw.send(zmq::buffer(header), zmq::send_flags::sndmore);
        raw.send(zmq::buffer(values), zmq::send_flags::sndmore);
        raw.send(zmq::str_buffer("extra"), zmq::send_flags::none);
    }

    for (std::uint32_t step = 0; step < 2; ++step) {
        const auto d = server.collector->pop(5s);
        ASSERT_TRUE(d) << "time step " << step << " never arrived";
        EXPECT_EQ(d->time_step, step);
        EXPECT_EQ(d->count, 10u);
        const auto *got = static_cast<const double *>(d->values);
        EXPECT_EQ(std::vector<double>(got, got + 10), values);
    }
    EXPECT_EQ(server.dropped_after(7), 7u);
    const server::Counters c = server.receiver.counters();
    EXPECT_EQ(c.dropped.at("wrong study token"), 1u);
    EXPECT_EQ(c.dropped.at("unknown field"), 1u);
    EXPECT_EQ(c.dropped.at("malformed: values do not match the header's count"), 1u);
    EXPECT_EQ(c.dropped.at("time step already received"), 1u);
    EXPECT_EQ(c.dropped.at("malformed: not a melissa message"), 1u);
    EXPECT_EQ(c.dropped.at("field size differs from the handshake's"), 1u);
    EXPECT_EQ(c.dropped.at("malformed: extra frames"), 1u);
    EXPECT_EQ(c.messages, 3u);
    EXPECT_FALSE(server.collector->pop(100ms)) << "nothing else may be delivered";
}

TEST(Inbox, TakesNothingFromAPeerWithoutTheToken) {
    TestServer server;
    std::vector<double> values(10, 1.0);
    zmq::context_t context;
    // No credentials, and the wrong ones: each sends a message of the study, token included.
    std::vector<zmq::socket_t> rogues;
    for (const std::string &password : {std::string(), token_hex(kToken + 1)}) {
        rogues.push_back(raw_push(context, server, password));
        rogues.back().set(zmq::sockopt::linger, 0);
        wire::Header h = piece(0, 0, 10);
        h.client_rank = 0;
        const auto header = wire::encode(h);
        rogues.back().send(zmq::buffer(header), zmq::send_flags::sndmore);
        rogues.back().send(zmq::buffer(values), zmq::send_flags::none);
    }
    auto t = transport::make_zmq_transport();
    auto sender = connect(*t, server);
    wire::Header h = piece(1, 0, 10);
    h.client_rank = 0;
    sender->send(wire::encode(h), values.data(), 10 * 8);
    const auto d = server.collector->pop(5s);
    ASSERT_TRUE(d);
    EXPECT_EQ(d->time_step, 1u);
    std::this_thread::sleep_for(300ms);
    EXPECT_FALSE(server.collector->pop(0ms)) << "a peer without the token got data through";
    const server::Counters c = server.receiver.counters();
    EXPECT_EQ(c.messages, 1u);
    EXPECT_TRUE(c.dropped.empty()) << "what a refused peer sends must not reach the receiver";
}

TEST(Inbox, DisconnectsAPeerSendingAFrameLargerThanTheLargestField) {
    // Fields of 10 and 3 cells: no frame may exceed 80 bytes, 10 float64 values.
    auto config = test_config();
    config.field_sizes = {10, 3};
    TestServer server(config);
    std::vector<double> values(1 << 17, 1.0);
    wire::Header h = piece(0, 0, 10);
    h.client_rank = 0;
    const auto header = wire::encode(h);
    zmq::context_t context;
    zmq::socket_t rogue = raw_push(context, server, token_hex());
    rogue.set(zmq::sockopt::linger, 0);
    rogue.send(zmq::buffer(header), zmq::send_flags::sndmore);
    rogue.send(zmq::buffer(values), zmq::send_flags::none); // 1 MiB

    auto t = transport::make_zmq_transport();
    auto sender = connect(*t, server);
    sender->send(header, values.data(), 10 * 8);
    ASSERT_TRUE(server.collector->pop(5s));
    std::this_thread::sleep_for(300ms);
    EXPECT_FALSE(server.collector->pop(0ms));
    EXPECT_TRUE(server.receiver.counters().dropped.empty())
        << "the oversized frame reached the receiver";
}

TEST(Inbox, ListensOnTheAddressItIsGiven) {
    auto config = test_config();
    config.bind_address = "::1";
    TestServer server(config);
    const wire::ServerEndpoint &e = server.receiver.endpoint();
    EXPECT_EQ(e.host, transport::host_name()) << "clients compare it with theirs to choose ipc";
    EXPECT_EQ(e.tcp.rfind("tcp://[::1]:", 0), 0u) << e.tcp;
    EXPECT_EQ(e.control.rfind("tcp://[::1]:", 0), 0u) << e.control;
    EXPECT_EQ(handshake(server.address, "u", 10).status, 0u);
    auto t = transport::make_zmq_transport();
    transport::SendOptions options;
    options.token = kToken;
    options.prefer_local_ipc = false;
    auto sender = t->connect(e, options);
    wire::Header h = piece(0, 0, 10);
    h.client_rank = 0;
    std::vector<double> values(10, 1.0);
    sender->send(wire::encode(h), values.data(), 10 * 8);
    EXPECT_TRUE(server.collector->pop(5s));

    config.bind_address.clear();
    EXPECT_THROW(server::Receiver(config, server.collector), transport::TransportError);
}

TEST(Receiver, StopReleasesItsSocketsAndTheirAuthentication) {
    TestServer server;
    const std::string tcp = server.receiver.endpoint().tcp;
    server.receiver.stop();
    // The ZAP handler's thread is joined as the inbox closes: no port is left listening.
    const auto port = static_cast<std::uint16_t>(std::stoi(tcp.substr(tcp.rfind(':') + 1)));
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(port);
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_NE(::connect(fd, reinterpret_cast<sockaddr *>(&address), sizeof(address)), 0)
        << "something still listens on " << tcp;
    ::close(fd);
    EXPECT_THROW(handshake(server.address, "u", 10), transport::TimeoutError);
    server.receiver.stop(); // again: nothing left to stop
}

TEST(Receiver, KnowsWhenASimulationIsComplete) {
    TestServer server;
    auto t = transport::make_zmq_transport();
    auto sender = connect(*t, server);
    std::vector<double> values(10, 1.0);
    wire::Header end = piece(0, 0, 0);
    end.kind = wire::Kind::End;
    end.count = 2;  // time steps sent
    end.offset = 1; // fields the simulation sends
    sender->send(wire::encode(end), nullptr, 0);
    sender->send(wire::encode(piece(0, 0, 10)), values.data(), 80);
    ASSERT_TRUE(server.collector->pop(5s));
    EXPECT_TRUE(server.receiver.finished_simulations().empty()) << "one of two steps is missing";
    sender->send(wire::encode(piece(1, 0, 10)), values.data(), 80);
    ASSERT_TRUE(server.collector->pop(5s));
    for (int i = 0; i < 100 && server.receiver.finished_simulations().empty(); ++i)
        std::this_thread::sleep_for(10ms);
    EXPECT_EQ(server.receiver.finished_simulations(), std::vector<std::uint32_t>{3});
}

TEST(ClientApi, StreamsToTheServerAndFinishes) {
    TestServer server;
    client_environment(server.address, kToken, 5.0);
    std::vector<double> u(7, 2.5);
    std::vector<float> v(3, 1.5f);
    ASSERT_EQ(melissa_init_no_mpi("u", 7), MELISSA_OK) << melissa_last_error();
    ASSERT_EQ(melissa_init_no_mpi("v", 3), MELISSA_OK) << melissa_last_error();
    for (int step = 0; step < 3; ++step) {
        ASSERT_EQ(melissa_send("u", u.data()), MELISSA_OK) << melissa_last_error();
        ASSERT_EQ(melissa_send_float("v", v.data()), MELISSA_OK) << melissa_last_error();
    }
    EXPECT_EQ(melissa_send("v", u.data()), MELISSA_ERR_ARGUMENT) << "v was sent as float";
    ASSERT_EQ(melissa_finalize(), MELISSA_OK) << melissa_last_error();
    int received = 0;
    while (const auto d = server.collector->pop(2s)) {
        EXPECT_EQ(d->simulation_id, 5u);
        EXPECT_EQ(d->dtype, d->field_id == 0 ? wire::DType::Float64 : wire::DType::Float32);
        ++received;
        if (received == 6)
            break;
    }
    EXPECT_EQ(received, 6);
    for (int i = 0; i < 100 && server.receiver.finished_simulations().empty(); ++i)
        std::this_thread::sleep_for(10ms);
    EXPECT_EQ(server.receiver.finished_simulations(), std::vector<std::uint32_t>{5});
}

TEST(ClientApi, FailsCleanlyWithoutAServer) {
    unsetenv("MELISSA_SERVER_ADDRESS");
    EXPECT_EQ(melissa_init_no_mpi("u", 3), MELISSA_ERR_ENVIRONMENT);
    EXPECT_NE(std::string(melissa_last_error()).find("MELISSA_SERVER_ADDRESS"), std::string::npos)
        << melissa_last_error();

    // A port nobody listens on: the handshake times out, within the timeout.
    client_environment("tcp://127.0.0.1:9", kToken, 0.5);
    const auto start = std::chrono::steady_clock::now();
    EXPECT_EQ(melissa_init_no_mpi("u", 3), MELISSA_ERR_TIMEOUT);
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    EXPECT_GE(seconds, 0.4);
    EXPECT_LT(seconds, 3.0);
    EXPECT_NE(std::string(melissa_last_error()).find("no answer"), std::string::npos);
    EXPECT_EQ(melissa_finalize(), MELISSA_OK) << "the half-made client is released";

    client_environment("tcp://127.0.0.1:9", kToken, -1);
    EXPECT_EQ(melissa_init_no_mpi("u", 3), MELISSA_ERR_ENVIRONMENT);
    setenv("MELISSA_TIMEOUT", "1", 1);
    setenv("MELISSA_STUDY_TOKEN", "not-hex", 1);
    EXPECT_EQ(melissa_init_no_mpi("u", 3), MELISSA_ERR_ENVIRONMENT);
}

TEST(ClientApi, ReportsCallsOutOfOrderAndRefusals) {
    double values[3] = {};
    EXPECT_EQ(melissa_send("u", values), MELISSA_ERR_STATE);
    EXPECT_EQ(melissa_finalize(), MELISSA_ERR_STATE);
    EXPECT_EQ(melissa_init_no_mpi(nullptr, 3), MELISSA_ERR_ARGUMENT);
    EXPECT_EQ(melissa_init_no_mpi("u", -1), MELISSA_ERR_ARGUMENT);

    TestServer server;
    client_environment(server.address, kToken + 1, 5.0);
    EXPECT_EQ(melissa_init_no_mpi("u", 3), MELISSA_ERR_REJECTED);
    EXPECT_NE(std::string(melissa_last_error()).find("wrong study token"), std::string::npos);
    EXPECT_EQ(melissa_finalize(), MELISSA_OK);

    client_environment(server.address, kToken, 5.0);
    EXPECT_EQ(melissa_init_no_mpi("w", 3), MELISSA_ERR_REJECTED);
    EXPECT_NE(std::string(melissa_last_error()).find("unknown field 'w'"), std::string::npos);
    ASSERT_EQ(melissa_init_no_mpi("u", 3), MELISSA_OK) << melissa_last_error();
    EXPECT_EQ(melissa_init_no_mpi("u", 3), MELISSA_ERR_STATE);
    EXPECT_EQ(melissa_send("v", values), MELISSA_ERR_ARGUMENT);
    EXPECT_EQ(melissa_send("u", nullptr), MELISSA_ERR_ARGUMENT);
    EXPECT_EQ(melissa_finalize(), MELISSA_OK);
    EXPECT_EQ(server.receiver.counters().rejected_handshakes, 2u);
}

TEST(ClientApi, FailsWithinTheTimeoutWhenTheServerDies) {
    auto server = std::make_unique<TestServer>();
    client_environment(server->address, kToken, 1.0);
    std::vector<double> values(1 << 16, 1.0);
    ASSERT_EQ(melissa_init_no_mpi("u", static_cast<int>(values.size())), MELISSA_OK)
        << melissa_last_error();
    ASSERT_EQ(melissa_send("u", values.data()), MELISSA_OK) << melissa_last_error();
    server.reset();
    const auto start = std::chrono::steady_clock::now();
    int status = MELISSA_OK;
    for (int step = 0; step < 1000 && status == MELISSA_OK; ++step)
        status = melissa_send("u", values.data());
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    EXPECT_EQ(status, MELISSA_ERR_TIMEOUT) << melissa_last_error();
    EXPECT_LT(seconds, 5.0);
    EXPECT_EQ(melissa_finalize(), MELISSA_ERR_TIMEOUT) << "END cannot reach a dead server";
}

namespace {

server::ReceiverConfig ucx_config() {
    server::ReceiverConfig config = test_config();
    config.backend = transport::Backend::Ucx;
    return config;
}

} // namespace

TEST(UcxInbox, DeliversLargeValuesWholeAndDropsWhatIsWrong) {
    if (!transport::available(transport::Backend::Ucx))
        GTEST_SKIP() << "built without UCX";
    TestServer server(ucx_config());
    ASSERT_FALSE(server.receiver.endpoint().ucx.empty());
    auto t = transport::make_transport();
    auto sender = connect(*t, server);
    // 8 MiB: far above UCX's rendezvous threshold, so fetched from this buffer by the server.
    const std::uint64_t cells = 1 << 20;
    std::vector<double> values(cells);
    std::iota(values.begin(), values.end(), 0.5);
    auto whole = [&](std::uint32_t step) {
        wire::Header h = piece(step, 0, cells);
        h.client_rank = 0;
        h.n_client_ranks = 1;
        h.field_size = cells;
        return h;
    };
    sender->send(wire::encode(whole(0)), values.data(), cells * 8);

    wire::Header wrong_token = whole(1);
    wrong_token.token = kToken + 1;
    sender->send(wire::encode(wrong_token), values.data(), cells * 8);
    wrong_token.count = 4; // small values travel with their header: dropped all the same
    sender->send(wire::encode(wrong_token), values.data(), 4 * 8);
    wire::HeaderBytes not_ours{};
    sender->send(not_ours, values.data(), 8);
    sender->send(wire::encode(whole(1)), values.data(), 3 * 8); // short values
    values[7] = -1.0; // the sender's buffer is its own again once send returned
    sender->send(wire::encode(whole(1)), values.data(), cells * 8);
    // No flush: once connected, what is sent leaves without a further call into UCX.

    for (std::uint32_t step = 0; step < 2; ++step) {
        const auto d = server.collector->pop(5s);
        ASSERT_TRUE(d) << "time step " << step << " never arrived";
        EXPECT_EQ(d->time_step, step);
        ASSERT_EQ(d->count, cells);
        const auto *got = static_cast<const double *>(d->values);
        EXPECT_EQ(got[7], step == 0 ? 7.5 : -1.0);
        EXPECT_EQ(got[cells - 1], static_cast<double>(cells) - 0.5);
    }
    EXPECT_EQ(server.dropped_after(2), 2u);
    const server::Counters c = server.receiver.counters();
    EXPECT_EQ(c.dropped.at("malformed: not a melissa message"), 1u);
    EXPECT_EQ(c.dropped.at("malformed: values do not match the header's count"), 1u);
    EXPECT_EQ(c.dropped.count("wrong study token"), 0u) << "fetched what it should have refused";
    EXPECT_EQ(c.messages, 2u);
    EXPECT_FALSE(server.collector->pop(100ms)) << "nothing else may be delivered";
}

TEST(UcxInbox, DoesNotFetchValuesLargerThanTheLargestField) {
    if (!transport::available(transport::Backend::Ucx))
        GTEST_SKIP() << "built without UCX";
    auto config = ucx_config();
    config.field_sizes = {10, 3}; // no message may carry more than 80 bytes of values
    TestServer server(config);
    auto t = transport::make_transport();
    auto sender = connect(*t, server);
    std::vector<double> values(1 << 20, 1.0);
    wire::Header h = piece(0, 0, 10);
    h.client_rank = 0;
    sender->send(wire::encode(h), values.data(), values.size() * 8);
    sender->send(wire::encode(h), values.data(), 10 * 8);
    sender->flush();
    const auto d = server.collector->pop(5s);
    ASSERT_TRUE(d);
    EXPECT_EQ(d->count, 10u);
    EXPECT_FALSE(server.collector->pop(200ms));
    const server::Counters c = server.receiver.counters();
    EXPECT_EQ(c.messages, 1u);
    EXPECT_TRUE(c.dropped.empty()) << "an oversized message reached the receiver";
}

TEST(UcxSender, FailsWithinItsTimeoutWhenTheServerIsGone) {
    if (!transport::available(transport::Backend::Ucx))
        GTEST_SKIP() << "built without UCX";
    auto t = transport::make_transport();
    std::unique_ptr<transport::Sender> sender;
    {
        // A server that goes away: its address stays, nothing answers at it.
        TestServer server(ucx_config());
        transport::SendOptions options;
        options.timeout = 500ms;
        sender = t->connect(server.receiver.endpoint(), options);
    }
    std::vector<double> values(1 << 20, 1.0);
    wire::Header h = piece(0, 0, values.size());
    const auto start = std::chrono::steady_clock::now();
    EXPECT_THROW(
        {
            sender->send(wire::encode(h), values.data(), values.size() * 8);
            sender->flush();
        },
        transport::TimeoutError);
    EXPECT_LT(std::chrono::steady_clock::now() - start, 5s);
}

TEST(UcxSender, DoesNotConnectToAServerThatIsGone) {
    if (!transport::available(transport::Backend::Ucx))
        GTEST_SKIP() << "built without UCX";
    wire::ServerEndpoint gone;
    {
        TestServer server(ucx_config());
        gone = server.receiver.endpoint();
    }
    auto t = transport::make_transport();
    transport::SendOptions options;
    options.token = kToken;
    options.timeout = 500ms;
    // Its address stays, nothing answers at it: the hello at connect fails, or times out.
    const auto start = std::chrono::steady_clock::now();
    try {
        (void)t->connect(gone, options);
        ADD_FAILURE() << "connected to a server that is gone";
    } catch (const transport::TimeoutError &e) {
        EXPECT_NE(std::string(e.what()).find("did not connect within 0.5"), std::string::npos)
            << e.what();
    } catch (const transport::TransportError &e) {
        EXPECT_NE(std::string(e.what()).find("UCX failed to connect"), std::string::npos)
            << e.what();
    }
    EXPECT_LT(std::chrono::steady_clock::now() - start, 5s);
}

TEST(UcxSender, BlocksWhenTheServerTakesNoMore) {
    if (!transport::available(transport::Backend::Ucx))
        GTEST_SKIP() << "built without UCX";
    // Nobody pops this collector: once it holds 4 deliveries, the receiver waits, and so must
    // the sender, after a bounded number of messages, however many it has to send.
    auto collector = std::make_shared<server::Collector>(4);
    server::Receiver receiver(ucx_config(), collector);
    auto t = transport::make_transport();
    transport::SendOptions options;
    options.timeout = 500ms;
    auto sender = t->connect(receiver.endpoint(), options);
    std::vector<double> values(10, 1.0);
    std::uint32_t sent = 0;
    try {
        for (; sent < 10000; ++sent) {
            wire::Header h = piece(sent, 0, 10);
            h.client_rank = 0;
            h.n_client_ranks = 1;
            sender->send(wire::encode(h), values.data(), values.size() * 8);
        }
    } catch (const transport::TimeoutError &) {
    }
    // The collector's 4, one held by the receiver, the inbox's 64, and the sender's window:
    // 256 KiB of such small messages, 1820.
    EXPECT_LT(sent, 2000u) << "the sender was never held back";
    EXPECT_GT(sent, 4u);
    receiver.stop();
}

TEST(UcxInbox, FetchesValuesWhileTheServerHandlesEarlierOnes) {
    if (!transport::available(transport::Backend::Ucx))
        GTEST_SKIP() << "built without UCX";
    // Nobody pops this collector: the first message fills it, and the receiver's thread waits
    // in the second's handling. The next ones' values, sent from the solver's buffer (2 MiB),
    // are fetched all the same: their sends return, none times out.
    auto collector = std::make_shared<server::Collector>(1);
    server::Receiver receiver(ucx_config(), collector);
    auto t = transport::make_transport();
    transport::SendOptions options;
    options.timeout = 1s;
    auto sender = t->connect(receiver.endpoint(), options);
    const std::uint64_t cells = 1 << 18;
    std::vector<double> values(cells, 1.0);
    for (std::uint32_t step = 0; step < 5; ++step) {
        wire::Header h = piece(step, 0, cells);
        h.client_rank = 0;
        h.n_client_ranks = 1;
        h.field_size = cells;
        EXPECT_NO_THROW(sender->send(wire::encode(h), values.data(), cells * 8))
            << "time step " << step << " was not fetched";
    }
    receiver.stop();
}

namespace {

/// Streams `kSteps` time steps of two fields from each of `kSenders` senders, which flush, then
/// stay idle, as clients waiting for the server's confirmation; expects every message to reach
/// the server's consumer within 2 s of the last flush. Field u (256 KiB) goes from the sender's
/// buffer, which it writes into the server's; field v (32 KiB) from copies, which the server
/// reads, and which keep the server's shared-memory FIFO busy.
void expect_delivered_after_flushes(server::Receiver &receiver, server::Collector &collector,
                                    std::uint32_t first_simulation) {
    constexpr std::uint32_t kSenders = 4, kSteps = 100, kMessages = 2 * kSteps;
    constexpr std::uint64_t kCells[] = {1 << 15, 1 << 12};
    std::atomic<std::uint32_t> flushed{0};
    std::promise<void> release;
    std::shared_future<void> released = release.get_future().share();
    std::vector<std::thread> senders;
    for (std::uint32_t s = 0; s < kSenders; ++s)
        senders.emplace_back([&, s] {
            auto t = transport::make_transport();
            auto sender = connect(*t, receiver);
            const std::vector<double> values(kCells[0], 1.0);
            for (std::uint32_t step = 0; step < kSteps; ++step)
                for (std::uint32_t field : {1, 0}) {
                    wire::Header h = piece(step, 0, kCells[field]);
                    h.simulation_id = first_simulation + s;
                    h.field_id = field;
                    h.client_rank = 0;
                    h.n_client_ranks = 1;
                    h.field_size = kCells[field];
                    sender->send(wire::encode(h), values.data(), kCells[field] * 8);
                }
            sender->flush();
            ++flushed;
            released.wait();
        });
    std::uint64_t delivered = 0;
    std::optional<std::chrono::steady_clock::time_point> all_flushed;
    const auto give_up = std::chrono::steady_clock::now() + 60s;
    while (delivered < kSenders * kMessages && std::chrono::steady_clock::now() < give_up &&
           !(all_flushed && std::chrono::steady_clock::now() - *all_flushed > 2s)) {
        if (collector.pop(10ms))
            ++delivered;
        if (!all_flushed && flushed == kSenders)
            all_flushed = std::chrono::steady_clock::now();
    }
    release.set_value();
    for (auto &sender : senders)
        sender.join();
    EXPECT_EQ(delivered, kSenders * kMessages) << "flushed messages the server never completed";
}

} // namespace

TEST(UcxSender, WhatItFlushedReachesTheServerWithoutAFurtherCall) {
    if (!transport::available(transport::Backend::Ucx))
        GTEST_SKIP() << "built without UCX";
    // A finalizing client flushes, then waits for the server's confirmation without calling
    // into UCX again: by then the server must be able to complete every message. A sender that
    // writes its values completes its send once they are written, and the acknowledgement that
    // completes the server's receive may then wait in the sender's queue while the server's
    // shared-memory FIFO is full. A FIFO of 4 entries (64 by default) makes that likely: without
    // the flush of the endpoint, 8 runs of 8 missed messages.
    setenv("UCX_POSIX_FIFO_SIZE", "4", 1);
    setenv("UCX_SYSV_FIFO_SIZE", "4", 1);
    auto collector = std::make_shared<server::Collector>(64);
    server::Receiver receiver(ucx_config(), collector);
    for (std::uint32_t round = 0; round < 30 && !HasFailure(); ++round)
        expect_delivered_after_flushes(receiver, *collector, 10 + 4 * round);
    receiver.stop();
    unsetenv("UCX_POSIX_FIFO_SIZE");
    unsetenv("UCX_SYSV_FIFO_SIZE");
}

TEST(AutoTransport, TakesUcxOnTheServersHostAndZeroMqOverTcp) {
    if (!transport::available(transport::Backend::Auto))
        GTEST_SKIP() << "built without UCX";
    auto config = test_config();
    config.backend = transport::Backend::Auto;
    TestServer server(config);
    const wire::ServerEndpoint &endpoint = server.receiver.endpoint();
    ASSERT_FALSE(endpoint.ucx.empty());
    ASSERT_FALSE(endpoint.tcp.empty());
    ASSERT_FALSE(endpoint.ipc.empty());
    transport::BindOptions both;
    both.backend = transport::Backend::Auto;
    EXPECT_THROW((void)transport::make_transport()->bind(both), transport::TransportError)
        << "an inbox of two backends";
    // A UCX address no client can use: a client that takes UCX fails on it, one that takes
    // ZeroMQ never reads it.
    wire::ServerEndpoint unusable_ucx = endpoint;
    unusable_ucx.ucx = "zz";
    auto t = transport::make_transport();
    transport::SendOptions local;
    local.token = kToken;
    try {
        (void)t->connect(unusable_ucx, local);
        ADD_FAILURE() << "a client on the server's host did not take UCX";
    } catch (const transport::TransportError &e) {
        EXPECT_NE(std::string(e.what()).find("UCX address is not hexadecimal"), std::string::npos)
            << e.what();
    }
    transport::SendOptions tcp = local; // as MELISSA_TRANSPORT=tcp asks
    tcp.prefer_local_ipc = false;
    // A client built without UCX takes ZeroMQ, and is refused by a server that has UCX only.
    auto zmq_only = transport::make_zmq_transport();
    wire::ServerEndpoint ucx_only = endpoint;
    ucx_only.tcp.clear();
    ucx_only.ipc.clear();
    EXPECT_THROW((void)zmq_only->connect(ucx_only, local), transport::TransportError);
    std::vector<double> values(10, 1.5);
    for (std::uint32_t step = 0; step < 3; ++step) {
        auto sender = step == 0   ? t->connect(unusable_ucx, tcp)
                      : step == 1 ? t->connect(endpoint, local)
                                  : zmq_only->connect(unusable_ucx, local);
        wire::Header h = piece(step, 0, values.size());
        h.client_rank = 0;
        h.n_client_ranks = 1;
        sender->send(wire::encode(h), values.data(), values.size() * 8);
        sender->flush();
        const auto d = server.collector->pop(5s);
        ASSERT_TRUE(d) << "time step " << step << " never arrived";
        EXPECT_EQ(d->time_step, step);
        EXPECT_EQ(static_cast<const double *>(d->values)[9], 1.5);
    }
}

TEST(UcxTransport, RefusesABadPollTime) {
    if (!transport::available(transport::Backend::Ucx))
        GTEST_SKIP() << "built without UCX";
    setenv("MELISSA_UCX_POLL_US", "fifty", 1);
    try {
        TestServer server(ucx_config());
        ADD_FAILURE() << "a server started with MELISSA_UCX_POLL_US=fifty";
    } catch (const std::exception &e) {
        EXPECT_NE(std::string(e.what()).find("MELISSA_UCX_POLL_US='fifty' is not a number"),
                  std::string::npos)
            << e.what();
    }
    unsetenv("MELISSA_UCX_POLL_US");
}
