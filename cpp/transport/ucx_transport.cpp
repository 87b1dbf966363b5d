// SPDX-License-Identifier: BSD-3-Clause
//
// The UCX backend for data, on UCX's tag matching (the path MPI libraries take). UCX chooses
// how messages go: shared memory between processes of one host (for large values a single copy
// by the kernel, cma), TCP or RDMA (verbs) between hosts. How melissa's messages map onto tagged
// ones, and which are copied, is told above UcxSender. Back-pressure: a sender keeps a bounded
// window of messages in flight, a server takes a bounded number off UCX before delivering them,
// and large values are fetched only when the server is ready for them. Control stays on ZeroMQ.
#include <poll.h>
#include <sched.h>
#include <ucp/api/ucp.h>
#include <uct/api/uct.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <list>
#include <map>
#include <mutex>
#include <random>
#include <thread>
#include <utility>

#include "../huge_pages.hpp"
#include "transport.hpp"

namespace melissa::transport {
namespace {

using Clock = std::chrono::steady_clock;

// An idle worker sleeps on its event file descriptor at most this long before it looks again:
// a bound on the cost of a missed wake-up, not a polling interval.
constexpr std::chrono::milliseconds kMaxSleep{100};

// How long a connection that failed may take to let go of its requests: beyond, they and the
// memory they write to are left to UCX.
constexpr std::chrono::milliseconds kGiveUp{200};

// How long a worker polls before it sleeps, unless MELISSA_UCX_POLL_US says. A rendezvous is a
// few round trips between client and server, each as long as a wake-up when they sleep (tens
// of microseconds here); polling through them made 64 KiB messages 4x faster and 1 MiB ones
// 1.4x (bench/RESULTS.md). It costs at most this per wait, which a node with more processes
// than cores cannot spare.
constexpr std::chrono::microseconds kDefaultPoll{50};

std::chrono::microseconds poll_time() {
    const char *text = std::getenv("MELISSA_UCX_POLL_US");
    if (text == nullptr)
        return kDefaultPoll;
    char *end = nullptr;
    const long us = std::strtol(text, &end, 10);
    if (end == text || *end != '\0' || us < 0 || us > 1000000)
        throw TransportError(std::string("MELISSA_UCX_POLL_US='") + text +
                             "' is not a number of microseconds from 0 to 1000000");
    return std::chrono::microseconds(us);
}

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

/// What a context may use: everything UCX finds; shared memory and RDMA, but no tcp (a
/// client's connections on its own host); tcp alone (MELISSA_TRANSPORT=tcp).
enum class Reach { All, NoTcp, TcpOnly };

/// Who copies a rendezvous' values, as its sender asks: the receiver reads them (UCX's choice),
/// or the sender writes them (`put_zcopy`).
enum class Rendezvous { ReceiverReads, SenderWrites };

/// A process's UCX context: what UCX found of the network and of shared memory.
class Context {
  public:
    explicit Context(Reach reach = Reach::All, Rendezvous rendezvous = Rendezvous::ReceiverReads) {
        ucp_config_t *config = nullptr;
        check(ucp_config_read(nullptr, nullptr, &config), "reading its configuration (UCX_*)");
        auto modify = [&](const char *name, const char *value, const std::string &doing) {
            const ucs_status_t status = ucp_config_modify(config, name, value);
            if (status != UCS_OK)
                ucp_config_release(config);
            check(status, doing);
        };
        if (reach == Reach::TcpOnly)
            modify("TLS", "tcp", "to keep to tcp");
        // A connection on one host runs without peer-failure handling (UcxSender), and with a
        // tcp lane among its shared-memory ones, a client killed in the middle of a transfer
        // made the server rank abort in UCX 1.13 (ucp_rndv_receive, on the dead peer's
        // endpoint) in half the runs of test_client_killed_mid_run; without, in none of 36.
        // UCX_TLS, where set, still decides.
        if (reach == Reach::NoTcp && std::getenv("UCX_TLS") == nullptr)
            modify("TLS", "^tcp", "to keep off tcp");
        // UCX_RNDV_SCHEME, where set, decides for all.
        if (rendezvous == Rendezvous::SenderWrites && std::getenv("UCX_RNDV_SCHEME") == nullptr)
            modify("RNDV_SCHEME", "put_zcopy", "to have senders write their values");
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
    explicit Worker(std::shared_ptr<Context> context)
        : context_(std::move(context)), poll_(poll_time()) {
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

    void progress() {
        while (ucp_worker_progress(worker_) != 0) {
        }
    }

    /// Wakes the thread that progresses this worker, from any thread. Should it fail, that
    /// thread wakes by itself within kMaxSleep.
    void signal() { (void)ucp_worker_signal(worker_); }

    /// Progresses until `done()`; false if `deadline` came first.
    template <class Done> bool progress_until(Done done, Clock::time_point deadline) {
        const auto spin_until = Clock::now() + poll_;
        for (;;) {
            progress();
            if (done())
                return true;
            const auto now = Clock::now();
            if (now >= deadline)
                return false;
            if (now < spin_until) {
                sched_yield(); // to a peer this one waits for, when they share a core
                continue;
            }
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

    /// Cancels a request and waits for it to end, until `deadline`; false if it did not, and
    /// UCX may still write into `completion`, which must then outlive the worker.
    bool finish(ucs_status_ptr_t request, Completion &completion, Clock::time_point deadline) {
        if (request == nullptr || UCS_PTR_IS_ERR(request))
            return true;
        if (!completion.done)
            ucp_request_cancel(worker_, request);
        return wait(request, completion, deadline);
    }

  private:
    std::shared_ptr<Context> context_; // outlives the worker
    std::chrono::microseconds poll_;
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

// How a message goes, by the size of its values:
// - up to kPackedBytes, header and values copied into one tagged message, sent synchronously
//   (it completes once the server has matched it);
// - larger, the header and the values as two tagged messages, the values by rendezvous: once
//   the server rank's fetcher thread has room for them, it takes them into a buffer of their
//   own, which the statistics read in place. Up to kCopiedBytes they go from a copy, which the
//   server reads, so that the solver computes on while they travel; larger, from the solver's
//   buffer itself, which the client writes into the server's, and send returns once they are
//   written (UcxRoutes).
// A sender keeps up to its high-water mark of messages in flight; send returns at once unless
// they are all in flight.
// A tag says which: bit 0, values (1) or a header (0); on a header, bit 1: values follow, bit 2:
// the values are packed after it; bit 3: not a header, the sender's hello; the other bits, the
// sender, so that a header finds its values.
constexpr ucp_tag_t kValuesBit = 1, kValuesFollowBit = 2, kPackedBit = 4, kHelloBit = 8;
constexpr ucp_tag_t kSenderShift = 4;
constexpr ucp_tag_t kExact = ~ucp_tag_t{0};
constexpr std::size_t kPackedBytes = 16 << 10;
constexpr std::size_t kPackedWindowBytes = 256 << 10;
// The largest values sent from a copy. Up to 128 KiB a window of copies in flight moved more
// than waiting for each transfer; from 256 KiB the copy cost more than the wait, 1.5 to 3x at
// 1 MiB (bench/RESULTS.md), and still did once the senders wrote their values themselves.
constexpr std::size_t kCopiedBytes = 128 << 10;
// A lone header is 64 bytes; a longer one is not melissa's, and is not taken.
constexpr std::size_t kMaxHeaderBytes = 4096;
// Messages a server rank takes off UCX before its server receives them: beyond, the rest wait in
// UCX, unmatched, and their senders wait, so that memory stays bounded however fast they send.
constexpr std::size_t kMaxArrivals = 64;

class UcxSender final : public Sender {
  public:
    /// on_this_host: `worker` reaches the server through shared memory, where UCX 1.13 has no
    /// peer-failure handling.
    UcxSender(std::shared_ptr<Worker> worker, const wire::ServerEndpoint &server,
              const SendOptions &options, bool on_this_host)
        : worker_(std::move(worker)), server_(server.host + " (UCX)"), timeout_(options.timeout),
          window_(static_cast<std::size_t>(std::max(options.high_water_mark, 1))) {
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
        params.err_mode = on_this_host ? UCP_ERR_HANDLING_MODE_NONE : UCP_ERR_HANDLING_MODE_PEER;
        params.err_handler.cb = [](void *arg, ucp_ep_h, ucs_status_t status) {
            static_cast<UcxSender *>(arg)->failure_ = status;
        };
        params.err_handler.arg = this;
        check(ucp_ep_create(worker_->get(), &params, &endpoint_),
              "to connect to the server at " + server_);
        // Connected before the first send: one message both ways, which the server matches
        // and drops. Until then, what is sent waits for this process's next call into UCX.
        auto hello = std::make_unique<Completion>();
        ucp_request_param_t hello_params = send_params(*hello);
        const ucs_status_ptr_t request =
            ucp_tag_send_sync_nbx(endpoint_, nullptr, 0, sender_ | kHelloBit, &hello_params);
        if (!worker_->wait(request, *hello, Clock::now() + timeout_)) {
            (void)hello.release(); // UCX will write there when the send ends
            // No destructor runs after this throw: nothing of UCX may call back into this.
            close(UCP_EP_CLOSE_FLAG_FORCE, Clock::now() + kGiveUp);
            throw TimeoutError("the server at " + server_ + " did not connect within " +
                               std::to_string(timeout_.count() / 1000.0) +
                               " s (is it still running? MELISSA_TIMEOUT sets the limit)");
        }
    }

    ~UcxSender() override {
        // What is in flight completes (within the timeout) before its buffers go.
        bool drained = failure_ == UCS_OK;
        try {
            if (drained)
                drain(0);
        } catch (const TimeoutError &) {
            drained = false;
        }
        if (drained) {
            close(0, Clock::now() + timeout_); // nothing is in flight
            return;
        }
        const auto give_up = Clock::now() + kGiveUp;
        close(UCP_EP_CLOSE_FLAG_FORCE, give_up);
        bool finished = true;
        for (InFlight &f : in_flight_)
            for (int i = 0; i < 2; ++i)
                finished = worker_->finish(f.requests[i], f.completions[i], give_up) && finished;
        if (!finished) // left to UCX, which may still write into them (their addresses hold)
            new std::deque<InFlight>(std::move(in_flight_));
    }

    void send(const wire::HeaderBytes &header, const void *values, std::size_t bytes) override {
        if (failure_ != UCS_OK)
            throw_failure();
        const bool copied = bytes <= kCopiedBytes;
        // In order: a message sent from the caller's buffer follows what is in flight.
        const std::size_t window = bytes <= kPackedBytes ? packed_window(bytes) : window_;
        drain(copied ? window - 1 : 0);
        InFlight &f = in_flight_.emplace_back();
        f.header = header; // UCX may read it after this returns
        if (bytes <= kPackedBytes) {
            f.buffer.resize(header.size() + bytes);
            std::memcpy(f.buffer.data(), header.data(), header.size());
            if (bytes > 0)
                std::memcpy(f.buffer.data() + header.size(), values, bytes);
            ucp_request_param_t params = send_params(f.completions[0]);
            f.requests[0] = ucp_tag_send_sync_nbx(endpoint_, f.buffer.data(), f.buffer.size(),
                                                  sender_ | kPackedBit, &params);
        } else {
            if (copied) {
                // A buffer of an earlier message: its pages are already there.
                if (!spare_.empty()) {
                    f.buffer = std::move(spare_.back());
                    spare_.pop_back();
                }
                const auto *from = static_cast<const std::byte *>(values);
                f.buffer.assign(from, from + bytes);
                values = f.buffer.data();
            }
            ucp_request_param_t header_params = send_params(f.completions[0]);
            f.requests[0] = ucp_tag_send_nbx(endpoint_, f.header.data(), f.header.size(),
                                             sender_ | kValuesFollowBit, &header_params);
            ucp_request_param_t values_params = send_params(f.completions[1]);
            f.requests[1] =
                ucp_tag_send_nbx(endpoint_, values, bytes, sender_ | kValuesBit, &values_params);
        }
        // Until it completes, UCX reads the caller's buffer when it was not copied.
        drain(copied ? window : 0);
    }

    void flush() override {
        drain(0);
        // A rendezvous send completes once its values are written into the server's buffer;
        // the acknowledgement that completes the server's receive may still wait in this
        // endpoint's queue (a full shared-memory FIFO), and would leave only with the next
        // call into UCX, which a finalizing client never makes. The endpoint's flush sends it.
        auto completion = std::make_unique<Completion>();
        ucp_request_param_t params = send_params(*completion);
        const ucs_status_ptr_t request = ucp_ep_flush_nbx(endpoint_, &params);
        if (!worker_->wait(request, *completion, Clock::now() + timeout_)) {
            (void)completion.release(); // UCX will write there when the flush ends
            time_out();
        }
        if (completion->status != UCS_OK) {
            failure_ = completion->status;
            throw_failure();
        }
    }

  private:
    /// A message sent and not yet complete: its header and values (a copy of them), and its
    /// one or two requests, header and values.
    struct InFlight {
        Clock::time_point sent = Clock::now();
        wire::HeaderBytes header;
        std::vector<std::byte> buffer;
        ucs_status_ptr_t requests[2] = {nullptr, nullptr};
        Completion completions[2];
    };

    /// Small messages in flight at once: the high-water mark, or as many as kPackedWindowBytes
    /// hold, since each is one round trip to the server, which a window of a few leaves idle.
    std::size_t packed_window(std::size_t bytes) const {
        return std::max(window_, kPackedWindowBytes / (bytes + wire::kHeaderSize));
    }

    /// Waits until at most `messages` are in flight (and takes off those that completed);
    /// throws past the timeout or on a failed connection.
    void drain(std::size_t messages) {
        worker_->progress(); // what came back while the solver computed
        // A message the server has not taken within the timeout fails the sender, whether or
        // not it must wait for room: a dead server is found out at the next send.
        while (!in_flight_.empty() &&
               (in_flight_.size() > messages || completed(in_flight_.front()) ||
                Clock::now() >= in_flight_.front().sent + timeout_)) {
            InFlight &f = in_flight_.front();
            for (int i = 0; i < 2; ++i) {
                if (!worker_->wait(f.requests[i], f.completions[i], f.sent + timeout_))
                    time_out();
                f.requests[i] = nullptr; // freed by wait
                if (f.completions[i].status != UCS_OK)
                    failure_ = f.completions[i].status;
            }
            if (spare_.size() < window_ && f.buffer.capacity() > kPackedBytes)
                spare_.push_back(std::move(f.buffer));
            in_flight_.pop_front();
            if (failure_ != UCS_OK)
                throw_failure();
        }
    }

    static bool completed(const InFlight &f) {
        for (int i = 0; i < 2; ++i)
            if (f.requests[i] != nullptr && !UCS_PTR_IS_ERR(f.requests[i]) &&
                !f.completions[i].done)
                return false;
        return true;
    }

    [[noreturn]] void time_out() {
        failure_ = UCS_ERR_TIMED_OUT;
        throw TimeoutError("the server at " + server_ + " took no data for " +
                           std::to_string(timeout_.count() / 1000.0) +
                           " s (is it still running? MELISSA_TIMEOUT sets the limit)");
    }

    [[noreturn]] void throw_failure() const {
        // The connection is gone: a server that stopped is what the client must hear about,
        // and it waited no longer than the timeout to learn it.
        throw TimeoutError("the server at " + server_ + " took no data: the connection failed (" +
                           ucs_status_string(failure_) +
                           "; is it still running? MELISSA_TIMEOUT sets the limit)");
    }

    /// Closes the endpoint; false if that did not finish by `deadline`, when UCX goes on
    /// with it alone. Whether it finished, the endpoint is gone.
    bool close(std::uint32_t flags, Clock::time_point deadline) {
        auto completion = std::make_unique<Completion>();
        ucp_request_param_t params = send_params(*completion);
        params.op_attr_mask |= UCP_OP_ATTR_FIELD_FLAGS;
        params.flags = flags;
        const ucs_status_ptr_t request =
            ucp_ep_close_nbx(std::exchange(endpoint_, nullptr), &params);
        if (worker_->wait(request, *completion, deadline))
            return true;
        (void)completion.release(); // UCX will write there when the close ends
        return false;
    }

    std::shared_ptr<Worker> worker_;
    std::string server_;
    std::chrono::milliseconds timeout_;
    std::size_t window_;
    ucp_tag_t sender_ = 0;
    ucp_ep_h endpoint_ = nullptr;
    ucs_status_t failure_ = UCS_OK;
    std::deque<InFlight> in_flight_;            // where UCX writes their completions: never moved
    std::vector<std::vector<std::byte>> spare_; // copies' buffers, for the next ones
};

/// A client's data to one server rank, on two connections: values sent from a copy go where the
/// server reads them, values sent from the solver's buffer where the client writes them. The
/// server's reads need nothing of a client that computes on; a client waiting for its buffer
/// has an idle core, and a server rank that read every client's values itself moved 16 MiB
/// messages of 2 to 4 clients at 3.2 to 3.3 GB/s, where their writes moved 5.7 to 6.3
/// (bench/RESULTS.md). The second connection opens with the first values that take it: a
/// server rank keeps a shared-memory segment for each connection it has had (README, known
/// limits), and a study of small fields needs none.
class UcxRoutes final : public Sender {
  public:
    UcxRoutes(std::unique_ptr<Sender> copied, std::function<std::unique_ptr<Sender>()> connect)
        : copied_(std::move(copied)), connect_direct_(std::move(connect)) {}

    void send(const wire::HeaderBytes &header, const void *values, std::size_t bytes) override {
        if (bytes <= kCopiedBytes)
            return copied_->send(header, values, bytes);
        if (!direct_)
            direct_ = connect_direct_();
        direct_->send(header, values, bytes);
    }

    void flush() override {
        copied_->flush();
        if (direct_)
            direct_->flush();
    }

  private:
    std::unique_ptr<Sender> copied_;
    std::function<std::unique_ptr<Sender>()> connect_direct_;
    std::unique_ptr<Sender> direct_;
};

/// Buffers for values, kept for the next messages of the same size (a study's pieces come in a
/// few sizes): a fresh buffer costs a page fault per page as the values land in it, which cost
/// a server rank more than the transfer itself (bench/RESULTS.md). Large ones are in huge pages,
/// which halved the time of a 16 MiB copy between processes. At most kKeptBytes stay idle, in
/// at most kMaxArrivals buffers (as many as are taken at once), so that a lookup stays short.
class BufferPool : public std::enable_shared_from_this<BufferPool> {
  public:
    struct Return {
        std::shared_ptr<BufferPool> pool;
        std::size_t size;
        void operator()(std::byte *data) const { pool->keep(data, size); }
    };
    struct Release {
        std::size_t size;
        void operator()(std::byte *data) const { huge_pages::release(data, size); }
    };
    using Buffer = std::unique_ptr<std::byte[], Return>;

    /// A buffer of `size` bytes (at least one); throws std::bad_alloc.
    Buffer take(std::size_t size) {
        size = std::max<std::size_t>(size, 1);
        {
            std::lock_guard<std::mutex> lock(mutex_);
            for (auto kept = idle_.begin(); kept != idle_.end(); ++kept)
                if (kept->second == size) {
                    std::byte *data = kept->first.release();
                    idle_.erase(kept);
                    idle_bytes_ -= size;
                    return Buffer(data, Return{shared_from_this(), size});
                }
        }
        return Buffer(static_cast<std::byte *>(huge_pages::allocate(size)),
                      Return{shared_from_this(), size});
    }

  private:
    static constexpr std::size_t kKeptBytes = 64 << 20;

    void keep(std::byte *data, std::size_t size) {
        std::unique_ptr<std::byte[], Release> buffer(data, Release{size});
        std::lock_guard<std::mutex> lock(mutex_);
        if (size > kKeptBytes)
            return;
        // The oldest make room: sizes that came once (a last, shorter piece) do not stay.
        while (idle_bytes_ + size > kKeptBytes || idle_.size() >= kMaxArrivals) {
            idle_bytes_ -= idle_.front().second;
            idle_.pop_front();
        }
        idle_.emplace_back(std::move(buffer), size);
        idle_bytes_ += size;
    }

    std::mutex mutex_;
    std::deque<std::pair<std::unique_ptr<std::byte[], Release>, std::size_t>> idle_;
    std::size_t idle_bytes_ = 0;
};

/// A message as the inbox took it. Its values are absent when the header is not a valid one of
/// this study: the receiver, which decodes the header the same way, drops it unread.
class UcxMessage final : public Message {
  public:
    UcxMessage(std::vector<std::byte> header, BufferPool::Buffer storage, const std::byte *payload,
               std::size_t payload_size)
        : header_(std::move(header)), storage_(std::move(storage)), payload_(payload),
          payload_size_(payload_size) {}
    const std::byte *header() const override { return header_.data(); }
    std::size_t header_size() const override { return header_.size(); }
    const std::byte *payload() const override { return payload_; }
    std::size_t payload_size() const override { return payload_size_; }
    bool has_extra_frames() const override { return false; }

  private:
    std::vector<std::byte> header_;
    BufferPool::Buffer storage_;
    const std::byte *payload_;
    std::size_t payload_size_;
};

/// A server rank's UCX inbox. A thread of its own takes messages off UCX and fetches their
/// values while the server's thread handles the earlier ones (the statistics), as ZeroMQ's I/O
/// thread does: otherwise a sender waiting for its values to be fetched waits for those.
class UcxInbox final : public Inbox {
  public:
    UcxInbox(std::shared_ptr<Context> context, const BindOptions &options)
        : worker_(std::move(context)), token_(options.token),
          max_message_bytes_(static_cast<std::uint64_t>(options.max_message_bytes)) {
        endpoint_.host = options.host;
        endpoint_.ucx = worker_.address();
        fetcher_ = std::thread([this] { fetch(); });
    }

    ~UcxInbox() override {
        stopping_ = true;
        worker_.signal();
        fetcher_.join();
        const auto give_up = Clock::now() + kGiveUp;
        bool finished = true;
        for (Arrival &a : arrivals_)
            finished = worker_.finish(a.request, a.transfer, give_up) && finished;
        if (!finished) // left to UCX, which may still write into them (their addresses hold)
            new std::list<Arrival>(std::move(arrivals_));
    }

    const wire::ServerEndpoint &endpoint() const override { return endpoint_; }

    std::unique_ptr<Message> receive(std::chrono::milliseconds timeout) override {
        std::unique_lock<std::mutex> lock(mutex_);
        if (!delivered_cv_.wait_for(lock, timeout, [&] { return !delivered_.empty(); }))
            return nullptr;
        std::unique_ptr<Message> message = std::move(delivered_.front());
        delivered_.pop_front();
        lock.unlock();
        if (full_.exchange(false))
            worker_.signal(); // room for one more message
        return message;
    }

  private:
    enum class Stage { Header, Values, Fetching, Ready };

    /// One message, from its header's arrival to its delivery. A sender's messages come in
    /// order: it sends values only once the previous message was taken.
    struct Arrival {
        Stage stage = Stage::Header;
        ucp_tag_t tag = 0;
        std::vector<std::byte> header;
        BufferPool::Buffer storage; // the values, or the packed message
        const std::byte *payload = nullptr;
        std::size_t payload_size = 0;
        ucs_status_ptr_t request = nullptr;
        Completion transfer; // of the header (or the packed message), then of the values
        std::size_t transfer_length = 0;
    };

    /// The fetcher's loop: polls a while after anything moved, else sleeps until UCX or
    /// receive() (room for more) or the destructor wakes it.
    void fetch() {
        while (!stopping_)
            worker_.progress_until([&] { return advance() || stopping_; },
                                   Clock::now() + kMaxSleep);
    }

    /// Takes what has come off UCX, while fewer than kMaxArrivals are taken and not yet
    /// received, and moves each message on; whether anything moved.
    bool advance() {
        bool moved = false;
        ucp_tag_recv_info_t info;
        for (;;) {
            // Set before a last look at what is delivered, so that a receive() after it wakes
            // the fetcher.
            full_ = true;
            if (arrivals_.size() + undelivered() >= kMaxArrivals)
                break;
            full_ = false;
            ucp_tag_message_h m = ucp_tag_probe_nb(worker_.get(), 0, kValuesBit, 1, &info);
            if (m == nullptr)
                break;
            moved = true;
            const bool packed = info.sender_tag & kPackedBit;
            if ((info.sender_tag & kHelloBit) ||
                info.length > (packed ? max_message_bytes_ + wire::kHeaderSize : kMaxHeaderBytes)) {
                discard(m);
                continue;
            }
            Arrival &a = arrivals_.emplace_back();
            a.tag = info.sender_tag;
            if (!packed) {
                a.header.resize(info.length);
                start(a, m, a.header.data(), info.length);
            } else if (!allocate(a, info.length)) {
                discard(m);
                a.transfer = {true, UCS_ERR_NO_MEMORY};
            } else {
                start(a, m, a.storage.get(), info.length);
            }
        }
        std::vector<std::unique_ptr<Message>> ready;
        for (auto a = arrivals_.begin(); a != arrivals_.end();) {
            const Stage stage = a->stage;
            if (a->stage == Stage::Header && a->transfer.done)
                took_header(*a);
            if (a->stage == Stage::Values) {
                const ucp_tag_t tag = (a->tag & ~kValuesFollowBit) | kValuesBit;
                if (ucp_tag_message_h m = ucp_tag_probe_nb(worker_.get(), tag, kExact, 1, &info))
                    take_values(*a, m, info.length);
            }
            if (a->stage == Stage::Fetching && a->transfer.done) {
                free(*a);
                if (a->transfer.status == UCS_OK)
                    a->stage = Stage::Ready;
            }
            moved = moved || a->stage != stage;
            if (a->stage == Stage::Ready) {
                ready.push_back(std::make_unique<UcxMessage>(
                    std::move(a->header), std::move(a->storage), a->payload, a->payload_size));
                a = arrivals_.erase(a);
            } else if (a->transfer.done && a->transfer.status != UCS_OK) {
                // A transfer that failed (its client died) or was refused delivers nothing.
                free(*a);
                a = arrivals_.erase(a);
                moved = true;
            } else {
                ++a;
            }
        }
        if (!ready.empty()) {
            {
                std::lock_guard<std::mutex> lock(mutex_);
                for (auto &message : ready)
                    delivered_.push_back(std::move(message));
            }
            delivered_cv_.notify_one();
        }
        return moved;
    }

    std::size_t undelivered() {
        std::lock_guard<std::mutex> lock(mutex_);
        return delivered_.size();
    }

    void took_header(Arrival &a) {
        free(a);
        if (a.transfer.status != UCS_OK)
            return; // dropped by advance
        if (a.tag & kPackedBit) {
            // Header and values in one buffer: the header copied out, the values read in place.
            const std::size_t size = a.transfer_length;
            const std::size_t head = std::min(size, wire::kHeaderSize);
            a.header.assign(a.storage.get(), a.storage.get() + head);
            a.payload = a.storage.get() + head;
            a.payload_size = size - head;
            if (!of_this_study(a.header, a.payload_size))
                a.transfer.status = UCS_ERR_REJECTED;
            else
                a.stage = Stage::Ready;
            return;
        }
        a.stage = a.tag & kValuesFollowBit ? Stage::Values : Stage::Ready;
    }

    void take_values(Arrival &a, ucp_tag_message_h m, std::size_t size) {
        // Not of this study, or larger than any piece may be: dropped unread, as ZeroMQ's PLAIN
        // and size limit drop such frames, so that such a peer costs the server nothing.
        if (!of_this_study(a.header, size) || size > max_message_bytes_) {
            discard(m);
            a.transfer = {true, UCS_ERR_REJECTED};
            return;
        }
        wire::Defect defect;
        a.payload_size = size;
        if (!wire::decode(a.header.data(), a.header.size(), size, defect) || !allocate(a, size)) {
            // Not valid (or no room for it): the receiver decodes the header as this did, and
            // drops the message, counted, without a look at its values (none, when no room).
            discard(m);
            if (!a.storage)
                a.payload_size = defect == wire::Defect::None ? 0 : size;
            a.stage = Stage::Ready;
            return;
        }
        a.payload = a.storage.get();
        a.stage = Stage::Fetching;
        start(a, m, a.storage.get(), size);
    }

    /// Whether a header could be this study's: anything but a valid header of another study.
    bool of_this_study(const std::vector<std::byte> &header, std::size_t payload_size) const {
        wire::Defect defect;
        const auto h = wire::decode(header.data(), header.size(), payload_size, defect);
        return !h || h->token == token_;
    }

    bool allocate(Arrival &a, std::size_t size) {
        try {
            a.storage = buffers_->take(size);
            return true;
        } catch (const std::bad_alloc &) {
            return false;
        }
    }

    /// Receives message `m` into `buffer`; its completion lands in a.transfer.
    void start(Arrival &a, ucp_tag_message_h m, void *buffer, std::size_t size) {
        a.transfer = {};
        a.transfer_length = size;
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
        ucp_request_param_t params{};
        const ucs_status_ptr_t request =
            ucp_tag_msg_recv_nbx(worker_.get(), nullptr, 0, m, &params);
        if (request != nullptr && !UCS_PTR_IS_ERR(request))
            ucp_request_free(request); // completes by itself, truncated
    }

    Worker worker_; // the fetcher's alone, once it runs
    std::uint64_t token_, max_message_bytes_;
    wire::ServerEndpoint endpoint_;
    std::shared_ptr<BufferPool> buffers_ = std::make_shared<BufferPool>();
    std::list<Arrival> arrivals_; // stay where they are: UCX writes into their Completion
    std::mutex mutex_;
    std::condition_variable delivered_cv_;
    std::deque<std::unique_ptr<Message>> delivered_; // in the order they became ready
    std::atomic<bool> full_{false}; // the fetcher takes no more until a receive() makes room
    std::atomic<bool> stopping_{false};
    std::thread fetcher_; // last: it starts once all the above exist
};

/// Whether UCX sees an RDMA device (InfiniBand, RoCE: its "ib" component), asked once.
bool has_rdma() {
    static const bool found = [] {
        uct_component_h *components = nullptr;
        unsigned count = 0;
        if (uct_query_components(&components, &count) != UCS_OK)
            return false;
        bool rdma = false;
        for (unsigned i = 0; i < count && !rdma; ++i) {
            uct_component_attr_t attr{};
            attr.field_mask =
                UCT_COMPONENT_ATTR_FIELD_NAME | UCT_COMPONENT_ATTR_FIELD_MD_RESOURCE_COUNT;
            rdma = uct_component_query(components[i], &attr) == UCS_OK &&
                   std::strcmp(attr.name, "ib") == 0 && attr.md_resource_count > 0;
        }
        uct_release_component_list(components);
        return rdma;
    }();
    return found;
}

/// ZeroMQ for control and for servers that take data on it; UCX for data where asked.
class UcxTransport final : public Transport {
  public:
    explicit UcxTransport(std::unique_ptr<Transport> zmq) : zmq_(std::move(zmq)) {}

    std::unique_ptr<Sender> connect(const wire::ServerEndpoint &server,
                                    const SendOptions &options) override {
        // A server that takes both (Backend::Auto) advertises a ZeroMQ address too.
        const bool zmq_too = !server.tcp.empty() || !server.ipc.empty();
        if (server.ucx.empty() || (zmq_too && !ucx_pays(server, options)))
            return zmq_->connect(server, options);
        const bool on_this_host = options.prefer_local_ipc && server.host == host_name();
        const Reach reach = on_this_host               ? Reach::NoTcp
                            : options.prefer_local_ipc ? Reach::All
                                                       : Reach::TcpOnly;
        auto route = [this, reach, server, options, on_this_host](Rendezvous rendezvous) {
            return std::make_unique<UcxSender>(client_worker(reach, rendezvous), server, options,
                                               on_this_host);
        };
        return std::make_unique<UcxRoutes>(route(Rendezvous::ReceiverReads),
                                           [route] { return route(Rendezvous::SenderWrites); });
    }

    std::unique_ptr<Inbox> bind(const BindOptions &options) override {
        if (options.backend == Backend::Zmq)
            return zmq_->bind(options);
        if (options.backend == Backend::Auto)
            throw TransportError("an inbox takes data on one backend: for Auto, server::Receiver "
                                 "binds one of each");
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
    /// Whether UCX moves more than ZeroMQ to `server`: through shared memory on this host, or
    /// over RDMA. Over tcp, ZeroMQ's stream does (bench/RESULTS.md).
    static bool ucx_pays(const wire::ServerEndpoint &server, const SendOptions &options) {
        return (options.prefer_local_ipc && server.host == host_name()) || has_rdma();
    }

    /// One worker for all of this client's senders of a kind: one thread sends, one message
    /// at a time.
    std::shared_ptr<Worker> client_worker(Reach reach, Rendezvous rendezvous) {
        std::shared_ptr<Worker> &worker = client_workers_[{reach, rendezvous}];
        if (!worker)
            worker = std::make_shared<Worker>(std::make_shared<Context>(reach, rendezvous));
        return worker;
    }

    // Started on first use: a client of a ZeroMQ server never pays for UCX's start.
    std::shared_ptr<Context> context() {
        if (!context_)
            context_ = std::make_shared<Context>();
        return context_;
    }

    std::unique_ptr<Transport> zmq_;
    std::shared_ptr<Context> context_;
    std::map<std::pair<Reach, Rendezvous>, std::shared_ptr<Worker>> client_workers_;
};

} // namespace

std::unique_ptr<Transport> make_transport() {
    return std::make_unique<UcxTransport>(make_zmq_transport());
}

bool available(Backend) { return true; } // Zmq, Ucx, and so Auto

} // namespace melissa::transport
