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
// the ranks' slices, in rank order, make the row-major field.
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

#define N_TEMPERATURES 5
enum { INITIAL, LEFT, RIGHT, BOTTOM, TOP };

static const char *const usage_text =
    "usage: heat_c [--nx N] [--ny N] [--steps N] [--alpha A] [--field-name NAME]\n"
    "              [--write-fields DIR] [--no-melissa] INITIAL LEFT RIGHT BOTTOM TOP\n";

struct options {
    int nx, ny, steps;
    double alpha;
    const char *field_name;
    const char *write_fields; // NULL: no files
    int use_melissa;
    double temperature[N_TEMPERATURES];
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
    if (argc - i != N_TEMPERATURES)
        return "expected 5 temperatures: INITIAL LEFT RIGHT BOTTOM TOP";
    for (int k = 0; k < N_TEMPERATURES; ++k)
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

static int first_row(int rank, int n_ranks, int ny) {
    return (int)((long long)rank * ny / n_ranks);
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
    const double *const temperature = opt.temperature;

    const int row0 = first_row(rank, n_ranks, ny);
    const int rows = first_row(rank + 1, n_ranks, ny) - row0;
    const int below = rank > 0 ? rank - 1 : MPI_PROC_NULL;
    const int above = rank < n_ranks - 1 ? rank + 1 : MPI_PROC_NULL;

    // (rows + 2) x (nx + 2) points, row-major: halo or boundary rows 0 and rows + 1, boundary
    // columns 0 and nx + 1. Both arrays hold the boundary values, so swapping them keeps them.
    const int width = nx + 2;
    const size_t points = (size_t)(rows + 2) * width;
    double *u = malloc(points * sizeof *u);
    double *next = malloc(points * sizeof *next);
    double *cells = malloc((size_t)rows * nx * sizeof *cells); // this rank's field, packed
    if (u == NULL || next == NULL || cells == NULL)
        fail("malloc", "out of memory");
    for (int j = 0; j < rows + 2; ++j) {
        for (int i = 0; i < width; ++i) {
            double value = temperature[INITIAL];
            if (j == 0 && below == MPI_PROC_NULL)
                value = temperature[BOTTOM];
            else if (j == rows + 1 && above == MPI_PROC_NULL)
                value = temperature[TOP];
            if (i == 0)
                value = temperature[LEFT];
            else if (i == nx + 1)
                value = temperature[RIGHT];
            u[(size_t)j * width + i] = next[(size_t)j * width + i] = value;
        }
    }

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
            displacements[r] = first_row(r, n_ranks, ny) * nx;
            counts[r] = first_row(r + 1, n_ranks, ny) * nx - displacements[r];
        }
    }

    if (opt.use_melissa)
        check_melissa(melissa_init(opt.field_name, rows * nx, MPI_COMM_WORLD), "melissa_init");

    const double hx = 1.0 / (nx + 1), hy = 1.0 / (ny + 1);
    const double h = hx < hy ? hx : hy;
    const double dt = 0.2 * h * h / opt.alpha;
    const double rx = opt.alpha * dt / (hx * hx), ry = opt.alpha * dt / (hy * hy);

    for (int step = 0; step < opt.steps; ++step) {
        // My first row to the rank below, whose top halo it is; my last row to the rank above.
        MPI_Sendrecv(&u[width + 1], nx, MPI_DOUBLE, below, 0, &u[(size_t)(rows + 1) * width + 1],
                     nx, MPI_DOUBLE, above, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        MPI_Sendrecv(&u[(size_t)rows * width + 1], nx, MPI_DOUBLE, above, 1, &u[1], nx, MPI_DOUBLE,
                     below, 1, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        // The operations in this order in all three languages, for the same rounding.
        for (int j = 1; j <= rows; ++j) {
            for (int i = 1; i <= nx; ++i) {
                const size_t c = (size_t)j * width + i;
                next[c] = u[c] + rx * (u[c - 1] - 2.0 * u[c] + u[c + 1]) +
                          ry * (u[c - width] - 2.0 * u[c] + u[c + width]);
            }
        }
        double *swap = u;
        u = next;
        next = swap;

        for (int j = 0; j < rows; ++j)
            memcpy(&cells[(size_t)j * nx], &u[(size_t)(j + 1) * width + 1], nx * sizeof *cells);
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
    free(u);
    free(next);
    free(cells);
    free(field);
    free(counts);
    free(displacements);
    MPI_Finalize();
    return 0;
}
