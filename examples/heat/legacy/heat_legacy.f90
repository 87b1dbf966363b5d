! SPDX-License-Identifier: BSD-3-Clause
!
! heat.f90's solver written the way a solver instrumented for Inria's Melissa is: mpif.h and
! Melissa's include file, whose calls return nothing and end the program on failure, field names
! ending with a null character, parameters read from the command line without checks, and the
! work done on the ranks of this program alone. A solver written so builds against melissa
! unchanged, its include path and library from pkg-config:
!
!     mpif90 ../heat_numerics.f90 heat_legacy.f90 $(pkg-config --cflags --libs melissa)
!
!     heat_legacy NX NY STEPS INITIAL LEFT RIGHT BOTTOM TOP
!
! The launcher appends the five temperatures to the study's executable_command, here
! "heat_legacy NX NY STEPS". The fields equal heat_fortran's (and heat_c's) with --nx NX --ny NY
! --steps STEPS.
program heat_legacy
  use, intrinsic :: iso_c_binding, only: c_null_char
  use, intrinsic :: iso_fortran_env, only: error_unit
  use heat_numerics, only: heat_grid, heat_grid_init, heat_step, heat_cells
  implicit none
  include "mpif.h"
  include "melissa_api.f90"

  character(len=12) :: field_name = "temperature"//c_null_char
  character(len=64) :: argument
  integer :: ierr, world_rank, comm, nx, ny, steps, step, k
  integer(kind=MPI_ADDRESS_KIND) :: appnum
  logical :: has_appnum
  real(8) :: temperature(5)
  real(8), allocatable :: cells(:)
  type(heat_grid) :: grid

  call MPI_INIT(ierr)
  call MPI_COMM_RANK(MPI_COMM_WORLD, world_rank, ierr)
  if (command_argument_count() /= 8) then
    if (world_rank == 0) write (error_unit, '(a)') &
      "usage: heat_legacy NX NY STEPS INITIAL LEFT RIGHT BOTTOM TOP"
    call MPI_FINALIZE(ierr)
    stop 2, quiet=.true.
  end if
  call get_command_argument(1, argument)
  read (argument, *) nx
  call get_command_argument(2, argument)
  read (argument, *) ny
  call get_command_argument(3, argument)
  read (argument, *) steps
  do k = 1, 5
    call get_command_argument(3 + k, argument)
    read (argument, *) temperature(k)
  end do

  ! Melissa's solvers may run coupled with other programs in one MPI job (mpirun A : B), which
  ! mpirun numbers in MPI_APPNUM: the solver works on its own program's ranks. A program started
  ! without mpirun has no number; it is then the only one.
  call MPI_COMM_GET_ATTR(MPI_COMM_WORLD, MPI_APPNUM, appnum, has_appnum, ierr)
  if (.not. has_appnum) appnum = 0
  call MPI_COMM_SPLIT(MPI_COMM_WORLD, int(appnum), world_rank, comm, ierr)

  call heat_grid_init(grid, nx, ny, 1.0d0, temperature, comm)
  allocate (cells(grid%rows*nx))

  call melissa_init(field_name, grid%rows*nx, comm)
  do step = 1, steps
    call heat_step(grid)
    call heat_cells(grid, cells)
    call melissa_send(field_name, cells)
  end do
  call melissa_finalize()

  call MPI_COMM_FREE(comm, ierr)
  call MPI_FINALIZE(ierr)
end program heat_legacy
