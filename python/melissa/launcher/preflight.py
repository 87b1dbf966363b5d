# SPDX-License-Identifier: BSD-3-Clause
"""What the launcher checks before anything starts, so that a study that cannot run stops at
once with a message naming the config key, instead of failing in every simulation."""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

from melissa.config import Config, ConfigError


def resolve_solver(config: Config, config_dir: Path) -> list[str]:
    """The solver's command with its program checked now, before anything starts."""
    argv = config.client_config.argv
    program = argv[0]
    if "/" in program:
        # Not resolve(): a venv's python is a symlink whose target is outside the venv.
        path = Path(os.path.abspath(config_dir / program))
        if not path.is_file():
            raise ConfigError(f"client_config.executable_command: {path} does not exist")
        return [str(path), *argv[1:]]
    if shutil.which(program) is None:
        raise ConfigError(f"client_config.executable_command: '{program}' is not on PATH")
    return argv


# What the training server imports beyond melissa's own dependencies: the `train` extra.
TRAINING_MODULES = ("torch", "tensorboard")


def check_training_modules() -> None:
    """Before anything starts: a training study without PyTorch would fail only once its server
    starts, with an ImportError that does not say what to install."""
    missing = [name for name in TRAINING_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        raise ConfigError(
            f"dl_config: online training needs {' and '.join(missing)}, which melissa installs "
            "with its `train` extra: pip install 'melissa-intransit[train]' (install your "
            "site's PyTorch build first, or PyPI's default, a CUDA build of several GB, comes "
            "with it)")
