# SPDX-License-Identifier: BSD-3-Clause
"""Loopback throughput of melissa's transport, raw ZeroMQ and .npy files, side by side in one run.

For every message size and number of clients it runs, one repeat after the other:
(a) melissa over ZeroMQ, (b) melissa over UCX (where built with it) and (c) raw ZeroMQ moving the
same bytes, over ipc (UCX: shared memory) and over tcp, and (d) a memcpy of those bytes, the bound
of any transport on one host, through the C++ program bench/transport_bench.cpp (one JSON line per
run), then (e) the file-based workflow that melissa replaces: each simulation process np.save()s
its messages as .npy files, then one analysis process np.load()s them all back. It prints
markdown to paste into bench/RESULTS.md, which explains the columns. Run it through
bench/transport_bench.sh, which builds the C++ program:

    bench/transport_bench.sh            # full run, about 5 minutes
    bench/transport_bench.sh --quick    # smoke test, a few seconds
"""

from __future__ import annotations

import argparse
import ctypes
import datetime
import json
import multiprocessing as mp
import os
import platform
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# bench_stats.py lives next to this file: its table printer, CPU description and CPU monitor.
from bench_stats import CpuMonitor, _cpu, print_table

KIB, MIB = 1 << 10, 1 << 20
SIZES = tuple(KIB << (2 * i) for i in range(8))  # 1 KiB, 4 KiB, ... 16 MiB
SMALL = 16 * KIB  # the sizes whose per-message cost is tabulated
TARGET_FROM, TARGET_RATIO = 64 * KIB, 0.8
# Issue 12's goals for UCX: 3x raw ZeroMQ from 256 KiB up on one host, never slower than melissa
# over ZeroMQ, and over tcp at least raw ZeroMQ's rate.
UCX_FROM, UCX_OVER_RAW = 256 * KIB, 3.0
NUMBERS = ("messages", "seconds", "first", "server_cpu", "client_cpu")  # of a run's JSON line


class OwnAndChildrenMonitor(CpuMonitor):
    """CpuMonitor that counts the clients, servers and writers this script started as its own."""

    @staticmethod
    def _sample() -> tuple[float, list[int]]:
        own, jiffies = CpuMonitor._sample()
        times = os.times()  # children: the waited-for descendants, the forked clients included
        return own + times.children_user + times.children_system, jiffies


@dataclass
class Cell:
    size: int
    clients: int
    runs: dict[tuple[str, str], list[dict[str, float]]] = field(default_factory=dict)
    files: list[tuple[float, float, int]] = field(default_factory=list)  # write s, read s, msgs
    noise: str = ""

    def seconds(self, sender: str, link: str, steady: bool = False) -> list[float]:
        """Each run's time; `steady`: from the first delivery on, without the connection."""
        return [run["seconds"] - steady * run["first"] for run in self.runs[(sender, link)]]

    def messages(self, sender: str, link: str, steady: bool = False) -> int:
        return int(self.runs[(sender, link)][0]["messages"]) - steady

    def rate(self, sender: str, link: str, steady: bool = False) -> float:
        """Messages per second, from the median run."""
        return self.messages(sender, link, steady) / statistics.median(
            self.seconds(sender, link, steady)
        )

    def ratios(
        self, link: str, sender: str = "melissa", over: str = "raw", steady: bool = False
    ) -> list[float]:
        """`sender`'s throughput over `over`'s (melissa's over raw ZeroMQ's), within each
        repeat; the memcpy runs once per repeat, whatever the link."""
        theirs = self.seconds(over, "memory" if over == "memcpy" else link, steady)
        ours = self.seconds(sender, link, steady)
        return [t / o for t, o in zip(theirs, ours, strict=True)]

    def paired(
        self, link: str, sender: str = "melissa", over: str = "raw", steady: bool = False
    ) -> float:
        return statistics.median(self.ratios(link, sender, over, steady))

    def cpu_ratio(self, link: str) -> float:
        """raw ZeroMQ's CPU time (clients and server) over melissa's, per repeat, median.

        Far less sensitive than wall time to other processes on the machine: a process's CPU time
        does not count while it waits for a core.
        """
        pairs = zip(self.runs[("raw", link)], self.runs[("melissa", link)], strict=True)
        cpu = [
            (r["client_cpu"] + r["server_cpu"]) / (m["client_cpu"] + m["server_cpu"])
            for r, m in pairs
        ]
        return statistics.median(cpu)

    def spread(
        self, link: str, sender: str = "melissa", over: str = "raw", steady: bool = False
    ) -> str:
        ratios = self.ratios(link, sender, over, steady)
        return f"{min(ratios):.2f} to {max(ratios):.2f}"

    def per_message_us(self, sender: str, link: str, what: str = "seconds") -> float:
        runs = self.runs[(sender, link)]
        return statistics.median(run[what] / run["messages"] for run in runs) * 1e6

    def extra_us(self, link: str) -> float:
        """What melissa adds per message, wall time: the median of the within-repeat differences."""
        pairs = zip(self.runs[("melissa", link)], self.runs[("raw", link)], strict=True)
        return (
            statistics.median(
                (ours["seconds"] - raw["seconds"]) / ours["messages"] for ours, raw in pairs
            )
            * 1e6
        )

    def files_rate(self) -> float:
        return statistics.median(n / (w + r) for w, r, n in self.files)

    def over_files(self) -> float:
        """melissa (ipc) over files, messages per second, paired by repeat (the first ones)."""
        melissa = self.runs[("melissa", "ipc")]
        return statistics.median(
            (run["messages"] / run["seconds"]) / (n / (w + r))
            for run, (w, r, n) in zip(melissa[: len(self.files)], self.files, strict=True)
        )


