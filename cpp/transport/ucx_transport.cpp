// SPDX-License-Identifier: BSD-3-Clause
//
// The UCX backend for data, on UCX's tag matching (the path MPI libraries take): a header and
// its values are two tagged messages. UCX chooses how they go: shared memory between processes
// of one host (for large values a single copy by the kernel, cma), TCP or RDMA (verbs) between
// hosts. Large values go by rendezvous: the server, once it is ready for the message, fetches
// them straight from the solver's buffer into the buffer the statistics then read in place, and
// the client's send returns when they are fetched. That wait is the back-pressure: a sender has
// at most one message in flight, and a server fetches only when its consumer takes more.
// Control stays on ZeroMQ.
#include <poll.h>
#include <ucp/api/ucp.h>

#include <algorithm>
#include <cstring>
#include <list>
#include <random>
#include <utility>

#include "transport.hpp"

namespace melissa::transport {
namespace {

using Clock = std::chrono::steady_clock;

// An idle worker sleeps on its event file descriptor at most this long before it looks again:
// a bound on the cost of a missed wake-up, not a polling interval.
constexpr std::chrono::milliseconds kMaxSleep{100};

// How long a worker polls before it sleeps. A rendezvous is a few round trips between client
// and server, each as long as a wake-up when they sleep (tens of microseconds here); polling
// through them made 64 KiB messages 4x faster and 1 MiB ones 1.4x (bench/RESULTS.md), and
// costs at most this per wait when the peer is slow.
constexpr std::chrono::microseconds kSpin{50};

void check(ucs_status_t status, const std::string &doing) {
    if (status != UCS_OK)
        throw TransportError("UCX failed " + doing + ": " + ucs_status_string(status));
}

std::string to_hex(const void *bytes, std::size_t size) {
    static const char digits[] = "0123456789abcdef";
    std::string hex(2 * size, '0');
    const auto *b = static_cast<const unsigned char *>(bytes);
    for (std::size_t i = 0; i < size; ++i) {
        hex[2 * i] = digits[b[i] >> 4];
        hex[2 * i + 1] = digits[b[i] & 15];
    }
    return hex;
}

std::vector<unsigned char> from_hex(const std::string &hex) {
    auto nibble = [&](char c) {
        if (c >= '0' && c <= '9')
            return c - '0';
        if (c >= 'a' && c <= 'f')
            return c - 'a' + 10;
        throw TransportError("a server's UCX address is not hexadecimal");
    };
    if (hex.size() % 2 != 0)
        throw TransportError("a server's UCX address has an odd number of digits");
    std::vector<unsigned char> bytes(hex.size() / 2);
    for (std::size_t i = 0; i < bytes.size(); ++i)
        bytes[i] = static_cast<unsigned char>(nibble(hex[2 * i]) << 4 | nibble(hex[2 * i + 1]));
    return bytes;
}

/// A process's UCX context: what UCX found of the network and of shared memory.
class Context {
  public:
    /// tcp_only: as MELISSA_TRANSPORT=tcp asks of a client, no shared memory even on one host.
    explicit Context(bool tcp_only = false) {
        ucp_config_t *config = nullptr;
        check(ucp_config_read(nullptr, nullptr, &config), "reading its configuration (UCX_*)");
        if (tcp_only) {
            const ucs_status_t status = ucp_config_modify(config, "TLS", "tcp");
            if (status != UCS_OK)
                ucp_config_release(config);
            check(status, "to keep to tcp");
        }
        ucp_params_t params{};
        params.field_mask = UCP_PARAM_FIELD_FEATURES;
        params.features = UCP_FEATURE_TAG | UCP_FEATURE_WAKEUP;
        const ucs_status_t status = ucp_init(&params, config, &context_);
        ucp_config_release(config);
        check(status, "to start");
    }
    ~Context() { ucp_cleanup(context_); }
    Context(const Context &) = delete;
    Context &operator=(const Context &) = delete;
    ucp_context_h get() const { return context_; }

