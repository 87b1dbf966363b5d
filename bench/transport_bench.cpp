// SPDX-License-Identifier: BSD-3-Clause
//
// Loopback throughput of melissa's transport, side by side with raw ZeroMQ moving the same bytes.
// One invocation measures one cell of bench/transport_bench.py's matrix (a message size and a
// number of clients) on each link (ipc, tcp) with each sender, one after the other, and prints
// one JSON line per run, and one for a memcpy of the same bytes, the bound of any transport on
// one host; the driver adds the file-based workflow and prints the tables.
//
// Both senders run in the same process structure, so that their ratio isolates what melissa adds
// (the C API's checks and bookkeeping, the header encoding, the handshake, the receiver's
// validation and delivery): the parent forks K clients before it has any thread, the clients
// prepare their payload and report ready, and the clock starts when the parent releases them
// through pipes and stops when the last data message is in the parent's hands.
//   melissa: a one-rank server::Receiver with a consumer that only counts; each client calls
//            melissa_init_no_mpi, then melissa_send for every message, then melissa_finalize.
//   ucx:     the same over the UCX backend: shared memory for "ipc", UCX's tcp for "tcp".
//   auto:    the same with a server that takes both, each client taking what pays (UCX for
//            "ipc", ZeroMQ for "tcp").
//   raw:     a PULL socket read by the parent's main thread; each client has a PUSH socket with
//            melissa's sender options (high-water mark 8, ZMQ_IMMEDIATE, linger) and sends a
//            64-byte header frame and the values frame, with zmq_send's one copy, as melissa does.
//
// A raw client closes its socket only once the parent says that all its data arrived. Without
// that wait, libzmq 4.3 over ipc loses the last messages still queued in a sender that closes
// (the linger is not honoured, libzmq issue #4660), and the run would never complete. A melissa
// client calls melissa_finalize right after its last send, as solvers do: it returns once the
// server confirms holding everything. --loss-check measures that loss instead of throughput: the
// clients close right after their last send, and the parent counts what arrived.
//
//   transport_bench --size BYTES --clients K --messages TOTAL [--repeats R] [--rotate N]
//                   [--links ipc,tcp] [--senders melissa,raw,ucx,auto] [--ipc-dir DIR]
//                   [--loss-check]
//                   [--bind ADDRESS --client-node PID]   (clients on another "node")
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <climits>
#include <condition_variable>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>
#include <zmq.hpp>

#include "melissa/melissa_api.h"
#include "server/receiver.hpp"
#include "transport/transport.hpp"

namespace server = melissa::server;
namespace transport = melissa::transport;
namespace wire = melissa::wire;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

