# SPDX-License-Identifier: BSD-3-Clause
"""The transport between real processes: C, Fortran and Python solvers of 1 to 4 MPI ranks,
started with mpirun, streaming to a server of 1 to 3 ranks (tests/programs/collect_server.py,
also under mpirun). Each server rank checks every value it is handed against the solvers'
formula, and that it owns the cells; here the test checks that every time step arrived exactly
once at the rank it is routed to, and that every simulation is finished on every rank. Then the
failure paths: refused clients, messages that are not a client's, no server, a dead server.
Every test runs on each data transport this build has: ZeroMQ, and UCX.

The in-process tests of tests/cpp/test_transport.cpp cover the receiver's logic in detail; these
cover what only real processes show: MPI communicators of real solvers, the Fortran and Python
bindings, the environment, ipc and tcp between processes, and processes that die.
"""

from __future__ import annotations

import json
import socket
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pytest
from conftest import PROGRAMS, Processes, mpirun

from melissa import _core

FIELDS = ("temperature", "pressure")

# A failed melissa call makes a test solver exit with 10 + the error code (melissa_api.h).
ERR_ENVIRONMENT, ERR_TIMEOUT, ERR_REJECTED = 11, 14, 15


@pytest.fixture(autouse=True, params=[
    "zmq",
    *(pytest.param(name, marks=pytest.mark.skipif("ucx" not in _core.transports(),
                                                  reason="built without UCX (libucx-dev)"))
      for name in ("ucx", "auto")),
])
def transport(request: pytest.FixtureRequest, processes: Processes) -> str:
    """What carries the data of the servers the test starts ("auto": UCX for a client on the
    server's host, ZeroMQ for one that MELISSA_TRANSPORT=tcp keeps to tcp)."""
    processes.transport = request.param
    return str(request.param)


@dataclass(frozen=True)
class Simulation:
    """One run of a test solver: which one, and the cells of each of its MPI ranks."""

    program: str  # a key of the test_programs fixture
    cells: tuple[int, ...]
    simulation: int = 0
    steps: int = 3
    mpi: bool = True  # False: one process, no mpirun, melissa_init_no_mpi
    float32: bool = False
    env: dict[str, str] = field(default_factory=dict)

    def argv(self, programs: dict[str, list[str]], fields: tuple[str, ...]) -> list[str]:
        argv = [*programs[self.program], ",".join(fields), str(self.steps),
                ",".join(map(str, self.cells))]
        if self.float32:
            argv.append("--float")
        if not self.mpi and self.program != "c_serial":  # c_serial has no MPI at all
            argv.append("--no-mpi")
        return mpirun(len(self.cells) if self.mpi else 0, argv)


@dataclass(frozen=True)
class Scenario:
    """A server run: its ranks and routing, and the simulations that stream to it."""

    server_ranks: int
    simulations: tuple[Simulation, ...]
    routing: str = "cells"
    fields: tuple[str, ...] = FIELDS
    concurrent: bool = False  # the simulations run at once, or one after the other
    deadline: float = 30  # the server's, in seconds
    # The server is told the fields' sizes and the time steps (those of the first simulation):
    # it then counts a simulation finished from what it holds, not from what the client says.
    declared: bool = False

    def declarations(self) -> dict[str, Any]:
        """start_server's keywords for what the study declares."""
        if not self.declared:
            return {}
        first = self.simulations[0]
        return {"field_sizes": [sum(first.cells)] * len(self.fields),
                "nb_time_steps": first.steps}


def routed_steps(routing: str, rank: int, n_ranks: int, size: int, run: Simulation) -> list[int]:
    """The time steps of each field of `run` that server rank `rank` must be handed."""
    steps = range(run.steps)
    if routing == "cells":
        owns_cells = size * (rank + 1) // n_ranks > size * rank // n_ranks
        return list(steps) if owns_cells else []
    if routing == "whole_by_simulation":
        return list(steps) if run.simulation % n_ranks == rank else []
    return [t for t in steps if t % n_ranks == rank]


