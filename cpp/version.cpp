// SPDX-License-Identifier: BSD-3-Clause
#include "melissa/melissa_api.h"

extern "C" int melissa_version(int *major, int *minor, int *patch) {
    if (major)
        *major = MELISSA_VERSION_MAJOR;
    if (minor)
        *minor = MELISSA_VERSION_MINOR;
    if (patch)
        *patch = MELISSA_VERSION_PATCH;
    return 0;
}
