// SPDX-License-Identifier: BSD-3-Clause
//
// heat.c's solver written the way a solver instrumented for Inria's Melissa is: Melissa's header
// and calls, which return nothing and end the program on failure, parameters read from the
// command line without checks, and the work done on the ranks of this program alone. A solver
// written so builds against melissa unchanged, its include path and library from pkg-config:
//
//     mpicc heat_legacy.c ../heat_numerics.c $(pkg-config --cflags --libs melissa)
//
//     heat_legacy NX NY STEPS INITIAL LEFT RIGHT BOTTOM TOP
//
// The launcher appends the five temperatures to the study's executable_command, here
// "heat_legacy NX NY STEPS". The fields equal heat_c's with --nx NX --ny NY --steps STEPS.
#include <stdio.h>
#include <stdlib.h>

#include <mpi.h>

#include <melissa/api.h>

#include "../heat_numerics.h"

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    int world_rank;
    MPI_Comm_rank(MPI_COMM_WORLD, &world_rank);
    if (argc != 9) {
        if (world_rank == 0)
            fprintf(stderr, "usage: %s NX NY STEPS INITIAL LEFT RIGHT BOTTOM TOP\n", argv[0]);
        MPI_Finalize();
        return 2;
    }
    const int nx = atoi(argv[1]), ny = atoi(argv[2]), steps = atoi(argv[3]);
    double temperature[HEAT_N_TEMPERATURES];
    for (int k = 0; k < HEAT_N_TEMPERATURES; ++k)
        temperature[k] = strtod(argv[4 + k], NULL);

    // Melissa's solvers may run coupled with other programs in one MPI job (mpirun A : B), which
    // mpirun numbers in MPI_APPNUM: the solver works on its own program's ranks. A program
    // started without mpirun has no number; it is then the only one.
    int *appnum, has_appnum;
    MPI_Comm_get_attr(MPI_COMM_WORLD, MPI_APPNUM, &appnum, &has_appnum);
    MPI_Comm comm;
    MPI_Comm_split(MPI_COMM_WORLD, has_appnum ? *appnum : 0, world_rank, &comm);

    struct heat_grid grid;
    double *cells = NULL;
    if (heat_grid_init(&grid, nx, ny, 1.0, temperature, comm) != 0 ||
        (cells = malloc((size_t)grid.rows * nx * sizeof *cells)) == NULL) {
        fprintf(stderr, "heat_legacy: out of memory\n");
        MPI_Abort(MPI_COMM_WORLD, 1);
    }

    melissa_init("temperature", grid.rows * nx, comm);
    for (int step = 0; step < steps; ++step) {
        heat_step(&grid);
        heat_cells(&grid, cells);
        melissa_send("temperature", cells);
    }
    melissa_finalize();

    heat_grid_free(&grid);
    free(cells);
    MPI_Comm_free(&comm);
    MPI_Finalize();
    return 0;
}
