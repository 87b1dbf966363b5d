# SPDX-License-Identifier: BSD-3-Clause
"""The portable wheel, as a user gets it: `make wheel` (pip wheel, isolated, then auditwheel
repair) installed by pip into a fresh venv, then used where the system's libzmq, or MPI, is not.

"Not there" is made real, not simulated: in a mount namespace of its own (unshare -m, hence
root), an empty file is bind-mounted over each of the system's library files, so that whatever
loads one fails ("file too short"). Only that namespace sees it; the machine is untouched. The
study, its server and its C solver run entirely inside, so the libzmq they all load is the one
the wheel vendors.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from conftest import Finished, Processes

REPO = Path(__file__).resolve().parents[2]
SOBOL_MODEL = REPO / "tests" / "studies" / "sobol_model.c"
SYSTEM_LIBS = "/usr/lib/x86_64-linux-gnu"
SYSTEM_ZMQ = f"{SYSTEM_LIBS}/libzmq.so*"
SYSTEM_MPI = f"{SYSTEM_LIBS}/libmpi.so.40*"
# What a site's MPI brings: none of it may be in the wheel.
MPI_FAMILY = re.compile(r"lib(mpi|open-pal|open-rte|pmix|prrte|hwloc|fabric|uc[pst]|event)")
MELISSA_LIBRARIES = ("libmelissa", "libmelissa_stats", "libmelissa_fortran")


def run(command: list[str], timeout: float, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
    assert done.returncode == 0, f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@dataclass
class FreshInstall:
    """The repaired wheel and a fresh venv (the system's Python, no torch) it is installed in."""

    wheel: Path
    venv: Path
    site_packages: Path

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    @property
    def vendored(self) -> Path:
        return self.site_packages / "melissa_intransit.libs"


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FreshInstall]:
    """Builds the wheel once, with the Makefile's target, and installs it into a fresh venv,
    its dependencies from the package index. `-o`: the wheel is built from the sources in
    isolation, whatever the state of .venv; the test does not reinstall the package it runs
    from (`make test` has installed it already)."""
    wheel_dir = tmp_path_factory.mktemp("dist")
    run(["make", "-C", str(REPO), "-o", ".venv/.melissa-installed", "wheel",
         f"WHEEL_DIR={wheel_dir}"], timeout=1200)
    wheels = list(wheel_dir.glob("*.whl"))
    assert len(wheels) == 1, f"make wheel left {wheels} in {wheel_dir}"

    venv = tmp_path_factory.mktemp("fresh-venv")
    # The interpreter .venv was made from (the wheel's cpXY tag is its version), not .venv's.
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    base_python = Path(sys.base_prefix) / "bin" / f"python{version}"
    pip_env = {**os.environ, "PIP_NO_CACHE_DIR": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    pip_env.pop("VIRTUAL_ENV", None)
    run([str(base_python), "-m", "venv", "--clear", str(venv)], timeout=120)
    run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", str(wheels[0])],
        timeout=900, env=pip_env)
    site_packages = run([str(venv / "bin" / "python"), "-c",
                         "import sysconfig; print(sysconfig.get_paths()['platlib'])"],
                        timeout=60).strip()
    yield FreshInstall(wheels[0], venv, Path(site_packages))
    shutil.rmtree(venv, ignore_errors=True)  # some 300 MB of numpy, scipy, matplotlib...


def in_namespace(processes: Processes, tmp_path: Path, hide: list[str], script: str,
                 env: dict[str, str], timeout: float = 240) -> Finished:
    """Runs a bash script in a mount namespace of its own where every file the glob patterns
    `hide` name (through symlinks) reads empty."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.fail("the wheel tests hide the system's libraries in a mount namespace: they need "
                    "root and util-linux's unshare")
    empty = tmp_path / "empty.so"
    empty.write_bytes(b"")
    prelude = r"""
set -euo pipefail
# Never where the bind mounts would be seen by the machine: bash must be in a mount namespace
# other than that of the process that started unshare.
if [ "$(readlink /proc/self/ns/mnt)" = "$(readlink /proc/$PPID/ns/mnt)" ]; then
  echo "not in a mount namespace of its own: nothing hidden" >&2; exit 99
