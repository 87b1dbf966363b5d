// SPDX-License-Identifier: BSD-3-Clause
#include <pybind11/pybind11.h>

#include "melissa/version.h"

namespace py = pybind11;

void register_stats(py::module_ &m);
void register_client(py::module_ &m);
void register_server(py::module_ &m);

PYBIND11_MODULE(_core, m, py::mod_gil_not_used()) {
    m.doc() = "melissa's C++ core; use the public modules (melissa.stats) instead.";
    int major = 0, minor = 0, patch = 0;
    melissa_version(&major, &minor, &patch);
    m.attr("library_version") = py::make_tuple(major, minor, patch);
    register_stats(m);
    register_client(m);
    register_server(m);
}