  private:
    ucp_context_h context_ = nullptr;
};

/// Where an operation's completion lands.
struct Completion {
    bool done = false;
    ucs_status_t status = UCS_OK;
};

/// A worker, used by one thread at a time, that sleeps on its event descriptor when idle
/// instead of spinning: clients and server ranks often share a node's cores.
class Worker {
  public:
    explicit Worker(std::shared_ptr<Context> context) : context_(std::move(context)) {
        ucp_worker_params_t params{};
        params.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE;
        params.thread_mode = UCS_THREAD_MODE_SINGLE;
        check(ucp_worker_create(context_->get(), &params, &worker_), "to create a worker");
        const ucs_status_t status = ucp_worker_get_efd(worker_, &event_fd_);
        if (status != UCS_OK) {
            ucp_worker_destroy(worker_);
            check(status, "to give a worker's event descriptor");
        }
    }
    ~Worker() { ucp_worker_destroy(worker_); }
    Worker(const Worker &) = delete;
    Worker &operator=(const Worker &) = delete;

    ucp_worker_h get() const { return worker_; }

    std::string address() const {
        ucp_address_t *address = nullptr;
        std::size_t size = 0;
        check(ucp_worker_get_address(worker_, &address, &size), "to give a worker's address");
        std::string hex = to_hex(address, size);
        ucp_worker_release_address(worker_, address);
        return hex;
    }

    /// Progresses until `done()`; false if `deadline` came first.
    template <class Done> bool progress_until(Done done, Clock::time_point deadline) {
        const auto spin_until = Clock::now() + kSpin;
        for (;;) {
            while (ucp_worker_progress(worker_) != 0) {
            }
            if (done())
                return true;
            const auto now = Clock::now();
            if (now >= deadline)
                return false;
            if (now < spin_until)
                continue;
            // Busy: events came since the last progress, which must see them first.
            if (ucp_worker_arm(worker_) == UCS_ERR_BUSY)
                continue;
            const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - now);
            pollfd fd{event_fd_, POLLIN, 0};
            (void)::poll(&fd, 1, static_cast<int>(std::min(left, kMaxSleep).count()));
        }
    }

    /// Waits for what an _nbx call returned, whose callbacks report into `completion`.
    bool wait(ucs_status_ptr_t request, Completion &completion, Clock::time_point deadline) {
        if (request == nullptr) {
            completion = {true, UCS_OK};
            return true;
        }
        if (UCS_PTR_IS_ERR(request)) {
            completion = {true, UCS_PTR_STATUS(request)};
            return true;
        }
        const bool done = progress_until([&] { return completion.done; }, deadline);
        if (done)
            ucp_request_free(request);
        return done;
    }

    /// Waits, however long, for a request that was cancelled or forced to end.
    void finish(ucs_status_ptr_t request, Completion &completion) {
        if (request == nullptr || UCS_PTR_IS_ERR(request))
            return;
        ucp_request_cancel(worker_, request);
        progress_until([&] { return completion.done; }, Clock::time_point::max());
        ucp_request_free(request);
    }

  private:
    std::shared_ptr<Context> context_; // outlives the worker
    ucp_worker_h worker_ = nullptr;
    int event_fd_ = -1;
};

/// Parameters whose callbacks, send or receive, report into `completion`.
ucp_request_param_t params_for(Completion &completion) {
    ucp_request_param_t params{};
    params.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
    params.user_data = &completion;
    return params;
}

ucp_request_param_t send_params(Completion &completion) {
    ucp_request_param_t params = params_for(completion);
    params.cb.send = [](void *, ucs_status_t status, void *user_data) {
        *static_cast<Completion *>(user_data) = {true, status};
    };
    return params;
}

ucp_request_param_t receive_params(Completion &completion) {
    ucp_request_param_t params = params_for(completion);
    params.cb.recv = [](void *, ucs_status_t status, const ucp_tag_recv_info_t *, void *data) {
        *static_cast<Completion *>(data) = {true, status};
    };
    return params;
}

// A message is a header and, unless it is an END, its values: two tagged messages, so that the
// values go from the solver's buffer into a buffer of their own on the server, which the
// statistics read in place. A tag says which: bit 0, values (1) or header (0); bit 1, on a
// header, that values follow; the other bits, the sender, so that a header finds its values.
constexpr ucp_tag_t kValuesBit = 1, kValuesFollowBit = 2, kSenderShift = 2;
constexpr ucp_tag_t kExact = ~ucp_tag_t{0};
// A header is 64 bytes; a longer one is not melissa's, and is not taken.
constexpr std::size_t kMaxHeaderBytes = 4096;

class UcxSender final : public Sender {
  public:
    UcxSender(std::shared_ptr<Worker> worker, const wire::ServerEndpoint &server,
              const SendOptions &options)
        : worker_(std::move(worker)), server_(server.host + " (UCX)"), timeout_(options.timeout) {
        // Random: senders of many processes reach one server, and tell themselves apart by it.
        std::random_device random;
        sender_ = (ucp_tag_t{random()} << 32 | random()) << kSenderShift;
        const std::vector<unsigned char> address = from_hex(server.ucx);
        ucp_ep_params_t params{};
        params.field_mask = UCP_EP_PARAM_FIELD_REMOTE_ADDRESS |
                            UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE | UCP_EP_PARAM_FIELD_ERR_HANDLER;
        params.address = reinterpret_cast<const ucp_address_t *>(address.data());
        // Between hosts, a dead server fails the requests to it at once. UCX 1.13 keeps such
        // endpoints off shared memory, so on one host the timeout alone tells a dead server.
        params.err_mode = server.host == host_name() ? UCP_ERR_HANDLING_MODE_NONE
                                                     : UCP_ERR_HANDLING_MODE_PEER;
        params.err_handler.cb = [](void *arg, ucp_ep_h, ucs_status_t status) {
            static_cast<UcxSender *>(arg)->failure_ = status;
        };
        params.err_handler.arg = this;
        check(ucp_ep_create(worker_->get(), &params, &endpoint_),
              "to connect to the server at " + server_);
    }