def check_reports(scenario: Scenario, reports: list[dict[str, Any]],
                  dropped: list[dict[str, int]] | None = None) -> None:
    """Every time step of every simulation arrived exactly once, at the ranks it is routed to,
    with the value type it was sent in; every rank knows every simulation finished; nothing was
    dropped (but `dropped`, the count by reason expected on each rank, by rank)."""
    size = sum(scenario.simulations[0].cells)
    for report in reports:
        rank = report["rank"]
        where = f"server rank {rank} of {scenario.server_ranks}"
        assert report["n_errors"] == 0, f"{where}:\n" + "\n".join(report["errors"])
        expected_received, expected_dtypes, expected_steps = {}, {}, Counter[str]()
        for run in scenario.simulations:
            steps = routed_steps(scenario.routing, rank, scenario.server_ranks, size, run)
            for f in range(len(scenario.fields)):
                if steps:
                    key = f"{run.simulation}/{f}"
                    expected_received[key] = steps
                    expected_dtypes[key] = ["float32" if run.float32 else "float64"]
                    expected_steps[str(run.simulation)] += len(steps)
        assert report["received"] == expected_received, (
            f"{where}: time steps received by 'simulation/field' differ from those routed to it")
        assert report["dtypes"] == expected_dtypes, f"{where}: value types"
        expected_finished = sorted(run.simulation for run in scenario.simulations)
        assert not report["timed_out"] and report["finished"] == expected_finished, (
            f"{where}: finished simulations {report['finished']}, expected {expected_finished}")
        assert report["field_sizes"] == {str(f): size for f in range(len(scenario.fields))}
        counters = report["counters"]
        assert counters["dropped"] == (dropped[rank] if dropped else {}), \
            f"{where}: dropped messages"
        assert {sim: c["time_steps"] for sim, c in counters["simulations"].items()} == \
            dict(expected_steps), f"{where}: per-simulation counters"
    if scenario.routing == "cells":
        # Each rank's share was checked by the rank; together the shares must tile the field.
        for f in range(len(scenario.fields)):
            shares = sorted(tuple(r) for report in reports
                            for r in report["ranges"].get(str(f), []))
            ends = [0] + [offset + count for offset, count in shares]
            assert [offset for offset, _ in shares] == ends[:-1] and ends[-1] == size, (
                f"field {f}: the server ranks' shares {shares} do not tile [0, {size})")


def run_scenario(processes: Processes, programs: dict[str, list[str]],
                 scenario: Scenario) -> list[dict[str, Any]]:
    """Starts the server, runs every simulation against it (each must succeed), and returns the
    server ranks' reports after checking them."""
    server = processes.start_server(
        scenario.server_ranks, scenario.fields, [s.simulation for s in scenario.simulations],
        routing=scenario.routing, deadline=scenario.deadline, **scenario.declarations())
    launched = []
    for run in scenario.simulations:
        env = {**server.client_env(run.simulation), **run.env}
        if scenario.concurrent:
            launched.append(processes.start(run.argv(programs, scenario.fields), env))
        else:
            finished = processes.run(run.argv(programs, scenario.fields), env)
            assert finished.returncode == 0, str(finished)
    for process in launched:
        finished = processes.wait(process, 60)
        assert finished.returncode == 0, str(finished)
    reports = server.reports()
    check_reports(scenario, reports)
    return reports


C, SERIAL, F_MPI, F_08, PY = "c", "c_serial", "fortran_mpi", "fortran_f08", "python"

