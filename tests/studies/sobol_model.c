/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * A serial solver whose Sobol indices are known per cell, for the study tests:
 *     sobol_model CELLS STEPS x1 x2 x3      (x_k on [-1, 1], appended by the launcher)
 * Cell i of every time step is y = c1(i) x1 + c2(i) x2 + c3(i) x1 x3 with
 * c1 = 1, c2 = 2 i / (CELLS - 1), c3 = 1.5, so that, with V1 = c1^2/3, V2 = c2^2/3,
 * V13 = c3^2/9 and V = V1 + V2 + V13: S = (V1, V2, 0) / V and ST = (V1 + V13, V2, V13) / V.
 */
#define MELISSA_NO_MPI
#include <melissa/melissa_api.h>

#include <stdio.h>
#include <stdlib.h>

static int check(int status) {
    if (status != MELISSA_OK)
        fprintf(stderr, "sobol_model: %s\n", melissa_last_error());
    return status;
}

int main(int argc, char **argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: %s CELLS STEPS x1 x2 x3\n", argv[0]);
        return 2;
    }
    const int cells = atoi(argv[1]), steps = atoi(argv[2]);
    const double x1 = atof(argv[3]), x2 = atof(argv[4]), x3 = atof(argv[5]);
    double *y = malloc(sizeof(double) * (size_t)cells);
    if (y == NULL || cells < 2)
        return 2;
    for (int i = 0; i < cells; ++i)
        y[i] = x1 + (2.0 * i / (cells - 1)) * x2 + 1.5 * x1 * x3;
    if (check(melissa_init_no_mpi("y", cells)))
        return 1;
    for (int step = 0; step < steps; ++step)
        if (check(melissa_send("y", y)))
            return 1;
    free(y);
    return check(melissa_finalize()) ? 1 : 0;
}
