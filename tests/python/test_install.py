# SPDX-License-Identifier: BSD-3-Clause
"""Solvers in C, C++ and Fortran built against the *installed* package, as users build them:
once with CMake's find_package(Melissa), once with pkg-config."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import melissa
from melissa.cli import cmake_dir, pkgconfig_dir

CONSUMER = Path(__file__).resolve().parents[1] / "install"


def tool(name: str) -> str:
    # The venv's cmake first: the one the package was built with.
    beside_python = Path(sys.executable).parent / name
    found = str(beside_python) if beside_python.exists() else shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed; `make install` installs it")
    return found


def run(command: list[str], **kwargs: object) -> str:
    done = subprocess.run(command, capture_output=True, text=True, **kwargs)  # type: ignore[call-overload]
    assert done.returncode == 0, f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_cli_prints_installed_dirs() -> None:
    for flag, expected in (("--cmakedir", "MelissaConfig.cmake"), ("--pkgconfigdir", "melissa.pc")):
        printed = run([sys.executable, "-m", "melissa", flag]).strip()
        assert (Path(printed) / expected).is_file()


def test_cmake_find_package(tmp_path: Path) -> None:
    cmake = tool("cmake")
    run([cmake, "-S", str(CONSUMER), "-B", str(tmp_path), f"-DMelissa_DIR={cmake_dir()}",
         "-G", "Ninja", f"-DCMAKE_MAKE_PROGRAM={tool('ninja')}"])
    run([cmake, "--build", str(tmp_path)])
    assert run([str(tmp_path / "consumer_c")]).strip() == melissa.__version__
    assert run([str(tmp_path / "consumer_fortran")]).strip() == melissa.__version__
    assert run([str(tmp_path / "consumer_cxx")]).split() == ["2", "20"]


@pytest.mark.parametrize(
    ("compiler", "source", "expected"),
    [("cc", "consumer.c", None), ("c++", "consumer.cpp", "2 20"),
     ("gfortran", "consumer.f90", None)],
)
def test_pkg_config(tmp_path: Path, compiler: str, source: str, expected: str | None) -> None:
    env = {**os.environ, "PKG_CONFIG_PATH": str(pkgconfig_dir())}
    flags = run([tool("pkg-config"), "--cflags", "--libs", "melissa"], env=env).split()
    executable = tmp_path / "consumer"
    run([tool(compiler), str(CONSUMER / source), "-o", str(executable), *flags])
    assert run([str(executable)]).strip() == (expected or melissa.__version__)