SCENARIOS = {
    # N client ranks x M server ranks; uneven slices, some client rank without cells.
    "c-1x1": Scenario(1, (Simulation(C, (7,)),)),
    "c-2x3": Scenario(3, (Simulation(C, (5, 9), simulation=2),)),
    "c-4x2-tcp": Scenario(2, (Simulation(C, (4, 0, 6, 3), env={"MELISSA_TRANSPORT": "tcp"}),)),
    "c-3x3-float32": Scenario(3, (Simulation(C, (0, 8, 5), float32=True),)),
    "c-no-mpi-1x2": Scenario(2, (Simulation(SERIAL, (10,), mpi=False),)),
    "fortran-mpi-2x2": Scenario(2, (Simulation(F_MPI, (6, 3)),)),
    "fortran-f08-3x1": Scenario(1, (Simulation(F_08, (2, 0, 5)),)),
    "fortran-f08-2x2-float32": Scenario(2, (Simulation(F_08, (1, 6), float32=True),)),
    "python-2x3": Scenario(3, (Simulation(PY, (4, 7)),)),
    "python-2x3-float32": Scenario(3, (Simulation(PY, (7, 0), float32=True),)),
    "python-no-mpi-1x2": Scenario(2, (Simulation(PY, (9,), mpi=False),)),
    "python-no-mpi-1x2-float32": Scenario(2, (Simulation(PY, (9,), mpi=False, float32=True),)),
    # Several simulations in one server run, each cutting the same field its own way.
    "three-in-turn": Scenario(2, (
        Simulation(C, (4, 3, 5), simulation=0),
        Simulation(F_08, (12,), simulation=1),
        Simulation(PY, (6, 6), simulation=2),
    )),
    "three-at-once": Scenario(3, (
        Simulation(C, (5, 4), simulation=3),
        Simulation(C, (0, 9), simulation=4),
        Simulation(C, (9, 0), simulation=5),
    ), concurrent=True),
    # Whole fields: sims 0 and 3 go to rank 0, 1 to rank 1, none to rank 2, which must still
    # know them finished.
    "whole-by-simulation-3": Scenario(3, (
        Simulation(C, (3, 5), simulation=0),
        Simulation(F_MPI, (3, 5), simulation=1),
        Simulation(SERIAL, (8,), simulation=3, mpi=False),
    ), routing="whole_by_simulation"),
    "whole-by-time-step-2": Scenario(2, (
        Simulation(C, (2, 0, 4), simulation=6, steps=5),
        Simulation(PY, (6,), simulation=7, steps=4, mpi=False),
    ), routing="whole_by_time_step", concurrent=True),
    "whole-by-time-step-3": Scenario(3, (
        Simulation(F_08, (4, 4), simulation=8, steps=5),
    ), routing="whole_by_time_step"),
    # A field of fewer cells than server ranks: server rank 0 owns none of its cells, so it
    # must count the simulation finished on its END alone, with no time step routed to it.
    "c-tiny-field-1x3": Scenario(3, (Simulation(SERIAL, (2,), mpi=False),), deadline=5),
    # Many 1 KiB messages over Unix sockets, finalize right after the last: closing a ZeroMQ
    # ipc connection drops what it still queues (libzmq#4660), so finalize must wait for the
    # server to confirm it holds everything. Without that, every such run lost its tail.
    "small-messages-ipc-finalize": Scenario(1, tuple(
        Simulation(SERIAL, (128,), simulation=k, steps=1500, mpi=False) for k in range(4)),
        concurrent=True),
    # Declared sizes and time steps: each rank finishes a simulation on what it owns of every
    # field, under each routing, including none at all.
    "declared-c-tiny-field-1x3": Scenario(3, (Simulation(SERIAL, (2,), mpi=False),),
                                          deadline=5, declared=True),
    "declared-whole-by-simulation-3": Scenario(3, (
        Simulation(C, (3, 5), simulation=0),
        Simulation(PY, (8,), simulation=4, mpi=False),
    ), routing="whole_by_simulation", declared=True),
    "declared-whole-by-time-step-2": Scenario(2, (
        Simulation(F_08, (4, 4), simulation=8, steps=5),
        Simulation(C, (6, 2), simulation=9, steps=5),
    ), routing="whole_by_time_step", concurrent=True, declared=True),
}


@pytest.mark.parametrize("scenario", SCENARIOS.values(), ids=SCENARIOS.keys())
def test_every_value_arrives_once(processes: Processes, test_programs: dict[str, list[str]],
                                  scenario: Scenario) -> None:
    run_scenario(processes, test_programs, scenario)