namespace {

enum class Sender { Melissa, Ucx, Auto, Raw };
enum class Link { Ipc, Tcp };

const char *name(Sender s) {
    switch (s) {
    case Sender::Melissa:
        return "melissa";
    case Sender::Ucx:
        return "ucx";
    case Sender::Auto:
        return "auto";
    default:
        return "raw";
    }
}
const char *name(Link l) { return l == Link::Ipc ? "ipc" : "tcp"; }

transport::Backend backend(Sender s) {
    return s == Sender::Ucx    ? transport::Backend::Ucx
           : s == Sender::Auto ? transport::Backend::Auto
                               : transport::Backend::Zmq;
}

constexpr std::uint64_t kToken = 0xBE7C4;
constexpr const char *kField = "field";
constexpr int kHighWaterMark = 8; // melissa's default, on both sides, for both senders
constexpr int kTimeoutMs = 60000; // MELISSA_TIMEOUT's default; also the raw sender's linger
constexpr auto kDeadline = 120s;  // a run that takes longer has hung: fail, do not wait forever
constexpr auto kGrace = 300ms;    // --loss-check: a stream idle for this long has ended

struct Cell {
    std::size_t bytes = 0;          // payload per message (doubles)
    int clients = 1;                // client processes
    std::uint64_t per_client = 0;   // messages each client sends
    std::string ipc_dir = "/tmp";   // where the Unix sockets go (melissa's default: the temp dir)
    bool wait_for_ack = true;       // false for --loss-check
    std::string bind = "127.0.0.1"; // where the servers listen
    // --client-node: the pid of a process in another "node" (network and host-name namespaces,
    // as tools/virtual-cluster makes them), whose namespaces the clients join; 0: this one's.
    pid_t client_node = 0;
};

double cpu_seconds() {
    rusage usage{};
    ::getrusage(RUSAGE_SELF, &usage); // all threads, ZeroMQ's I/O thread included
    const auto seconds = [](const timeval &t) { return t.tv_sec + t.tv_usec * 1e-6; };
    return seconds(usage.ru_utime) + seconds(usage.ru_stime);
}

[[noreturn]] void fail(const std::string &why) {
    std::fprintf(stderr, "transport_bench: %s\n", why.c_str());
    std::exit(1);
}

// ---- pipes between the parent and its clients ------------------------------------------------

// Records are below PIPE_BUF, so that the writes of several clients to one pipe never interleave.
struct Go {
    char address[480];
};
struct Outcome {
    int client;
    int ok;
    double cpu; // the client's CPU seconds from its release to its end
    char error[400];
};
static_assert(sizeof(Go) <= PIPE_BUF && sizeof(Outcome) <= PIPE_BUF);

void write_all(int fd, const void *data, std::size_t size) {
    const auto *at = static_cast<const char *>(data);
    while (size > 0) {
        const ssize_t n = ::write(fd, at, size);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            fail(std::string("pipe write: ") + std::strerror(errno));
        at += n;
        size -= static_cast<std::size_t>(n);
    }
}

/// Reads exactly `size` bytes, waiting at most until `deadline`; false on timeout or end of pipe.
bool read_all(int fd, void *data, std::size_t size, Clock::time_point deadline) {
    auto *at = static_cast<char *>(data);
    while (size > 0) {
        const auto left =
            std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
        pollfd item{fd, POLLIN, 0};
        if (left.count() <= 0 || ::poll(&item, 1, static_cast<int>(left.count())) == 0)
            return false;
        const ssize_t n = ::read(fd, at, size);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return false;
        at += n;
        size -= static_cast<std::size_t>(n);
    }
    return true;
}

struct Pipe {
    int read = -1, write = -1;
    Pipe() {
        int fds[2];
        if (::pipe(fds) != 0)
            fail(std::string("pipe: ") + std::strerror(errno));
        read = fds[0];
        write = fds[1];
    }
    Pipe(const Pipe &) = delete;
    Pipe &operator=(const Pipe &) = delete;
    ~Pipe() {
        ::close(read);
        ::close(write);
    }
};

// ---- clients ---------------------------------------------------------------------------------

/// Sends the client's messages to `address`, then closes: melissa's at once, raw ZeroMQ's once
/// the parent says that they all arrived (`all_arrived`); throws with the reason on failure.
template <class AllArrived>
void send_all(Sender sender, Link link, const Cell &cell, int client, const std::string &address,
              const std::vector<double> &values, AllArrived &&all_arrived) {
    if (sender != Sender::Raw) {
        setenv("MELISSA_SERVER_ADDRESS", address.c_str(), 1);
        setenv("MELISSA_SIMULATION_ID", std::to_string(client).c_str(), 1);
        char token[17];
        std::snprintf(token, sizeof(token), "%llx", static_cast<unsigned long long>(kToken));
        setenv("MELISSA_STUDY_TOKEN", token, 1);
        setenv("MELISSA_TIMEOUT", std::to_string(kTimeoutMs / 1000).c_str(), 1);
        setenv("MELISSA_TRANSPORT", name(link), 1);
        const auto check = [](int code) {
            if (code != MELISSA_OK)
                throw std::runtime_error(melissa_last_error());
        };
        check(melissa_init_no_mpi(kField, static_cast<int>(values.size())));
        for (std::uint64_t m = 0; m < cell.per_client; ++m)
            check(melissa_send(kField, values.data()));
        // melissa_finalize returns once the server holds everything: no need to wait for the
        // parent's word. UCX, like MPI, moves data only within its calls, so a sender that
        // waited for that word before its next call could hold its last messages forever.
        check(melissa_finalize());
        return;
    }
    zmq::context_t context;
    zmq::socket_t push(context, zmq::socket_type::push);
    push.set(zmq::sockopt::sndhwm, kHighWaterMark);
    push.set(zmq::sockopt::sndtimeo, kTimeoutMs);
    push.set(zmq::sockopt::linger, kTimeoutMs);
    push.set(zmq::sockopt::immediate, 1);
    push.connect(address);
    // The header frame carries the client's index, for the parent's per-client count.
    std::array<std::byte, wire::kHeaderSize> header{};
    std::memcpy(header.data(), &client, sizeof(client));
    for (std::uint64_t m = 0; m < cell.per_client; ++m) {
        if (!push.send(zmq::buffer(header), zmq::send_flags::sndmore) ||
            !push.send(zmq::buffer(values.data(), cell.bytes), zmq::send_flags::none))
            throw std::runtime_error("raw send: no progress in " +
                                     std::to_string(kTimeoutMs / 1000) + " s");
    }
    all_arrived();
    push.close();
    context.close();
}

/// Moves this process into the network and host-name namespaces of process `pid`.
void join_node(pid_t pid) {
    for (const char *kind : {"net", "uts"}) {
        const std::string path = "/proc/" + std::to_string(pid) + "/ns/" + kind;
        const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
        if (fd < 0 || ::setns(fd, 0) != 0)
            fail("--client-node: cannot join " + path + ": " + std::strerror(errno));
        ::close(fd);
    }
}

[[noreturn]] void client_main(Sender sender, Link link, const Cell &cell, int client, int ready,
                              int parent, int outcomes) {
    if (cell.client_node != 0)
        join_node(cell.client_node);
    // The payload is allocated and touched before the clock starts: page faults are set-up.
    std::vector<double> values(cell.bytes / sizeof(double));
    for (std::size_t i = 0; i < values.size(); ++i)
        values[i] = static_cast<double>(client) + 1e-6 * static_cast<double>(i);
    write_all(ready, "r", 1);
    Go release{};
    Outcome outcome{client, 0, 0.0, {}};
    if (read_all(parent, &release, sizeof(release), Clock::now() + kDeadline)) {
        const double cpu0 = cpu_seconds();
        try {
            send_all(sender, link, cell, client, release.address, values, [&] {
                char byte;
                if (cell.wait_for_ack && !read_all(parent, &byte, 1, Clock::now() + kDeadline))
                    throw std::runtime_error("the parent never confirmed the data");
            });
            outcome.ok = 1;
        } catch (const std::exception &e) {
            std::snprintf(outcome.error, sizeof(outcome.error), "%s", e.what());
        }
        outcome.cpu = cpu_seconds() - cpu0;
    } else {
        std::snprintf(outcome.error, sizeof(outcome.error), "never released");
    }
    write_all(outcomes, &outcome, sizeof(outcome));
    std::_Exit(0); // no destructors, no atexit, no second flush of the parent's stdio buffers
}

// ---- servers ---------------------------------------------------------------------------------

/// Per-client counts of arrived messages: tells each client when all its data is in, and the
/// waiting parent when everything is.
class Tally {
  public:
    Tally(const Cell &cell, std::vector<int> acks)
        : per_client_(cell.per_client), message_bytes_(cell.bytes), acks_(std::move(acks)),
          counts_(acks_.size()) {
        for (auto &count : counts_)
            count = 0;
    }

