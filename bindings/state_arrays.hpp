// SPDX-License-Identifier: BSD-3-Clause
//
// The numpy dtype of an accumulator's state array, for melissa.stats' views of a live
// accumulator's state and the statistics server's copies of its kernels' states alike.
#pragma once

#include <pybind11/numpy.h>

#include <cstdint>
#include <stdexcept>

#include "melissa/stats.hpp"

namespace melissa::bindings {

inline pybind11::dtype state_dtype(stats::StateArray::Type type) {
    switch (type) {
    case stats::StateArray::Type::Float64:
        return pybind11::dtype::of<double>();
    case stats::StateArray::Type::UInt64:
        return pybind11::dtype::of<std::uint64_t>();
    case stats::StateArray::Type::Float32:
        return pybind11::dtype::of<float>();
    }
    throw std::logic_error("a state array of an unknown type");
}

} // namespace melissa::bindings
