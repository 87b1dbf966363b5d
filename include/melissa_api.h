/* SPDX-License-Identifier: BSD-3-Clause */
/* Inria Melissa's header under the name its documentation gives: see melissa/api.h. */
#include "melissa/api.h"
