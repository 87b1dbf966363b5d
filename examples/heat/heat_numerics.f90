! SPDX-License-Identifier: BSD-3-Clause
!
! The numerics of the Fortran heat solvers (heat.c describes the scheme and the decomposition):
! one MPI rank's block of the grid with its boundary values, one time step, and the rank's cells
! packed for melissa_send. heat.f90 and legacy/heat_legacy.f90 share them, so that the solver
! written against melissa's API and the one written against Inria Melissa's compute the same
! fields; heat_numerics.c is the same code in C. Compile this file before the solver.
!
! grid%u(i, j) is column i, row j: i varies fastest, so the memory layout is heat.c's u[j][i].
! Rows 0 and rows + 1 are halo or boundary rows, columns 0 and nx + 1 boundary columns.
module heat_numerics
  use, intrinsic :: iso_fortran_env, only: real64
  use mpi_f08
  implicit none
  ! Only this module's names: a solver that includes mpif.h must not also see mpi_f08's.
  private
  public :: heat_grid, heat_first_row, heat_grid_init, heat_step, heat_cells

  integer, parameter :: dp = real64
  ! The order of the five temperatures on the command line.
  integer, parameter, public :: HEAT_INITIAL = 1, HEAT_LEFT = 2, HEAT_RIGHT = 3, &
                                HEAT_BOTTOM = 4, HEAT_TOP = 5

  type :: heat_grid
    type(MPI_Comm) :: comm  ! the ranks that share the grid
    integer :: nx = 0, rows = 0  ! this rank's interior points: rows rows of nx
    ! The neighbouring ranks, MPI_PROC_NULL at the bottom and top boundaries.
    integer :: below = 0, above = 0
    real(dp) :: rx = 0, ry = 0  ! alpha dt / hx^2 and alpha dt / hy^2
    ! Both arrays hold the boundary values, so swapping them keeps them.
    real(dp), allocatable :: u(:, :), next(:, :)
  end type heat_grid

  ! The communicator as mpi_f08 has it, or as an integer handle (mpif.h, use mpi).
  interface heat_grid_init
    module procedure grid_init, grid_init_handle
  end interface heat_grid_init

contains

  ! The first of the ny rows that rank owns among n_ranks: rank r owns [r ny / p, (r+1) ny / p).
  integer function heat_first_row(rank, n_ranks, ny)
    integer, intent(in) :: rank, n_ranks, ny
    heat_first_row = int(int(rank, kind=8)*ny/n_ranks)
  end function heat_first_row

  ! This rank's block of an nx x ny grid decomposed over comm, the interior at
  ! temperature(HEAT_INITIAL) and the boundaries at the others.
  subroutine grid_init(grid, nx, ny, alpha, temperature, comm)
    type(heat_grid), intent(out) :: grid
    integer, intent(in) :: nx, ny
    real(dp), intent(in) :: alpha, temperature(5)
    type(MPI_Comm), intent(in) :: comm
    integer :: rank, n_ranks, rows
    real(dp) :: hx, hy, h, dt

    call MPI_Comm_rank(comm, rank)
    call MPI_Comm_size(comm, n_ranks)
    rows = heat_first_row(rank + 1, n_ranks, ny) - heat_first_row(rank, n_ranks, ny)
    grid%comm = comm
    grid%nx = nx
    grid%rows = rows
    grid%below = merge(rank - 1, MPI_PROC_NULL, rank > 0)
    grid%above = merge(rank + 1, MPI_PROC_NULL, rank < n_ranks - 1)

    hx = 1.0_dp/(nx + 1)
    hy = 1.0_dp/(ny + 1)
    h = min(hx, hy)
    dt = 0.2_dp*h*h/alpha
    grid%rx = alpha*dt/(hx*hx)
    grid%ry = alpha*dt/(hy*hy)

    allocate (grid%u(0:nx + 1, 0:rows + 1))
    grid%u = temperature(HEAT_INITIAL)
    if (grid%below == MPI_PROC_NULL) grid%u(:, 0) = temperature(HEAT_BOTTOM)
    if (grid%above == MPI_PROC_NULL) grid%u(:, rows + 1) = temperature(HEAT_TOP)
    grid%u(0, :) = temperature(HEAT_LEFT)
    grid%u(nx + 1, :) = temperature(HEAT_RIGHT)
    grid%next = grid%u
  end subroutine grid_init

  subroutine grid_init_handle(grid, nx, ny, alpha, temperature, comm)
    type(heat_grid), intent(out) :: grid
    integer, intent(in) :: nx, ny
    real(dp), intent(in) :: alpha, temperature(5)
    integer, intent(in) :: comm
    type(MPI_Comm) :: f08_comm
    f08_comm%MPI_VAL = comm
    call grid_init(grid, nx, ny, alpha, temperature, f08_comm)
  end subroutine grid_init_handle

  ! One time step: the halo exchange, then the explicit update of every interior point of
  ! grid%u. Collective over grid%comm.
  subroutine heat_step(grid)
    type(heat_grid), intent(inout) :: grid
    real(dp), allocatable :: swap(:, :)
    integer :: i, j

    associate (u => grid%u, next => grid%next, nx => grid%nx, rows => grid%rows, &
               rx => grid%rx, ry => grid%ry)
      ! My first row to the rank below, whose top halo it is; my last row to the rank above.
      call MPI_Sendrecv(u(1:nx, 1), nx, MPI_DOUBLE_PRECISION, grid%below, 0, &
                        u(1:nx, rows + 1), nx, MPI_DOUBLE_PRECISION, grid%above, 0, grid%comm, &
                        MPI_STATUS_IGNORE)
      call MPI_Sendrecv(u(1:nx, rows), nx, MPI_DOUBLE_PRECISION, grid%above, 1, &
                        u(1:nx, 0), nx, MPI_DOUBLE_PRECISION, grid%below, 1, grid%comm, &
                        MPI_STATUS_IGNORE)
      ! The operations in this order in all three languages, for the same rounding.
      do j = 1, rows
        do i = 1, nx
          next(i, j) = u(i, j) + rx*(u(i - 1, j) - 2.0_dp*u(i, j) + u(i + 1, j)) &
                       + ry*(u(i, j - 1) - 2.0_dp*u(i, j) + u(i, j + 1))
        end do
      end do
    end associate
    call move_alloc(grid%u, swap)
    call move_alloc(grid%next, grid%u)
    call move_alloc(swap, grid%next)
  end subroutine heat_step

  ! This rank's rows * nx interior values, row after row: the ranks' cells, in rank order, make
  ! the row-major field.
  subroutine heat_cells(grid, cells)
    type(heat_grid), intent(in) :: grid
    real(dp), intent(out) :: cells(:)
    integer :: j
    do j = 1, grid%rows
      cells((j - 1)*grid%nx + 1:j*grid%nx) = grid%u(1:grid%nx, j)
    end do
  end subroutine heat_cells

end module heat_numerics
