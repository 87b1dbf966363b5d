// SPDX-License-Identifier: BSD-3-Clause
//
// The UCX backend for data: one active message per piece, the 64-byte header as the message's
// header and the values as its data. UCX chooses how: shared memory between processes of one
// host (a single copy by the kernel, cma, for large messages), TCP or RDMA (verbs) between hosts.
// Large messages go by rendezvous: the server, once it is ready for the message, fetches the
// values straight from the solver's buffer into the buffer the statistics then read in place,
// and the client's send returns when they are fetched. That wait is the back-pressure: a sender
// has at most one message in flight, and a server fetches only when its consumer takes more.
// Control stays on ZeroMQ (make_transport's `control`).
#include <poll.h>
#include <ucp/api/ucp.h>

#include <cstring>
#include <deque>
#include <utility>

#include "transport.hpp"

namespace melissa::transport {
namespace {

using Clock = std::chrono::steady_clock;

// The active message id of melissa's data.
constexpr unsigned kDataMessage = 0;

// An idle worker sleeps on its event file descriptor at most this long before it looks again:
// a bound on the cost of a missed wake-up, not a polling interval.
constexpr std::chrono::milliseconds kMaxSleep{100};

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
        params.features = UCP_FEATURE_AM | UCP_FEATURE_WAKEUP;
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
        for (;;) {
            while (ucp_worker_progress(worker_) != 0) {
            }
            if (done())
                return true;
            const auto now = Clock::now();
            if (now >= deadline)
                return false;
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

ucp_request_param_t send_params(Completion &completion) {
    ucp_request_param_t params{};
    params.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
    params.cb.send = [](void *, ucs_status_t status, void *user_data) {
        *static_cast<Completion *>(user_data) = {true, status};
    };
    params.user_data = &completion;
    return params;
}

class UcxSender final : public Sender {
  public:
    UcxSender(std::shared_ptr<Worker> worker, const wire::ServerEndpoint &server,
              const SendOptions &options)
        : worker_(std::move(worker)), server_(server.host + " (UCX)"), timeout_(options.timeout) {
        const std::vector<unsigned char> address = from_hex(server.ucx);
        ucp_ep_params_t params{};
        params.field_mask = UCP_EP_PARAM_FIELD_REMOTE_ADDRESS |
                            UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE | UCP_EP_PARAM_FIELD_ERR_HANDLER;
        params.address = reinterpret_cast<const ucp_address_t *>(address.data());
        // A dead server fails the requests to it instead of leaving them to the timeout.
        params.err_mode = UCP_ERR_HANDLING_MODE_PEER;
        params.err_handler.cb = [](void *arg, ucp_ep_h, ucs_status_t status) {
            static_cast<UcxSender *>(arg)->failure_ = status;
        };
        params.err_handler.arg = this;
        check(ucp_ep_create(worker_->get(), &params, &endpoint_),
              "to connect to the server at " + server_);
    }

    ~UcxSender() override {
        if (failure_ != UCS_OK) {
            close(UCP_EP_CLOSE_FLAG_FORCE);
            return;
        }
        // Flushes what is in flight (nothing, after a send returned): within the timeout.
        if (!close(0))
            close(UCP_EP_CLOSE_FLAG_FORCE);
    }

    void send(const wire::HeaderBytes &header, const void *values, std::size_t bytes) override {
        if (failure_ != UCS_OK)
            throw_failure();
        Completion completion;
        ucp_request_param_t params = send_params(completion);
        const ucs_status_ptr_t request = ucp_am_send_nbx(endpoint_, kDataMessage, header.data(),
                                                         header.size(), values, bytes, &params);
        // Until the request completes UCX may read `header` and `values`: the caller's buffers.
        if (!worker_->wait(request, completion, Clock::now() + timeout_)) {
            close(UCP_EP_CLOSE_FLAG_FORCE); // cancels the request, which then completes
            worker_->finish(request, completion);
            failure_ = UCS_ERR_TIMED_OUT;
            throw TimeoutError("the server at " + server_ + " took no data for " +
                               std::to_string(timeout_.count() / 1000.0) +
                               " s (is it still running? MELISSA_TIMEOUT sets the limit)");
        }
        if (completion.status != UCS_OK) {
            failure_ = completion.status;
            throw_failure();
        }
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
                           forced ? Clock::time_point::max() : Clock::now() + timeout_)) {
            return false; // the flushing close goes on; the forced one that follows ends it
        }
        endpoint_ = nullptr;
        return true;
    }

