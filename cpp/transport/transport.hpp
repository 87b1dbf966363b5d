// SPDX-License-Identifier: BSD-3-Clause
//
// What the client library and the server receiver need from a transport, and nothing more, so
// that a backend other than ZeroMQ (UCX, for RDMA) can be added without touching either. Data goes
// one way, from a client rank to a server rank, in messages of a header and values; control is a
// request-reply between client rank 0 and server rank 0.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "wire.hpp"

namespace melissa::transport {

/// The peer did not answer, or did not take data, within the timeout.
struct TimeoutError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

/// Anything else the transport could not do (bind, connect, a bad address).
struct TransportError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

/// A received data message; its bytes stay valid while it lives.
class Message {
  public:
    virtual ~Message() = default;
    virtual const std::byte *header() const = 0;
    virtual std::size_t header_size() const = 0;
    virtual const std::byte *payload() const = 0;
    virtual std::size_t payload_size() const = 0;
    /// More than two frames came: not a melissa message.
    virtual bool has_extra_frames() const = 0;
};

/// One client rank's data connection to one server rank.
class Sender {
  public:
    virtual ~Sender() = default;
    /// Sends a header and `bytes` of values; once it returns, the caller may reuse its buffer.
    /// Blocks while the server rank's queue is full (back-pressure); throws TimeoutError past
    /// the timeout.
    virtual void send(const wire::HeaderBytes &header, const void *values, std::size_t bytes) = 0;
    /// Returns once what was sent is out of this process's hands (UCX moves messages only
    /// while its sender waits); throws TimeoutError past the timeout.
    virtual void flush() {}
};

/// Where one server rank receives data, from any number of senders.
class Inbox {
  public:
    virtual ~Inbox() = default;
    virtual const wire::ServerEndpoint &endpoint() const = 0;
    /// The next message, or nullptr after `timeout` without one.
    virtual std::unique_ptr<Message> receive(std::chrono::milliseconds timeout) = 0;
};

/// A control request received by a server rank, to be answered (maybe later) by reply().
struct ControlRequest {
    std::vector<std::byte> peer; // who to answer: opaque to the caller
    std::vector<std::byte> body;
};

/// A server rank's side of the control channel. Not thread-safe: one thread receives and
/// replies.
class Responder {
  public:
    virtual ~Responder() = default;
    virtual const std::string &address() const = 0;
    /// The next request, or nothing after `timeout`.
    virtual std::optional<ControlRequest> receive(std::chrono::milliseconds timeout) = 0;
    virtual void reply(const ControlRequest &request, const std::vector<std::byte> &answer) = 0;
};

/// The largest frame an inbox takes when BindOptions does not say: 1 GiB, a piece of 2^27
/// float64 values. A peer announcing a larger one is disconnected before anything is allocated
/// for it; a server whose fields are larger must declare their sizes (ReceiverConfig).
constexpr std::int64_t kDefaultMaxMessageBytes = std::int64_t{1} << 30;

struct SendOptions {
    std::chrono::milliseconds timeout{60000};
    int high_water_mark = 8;      // messages queued (in flight, UCX) before send blocks
    bool prefer_local_ipc = true; // a server on this host is reached through a Unix socket
    std::uint64_t token = 0;      // the study's, without which an inbox takes nothing
};

/// What carries data. Control (handshakes, flushes) is ZeroMQ's in all: a few small requests
/// per client rank, where latency matters and bandwidth does not. Auto is a server's: it takes
/// data on both (an inbox of each, server::Receiver), and each client takes UCX where UCX pays,
/// to a server on its own host (shared memory) or over RDMA, and ZeroMQ where UCX would take
/// tcp, whose stream ZeroMQ moves with less CPU (bench/RESULTS.md).
enum class Backend { Zmq, Ucx, Auto };

/// Whether this build can carry data on `backend` (UCX is optional at build time).
bool available(Backend backend);

struct BindOptions {
    Backend backend = Backend::Zmq; // Zmq or Ucx: an inbox takes data on one
    std::string host;               // this host's name: clients that have the same reach it by ipc
    std::string bind_address;       // the IP address (v4 or v6) listened on, which tcp clients use
    std::string ipc_dir;            // where the Unix socket goes; empty: no ipc endpoint (ZeroMQ)
    std::string name;               // distinguishes the sockets of several ranks on one host
    int high_water_mark = 8;        // ZeroMQ's queue per connection
    // Only a peer that presents it may send: ZeroMQ's PLAIN mechanism, the token (16 hex digits)
    // as password, checked before the connection carries any message; UCX checks it in each
    // message's header before it fetches the values. It travels in clear text.
    std::uint64_t token = 0;
    std::int64_t max_message_bytes = kDefaultMaxMessageBytes; // larger frames: disconnected
};

class Transport {
  public:
    virtual ~Transport() = default;
    /// Data to one server rank, on the backend its endpoint advertises.
    virtual std::unique_ptr<Sender> connect(const wire::ServerEndpoint &server,
                                            const SendOptions &options) = 0;
    virtual std::unique_ptr<Inbox> bind(const BindOptions &options) = 0;
    /// Client side of the control channel: one request, one answer, or TimeoutError.
    virtual std::vector<std::byte> request(const std::string &address,
                                           const std::vector<std::byte> &message,
                                           std::chrono::milliseconds timeout) = 0;
    /// Control requests, on `bind_address` (as BindOptions's), in messages of at most 64 KiB.
    virtual std::unique_ptr<Responder> respond(const std::string &bind_address) = 0;
};

std::unique_ptr<Transport> make_zmq_transport();

/// Every backend this build has: inboxes take data on BindOptions::backend, and senders follow
/// each endpoint (UCX where the server advertises a UCX worker). Asked for UCX without it, bind
/// and connect throw TransportError.
std::unique_ptr<Transport> make_transport();

/// This host's name, as servers advertise it and clients compare it.
std::string host_name();

} // namespace melissa::transport
