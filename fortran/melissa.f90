! SPDX-License-Identifier: BSD-3-Clause
!
! Fortran interface to libmelissa: every routine calls the C ABI through iso_c_binding and returns
! its error code (0 = success).
module melissa
  use, intrinsic :: iso_c_binding, only: c_int
  implicit none
  private

  public :: melissa_get_version

  interface
    integer(c_int) function c_melissa_version(major, minor, patch) bind(c, name="melissa_version")
      import :: c_int
      integer(c_int), intent(out) :: major, minor, patch
    end function c_melissa_version
  end interface

contains

  !> Version of the libmelissa loaded at run time. Not MPI-collective.
  function melissa_get_version(major, minor, patch) result(ierr)
    integer, intent(out) :: major, minor, patch
    integer :: ierr
    integer(c_int) :: c_major, c_minor, c_patch
    ierr = int(c_melissa_version(c_major, c_minor, c_patch))
    major = int(c_major)
    minor = int(c_minor)
    patch = int(c_patch)
  end function melissa_get_version

end module melissa