    ~UcxSender() override {
        // Flushes what is in flight (nothing, once a send returned), within the timeout.
        if (failure_ != UCS_OK || !close(0))
            close(UCP_EP_CLOSE_FLAG_FORCE);
    }

    void send(const wire::HeaderBytes &header, const void *values, std::size_t bytes) override {
        if (failure_ != UCS_OK)
            throw_failure();
        const ucp_tag_t header_tag = sender_ | (bytes > 0 ? kValuesFollowBit : 0);
        Completion sent_header, sent_values;
        ucp_request_param_t header_params = send_params(sent_header);
        ucp_request_param_t values_params = send_params(sent_values);
        const ucs_status_ptr_t requests[2] = {
            ucp_tag_send_nbx(endpoint_, header.data(), header.size(), header_tag, &header_params),
            bytes > 0 ? ucp_tag_send_nbx(endpoint_, values, bytes, sender_ | kValuesBit,
                                         &values_params)
                      : nullptr};
        // Until both complete UCX may read `header` and `values`, the caller's buffers: large
        // values complete once the server has fetched them.
        const auto deadline = Clock::now() + timeout_;
        const bool done = worker_->wait(requests[0], sent_header, deadline) &&
                          worker_->wait(requests[1], sent_values, deadline);
        if (!done) {
            close(UCP_EP_CLOSE_FLAG_FORCE); // cancels the requests, which then complete
            worker_->finish(requests[0], sent_header);
            worker_->finish(requests[1], sent_values);
            failure_ = UCS_ERR_TIMED_OUT;
            throw TimeoutError("the server at " + server_ + " took no data for " +
                               std::to_string(timeout_.count() / 1000.0) +
                               " s (is it still running? MELISSA_TIMEOUT sets the limit)");
        }
        for (const Completion &c : {sent_header, sent_values})
            if (c.status != UCS_OK)
                failure_ = c.status;
        if (failure_ != UCS_OK)
            throw_failure();
    }

  private:
    [[noreturn]] void throw_failure() const {
        // The connection is gone: a server that stopped is what the client must hear about,
        // and it waited no longer than the timeout to learn it.
        throw TimeoutError("the server at " + server_ + " took no data: the connection failed (" +
                           ucs_status_string(failure_) +
                           "; is it still running? MELISSA_TIMEOUT sets the limit)");
    }

    /// Closes the endpoint once; false if a flushing close did not finish within the timeout.
    bool close(std::uint32_t flags) {
        if (endpoint_ == nullptr)
            return true;
        Completion completion;
        ucp_request_param_t params = send_params(completion);
        params.op_attr_mask |= UCP_OP_ATTR_FIELD_FLAGS;
        params.flags = flags;
        const ucs_status_ptr_t request = ucp_ep_close_nbx(endpoint_, &params);
        const bool forced = flags & UCP_EP_CLOSE_FLAG_FORCE;
        if (!worker_->wait(request, completion,
                           forced ? Clock::time_point::max() : Clock::now() + timeout_))
            return false; // the flushing close goes on; the forced one that follows ends it
        endpoint_ = nullptr;
        return true;
    }

