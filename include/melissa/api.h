/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * Inria Melissa's client API, for solvers written against Melissa: they compile unchanged with
 * this header on their include path (pkg-config --cflags melissa) and link with -lmelissa.
 *
 *     void melissa_init(const char *field_name, int local_vect_size, MPI_Comm comm);
 *     void melissa_init_f(const char *field_name, int *local_vect_size, MPI_Fint *comm);
 *     void melissa_send(const char *field_name, const double *send_vect);
 *     void melissa_finalize(void);
 *
 * As in Melissa, these calls return nothing: on failure they print the error and end the
 * program with a non-zero status. The names are macros for melissa_legacy_* (melissa_api.h),
 * because libmelissa's own melissa_init, melissa_send and melissa_finalize return an error code
 * instead; a source file includes either this header or melissa_api.h, not both. New solvers
 * should use melissa_api.h.
 */
#ifndef MELISSA_LEGACY_API_H
#define MELISSA_LEGACY_API_H

#include "melissa/melissa_api.h"

#define melissa_init melissa_legacy_init
#define melissa_init_f melissa_legacy_init_f
#define melissa_send melissa_legacy_send
#define melissa_finalize melissa_legacy_finalize

#endif /* MELISSA_LEGACY_API_H */
