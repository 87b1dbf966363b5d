// SPDX-License-Identifier: BSD-3-Clause
#include <cstdio>
#include <vector>

#include <melissa/stats.hpp>

int main() {
    // Two cells, three fields: means 2 and 20.
    const std::vector<double> fields{1.0, 10.0, 2.0, 20.0, 3.0, 30.0};
    melissa::stats::Moments moments(2);
    moments.update(fields.data(), 3);
    double mean[2];
    moments.mean(mean);
    std::printf("%g %g\n", mean[0], mean[1]);
    return 0;
}
