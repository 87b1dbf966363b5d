! SPDX-License-Identifier: BSD-3-Clause
!
! The 2D heat equation u_t = alpha (u_xx + u_yy) on the unit square, instrumented with melissa:
! the same solver as heat.c (see there for the scheme, the decomposition and the output), with
! the same command line and exit statuses:
!
!     heat_fortran [--nx N] [--ny N] [--steps N] [--alpha A] [--field-name NAME]
!                  [--write-fields DIR] [--no-melissa] INITIAL LEFT RIGHT BOTTOM TOP
!
! Their code, in heat.c's memory layout, is in heat_numerics.f90, which legacy/heat_legacy.f90
! shares; this file holds the command line, the output and the calls to melissa.
program heat
  use, intrinsic :: iso_fortran_env, only: error_unit, real64
  use, intrinsic :: ieee_arithmetic, only: ieee_is_finite
  use mpi_f08
  use melissa
  use heat_numerics
  implicit none

  integer, parameter :: dp = real64
  character(len=*), parameter :: usage_text = &
    "usage: heat_fortran [--nx N] [--ny N] [--steps N] [--alpha A] [--field-name NAME]"// &
    new_line("a")//"                    [--write-fields DIR] [--no-melissa] "// &
    "INITIAL LEFT RIGHT BOTTOM TOP"

  type :: options
    integer :: nx = 40, ny = 40, steps = 20
    real(dp) :: alpha = 1
    character(len=:), allocatable :: field_name
    character(len=:), allocatable :: write_fields  ! empty: no files
    logical :: use_melissa = .true.
    real(dp) :: temperature(5) = 0
  end type options

  type(options) :: opt
  type(MPI_Comm) :: comm
  character(len=:), allocatable :: bad
  type(heat_grid) :: grid
  integer :: rank, n_ranks, nx, ny, rows, r, step, ierr
  integer, allocatable :: counts(:), displacements(:)
  real(dp), allocatable :: cells(:), field(:)

  call MPI_Init()
  comm = MPI_COMM_WORLD
  call MPI_Comm_rank(comm, rank)
  call MPI_Comm_size(comm, n_ranks)

  ! Every rank sees the same command line, so every rank takes the same way out.
  call parse(opt, bad)
  if (len(bad) == 0 .and. opt%ny < n_ranks) bad = "ny must be at least the number of MPI ranks"
  if (len(bad) > 0) then
    if (rank == 0) write (error_unit, '(a)') "heat_fortran: "//bad, usage_text
    call MPI_Finalize()
    stop 2, quiet=.true.
  end if
  nx = opt%nx
  ny = opt%ny

  call heat_grid_init(grid, nx, ny, opt%alpha, opt%temperature, comm)
  rows = grid%rows
  allocate (cells(rows*nx))

  ! Rank 0 gathers the whole field for --write-fields; every rank knows the decomposition.
  if (len(opt%write_fields) > 0 .and. rank == 0) then
    allocate (field(nx*ny), counts(n_ranks), displacements(n_ranks))
    do r = 0, n_ranks - 1
      displacements(r + 1) = heat_first_row(r, n_ranks, ny)*nx
      counts(r + 1) = heat_first_row(r + 1, n_ranks, ny)*nx - displacements(r + 1)
    end do
  else
    allocate (field(0), counts(0), displacements(0))
  end if

  if (opt%use_melissa) then
    call melissa_init(opt%field_name, rows*nx, comm, ierr)
    call check_melissa(ierr, "melissa_init")
  end if

  do step = 0, opt%steps - 1
    call heat_step(grid)
    call heat_cells(grid, cells)
    if (opt%use_melissa) then
      call melissa_send(opt%field_name, cells, ierr)
      call check_melissa(ierr, "melissa_send")
    end if
    if (len(opt%write_fields) > 0) then
      call MPI_Gatherv(cells, rows*nx, MPI_DOUBLE_PRECISION, field, counts, displacements, &
                       MPI_DOUBLE_PRECISION, 0, comm)
      if (rank == 0) call write_field(opt%write_fields, step, field)
    end if
  end do

  if (opt%use_melissa) then
    call melissa_finalize(ierr)
    call check_melissa(ierr, "melissa_finalize")
  end if
  call MPI_Finalize()