    /// One message of `bytes` from `client` arrived; called by one thread only.
    void add(std::size_t client, std::uint64_t bytes) {
        if (!first_)
            first_ = Clock::now();
        bytes_ += bytes;
        if (client >= counts_.size() || ++counts_[client] != per_client_)
            return;
        write_all(acks_[client], "a", 1);
        if (++finished_ < counts_.size())
            return;
        std::lock_guard<std::mutex> lock(mutex_);
        last_ = Clock::now();
        done_.notify_all();
    }

    std::optional<Clock::time_point> wait(Clock::time_point deadline) {
        std::unique_lock<std::mutex> lock(mutex_);
        done_.wait_until(lock, deadline, [this] { return last_.has_value(); });
        return last_;
    }

    /// When the first message arrived; read once wait() has returned a time.
    Clock::time_point first() const { return *first_; }

    std::uint64_t expected() const { return per_client_ * counts_.size(); }
    /// Whether exactly the expected bytes arrived.
    bool complete() const { return bytes_ == expected() * message_bytes_; }
    std::uint64_t messages() const {
        std::uint64_t total = 0;
        for (const auto &count : counts_)
            total += count;
        return total;
    }

  private:
    const std::uint64_t per_client_;
    const std::size_t message_bytes_;
    const std::vector<int> acks_;
    std::vector<std::atomic<std::uint64_t>> counts_;
    std::atomic<std::size_t> finished_{0};
    std::atomic<std::uint64_t> bytes_{0};
    std::mutex mutex_;
    std::condition_variable done_;
    std::optional<Clock::time_point> first_, last_;
};

/// The receiving side of one run: what the clients connect to, and the wait for their data.
class Server {
  public:
    explicit Server(Tally &tally) : tally_(tally) {}
    virtual ~Server() = default;
    virtual std::string address(Link link) const = 0;
    /// Waits for all messages; returns when the last arrived, or nothing past the deadline.
    virtual std::optional<Clock::time_point> wait(Clock::time_point deadline) = 0;
    /// Empty if the run is sound, else what went wrong.
    virtual std::string check() {
        if (!tally_.complete())
            return std::to_string(tally_.messages()) + " messages of " +
                   std::to_string(tally_.expected()) + " arrived";
        return "";
    }
    /// Extra facts for --loss-check's JSON line.
    virtual std::string details() const { return ""; }

