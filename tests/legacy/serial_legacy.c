/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * A serial solver written against Inria Melissa's API without MPI, for test_legacy.py: it builds
 * with a plain C compiler and pkg-config's flags (melissa_api_no_mpi.h needs no mpi.h), and, as
 * in Melissa, ignores what its calls return: one that fails must print the error and end the
 * program with a non-zero status, which MPI_Abort cannot do here, MPI never having started.
 *
 *     serial_legacy STEPS
 */
#include <stdlib.h>

#include <melissa_api_no_mpi.h>

int main(int argc, char **argv) {
    const int steps = argc > 1 ? atoi(argv[1]) : 1;
    double values[4] = {0.0, 1.0, 2.0, 3.0};
    melissa_init_no_mpi("temperature", 4);
    for (int step = 0; step < steps; ++step)
        melissa_send_no_mpi("temperature", values);
    melissa_finalize();
    return 0;
}
