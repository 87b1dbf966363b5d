// SPDX-License-Identifier: BSD-3-Clause
//
// A one-rank receiver over real ZeroMQ sockets, and messages to send it, for the tests of the
// transport, the receiver and its checkpoints.
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>
#include <zmq.hpp>

#include "server/consumers.hpp"
#include "server/receiver.hpp"
#include "transport/transport.hpp"

namespace melissa::testing {

using namespace std::chrono_literals;

constexpr std::uint64_t kToken = 0xC0FFEE;

/// A study of two fields, u and v, on one server rank.
inline server::ReceiverConfig test_config(wire::Routing routing = wire::Routing::Cells) {
    server::ReceiverConfig config;
    config.field_names = {"u", "v"};
    config.token = kToken;
    config.routing = routing;
    config.host = transport::host_name();
    config.bind_address = "127.0.0.1";
    config.ipc_dir = "/tmp";
    return config;
}

/// How many messages `receiver` dropped for `reason`.
inline std::uint64_t dropped(const server::Receiver &receiver, const std::string &reason) {
    const auto counters = receiver.counters();
    const auto found = counters.dropped.find(reason);
    return found == counters.dropped.end() ? 0 : found->second;
}

/// Returns once `receiver` has handled everything `sender` sent so far: messages of one sender
/// are handled in order, so this sends one the receiver drops, and waits for the drop.
inline void settle(const server::Receiver &receiver, transport::Sender &sender) {
    const std::uint64_t before = dropped(receiver, "unknown field");
    wire::Header h;
    h.kind = wire::Kind::End;
    h.token = kToken;
    h.field_id = 99;
    h.n_client_ranks = 1;
    sender.send(wire::encode(h), nullptr, 0);
    for (int i = 0; i < 500 && dropped(receiver, "unknown field") == before; ++i)
        std::this_thread::sleep_for(10ms);
}

/// A client's data connection to `receiver`.
inline std::unique_ptr<transport::Sender> connect(transport::Transport &t,
                                                  const server::Receiver &receiver) {
    transport::SendOptions options;
    options.token = kToken;
    return t.connect(receiver.endpoint(), options);
}

/// A server rank collecting what it receives; rank 0 answers handshakes.
struct TestServer {
    std::shared_ptr<server::Collector> collector = std::make_shared<server::Collector>(64);
    server::Receiver receiver;
    std::string address;

    explicit TestServer(server::ReceiverConfig config = test_config())
        : receiver(config, collector) {
        if (config.rank == 0 && config.n_ranks == 1)
            address = receiver.serve_handshakes({receiver.endpoint()});
    }

    std::uint64_t dropped(const std::string &reason) const {
        return testing::dropped(receiver, reason);
    }

    /// Waits for the receiver to count `n` dropped messages in all.
    std::uint64_t dropped_after(std::uint64_t n) const {
        for (int i = 0; i < 200; ++i) {
            std::uint64_t total = 0;
            for (const auto &[reason, count] : receiver.counters().dropped)
                total += count;
            if (total >= n)
                return total;
            std::this_thread::sleep_for(10ms);
        }
        return 0;
    }

    void settle(transport::Sender &sender) const { testing::settle(receiver, sender); }
};

inline std::unique_ptr<transport::Sender> connect(transport::Transport &t,
                                                  const TestServer &server) {
    return connect(t, server.receiver);
}

/// What a peer that is not a melissa client may do: a ZeroMQ PUSH socket connected to `server`
/// over tcp, presenting `password` (ZeroMQ PLAIN), or nothing if it is empty. Closing it waits
/// up to 5 s for what it sends to leave.
inline zmq::socket_t raw_push(zmq::context_t &context, const TestServer &server,
                              const std::string &password) {
    zmq::socket_t socket(context, zmq::socket_type::push);
    socket.set(zmq::sockopt::linger, 5000);
    if (!password.empty()) {
        socket.set(zmq::sockopt::plain_username, "melissa");
        socket.set(zmq::sockopt::plain_password, password);
    }
    socket.connect(server.receiver.endpoint().tcp);
    return socket;
}

/// The study token as a client presents it.
inline std::string token_hex(std::uint64_t token = kToken) {
    char hex[17];
    std::snprintf(hex, sizeof(hex), "%016llx", static_cast<unsigned long long>(token));
    return hex;
}

/// A piece of simulation 3's field u (10 cells, from 2 client ranks).
inline wire::Header piece(std::uint32_t step, std::uint64_t offset, std::uint64_t count) {
    wire::Header h;
    h.token = kToken;
    h.simulation_id = 3;
    h.time_step = step;
    h.field_id = 0;
    h.n_client_ranks = 2;
    h.client_rank = offset == 0 ? 0 : 1;
    h.field_size = 10;
    h.offset = offset;
    h.count = count;
    return h;
}

/// Server rank 0's answer to a handshake for `field` of `size` cells.
inline wire::Welcome handshake(const std::string &address, const std::string &field,
                               std::uint64_t size) {
    wire::Hello hello;
    hello.token = kToken;
    hello.field_name = field;
    hello.field_size = size;
    hello.n_client_ranks = 1;
    auto t = transport::make_zmq_transport();
    const auto reply = t->request(address, wire::encode_hello(hello), 2s);
    return wire::decode_welcome(reply.data(), reply.size());
}

} // namespace melissa::testing