    std::shared_ptr<Worker> worker_;
    std::string server_;
    std::chrono::milliseconds timeout_;
    ucp_tag_t sender_ = 0;
    ucp_ep_h endpoint_ = nullptr;
    ucs_status_t failure_ = UCS_OK;
};

/// A message as the inbox took it. Its values are absent when the header is not a valid one of
/// this study: the receiver, which decodes the header the same way, drops it unread.
class UcxMessage final : public Message {
  public:
    UcxMessage(std::vector<std::byte> header, std::unique_ptr<std::byte[]> payload,
               std::size_t payload_size)
        : header_(std::move(header)), payload_(std::move(payload)), payload_size_(payload_size) {}
    const std::byte *header() const override { return header_.data(); }
    std::size_t header_size() const override { return header_.size(); }
    const std::byte *payload() const override { return payload_.get(); }
    std::size_t payload_size() const override { return payload_size_; }
    bool has_extra_frames() const override { return false; }

  private:
    std::vector<std::byte> header_;
    std::unique_ptr<std::byte[]> payload_;
    std::size_t payload_size_;
};

class UcxInbox final : public Inbox {
  public:
    UcxInbox(std::shared_ptr<Context> context, const BindOptions &options)
        : worker_(std::move(context)), token_(options.token),
          max_message_bytes_(static_cast<std::uint64_t>(options.max_message_bytes)) {
        endpoint_.host = options.host;
        endpoint_.ucx = worker_.address();
    }

    ~UcxInbox() override {
        for (Arrival &a : arrivals_)
            worker_.finish(a.request, a.transfer);
    }

    const wire::ServerEndpoint &endpoint() const override { return endpoint_; }

    std::unique_ptr<Message> receive(std::chrono::milliseconds timeout) override {
        auto ready = arrivals_.end();
        worker_.progress_until(
            [&] {
                advance();
                ready = std::find_if(arrivals_.begin(), arrivals_.end(),
                                     [](const Arrival &a) { return a.stage == Stage::Ready; });
                return ready != arrivals_.end();
            },
            Clock::now() + timeout);
        if (ready == arrivals_.end())
            return nullptr;
        auto message = std::make_unique<UcxMessage>(
            std::move(ready->header), std::move(ready->payload), ready->payload_size);
        arrivals_.erase(ready);
        return message;
    }

  private:
    enum class Stage { Header, Values, Fetching, Ready };

    /// One message, from its header's arrival to its delivery. Senders wait for each message to
    /// be taken before they send the next, so that messages of one sender come in order.
    struct Arrival {
        Stage stage = Stage::Header;
        ucp_tag_t sender = 0;
        std::vector<std::byte> header;
        std::unique_ptr<std::byte[]> payload;
        std::size_t payload_size = 0;
        ucs_status_ptr_t request = nullptr;
        Completion transfer; // of the header, then of the values
    };

    /// Starts receiving what has come: headers, and the values of headers in hand.
    void advance() {
        ucp_tag_recv_info_t info;
        while (ucp_tag_message_h m = ucp_tag_probe_nb(worker_.get(), 0, kValuesBit, 1, &info)) {
            if (info.length > kMaxHeaderBytes) {
                discard(m);
                continue;
            }
            Arrival &a = arrivals_.emplace_back();
            a.sender = info.sender_tag;
            a.header.resize(info.length);
            start(a, m, a.header.data(), info.length);
        }
        for (auto a = arrivals_.begin(); a != arrivals_.end();) {
            if (a->stage == Stage::Header && a->transfer.done)
                took_header(*a);
            if (a->stage == Stage::Values) {
                const ucp_tag_t tag = (a->sender & ~kValuesFollowBit) | kValuesBit;
                if (ucp_tag_message_h m = ucp_tag_probe_nb(worker_.get(), tag, kExact, 1, &info))
                    take_values(*a, m, info.length);
            }
            if (a->stage == Stage::Fetching && a->transfer.done) {
                free(*a);
                a->stage = Stage::Ready;
            }
            // A transfer that failed (its client died) or was refused delivers nothing.
            if (a->transfer.done && a->transfer.status != UCS_OK) {
                free(*a);
                a = arrivals_.erase(a);
            } else {
                ++a;
            }
        }
    }

    void took_header(Arrival &a) {
        free(a);
        a.stage = a.transfer.status == UCS_OK && (a.sender & kValuesFollowBit) ? Stage::Values
                                                                                : Stage::Ready;
    }

