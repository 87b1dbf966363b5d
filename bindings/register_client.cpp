// SPDX-License-Identifier: BSD-3-Clause
//
// The client C ABI for melissa.client: the calls may block up to the study's timeout, so the GIL
// is released around each; errors come back as codes for the Python layer to raise.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <optional>
#include <string>

#include "melissa/melissa_api.h"

namespace py = pybind11;

void register_client(py::module_ &m) {
    m.def(
        "client_init",
        [](const std::string &field, int size, std::optional<int> fortran_comm) {
            py::gil_scoped_release release;
            return fortran_comm ? melissa_init_f(field.c_str(), size, *fortran_comm)
                                : melissa_init_no_mpi(field.c_str(), size);
        },
        py::arg("field"), py::arg("size"), py::arg("fortran_comm") = std::nullopt,
        "melissa_init_f with a communicator's Fortran handle, else melissa_init_no_mpi.");
    m.def(
        "client_send",
        [](const std::string &field, const py::array &values) {
            // melissa.client checked the dtype, the size and the layout.
            const bool is_double = values.dtype().itemsize() == 8;
            const void *data = values.data();
            py::gil_scoped_release release;
            return is_double ? melissa_send(field.c_str(), static_cast<const double *>(data))
                             : melissa_send_float(field.c_str(), static_cast<const float *>(data));
        },
        py::arg("field"), py::arg("values"));
    m.def("client_finalize", [] {
        py::gil_scoped_release release;
        return melissa_finalize();
    });
    m.def("client_last_error", [] { return std::string(melissa_last_error()); });
}