  protected:
    Tally &tally_;
};

/// The consumer of melissa's receiver: counts, and nothing else, so that it costs nothing.
class CountingConsumer final : public server::Consumer {
  public:
    explicit CountingConsumer(Tally &tally) : tally_(tally) {}
    void deliver(const server::Delivery &delivery, const std::atomic<bool> &) override {
        tally_.add(delivery.simulation_id, delivery.count * wire::dtype_size(delivery.dtype));
    }

  private:
    Tally &tally_;
};

class MelissaServer final : public Server {
  public:
    MelissaServer(const Cell &cell, transport::Backend backend, Tally &tally)
        : Server(tally),
          receiver_(config(cell, backend), std::make_shared<CountingConsumer>(tally)),
          control_(receiver_.serve_handshakes({receiver_.endpoint()})), clients_(cell.clients) {}

    std::string address(Link) const override { return control_; } // MELISSA_TRANSPORT picks

    std::optional<Clock::time_point> wait(Clock::time_point deadline) override {
        return tally_.wait(deadline);
    }

    std::string check() override {
        std::string problem = Server::check();
        if (!problem.empty())
            return problem;
        // The END messages follow the data: every simulation must be seen complete.
        for (const auto until = Clock::now() + 10s; Clock::now() < until && finished() < clients_;)
            std::this_thread::sleep_for(1ms);
        const server::Counters counters = receiver_.counters();
        if (!counters.dropped.empty())
            return "melissa dropped messages: " + counters.dropped.begin()->first;
        if (finished() != clients_)
            return "melissa saw " + std::to_string(finished()) + " of " + std::to_string(clients_) +
                   " simulations end";
        return "";
    }

    std::string details() const override {
        // The END messages trail the data by a little.
        for (const auto until = Clock::now() + kGrace;
             Clock::now() < until && finished() < clients_;)
            std::this_thread::sleep_for(1ms);
        return ", \"finished_simulations\": " + std::to_string(finished());
    }

