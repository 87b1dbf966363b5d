/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * Inria Melissa's client API for solvers without MPI (see melissa/api.h); mpi.h is not needed.
 *
 *     void melissa_init_no_mpi(const char *field_name, int vect_size);
 *     void melissa_send_no_mpi(const char *field_name, const double *send_vect);
 *     void melissa_send(const char *field_name, const double *send_vect);
 *     void melissa_finalize(void);
 *
 * On failure each call prints the error and ends the program with a non-zero status.
 */
#ifndef MELISSA_LEGACY_API_NO_MPI_H
#define MELISSA_LEGACY_API_NO_MPI_H

#ifndef MELISSA_NO_MPI
#define MELISSA_NO_MPI
#endif
#include "melissa/melissa_api.h"

#define melissa_init_no_mpi melissa_legacy_init_no_mpi
#define melissa_send_no_mpi melissa_legacy_send
#define melissa_send melissa_legacy_send
#define melissa_finalize melissa_legacy_finalize

#endif /* MELISSA_LEGACY_API_NO_MPI_H */
