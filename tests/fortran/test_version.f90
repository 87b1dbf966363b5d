! SPDX-License-Identifier: BSD-3-Clause
! Checks that the Fortran module reaches the C ABI: the version matches the configured one.
program test_version
  use melissa, only: melissa_get_version
  implicit none
  integer :: major, minor, patch, ierr, expected(3), i
  character(len=16) :: arg

  do i = 1, 3
    call get_command_argument(i, arg)
    read (arg, *) expected(i)
  end do
  ierr = melissa_get_version(major, minor, patch)
  if (ierr /= 0) then
    print *, "melissa_get_version returned", ierr
    error stop 1
  end if
  if (any([major, minor, patch] /= expected)) then
    print *, "melissa_get_version gave", major, minor, patch, "expected", expected
    error stop 1
  end if
end program test_version
