! SPDX-License-Identifier: BSD-3-Clause
!
! A test solver in Fortran, the same as solver.c (see there for the values and exit statuses):
!
!     solver FIELDS STEPS CELLS [--float]
!
! Compiled twice: with MELISSA_TEST_F08 defined it takes its communicator from `use mpi_f08`
! (type(MPI_Comm)), without it from `use mpi` (an integer), so that both of melissa_init's
! specific procedures are exercised by a real solver.
program solver
#ifdef MELISSA_TEST_F08
  use mpi_f08
#else
  use mpi
#endif
  use melissa
  implicit none

  integer, parameter :: max_fields = 8, max_ranks = 64
  character(len=256) :: arg, fields_text
  character(len=64) :: fields(max_fields)
  integer :: n_fields, steps, rank, n_ranks, local, offset, ierr, status, f, t, i, n_args
  integer :: cells(max_ranks)
  logical :: as_float
  real(8) :: simulation
  real(8), allocatable :: values(:)
  real(4), allocatable :: floats(:)
#ifdef MELISSA_TEST_F08
  type(MPI_Comm) :: comm
#else
  integer :: comm
#endif

  n_args = command_argument_count()
  if (n_args < 3) call usage("missing arguments")
  call get_command_argument(1, fields_text)
  call split_fields(fields_text, fields, n_fields)
  call get_command_argument(2, arg)
  read (arg, *, iostat=status) steps
  if (status /= 0) call usage("STEPS is not a number")
  as_float = .false.
  do i = 4, n_args
    call get_command_argument(i, arg)
    if (arg == "--float") then
      as_float = .true.
    else
      call usage("unknown option "//trim(arg))
    end if
  end do

  call MPI_Init(ierr)
  comm = MPI_COMM_WORLD
  call MPI_Comm_rank(comm, rank, ierr)
  call MPI_Comm_size(comm, n_ranks, ierr)
  if (n_ranks > max_ranks) call usage("too many ranks")
  ! A list-directed read takes comma-separated integers: one count per rank.
  call get_command_argument(3, arg)
  read (arg, *, iostat=status) cells(1:n_ranks)
  if (status /= 0) call usage("CELLS must list one count per rank")
  local = cells(rank + 1)
  offset = sum(cells(1:rank))
  call get_environment_variable("MELISSA_SIMULATION_ID", arg, status=status)
  simulation = 0
  if (status == 0) read (arg, *) simulation

  do f = 1, n_fields
    call melissa_init(trim(fields(f)), local, comm, ierr)
    call check(ierr, "melissa_init", fields(f))
  end do

  allocate (values(max(local, 1)), floats(max(local, 1)))
  do t = 0, steps - 1
    do f = 1, n_fields
      do i = 1, local
        values(i) = simulation*1d6 + (f - 1)*1d5 + t*1d3 + (offset + i - 1)
      end do
      if (as_float) then
        floats = real(values, 4)
        call melissa_send(trim(fields(f)), floats, ierr)
      else
        call melissa_send(trim(fields(f)), values, ierr)
      end if
      call check(ierr, "melissa_send", fields(f))
    end do
  end do
  call melissa_finalize(ierr)
  call check(ierr, "melissa_finalize", "")
  call MPI_Finalize(ierr)

contains

  ! A failed melissa call ends the process at once (see solver.c); the status tells which error.
  subroutine check(code, call_name, field)
    integer, intent(in) :: code
    character(len=*), intent(in) :: call_name, field
    if (code == MELISSA_OK) return
    write (0, '(a,i0,5a,i0,2a)') "solver rank ", rank, ": ", call_name, '("', trim(field), &
      '") failed with code ', code, ": ", melissa_last_error()
    flush (0)
    error stop 10 + code
  end subroutine check

  subroutine usage(why)
    character(len=*), intent(in) :: why
    write (0, '(2a)') "solver: ", why
    write (0, '(a)') "usage: solver FIELDS STEPS CELLS [--float]"
    error stop 2
  end subroutine usage

  subroutine split_fields(text, names, n)
    character(len=*), intent(in) :: text
    character(len=*), intent(out) :: names(:)
    integer, intent(out) :: n
    integer :: start, comma
    n = 0
    start = 1
    do
      comma = index(text(start:), ",")
      if (n == size(names)) call usage("too many fields")
      n = n + 1
      if (comma == 0) then
        names(n) = text(start:)
        return
      end if
      names(n) = text(start:start + comma - 2)
      start = start + comma
    end do
  end subroutine split_fields

end program solver