fi
for file in $(readlink -f $HIDE | sort -u); do
  mount --bind "$EMPTY" "$file"
  [ ! -s "$file" ]
  echo "hidden: $file"
done
"""
    argv = ["unshare", "--mount", "--propagation", "private", "bash", "-c", prelude + script]
    finished = processes.run(argv, {**env, "HIDE": " ".join(hide), "EMPTY": str(empty)},
                             timeout=timeout)
    assert "not in a mount namespace" not in finished.output, str(finished)
    return finished


def marked(output: str, marker: str) -> list[str]:
    """The values the script printed after `marker`, one per line."""
    return [line[len(marker):].strip() for line in output.splitlines()
            if line.startswith(marker)]


# -------------------------------------------------------------------------------------------
# The wheel's contents


def test_wheel_is_manylinux_vendors_libzmq_not_mpi(fresh: FreshInstall) -> None:
    assert re.fullmatch(r"melissa_intransit-[\d.]+-cp\d+-cp\d+-manylinux_2_\d+_x86_64\.whl",
                        fresh.wheel.name), fresh.wheel.name
    with zipfile.ZipFile(fresh.wheel) as archive:
        names = archive.namelist()
        metadata = next(n for n in names if n.endswith(".dist-info/WHEEL"))
        tags = re.findall(r"^Tag: (\S+)$", archive.read(metadata).decode(), re.MULTILINE)
    assert tags and all("-manylinux_2_" in tag for tag in tags), tags

    vendored = [Path(n).name for n in names if n.startswith("melissa_intransit.libs/")
                and not n.endswith("/")]
    assert [n for n in vendored if re.fullmatch(r"libzmq-[0-9a-f]{8}\.so(\.\d+)*", n)], vendored
    assert not [n for n in vendored if MPI_FAMILY.match(n)], f"MPI vendored: {vendored}"
    assert not [n for n in vendored if n.startswith("libmelissa")], vendored

    # One file per library, unversioned: not libmelissa.so, .so.0.1 and .so.0.1.0, three copies.
    for library in MELISSA_LIBRARIES:
        copies = [n for n in names if re.search(rf"(^|/){library}\.so(\.[\d.]+)?$", n)]
        assert copies == [f"melissa/lib/{library}.so"], copies


def needed(library: Path) -> list[str]:
    dynamic = run(["readelf", "-d", str(library)], timeout=60)
    return re.findall(r"\(NEEDED\)\s+Shared library: \[(.+?)\]", dynamic)


def test_installed_libraries_load_vendored_zmq_and_the_sites_mpi(fresh: FreshInstall) -> None:
    lib = fresh.site_packages / "melissa" / "lib"
    client = needed(lib / "libmelissa.so")
    assert "libmpi.so.40" in client, client  # by its soname: whichever the site's loader finds
    zmq = [n for n in client if n.startswith("libzmq")]
    assert len(zmq) == 1 and (fresh.vendored / zmq[0]).is_file(), (client, zmq)
    assert not [n for n in needed(lib / "libmelissa_stats.so") if "mpi" in n or "zmq" in n]


# -------------------------------------------------------------------------------------------
# Without the system's libzmq

STATS_CHECK = """
import numpy as np
from melissa.stats import Moments
data = np.random.default_rng(5).normal(2.0, 3.0, size=(40, 100))
moments = Moments(size=100)
for row in data[:25]:
    moments.update(row)
moments.update(data[25:])
np.testing.assert_allclose(moments.mean(), data.mean(axis=0), rtol=1e-12)
np.testing.assert_allclose(moments.variance(), data.var(axis=0, ddof=1), rtol=1e-10)
print("stats-equal-numpy: yes")
for path in sorted({line.split()[-1] for line in open("/proc/self/maps") if "libzmq" in line}):
    print("zmq-mapped:", path)
"""

STUDY_SCRIPT = r"""
# Hiding works: a build that uses the system's libzmq (the repository's .venv) fails here.
if "$REPO_PYTHON" -c "import melissa._core" 2> repo-import.err; then
  echo "the system's libzmq still loads" >&2; exit 98
