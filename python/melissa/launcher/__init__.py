# SPDX-License-Identifier: BSD-3-Clause
"""The study launcher: `melissa run CONFIG`."""

from melissa.launcher.study import Outcome, StudyError, StudyRun, run_study

__all__ = ["Outcome", "StudyError", "StudyRun", "run_study"]
