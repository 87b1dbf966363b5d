// SPDX-License-Identifier: BSD-3-Clause
//
// The 2D heat equation u_t = alpha (u_xx + u_yy) on the unit square, instrumented with melissa:
// every time step of the temperature goes to the study's server. heat.f90 and heat.py are the
// same solver in Fortran and Python; the three give the same values to rounding.
//
//     heat_c [--nx N] [--ny N] [--steps N] [--alpha A] [--field-name NAME]
//            [--write-fields DIR] [--no-melissa] INITIAL LEFT RIGHT BOTTOM TOP
//
// The grid has nx x ny interior points, spacing hx = 1/(nx+1) and hy = 1/(ny+1); the points
// around them hold the Dirichlet boundary temperatures (left x=0, right x=1, bottom y=0, top
// y=1), the interior starts at INITIAL. Explicit Euler in time with the 5-point Laplacian and
// dt = 0.2 min(hx, hy)^2 / alpha, below the stability limit min(h)^2 / (4 alpha).
//
// MPI ranks own blocks of consecutive rows (rank r: rows [r ny / p, (r+1) ny / p)), with one
// halo row above and below exchanged every step. Global cell (row j, column i) is j * nx + i, so
// the ranks' slices, in rank order, make the row-major field. The code of the scheme and the
// decomposition is in heat_numerics.c, which legacy/heat_legacy.c shares; this file holds the
// command line, the output and the calls to melissa.
//
// After each of the `steps` updates (not the initial condition) every rank sends its cells with
// melissa_send; the server numbers these time steps from 0. --write-fields DIR also writes each
// time step's whole field to DIR/step-TTTT.bin (T the same time step number, raw little-endian
// float64, gathered on rank 0; DIR must exist), and --no-melissa leaves melissa out, so that the
// solver runs without a study for checking. Exit status: 0; 1 when melissa or a file fails; 2
// for a bad command line.
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <melissa/melissa_api.h>

#include "heat_numerics.h"

static const char *const usage_text =
    "usage: heat_c [--nx N] [--ny N] [--steps N] [--alpha A] [--field-name NAME]\n"
    "              [--write-fields DIR] [--no-melissa] INITIAL LEFT RIGHT BOTTOM TOP\n";

struct options {
    int nx, ny, steps;
    double alpha;
    const char *field_name;
    const char *write_fields; // NULL: no files
    int use_melissa;
    double temperature[HEAT_N_TEMPERATURES];
};

static int parse_int(const char *text, int *value) {
    char *end;
    errno = 0;
    const long parsed = strtol(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0' || parsed <= 0 || parsed > INT_MAX)
        return 0;
    *value = (int)parsed;
    return 1;
}

static int parse_double(const char *text, double *value) {
    char *end;
    errno = 0;
    *value = strtod(text, &end);
    return errno == 0 && end != text && *end == '\0' && isfinite(*value);
}

// Returns NULL on success, else what is wrong with the command line.
static const char *parse(int argc, char **argv, struct options *opt) {
    *opt = (struct options){.nx = 40,
                            .ny = 40,
                            .steps = 20,
                            .alpha = 1.0,
                            .field_name = "temperature",
                            .write_fields = NULL,
                            .use_melissa = 1};
    int i = 1;
    // Options come first: the launcher appends the parameters, which may be negative numbers.
    for (; i < argc && strncmp(argv[i], "--", 2) == 0; ++i) {
        const char *name = argv[i];
        if (strcmp(name, "--") == 0) {
            ++i;
            break;
        }
        if (strcmp(name, "--no-melissa") == 0) {
            opt->use_melissa = 0;
            continue;
        }
        if (i + 1 == argc)
            return "an option lacks its value";
        const char *value = argv[++i];
        if (strcmp(name, "--nx") == 0) {
            if (!parse_int(value, &opt->nx))
                return "--nx needs a positive integer";
        } else if (strcmp(name, "--ny") == 0) {
            if (!parse_int(value, &opt->ny))
                return "--ny needs a positive integer";
        } else if (strcmp(name, "--steps") == 0) {
            if (!parse_int(value, &opt->steps))
                return "--steps needs a positive integer";
        } else if (strcmp(name, "--alpha") == 0) {
            if (!parse_double(value, &opt->alpha) || opt->alpha <= 0)
                return "--alpha needs a positive number";
        } else if (strcmp(name, "--field-name") == 0) {
            opt->field_name = value;
        } else if (strcmp(name, "--write-fields") == 0) {
            if (*value == '\0')
                return "--write-fields needs a directory";
            opt->write_fields = value;
        } else {
            return "unknown option";
        }
    }
    if (argc - i != HEAT_N_TEMPERATURES)
        return "expected 5 temperatures: INITIAL LEFT RIGHT BOTTOM TOP";
    for (int k = 0; k < HEAT_N_TEMPERATURES; ++k)
        if (!parse_double(argv[i + k], &opt->temperature[k]))
            return "each temperature needs a finite number";
    // Gatherv counts and melissa's sizes are ints.
    if ((long long)opt->nx * opt->ny > INT_MAX)
        return "nx * ny must be below 2^31";
    return NULL;
}

// A failure on one rank must not leave the others waiting in a collective call.
_Noreturn static void fail(const char *what, const char *why) {
    int rank;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    fprintf(stderr, "heat_c rank %d: %s: %s\n", rank, what, why);
    fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, 1);
    exit(1); // not reached: MPI_Abort ends every rank
}

