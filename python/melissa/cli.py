# SPDX-License-Identifier: BSD-3-Clause
"""The `melissa` command (also `python -m melissa`, and `melissa-launcher --config_name`).

    melissa [-v | -q] run CONFIG [--overwrite | --resume]   run a study
    melissa schema                     print the config's JSON Schema
    melissa plot OUTPUT_DIR [--fields F,G] [--steps 10,-1] [--cells 220,5 | --at y=10,x=10]
                                       render the results as PNG figures
    melissa --cmakedir                 where find_package(Melissa) looks
    melissa --pkgconfigdir             where melissa.pc lies
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
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


def _run(config: Path, overwrite: bool, resume: bool) -> int:
    from melissa.config import ConfigError
    from melissa.launcher import StudyError, run_study

    # A SIGTERM (a batch system's, a `kill`) stops the study as Ctrl-C does: the simulations
    # are stopped and the server writes what completed.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        outcome = run_study(config, overwrite=overwrite, resume=resume)
    except ConfigError as error:
        print(f"melissa: {error}", file=sys.stderr)
        return 2
    except StudyError as error:
        print(f"melissa: the study stopped: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("melissa: interrupted; the results of the simulations that completed were kept",
              file=sys.stderr)
        return 130
    total = len(outcome.completed) + len(outcome.failed) + len(outcome.not_run)
    print(f"Study done in {outcome.seconds:.1f} s: {len(outcome.completed)}/{total} simulations "
          f"completed, {len(outcome.failed)} failed"
          + (f" ({', '.join(map(str, outcome.failed))})" if outcome.failed else "")
          + (f", {len(outcome.not_run)} not run" if outcome.not_run else "") + ".")
    for sim, reason in outcome.reasons.items():
        print(f"  simulation {sim} failed: {reason}")
    if outcome.redrawn_groups:
        print(f"Sobol groups redrawn in place of groups that lost a member: "
              f"{outcome.redrawn_groups} (their {len(outcome.dropped)} other C runs were "
              "stopped and are marked dropped)")
    if outcome.server_restarts:
        print(f"The server was restarted {outcome.server_restarts} time(s) from its checkpoints.")
    if outcome.sobol is not None:
        print("\n".join(outcome.sobol.lines()))
    if outcome.results is not None:
        print(f"Results: {outcome.results}")
    if outcome.losses:
        print("Final losses: " + ", ".join(f"{k} {v:.3g}" for k, v in outcome.losses.items()))
    # Groups left out once the intervals met sobol_ci_target were not needed.
    unneeded = outcome.sobol is not None and outcome.sobol.stop == "target"
    return 0 if not outcome.failed and (not outcome.not_run or unneeded) else 1


def _plot(args: argparse.Namespace) -> int:
    from melissa.plots import plot_study

    try:
        figures = plot_study(args.output_dir, fields=args.fields, steps=args.steps,
                             cells=[*(args.cells or []), *(args.at or [])] or None)
    except (FileNotFoundError, ValueError) as error:
        print(f"melissa: {error}", file=sys.stderr)
        return 2
    for figure in figures:
        print(figure)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="melissa", description=melissa.__doc__)
    parser.add_argument("--version", action="version", version=f"melissa {melissa.__version__}")
    parser.add_argument("--cmakedir", action="store_true",
                        help="print the directory of the CMake package (MelissaConfig.cmake)")
    parser.add_argument("--pkgconfigdir", action="store_true",
                        help="print the directory of the pkg-config file melissa.pc")
    verbosity = parser.add_mutually_exclusive_group()
    verbosity.add_argument("-v", "--verbose", action="store_true",
                           help="print every event of logs/launcher.log too")
    verbosity.add_argument("-q", "--quiet", action="store_true",
                           help="print errors only, no progress")
    commands = parser.add_subparsers(dest="command")
    run = commands.add_parser("run", help="run the study of a config file")
    run.add_argument("config", type=Path)
    run.add_argument("--overwrite", action="store_true",
                     help="replace the results of an earlier study in the same output_dir")
    run.add_argument("--resume", action="store_true",
                     help="continue a study, of statistics or training, from its last "
                     "checkpoint, running only the simulations it does not hold whole")
    commands.add_parser("schema", help="print the JSON Schema of a config")
    plot = commands.add_parser(
        "plot", help="render a study's results as PNG figures",
        description="Writes PNG figures into OUTPUT_DIR/plots: for each field, its statistics "
        "over time at a few cells and, for a field of two dimensions, maps of its mean, "
        "standard deviation and Sobol indices; for a training study, the losses and "
        "held-out predictions.")
    plot.add_argument("output_dir", type=Path)
    plot.add_argument("--fields", type=_words, metavar="F,G",
                      help="the fields to plot (default: every field)")
    plot.add_argument("--steps", type=_integers, metavar="N,M",
                      help="time steps of the maps, by index, negative from the end, e.g. "
                      "10,50,-1 (default: the last)")
    plot.add_argument("--cells", type=_integers, metavar="N,M",
                      help="cells of the time series by flat index (C order), e.g. 220,5 "
                      "(default: where the ensemble varies most at the last time step)")
    plot.add_argument("--at", type=_point, action="append", metavar="DIM=I,...",
                      help="a cell of the time series by its index along each dimension, "
                      "e.g. y=10,x=10; may be repeated, and combined with --cells")
    args = parser.parse_args(argv)
    try:
        return _command(parser, args)
    except BrokenPipeError:
        # A reader that left early (`melissa schema | head`): nothing more to say to it, and
        # Python's flush of stdout at exit must not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _command(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    if args.cmakedir or args.pkgconfigdir:
        return _print_dir(cmake_dir() if args.cmakedir else pkgconfig_dir())
    # The console gets progress, warnings and errors (-q: errors; -v: everything); every event
    # goes to logs/launcher.log.
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    if args.quiet:
        console.setLevel(logging.ERROR)
    elif not args.verbose:
        console.addFilter(lambda record: record.levelno >= logging.WARNING
                          or record.name == "melissa.progress")
    logging.basicConfig(level=logging.INFO, handlers=[console])
    if args.command == "run":
        return _run(args.config, args.overwrite, args.resume)
    if args.command == "schema":
        from melissa.config import schema

        print(json.dumps(schema(), indent=2))
        return 0
    if args.command == "plot":
        return _plot(args)
    parser.print_help()
    return 2


def _words(text: str) -> list[str]:
    words = [w.strip() for w in text.split(",") if w.strip()]
    if not words:
        raise argparse.ArgumentTypeError("expected comma-separated names")
    return words


def _integers(text: str) -> list[int]:
    try:
        return [int(w) for w in _words(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") \
            from None


def _point(text: str) -> dict[str, int]:
    point = {}
    for word in _words(text):
        name, _, index = word.partition("=")
        try:
            point[name.strip()] = int(index)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected DIM=INDEX pairs such as y=10,x=10, got "
                                             f"{text!r}") from None
    return point


def launcher_main(argv: list[str] | None = None) -> int:
    """`melissa-launcher --config_name CONFIG`: the command Melissa users know."""
    parser = argparse.ArgumentParser(prog="melissa-launcher",
                                     description="Run the study of a config file.")
    parser.add_argument("--config_name", "-c", type=Path, required=True)
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    return main(["run", str(args.config_name), *(["--overwrite"] if args.overwrite else [])])
