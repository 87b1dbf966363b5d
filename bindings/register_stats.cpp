// SPDX-License-Identifier: BSD-3-Clause
//
// Conversion only: numpy arrays in and out, shape and dtype checks with messages that name the
// offending call, and the GIL released while a kernel runs.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "melissa/stats.hpp"
#include "state_arrays.hpp"

namespace py = pybind11;
namespace ms = melissa::stats;

namespace {

/// Python's spelling of a shape, optionally with a leading batch dimension called k.
std::string shape_string(const std::vector<py::ssize_t> &shape, bool batch = false) {
    std::vector<std::string> parts;
    if (batch)
        parts.emplace_back("k");
    for (py::ssize_t n : shape)
        parts.push_back(std::to_string(n));
    std::string s = "(";
    for (std::size_t i = 0; i < parts.size(); ++i)
        s += (i ? ", " : "") + parts[i];
    return s + (parts.size() == 1 ? ",)" : ")");
}

std::size_t checked_size(py::ssize_t n, const char *what, const char *name = "size") {
    if (n < 1)
        throw py::value_error(std::string(what) + ": " + name + " must be at least 1, got " +
                              std::to_string(n));
    return static_cast<std::size_t>(n);
}

/// One field or a batch of fields, C-contiguous, float32 or float64.
struct Fields {
    py::array array;
    std::size_t count;
    bool is_double;
    std::string given; // the dtype before any conversion, for messages
};

/// Accepts `one` (the shape of a single field or group) or (k, *one); copies only when the input
/// is not C-contiguous, or holds integers or booleans, which are read as float64.
Fields as_fields(const py::handle &values, const std::vector<py::ssize_t> &one, const char *what) {
    const std::string expected = "float32 or float64 (integers and booleans are read as float64)";
    py::array array = py::array::ensure(values);
    if (!array)
        throw py::type_error(std::string(what) + ": expected a numpy array of " + expected);
    const py::dtype dtype = array.dtype();
    const char kind = dtype.kind();
    const bool exact = kind == 'i' || kind == 'u' || kind == 'b';
    // Either byte order is accepted (the copy below makes it native), no other kind or width:
    // float16 or complex values would be changed by the conversion, objects may not be numbers.
    if (!exact && (kind != 'f' || (dtype.itemsize() != 4 && dtype.itemsize() != 8)))
        throw py::type_error(std::string(what) + ": values must be " + expected + ", got " +
                             py::str(dtype).cast<std::string>());
    const std::vector<py::ssize_t> shape(array.shape(), array.shape() + array.ndim());
    const bool single = shape == one;
    const bool batched =
        shape.size() == one.size() + 1 && std::equal(one.begin(), one.end(), shape.begin() + 1);
    if (!single && !batched)
        throw py::value_error(std::string(what) + ": expected shape " + shape_string(one) + " or " +
                              shape_string(one, true) + ", got " + shape_string(shape));
    const std::size_t count = single ? 1 : static_cast<std::size_t>(shape[0]);
    const std::string given = py::str(dtype).cast<std::string>();
    // Copies only what is not already native, C-contiguous floats.
    constexpr int flags = py::array::c_style | py::array::forcecast;
    if (exact || dtype.itemsize() == 8)
        return {py::array_t<double, flags>::ensure(array), count, true, given};
    return {py::array_t<float, flags>::ensure(array), count, false, given};
}

/// Calls kernel(pointer, count) with the right element type, without the GIL.
template <class Kernel> void run_on_fields(const Fields &fields, Kernel &&kernel) {
    py::gil_scoped_release release;
    if (fields.is_double)
        kernel(static_cast<const double *>(fields.array.data()), fields.count);
    else
        kernel(static_cast<const float *>(fields.array.data()), fields.count);
}

py::ssize_t ssize(std::size_t n) { return static_cast<py::ssize_t>(n); }

/// Binds a per-cell result `void stat(double *out) const` as a method returning (size,).
template <class T> auto cell_result(void (T::*stat)(double *) const) {
    return [stat](const T &self) {
        py::array_t<double> out(ssize(self.size()));
        (self.*stat)(out.mutable_data());
        return out;
    };
}

/// As cell_result, for `void stat(double *out, int ddof) const`.
template <class T> auto cell_result_ddof(void (T::*stat)(double *, int) const) {
    return [stat](const T &self, int ddof) {
        py::array_t<double> out(ssize(self.size()));
        (self.*stat)(out.mutable_data(), ddof);
        return out;
    };
}

/// Binds a per-parameter result `void stat(double *out) const` as a method returning
/// (n_params, size).
template <class T> auto parameter_result(void (T::*stat)(double *) const) {
    return [stat](const T &self) {
        py::array_t<double> out({ssize(self.n_params()), ssize(self.size())});
        (self.*stat)(out.mutable_data());
        return out;
    };
}

/// Copies a row-major (rows, size) result.
template <class Value>
py::array_t<Value> table(const Value *data, std::size_t rows, std::size_t size) {
    py::array_t<Value> out({ssize(rows), ssize(size)});
    std::copy_n(data, rows * size, out.mutable_data());
    return out;
}

/// Writable numpy views of an accumulator's state, which keep the accumulator alive.
py::dict state_views(std::vector<ms::StateArray> arrays, const py::handle &owner) {
    py::dict views;
    for (const auto &a : arrays) {
        const std::vector<py::ssize_t> shape(a.shape.begin(), a.shape.end());
        views[a.name.c_str()] =
            py::array(melissa::bindings::state_dtype(a.type), shape, a.data, owner);
    }
    return views;
}

/// The members every accumulator shares.
template <class Cls> void common(Cls &cls) {
    using T = typename Cls::type;
    cls.def_property_readonly("size", &T::size, "Number of cells.")
        .def_property_readonly("count", &T::count, "Number of fields (or groups) seen.")
        .def("_state", [](py::object self) { return state_views(self.cast<T &>().state(), self); });
}

template <class Cls> void single_field_update(Cls &cls, const char *what) {
    using T = typename Cls::type;
    cls.def(
        "update",
        [what](T &self, const py::handle &x) {
            const Fields fields = as_fields(x, {ssize(self.size())}, what);
            run_on_fields(fields, [&](auto data, std::size_t n) { self.update(data, n); });
        },
        py::arg("x"),
        "Adds one field of shape (size,) or a batch of fields of shape (k, size), float32 or "
        "float64 (integers and booleans are read as float64).");
}

template <class Cls> void mergeable(Cls &cls) {
    using T = typename Cls::type;
    cls.def(
        "merge",
        [](T &self, const T &other) {
            py::gil_scoped_release release;
            self.merge(other);
        },
        py::arg("other"),
        "Adds another state of the same cells, as if its fields had been given to update().");
}

} // namespace