# --------------------------------------------------------------------------------------------
# The file-based workflow
# --------------------------------------------------------------------------------------------


def _simulation(directory: Path, client: int, size: int, steps: int, start: object) -> None:
    """One simulation of the file-based workflow: saves every time step as its own .npy file."""
    values = client + 1e-6 * np.arange(size // 8, dtype=np.float64)  # ready before the clock
    start.wait()  # type: ignore[attr-defined]
    directory.mkdir(parents=True)
    for step in range(steps):
        np.save(directory / f"step{step:06d}.npy", values)


def files_run(root: Path, size: int, clients: int, messages: int) -> tuple[float, float, int]:
    """K simulation processes write their share of the messages, then the analysis reads them all.

    Returns the seconds of each phase and the number of messages. No fsync, as np.save does none:
    the data may still be in the page cache when it is read back, which favours the files.
    """
    steps = messages // clients
    context = mp.get_context("fork")
    start = context.Barrier(clients + 1)
    writers = [
        context.Process(target=_simulation, args=(root / f"sim{c}", c, size, steps, start))
        for c in range(clients)
    ]
    for writer in writers:
        writer.start()
    start.wait()  # every writer holds its field: process start-up is not timed
    t0 = time.perf_counter()
    for writer in writers:
        writer.join()
    t1 = time.perf_counter()
    if any(writer.exitcode != 0 for writer in writers):
        raise RuntimeError("a file-writing simulation failed")
    read = 0
    for directory in sorted(root.iterdir()):
        for path in sorted(directory.glob("*.npy")):
            read += np.load(path).nbytes
    t2 = time.perf_counter()
    shutil.rmtree(root)
    if read != steps * clients * size:
        raise RuntimeError(f"the analysis read {read} bytes of {steps * clients * size}")
    return t1 - t0, t2 - t1, steps * clients


# --------------------------------------------------------------------------------------------
# Running the matrix
# --------------------------------------------------------------------------------------------


def run_program(program: Path, options: Sequence[str]) -> list[dict[str, float | str]]:
    done = subprocess.run(
        [str(program), *options], capture_output=True, text=True, timeout=600, check=False
    )
    if done.returncode != 0:
        sys.exit(f"{program} {' '.join(options)} failed:\n{done.stderr}")
    return [json.loads(line) for line in done.stdout.splitlines()]


def program_options(
    args: argparse.Namespace, size: int, clients: int, messages: int, *extra: str
) -> list[str]:
    links = ",".join(args.links)
    common = f"--size {size} --clients {clients} --messages {messages} --links {links}".split()
    between = ["--bind", args.bind, "--client-node", str(args.client_node)]
    between = between if args.client_node else []
    return [*common, "--ipc-dir", str(args.ipc_dir), *between, *extra]


def transport_messages(size: int, args: argparse.Namespace) -> int:
    """Messages per run: `volume` bytes, at most `max_messages`, a multiple of 4 clients."""
    messages = min(args.volume * MIB // size, args.max_messages)
    return max(4, messages // 4 * 4)


def measure_cell(size: int, clients: int, args: argparse.Namespace) -> Cell:
    """All repeats of one cell; appends every run's JSON line to args.save if given."""
    cell = Cell(size, clients)
    monitor = OwnAndChildrenMonitor()
    messages = transport_messages(size, args)
    file_messages = max(4, min(messages, args.max_files) // 4 * 4)
    for repeat in range(args.repeats):
        options = program_options(args, size, clients, messages, "--rotate", str(repeat))
        runs = run_program(args.program, options)
        if args.save:
            with open(args.save, "a") as f:
                f.writelines(json.dumps(run) + "\n" for run in runs)
        for run in runs:
            cell.runs.setdefault((str(run["sender"]), str(run["link"])), []).append(
                {k: float(v) for k, v in run.items() if k in NUMBERS}
            )
        if repeat < args.file_repeats:
            cell.files.append(files_run(args.files_dir / "run", size, clients, file_messages))
    cell.noise = monitor.report()
    return cell


def loss_check(args: argparse.Namespace) -> list[list[str]]:
    """How many runs lost messages when the clients close right after their last send."""
    rows = []
    for clients in (1, 4):
        extra = ("--loss-check", "--repeats", str(args.loss_repeats))
        options = program_options(args, KIB, clients, 2000, *extra)
        runs = run_program(args.program, options)
        for link in args.links:
            for sender in ("melissa", "raw"):
                mine = [r for r in runs if r["sender"] == sender and r["link"] == link]
                lossy = [r for r in mine if r["arrived"] != r["messages"]]
                lost = [int(r["messages"]) - int(r["arrived"]) for r in lossy]
                finished = [int(r.get("finished_simulations", clients)) for r in mine]
                unfinished = sum(f < clients for f in finished)
                rows.append(
                    [sender, link, str(clients), f"{len(lossy)} of {len(mine)}"]
                    + [f"{min(lost)} to {max(lost)}" if lost else "-"]
                    + [f"{unfinished} of {len(mine)}" if sender == "melissa" else "n/a"]
                )
    return rows


# --------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------


def _size(size: int) -> str:
    return f"{size // MIB} MiB" if size >= MIB else f"{size // KIB} KiB"


def _gbs(cell: Cell, rate: float) -> str:
    return f"{rate * cell.size / 1e9:.2f}"


def _rate(rate: float) -> str:
    return f"{rate:,.0f}" if rate >= 100 else f"{rate:.3g}"


def throughput_table(cells: list[Cell], with_files: bool) -> None:
    headers = [
        "size",
        "clients",
        "melissa GB/s",
        "melissa msg/s",
        "raw GB/s",
        "raw msg/s",
        "melissa / raw",
        "range",
        "CPU: raw / melissa",
    ]
    if with_files:
        headers += ["files GB/s", "melissa / files"]
    headers.append("CPU to others / stolen")
    rows = []
    for cell in cells:
        ours, raw = cell.rate("melissa", "ipc"), cell.rate("raw", "ipc")
        row = [
            _size(cell.size),
            str(cell.clients),
            _gbs(cell, ours),
            _rate(ours),
            _gbs(cell, raw),
            _rate(raw),
            f"{cell.paired('ipc'):.2f}",
            cell.spread("ipc"),
            f"{cell.cpu_ratio('ipc'):.2f}",
        ]
        if with_files:
            row += [_gbs(cell, cell.files_rate()), f"{cell.over_files():.2f}"]
        row.append(" / ".join(re.findall(r"\d+%", cell.noise)) or "?")
        rows.append(row)
    print_table(headers, rows)


def tcp_table(cells: list[Cell]) -> None:
    with_ipc = all(("melissa", "ipc") in cell.runs for cell in cells)
    headers = ["size", "clients", "melissa GB/s", "raw GB/s", "melissa / raw", "range"]
    headers += ["CPU: raw / melissa"] + (["melissa tcp / ipc"] if with_ipc else [])
    rows = []
    for cell in cells:
        ours, raw = cell.rate("melissa", "tcp"), cell.rate("raw", "tcp")
        row = [
            _size(cell.size),
            str(cell.clients),
            _gbs(cell, ours),
            _gbs(cell, raw),
            f"{cell.paired('tcp'):.2f}",
            cell.spread("tcp"),
            f"{cell.cpu_ratio('tcp'):.2f}",
        ]
        if with_ipc:
            over_ipc = statistics.median(
                ipc / tcp
                for ipc, tcp in zip(
                    cell.seconds("melissa", "ipc"), cell.seconds("melissa", "tcp"), strict=True
                )
            )
            row.append(f"{over_ipc:.2f}")
        rows.append(row)
    print_table(headers, rows)


def ucx_table(cells: list[Cell], link: str) -> None:
    """Rates once connected (from the first delivery on): a simulation connects once and then
    sends for its whole run, and UCX connects slower than ZeroMQ (startup_line). auto: the
    server takes both, and each client what pays (UCX on one host, ZeroMQ over tcp)."""
    senders = ("ucx", "auto", "melissa", "raw")
    headers = ["size", "clients", "ucx GB/s", "auto GB/s", "melissa zmq GB/s", "raw zmq GB/s"]
    headers += ["memcpy GB/s", "ucx / raw", "range", "ucx / melissa zmq", "range"]
    headers += ["auto / melissa zmq", "range", "ucx / memcpy"]
    rows = []
    for cell in cells:
        rates = [cell.rate(s, link, steady=True) for s in senders]
        rows.append(
            [_size(cell.size), str(cell.clients)]
            + [_gbs(cell, r) for r in [*rates, cell.rate("memcpy", "memory")]]
            + [
                text
                for sender, over in (("ucx", "raw"), ("ucx", "melissa"), ("auto", "melissa"))
                for text in (
                    f"{cell.paired(link, sender, over, True):.2f}",
                    cell.spread(link, sender, over, True),
                )
            ]
            + [f"{cell.paired(link, 'ucx', 'memcpy', True):.2f}"]
        )
    print_table(headers, rows)


def ucx_verdict(cells: list[Cell], links: Sequence[str]) -> list[str]:
    def judge(
        goal: str, judged: list[Cell], link: str, sender: str, over: str, target: float
    ) -> str:
        if not judged:
            return f"- {goal}: not judged, no such cell"
        ratios = [c.paired(link, sender, over, True) for c in judged]
        worst = min(judged, key=lambda c: c.paired(link, sender, over, True))
        below = sum(r < target for r in ratios)
        return (
            f"- {goal}: **{'met' if below == 0 else 'NOT met'}**: worst "
            f"{worst.paired(link, sender, over, True):.2f}x (at {_size(worst.size)} with "
            f"{worst.clients} client{'s' * (worst.clients > 1)}), median "
            f"{statistics.median(ratios):.2f}x, {below} of {len(judged)} cells below {target}x"
        )

    lines = []
    if "ipc" in links:
        big = [c for c in cells if c.size >= UCX_FROM]
        goal = f"{UCX_OVER_RAW}x raw ZeroMQ from {_size(UCX_FROM)} up, one host"
        lines.append(judge(f"ucx >= {goal}", big, "ipc", "ucx", "raw", UCX_OVER_RAW))
    for link in links:
        for sender in ("ucx", "auto"):
            goal = f"{sender} >= melissa over ZeroMQ, every size, {link}"
            lines.append(judge(goal, cells, link, sender, "melissa", 1.0))
    if "tcp" in links:
        for sender in ("ucx", "auto"):
            goal = f"{sender} >= raw ZeroMQ over tcp, every size"
            lines.append(judge(goal, cells, "tcp", sender, "raw", 1.0))
    return lines


def cost_table(cells: list[Cell], link: str) -> None:
    headers = [
        "size",
        "clients",
        "melissa",
        "raw",
        "melissa - raw",
        "melissa CPU",
        "raw CPU",
        "CPU melissa - raw",
    ]
    rows = []
    for cell in cells:
        if cell.size > SMALL:
            continue
        cpu = {
            s: [cell.per_message_us(s, link, w) for w in ("client_cpu", "server_cpu")]
            for s in ("melissa", "raw")
        }
        rows.append(
            [_size(cell.size), str(cell.clients)]
            + [f"{cell.per_message_us(s, link):.2f}" for s in ("melissa", "raw")]
            + [f"{cell.extra_us(link):+.2f}"]
            + [f"{cpu[s][0]:.2f} + {cpu[s][1]:.2f}" for s in ("melissa", "raw")]
            + [f"{sum(cpu['melissa']) - sum(cpu['raw']):+.2f}"]
        )
    print_table(headers, rows)


def startup_line(cells: list[Cell], link: str, senders: Sequence[str] = ("melissa", "raw")) -> str:
    """The time from the release to the first delivery, median over all runs of each sender."""
    names = {"melissa": "melissa", "ucx": "melissa over UCX", "auto": "auto", "raw": "raw ZeroMQ"}
    medians = {
        s: statistics.median(r["first"] for c in cells for r in c.runs[(s, link)]) for s in senders
    }
    first = [f"{names[s]} {medians[s] * 1e3:.1f} ms" for s in senders]
    return (
        f"Time from the release to the first delivery over {link}, median over all runs: "
        f"{', '.join(first)} (melissa: handshake, then connection); it is part of every run's "
        "time, but not of the UCX tables' rates."
    )


def verdict(cells: list[Cell], links: Sequence[str]) -> list[str]:
    judged = [c for c in cells if c.size >= TARGET_FROM]
    if not judged:
        return [f"- target not judged: no message size of {_size(TARGET_FROM)} or more"]
    lines = []
    for link in links:
        ratios = [c.paired(link) for c in judged]
        worst = min(judged, key=lambda c: c.paired(link))
        below = sum(r < TARGET_RATIO for r in ratios)
        ok = below == 0
        lines.append(
            f"- melissa >= {TARGET_RATIO}x raw ZeroMQ from {_size(TARGET_FROM)} up, over {link}: "
            f"**{'met' if ok else 'NOT met'}**: worst {worst.paired(link):.2f}x (at "
            f"{_size(worst.size)} with {worst.clients} client{'s' * (worst.clients > 1)}), "
            f"median {statistics.median(ratios):.2f}x, {below} of {len(ratios)} cells below "
            f"{TARGET_RATIO}x"
        )
        cpu = [c.cpu_ratio(link) for c in judged]
        least = min(judged, key=lambda c: c.cpu_ratio(link))
        lines.append(
            f"  - CPU time per message, raw over melissa, over {link}: lowest "
            f"{least.cpu_ratio(link):.2f} (at {_size(least.size)} with {least.clients} "
            f"client{'s' * (least.clients > 1)}), median {statistics.median(cpu):.2f}, "
            f"{sum(r < TARGET_RATIO for r in cpu)} of {len(cpu)} cells below {TARGET_RATIO}"
        )
    return lines


def _zmq_version() -> str:
    try:
        lib = ctypes.CDLL("libzmq.so.5")
    except OSError:
        return "?"
    major, minor, patch = ctypes.c_int(), ctypes.c_int(), ctypes.c_int()
    lib.zmq_version(ctypes.byref(major), ctypes.byref(minor), ctypes.byref(patch))
    return f"{major.value}.{minor.value}.{patch.value}"


def _filesystem(path: Path) -> str:
    """The device and type of the file system holding `path`, from /proc/mounts."""
    path, best = path.resolve(), ("?", "?", "")
    try:
        with open("/proc/mounts") as f:
            for line in f:
                device, mount, kind = line.split()[:3]
                if path.is_relative_to(mount) and len(mount) >= len(best[2]):
                    best = (device, kind, mount)
    except OSError:
        pass
    return f"{best[1]} on {best[0]} (mounted at {best[2]})"


def header(args: argparse.Namespace, argv: Sequence[str]) -> None:
    now = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    print(f"## Transport throughput: the output of one {'quick' if args.quick else 'full'} run\n")
    print(f"- date: {now}")
    print(f"- machine: {_cpu()}, {os.cpu_count()} CPUs, Linux {platform.release()}")
    print(f"- libzmq {_zmq_version()}, numpy {np.__version__}, Python {platform.python_version()}")
    print(f"- command: `{shlex.join(['bench/transport_bench.sh', *argv])}`")
    print(
        f"- files written under {args.files_dir} ({_filesystem(args.files_dir)}); Unix sockets "
        f"in {args.ipc_dir}"
    )
    print(
        f"- repeats per cell: {args.repeats} ({args.file_repeats} for the files); medians; ratios "
        "paired within a repeat\n"
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--program", type=Path, required=True, help="the built transport_bench")
    parser.add_argument("--quick", action="store_true", help="a smoke test of a few seconds")
    parser.add_argument("--sizes", type=int, nargs="+", help="message sizes in bytes")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--links", nargs="+", default=["ipc", "tcp"], choices=["ipc", "tcp"])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--volume", type=int, default=256, help="MiB per run (default 256)")
    parser.add_argument("--max-messages", type=int, default=20000, help="per run")
    parser.add_argument("--max-files", type=int, default=500, help="per run of the files")
    parser.add_argument("--file-repeats", type=int, default=3, help="0 skips the files")
    parser.add_argument("--loss-repeats", type=int, default=5, help="0 skips the loss check")
    parser.add_argument("--files-dir", type=Path, help="default: next to the program")
    parser.add_argument("--ipc-dir", type=Path, default=Path("/tmp"))
    parser.add_argument("--save", type=Path, help="also write every run's JSON line there")
    parser.add_argument(
        "--client-node",
        type=int,
        default=0,
        help="the pid of a process in "
        "another node's namespaces (tools/virtual-cluster), which the clients "
        "join: the servers, here, listen on --bind",
    )
    parser.add_argument(
        "--bind", default="127.0.0.1", help="with --client-node: this node's address"
    )
    given = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(given)
    if "ipc" not in args.links and not args.client_node:
        parser.error("--links must include ipc: the main table and the target are over ipc")
    if args.client_node:  # between nodes: tcp, nothing else reaches
        args.links, args.file_repeats, args.loss_repeats = ["tcp"], 0, 0
    if args.quick:
        args.sizes = args.sizes or [KIB, 64 * KIB, MIB]
        args.clients, args.repeats, args.file_repeats, args.loss_repeats = [1, 2], 1, 1, 1
        args.volume, args.max_messages, args.max_files = 16, 2000, 200
    args.sizes = args.sizes or list(SIZES)
    args.files_dir = (args.files_dir or args.program.parent / "files").resolve()
    if args.files_dir.exists():
        shutil.rmtree(args.files_dir)
    args.files_dir.mkdir(parents=True)
    if args.save:
        args.save.write_text("")
    shown = [a for a in given if not a.startswith("--program") and a != str(args.program)]

    started = time.perf_counter()
    cells = [measure_cell(s, k, args) for s in args.sizes for k in args.clients]
    losses = loss_check(args) if args.loss_repeats > 0 else []
    shutil.rmtree(args.files_dir)

    header(args, shown)
    if "ipc" in args.links:
        print("### melissa, raw ZeroMQ and files (ipc: the link melissa picks on one host)\n")
        throughput_table(cells, with_files=args.file_repeats > 0)
        print("\n".join(verdict(cells, args.links)) + "\n")
        print(
            "### Per-message cost of small messages (ipc; us per message, all clients together)\n"
        )
        cost_table(cells, "ipc")
        print(startup_line(cells, "ipc") + "\n")
    where = f"between nodes ({args.bind})" if args.client_node else "loopback"
    if "tcp" in args.links:
        print(f"### Over tcp {where} (MELISSA_TRANSPORT=tcp)\n")
        tcp_table(cells)
    if all(("ucx", "tcp") in cell.runs for cell in cells):
        if "ipc" in args.links:
            print("### UCX against ZeroMQ and a memcpy (ipc: UCX over shared memory)\n")
            ucx_table(cells, "ipc")
        if "tcp" in args.links:
            print(f"\n#### UCX over tcp {where} (MELISSA_TRANSPORT=tcp: UCX_TLS=tcp)\n")
            ucx_table(cells, "tcp")
        print("\n" + "\n".join(ucx_verdict(cells, args.links)) + "\n")
        for link in args.links:
            print(startup_line(cells, link, ("ucx", "auto", "melissa", "raw")) + "\n")
    if losses:
        print(
            "### Messages lost when a client closes right after its last send (1 KiB, 2000 "
            "messages per run)\n"
        )
        print_table(
            [
                "sender",
                "link",
                "clients",
                "runs that lost messages",
                "messages lost",
                "simulations never seen finished",
            ],
            losses,
        )
    print(f"Measured in {time.perf_counter() - started:.0f} s.")


if __name__ == "__main__":
    main()
