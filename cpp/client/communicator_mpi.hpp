// SPDX-License-Identifier: BSD-3-Clause
#pragma once

#include <mpi.h>

#include "client.hpp"

namespace melissa::client {

/// Collectives over a duplicate of `comm`; throws Error if MPI is not initialized.
std::unique_ptr<Communicator> mpi_communicator(MPI_Comm comm);

} // namespace melissa::client