@pytest.mark.parametrize("declared", [False, True], ids=["undeclared", "declared"])
def test_rogue_messages(processes: Processes, test_programs: dict[str, list[str]],
                        transport: str, declared: bool) -> None:
    """A peer without the study token gets nothing through and costs nothing; messages that are
    not a client's, from a peer with the token, are dropped and counted, a frame larger than any
    field makes the server hang up before it allocates it, a field too large for memory costs a
    drop; meanwhile a good client gets everything through. Declared or not, the fields' sizes
    bound what is taken."""
    if transport == "ucx":
        pytest.skip("raw ZeroMQ frames; UCX's rogue peers are in tests/cpp/test_transport.cpp")
    good = Simulation(C, (5, 4), simulation=1)
    scenario = Scenario(2, (good,), declared=declared)
    server = processes.start_server(2, FIELDS, [good.simulation], **scenario.declarations())

    rogue = processes.run([sys.executable, str(PROGRAMS / "rogue_sender.py"),
                           str(server.address_file), f"{server.token:016x}"], timeout=60)
    assert rogue.returncode == 0, str(rogue)
    sent = json.loads(rogue.output)
    for rank, frame in enumerate(sent["oversized"]):
        assert frame["hung_up"] and frame["sent"] < 64 << 20, (
            f"server rank {rank} took {frame['sent']} bytes of a frame announced as 2 GiB")

    finished = processes.run(good.argv(test_programs, FIELDS), server.client_env(1))
    assert finished.returncode == 0, str(finished)
    reports = server.reports()
    check_reports(scenario, reports, [dict(Counter(reasons)) for reasons in sent["dropped"]])
    for report in reports:
        grown = report["peak_rss_kb"] - report["rss_at_start_kb"]
        assert grown < 64 << 10, f"server rank {report['rank']} grew by {grown} kB"


def test_refused_clients(processes: Processes, test_programs: dict[str, list[str]]) -> None:
    """Clients of another study, or with a field the study lacks, are refused, and nothing of
    theirs counts; meanwhile a good client gets everything through."""
    good = Simulation(C, (5, 4), simulation=1)
    scenario = Scenario(2, (good,))
    server = processes.start_server(2, FIELDS, [good.simulation])

    other_study = Simulation(C, (5, 4), simulation=7)
    refused = processes.run(other_study.argv(test_programs, FIELDS),
                            server.client_env(7, token=server.token ^ 0xFF))
    assert refused.returncode == ERR_REJECTED, str(refused)
    assert "wrong study token" in refused.output, str(refused)

    # The first field is accepted, the second refused; same cells as `good`, since the server
    # keeps the size the accepted handshake gave.
    unknown = Simulation(PY, (9,), simulation=8, mpi=False)
    refused = processes.run(unknown.argv(test_programs, ("temperature", "humidity")),
                            server.client_env(8))
    assert refused.returncode == ERR_REJECTED, str(refused)
    assert "unknown field 'humidity'" in refused.output, str(refused)

    finished = processes.run(good.argv(test_programs, FIELDS), server.client_env(1))
    assert finished.returncode == 0, str(finished)
    reports = server.reports()
    check_reports(scenario, reports)
    assert reports[0]["counters"]["rejected_handshakes"] == 2
    # The good client's two fields, and the first field of the one with an unknown field.
    assert reports[0]["counters"]["handshakes"] == 3


@pytest.mark.parametrize(("program", "ranks"), [(C, 2), (F_08, 1), (PY, 0)])
def test_no_server_configured(processes: Processes, test_programs: dict[str, list[str]],
                              program: str, ranks: int) -> None:
    run = Simulation(program, (3,) * max(ranks, 1), mpi=ranks > 0)
    env = {"MELISSA_SIMULATION_ID": "0", "MELISSA_STUDY_TOKEN": "abc", "MELISSA_TIMEOUT": "30"}
    finished = processes.run(run.argv(test_programs, FIELDS), env, timeout=30)
    assert finished.returncode == ERR_ENVIRONMENT, str(finished)
    assert "MELISSA_SERVER_ADDRESS is not set" in finished.output, str(finished)
    # At once: nothing to wait for, certainly not MELISSA_TIMEOUT.
    assert finished.seconds < 10, str(finished)


