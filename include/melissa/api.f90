! SPDX-License-Identifier: BSD-3-Clause
!
! Inria Melissa's Fortran client interface, for solvers written against Melissa: they keep
!     include "melissa/api.f90"          (or include "melissa_api.f90")
! after `implicit none`, and compile with `pkg-config --cflags --libs melissa`. New solvers
! should `use melissa` instead (no null termination, error codes, mpi_f08 communicators).
!
!     call melissa_init(field_name, local_vect_size, comm)   ! comm: an integer handle (mpif.h)
!     call melissa_send(field_name, send_vect)               ! real(8) values
!     call melissa_finalize()
!
! As in Melissa, field names end with a null character (field_name = "heat"//c_null_char), and
! on failure a call prints the error and ends the program with a non-zero status.
interface
  subroutine melissa_init(field_name, local_vect_size, comm) bind(c, name="melissa_legacy_init_f")
    use, intrinsic :: iso_c_binding, only: c_char, c_int
    character(kind=c_char), intent(in) :: field_name(*)
    integer(c_int), intent(in) :: local_vect_size
    integer(c_int), intent(in) :: comm
  end subroutine melissa_init

  subroutine melissa_send(field_name, send_vect) bind(c, name="melissa_legacy_send")
    use, intrinsic :: iso_c_binding, only: c_char, c_double
    character(kind=c_char), intent(in) :: field_name(*)
    real(c_double), intent(in) :: send_vect(*)
  end subroutine melissa_send

  subroutine melissa_finalize() bind(c, name="melissa_legacy_finalize")
  end subroutine melissa_finalize
end interface
