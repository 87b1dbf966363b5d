/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * Melissa's melissa_init_f takes its size and communicator by reference; a C solver that passes
 * NULL for one must get the error and the end of the program, not a crash (test_legacy.py).
 *
 *     null_argument size|comm
 */
#include <string.h>

#include <melissa/api.h>

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    int size = 4;
    MPI_Fint comm = MPI_Comm_c2f(MPI_COMM_WORLD);
    const int null_size = argc > 1 && strcmp(argv[1], "size") == 0;
    melissa_init_f("temperature", null_size ? NULL : &size, null_size ? &comm : NULL);
    MPI_Finalize();
    return 0;
}
