// SPDX-License-Identifier: BSD-3-Clause
//
// A server rank's receiver: a thread that takes data messages off the transport, validates them,
// assembles the pieces of each (simulation, field, time step) that this rank owns, and hands
// every complete piece to a consumer, without Python. On rank 0 a second thread answers the
// clients' handshakes.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "transport/transport.hpp"
#include "transport/wire.hpp"

namespace melissa::server {

/// The values of one (simulation, field, time step) that this rank owns, complete.
struct Delivery {
    std::uint32_t simulation_id, field_id, time_step;
    std::uint64_t offset; // first cell, in the whole field
    std::uint64_t count;
    wire::DType dtype;
    const void *values;
    std::shared_ptr<const void> owner; // keeps `values` alive for whoever keeps it
};

class Consumer {
  public:
    virtual ~Consumer() = default;
    /// Called on a receiver thread (one per backend, one at a time); may block (that slows the
    /// clients down: back-pressure).
    /// `stopping` becomes true when the receiver stops; a blocked consumer must then return.
    virtual void deliver(const Delivery &delivery, const std::atomic<bool> &stopping) = 0;
};

struct ReceiverConfig {
    std::vector<std::string> field_names;
    std::uint64_t token = 0;
    std::uint32_t rank = 0, n_ranks = 1;
    wire::Routing routing = wire::Routing::Cells;
    std::string host;         // this host's name: clients that have the same use ipc
    std::string bind_address; // the IP address listened on, which tcp clients connect to
    std::string ipc_dir;      // empty: tcp only
    int high_water_mark = 8;
    transport::Backend backend = transport::Backend::Zmq; // what carries data (transport.hpp)
    // Cells of each field, by field id, as the study declares them: every handshake and message
    // must agree. Empty, or 0 for a field: not declared, and the first size seen is the field's.
    std::vector<std::uint64_t> field_sizes;
    // Time steps of each field every simulation sends. Declared (> 0), a simulation is finished
    // on a rank when the rank holds each of them that it owns, of every field of the study; not
    // declared (0), when it holds what the simulation's END messages say it sent.
    std::uint32_t nb_time_steps = 0;
};

/// Why messages were dropped, and how many of each.
struct Counters {
    std::uint64_t messages = 0, bytes = 0, handshakes = 0, rejected_handshakes = 0;
    std::map<std::string, std::uint64_t> dropped;
    struct PerSimulation {
        std::uint64_t messages = 0, bytes = 0, time_steps = 0;
    };
    std::map<std::uint32_t, PerSimulation> simulations;
};

/// What a checkpoint keeps of a receiver: which simulations are complete, and which time steps
/// of the others were delivered, so that a resumed server counts nothing twice.
struct DeliveryState {
    std::vector<std::uint32_t> finished;
    // (simulation, field) -> delivered time steps, for simulations not finished
    std::map<std::pair<std::uint32_t, std::uint32_t>, std::vector<std::uint32_t>> delivered;
    std::map<std::uint32_t, std::uint64_t> field_sizes;
};

class Receiver {
  public:
    Receiver(ReceiverConfig config, std::shared_ptr<Consumer> consumer);
    ~Receiver();

    const ReceiverConfig &config() const { return config_; }
    /// The cells [first, end) this rank owns of a field of `field_size` cells.
    std::pair<std::uint64_t, std::uint64_t> owned_cells(std::uint64_t field_size) const;

    /// Where this rank receives data and control requests.
    const wire::ServerEndpoint &endpoint() const { return endpoint_; }

    /// Rank 0: answers handshakes with the layout of all ranks (from an allgather of endpoint()).
    /// Returns the control address the clients need (MELISSA_SERVER_ADDRESS).
    std::string serve_handshakes(std::vector<wire::ServerEndpoint> layout);

    Counters counters() const;
    /// Simulations whose every field this rank owns has arrived whole (END seen, nothing missing).
    std::vector<std::uint32_t> finished_simulations() const;
    /// Sizes of the fields declared or seen so far (by handshake on rank 0, by data elsewhere),
    /// by field id.
    std::map<std::uint32_t, std::uint64_t> field_sizes() const;
    /// Holds the receiver threads between two messages while the returned lock lives: the
    /// receiver's and its consumer's states are then consistent with each other (checkpoints).
    std::unique_lock<std::mutex> pause();
    DeliveryState delivery_state() const;
    /// Takes up a checkpoint's state, before any client connects.
    void restore(const DeliveryState &state);

    /// Stops the threads and closes the sockets; idempotent. Called by the destructor.
    void stop();

  private:
    struct Assembly;
    struct Simulation;

    struct PendingFlush;

    void receive_loop(transport::Inbox &inbox);
    void control_loop();
    void handle(std::unique_ptr<transport::Message> message);
    std::vector<std::byte> answer(const std::vector<std::byte> &request);
    /// Why a handshake is refused (empty if it is not), filling `welcome` as it goes.
    std::string admit(const std::vector<std::byte> &request, wire::Welcome &welcome);
    /// The answer to a flush, or nothing while messages it waits for are still on their way.
    std::optional<std::vector<std::byte>> answer_flush(const wire::Flush &flush);
    void drop(const std::string &reason);
    /// Why `size` cells of `field` are refused, knowing it has `known` cells.
    std::string size_mismatch(std::uint32_t field, std::uint64_t known, std::uint64_t size) const;
    /// "beyond nb_time_steps" or "beyond 2^26": why a time step is refused.
    const char *beyond_time_steps() const;
    std::map<std::uint32_t, std::uint64_t> known_sizes() const;
    void count(const wire::Header &h, std::size_t bytes);
    /// How many of `steps` time steps of h's simulation and field this rank owns.
    std::uint64_t steps_owned(const wire::Header &h, std::uint64_t steps) const;
    bool routed_here(const wire::Header &h) const;
    void complete(const wire::Header &h, Delivery delivery);
    void update_finished(std::uint32_t simulation_id);

    ReceiverConfig config_;
    std::shared_ptr<Consumer> consumer_;
    std::unique_ptr<transport::Transport> transport_;
    std::vector<std::unique_ptr<transport::Inbox>> inboxes_; // one per backend
    std::unique_ptr<transport::Responder> responder_;
    wire::ServerEndpoint endpoint_;

    std::mutex handling_;      // held by a receiver thread while it handles a message
    mutable std::mutex mutex_; // guards what the two threads and the caller share, below
    Counters counters_;
    std::vector<wire::ServerEndpoint> layout_; // empty until serve_handshakes (rank 0 only)
    // Messages that arrived from each (simulation, client rank, run): what a flush waits for.
    std::map<std::tuple<std::uint32_t, std::uint32_t, std::uint32_t>, std::uint64_t> arrived_;
    std::vector<std::uint64_t> field_sizes_; // by field id; 0 until declared or seen
    std::uint32_t max_time_steps_;           // time steps of a field beyond this are dropped
    std::map<std::uint32_t, Simulation> simulations_;
    std::set<std::uint32_t> finished_;

    std::atomic<bool> stopping_{false};
    std::vector<std::thread> receiver_threads_; // one per inbox
    std::thread control_thread_;
};

} // namespace melissa::server
