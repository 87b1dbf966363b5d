/* SPDX-License-Identifier: BSD-3-Clause */
/* The library's version, for solvers that check what they link against at run time. */
#ifndef MELISSA_VERSION_H
#define MELISSA_VERSION_H

#include "melissa/export.h"

#ifdef __cplusplus
extern "C" {
#endif

/**
 * Writes the version of the libmelissa loaded at run time. Not MPI-collective.
 *
 * major, minor, patch: where to write each part; any of them may be NULL to skip it.
 * Returns 0 (it cannot fail; the code keeps the C ABI's convention).
 */
MELISSA_EXPORT int
melissa_version(int *major, int *minor, int *patch);

#ifdef __cplusplus
}
#endif

#endif /* MELISSA_VERSION_H */