void register_stats(py::module_ &m) {
    m.def("set_num_threads", &ms::set_num_threads, py::arg("n"),
          "Most threads one large update may use (default: MELISSA_NUM_THREADS, else the cores "
          "this process may run on).");
    m.def("get_num_threads", &ms::get_num_threads);

    py::class_<ms::Moments> moments(m, "Moments");
    moments
        .def(py::init([](py::ssize_t size, int order) {
                 return ms::Moments(checked_size(size, "Moments"), order);
             }),
             py::arg("size"), py::arg("order") = 4)
        .def_property_readonly("order", &ms::Moments::order)
        .def("mean", cell_result(&ms::Moments::mean))
        .def("variance", cell_result_ddof(&ms::Moments::variance), py::arg("ddof") = 1)
        .def("skewness", cell_result(&ms::Moments::skewness))
        .def("kurtosis", cell_result(&ms::Moments::kurtosis));
    common(moments);
    single_field_update(moments, "Moments.update");
    mergeable(moments);

    py::class_<ms::Extrema> extrema(m, "Extrema");
    extrema
        .def(py::init([](py::ssize_t size) { return ms::Extrema(checked_size(size, "Extrema")); }),
             py::arg("size"))
        .def("min", cell_result(&ms::Extrema::min))
        .def("max", cell_result(&ms::Extrema::max));
    common(extrema);
    single_field_update(extrema, "Extrema.update");
    mergeable(extrema);

    py::class_<ms::ThresholdExceedance> exceedance(m, "ThresholdExceedance");
    exceedance
        .def(py::init([](py::ssize_t size, std::vector<double> thresholds) {
                 return ms::ThresholdExceedance(checked_size(size, "ThresholdExceedance"),
                                                std::move(thresholds));
             }),
             py::arg("size"), py::arg("thresholds"))
        .def_property_readonly("thresholds", &ms::ThresholdExceedance::thresholds)
        .def("counts", [](const ms::ThresholdExceedance &self) {
            return table(self.counts(), self.thresholds().size(), self.size());
        });
    common(exceedance);
    single_field_update(exceedance, "ThresholdExceedance.update");
    mergeable(exceedance);

    py::class_<ms::Quantiles> quantiles(m, "Quantiles");
    quantiles
        .def(py::init([](py::ssize_t size, std::vector<double> probabilities) {
                 return ms::Quantiles(checked_size(size, "Quantiles"), std::move(probabilities));
             }),
             py::arg("size"), py::arg("probabilities"))
        .def_property_readonly("probabilities", &ms::Quantiles::probabilities)
        .def("quantiles", [](const ms::Quantiles &self) {
            auto out = table(self.quantiles(), self.probabilities().size(), self.size());
            if (self.count() == 0)
                std::fill_n(out.mutable_data(), out.size(), std::nan(""));
            return out;
        });
    common(quantiles);
    single_field_update(quantiles, "Quantiles.update");

    py::class_<ms::Covariance> covariance(m, "Covariance");
    covariance
        .def(py::init(
                 [](py::ssize_t size) { return ms::Covariance(checked_size(size, "Covariance")); }),
             py::arg("size"))
        .def(
            "update",
            [](ms::Covariance &self, const py::handle &x, const py::handle &y) {
                const std::vector<py::ssize_t> one{ssize(self.size())};
                const Fields fx = as_fields(x, one, "Covariance.update (x)");
                const Fields fy = as_fields(y, one, "Covariance.update (y)");
                if (fx.is_double != fy.is_double) {
                    const std::string got = fx.given + " and " + fy.given;
                    throw py::type_error(
                        "Covariance.update: x and y must have the same dtype, got " + got +
                        " (integers and booleans are read as float64)");
                }
                if (fx.count != fy.count)
                    throw py::value_error("Covariance.update: x holds " + std::to_string(fx.count) +
                                          " fields but y holds " + std::to_string(fy.count));
                py::gil_scoped_release release;
                if (fx.is_double)
                    self.update(static_cast<const double *>(fx.array.data()),
                                static_cast<const double *>(fy.array.data()), fx.count);
                else
                    self.update(static_cast<const float *>(fx.array.data()),
                                static_cast<const float *>(fy.array.data()), fx.count);
            },
            py::arg("x"), py::arg("y"),
            "Adds paired fields x and y, each of shape (size,) or (k, size).")
        .def("covariance", cell_result_ddof(&ms::Covariance::covariance), py::arg("ddof") = 1)
        .def("correlation", cell_result(&ms::Covariance::correlation));
    common(covariance);
    mergeable(covariance);

    py::class_<ms::Sobol> sobol(m, "Sobol");
    sobol
        .def(py::init([](py::ssize_t size, py::ssize_t n_params) {
                 return ms::Sobol(checked_size(size, "Sobol"),
                                  checked_size(n_params, "Sobol", "n_params"));
             }),
             py::arg("size"), py::arg("n_params"))
        .def_property_readonly("n_params", &ms::Sobol::n_params)
        .def(
            "update",
            [](ms::Sobol &self, const py::handle &groups) {
                const Fields fields = as_fields(
                    groups, {ssize(self.group_size()), ssize(self.size())}, "Sobol.update");
                run_on_fields(fields, [&](auto data, std::size_t n) { self.update(data, n); });
            },
            py::arg("groups"),
            "Adds one pick-freeze group of shape (n_params + 2, size) or a batch of shape "
            "(k, n_params + 2, size); rows are y_A, y_B, y_C1 ... y_Cp.")
        .def("first_order", parameter_result(&ms::Sobol::first_order))
        .def("total_order", parameter_result(&ms::Sobol::total_order));
    common(sobol);
    mergeable(sobol);
}
