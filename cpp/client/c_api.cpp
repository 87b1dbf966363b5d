// SPDX-License-Identifier: BSD-3-Clause
//
// The C ABI: every entry point catches everything, so that no exception crosses into a C or
// Fortran solver, and reports through an error code and melissa_last_error().
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <new>
#include <string>

#include "client.hpp"
#include "communicator_mpi.hpp"
#include "melissa/melissa_api.h"

namespace {

using melissa::client::Client;
using melissa::client::Error;

std::unique_ptr<Client> client;
// Solvers call from one thread, but a threaded solver calling from two must not corrupt the
// client: calls are serialised.
std::mutex client_mutex;
thread_local std::string last_error;

template <class Body> int guarded(const char *call, Body &&body) {
    last_error.clear();
    try {
        std::lock_guard<std::mutex> lock(client_mutex);
        body();
        return MELISSA_OK;
    } catch (const Error &e) {
        last_error = e.what();
        return e.code;
    } catch (const std::bad_alloc &) {
        last_error = std::string(call) + ": out of memory";
    } catch (const std::exception &e) {
        last_error = std::string(call) + ": " + e.what();
    } catch (...) {
        last_error = std::string(call) + ": unknown error";
    }
    return MELISSA_ERR_INTERNAL;
}

std::string checked_name(const char *call, const char *field_name) {
    if (field_name == nullptr || *field_name == '\0')
        throw Error(MELISSA_ERR_ARGUMENT, std::string(call) + ": the field name is NULL or empty");
    return field_name;
}

std::uint64_t checked_size(const char *call, int size) {
    if (size < 0)
        throw Error(MELISSA_ERR_ARGUMENT, std::string(call) +
                                              ": the number of values is negative (" +
                                              std::to_string(size) + ")");
    return static_cast<std::uint64_t>(size);
}

/// The first melissa_init creates the client: the environment is read once, at that point.
template <class MakeCommunicator>
int init(const char *call, const char *field_name, int size, MakeCommunicator &&make) {
    return guarded(call, [&] {
        const std::string name = checked_name(call, field_name);
        const std::uint64_t cells = checked_size(call, size);
        if (!client)
            client =
                std::make_unique<Client>(melissa::client::Settings::from_environment(), make());
        client->init(name, cells);
    });
}

int send(const char *call, const char *field_name, const void *values, melissa::wire::DType dtype) {
    return guarded(call, [&] {
        const std::string name = checked_name(call, field_name);
        if (!client)
            throw Error(MELISSA_ERR_STATE, std::string(call) + ": melissa_init was not called");
        client->send(name, values, dtype);
    });
}

/// What a legacy call does with an error code: nothing on success; otherwise the message on stderr
/// and the end of the program. A rank that exits alone would leave the others of its simulation
/// waiting in a collective, so MPI ends them all.
void exit_on_error(int code) {
    if (code == MELISSA_OK)
        return;
    std::fprintf(stderr, "melissa: %s\n", last_error.c_str());
    std::fflush(stderr);
    int initialized = 0, finalized = 0;
    MPI_Initialized(&initialized);
    MPI_Finalized(&finalized);
    if (initialized && !finalized)
        MPI_Abort(MPI_COMM_WORLD, EXIT_FAILURE);
    std::exit(EXIT_FAILURE);
}

int null_argument(const char *call, const char *argument) {
    last_error = std::string(call) + ": " + argument + " is NULL";
    return MELISSA_ERR_ARGUMENT;
}

} // namespace

extern "C" {

int melissa_init(const char *field_name, int local_vect_size, MPI_Comm comm) {
    return init("melissa_init", field_name, local_vect_size,
                [comm] { return melissa::client::mpi_communicator(comm); });
}

int melissa_init_f(const char *field_name, int local_vect_size, MPI_Fint comm) {
    return init("melissa_init_f", field_name, local_vect_size,
                [comm] { return melissa::client::mpi_communicator(MPI_Comm_f2c(comm)); });
}

int melissa_init_no_mpi(const char *field_name, int vect_size) {
    return init("melissa_init_no_mpi", field_name, vect_size,
                [] { return melissa::client::self_communicator(); });
}

int melissa_send(const char *field_name, const double *send_vect) {
    return send("melissa_send", field_name, send_vect, melissa::wire::DType::Float64);
}

int melissa_send_float(const char *field_name, const float *send_vect) {
    return send("melissa_send_float", field_name, send_vect, melissa::wire::DType::Float32);
}

int melissa_finalize(void) {
    return guarded("melissa_finalize", [] {
        if (!client)
            throw Error(MELISSA_ERR_STATE, "melissa_finalize: melissa_init was not called");
        // The client goes whatever happens: a failed finalize must not leave sockets behind.
        std::unique_ptr<Client> ending = std::move(client);
        ending->finalize();
    });
}

const char *melissa_last_error(void) { return last_error.c_str(); }

void melissa_legacy_init(const char *field_name, int local_vect_size, MPI_Comm comm) {
    exit_on_error(melissa_init(field_name, local_vect_size, comm));
}

void melissa_legacy_init_f(const char *field_name, int *local_vect_size, MPI_Fint *comm) {
    if (local_vect_size == nullptr)
        exit_on_error(null_argument("melissa_init_f", "local_vect_size"));
    if (comm == nullptr)
        exit_on_error(null_argument("melissa_init_f", "comm"));
    exit_on_error(melissa_init_f(field_name, *local_vect_size, *comm));
}

void melissa_legacy_init_no_mpi(const char *field_name, int vect_size) {
    exit_on_error(melissa_init_no_mpi(field_name, vect_size));
}

void melissa_legacy_send(const char *field_name, const double *send_vect) {
    exit_on_error(melissa_send(field_name, send_vect));
}

void melissa_legacy_finalize(void) { exit_on_error(melissa_finalize()); }

} // extern "C"
