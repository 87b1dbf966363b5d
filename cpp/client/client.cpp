// SPDX-License-Identifier: BSD-3-Clause
#include "client.hpp"

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <random>

namespace melissa::client {
namespace {

std::string required(const char *name) {
    const char *value = std::getenv(name);
    if (value == nullptr || *value == '\0')
        throw Error(MELISSA_ERR_ENVIRONMENT,
                    std::string(name) +
                        " is not set: a melissa client must be started by the melissa launcher "
                        "(or given MELISSA_SERVER_ADDRESS, MELISSA_SIMULATION_ID and "
                        "MELISSA_STUDY_TOKEN by hand)");
    return value;
}

std::uint64_t parse_unsigned(const char *name, const std::string &text, int base,
                             std::uint64_t max) {
    char *end = nullptr;
    errno = 0;
    const unsigned long long value = std::strtoull(text.c_str(), &end, base);
    if (errno != 0 || end == text.c_str() || *end != '\0' || text[0] == '-' || value > max)
        throw Error(MELISSA_ERR_ENVIRONMENT, std::string(name) + "='" + text + "' is not a valid " +
                                                 (base == 16 ? "hexadecimal token" : "number"));
    return value;
}

class SelfCommunicator final : public Communicator {
  public:
    int rank() const override { return 0; }
    int size() const override { return 1; }
    std::vector<std::uint64_t> allgather(std::uint64_t value) override { return {value}; }
    void broadcast(std::vector<std::byte> &) override {}
};

// What rank 0 broadcasts after the handshake: the error code, then the message or the layout.
std::vector<std::byte> encode_outcome(melissa_error code, const std::string &message,
                                      const std::vector<std::byte> &welcome) {
    wire::Writer w;
    w.u32(static_cast<std::uint32_t>(code)).str(message);
    std::vector<std::byte> bytes = w.bytes();
    bytes.insert(bytes.end(), welcome.begin(), welcome.end());
    return bytes;
}

} // namespace

std::unique_ptr<Communicator> self_communicator() { return std::make_unique<SelfCommunicator>(); }

Settings Settings::from_environment() {
    Settings s;
    s.server_address = required("MELISSA_SERVER_ADDRESS");
    s.simulation_id = static_cast<std::uint32_t>(
        parse_unsigned("MELISSA_SIMULATION_ID", required("MELISSA_SIMULATION_ID"), 10, UINT32_MAX));
    s.token =
        parse_unsigned("MELISSA_STUDY_TOKEN", required("MELISSA_STUDY_TOKEN"), 16, UINT64_MAX);
    if (const char *timeout = std::getenv("MELISSA_TIMEOUT")) {
        char *end = nullptr;
        const double seconds = std::strtod(timeout, &end);
        if (end == timeout || *end != '\0' || !(seconds > 0) || seconds > 1e6)
            throw Error(MELISSA_ERR_ENVIRONMENT, std::string("MELISSA_TIMEOUT='") + timeout +
                                                     "' is not a number of seconds > 0");
        s.timeout = std::chrono::milliseconds(static_cast<long long>(seconds * 1000));
    }
    if (const char *transport = std::getenv("MELISSA_TRANSPORT"))
        s.prefer_local_ipc = std::string(transport) != "tcp";
    return s;
}

Client::Client(Settings settings, std::unique_ptr<Communicator> comm)
    : settings_(std::move(settings)), comm_(std::move(comm)),
      transport_(transport::make_transport()),
      run_(static_cast<std::uint32_t>(std::random_device{}())) {}

// Senders close (flushing what they hold, at most the timeout) before the transport ends.
Client::~Client() {
    senders_.clear();
    transport_.reset();
}

wire::Welcome Client::handshake(const std::string &field, std::uint64_t global_size) {
    std::vector<std::byte> outcome;
    if (comm_->rank() == 0) {
        try {
            wire::Hello hello;
            hello.token = settings_.token;
            hello.simulation_id = settings_.simulation_id;
            hello.field_name = field;
            hello.field_size = global_size;
            hello.n_client_ranks = static_cast<std::uint32_t>(comm_->size());
            const auto reply = transport_->request(settings_.server_address,
                                                   wire::encode_hello(hello), settings_.timeout);
            outcome = encode_outcome(MELISSA_OK, "", reply);
        } catch (const transport::TimeoutError &e) {
            outcome = encode_outcome(MELISSA_ERR_TIMEOUT, e.what(), {});
        } catch (const transport::TransportError &e) {
            outcome = encode_outcome(MELISSA_ERR_TRANSPORT, e.what(), {});
        }
    }
    // Every rank learns rank 0's outcome, so that all fail together instead of some hanging.
    comm_->broadcast(outcome);
    wire::Reader r(outcome.data(), outcome.size());
    const auto code = static_cast<melissa_error>(r.u32());
    const std::string message = r.str();
    if (code != MELISSA_OK)
        throw Error(code, "melissa_init(\"" + field + "\"): " + message);
    wire::Welcome welcome;
    try {
        welcome =
            wire::decode_welcome(outcome.data() + r.consumed(), outcome.size() - r.consumed());
    } catch (const wire::MalformedMessage &e) {
        throw Error(MELISSA_ERR_TRANSPORT,
                    "melissa_init(\"" + field + "\"): the server at " + settings_.server_address +
                        " answered something that is not melissa's: " + e.what());
    }
    if (welcome.status != 0)
        throw Error(MELISSA_ERR_REJECTED,
                    "melissa_init(\"" + field + "\"): the server refused: " + welcome.message);
    if (welcome.servers.empty())
        throw Error(MELISSA_ERR_TRANSPORT, "melissa_init: the server listed no data endpoint");
    return welcome;
}

void Client::init(const std::string &field, std::uint64_t local_size) {
    if (fields_.count(field))
        throw Error(MELISSA_ERR_STATE,
                    "melissa_init: field '" + field + "' is already initialized");
    const std::vector<std::uint64_t> sizes = comm_->allgather(local_size);
    std::uint64_t offset = 0, global_size = 0;
    for (int r = 0; r < comm_->size(); ++r) {
        if (r < comm_->rank())
            offset += sizes[r];
        global_size += sizes[r];
    }
    if (global_size == 0)
        throw Error(MELISSA_ERR_ARGUMENT,
                    "melissa_init: field '" + field + "' has no cells on any rank");
    const wire::Welcome welcome = handshake(field, global_size);
    if (servers_.empty()) {
        servers_ = welcome.servers;
        routing_ = welcome.routing;
        senders_.resize(servers_.size());
        sent_.assign(servers_.size(), 0);
    }
    Field f{welcome.field_id, local_size, offset, global_size, std::nullopt, 0, {}};
    if (routing_ == wire::Routing::Cells) {
        const auto n = static_cast<std::uint32_t>(servers_.size());
        for (std::uint32_t s = 0; s < n; ++s) {
            const std::uint64_t lo = std::max(offset, wire::range_begin(global_size, s, n));
            const std::uint64_t hi =
                std::min(offset + local_size, wire::range_begin(global_size, s + 1, n));
            if (lo < hi)
                f.pieces.push_back({s, lo, hi - lo});
        }
    }
    fields_.emplace(field, std::move(f));
}

transport::Sender &Client::sender(std::uint32_t server) {
    auto &s = senders_.at(server);
    if (!s) {
        transport::SendOptions options;
        options.timeout = settings_.timeout;
        options.prefer_local_ipc = settings_.prefer_local_ipc;
        options.token = settings_.token;
        try {
            s = transport_->connect(servers_[server], options);
        } catch (const transport::TransportError &e) {
            throw Error(MELISSA_ERR_TRANSPORT, e.what());
        }
    }
    return *s;
}

void Client::send_to(std::uint32_t server, const wire::Header &header, const void *values,
                     std::size_t bytes, const std::string &call) {
    try {
        sender(server).send(wire::encode(header), values, bytes);
    } catch (const transport::TimeoutError &e) {
        throw Error(MELISSA_ERR_TIMEOUT, call + ": " + e.what());
    }
    ++sent_[server];
}

void Client::flush(std::uint32_t server) {
    try {
        sender(server).flush();
    } catch (const transport::TimeoutError &e) {
        throw Error(MELISSA_ERR_TIMEOUT, std::string("melissa_finalize: ") + e.what());
    }
    wire::Flush request{settings_.token, settings_.simulation_id,
                        static_cast<std::uint32_t>(comm_->rank()), run_, sent_[server]};
    const std::string &address = servers_[server].control;
    std::vector<std::byte> reply;
    try {
        reply = transport_->request(address, wire::encode_flush(request), settings_.timeout);
    } catch (const transport::TimeoutError &) {
        throw Error(MELISSA_ERR_TIMEOUT,
                    "melissa_finalize: server rank " + std::to_string(server) + " at " + address +
                        " did not confirm holding this rank's " + std::to_string(sent_[server]) +
                        " messages within the timeout; some were lost");
    } catch (const transport::TransportError &e) {
        throw Error(MELISSA_ERR_TRANSPORT, std::string("melissa_finalize: ") + e.what());
    }
    try {
        const wire::Flushed flushed = wire::decode_flushed(reply.data(), reply.size());
        if (flushed.received < sent_[server])
            throw Error(MELISSA_ERR_REJECTED, "melissa_finalize: server rank " +
                                                  std::to_string(server) +
                                                  " holds none of this "
                                                  "study's messages (wrong study token?)");
    } catch (const wire::MalformedMessage &e) {
        throw Error(MELISSA_ERR_TRANSPORT,
                    "melissa_finalize: server rank " + std::to_string(server) +
                        " answered something that is not melissa's: " + e.what());
    }
}

wire::Header Client::header_for(const Field &field, wire::Kind kind) const {
    wire::Header h;
    h.kind = kind;
    h.dtype = field.dtype.value_or(wire::DType::Float64);
    h.token = settings_.token;
    h.simulation_id = settings_.simulation_id;
    h.time_step = field.time_step;
    h.field_id = field.id;
    h.client_rank = static_cast<std::uint32_t>(comm_->rank());
    h.n_client_ranks = static_cast<std::uint32_t>(comm_->size());
    h.field_size = field.global_size;
    h.run = run_;
    return h;
}

void Client::send(const std::string &name, const void *values, wire::DType dtype) {
    const auto it = fields_.find(name);
    if (it == fields_.end())
        throw Error(MELISSA_ERR_ARGUMENT,
                    "melissa_send: field '" + name + "' was not declared by melissa_init");
    Field &field = it->second;
    if (values == nullptr && field.local_size > 0)
        throw Error(MELISSA_ERR_ARGUMENT, "melissa_send: the values of '" + name + "' are NULL");
    if (field.dtype && *field.dtype != dtype)
        throw Error(MELISSA_ERR_ARGUMENT,
                    "melissa_send: field '" + name + "' was sent as " +
                        (*field.dtype == wire::DType::Float64 ? "double" : "float") +
                        " before; a field keeps one value type");
    field.dtype = dtype;
    const std::size_t value_size = wire::dtype_size(dtype);
    wire::Header h = header_for(field, wire::Kind::Data);
    const std::string call = "melissa_send(\"" + name + "\")";
    auto send_piece = [&](std::uint32_t server, std::uint64_t offset, std::uint64_t count) {
        h.offset = offset;
        h.count = count;
        const auto *bytes =
            static_cast<const std::byte *>(values) + (offset - field.offset) * value_size;
        send_to(server, h, bytes, count * value_size, call);
    };
    if (routing_ == wire::Routing::Cells) {
        for (const Piece &p : field.pieces)
            send_piece(p.server, p.offset, p.count);
    } else if (field.local_size > 0) {
        const std::uint64_t key = routing_ == wire::Routing::WholeBySimulation
                                      ? settings_.simulation_id
                                      : field.time_step;
        send_piece(static_cast<std::uint32_t>(key % servers_.size()), field.offset,
                   field.local_size);
    }
    ++field.time_step;
}

void Client::finalize() {
    // Rank 0 tells every server rank how many time steps of each field this simulation sent:
    // with it, a server rank knows when it has all of the simulation's data.
    if (comm_->rank() == 0) {
        for (std::uint32_t s = 0; s < servers_.size(); ++s)
            for (const auto &[name, field] : fields_) {
                wire::Header h = header_for(field, wire::Kind::End);
                h.count = field.time_step;
                h.offset = fields_.size();
                send_to(s, h, nullptr, 0, "melissa_finalize");
            }
    }
    // Nothing is closed before every server rank holds what this rank sent it: closing a
    // connection may drop what it still queues.
    for (std::uint32_t s = 0; s < sent_.size(); ++s)
        if (sent_[s] > 0)
            flush(s);
    senders_.clear();
}

} // namespace melissa::client
