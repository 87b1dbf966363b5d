/* SPDX-License-Identifier: BSD-3-Clause */
/* Inria Melissa's no-MPI header under its own name: see melissa/api_no_mpi.h. */
#include "melissa/api_no_mpi.h"
