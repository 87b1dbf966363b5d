// SPDX-License-Identifier: BSD-3-Clause
//
// melissa._client, the client C ABI for melissa.client: the calls may block up to the study's
// timeout, so the GIL is released around each; errors come back as codes for the Python layer to
// raise. A module of its own, apart from _core, because it links libmelissa and through it MPI.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <optional>
#include <string>

#include "melissa/melissa_api.h"

namespace py = pybind11;

PYBIND11_MODULE(_client, m, py::mod_gil_not_used()) {
    m.doc() = "libmelissa's client calls; use melissa.client instead.";
    m.def(
        "init",
        [](const std::string &field, int size, std::optional<int> fortran_comm) {
            py::gil_scoped_release release;
            return fortran_comm ? melissa_init_f(field.c_str(), size, *fortran_comm)
                                : melissa_init_no_mpi(field.c_str(), size);
        },
        py::arg("field"), py::arg("size"), py::arg("fortran_comm") = std::nullopt,
        "melissa_init_f with a communicator's Fortran handle, else melissa_init_no_mpi.");
    m.def(
        "send",
        [](const std::string &field, const py::array &values) {
            // melissa.client checked the dtype, the size and the layout.
            const bool is_double = values.dtype().itemsize() == 8;
            const void *data = values.data();
            py::gil_scoped_release release;
            return is_double ? melissa_send(field.c_str(), static_cast<const double *>(data))
                             : melissa_send_float(field.c_str(), static_cast<const float *>(data));
        },
        py::arg("field"), py::arg("values"));
    m.def("finalize", [] {
        py::gil_scoped_release release;
        return melissa_finalize();
    });
    m.def("last_error", [] { return std::string(melissa_last_error()); });
}
