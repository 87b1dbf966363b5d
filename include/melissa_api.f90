! SPDX-License-Identifier: BSD-3-Clause
! Inria Melissa's Fortran include file under the name its documentation gives: see melissa/api.f90.
include "melissa/api.f90"