static void check_melissa(int code, const char *call) {
    if (code != MELISSA_OK)
        fail(call, melissa_last_error());
}

// Writes n doubles little-endian whatever the host's byte order, so that the files compare
// byte for byte with those of heat.f90 and heat.py.
static void write_field(const char *dir, int step, const double *field, size_t n) {
    char path[4096];
    snprintf(path, sizeof path, "%s/step-%04d.bin", dir, step);
    FILE *file = fopen(path, "wb");
    if (file == NULL)
        fail(path, strerror(errno));
    for (size_t k = 0; k < n; ++k) {
        uint64_t bits;
        unsigned char bytes[8];
        memcpy(&bits, &field[k], sizeof bits);
        for (int b = 0; b < 8; ++b)
            bytes[b] = (unsigned char)(bits >> (8 * b));
        if (fwrite(bytes, 1, sizeof bytes, file) != sizeof bytes)
            fail(path, strerror(errno));
    }
    if (fclose(file) != 0)
        fail(path, strerror(errno));
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    int rank, n_ranks;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &n_ranks);

    // Every rank sees the same command line, so every rank takes the same way out.
    struct options opt;
    const char *bad = parse(argc, argv, &opt);
    if (bad == NULL && opt.ny < n_ranks)
        bad = "ny must be at least the number of MPI ranks";
    if (bad != NULL) {
        if (rank == 0)
            fprintf(stderr, "heat_c: %s\n%s", bad, usage_text);
        MPI_Finalize();
        return 2;
    }
    const int nx = opt.nx, ny = opt.ny;
    struct heat_grid grid;
    if (heat_grid_init(&grid, nx, ny, opt.alpha, opt.temperature, MPI_COMM_WORLD) != 0)
        fail("malloc", "out of memory");
    const int rows = grid.rows;
    double *cells = malloc((size_t)rows * nx * sizeof *cells); // this rank's field, packed
    if (cells == NULL)
        fail("malloc", "out of memory");

    // Rank 0 gathers the whole field for --write-fields; every rank knows the decomposition.
    double *field = NULL;
    int *counts = NULL, *displacements = NULL;
    if (opt.write_fields != NULL && rank == 0) {
        field = malloc((size_t)nx * ny * sizeof *field);
        counts = malloc(n_ranks * sizeof *counts);
        displacements = malloc(n_ranks * sizeof *displacements);
        if (field == NULL || counts == NULL || displacements == NULL)
            fail("malloc", "out of memory");
        for (int r = 0; r < n_ranks; ++r) {
            displacements[r] = heat_first_row(r, n_ranks, ny) * nx;
            counts[r] = heat_first_row(r + 1, n_ranks, ny) * nx - displacements[r];
        }
    }

    if (opt.use_melissa)
        check_melissa(melissa_init(opt.field_name, rows * nx, MPI_COMM_WORLD), "melissa_init");

    for (int step = 0; step < opt.steps; ++step) {
        heat_step(&grid);
        heat_cells(&grid, cells);
        if (opt.use_melissa)
            check_melissa(melissa_send(opt.field_name, cells), "melissa_send");
        if (opt.write_fields != NULL) {
            MPI_Gatherv(cells, rows * nx, MPI_DOUBLE, field, counts, displacements, MPI_DOUBLE, 0,
                        MPI_COMM_WORLD);
            if (rank == 0)
                write_field(opt.write_fields, step, field, (size_t)nx * ny);
        }
    }

    if (opt.use_melissa)
        check_melissa(melissa_finalize(), "melissa_finalize");
    heat_grid_free(&grid);
    free(cells);
    free(field);
    free(counts);
    free(displacements);
    MPI_Finalize();
    return 0;
}
