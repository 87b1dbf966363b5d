/* SPDX-License-Identifier: BSD-3-Clause */
#include <stdio.h>

/* melissa_version needs no MPI. */
#define MELISSA_NO_MPI
#include <melissa/melissa_api.h>

int main(void) {
    int major, minor, patch;
    if (melissa_version(&major, &minor, &patch) != 0)
        return 1;
    printf("%d.%d.%d\n", major, minor, patch);
    return 0;
}
