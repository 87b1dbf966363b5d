! SPDX-License-Identifier: BSD-3-Clause
!
! Fortran interface to libmelissa: `use melissa`. Every routine calls the C ABI (melissa_api.h)
! through iso_c_binding. Field names are ordinary Fortran strings (trailing blanks are ignored; no
! null termination by hand). Communicators may come from `use mpi` (an integer) or from
! `use mpi_f08` (type(MPI_Comm)).
!
! Each subroutine takes an optional last argument ierr: with it, the error code comes back there
! (MELISSA_OK = 0 on success) and melissa_last_error() says what went wrong; without it, an error
! prints that message and stops the program, as the MPI library does.
module melissa
  use, intrinsic :: iso_c_binding, only: c_char, c_double, c_float, c_int, c_null_char, c_ptr, &
                                         c_size_t, c_f_pointer, c_associated
  use, intrinsic :: iso_fortran_env, only: error_unit
  use mpi_f08, only: MPI_Comm
  implicit none
  private

  public :: melissa_init, melissa_init_no_mpi, melissa_send, melissa_finalize
  public :: melissa_last_error, melissa_get_version

  ! The C ABI's error codes (enum melissa_error).
  integer, parameter, public :: MELISSA_OK = 0, MELISSA_ERR_ENVIRONMENT = 1, &
                                MELISSA_ERR_ARGUMENT = 2, MELISSA_ERR_STATE = 3, &
                                MELISSA_ERR_TIMEOUT = 4, MELISSA_ERR_REJECTED = 5, &
                                MELISSA_ERR_TRANSPORT = 6, MELISSA_ERR_MPI = 7, &
                                MELISSA_ERR_INTERNAL = 8

  !> Declares a field this solver sends (MPI-collective over comm).
  interface melissa_init
    module procedure melissa_init_mpi, melissa_init_mpi_f08
  end interface melissa_init

  !> Sends the next time step of a field: double or single precision values.
  interface melissa_send
    module procedure melissa_send_double, melissa_send_float
  end interface melissa_send

  interface
    integer(c_int) function c_melissa_init_f(name, size, comm) bind(c, name="melissa_init_f")
      import :: c_char, c_int
      character(kind=c_char), intent(in) :: name(*)
      integer(c_int), value :: size, comm
    end function c_melissa_init_f

    integer(c_int) function c_melissa_init_no_mpi(name, size) bind(c, name="melissa_init_no_mpi")
      import :: c_char, c_int
      character(kind=c_char), intent(in) :: name(*)
      integer(c_int), value :: size
    end function c_melissa_init_no_mpi

    integer(c_int) function c_melissa_send(name, values) bind(c, name="melissa_send")
      import :: c_char, c_double, c_int
      character(kind=c_char), intent(in) :: name(*)
      real(c_double), intent(in) :: values(*)
    end function c_melissa_send

    integer(c_int) function c_melissa_send_float(name, values) bind(c, name="melissa_send_float")
      import :: c_char, c_float, c_int
      character(kind=c_char), intent(in) :: name(*)
      real(c_float), intent(in) :: values(*)
    end function c_melissa_send_float

    integer(c_int) function c_melissa_finalize() bind(c, name="melissa_finalize")
      import :: c_int
    end function c_melissa_finalize

    type(c_ptr) function c_melissa_last_error() bind(c, name="melissa_last_error")
      import :: c_ptr
    end function c_melissa_last_error

    integer(c_int) function c_melissa_version(major, minor, patch) bind(c, name="melissa_version")
      import :: c_int
      integer(c_int), intent(out) :: major, minor, patch
    end function c_melissa_version

    integer(c_size_t) function c_strlen(text) bind(c, name="strlen")
      import :: c_ptr, c_size_t
      type(c_ptr), value :: text
    end function c_strlen
  end interface

contains

  !> melissa_init with a `use mpi` (integer) communicator.
  subroutine melissa_init_mpi(field_name, local_vect_size, comm, ierr)
    character(len=*), intent(in) :: field_name
    integer, intent(in) :: local_vect_size, comm
    integer, intent(out), optional :: ierr
    call finish(c_melissa_init_f(c_name(field_name), int(local_vect_size, c_int), &
                                 int(comm, c_int)), ierr)
  end subroutine melissa_init_mpi

  !> melissa_init with a `use mpi_f08` communicator.
  subroutine melissa_init_mpi_f08(field_name, local_vect_size, comm, ierr)
    character(len=*), intent(in) :: field_name
    integer, intent(in) :: local_vect_size
    type(MPI_Comm), intent(in) :: comm
    integer, intent(out), optional :: ierr
    call finish(c_melissa_init_f(c_name(field_name), int(local_vect_size, c_int), &
                                 int(comm%MPI_VAL, c_int)), ierr)
  end subroutine melissa_init_mpi_f08

  !> Declares a field of a solver without MPI (not collective).
  subroutine melissa_init_no_mpi(field_name, vect_size, ierr)
    character(len=*), intent(in) :: field_name
    integer, intent(in) :: vect_size
    integer, intent(out), optional :: ierr
    call finish(c_melissa_init_no_mpi(c_name(field_name), int(vect_size, c_int)), ierr)
  end subroutine melissa_init_no_mpi

  subroutine melissa_send_double(field_name, values, ierr)
    character(len=*), intent(in) :: field_name
    real(c_double), intent(in) :: values(*)
    integer, intent(out), optional :: ierr
    call finish(c_melissa_send(c_name(field_name), values), ierr)
  end subroutine melissa_send_double

  subroutine melissa_send_float(field_name, values, ierr)
    character(len=*), intent(in) :: field_name
    real(c_float), intent(in) :: values(*)
    integer, intent(out), optional :: ierr
    call finish(c_melissa_send_float(c_name(field_name), values), ierr)
  end subroutine melissa_send_float

  !> Tells the server this simulation is complete (MPI-collective); before MPI_Finalize.
  subroutine melissa_finalize(ierr)
    integer, intent(out), optional :: ierr
    call finish(c_melissa_finalize(), ierr)
  end subroutine melissa_finalize

  !> What the last failed call went wrong with; empty if none did.
  function melissa_last_error() result(message)
    character(len=:), allocatable :: message
    character(kind=c_char), pointer :: chars(:)
    type(c_ptr) :: text
    integer :: i, n
    text = c_melissa_last_error()
    if (.not. c_associated(text)) then
      message = ""
      return
    end if
    n = int(c_strlen(text))
    call c_f_pointer(text, chars, [n])
    allocate (character(len=n) :: message)
    do i = 1, n
      message(i:i) = chars(i)
    end do
  end function melissa_last_error

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

  ! The name as C wants it: without trailing blanks, NUL-terminated.
  pure function c_name(name) result(c)
    character(len=*), intent(in) :: name
    character(kind=c_char, len=len_trim(name) + 1) :: c
    c = trim(name)//c_null_char
  end function c_name

  subroutine finish(code, ierr)
    integer(c_int), intent(in) :: code
    integer, intent(out), optional :: ierr
    if (present(ierr)) then
      ierr = int(code)
    else if (code /= MELISSA_OK) then
      write (error_unit, '(a)') "melissa: "//melissa_last_error()
      error stop 1
    end if
  end subroutine finish

end module melissa
