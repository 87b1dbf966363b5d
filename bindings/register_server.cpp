// SPDX-License-Identifier: BSD-3-Clause
//
// The server receiver and its consumers, for melissa.server: conversion only.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cerrno>
#include <system_error>

#include "server/checkpoint.hpp"
#include "server/consumers.hpp"
#include "server/receiver.hpp"
#include "server/replay_buffer.hpp"
#include "state_arrays.hpp"

namespace py = pybind11;
namespace server = melissa::server;
namespace wire = melissa::wire;
namespace transport = melissa::transport;

namespace {

wire::Routing routing_from(const std::string &name) {
    if (name == "cells")
        return wire::Routing::Cells;
    if (name == "whole_by_simulation")
        return wire::Routing::WholeBySimulation;
    if (name == "whole_by_time_step")
        return wire::Routing::WholeByTimeStep;
    throw py::value_error("routing must be 'cells', 'whole_by_simulation' or "
                          "'whole_by_time_step', got '" +
                          name + "'");
}

py::dict endpoint_dict(const wire::ServerEndpoint &e) {
    py::dict d;
    d["host"] = e.host;
    d["tcp"] = e.tcp;
    d["ipc"] = e.ipc;
    d["control"] = e.control;
    d["ucx"] = e.ucx;
    return d;
}

py::dict stats_dict(const server::BufferStats &s) {
    py::dict d;
    d["size"] = s.size;
    d["validation_samples"] = s.validation_samples;
    d["received"] = s.received;
    d["evicted"] = s.evicted;
    d["drawn"] = s.drawn;
    d["uses"] = s.uses;
    d["draining"] = s.draining;
    return d;
}

transport::Backend backend_from(const std::string &name) {
    if (name == "zmq")
        return transport::Backend::Zmq;
    if (name == "ucx" || name == "auto") {
        if (!transport::available(transport::Backend::Ucx))
            throw py::value_error("transport '" + name +
                                  "': this melissa was built without UCX (install libucx-dev "
                                  "and rebuild, or use 'zmq')");
        return name == "ucx" ? transport::Backend::Ucx : transport::Backend::Auto;
    }
    throw py::value_error("transport must be 'zmq', 'ucx' or 'auto', got '" + name + "'");
}

/// A numpy view of delivered values that keeps them alive: no copy out of the receiver.
py::array values_array(const server::Delivery &d) {
    auto *owner = new std::shared_ptr<const void>(d.owner);
    py::capsule keep(owner, [](void *p) { delete static_cast<std::shared_ptr<const void> *>(p); });
    const auto n = static_cast<py::ssize_t>(d.count);
    if (d.dtype == wire::DType::Float64)
        return py::array_t<double>({n}, {sizeof(double)}, static_cast<const double *>(d.values),
                                   keep);
    return py::array_t<float>({n}, {sizeof(float)}, static_cast<const float *>(d.values), keep);
}

/// Copies of a kernel's state arrays, named as melissa.stats' state_dict() names them.
py::dict state_copy(std::vector<melissa::stats::StateArray> arrays) {
    py::dict out;
    for (const auto &a : arrays) {
        const std::vector<py::ssize_t> shape(a.shape.begin(), a.shape.end());
        // No base object: numpy copies the values.
        out[a.name.c_str()] = py::array(melissa::bindings::state_dtype(a.type), shape, a.data);
    }
    return out;
}

/// (simulation_ids, time_steps, values (size, cells)) without copying the batch's vectors.
py::tuple batch_arrays(server::Batch batch, std::size_t cells) {
    auto owned = [](auto vector, std::vector<py::ssize_t> shape) {
        using Vector = decltype(vector);
        auto *kept = new Vector(std::move(vector));
        py::capsule free(kept, [](void *p) { delete static_cast<Vector *>(p); });
        return py::array_t<typename Vector::value_type>(shape, kept->data(), free);
    };
    const auto n = static_cast<py::ssize_t>(batch.size());
    return py::make_tuple(owned(std::move(batch.simulation_ids), {n}),
                          owned(std::move(batch.time_steps), {n}),
                          owned(std::move(batch.values), {n, static_cast<py::ssize_t>(cells)}));
}

/// Every kernel of one (field, time step): their state arrays, copied.
py::dict accumulator_states(server::Accumulators &a) {
    py::dict states;
    for (auto &[kernel, arrays] : server::kernel_states(a))
        states[kernel.c_str()] = state_copy(std::move(arrays));
    return states;
}

py::list statistics_pieces(server::FieldStatistics &statistics) {
    py::list out;
    statistics.visit([&](std::uint32_t field, std::uint32_t step, server::Accumulators &a) {
        out.append(py::make_tuple(field, step, a.offset, a.cells));
    });
    return out;
}

py::dict piece_states(server::FieldStatistics &statistics, std::uint32_t field,
                      std::uint32_t step) {
    py::dict states;
    if (!statistics.visit_one(field, step,
                              [&](server::Accumulators &a) { states = accumulator_states(a); }))
        throw py::key_error("no statistics of field " + std::to_string(field) + " at time step " +
                            std::to_string(step));
    return states;
}

/// The bytes of a bytes-like object (bytes, or a file's mmap), read in place: they stay valid
/// while the returned buffer_info lives.
py::buffer_info contiguous_bytes(const py::buffer &data) {
    py::buffer_info info = data.request();
    if (info.itemsize != 1 || info.ndim != 1 || info.strides[0] != 1)
        throw py::value_error("expected contiguous bytes");
    return info;
}

server::BufferPolicy policy_from(const std::string &name) {
    if (name == "FIFO")
        return server::BufferPolicy::Fifo;
    if (name == "FIRO")
        return server::BufferPolicy::Firo;
    if (name == "Reservoir")
        return server::BufferPolicy::Reservoir;
    if (name == "BatchReservoir")
        return server::BufferPolicy::BatchReservoir;
    throw py::value_error("buffer must be 'FIFO', 'FIRO', 'Reservoir' or 'BatchReservoir', got '" +
                          name + "'");
}

py::dict summary_dict(const server::CheckpointSummary &s) {
    py::dict d;
    d["version"] = s.version;
    d["rank"] = s.rank;
    d["n_ranks"] = s.n_ranks;
    d["field_names"] = s.field_names;
    d["finished"] = s.finished;
    d["size"] = s.size;
    return d;
}

} // namespace