    void take_values(Arrival &a, ucp_tag_message_h m, std::size_t size) {
        wire::Defect defect;
        const auto header = wire::decode(a.header.data(), a.header.size(), size, defect);
        // Not of this study, or larger than any piece may be: dropped unread, as ZeroMQ's PLAIN
        // and size limit drop such frames, so that such a peer costs the server nothing.
        if ((header && header->token != token_) || size > max_message_bytes_) {
            discard(m);
            a.transfer = {true, UCS_ERR_REJECTED};
            return;
        }
        a.payload_size = size;
        if (header) {
            try {
                a.payload.reset(new std::byte[size]);
            } catch (const std::bad_alloc &) {
                a.payload_size = 0; // delivered as a message of the wrong size: counted
            }
        }
        if (!a.payload) {
            // Not valid (or no room for it): the receiver decodes the header as this did, and
            // drops the message, counted, without a look at its values.
            discard(m);
            a.stage = Stage::Ready;
            return;
        }
        a.stage = Stage::Fetching;
        start(a, m, a.payload.get(), size);
    }

    /// Receives message `m` into `buffer`; its completion lands in a.transfer.
    void start(Arrival &a, ucp_tag_message_h m, void *buffer, std::size_t size) {
        a.transfer = {};
        ucp_request_param_t params = receive_params(a.transfer);
        const ucs_status_ptr_t request =
            ucp_tag_msg_recv_nbx(worker_.get(), buffer, size, m, &params);
        if (request == nullptr)
            a.transfer = {true, UCS_OK};
        else if (UCS_PTR_IS_ERR(request))
            a.transfer = {true, UCS_PTR_STATUS(request)};
        else
            a.request = request;
    }

    void free(Arrival &a) {
        if (a.request != nullptr)
            ucp_request_free(std::exchange(a.request, nullptr));
    }

    /// Takes message `m` into nothing: UCX drops its values, unread.
    void discard(ucp_tag_message_h m) {
        Completion ignored;
        ucp_request_param_t params = receive_params(ignored);
        params.op_attr_mask &= ~UCP_OP_ATTR_FIELD_CALLBACK;
        const ucs_status_ptr_t request = ucp_tag_msg_recv_nbx(worker_.get(), nullptr, 0, m, &params);
        if (request != nullptr && !UCS_PTR_IS_ERR(request))
            ucp_request_free(request); // completes by itself, truncated
    }

    Worker worker_;
    std::uint64_t token_, max_message_bytes_;
    wire::ServerEndpoint endpoint_;
    std::list<Arrival> arrivals_; // stay where they are: UCX writes into their Completion
};

/// ZeroMQ for control and for servers that take data on it; UCX for data where asked.
class UcxTransport final : public Transport {
  public:
    explicit UcxTransport(std::unique_ptr<Transport> zmq) : zmq_(std::move(zmq)) {}

    std::unique_ptr<Sender> connect(const wire::ServerEndpoint &server,
                                    const SendOptions &options) override {
        if (server.ucx.empty())
            return zmq_->connect(server, options);
        // One worker for all of this client's senders: one thread sends, one at a time.
        if (!client_worker_)
            client_worker_ = std::make_shared<Worker>(
                options.prefer_local_ipc ? context() : std::make_shared<Context>(true));
        return std::make_unique<UcxSender>(client_worker_, server, options);
    }

    std::unique_ptr<Inbox> bind(const BindOptions &options) override {
        if (options.backend == Backend::Zmq)
            return zmq_->bind(options);
        return std::make_unique<UcxInbox>(context(), options);
    }

    std::vector<std::byte> request(const std::string &address,
                                   const std::vector<std::byte> &message,
                                   std::chrono::milliseconds timeout) override {
        return zmq_->request(address, message, timeout);
    }

    std::unique_ptr<Responder> respond(const std::string &bind_address) override {
        return zmq_->respond(bind_address);
    }

  private:
    // Started on first use: a client of a ZeroMQ server never pays for UCX's start.
    std::shared_ptr<Context> context() {
        if (!context_)
            context_ = std::make_shared<Context>();
        return context_;
    }

    std::unique_ptr<Transport> zmq_;
    std::shared_ptr<Context> context_;
    std::shared_ptr<Worker> client_worker_;
};

} // namespace

std::unique_ptr<Transport> make_transport() {
    return std::make_unique<UcxTransport>(make_zmq_transport());
}

bool available(Backend) { return true; }

} // namespace melissa::transport
