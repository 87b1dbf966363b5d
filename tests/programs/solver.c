// SPDX-License-Identifier: BSD-3-Clause
//
// A test solver in C: streams deterministic values to a melissa server.
//
//     solver FIELDS STEPS CELLS [--float] [--no-mpi] [--sleep-ms N]
//
// FIELDS: comma-separated field names. STEPS: time steps to send. CELLS: comma-separated cells
// per rank, one entry per MPI rank (so that slices are uneven, 0 allowed). The value of global
// cell c of field f at time step t of simulation s (MELISSA_SIMULATION_ID) is
// s*1e6 + f*1e5 + t*1e3 + c: an integer below 2^24 for s < 16, t < 100, c < 1000, hence exact
// in float32 too, so that the server can check every value for equality.
//
// Exit status: 0, 2 for a bad command line, 10 + the melissa error code when a melissa call
// fails (after printing melissa_last_error()), so that a test can tell the failures apart.
// Built with MELISSA_NO_MPI, it has no MPI at all and --no-mpi is implied.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <melissa/melissa_api.h>

#define MAX_FIELDS 8
#define MAX_RANKS 64

static int rank = 0;

static void usage(const char *why) {
    fprintf(stderr,
            "solver: %s\nusage: solver FIELDS STEPS CELLS [--float] [--no-mpi] "
            "[--sleep-ms N]\n",
            why);
    exit(2);
}

// A failed melissa call ends the process at once, without MPI_Finalize: mpirun then stops the
// other ranks instead of leaving them waiting in a collective call.
static void check(int code, const char *call, const char *field) {
    if (code == MELISSA_OK)
        return;
    fprintf(stderr, "solver rank %d: %s(\"%s\") failed with code %d: %s\n", rank, call, field, code,
            melissa_last_error());
    fflush(stderr);
    exit(10 + code);
}

static int split(char *text, const char *separator, char **items, int max_items) {
    int n = 0;
    for (char *item = strtok(text, separator); item != NULL; item = strtok(NULL, separator)) {
        if (n == max_items)
            usage("too many comma-separated items");
        items[n++] = item;
    }
    return n;
}

static void sleep_ms(long ms) {
    struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&t, NULL);
}

int main(int argc, char **argv) {
    if (argc < 4)
        usage("missing arguments");
    char *fields[MAX_FIELDS], *cells_text[MAX_RANKS];
    const int n_fields = split(argv[1], ",", fields, MAX_FIELDS);
    const int steps = atoi(argv[2]);
    const int n_cells = split(argv[3], ",", cells_text, MAX_RANKS);
    int as_float = 0, no_mpi = 0;
    long sleep = 0;
#ifdef MELISSA_NO_MPI
    no_mpi = 1;
#endif
    for (int i = 4; i < argc; ++i) {
        if (strcmp(argv[i], "--float") == 0)
            as_float = 1;
        else if (strcmp(argv[i], "--no-mpi") == 0)
            no_mpi = 1;
        else if (strcmp(argv[i], "--sleep-ms") == 0 && i + 1 < argc)
            sleep = atol(argv[++i]);
        else
            usage("unknown option");
    }

    int size = 1;
#ifndef MELISSA_NO_MPI
    if (!no_mpi) {
        MPI_Init(&argc, &argv);
        MPI_Comm_rank(MPI_COMM_WORLD, &rank);
        MPI_Comm_size(MPI_COMM_WORLD, &size);
    }
#endif
    if (n_cells != size)
        usage("CELLS must list one count per rank");
    long offset = 0;
    for (int r = 0; r < rank; ++r)
        offset += atol(cells_text[r]);
    const int local = atoi(cells_text[rank]);
    const char *id = getenv("MELISSA_SIMULATION_ID");
    const double simulation = id != NULL ? atof(id) : 0;

    for (int f = 0; f < n_fields; ++f) {
#ifndef MELISSA_NO_MPI
        if (!no_mpi) {
            check(melissa_init(fields[f], local, MPI_COMM_WORLD), "melissa_init", fields[f]);
            continue;
        }
#endif
        check(melissa_init_no_mpi(fields[f], local), "melissa_init_no_mpi", fields[f]);
    }

    // One extra element: malloc(0) may return NULL, which melissa_send refuses only when the
    // rank holds cells.
    double *values = malloc(sizeof(double) * (local + 1));
    float *floats = malloc(sizeof(float) * (local + 1));
    for (int t = 0; t < steps; ++t) {
        for (int f = 0; f < n_fields; ++f) {
            for (int i = 0; i < local; ++i) {
                values[i] = simulation * 1e6 + f * 1e5 + t * 1e3 + (double)(offset + i);
                floats[i] = (float)values[i];
            }
            if (as_float)
                check(melissa_send_float(fields[f], floats), "melissa_send_float", fields[f]);
            else
                check(melissa_send(fields[f], values), "melissa_send", fields[f]);
        }
        if (sleep > 0)
            sleep_ms(sleep);
    }
    check(melissa_finalize(), "melissa_finalize", "");
    free(values);
    free(floats);
#ifndef MELISSA_NO_MPI
    if (!no_mpi)
        MPI_Finalize();
#endif
    return 0;
}