contains

  ! A failure on one rank must not leave the others waiting in a collective call.
  subroutine fail(what, why)
    character(len=*), intent(in) :: what, why
    write (error_unit, '(a, i0, 4a)') "heat_fortran rank ", rank, ": ", what, ": ", why
    flush (error_unit)
    call MPI_Abort(MPI_COMM_WORLD, 1)
    error stop 1  ! not reached: MPI_Abort ends every rank
  end subroutine fail

  subroutine check_melissa(code, call_name)
    integer, intent(in) :: code
    character(len=*), intent(in) :: call_name
    if (code /= MELISSA_OK) call fail(call_name, melissa_last_error())
  end subroutine check_melissa

  ! Little-endian whatever the host's byte order, as heat.c and heat.py write (CONVERT= is an
  ! extension, which gfortran, ifx and flang take).
  subroutine write_field(dir, time_step, values)
    character(len=*), intent(in) :: dir
    integer, intent(in) :: time_step
    real(dp), intent(in) :: values(:)
    character(len=len(dir) + 32) :: path
    character(len=256) :: message
    integer :: unit, status
    write (path, '(a, "/step-", i0.4, ".bin")') dir, time_step
    open (newunit=unit, file=trim(path), access="stream", form="unformatted", &
          status="replace", action="write", convert="little_endian", iostat=status, &
          iomsg=message)
    if (status == 0) write (unit, iostat=status, iomsg=message) values
    if (status == 0) close (unit, iostat=status, iomsg=message)
    if (status /= 0) call fail(trim(path), trim(message))
  end subroutine write_field

  ! The text of command-line argument i, however long.
  function argument(i) result(text)
    integer, intent(in) :: i
    character(len=:), allocatable :: text
    integer :: n
    call get_command_argument(i, length=n)
    allocate (character(len=n) :: text)
    if (n > 0) call get_command_argument(i, text)
  end function argument

  ! Digits only: a list-directed read alone would take "40 x" or "40," as 40.
  logical function parse_int(text, value)
    character(len=*), intent(in) :: text
    integer, intent(out) :: value
    integer :: status
    parse_int = .false.
    value = 0
    if (len(text) == 0 .or. verify(text, "+0123456789") /= 0) return
    read (text, *, iostat=status) value
    parse_int = status == 0 .and. value > 0
  end function parse_int

  logical function parse_real(text, value)
    character(len=*), intent(in) :: text
    real(dp), intent(out) :: value
    integer :: status
    parse_real = .false.
    value = 0
    if (len(text) == 0 .or. verify(text, "+-.0123456789eE") /= 0) return
    read (text, *, iostat=status) value
    parse_real = status == 0 .and. ieee_is_finite(value)
  end function parse_real

  ! On return, bad is empty or says what is wrong with the command line.
  subroutine parse(opt, bad)
    type(options), intent(out) :: opt
    character(len=:), allocatable, intent(out) :: bad
    character(len=:), allocatable :: name, value
    integer :: i, k, n_args
    logical :: ok

    opt%field_name = "temperature"
    opt%write_fields = ""
    bad = ""
    n_args = command_argument_count()
    i = 1
    ! Options come first: the launcher appends the parameters, which may be negative numbers.
    do while (i <= n_args)
      name = argument(i)
      if (len(name) < 2) exit
      if (name(1:2) /= "--") exit
      i = i + 1
      if (name == "--") exit
      if (name == "--no-melissa") then
        opt%use_melissa = .false.
        cycle
      end if
      if (i > n_args) then
        bad = "an option lacks its value"
        return
      end if
      value = argument(i)
      i = i + 1
      select case (name)
      case ("--nx")
        ok = parse_int(value, opt%nx)
        if (.not. ok) bad = "--nx needs a positive integer"
      case ("--ny")
        ok = parse_int(value, opt%ny)
        if (.not. ok) bad = "--ny needs a positive integer"
      case ("--steps")
        ok = parse_int(value, opt%steps)
        if (.not. ok) bad = "--steps needs a positive integer"
      case ("--alpha")
        ok = parse_real(value, opt%alpha)
        if (ok) ok = opt%alpha > 0
        if (.not. ok) bad = "--alpha needs a positive number"
      case ("--field-name")
        opt%field_name = value
      case ("--write-fields")
        opt%write_fields = value
        if (len(value) == 0) bad = "--write-fields needs a directory"
      case default
        bad = "unknown option"
      end select
      if (len(bad) > 0) return
    end do
    if (n_args - i + 1 /= 5) then
      bad = "expected 5 temperatures: INITIAL LEFT RIGHT BOTTOM TOP"
      return
    end if
    do k = 1, 5
      if (.not. parse_real(argument(i + k - 1), opt%temperature(k))) then
        bad = "each temperature needs a finite number"
        return
      end if
    end do
    ! Gatherv counts and melissa's sizes are default integers.
    if (int(opt%nx, kind=8)*opt%ny > huge(0)) bad = "nx * ny must be below 2^31"
  end subroutine parse

end program heat