  private:
    /// One rank, one field, melissa's defaults otherwise.
    static server::ReceiverConfig config(const Cell &cell, transport::Backend backend) {
        server::ReceiverConfig config;
        config.backend = backend;
        config.field_names = {kField};
        config.token = kToken;
        config.host = transport::host_name();
        config.bind_address = cell.bind;
        config.ipc_dir = cell.ipc_dir;
        config.high_water_mark = kHighWaterMark;
        return config;
    }

    int finished() const { return static_cast<int>(receiver_.finished_simulations().size()); }

    server::Receiver receiver_;
    std::string control_;
    int clients_;
};

class RawServer final : public Server {
  public:
    RawServer(const Cell &cell, Tally &tally)
        : Server(tally), socket_(context_, zmq::socket_type::pull) {
        // The options and endpoints of melissa's inbox (but the authentication, which costs
        // nothing per message): tcp on the loopback interface, and a Unix socket in the same
        // directory.
        socket_.set(zmq::sockopt::rcvhwm, kHighWaterMark);
        socket_.set(zmq::sockopt::linger, 0);
        socket_.bind("tcp://" + cell.bind + ":*");
        tcp_ = socket_.get(zmq::sockopt::last_endpoint);
        ipc_ = cell.ipc_dir + "/melissa-bench-raw-" + std::to_string(::getpid()) + ".sock";
        socket_.bind("ipc://" + ipc_);
    }

    ~RawServer() override { std::remove(ipc_.c_str()); }

    std::string address(Link link) const override {
        return link == Link::Ipc ? "ipc://" + ipc_ : tcp_;
    }

    std::optional<Clock::time_point> wait(Clock::time_point deadline) override {
        // Set once, not per message, so that the loop does what melissa's does: receive.
        const auto left =
            std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
        socket_.set(zmq::sockopt::rcvtimeo, static_cast<int>(std::max<long>(left.count(), 1)));
        zmq::message_t header, payload;
        for (std::uint64_t m = 0; m < tally_.expected(); ++m) {
            if (!socket_.recv(header) || !header.more() || !socket_.recv(payload))
                return std::nullopt;
            int client = -1;
            if (header.size() >= sizeof(client))
                std::memcpy(&client, header.data(), sizeof(client));
            tally_.add(static_cast<std::size_t>(client), payload.size());
        }
        return tally_.wait(deadline);
    }