fi
echo "repo-import: $(tail -n 1 repo-import.err)"
export PATH="$VENV/bin:$PATH"
python -c "$STATS_CHECK"
export PKG_CONFIG_PATH="$(python -m melissa --pkgconfigdir)"
mpicc "$SOURCE" -o sobol_model $(pkg-config --cflags --libs melissa)
ldd sobol_model | sed 's/^[[:space:]]*/ldd: /'
melissa run config.json
"""


def sobol_model_fields(parameters: np.ndarray, cells: int) -> np.ndarray:
    """What sobol_model.c sends at every time step, (simulation, cell)."""
    c2 = 2.0 * np.arange(cells) / (cells - 1)
    x1, x2, x3 = (parameters[:, [k]] for k in range(3))
    return x1 + c2 * x2 + 1.5 * x1 * x3


def test_study_without_system_zmq(fresh: FreshInstall, processes: Processes,
                                  tmp_path: Path) -> None:
    """melissa.stats, a C solver built with pkg-config, and a whole study (launcher, server,
    solvers) run on the vendored libzmq."""
    cells, steps, simulations = 5, 3, 6
    config = {
        "study_options": {
            "parameter_sweep_size": simulations, "nb_parameters": 3, "l_bounds": [-1.0] * 3,
            "u_bounds": [1.0] * 3, "sampler": "halton", "field_names": ["y"],
            "nb_time_steps": steps, "seed": 3, "simulation_timeout": 60,
        },
        "sa_config": {"mean": True, "variance": True, "min": True, "max": True},
        "launcher_config": {"job_limit": 2, "num_server_processes": 1,
                            "timeouts": {"transport": 30}},
        "client_config": {"executable_command": f"./sobol_model {cells} {steps}"},
        "output_dir": "out",
    }
    (tmp_path / "config.json").write_text(json.dumps(config, indent=1))
    # cd: the study's directory, where the solver is built and the simulations run.
    finished = in_namespace(
        processes, tmp_path, [SYSTEM_ZMQ], f"cd {tmp_path}\n{STUDY_SCRIPT}",
        {"VENV": str(fresh.venv), "REPO_PYTHON": sys.executable, "STATS_CHECK": STATS_CHECK,
         "SOURCE": str(SOBOL_MODEL)}, timeout=300)
    assert finished.returncode == 0, str(finished)
    output = finished.output
    assert marked(output, "hidden:"), output
    assert "libzmq.so.5: file too short" in marked(output, "repo-import:")[0], output

    assert marked(output, "stats-equal-numpy:") == ["yes"], output
    vendored_zmq = next(fresh.vendored.glob("libzmq-*")).resolve()
    assert [Path(p) for p in marked(output, "zmq-mapped:")] == [vendored_zmq], output

    # ldd prints `name => path (address)`, the path as the loader built it ($ORIGIN/../..).
    ldd = dict(line.split(" => ", 1) for line in marked(output, "ldd:") if " => " in line)
    assert not [name for name, where in ldd.items() if "not found" in where], ldd
    found = {name: Path(os.path.realpath(where.rsplit(" (", 1)[0])) for name, where in ldd.items()}
    zmq = [name for name in found if name.startswith("libzmq")]
    assert len(zmq) == 1 and found[zmq[0]].parent == fresh.vendored.resolve(), ldd
    assert found["libmelissa.so"].parent == (fresh.site_packages / "melissa" / "lib").resolve()
    assert found["libmpi.so.40"].parent == Path(SYSTEM_LIBS).resolve(), ldd  # the site's MPI

    assert f"{simulations}/{simulations} simulations completed" in output, output
    with xr.open_dataset(tmp_path / "out" / "results.nc") as ds:
        parameters = ds["parameters"].values
        assert parameters.shape == (simulations, 3)
        y = sobol_model_fields(parameters, cells)  # the same at every time step
        expected = {"mean": y.mean(axis=0), "variance": y.var(axis=0, ddof=1),
                    "min": y.min(axis=0), "max": y.max(axis=0)}
        for statistic, values in expected.items():
            got = ds[f"y_{statistic}"].values
            assert got.shape == (steps, cells), (statistic, got.shape)
            np.testing.assert_allclose(got, np.broadcast_to(values, got.shape), rtol=1e-12,
                                       atol=1e-14, err_msg=statistic)
        assert (ds["y_count"].values == simulations).all()
        assert (ds["simulation_status"].values == 0).all()


# -------------------------------------------------------------------------------------------
# Without MPI at all

def test_stats_without_mpi_client_needs_it(fresh: FreshInstall, processes: Processes,
                                           tmp_path: Path) -> None:
    """The kernels need no MPI (the point of libmelissa_stats): melissa.stats imports and
    computes where no libmpi loads; melissa.client, which does need it, says which is missing."""
    script = f"""
