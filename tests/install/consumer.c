/* SPDX-License-Identifier: BSD-3-Clause */
#include <stdio.h>

#include <melissa/version.h>

int main(void) {
    int major, minor, patch;
    if (melissa_version(&major, &minor, &patch) != 0)
        return 1;
    printf("%d.%d.%d\n", major, minor, patch);
    return 0;
}
