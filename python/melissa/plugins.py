# SPDX-License-Identifier: BSD-3-Clause
"""The user's own classes, named 'module:Class' in a config (a training server, a sampler)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import TypeVar

Base = TypeVar("Base")


def load_class(name: str, config_dir: Path, base: type[Base]) -> type[Base]:
    """The class `name` ('module:Class'), a subclass of `base`. The module is looked for next to
    the config first, as a user keeps it beside the config that names it."""
    module_name, _, class_name = name.partition(":")
    if not class_name:
        raise ValueError(f"must be 'module:Class', got {name!r}")
    sys.path.insert(0, str(config_dir))
    cls = getattr(importlib.import_module(module_name), class_name)
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise TypeError(f"{name} is not a subclass of {base.__module__}.{base.__qualname__}")
    return cls