cd {tmp_path}
"$PYTHON" -c "$STATS_CHECK"
if "$PYTHON" -c "import melissa.client" 2> client.err; then
  echo "melissa.client imported without libmpi" >&2; exit 97
fi
echo "client-import: $(tail -n 1 client.err)"
"""
    finished = in_namespace(processes, tmp_path, [SYSTEM_ZMQ, SYSTEM_MPI], script,
                            {"PYTHON": str(fresh.python), "STATS_CHECK": STATS_CHECK})
    assert finished.returncode == 0, str(finished)
    hidden = marked(finished.output, "hidden:")
    assert [h for h in hidden if "libmpi.so.40" in h] and [h for h in hidden if "libzmq" in h]
    assert marked(finished.output, "stats-equal-numpy:") == ["yes"], finished.output
    error = marked(finished.output, "client-import:")
    assert error and re.match(r"ImportError: melissa\.client needs MPI.*libmpi\.so\.40",
                              error[0]), finished.output


# -------------------------------------------------------------------------------------------
# Without torch: the [train] extra

def test_training_study_without_torch_names_the_extra(fresh: FreshInstall,
                                                      tmp_path: Path) -> None:
    probe = "import importlib.util as u; print(u.find_spec('torch'), u.find_spec('tensorboard'))"
    assert run([str(fresh.python), "-c", probe], timeout=60).split() == ["None", "None"]
    config = {
        "study_options": {
            "parameter_sweep_size": 4, "nb_parameters": 1, "l_bounds": [0.0],
            "u_bounds": [1.0], "field_names": ["y"], "nb_time_steps": 2,
        },
        "dl_config": {"batch_size": 4, "buffer_size": 16, "per_server_watermark": 4},
        "client_config": {"executable_command": f"{fresh.python} -c pass"},
        "output_dir": "out",
    }
    (tmp_path / "config.json").write_text(json.dumps(config))
    done = subprocess.run([str(fresh.venv / "bin" / "melissa"), "run",
                           str(tmp_path / "config.json")],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path,
                          env={**os.environ, "OMPI_ALLOW_RUN_AS_ROOT": "1",
                               "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"})
    assert done.returncode == 2, f"{done.stdout}\n{done.stderr}"
    assert "pip install 'melissa-intransit[train]'" in done.stderr, done.stderr
    assert not (tmp_path / "out").exists()


def test_wheel_metadata_names_the_distribution_and_its_extras(fresh: FreshInstall) -> None:
    with zipfile.ZipFile(fresh.wheel) as archive:
        metadata = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        fields = re.findall(r"^([\w-]+): (.*)$", archive.read(metadata).decode(), re.MULTILINE)
        licenses = [n for n in archive.namelist() if n.endswith(".dist-info/licenses/LICENSE")]
    values: dict[str, list[str]] = {}
    for key, value in fields:
        values.setdefault(key, []).append(value)
    assert values["Name"] == ["melissa-intransit"]  # PyPI's `melissa` is another project
    assert values["License-Expression"] == ["BSD-3-Clause"] and licenses
    assert values["Author"] and values["Project-URL"] and len(values["Classifier"]) > 5
    # A statistics user downloads no GPU stack: torch comes with the `train` extra only.
    assert "train" in values["Provides-Extra"]
    torch = [r for r in values["Requires-Dist"] if r.startswith(("torch", "tensorboard"))]
    assert torch and all('extra == "train"' in r for r in torch), torch
