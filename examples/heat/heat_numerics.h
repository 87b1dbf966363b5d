// SPDX-License-Identifier: BSD-3-Clause
//
// The numerics of the C heat solvers (the scheme and the decomposition are described in heat.c):
// one MPI rank's block of the grid with its boundary values, one time step, and the rank's cells
// packed for melissa_send. heat.c and legacy/heat_legacy.c share them, so that the solver written
// against melissa's API and the one written against Inria Melissa's compute the same fields.
// Compile heat_numerics.c beside the solver.
#ifndef HEAT_NUMERICS_H
#define HEAT_NUMERICS_H

#include <mpi.h>

// The order of the five temperatures on the command line.
enum { HEAT_INITIAL, HEAT_LEFT, HEAT_RIGHT, HEAT_BOTTOM, HEAT_TOP, HEAT_N_TEMPERATURES };

struct heat_grid {
    MPI_Comm comm;    // the ranks that share the grid
    int nx, rows;     // this rank's interior points: rows rows of nx
    int below, above; // the neighbouring ranks, MPI_PROC_NULL at the bottom and top boundaries
    double rx, ry;    // alpha dt / hx^2 and alpha dt / hy^2
    // (rows + 2) x (nx + 2) points, row-major: halo or boundary rows 0 and rows + 1, boundary
    // columns 0 and nx + 1. Both arrays hold the boundary values, so swapping them keeps them.
    double *u, *next;
};

// The first of the ny rows that rank owns among n_ranks: rank r owns [r ny / p, (r+1) ny / p).
int heat_first_row(int rank, int n_ranks, int ny);

// Sets up this rank's block of an nx x ny grid decomposed over comm, the interior at
// temperature[HEAT_INITIAL] and the boundaries at the others. Returns 0, or -1 when out of memory.
int heat_grid_init(struct heat_grid *grid, int nx, int ny, double alpha,
                   const double temperature[HEAT_N_TEMPERATURES], MPI_Comm comm);

// One time step: the halo exchange, then the explicit update of every interior point of grid->u.
// Collective over grid->comm.
void heat_step(struct heat_grid *grid);

// This rank's rows * nx interior values into cells, row after row: the ranks' cells, in rank
// order, make the row-major field.
void heat_cells(const struct heat_grid *grid, double *cells);

void heat_grid_free(struct heat_grid *grid);

#endif // HEAT_NUMERICS_H
