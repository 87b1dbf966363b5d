// SPDX-License-Identifier: BSD-3-Clause
//
// The ZeroMQ backend: PUSH/PULL for data (tcp, and ipc between processes of one host), REQ/ROUTER
// for control. ZMQ_IMMEDIATE keeps messages out of queues to peers that are not connected, so a
// dead server makes send block and time out instead of piling data up in memory. A data
// connection carries messages only once the client has shown the study token (PLAIN, checked by
// a ZAP handler), and no frame is longer than the inbox allows (ZMQ_MAXMSGSIZE): a peer that is
// not a client of the study costs the server neither memory nor a look at what it sends.
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <filesystem>
#include <thread>
#include <zmq.hpp>

#include "transport.hpp"

namespace melissa::transport {
namespace {

// Control messages are handshakes and flushes, a few hundred bytes: a larger frame is not ours.
constexpr std::int64_t kMaxControlBytes = 64 << 10;

// How long the ZAP handler waits for a request before it looks at whether to stop.
constexpr std::chrono::milliseconds kZapPollInterval{50};

constexpr const char *kNoUcx = "and this melissa was built without it (install libucx-dev and "
                               "rebuild, or set launcher_config.transport to \"zmq\")";

// Clients present this user name; the password alone (the token) is checked.
constexpr const char *kPlainUser = "melissa";

int milliseconds(std::chrono::milliseconds t) { return static_cast<int>(t.count()); }

/// The study token as PLAIN password: 16 hex digits, however MELISSA_STUDY_TOKEN wrote it.
std::string password(std::uint64_t token) {
    char hex[17];
    std::snprintf(hex, sizeof(hex), "%016llx", static_cast<unsigned long long>(token));
    return hex;
}

/// Binds `socket` to a free port of `address`, IPv4 or IPv6; returns the endpoint to connect to.
std::string bind_tcp(zmq::socket_t &socket, const std::string &address) {
    if (address.empty())
        throw TransportError("no address to bind: a server needs the IP address of the "
                             "interface its clients reach");
    const bool ipv6 = address.find(':') != std::string::npos;
    socket.set(zmq::sockopt::ipv6, ipv6);
    socket.bind("tcp://" + (ipv6 ? "[" + address + "]" : address) + ":*");
    return socket.get(zmq::sockopt::last_endpoint);
}

/// Answers libzmq's authentication requests (ZAP, ZeroMQ RFC 27) for the sockets of one context:
/// PLAIN with `password` passes, anything else is refused. libzmq asks before a connection
/// carries any message, over an inproc endpoint that one socket of the context may bind: one
/// inbox per transport.
class ZapHandler {
  public:
    ZapHandler(zmq::context_t &context, std::string password)
        : socket_(context, zmq::socket_type::rep), password_(std::move(password)) {
        socket_.set(zmq::sockopt::linger, 0);
        socket_.bind("inproc://zeromq.zap.01");
        thread_ = std::thread([this] { serve(); });
    }

    ~ZapHandler() {
        stopping_ = true;
        thread_.join();
    }

  private:
    void serve() {
        try {
            while (!stopping_) {
                zmq::pollitem_t item{socket_.handle(), 0, ZMQ_POLLIN, 0};
                if (zmq::poll(&item, 1, kZapPollInterval) == 0)
                    continue;
                // Version, request id, domain, address, identity, mechanism, then the
                // mechanism's credentials: PLAIN's are a user name and a password.
                std::vector<zmq::message_t> request;
                do {
                    request.emplace_back();
                    (void)socket_.recv(request.back());
                } while (request.back().more());
                const bool allowed = request.size() == 8 && request[0].to_string_view() == "1.0" &&
                                     request[5].to_string_view() == "PLAIN" &&
                                     request[7].to_string_view() == password_;
                const std::string id = request.size() > 1 ? request[1].to_string() : "";
                // Version, request id, status code and text, user id, metadata.
                socket_.send(zmq::str_buffer("1.0"), zmq::send_flags::sndmore);
                socket_.send(zmq::buffer(id), zmq::send_flags::sndmore);
                socket_.send(allowed ? zmq::str_buffer("200") : zmq::str_buffer("400"),
                             zmq::send_flags::sndmore);
                socket_.send(allowed ? zmq::str_buffer("OK")
                                     : zmq::str_buffer("not the study token"),
                             zmq::send_flags::sndmore);
                socket_.send(zmq::str_buffer(""), zmq::send_flags::sndmore);
                socket_.send(zmq::str_buffer(""), zmq::send_flags::none);
            }
        } catch (const zmq::error_t &) {
            // The context is ending: nobody is left to authenticate.
        }
    }

