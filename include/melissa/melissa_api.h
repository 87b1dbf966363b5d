/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * The solver-facing client API: three calls stream every time step of a solver's fields to the
 * melissa server of the study that launched it.
 *
 *     melissa_init("temperature", local_cells, MPI_COMM_WORLD);   once per field, collective
 *     melissa_send("temperature", values);                         once per field per time step
 *     melissa_finalize();                                          collective, before MPI_Finalize
 *
 * Every function returns MELISSA_OK (0) or an error code; melissa_last_error() then says what
 * went wrong. No function lets an exception or a signal escape, and none waits longer than the
 * study's timeout (MELISSA_TIMEOUT, default 60 s) for the server.
 *
 * The launcher tells the client where its server is through the environment:
 *   MELISSA_SERVER_ADDRESS  server rank 0's control address, e.g. tcp://node12:40123 (required)
 *   MELISSA_SIMULATION_ID   this simulation's id, an integer from 0 (required)
 *   MELISSA_STUDY_TOKEN     the study's token, up to 16 hexadecimal digits (required)
 *   MELISSA_TIMEOUT         seconds to wait for the server before failing (default 60)
 *   MELISSA_TRANSPORT       "tcp" to avoid Unix sockets to a server on the same host
 *
 * A solver without MPI includes this header after defining MELISSA_NO_MPI and calls
 * melissa_init_no_mpi instead of melissa_init.
 */
#ifndef MELISSA_API_H
#define MELISSA_API_H

#ifndef MELISSA_NO_MPI
#include <mpi.h>
#endif

#include "melissa/export.h"

#ifdef __cplusplus
extern "C" {
#endif

/** Error codes. */
enum melissa_error {
    MELISSA_OK = 0,
    MELISSA_ERR_ENVIRONMENT = 1, /**< a MELISSA_* variable is missing or malformed */
    MELISSA_ERR_ARGUMENT = 2,    /**< a NULL pointer, a negative size, an unknown field */
    MELISSA_ERR_STATE = 3,       /**< a call out of order (send before init, init twice) */
    MELISSA_ERR_TIMEOUT = 4,     /**< the server did not answer or take data in time */
    MELISSA_ERR_REJECTED = 5,    /**< the server refused the field or the study token */
    MELISSA_ERR_TRANSPORT = 6,   /**< a socket could not be created or connected */
    MELISSA_ERR_MPI = 7,         /**< an MPI call failed */
    MELISSA_ERR_INTERNAL = 8     /**< a bug: please report it with the message */
};

#ifndef MELISSA_NO_MPI
/**
 * Declares a field that this solver will send. MPI-collective over comm: every rank calls it
 * with the same field name and its own number of cells.
 *
 * field_name: the field's name, as in the study's config (NUL-terminated).
 * local_vect_size: how many values this rank holds (0 or more; ranks may differ).
 * comm: the solver's communicator (often MPI_COMM_WORLD); melissa works on a duplicate of it.
 */
MELISSA_EXPORT int
melissa_init(const char *field_name, int local_vect_size, MPI_Comm comm);

/** melissa_init with a Fortran communicator handle (what `use mpi` and MPI_VAL give). */
MELISSA_EXPORT int
melissa_init_f(const char *field_name, int local_vect_size, MPI_Fint comm);
#endif

/**
 * melissa_init for a solver without MPI: one process holding all vect_size values. Not
 * MPI-collective; must not be mixed with melissa_init in one process.
 */
MELISSA_EXPORT int
melissa_init_no_mpi(const char *field_name, int vect_size);

/**
 * Sends the next time step of a field: local_vect_size doubles from send_vect. Not collective,
 * but every rank must send every time step. The library counts time steps from 0, per field.
 * Returns once the values are copied: send_vect may be reused at once. Blocks while the server
 * is busy (back-pressure), at most the timeout.
 */
MELISSA_EXPORT int
melissa_send(const char *field_name, const double *send_vect);

/** melissa_send for float values; a field keeps the value type of its first send. */
MELISSA_EXPORT int
melissa_send_float(const char *field_name, const float *send_vect);

/**
 * Tells the server that this simulation is complete and releases everything. MPI-collective
 * over the communicator of melissa_init; call it before MPI_Finalize.
 */
MELISSA_EXPORT int
melissa_finalize(void);

/**
 * What the last failed call of this thread went wrong with; an empty string if none did. The
 * text stays valid until the next melissa call of this thread.
 */
MELISSA_EXPORT const char *
melissa_last_error(void);

/**
 * Writes the version of the libmelissa loaded at run time. Not MPI-collective.
 *
 * major, minor, patch: where to write each part; any of them may be NULL to skip it.
 * Returns 0 (it cannot fail; the code keeps the C ABI's convention).
 */
MELISSA_EXPORT int
melissa_version(int *major, int *minor, int *patch);

/*
 * Inria Melissa's client calls, for solvers written against Melissa: <melissa/api.h> and
 * <melissa/api_no_mpi.h> (also found as <melissa_api.h> and <melissa_api_no_mpi.h>) and the
 * Fortran include file melissa/api.f90 give them Melissa's names. They behave as the calls above,
 * except that on failure they print the error to stderr and end the program with a non-zero
 * status (MPI_Abort on MPI_COMM_WORLD while MPI runs, so that no rank waits forever): a legacy
 * solver never checks a return value, and must not look successful after a failure.
 */
#ifndef MELISSA_NO_MPI
/** Melissa's melissa_init: melissa_init, exiting on failure. MPI-collective over comm. */
MELISSA_EXPORT void
melissa_legacy_init(const char *field_name, int local_vect_size, MPI_Comm comm);

/** Melissa's melissa_init_f: the arguments by reference, as Fortran passes them. */
MELISSA_EXPORT void
melissa_legacy_init_f(const char *field_name, int *local_vect_size, MPI_Fint *comm);
#endif

/** Melissa's melissa_init_no_mpi: melissa_init_no_mpi, exiting on failure. */
MELISSA_EXPORT void
melissa_legacy_init_no_mpi(const char *field_name, int vect_size);

/** Melissa's melissa_send (and melissa_send_no_mpi): melissa_send, exiting on failure. */
MELISSA_EXPORT void
melissa_legacy_send(const char *field_name, const double *send_vect);

/** Melissa's melissa_finalize: melissa_finalize, exiting on failure. */
MELISSA_EXPORT void
melissa_legacy_finalize(void);

#ifdef __cplusplus
}
#endif

#endif /* MELISSA_API_H */
