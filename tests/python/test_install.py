# SPDX-License-Identifier: BSD-3-Clause
"""Solvers in C, C++ and Fortran built against the *installed* package, as users build them:
once with CMake's find_package(Melissa), once with pkg-config. (The test solvers of
tests/programs, built with find_package by the test_programs fixture, stream to real servers in
test_transport_processes.py; here they are built with pkg-config and MPI's compiler wrappers.)"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import MPI_ENV, PROGRAMS, Processes, mpirun, venv_tool

import melissa
from melissa.cli import cmake_dir, pkgconfig_dir

CONSUMER = Path(__file__).resolve().parents[1] / "install"


def run(command: list[str], **kwargs: object) -> str:
    # A timeout however long, so that a stuck compiler or program fails the test, not the run.
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, **kwargs)  # type: ignore[call-overload]
    assert done.returncode == 0, f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_cli_prints_installed_dirs() -> None:
    for flag, expected in (("--cmakedir", "MelissaConfig.cmake"), ("--pkgconfigdir", "melissa.pc")):
        printed = run([sys.executable, "-m", "melissa", flag]).strip()
        assert (Path(printed) / expected).is_file()


def test_cmake_find_package(tmp_path: Path) -> None:
    cmake = venv_tool("cmake")
    run([cmake, "-S", str(CONSUMER), "-B", str(tmp_path), f"-DMelissa_DIR={cmake_dir()}",
         "-G", "Ninja", f"-DCMAKE_MAKE_PROGRAM={venv_tool('ninja')}"])
    run([cmake, "--build", str(tmp_path)])
    assert run([str(tmp_path / "consumer_c")]).strip() == melissa.__version__
    assert run([str(tmp_path / "consumer_fortran")]).strip() == melissa.__version__
    assert run([str(tmp_path / "consumer_cxx")]).split() == ["2", "20"]


def pkg_config(package: str) -> list[str]:
    env = {**os.environ, "PKG_CONFIG_PATH": str(pkgconfig_dir())}
    return run([venv_tool("pkg-config"), "--cflags", "--libs", package], env=env).split()


@pytest.mark.parametrize("components", ["stats", ""])
def test_cmake_stats_alone_needs_no_mpi(tmp_path: Path, components: str) -> None:
    """find_package(Melissa COMPONENTS stats) configures with MPI unfindable, and gives the
    kernels; the whole package, which the client needs MPI for, does not."""
    cmake = venv_tool("cmake")
    configure = [cmake, "-S", str(CONSUMER / "stats"), "-B", str(tmp_path), "-G", "Ninja",
                 f"-DCMAKE_MAKE_PROGRAM={venv_tool('ninja')}", f"-DMelissa_DIR={cmake_dir()}",
                 f"-DMELISSA_COMPONENTS={components}", "-DCMAKE_DISABLE_FIND_PACKAGE_MPI=ON"]
    if not components:
        done = subprocess.run(configure, capture_output=True, text=True, timeout=300)
        assert done.returncode != 0 and "MPI" in done.stdout + done.stderr, done.stdout
        return
    run(configure)
    run([cmake, "--build", str(tmp_path)])
    assert run([str(tmp_path / "consumer_cxx")]).split() == ["2", "20"]


@pytest.mark.parametrize(
    ("compiler", "source", "package", "expected"),
    [("cc", "consumer.c", "melissa", None), ("c++", "consumer.cpp", "melissa-stats", "2 20"),
     ("gfortran", "consumer.f90", "melissa-fortran", None)],
)
def test_pkg_config(tmp_path: Path, compiler: str, source: str, package: str,
                    expected: str | None) -> None:
    executable = tmp_path / "consumer"
    run([venv_tool(compiler), str(CONSUMER / source), "-o", str(executable), *pkg_config(package)])
    assert run([str(executable)]).strip() == (expected or melissa.__version__)


def test_pkg_config_links_only_what_is_asked() -> None:
    """A C solver does not link the Fortran library, nor a C++ user of the kernels MPI's."""
    assert not any("fortran" in flag for flag in pkg_config("melissa"))
    assert "-lmelissa_fortran" in pkg_config("melissa-fortran")
    assert pkg_config("melissa-stats")[-1] == "-lmelissa_stats"
    assert "-lmelissa" not in pkg_config("melissa-stats")