    zmq::socket_t socket_;
    std::string password_;
    std::atomic<bool> stopping_{false};
    std::thread thread_;
};

class ZmqMessage final : public Message {
  public:
    ZmqMessage(zmq::message_t header, zmq::message_t payload, bool extra)
        : header_(std::move(header)), payload_(std::move(payload)), extra_(extra) {}
    const std::byte *header() const override { return header_.data<std::byte>(); }
    std::size_t header_size() const override { return header_.size(); }
    const std::byte *payload() const override { return payload_.data<std::byte>(); }
    std::size_t payload_size() const override { return payload_.size(); }
    bool has_extra_frames() const override { return extra_; }

  private:
    zmq::message_t header_, payload_;
    bool extra_;
};

class ZmqSender final : public Sender {
  public:
    ZmqSender(zmq::context_t &context, const std::string &address, const SendOptions &options)
        : socket_(context, zmq::socket_type::push), address_(address), timeout_(options.timeout) {
        socket_.set(zmq::sockopt::sndhwm, options.high_water_mark);
        socket_.set(zmq::sockopt::sndtimeo, milliseconds(options.timeout));
        socket_.set(zmq::sockopt::linger, milliseconds(options.timeout));
        socket_.set(zmq::sockopt::immediate, 1);
        socket_.set(zmq::sockopt::ipv6, 1);
        socket_.set(zmq::sockopt::plain_username, kPlainUser);
        socket_.set(zmq::sockopt::plain_password, password(options.token));
        socket_.connect(address);
    }

    void send(const wire::HeaderBytes &header, const void *values, std::size_t bytes) override {
        const bool more = bytes > 0;
        zmq::message_t head(header.data(), header.size());
        if (!socket_.send(head, more ? zmq::send_flags::sndmore : zmq::send_flags::none))
            throw_timeout();
        if (!more)
            return;
        zmq::message_t body(values, bytes); // the one copy: the caller may reuse its buffer
        if (!socket_.send(body, zmq::send_flags::none))
            throw_timeout();
    }

  private:
    [[noreturn]] void throw_timeout() const {
        throw TimeoutError("the server at " + address_ + " took no data for " +
                           std::to_string(timeout_.count() / 1000.0) +
                           " s (is it still running? MELISSA_TIMEOUT sets the limit)");
    }

    zmq::socket_t socket_;
    std::string address_;
    std::chrono::milliseconds timeout_;
};

class ZmqInbox final : public Inbox {
  public:
    ZmqInbox(zmq::context_t &context, const BindOptions &options)
        : zap_(context, password(options.token)), socket_(context, zmq::socket_type::pull) {
        socket_.set(zmq::sockopt::rcvhwm, options.high_water_mark);
        socket_.set(zmq::sockopt::linger, 0);
        socket_.set(zmq::sockopt::plain_server, 1);
        socket_.set(zmq::sockopt::maxmsgsize, options.max_message_bytes);
        endpoint_.host = options.host;
        endpoint_.tcp = bind_tcp(socket_, options.bind_address);
        if (!options.ipc_dir.empty()) {
            ipc_path_ = options.ipc_dir + "/melissa-" + std::to_string(::getpid()) + "-" +
                        options.name + ".sock";
            endpoint_.ipc = "ipc://" + ipc_path_;
            socket_.bind(endpoint_.ipc);
        }
    }

    ~ZmqInbox() override {
        if (!ipc_path_.empty())
            std::remove(ipc_path_.c_str());
    }

    const wire::ServerEndpoint &endpoint() const override { return endpoint_; }

    std::unique_ptr<Message> receive(std::chrono::milliseconds timeout) override {
        zmq::message_t header, payload;
        // Polling only when nothing is waiting: a poll per message costs about 1 us, a third of
        // a small message's whole cost on the server.
        if (!socket_.recv(header, zmq::recv_flags::dontwait)) {
            zmq::pollitem_t item{socket_.handle(), 0, ZMQ_POLLIN, 0};
            if (zmq::poll(&item, 1, timeout) == 0)
                return nullptr;
            (void)socket_.recv(header);
        }
        bool extra = false;
        if (header.more()) {
            (void)socket_.recv(payload);
            // Frames beyond the second make the message malformed; they are read and dropped so
            // that the next message starts clean.
            for (bool more = payload.more(); more;) {
                zmq::message_t rest;
                (void)socket_.recv(rest);
                more = rest.more();
                extra = true;
            }
        }
        return std::make_unique<ZmqMessage>(std::move(header), std::move(payload), extra);
    }

  private:
    ZapHandler zap_; // before the socket, which must find it from its first connection
    zmq::socket_t socket_;
    wire::ServerEndpoint endpoint_;
    std::string ipc_path_;
};

class ZmqResponder final : public Responder {
  public:
    ZmqResponder(zmq::context_t &context, const std::string &bind_address)
        : socket_(context, zmq::socket_type::router) {
        socket_.set(zmq::sockopt::linger, 0);
        socket_.set(zmq::sockopt::maxmsgsize, kMaxControlBytes);
        address_ = bind_tcp(socket_, bind_address);
    }

