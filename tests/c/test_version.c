/* SPDX-License-Identifier: BSD-3-Clause */
/* Checks that the version libmelissa reports is the one the build was configured with. */
#include <stdio.h>
#include <stdlib.h>

/* melissa_version needs no MPI. */
#define MELISSA_NO_MPI
#include "melissa/melissa_api.h"

int main(int argc, char **argv) {
    int major = -1, minor = -1, patch = -1;
    if (argc != 4) {
        fprintf(stderr, "usage: %s MAJOR MINOR PATCH\n", argv[0]);
        return 2;
    }
    if (melissa_version(&major, &minor, &patch) != 0) {
        fprintf(stderr, "melissa_version returned an error\n");
        return 1;
    }
    if (major != atoi(argv[1]) || minor != atoi(argv[2]) || patch != atoi(argv[3])) {
        fprintf(stderr, "melissa_version gave %d.%d.%d, expected %s.%s.%s\n", major, minor, patch,
                argv[1], argv[2], argv[3]);
        return 1;
    }
    /* NULL skips a part. */
    return melissa_version(NULL, NULL, NULL);
}