    std::shared_ptr<Worker> worker_;
    std::string server_;
    std::chrono::milliseconds timeout_;
    ucp_ep_h endpoint_ = nullptr;
    ucs_status_t failure_ = UCS_OK;
};

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
        ucp_am_handler_param_t handler{};
        handler.field_mask = UCP_AM_HANDLER_PARAM_FIELD_ID | UCP_AM_HANDLER_PARAM_FIELD_FLAGS |
                             UCP_AM_HANDLER_PARAM_FIELD_CB | UCP_AM_HANDLER_PARAM_FIELD_ARG;
        handler.id = kDataMessage;
        handler.flags = UCP_AM_FLAG_WHOLE_MSG;
        handler.cb = &UcxInbox::arrived;
        handler.arg = this;
        check(ucp_worker_set_am_recv_handler(worker_.get(), &handler),
              "to take melissa's messages");
        endpoint_.host = options.host;
        endpoint_.ucx = worker_.address();
    }

    ~UcxInbox() override {
        for (Arrival &a : arrivals_) {
            if (a.request != nullptr)
                worker_.finish(a.request, a.fetch);
            else if (a.rendezvous != nullptr)
                ucp_am_data_release(worker_.get(), a.rendezvous);
        }
    }

    const wire::ServerEndpoint &endpoint() const override { return endpoint_; }

    std::unique_ptr<Message> receive(std::chrono::milliseconds timeout) override {
        const bool ready = worker_.progress_until(
            [&] {
                fetch();
                return !arrivals_.empty() && arrivals_.front().fetch.done;
            },
            Clock::now() + timeout);
        if (!ready)
            return nullptr;
        Arrival a = std::move(arrivals_.front());
        arrivals_.pop_front();
        if (a.request != nullptr)
            ucp_request_free(a.request);
        // A fetch that failed (the client died) leaves a message whose values did not come:
        // the receiver drops it, as any message of the wrong size.
        const std::size_t size = a.fetch.status == UCS_OK ? a.size : 0;
        return std::make_unique<UcxMessage>(std::move(a.header), std::move(a.payload), size);
    }

  private:
    /// A message as it came: its values in hand (eager), or still at the sender (rendezvous).
    struct Arrival {
        std::vector<std::byte> header;
        std::unique_ptr<std::byte[]> payload;
        std::size_t size = 0;
        void *rendezvous = nullptr; // the descriptor to fetch the values with
        ucs_status_ptr_t request = nullptr;
        Completion fetch;
    };

    static ucs_status_t arrived(void *arg, const void *header, std::size_t header_size,
                                void *data, std::size_t size, const ucp_am_recv_param_t *param) {
        return static_cast<UcxInbox *>(arg)->take(header, header_size, data, size,
                                                  param->recv_attr);
    }

    // Called by UCX within progress, on the receiving thread: nothing here may throw.
    ucs_status_t take(const void *header, std::size_t header_size, void *data, std::size_t size,
                      std::uint64_t attributes) noexcept {
        const bool rendezvous = attributes & UCP_AM_RECV_ATTR_FLAG_RNDV;
        wire::Defect defect;
        const auto decoded = wire::decode(header, header_size, size, defect);
        // Not of this study, or larger than any piece may be: dropped unread, as ZeroMQ's PLAIN
        // and size limit drop them, so that such a peer costs the server nothing.
        if ((decoded && decoded->token != token_) || size > max_message_bytes_)
            return UCS_OK;
        try {
            Arrival a;
            const auto *h = static_cast<const std::byte *>(header);
            a.header.assign(h, h + header_size);
            a.size = size;
            if (size > 0)
                a.payload.reset(new std::byte[size]);
            if (rendezvous) {
                a.rendezvous = data;
            } else {
                if (size > 0)
                    std::memcpy(a.payload.get(), data, size);
                a.fetch.done = true;
            }
            arrivals_.push_back(std::move(a));
        } catch (const std::bad_alloc &) {
            return UCS_OK; // no room for it: dropped, and the client's flush will tell
        }
        return rendezvous ? UCS_INPROGRESS : UCS_OK;
    }

    /// Starts fetching every message that came by rendezvous.
    void fetch() {
        for (Arrival &a : arrivals_) {
            if (a.rendezvous == nullptr)
                continue;
            ucp_request_param_t params{};
            params.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
            params.cb.recv_am = [](void *, ucs_status_t status, std::size_t, void *user_data) {
                *static_cast<Completion *>(user_data) = {true, status};
            };
            params.user_data = &a.fetch; // deque elements stay where they are
            const ucs_status_ptr_t request = ucp_am_recv_data_nbx(
                worker_.get(), std::exchange(a.rendezvous, nullptr), a.payload.get(), a.size,
                &params);
            if (request == nullptr)
                a.fetch = {true, UCS_OK};
            else if (UCS_PTR_IS_ERR(request))
                a.fetch = {true, UCS_PTR_STATUS(request)};
            else
                a.request = request;
        }
    }

    Worker worker_;
    std::uint64_t token_, max_message_bytes_;
    wire::ServerEndpoint endpoint_;
    std::deque<Arrival> arrivals_;
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