@pytest.mark.parametrize(
    ("compiler", "source", "package", "defines"),
    # mpif90, not gfortran: the module `melissa` names mpi_f08's MPI_Comm, and the solver uses
    # mpi_f08 itself.
    [("mpicc", "solver.c", "melissa", []),
     ("mpif90", "solver.F90", "melissa-fortran", ["-DMELISSA_TEST_F08"])],
)
def test_pkg_config_solver_streams(tmp_path: Path, processes: Processes, compiler: str,
                                   source: str, package: str, defines: list[str]) -> None:
    """A solver built with MPI's compiler wrapper and pkg-config's flags sends to a real server
    everything it should."""
    executable = tmp_path / "solver"
    run([venv_tool(compiler), *defines, str(PROGRAMS / source), "-o", str(executable),
         *pkg_config(package)],
        cwd=tmp_path)  # cwd: where mpif90 writes the program's own .mod files, if any

    fields, steps, simulation = ("u", "v"), 3, 4
    server = processes.start_server(2, fields, [simulation])
    solver = processes.run(mpirun(2, [str(executable), ",".join(fields), str(steps), "3,4"]),
                           server.client_env(simulation))
    assert solver.returncode == 0, str(solver)
    for report in server.reports():
        assert report["n_errors"] == 0, "\n".join(report["errors"])
        assert report["finished"] == [simulation]
        assert report["received"] == {f"{simulation}/{f}": list(range(steps))
                                      for f in range(len(fields))}


INCLUDE = Path(__file__).resolve().parents[2] / "include"
LIBRARIES = Path(melissa.__file__).resolve().parent / "lib"


def declared_c_abi() -> set[str]:
    """The functions melissa_api.h declares: `MELISSA_EXPORT type` on one line, `name(` on the
    next (zfp's layout, which the header keeps)."""
    header = (INCLUDE / "melissa" / "melissa_api.h").read_text()
    return set(re.findall(r"^MELISSA_EXPORT [^\n]*\n\s*\**(\w+)\(", header, re.MULTILINE))


def exported_functions(library: Path) -> set[str]:
    table = run(["nm", "-D", "--defined-only", str(library)])
    return {line.split()[-1] for line in table.splitlines() if line.split()[1] in "TWiu"}


def needed(library: Path) -> list[str]:
    dynamic = run(["readelf", "-d", str(library)])
    return re.findall(r"\(NEEDED\)\s+Shared library: \[(.+?)\]", dynamic)


def test_libmelissa_exports_exactly_its_c_abi() -> None:
    declared = declared_c_abi()
    # The header's layout is what the parse relies on: it must find the calls a solver makes.
    assert {"melissa_init", "melissa_send", "melissa_finalize", "melissa_legacy_send"} <= declared
    assert exported_functions(LIBRARIES / "libmelissa.so") == declared


@pytest.mark.parametrize("module", ["_core", "melissa_stats"])
def test_kernels_and_server_need_no_mpi(module: str) -> None:
    """`import melissa.stats` must work where no MPI is installed: neither the statistics
    library nor the _core extension (kernels and receiver) links MPI."""
    if module == "_core":
        library = Path(melissa._core.__file__)
    else:
        library = LIBRARIES / f"lib{module}.so"
    assert not [name for name in needed(library) if "mpi" in name]
    if module == "melissa_stats":
        assert not [name for name in needed(library) if "zmq" in name]


def test_mpi4py_loads_the_mpi_libmelissa_links() -> None:
    """mpi4py comes as a binary wheel, which holds no MPI: under mpirun it must load the same
    libmpi as libmelissa (the system's), or a Python solver would run two MPIs in one process."""
    linked = re.findall(r"libmpi\.so\S* => (\S+)", run(["ldd", str(LIBRARIES / "libmelissa.so")]))
    assert len(linked) == 1, linked
    script = ("from mpi4py import MPI\nimport melissa.client\n"
              "print(*sorted({line.split()[-1] for line in open('/proc/self/maps')"
              " if '/libmpi.so' in line}))")
    loaded = run(mpirun(1, [sys.executable, "-c", script]), env={**os.environ, **MPI_ENV}).split()
    assert [os.path.realpath(path) for path in loaded] == [os.path.realpath(linked[0])]
