# SPDX-License-Identifier: BSD-3-Clause
"""The `melissa` command (also `python -m melissa`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import melissa

PACKAGE_DIR = Path(melissa.__file__).resolve().parent


def cmake_dir() -> Path:
    """Where find_package(Melissa) looks: pass it as Melissa_DIR or in CMAKE_PREFIX_PATH."""
    return PACKAGE_DIR / "lib" / "cmake" / "Melissa"


def pkgconfig_dir() -> Path:
    """Where melissa.pc lies: add it to PKG_CONFIG_PATH."""
    return PACKAGE_DIR / "lib" / "pkgconfig"


def _print_dir(path: Path) -> int:
    if not path.is_dir():
        print(f"melissa: {path} does not exist; is melissa installed with `pip install .`?",
              file=sys.stderr)
        return 1
    print(path)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="melissa", description=melissa.__doc__)
    parser.add_argument("--version", action="version", version=f"melissa {melissa.__version__}")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--cmakedir", action="store_true",
                       help="print the directory of the CMake package (MelissaConfig.cmake)")
    where.add_argument("--pkgconfigdir", action="store_true",
                       help="print the directory of the pkg-config file melissa.pc")
    args = parser.parse_args(argv)
    return _print_dir(cmake_dir() if args.cmakedir else pkgconfig_dir())