    const std::string &address() const override { return address_; }

    std::optional<ControlRequest> receive(std::chrono::milliseconds timeout) override {
        zmq::pollitem_t item{socket_.handle(), 0, ZMQ_POLLIN, 0};
        if (zmq::poll(&item, 1, timeout) == 0)
            return std::nullopt;
        // A REQ peer's envelope: identity, empty delimiter, body. Anything else is dropped whole.
        std::vector<zmq::message_t> frames;
        do {
            frames.emplace_back();
            (void)socket_.recv(frames.back());
        } while (frames.back().more());
        if (frames.size() != 3 || frames[1].size() != 0)
            return std::nullopt;
        const auto *peer = frames[0].data<std::byte>();
        const auto *body = frames[2].data<std::byte>();
        return ControlRequest{{peer, peer + frames[0].size()}, {body, body + frames[2].size()}};
    }

    void reply(const ControlRequest &request, const std::vector<std::byte> &answer) override {
        socket_.send(zmq::message_t(request.peer.data(), request.peer.size()),
                     zmq::send_flags::sndmore);
        socket_.send(zmq::message_t(), zmq::send_flags::sndmore);
        socket_.send(zmq::message_t(answer.data(), answer.size()), zmq::send_flags::none);
    }

  private:
    zmq::socket_t socket_;
    std::string address_;
};

class ZmqTransport final : public Transport {
  public:
    std::unique_ptr<Sender> connect(const wire::ServerEndpoint &server,
                                    const SendOptions &options) override {
        // A server that takes both (Backend::Auto) has a ZeroMQ address too.
        if (!server.ucx.empty() && server.tcp.empty() && server.ipc.empty())
            throw TransportError(std::string("the server takes data over UCX only, ") + kNoUcx);
        const bool local =
            options.prefer_local_ipc && !server.ipc.empty() && server.host == host_name();
        try {
            return std::make_unique<ZmqSender>(context_, local ? server.ipc : server.tcp, options);
        } catch (const zmq::error_t &e) {
            throw TransportError("cannot connect to " + (local ? server.ipc : server.tcp) + ": " +
                                 e.what());
        }
    }

    std::unique_ptr<Inbox> bind(const BindOptions &options) override {
        if (options.backend != Backend::Zmq)
            throw TransportError(std::string("UCX was asked for, ") + kNoUcx);
        try {
            return std::make_unique<ZmqInbox>(context_, options);
        } catch (const zmq::error_t &e) {
            throw TransportError(std::string("cannot bind the server's data socket: ") + e.what());
        }
    }

    std::vector<std::byte> request(const std::string &address,
                                   const std::vector<std::byte> &message,
                                   std::chrono::milliseconds timeout) override {
        zmq::socket_t socket(context_, zmq::socket_type::req);
        socket.set(zmq::sockopt::linger, 0);
        socket.set(zmq::sockopt::ipv6, 1);
        socket.set(zmq::sockopt::sndtimeo, milliseconds(timeout));
        socket.set(zmq::sockopt::rcvtimeo, milliseconds(timeout));
        try {
            socket.connect(address);
        } catch (const zmq::error_t &e) {
            throw TransportError("bad server address '" + address + "': " + e.what());
        }
        zmq::message_t reply;
        if (!socket.send(zmq::message_t(message.data(), message.size()), zmq::send_flags::none) ||
            !socket.recv(reply))
            throw TimeoutError("no answer from the server at " + address + " within " +
                               std::to_string(timeout.count() / 1000.0) +
                               " s (is it running? MELISSA_TIMEOUT sets the limit)");
        const auto *data = reply.data<std::byte>();
        return {data, data + reply.size()};
    }

    std::unique_ptr<Responder> respond(const std::string &bind_address) override {
        try {
            return std::make_unique<ZmqResponder>(context_, bind_address);
        } catch (const zmq::error_t &e) {
            throw TransportError(std::string("cannot bind the control socket: ") + e.what());
        }
    }

  private:
    zmq::context_t context_;
};

} // namespace

std::unique_ptr<Transport> make_zmq_transport() { return std::make_unique<ZmqTransport>(); }

#ifndef MELISSA_HAVE_UCX
std::unique_ptr<Transport> make_transport() { return make_zmq_transport(); }

bool available(Backend backend) { return backend == Backend::Zmq; }
#endif

std::string host_name() {
    char name[256] = {};
    if (::gethostname(name, sizeof(name) - 1) != 0)
        return "localhost";
    return name;
}

} // namespace melissa::transport
