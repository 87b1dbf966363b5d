// SPDX-License-Identifier: BSD-3-Clause
#include "receiver.hpp"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <stdexcept>

namespace melissa::server {

using namespace std::chrono_literals;

// How long a thread waits for a message before it looks at `stopping_` again.
constexpr auto kPollInterval = 50ms;

// Delivered time steps are kept as one bit each per (simulation, field); a header claiming a
// larger time step is refused rather than allowed to allocate without bound.
constexpr std::uint32_t kMaxTimeSteps = 1u << 26;

// Pieces of an assembly given room when it begins; more client ranks make it grow.
constexpr std::uint64_t kReservedPieces = 1024;

struct Receiver::Assembly {
    struct Piece {
        std::uint32_t client_rank;
        std::uint64_t offset, count;
    };
    wire::DType dtype;
    std::uint64_t begin, length, filled = 0;
    // Left uninitialised, so that memory is touched only as pieces arrive: a field too large to
    // hold costs what was sent of it, not its size.
    std::shared_ptr<std::byte[]> buffer;
    // By client rank. A client's ranks hold consecutive slices of a field in rank order, and each
    // sends a server rank one piece per time step: pieces that keep that order and do not overlap
    // their neighbours are disjoint, so that `filled` reaching `length` means every cell written.
    std::vector<Piece> pieces;
};

namespace {

/// A buffer of n values of `size` bytes, or nothing if this machine cannot hold it.
std::shared_ptr<std::byte[]> allocate(std::uint64_t n, std::size_t size) noexcept {
    if (n > static_cast<std::uint64_t>(PTRDIFF_MAX) / size)
        return nullptr;
    try {
        return std::shared_ptr<std::byte[]>(new std::byte[n * size]);
    } catch (const std::bad_alloc &) {
        return nullptr;
    }
}

ReceiverConfig validated(ReceiverConfig config) {
    if (!config.field_sizes.empty() && config.field_sizes.size() != config.field_names.size())
        throw std::invalid_argument("Receiver: " + std::to_string(config.field_sizes.size()) +
                                    " field sizes declared for " +
                                    std::to_string(config.field_names.size()) + " fields");
    config.field_sizes.resize(config.field_names.size(), 0);
    if (config.nb_time_steps > kMaxTimeSteps)
        throw std::invalid_argument("Receiver: nb_time_steps beyond 2^26");
    return config;
}

/// The largest frame a client sends: a piece of the largest field, as float64, when every
/// field's size is declared; the transport's default otherwise.
std::int64_t max_message_bytes(const ReceiverConfig &config) {
    std::uint64_t largest = 0;
    for (std::uint64_t size : config.field_sizes) {
        if (size == 0)
            return transport::kDefaultMaxMessageBytes;
        largest = std::max(largest, size);
    }
    if (largest > static_cast<std::uint64_t>(INT64_MAX) / sizeof(double))
        return INT64_MAX;
    return std::max<std::int64_t>(wire::kHeaderSize,
                                  static_cast<std::int64_t>(largest * sizeof(double)));
}

} // namespace

struct Receiver::Simulation {
    std::map<std::pair<std::uint32_t, std::uint32_t>, Assembly> pending; // (field, time step)
    std::map<std::uint32_t, std::vector<bool>> delivered;                // by field, time step
    std::map<std::uint32_t, std::uint64_t> delivered_count;
    std::map<std::uint32_t, std::uint64_t> expected; // time steps this rank owns, by END seen
    std::uint64_t fields = 0;                        // how many fields must have an END
};

struct Receiver::PendingFlush {
    transport::ControlRequest request;
    wire::Flush flush;
    std::chrono::steady_clock::time_point since;
};

// A flush whose messages never come (they were lost with a dead client) is forgotten after this.
constexpr auto kForgetFlushAfter = std::chrono::minutes(10);

Receiver::Receiver(ReceiverConfig config, std::shared_ptr<Consumer> consumer)
    : config_(validated(std::move(config))), consumer_(std::move(consumer)),
      transport_(transport::make_transport()), field_sizes_(config_.field_sizes),
      max_time_steps_(config_.nb_time_steps != 0 ? config_.nb_time_steps : kMaxTimeSteps) {
    transport::BindOptions options;
    options.host = config_.host;
    options.bind_address = config_.bind_address;
    options.ipc_dir = config_.ipc_dir;
    options.name = std::to_string(config_.rank);
    options.high_water_mark = config_.high_water_mark;
    options.token = config_.token;
    options.max_message_bytes = max_message_bytes(config_);
    const bool both = config_.backend == transport::Backend::Auto;
    for (transport::Backend backend : {transport::Backend::Zmq, transport::Backend::Ucx}) {
        if (!both && backend != config_.backend)
            continue;
        options.backend = backend;
        inboxes_.push_back(transport_->bind(options));
        // Each backend fills its own of the endpoint's addresses.
        const wire::ServerEndpoint &taken = inboxes_.back()->endpoint();
        for (auto address :
             {&wire::ServerEndpoint::tcp, &wire::ServerEndpoint::ipc, &wire::ServerEndpoint::ucx})
            if (!(taken.*address).empty())
                endpoint_.*address = taken.*address;
        endpoint_.host = taken.host;
    }
    responder_ = transport_->respond(config_.bind_address);
    endpoint_.control = responder_->address();
    for (auto &inbox : inboxes_)
        receiver_threads_.emplace_back([this, &inbox = *inbox] { receive_loop(inbox); });
    control_thread_ = std::thread([this] { control_loop(); });
}

Receiver::~Receiver() { stop(); }

void Receiver::stop() {
    stopping_ = true;
    for (std::thread &thread : receiver_threads_)
        if (thread.joinable())
            thread.join();
    if (control_thread_.joinable())
        control_thread_.join();
    // The threads that used the sockets are gone: the ports close, and the authentication of
    // new peers stops with them.
    inboxes_.clear();
    responder_.reset();
    transport_.reset();
}

std::string Receiver::serve_handshakes(std::vector<wire::ServerEndpoint> layout) {
    if (layout.size() != config_.n_ranks)
        throw std::invalid_argument("serve_handshakes: the layout lists " +
                                    std::to_string(layout.size()) + " ranks, the server has " +
                                    std::to_string(config_.n_ranks));
    std::lock_guard<std::mutex> lock(mutex_);
    layout_ = std::move(layout);
    return endpoint_.control;
}

void Receiver::control_loop() {
    std::vector<PendingFlush> pending;
    while (!stopping_) {
        // While flushes wait, look often: the client is blocked until its answer.
        const auto wait = pending.empty() ? kPollInterval : std::chrono::milliseconds(2);
        if (auto request = responder_->receive(wait)) {
            try {
                if (wire::request_kind(request->body.data(), request->body.size()) ==
                    wire::Request::Hello) {
                    responder_->reply(*request, answer(request->body));
                } else {
                    const wire::Flush flush =
                        wire::decode_flush(request->body.data(), request->body.size());
                    pending.push_back(
                        {std::move(*request), flush, std::chrono::steady_clock::now()});
                }
            } catch (const wire::MalformedMessage &) {
                // Not ours: no answer, as to anything else that is not melissa's.
            }
        }
        const auto now = std::chrono::steady_clock::now();
        for (auto p = pending.begin(); p != pending.end();) {
            if (auto reply = answer_flush(p->flush)) {
                responder_->reply(p->request, *reply);
                p = pending.erase(p);
            } else if (now - p->since > kForgetFlushAfter) {
                p = pending.erase(p);
            } else {
                ++p;
            }
        }
    }
}

std::optional<std::vector<std::byte>> Receiver::answer_flush(const wire::Flush &flush) {
    std::lock_guard<std::mutex> lock(mutex_);
    const auto found = arrived_.find({flush.simulation_id, flush.client_rank, flush.run});
    const std::uint64_t received = found == arrived_.end() ? 0 : found->second;
    // Another study's client learns at once that nothing of it is here.
    if (received < flush.messages && flush.token == config_.token)
        return std::nullopt;
    return wire::encode_flushed({flush.token == config_.token ? received : 0});
}

std::vector<std::byte> Receiver::answer(const std::vector<std::byte> &request) {
    wire::Welcome welcome;
    welcome.routing = config_.routing;
    const std::string refusal = admit(request, welcome);
    std::lock_guard<std::mutex> lock(mutex_);
    if (refusal.empty()) {
        ++counters_.handshakes;
    } else {
        ++counters_.rejected_handshakes;
        welcome.status = 1;
        welcome.message = refusal;
    }
    return wire::encode_welcome(welcome);
}

std::string Receiver::admit(const std::vector<std::byte> &request, wire::Welcome &welcome) {
    wire::Hello hello;
    try {
        hello = wire::decode_hello(request.data(), request.size());
    } catch (const wire::MalformedMessage &e) {
        return std::string("malformed handshake: ") + e.what();
    }
    std::vector<wire::ServerEndpoint> layout;
    {
        std::lock_guard<std::mutex> lock(mutex_);
        layout = layout_;
    }
    if (layout.empty())
        return "this server rank does not take handshakes (rank 0 does)";
    if (hello.token != config_.token)
        return "wrong study token: this client belongs to another study";
    const auto found =
        std::find(config_.field_names.begin(), config_.field_names.end(), hello.field_name);
    if (found == config_.field_names.end()) {
        std::string known;
        for (const auto &name : config_.field_names)
            known += (known.empty() ? "'" : ", '") + name + "'";
        return "unknown field '" + hello.field_name + "'; the study's fields are " + known;
    }
    welcome.field_id = static_cast<std::uint32_t>(found - config_.field_names.begin());
    if (hello.field_size == 0)
        return "field '" + hello.field_name + "' has no cells";
    {
        std::lock_guard<std::mutex> lock(mutex_);
        std::uint64_t &known = field_sizes_[welcome.field_id];
        if (known == 0)
            known = hello.field_size;
        else if (known != hello.field_size)
            return config_.field_sizes[welcome.field_id] != 0
                       ? "field '" + hello.field_name + "' is declared with " +
                             std::to_string(known) + " cells, this simulation has " +
                             std::to_string(hello.field_size)
                       : "field '" + hello.field_name + "' has " + std::to_string(known) +
                             " cells in the other simulations, " +
                             std::to_string(hello.field_size) + " in this one";
    }
    welcome.servers = std::move(layout);
    return {};
}

void Receiver::receive_loop(transport::Inbox &inbox) {
    while (!stopping_) {
        std::unique_ptr<transport::Message> message = inbox.receive(kPollInterval);
        if (message) {
            std::lock_guard<std::mutex> handling(handling_);
            handle(std::move(message));
        }
    }
}

std::unique_lock<std::mutex> Receiver::pause() { return std::unique_lock<std::mutex>(handling_); }

DeliveryState Receiver::delivery_state() const {
    std::lock_guard<std::mutex> lock(mutex_);
    DeliveryState state;
    state.finished.assign(finished_.begin(), finished_.end());
    state.field_sizes = known_sizes();
    for (const auto &[sim, simulation] : simulations_) {
        if (finished_.count(sim))
            continue;
        for (const auto &[field, steps] : simulation.delivered) {
            std::vector<std::uint32_t> &out = state.delivered[{sim, field}];
            for (std::uint32_t t = 0; t < steps.size(); ++t)
                if (steps[t])
                    out.push_back(t);
        }
    }
    return state;
}

void Receiver::restore(const DeliveryState &state) {
    std::lock_guard<std::mutex> lock(mutex_);
    // All checked before anything changes: a refused state leaves the receiver as it was.
    auto check_field = [&](std::uint32_t field) {
        if (field >= config_.field_names.size())
            throw std::invalid_argument("Receiver.restore: field " + std::to_string(field) +
                                        " of a study with " +
                                        std::to_string(config_.field_names.size()) + " fields");
    };
    for (const auto &[field, size] : state.field_sizes) {
        check_field(field);
        if (size == 0 || (field_sizes_[field] != 0 && field_sizes_[field] != size))
            throw std::invalid_argument("Receiver.restore: " +
                                        size_mismatch(field, field_sizes_[field], size));
    }
    for (const auto &[key, steps] : state.delivered) {
        check_field(key.second);
        for (std::uint32_t t : steps)
            if (t >= max_time_steps_)
                throw std::invalid_argument("Receiver.restore: time step " + std::to_string(t) +
                                            " " + beyond_time_steps());
    }
    finished_.insert(state.finished.begin(), state.finished.end());
    for (const auto &[field, size] : state.field_sizes)
        field_sizes_[field] = size;
    for (const auto &[key, steps] : state.delivered) {
        Simulation &sim = simulations_[key.first];
        std::vector<bool> &delivered = sim.delivered[key.second];
        for (std::uint32_t t : steps) {
            if (delivered.size() <= t)
                delivered.resize(t + 1, false);
            if (!delivered[t]) {
                delivered[t] = true;
                ++sim.delivered_count[key.second];
            }
        }
    }
}

void Receiver::drop(const std::string &reason) { ++counters_.dropped[reason]; }

std::string Receiver::size_mismatch(std::uint32_t field, std::uint64_t known,
                                    std::uint64_t size) const {
    if (config_.field_sizes[field] == 0)
        return "field size differs from the handshake's";
    return "field '" + config_.field_names[field] + "': " + std::to_string(size) +
           " cells received, " + std::to_string(known) + " declared";
}

const char *Receiver::beyond_time_steps() const {
    return config_.nb_time_steps != 0 ? "beyond nb_time_steps" : "beyond 2^26";
}

std::map<std::uint32_t, std::uint64_t> Receiver::known_sizes() const {
    std::map<std::uint32_t, std::uint64_t> sizes;
    for (std::uint32_t field = 0; field < field_sizes_.size(); ++field)
        if (field_sizes_[field] != 0)
            sizes[field] = field_sizes_[field];
    return sizes;
}

void Receiver::count(const wire::Header &h, std::size_t bytes) {
    ++counters_.messages;
    counters_.bytes += bytes;
    auto &per_simulation = counters_.simulations[h.simulation_id];
    ++per_simulation.messages;
    per_simulation.bytes += bytes;
}

std::pair<std::uint64_t, std::uint64_t> Receiver::owned_cells(std::uint64_t field_size) const {
    if (config_.routing != wire::Routing::Cells)
        return {0, field_size};
    return {wire::range_begin(field_size, config_.rank, config_.n_ranks),
            wire::range_begin(field_size, config_.rank + 1, config_.n_ranks)};
}

bool Receiver::routed_here(const wire::Header &h) const {
    switch (config_.routing) {
    case wire::Routing::WholeBySimulation:
        return h.simulation_id % config_.n_ranks == config_.rank;
    case wire::Routing::WholeByTimeStep:
        return h.time_step % config_.n_ranks == config_.rank;
    case wire::Routing::Cells:
        break;
    }
    const auto [begin, end] = owned_cells(h.field_size);
    return h.offset >= begin && h.offset + h.count <= end;
}

std::uint64_t Receiver::steps_owned(const wire::Header &h, std::uint64_t steps) const {
    const std::uint64_t n = config_.n_ranks, rank = config_.rank;
    switch (config_.routing) {
    case wire::Routing::Cells: {
        // A field of fewer cells than ranks leaves some ranks none.
        const auto [begin, end] = owned_cells(h.field_size);
        return begin == end ? 0 : steps;
    }
    case wire::Routing::WholeBySimulation:
        return h.simulation_id % n == rank ? steps : 0;
    case wire::Routing::WholeByTimeStep:
        return steps > rank ? (steps - rank - 1) / n + 1 : 0;
    }
    return 0;
}

void Receiver::handle(std::unique_ptr<transport::Message> message) {
    std::unique_lock<std::mutex> lock(mutex_);
    wire::Defect defect = wire::Defect::None;
    const auto decoded = message->has_extra_frames()
                             ? std::nullopt
                             : wire::decode(message->header(), message->header_size(),
                                            message->payload_size(), defect);
    if (!decoded)
        return drop(message->has_extra_frames()
                        ? "malformed: extra frames"
                        : std::string("malformed: ") + wire::describe(defect));
    const wire::Header &h = *decoded;
    if (h.token != config_.token)
        return drop("wrong study token");
    ++arrived_[{h.simulation_id, h.client_rank, h.run}];
    if (h.field_id >= config_.field_names.size())
        return drop("unknown field");
    // Checked before anything is allocated for the field; learnt (when not declared) only from
    // a message that is taken, so that one dropped cannot set the size for the others.
    std::uint64_t &known_size = field_sizes_[h.field_id];
    if (known_size != 0 && known_size != h.field_size)
        return drop(size_mismatch(h.field_id, known_size, h.field_size));
    if (finished_.count(h.simulation_id))
        return drop("simulation already complete");
    Simulation &sim = simulations_[h.simulation_id];

    if (h.kind == wire::Kind::End) {
        const bool declared = config_.nb_time_steps != 0;
        if (declared && h.count != config_.nb_time_steps)
            return drop("END's time steps differ from nb_time_steps");
        known_size = h.field_size;
        sim.expected[h.field_id] = steps_owned(h, h.count);
        // Declared, every field of the study must come, whatever the client says it sends.
        sim.fields = declared ? config_.field_names.size() : h.offset;
        return update_finished(h.simulation_id);
    }

    if (!routed_here(h))
        return drop("cells not routed to this rank");
    if (h.time_step >= max_time_steps_)
        return drop(std::string("time step ") + beyond_time_steps());
    std::vector<bool> &delivered = sim.delivered[h.field_id];
    if (h.time_step < delivered.size() && delivered[h.time_step])
        return drop("time step already received");

    const auto [begin, end] = owned_cells(h.field_size);
    const std::size_t value_size = wire::dtype_size(h.dtype);
    if (h.offset == begin && h.count == end - begin) {
        // The piece is all this rank owns: handed over as received, no copy.
        known_size = h.field_size;
        count(h, message->payload_size());
        std::shared_ptr<transport::Message> owner(std::move(message));
        const void *values = owner->payload();
        lock.unlock();
        return complete(h, {h.simulation_id, h.field_id, h.time_step, begin, end - begin, h.dtype,
                            values, owner});
    }
    const auto key = std::make_pair(h.field_id, h.time_step);
    auto found = sim.pending.find(key);
    if (found == sim.pending.end()) {
        // The last line behind the size checks: a field too large for this machine, whose size
        // was not declared, costs a drop, not the rank.
        auto buffer = allocate(end - begin, value_size);
        if (!buffer)
            return drop("no memory to assemble the field");
        found = sim.pending
                    .emplace(key, Assembly{h.dtype, begin, end - begin, 0, std::move(buffer), {}})
                    .first;
        // Each client rank with cells here sends one piece: room for them all at once, but for
        // what a header claims of many ranks.
        found->second.pieces.reserve(
            std::min<std::uint64_t>({h.n_client_ranks, end - begin, kReservedPieces}));
    }
    Assembly &a = found->second;
    if (a.dtype != h.dtype)
        return drop("value type differs between pieces");
    const auto next = std::lower_bound(
        a.pieces.begin(), a.pieces.end(), h.client_rank,
        [](const Assembly::Piece &p, std::uint32_t rank) { return p.client_rank < rank; });
    if (next != a.pieces.end() && next->client_rank == h.client_rank)
        return drop("piece already received");
    if ((next != a.pieces.begin() && std::prev(next)->offset + std::prev(next)->count > h.offset) ||
        (next != a.pieces.end() && h.offset + h.count > next->offset))
        return drop("pieces overlap");
    a.pieces.insert(next, {h.client_rank, h.offset, h.count});
    known_size = h.field_size;
    count(h, message->payload_size());
    std::memcpy(a.buffer.get() + (h.offset - a.begin) * value_size, message->payload(),
                message->payload_size());
    a.filled += h.count;
    if (a.filled < a.length)
        return;
    Delivery delivery{h.simulation_id, h.field_id, h.time_step,    a.begin,
                      a.length,        a.dtype,    a.buffer.get(), a.buffer};
    sim.pending.erase(found);
    lock.unlock();
    complete(h, std::move(delivery));
}

void Receiver::complete(const wire::Header &h, Delivery delivery) {
    {
        // Marked before the consumer sees it, so that a repeat arriving meanwhile is dropped.
        std::lock_guard<std::mutex> lock(mutex_);
        Simulation &sim = simulations_[h.simulation_id];
        std::vector<bool> &delivered = sim.delivered[h.field_id];
        if (delivered.size() <= h.time_step)
            delivered.resize(h.time_step + 1, false);
        delivered[h.time_step] = true;
        ++sim.delivered_count[h.field_id];
        ++counters_.simulations[h.simulation_id].time_steps;
    }
    consumer_->deliver(delivery, stopping_);
    std::lock_guard<std::mutex> lock(mutex_);
    update_finished(h.simulation_id);
}

void Receiver::update_finished(std::uint32_t simulation_id) {
    const Simulation &sim = simulations_[simulation_id];
    if (sim.fields == 0 || sim.expected.size() < sim.fields)
        return;
    for (const auto &[field, steps] : sim.expected) {
        const auto got = sim.delivered_count.find(field);
        if ((got == sim.delivered_count.end() ? 0 : got->second) < steps)
            return;
    }
    finished_.insert(simulation_id);
}

Counters Receiver::counters() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return counters_;
}

std::vector<std::uint32_t> Receiver::finished_simulations() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return {finished_.begin(), finished_.end()};
}

std::map<std::uint32_t, std::uint64_t> Receiver::field_sizes() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return known_sizes();
}

} // namespace melissa::server