void register_server(py::module_ &m) {
    m.attr("CHECKPOINT_VERSION") = server::kCheckpointVersion;
    m.def(
        "transports",
        [] {
            std::vector<std::string> names{"zmq"};
            if (transport::available(transport::Backend::Ucx))
                names.emplace_back("ucx");
            return names;
        },
        "The data transports this build has: 'zmq', and 'ucx' where it was built with UCX.");
    m.def(
        "checkpoint_summary",
        [](const py::buffer &data) {
            const py::buffer_info bytes = contiguous_bytes(data);
            return summary_dict(
                server::checkpoint_summary(bytes.ptr, static_cast<std::size_t>(bytes.size)));
        },
        py::arg("data"),
        "What a server rank's checkpoint says of itself: {version, rank, n_ranks, field_names, "
        "finished (simulation ids), size (bytes)}, after the checks "
        "Receiver.restore_checkpoint makes of its format (ValueError).");

    py::class_<server::Consumer, std::shared_ptr<server::Consumer>>(m, "Consumer");

    py::class_<server::Collector, server::Consumer, std::shared_ptr<server::Collector>>(m,
                                                                                        "Collector")
        .def(py::init<std::size_t>(), py::arg("capacity"))
        .def(
            "pop",
            [](server::Collector &self, double timeout) -> py::object {
                std::optional<server::Delivery> d;
                {
                    py::gil_scoped_release release;
                    d = self.pop(std::chrono::milliseconds(static_cast<long long>(timeout * 1e3)));
                }
                if (!d)
                    return py::none();
                return py::make_tuple(d->simulation_id, d->field_id, d->time_step, d->offset,
                                      values_array(*d));
            },
            py::arg("timeout"),
            "(simulation_id, field_id, time_step, offset, values) or None after timeout seconds.")
        .def("__len__", &server::Collector::size);

    py::class_<server::FieldStatistics, server::Consumer, std::shared_ptr<server::FieldStatistics>>(
        m, "FieldStatistics")
        .def(py::init(
                 [](int order, bool extrema, std::vector<double> thresholds,
                    std::vector<double> probabilities, std::size_t sobol_params,
                    const std::vector<std::tuple<std::uint32_t, std::uint32_t, bool>> &covariance,
                    const py::array_t<double, py::array::c_style | py::array::forcecast>
                        &parameters) {
                     if (parameters.ndim() != 2)
                         throw py::value_error("FieldStatistics: parameters must be 2-D "
                                               "(simulations, parameters)");
                     server::StatisticsSpec spec{order, extrema, std::move(thresholds),
                                                 std::move(probabilities), sobol_params};
                     for (const auto &[field, other, parameter] : covariance)
                         spec.covariance.push_back({field, other, parameter});
                     spec.n_parameters = static_cast<std::size_t>(parameters.shape(1));
                     spec.parameters.assign(parameters.data(),
                                            parameters.data() + parameters.size());
                     return std::make_shared<server::FieldStatistics>(std::move(spec));
                 }),
             py::arg("moments_order") = 0, py::arg("extrema") = false,
             py::arg("thresholds") = std::vector<double>{},
             py::arg("probabilities") = std::vector<double>{}, py::arg("sobol_params") = 0,
             py::arg("covariance") = std::vector<std::tuple<std::uint32_t, std::uint32_t, bool>>{},
             py::arg("parameters") = py::array_t<double>(std::vector<py::ssize_t>{0, 0}),
             "covariance: (field, other, other is a parameter) for each pair, by field id or "
             "parameter index; their states are 'covariance:<i>', i the pair's index. "
             "parameters: each simulation's, (simulations, parameters), by simulation id, for "
             "the pairs of a field and a parameter (a simulation beyond them is counted in "
             "dropped()).")
        .def("pending_groups", &server::FieldStatistics::pending_groups)
        .def("pending_halves", &server::FieldStatistics::pending_halves,
             "Fields of pairs of fields waiting for their partner.")
        .def("dropped", &server::FieldStatistics::dropped,
             "{reason: count} of the covariance updates not made.")
        .def("pieces", &statistics_pieces,
             "[(field_id, time_step, offset, cells)] of every (field, time step) seen.")
        .def("state", &piece_states, py::arg("field_id"), py::arg("time_step"),
             "{statistic: state arrays} of one (field, time step), copied under the lock: one "
             "at a time, so that a copy of every accumulator is never held at once.");

    py::class_<server::ReplayBuffer, server::Consumer, std::shared_ptr<server::ReplayBuffer>>(
        m, "ReplayBuffer")
        .def(py::init([](const std::string &policy, std::size_t capacity, std::size_t watermark,
                         std::size_t n_fields, std::vector<std::uint32_t> validation,
                         std::uint64_t seed, std::uint64_t pseudo_epochs) {
                 return std::make_shared<server::ReplayBuffer>(server::BufferConfig{
                     policy_from(policy), capacity, watermark, n_fields,
                     std::set<std::uint32_t>(validation.begin(), validation.end()), seed,
                     pseudo_epochs});
             }),
             py::arg("policy"), py::arg("capacity"), py::arg("watermark"), py::arg("n_fields"),
             py::arg("validation") = std::vector<std::uint32_t>{}, py::arg("seed") = 0,
             py::arg("pseudo_epochs") = 0,
             "pseudo_epochs: uses after which a sample leaves; 0: the policy's default (1 for "
             "FIFO and FIRO, no limit for Reservoir and BatchReservoir).")
        .def(
            "push",
            [](server::ReplayBuffer &self, std::uint32_t simulation_id, std::uint32_t time_step,
               std::uint32_t field_id,
               const py::array_t<float, py::array::c_style | py::array::forcecast> &values) {
                server::Delivery d;
                d.simulation_id = simulation_id;
                d.field_id = field_id;
                d.time_step = time_step;
                d.offset = 0;
                d.count = static_cast<std::uint64_t>(values.size());
                d.dtype = wire::DType::Float32;
                d.values = values.data();
                static const std::atomic<bool> never_stopping{false};
                py::gil_scoped_release release;
                self.deliver(d, never_stopping);
            },
            py::arg("simulation_id"), py::arg("time_step"), py::arg("field_id"), py::arg("values"),
            "Adds one field of one (simulation, time step) as the receiver would: for training "
            "from data that is already in memory or on disk, and for tests. Blocks while a FIFO "
            "or FIRO buffer is full.")
        .def("has_batch", &server::ReplayBuffer::has_batch, py::arg("n"))
        .def(
            "batch",
            [](server::ReplayBuffer &self, std::size_t n, double timeout) {
                server::Batch batch;
                {
                    py::gil_scoped_release release;
                    batch = self.batch(
                        n, std::chrono::milliseconds(static_cast<long long>(timeout * 1e3)));
                }
                return batch_arrays(std::move(batch), self.sample_cells());
            },
            py::arg("n"), py::arg("timeout"),
            "(simulation_ids, time_steps, values (k, cells) float32); k = 0 after the timeout.")
        .def("drain", &server::ReplayBuffer::drain)
        .def("exhausted", &server::ReplayBuffer::exhausted)
        .def("validation_samples",
             [](server::ReplayBuffer &self) {
                 return batch_arrays(self.validation_samples(), self.sample_cells());
             })
        .def_property_readonly("sample_cells", &server::ReplayBuffer::sample_cells)
        .def(
            "write_state",
            [](server::ReplayBuffer &self, int fd, std::uint64_t tag) {
                try {
                    server::ReplayBuffer::Written written;
                    {
                        py::gil_scoped_release release;
                        written = self.write_state(fd, tag);
                    }
                    return py::make_tuple(written.bytes, stats_dict(written.stats));
                } catch (const std::system_error &e) {
                    // OSError(errno, strerror), as Python's own writes raise.
                    errno = e.code().value();
                    PyErr_SetFromErrno(PyExc_OSError);
                    throw py::error_already_set();
                }
            },
            py::arg("fd"), py::arg("tag") = 0,
            "Writes the buffer's whole state (samples with their uses, held-out and incomplete "
            "samples, counters, random generator) to the file descriptor fd, a buffer at a time, "
            "receiving held meanwhile; returns the bytes written and the stats() of the state "
            "written (samples may arrive once it is). Raises OSError if the file does not take "
            "it, which then holds a part of it.")
        .def(
            "load_state",
            [](server::ReplayBuffer &self, const py::buffer &data,
               std::optional<std::uint64_t> tag) {
                const py::buffer_info bytes = contiguous_bytes(data);
                py::gil_scoped_release release;
                return self.load_state(bytes.ptr, static_cast<std::size_t>(bytes.size), tag);
            },
            py::arg("data"), py::arg("tag") = py::none(),
            "Takes up a state written by write_state (bytes, or its file's mmap, read in place) "
            "into this fresh buffer; returns the tag written with it. Raises ValueError, changing "
            "nothing, for anything but an intact state of a buffer of this policy and fields "
            "within this capacity, written with `tag` if given.")
        .def("stats", [](server::ReplayBuffer &self) { return stats_dict(self.stats()); });

    py::class_<server::Receiver>(m, "Receiver")
        .def(py::init([](std::vector<std::string> field_names, std::uint64_t token,
                         std::uint32_t rank, std::uint32_t n_ranks, const std::string &routing,
                         std::string host, std::string ipc_dir, int high_water_mark,
                         std::shared_ptr<server::Consumer> consumer, std::string bind_address,
                         std::optional<std::vector<std::uint64_t>> field_sizes,
                         std::uint32_t nb_time_steps, const std::string &transport) {
                 if (n_ranks == 0 || rank >= n_ranks)
                     throw py::value_error("Receiver: rank must lie in [0, n_ranks)");
                 server::ReceiverConfig config;
                 config.field_names = std::move(field_names);
                 config.token = token;
                 config.rank = rank;
                 config.n_ranks = n_ranks;
                 config.routing = routing_from(routing);
                 config.host = std::move(host);
                 config.bind_address = std::move(bind_address);
                 config.ipc_dir = std::move(ipc_dir);
                 config.high_water_mark = high_water_mark;
                 config.field_sizes = field_sizes.value_or(std::vector<std::uint64_t>{});
                 config.nb_time_steps = nb_time_steps;
                 config.backend = backend_from(transport);
                 return std::make_unique<server::Receiver>(std::move(config), std::move(consumer));
             }),
             py::arg("field_names"), py::arg("token"), py::arg("rank"), py::arg("n_ranks"),
             py::arg("routing"), py::arg("host"), py::arg("ipc_dir"), py::arg("high_water_mark"),
             py::arg("consumer"), py::kw_only(), py::arg("bind_address"),
             py::arg("field_sizes") = py::none(), py::arg("nb_time_steps") = 0,
             py::arg("transport") = "zmq",
             "host: this host's name (clients on a host of that name use ipc). bind_address: the "
             "IP address (v4 or v6) the sockets listen on, which tcp clients connect to. Data "
             "comes only from peers that present the token (ZeroMQ PLAIN, in clear text), in "
             "frames of at most the largest declared field as float64 (1 GiB when a field's size "
             "is not declared; a peer sending a larger one is disconnected). field_sizes: the "
             "cells of each field, as the study declares them (None, or 0 for a field: not "
             "declared, and the first size a client gives is the field's). nb_time_steps: the "
             "time steps every simulation sends of each field (0: not declared); declared, a "
             "simulation is finished on this rank once it holds every time step it owns of every "
             "field of the study, and a time step beyond is dropped. transport: what carries data, "
             "'zmq' or 'ucx' (shared memory within a node, TCP or RDMA between nodes; the token "
             "is checked in each message's header before its values are fetched).")
        .def_property_readonly(
            "endpoint", [](const server::Receiver &r) { return endpoint_dict(r.endpoint()); })
        .def(
            "serve_handshakes",
            [](server::Receiver &self, const std::vector<py::dict> &layout) {
                std::vector<wire::ServerEndpoint> endpoints;
                for (const auto &e : layout)
                    endpoints.push_back({e["host"].cast<std::string>(),
                                         e["tcp"].cast<std::string>(), e["ipc"].cast<std::string>(),
                                         e["control"].cast<std::string>(),
                                         e["ucx"].cast<std::string>()});
                return self.serve_handshakes(std::move(endpoints));
            },
            py::arg("layout"))
        .def("counters",
             [](const server::Receiver &self) {
                 const server::Counters c = self.counters();
                 py::dict d, per_simulation;
                 d["messages"] = c.messages;
                 d["bytes"] = c.bytes;
                 d["handshakes"] = c.handshakes;
                 d["rejected_handshakes"] = c.rejected_handshakes;
                 d["dropped"] = c.dropped;
                 for (const auto &[id, s] : c.simulations) {
                     py::dict one;
                     one["messages"] = s.messages;
                     one["bytes"] = s.bytes;
                     one["time_steps"] = s.time_steps;
                     per_simulation[py::int_(id)] = one;
                 }
                 d["simulations"] = per_simulation;
                 return d;
             })
        .def("finished_simulations", &server::Receiver::finished_simulations)
        .def("field_sizes", &server::Receiver::field_sizes)
        .def(
            "checkpoint",
            [](server::Receiver &self, server::FieldStatistics &statistics, int fd) {
                server::CheckpointSummary written;
                try {
                    py::gil_scoped_release release;
                    written = server::write_checkpoint(self, statistics, fd);
                } catch (const std::system_error &e) {
                    // OSError(errno, strerror), as Python's own writes raise.
                    errno = e.code().value();
                    PyErr_SetFromErrno(PyExc_OSError);
                    throw py::error_already_set();
                }
                return summary_dict(written);
            },
            py::arg("statistics"), py::arg("fd"),
            "Writes this rank's checkpoint to the file descriptor fd, a buffer at a time, and "
            "returns checkpoint_summary's dict of it: the receiver's delivery state and the "
            "statistics' accumulators, Sobol groups and covariance halves in flight, consistent "
            "with each other (the receiver waits between two messages meanwhile), in melissa's "
            "checkpoint format (CHECKPOINT_VERSION). Raises OSError if the file does not take "
            "it, which then holds a part of it.")
        .def(
            "restore_checkpoint",
            [](server::Receiver &self, server::FieldStatistics &statistics,
               const py::buffer &data) {
                const py::buffer_info bytes = contiguous_bytes(data);
                py::gil_scoped_release release;
                server::restore_checkpoint(self, statistics, bytes.ptr,
                                           static_cast<std::size_t>(bytes.size));
            },
            py::arg("statistics"), py::arg("data"),
            "Takes up a checkpoint (bytes, or its file's mmap, read in place), before any client "
            "connects. Raises ValueError, changing nothing, for anything but an intact checkpoint "
            "of this rank of this study with these statistics, in a format this melissa reads.")
        .def("stop", &server::Receiver::stop, py::call_guard<py::gil_scoped_release>());
}