  private:
    zmq::context_t context_;
    zmq::socket_t socket_;
    std::string tcp_, ipc_;
};

// ---- one run ---------------------------------------------------------------------------------

struct Run {
    double seconds = 0, server_cpu = 0, client_cpu = 0;
    double first = 0;          // seconds to the first delivery: connection set-up, handshake
    std::uint64_t arrived = 0; // --loss-check: messages that arrived
    std::string details;       // --loss-check: the server's extra facts
};

/// The one timing loop: forks the clients, releases them, waits for all their data.
Run run_once(Sender sender, Link link, const Cell &cell) {
    Pipe ready, outcomes;
    std::vector<std::unique_ptr<Pipe>> parent; // release, then "all your data arrived"
    std::vector<pid_t> pids;
    std::fflush(nullptr);
    // Forked before the server exists: the parent has no thread yet, so the children inherit no
    // lock held by one, and no ZeroMQ context.
    for (int c = 0; c < cell.clients; ++c) {
        parent.push_back(std::make_unique<Pipe>());
        const pid_t pid = ::fork();
        if (pid < 0)
            fail(std::string("fork: ") + std::strerror(errno));
        if (pid == 0)
            client_main(sender, link, cell, c, ready.write, parent.back()->read, outcomes.write);
        pids.push_back(pid);
    }
    const auto kill_clients = [&](const std::string &why) {
        for (const pid_t pid : pids)
            ::kill(pid, SIGKILL);
        for (const pid_t pid : pids)
            ::waitpid(pid, nullptr, 0);
        fail(std::string(name(sender)) + " over " + name(link) + ": " + why);
    };

    std::vector<int> acks;
    for (const auto &pipe : parent)
        acks.push_back(pipe->write);
    Tally tally(cell, acks);
    std::unique_ptr<Server> receiving;
    if (sender != Sender::Raw)
        receiving = std::make_unique<MelissaServer>(cell, backend(sender), tally);
    else
        receiving = std::make_unique<RawServer>(cell, tally);
    Go release{};
    std::snprintf(release.address, sizeof(release.address), "%s", receiving->address(link).c_str());
    for (int c = 0; c < cell.clients; ++c) {
        char byte;
        if (!read_all(ready.read, &byte, 1, Clock::now() + kDeadline))
            kill_clients("a client never got ready");
    }

    Run run;
    const double cpu0 = cpu_seconds();
    const auto start = Clock::now();
    for (const auto &pipe : parent)
        write_all(pipe->write, &release, sizeof(release));
    const auto collect_outcomes = [&] {
        for (int c = 0; c < cell.clients; ++c) {
            Outcome outcome{};
            if (!read_all(outcomes.read, &outcome, sizeof(outcome), Clock::now() + kDeadline))
                kill_clients("a client did not report");
            if (!outcome.ok)
                kill_clients("client " + std::to_string(outcome.client) + ": " + outcome.error);
            run.client_cpu += outcome.cpu;
        }
    };
    if (!cell.wait_for_ack) {
        // The clients end on their own; what has not arrived once nothing came for kGrace is lost.
        for (std::uint64_t seen = ~0ull; tally.messages() != seen;) {
            seen = tally.messages();
            if (receiving->wait(Clock::now() + kGrace))
                break;
        }
        collect_outcomes();
        run.arrived = tally.messages();
        run.details = receiving->details();
    } else {
        const std::optional<Clock::time_point> last = receiving->wait(start + kDeadline);
        run.server_cpu = cpu_seconds() - cpu0;
        if (!last)
            kill_clients("not all messages arrived within the deadline: " + receiving->check());
        run.seconds = std::chrono::duration<double>(*last - start).count();
        run.first = std::chrono::duration<double>(tally.first() - start).count();
        collect_outcomes();
    }
    for (const pid_t pid : pids) {
        int status = 0;
        if (::waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
            fail("a client exited abnormally");
    }
    if (cell.wait_for_ack) {
        const std::string problem = receiving->check();
        if (!problem.empty())
            fail(std::string(name(sender)) + " over " + name(link) + ": " + problem);
    }
    return run;
}

/// Seconds to copy `messages` messages of `bytes` from one buffer into another, on one thread:
/// what a transport on one host cannot beat, as it copies every byte at least once.
double memcpy_seconds(std::size_t bytes, std::uint64_t messages) {
    std::vector<std::byte> from(bytes, std::byte{1}), to(bytes, std::byte{0});
    const auto start = Clock::now();
    for (std::uint64_t m = 0; m < messages; ++m) {
        from[m % bytes] = std::byte(m); // a new message each time: the copy cannot be skipped
        std::memcpy(to.data(), from.data(), bytes);
    }
    volatile std::byte sink = to[bytes / 2];
    (void)sink;
    return std::chrono::duration<double>(Clock::now() - start).count();
}

/// The items of a comma-separated option, each one of `known` by its name().
template <typename Item>
std::vector<Item> parse_list(const std::string &option, const std::string &text,
                             std::initializer_list<Item> known) {
    std::vector<Item> items;
    for (std::size_t at = 0; at <= text.size();) {
        const std::size_t comma = std::min(text.find(',', at), text.size());
        const std::string item = text.substr(at, comma - at);
        const auto match = std::find_if(known.begin(), known.end(),
                                        [&](Item candidate) { return item == name(candidate); });
        if (match == known.end())
            fail(option + ": unknown item '" + item + "'");
        items.push_back(*match);
        at = comma + 1;
    }
    return items;
}

} // namespace

int main(int argc, char **argv) {
    Cell cell;
    std::uint64_t total = 0;
    int repeats = 1, rotate = 0;
    std::vector<Link> links{Link::Ipc, Link::Tcp};
    std::vector<Sender> senders{Sender::Melissa, Sender::Raw};
    if (transport::available(transport::Backend::Ucx))
        senders.insert(senders.end(), {Sender::Ucx, Sender::Auto});
    for (int i = 1; i < argc; ++i) {
        const std::string option = argv[i];
        if (option == "--loss-check") {
            cell.wait_for_ack = false;
            continue;
        }
        if (i + 1 >= argc)
            fail(option + " needs a value");
        const std::string value = argv[++i];
        if (option == "--size")
            cell.bytes = std::stoull(value);
        else if (option == "--clients")
            cell.clients = std::stoi(value);
        else if (option == "--messages")
            total = std::stoull(value);
        else if (option == "--repeats")
            repeats = std::stoi(value);
        else if (option == "--rotate")
            rotate = std::stoi(value);
        else if (option == "--links")
            links = parse_list(option, value, {Link::Ipc, Link::Tcp});
        else if (option == "--senders")
            senders = parse_list(option, value,
                                 {Sender::Melissa, Sender::Raw, Sender::Ucx, Sender::Auto});
        else if (option == "--ipc-dir")
            cell.ipc_dir = value;
        else if (option == "--bind")
            cell.bind = value;
        else if (option == "--client-node")
            cell.client_node = static_cast<pid_t>(std::stol(value));
        else
            fail("unknown option " + option);
    }
    if (cell.bytes == 0 || cell.bytes % sizeof(double) != 0 ||
        cell.bytes / sizeof(double) > INT_MAX)
        fail("--size must be a positive multiple of 8 bytes, below 16 GiB");
    if (cell.clients < 1 || total < static_cast<std::uint64_t>(cell.clients) || repeats < 1)
        fail("--clients, --messages (at least one per client) and --repeats must be positive");
    cell.per_client = total / static_cast<std::uint64_t>(cell.clients);

    // Runs rotate which sender goes first, so that a drift in the machine's speed during a
    // cell does not always favour the same one.
    const std::size_t n = senders.size();
    const std::uint64_t messages = cell.per_client * static_cast<std::uint64_t>(cell.clients);
    for (int r = 0; r < repeats; ++r) {
        if (cell.wait_for_ack)
            std::printf("{\"sender\": \"memcpy\", \"link\": \"memory\", \"size\": %zu, "
                        "\"clients\": %d, \"messages\": %llu, \"repeat\": %d, "
                        "\"seconds\": %.9f, \"first\": 0, \"server_cpu\": 0, "
                        "\"client_cpu\": 0}\n",
                        cell.bytes, cell.clients, static_cast<unsigned long long>(messages),
                        r + rotate, memcpy_seconds(cell.bytes, messages));
        for (const Link link : links)
            for (std::size_t k = 0; k < n; ++k) {
                const Sender sender = senders[(static_cast<std::size_t>(r + rotate) + k) % n];
                const Run run = run_once(sender, link, cell);
                std::printf("{\"sender\": \"%s\", \"link\": \"%s\", \"size\": %zu, "
                            "\"clients\": %d, \"messages\": %llu, \"repeat\": %d",
                            name(sender), name(link), cell.bytes, cell.clients,
                            static_cast<unsigned long long>(messages), r + rotate);
                if (cell.wait_for_ack)
                    std::printf(", \"seconds\": %.9f, \"first\": %.9f, \"server_cpu\": %.6f, "
                                "\"client_cpu\": %.6f}\n",
                                run.seconds, run.first, run.server_cpu, run.client_cpu);
                else
                    std::printf(", \"arrived\": %llu%s}\n",
                                static_cast<unsigned long long>(run.arrived), run.details.c_str());
                std::fflush(stdout);
            }
    }
    return 0;
}
