# SPDX-License-Identifier: BSD-3-Clause
"""melissa: in-transit statistics and online training for large ensembles of simulations."""

try:
    from melissa import _core
except ImportError as err:  # pragma: no cover - only on a broken install
    raise ImportError(
        "melissa's compiled core (melissa._core) could not be loaded. Build and install the "
        "package with `make install` (or `pip install .` on a cluster) and do not run Python from "
        f"the source tree's python/ directory. Cause: {err}"
    ) from err

# CMakeLists.txt's project version, the single source of the package's.
__version__ = ".".join(map(str, _core.library_version))

__all__ = ["__version__"]
