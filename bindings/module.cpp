// SPDX-License-Identifier: BSD-3-Clause
#include <pybind11/pybind11.h>

namespace py = pybind11;

void register_stats(py::module_ &m);
void register_server(py::module_ &m);

PYBIND11_MODULE(_core, m, py::mod_gil_not_used()) {
    m.doc() = "melissa's C++ core; use the public modules (melissa.stats) instead.";
    m.attr("library_version") =
        py::make_tuple(MELISSA_VERSION_MAJOR, MELISSA_VERSION_MINOR, MELISSA_VERSION_PATCH);
    register_stats(m);
    register_server(m);
}
