! SPDX-License-Identifier: BSD-3-Clause
program consumer
  use melissa, only: melissa_get_version
  implicit none
  integer :: major, minor, patch
  if (melissa_get_version(major, minor, patch) /= 0) error stop 1
  print '(i0,".",i0,".",i0)', major, minor, patch
end program consumer
