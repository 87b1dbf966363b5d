// SPDX-License-Identifier: BSD-3-Clause
//
// See heat_numerics.h. heat.f90's module heat_numerics and heat.py's Grid are the same code in
// Fortran and Python.
#include "heat_numerics.h"

#include <stdlib.h>
#include <string.h>

int heat_first_row(int rank, int n_ranks, int ny) { return (int)((long long)rank * ny / n_ranks); }

int heat_grid_init(struct heat_grid *grid, int nx, int ny, double alpha,
                   const double temperature[HEAT_N_TEMPERATURES], MPI_Comm comm) {
    int rank, n_ranks;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &n_ranks);
    const int rows = heat_first_row(rank + 1, n_ranks, ny) - heat_first_row(rank, n_ranks, ny);
    const int below = rank > 0 ? rank - 1 : MPI_PROC_NULL;
    const int above = rank < n_ranks - 1 ? rank + 1 : MPI_PROC_NULL;

    const double hx = 1.0 / (nx + 1), hy = 1.0 / (ny + 1);
    const double h = hx < hy ? hx : hy;
    const double dt = 0.2 * h * h / alpha;
    *grid = (struct heat_grid){.comm = comm,
                               .nx = nx,
                               .rows = rows,
                               .below = below,
                               .above = above,
                               .rx = alpha * dt / (hx * hx),
                               .ry = alpha * dt / (hy * hy)};

    const int width = nx + 2;
    const size_t points = (size_t)(rows + 2) * width;
    grid->u = malloc(points * sizeof *grid->u);
    grid->next = malloc(points * sizeof *grid->next);
    if (grid->u == NULL || grid->next == NULL) {
        heat_grid_free(grid);
        return -1;
    }
    for (int j = 0; j < rows + 2; ++j) {
        for (int i = 0; i < width; ++i) {
            double value = temperature[HEAT_INITIAL];
            if (j == 0 && below == MPI_PROC_NULL)
                value = temperature[HEAT_BOTTOM];
            else if (j == rows + 1 && above == MPI_PROC_NULL)
                value = temperature[HEAT_TOP];
            if (i == 0)
                value = temperature[HEAT_LEFT];
            else if (i == nx + 1)
                value = temperature[HEAT_RIGHT];
            grid->u[(size_t)j * width + i] = grid->next[(size_t)j * width + i] = value;
        }
    }
    return 0;
}

void heat_step(struct heat_grid *grid) {
    const int nx = grid->nx, rows = grid->rows, width = nx + 2;
    const double rx = grid->rx, ry = grid->ry;
    double *u = grid->u, *next = grid->next;
    // My first row to the rank below, whose top halo it is; my last row to the rank above.
    MPI_Sendrecv(&u[width + 1], nx, MPI_DOUBLE, grid->below, 0, &u[(size_t)(rows + 1) * width + 1],
                 nx, MPI_DOUBLE, grid->above, 0, grid->comm, MPI_STATUS_IGNORE);
    MPI_Sendrecv(&u[(size_t)rows * width + 1], nx, MPI_DOUBLE, grid->above, 1, &u[1], nx,
                 MPI_DOUBLE, grid->below, 1, grid->comm, MPI_STATUS_IGNORE);
    // The operations in this order in all three languages, for the same rounding.
    for (int j = 1; j <= rows; ++j) {
        for (int i = 1; i <= nx; ++i) {
            const size_t c = (size_t)j * width + i;
            next[c] = u[c] + rx * (u[c - 1] - 2.0 * u[c] + u[c + 1]) +
                      ry * (u[c - width] - 2.0 * u[c] + u[c + width]);
        }
    }
    grid->u = next;
    grid->next = u;
}

void heat_cells(const struct heat_grid *grid, double *cells) {
    const int nx = grid->nx, width = nx + 2;
    for (int j = 0; j < grid->rows; ++j)
        memcpy(&cells[(size_t)j * nx], &grid->u[(size_t)(j + 1) * width + 1], nx * sizeof *cells);
}

void heat_grid_free(struct heat_grid *grid) {
    free(grid->u);
    free(grid->next);
    grid->u = grid->next = NULL;
}
