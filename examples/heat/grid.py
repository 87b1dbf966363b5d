# SPDX-License-Identifier: BSD-3-Clause
"""Writes the heat solver's grid as a coordinates file for results.nc (study_options.
coordinates_file): x and y of the interior points, (i + 1) / (nx + 1) on the unit square.

    python grid.py NX NY FILE
"""

from __future__ import annotations

import sys

import netCDF4
import numpy as np


def write_grid(nx: int, ny: int, path: str) -> None:
    with netCDF4.Dataset(path, "w") as ds:
        for name, n, edge in (("x", nx, "left"), ("y", ny, "bottom")):
            ds.createDimension(name, n)
            axis = ds.createVariable(name, "f8", (name,))
            axis[:] = np.arange(1, n + 1) / (n + 1)
            axis.units = "m"
            axis.long_name = f"distance from the {edge} edge"
            axis.axis = name.upper()


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__.splitlines()[-1].strip().replace("python", "usage: python", 1))
    write_grid(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