def closed_port() -> int:
    """A local TCP port where nothing listens (bound, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_server_never_started(processes: Processes, test_programs: dict[str, list[str]]) -> None:
    run = Simulation(C, (3, 4))
    env = {"MELISSA_SERVER_ADDRESS": f"tcp://127.0.0.1:{closed_port()}",
           "MELISSA_SIMULATION_ID": "0", "MELISSA_STUDY_TOKEN": "abc", "MELISSA_TIMEOUT": "1"}
    finished = processes.run(run.argv(test_programs, FIELDS), env, timeout=30)
    assert finished.returncode == ERR_TIMEOUT, str(finished)
    assert "no answer from the server" in finished.output, str(finished)
    # MELISSA_TIMEOUT, plus mpirun's start and its ~1 s to end a job whose ranks failed.
    assert finished.seconds < 6, str(finished)


def test_server_killed_mid_run(processes: Processes, test_programs: dict[str, list[str]]) -> None:
    """A client whose server dies fails within its timeout instead of hanging in a send."""
    timeout = 1.0
    server = processes.start_server(2, FIELDS, [0])
    run = Simulation(C, (4, 5), steps=99)  # 99 steps 50 ms apart: 5 s, if nothing stops it
    client = processes.start([*run.argv(test_programs, FIELDS), "--sleep-ms", "50"],
                             server.client_env(0, timeout=timeout))
    give_up = time.monotonic() + 30
    while not (server.run_dir / "first-delivery.0").exists():
        assert client.poll() is None, "the client ended before the server received anything"
        assert time.monotonic() < give_up, "the server received nothing in 30 s"
        time.sleep(0.02)
    processes.kill(server.process)
    killed = time.monotonic()
    finished = processes.wait(client, 30)
    assert finished.returncode == ERR_TIMEOUT, str(finished)
    assert "took no data" in finished.output, str(finished)
    # The send that finds no server fails after `timeout`; mpirun then takes about 1 s to end a
    # job one of whose ranks failed.
    assert time.monotonic() - killed < timeout + 3, str(finished)


def test_client_killed_mid_run(processes: Processes, test_programs: dict[str, list[str]],
                               transport: str) -> None:
    """A client killed while it streams large fields costs its server nothing but its data: the
    next simulation gets everything through. Over UCX on one host, with a tcp lane among the
    shared-memory ones, the server rank aborted in UCX 1.13 (ucp_rndv_receive) in half the runs."""
    server = processes.start_server(2, FIELDS, [1], deadline=60)
    dying = Simulation(C, (1 << 17, 1 << 17), steps=2000)  # 2 MiB per field and time step
    client = processes.start([*dying.argv(test_programs, FIELDS), "--sleep-ms", "1"],
                             server.client_env(0))
    give_up = time.monotonic() + 30
    while not (server.run_dir / "first-delivery.1").exists():
        assert client.poll() is None, "the client ended before the server received anything"
        assert time.monotonic() < give_up, "the server received nothing in 30 s"
        time.sleep(0.02)
    time.sleep(0.2)  # in the middle of transfers
    processes.kill(client)
    good = Simulation(C, dying.cells, simulation=1)  # a field's size is the first client's
    finished = processes.run(good.argv(test_programs, FIELDS), server.client_env(1))
    assert finished.returncode == 0, str(finished)
    reports = server.reports()
    for report in reports:
        assert report["n_errors"] == 0, "\n".join(report["errors"])
        assert 1 in report["finished"] and 0 not in report["finished"], str(report["finished"])


def test_unknown_routing_is_refused() -> None:
    from mpi4py import MPI

    from melissa import _core
    from melissa.server import open_receiver

    with pytest.raises(ValueError, match="routing must be 'cells', 'whole_by_simulation' or "
                                         "'whole_by_time_step', got 'diagonal'"):
        open_receiver(MPI.COMM_WORLD, ["u"], 1, _core.Collector(2), routing="diagonal")


def test_unknown_transport_is_refused() -> None:
    from mpi4py import MPI

    from melissa import _core
    from melissa.server import open_receiver

    with pytest.raises(ValueError, match="transport must be 'zmq', 'ucx' or 'auto', got 'rdma'"):
        open_receiver(MPI.COMM_WORLD, ["u"], 1, _core.Collector(2), transport="rdma")
