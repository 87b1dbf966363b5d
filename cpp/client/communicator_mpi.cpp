// SPDX-License-Identifier: BSD-3-Clause
#include "communicator_mpi.hpp"

#include <string>

namespace melissa::client {
namespace {

void check(int status, const char *call) {
    if (status != MPI_SUCCESS) {
        char text[MPI_MAX_ERROR_STRING];
        int length = 0;
        MPI_Error_string(status, text, &length);
        throw Error(MELISSA_ERR_MPI, std::string(call) + " failed: " + std::string(text, length));
    }
}

class MpiCommunicator final : public Communicator {
  public:
    // A duplicate: melissa's messages never match the solver's own, whatever tags it uses.
    explicit MpiCommunicator(MPI_Comm comm) {
        int initialized = 0;
        MPI_Initialized(&initialized);
        if (!initialized)
            throw Error(MELISSA_ERR_STATE,
                        "melissa_init needs MPI_Init first (or use melissa_init_no_mpi)");
        check(MPI_Comm_dup(comm, &comm_), "MPI_Comm_dup");
        MPI_Comm_rank(comm_, &rank_);
        MPI_Comm_size(comm_, &size_);
    }
    ~MpiCommunicator() override {
        int finalized = 0;
        MPI_Finalized(&finalized);
        if (!finalized)
            MPI_Comm_free(&comm_);
    }

    int rank() const override { return rank_; }
    int size() const override { return size_; }

    std::vector<std::uint64_t> allgather(std::uint64_t value) override {
        std::vector<std::uint64_t> all(size_);
        check(MPI_Allgather(&value, 1, MPI_UINT64_T, all.data(), 1, MPI_UINT64_T, comm_),
              "MPI_Allgather");
        return all;
    }

    void broadcast(std::vector<std::byte> &bytes) override {
        unsigned long long size = bytes.size();
        check(MPI_Bcast(&size, 1, MPI_UNSIGNED_LONG_LONG, 0, comm_), "MPI_Bcast");
        bytes.resize(size);
        check(MPI_Bcast(bytes.data(), static_cast<int>(size), MPI_BYTE, 0, comm_), "MPI_Bcast");
    }

  private:
    MPI_Comm comm_ = MPI_COMM_NULL;
    int rank_ = 0, size_ = 1;
};

} // namespace

std::unique_ptr<Communicator> mpi_communicator(MPI_Comm comm) {
    return std::make_unique<MpiCommunicator>(comm);
}

} // namespace melissa::client
