// SPDX-License-Identifier: BSD-3-Clause
//
// The client library behind melissa_api.h: one Client per process, created by the first
// melissa_init and destroyed by melissa_finalize.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "melissa/melissa_api.h"
#include "transport/transport.hpp"
#include "transport/wire.hpp"

namespace melissa::client {

/// A failure with the C ABI's error code.
struct Error : std::runtime_error {
    Error(melissa_error code, const std::string &message)
        : std::runtime_error(message), code(code) {}
    melissa_error code;
};

/// The collective operations the client needs, so that a solver without MPI is the one-rank case.
class Communicator {
  public:
    virtual ~Communicator() = default;
    virtual int rank() const = 0;
    virtual int size() const = 0;
    virtual std::vector<std::uint64_t> allgather(std::uint64_t value) = 0;
    /// Makes rank 0's bytes everyone's.
    virtual void broadcast(std::vector<std::byte> &bytes) = 0;
};

std::unique_ptr<Communicator> self_communicator();

/// What the launcher says through the environment.
struct Settings {
    std::string server_address;
    std::uint32_t simulation_id = 0;
    std::uint64_t token = 0;
    std::chrono::milliseconds timeout{60000};
    bool prefer_local_ipc = true;

    static Settings from_environment(); // throws Error(MELISSA_ERR_ENVIRONMENT)
};

class Client {
  public:
    Client(Settings settings, std::unique_ptr<Communicator> comm);
    ~Client();

    void init(const std::string &field, std::uint64_t local_size);
    void send(const std::string &field, const void *values, wire::DType dtype);
    void finalize();

  private:
    struct Piece {
        std::uint32_t server;
        std::uint64_t offset, count; // in the whole field
    };
    struct Field {
        std::uint32_t id;
        std::uint64_t local_size, offset, global_size;
        std::optional<wire::DType> dtype;
        std::uint32_t time_step = 0;
        std::vector<Piece> pieces; // Routing::Cells: where this rank's values go
    };

    wire::Welcome handshake(const std::string &field, std::uint64_t global_size);
    transport::Sender &sender(std::uint32_t server);
    void send_to(std::uint32_t server, const wire::Header &header, const void *values,
                 std::size_t bytes, const std::string &call);
    void flush(std::uint32_t server);
    wire::Header header_for(const Field &field, wire::Kind kind) const;

    Settings settings_;
    std::unique_ptr<Communicator> comm_;
    std::unique_ptr<transport::Transport> transport_;
    std::vector<wire::ServerEndpoint> servers_;
    wire::Routing routing_ = wire::Routing::Cells;
    std::vector<std::unique_ptr<transport::Sender>> senders_; // by server rank, connected lazily
    std::vector<std::uint64_t> sent_;                         // messages sent to each server rank
    std::uint32_t run_;                                       // tells this process's messages
    std::map<std::string, Field> fields_;
};

} // namespace melissa::client
