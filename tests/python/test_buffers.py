# SPDX-License-Identifier: BSD-3-Clause
"""The training server's replay buffers (melissa._core.ReplayBuffer): FIFO order, FIRO and
Reservoir statistics, BatchReservoir's whole simulations, pseudo_epochs, the watermark, per-sample
use counts, held-out samples, draining, back-pressure when a buffer that must not lose data is
full, and the state written and taken up again by a fresh buffer."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import scipy.stats

from melissa import _core


def push_samples(buffer: _core.ReplayBuffer, n: int, *, simulation: int = 0,
                 fields: int = 1, cells: int = 3) -> None:
    """n samples of one simulation, time steps 0..n-1; every value of a sample is its step."""
    for step in range(n):
        for field in range(fields):
            buffer.push(simulation, step, field, np.full(cells, step + 1000 * field, np.float32))


def test_fifo_serves_the_oldest_first_and_uses_each_once() -> None:
    buffer = _core.ReplayBuffer("FIFO", capacity=50, watermark=10, n_fields=1)
    push_samples(buffer, 30)
    served = []
    while buffer.has_batch(4):
        served.extend(buffer.batch(4, 0.0)[1])
    # Served in arrival order while the buffer holds at least the watermark (10): 30 -> 6.
    assert served == list(range(24))
    buffer.drain()
    while not buffer.exhausted():
        served.extend(buffer.batch(4, 0.0)[1])
    assert served == list(range(30))
    assert buffer.stats()["uses"] == {1: 30}


def test_samples_join_every_field_in_field_order() -> None:
    buffer = _core.ReplayBuffer("FIFO", capacity=10, watermark=1, n_fields=2)
    buffer.push(0, 0, 1, np.array([7.0, 8.0], np.float32))  # field 1 first: order comes from ids
    assert not buffer.has_batch(1), "half a sample is not a sample"
    buffer.push(0, 0, 0, np.array([1.0, 2.0, 3.0], np.float32))
    ids, steps, values = buffer.batch(1, 0.0)
    assert values.tolist() == [[1.0, 2.0, 3.0, 7.0, 8.0]]
    assert buffer.sample_cells == 5


def test_watermark_holds_training_back() -> None:
    buffer = _core.ReplayBuffer("FIRO", capacity=100, watermark=20, n_fields=1)
    push_samples(buffer, 19)
    assert not buffer.has_batch(4)
    assert len(buffer.batch(4, 0.05)[0]) == 0, "waits the timeout, then nothing"
    push_samples(buffer, 1, simulation=1)
    assert buffer.has_batch(4)
    assert len(buffer.batch(4, 0.0)[0]) == 4
    buffer.drain()
    assert buffer.has_batch(4), "draining: what is left, below the watermark too"


def test_firo_takes_each_sample_once_in_random_order() -> None:
    buffer = _core.ReplayBuffer("FIRO", capacity=1000, watermark=1, n_fields=1, seed=3)
    push_samples(buffer, 500)
    buffer.drain()
    served = []
    while not buffer.exhausted():
        served.extend(buffer.batch(32, 0.0)[1])
    assert sorted(served) == list(range(500)), "each exactly once"
    # Random out: far from arrival order (Spearman's rank correlation near 0).
    rho = scipy.stats.spearmanr(np.arange(500), served).statistic
    assert abs(rho) < 0.2
    assert buffer.stats()["uses"] == {1: 500}


def test_reservoir_keeps_a_uniform_sample_of_everything_seen() -> None:
    # 40 buffers of 50 slots each see 2000 samples; every sample must be kept with probability
    # 50/2000, whatever its arrival time: a chi-square test on the kept counts per arrival decile.
    kept = np.zeros(2000)
    for seed in range(40):
        buffer = _core.ReplayBuffer("Reservoir", capacity=50, watermark=1, n_fields=1,
                                    seed=seed)
        push_samples(buffer, 2000, cells=1)
        buffer.drain()
        steps = buffer.batch(10_000, 0.0)[1]
        assert len(steps) == 50
        kept[steps] += 1
    deciles = kept.reshape(10, 200).sum(axis=1)
    assert deciles.sum() == 40 * 50
    assert scipy.stats.chisquare(deciles).pvalue > 0.001, deciles


def test_reservoir_draws_with_replacement_and_counts_uses() -> None:
    buffer = _core.ReplayBuffer("Reservoir", capacity=20, watermark=20, n_fields=1, seed=1)
    push_samples(buffer, 20)
    drawn = np.concatenate([buffer.batch(10, 0.0)[1] for _ in range(30)])
    assert len(drawn) == 300 and set(drawn) <= set(range(20))
    stats = buffer.stats()
    assert stats["size"] == 20, "nothing removed before draining"
    assert sum(uses * n for uses, n in stats["uses"].items()) == 300
    assert max(stats["uses"]) > 1
    buffer.drain()
    rest = []
    while not buffer.exhausted():
        rest.extend(buffer.batch(7, 0.0)[1])
    assert sorted(rest) == list(range(20)), "draining: each remaining sample once more"


def test_held_out_simulations_never_reach_training() -> None:
    buffer = _core.ReplayBuffer("FIFO", capacity=100, watermark=1, n_fields=1,
                                validation=[1, 3])
    for sim in range(5):
        push_samples(buffer, 4, simulation=sim)
    ids, steps, values = buffer.validation_samples()
    assert sorted(set(ids.tolist())) == [1, 3] and len(ids) == 8
    buffer.drain()
    trained = np.concatenate([buffer.batch(100, 0.0)[0]])
    assert sorted(set(trained.tolist())) == [0, 2, 4]
    assert buffer.stats()["validation_samples"] == 8


def test_a_full_fifo_holds_the_receiver_back_and_loses_nothing() -> None:
    buffer = _core.ReplayBuffer("FIFO", capacity=5, watermark=1, n_fields=1)
    push_samples(buffer, 5)
    pushed = threading.Event()

    def one_more() -> None:
        buffer.push(9, 0, 0, np.zeros(3, np.float32))
        pushed.set()

    thread = threading.Thread(target=one_more)
    thread.start()
    time.sleep(0.2)
    assert not pushed.is_set(), "a full FIFO buffer must wait, not drop"
    assert len(buffer.batch(1, 0.0)[0]) == 1
    assert pushed.wait(5.0), "room made, the push goes through"
    thread.join()
    assert buffer.stats()["size"] == 5 and buffer.stats()["evicted"] == 0


@pytest.mark.parametrize("policy", ["fifo", "LIFO", ""])
def test_unknown_policy_is_refused(policy: str) -> None:
    with pytest.raises(ValueError, match="buffer must be 'FIFO', 'FIRO', 'Reservoir' or "
                       "'BatchReservoir'"):
        _core.ReplayBuffer(policy, capacity=5, watermark=1, n_fields=1)


def test_a_buffer_of_no_sample_is_refused() -> None:
    with pytest.raises(ValueError, match="the capacity must be at least 1"):
        _core.ReplayBuffer("FIFO", capacity=0, watermark=1, n_fields=1)


def test_batch_reservoir_evicts_whole_simulations() -> None:
    kept = []
    for seed in range(10):
        buffer = _core.ReplayBuffer("BatchReservoir", capacity=20, watermark=1, n_fields=1,
                                    seed=seed)
        for sim in range(10):
            push_samples(buffer, 8, simulation=sim)
        stats = buffer.stats()
        assert stats["received"] == 80 and stats["size"] <= 20
        assert stats["evicted"] == 80 - stats["size"] and stats["evicted"] % 8 == 0, \
            "whole simulations leave"
        buffer.drain()
        ids, steps, _ = buffer.batch(100, 0.0)
        for sim in set(ids.tolist()):
            assert sorted(steps[ids == sim].tolist()) == list(range(8)), f"{sim} kept whole"
        assert 9 in ids, "never the simulation arriving"
        kept.append(set(ids.tolist()))
    # Which simulation leaves is drawn, not always the oldest.
    assert any(min(held) < 8 for held in kept), kept


def test_batch_reservoir_keeps_the_first_steps_of_a_series_longer_than_itself() -> None:
    buffer = _core.ReplayBuffer("BatchReservoir", capacity=5, watermark=1, n_fields=1)
    push_samples(buffer, 8)
    buffer.drain()
    assert sorted(buffer.batch(100, 0.0)[1].tolist()) == [0, 1, 2, 3, 4]
    assert buffer.stats()["evicted"] == 3


def test_batch_reservoir_draws_with_replacement() -> None:
    buffer = _core.ReplayBuffer("BatchReservoir", capacity=16, watermark=16, n_fields=1, seed=2)
    push_samples(buffer, 8, simulation=0)
    push_samples(buffer, 8, simulation=1)
    drawn = sum(len(buffer.batch(8, 0.0)[0]) for _ in range(20))
    stats = buffer.stats()
    assert drawn == 160 == stats["drawn"] and stats["size"] == 16
    assert max(stats["uses"]) > 1


def draw_all(buffer: _core.ReplayBuffer, n: int) -> tuple[list[list[int]], dict[int, int]]:
    """Batches (their time steps) while the buffer gives some, and each step's uses."""
    batches, uses = [], {}
    while buffer.has_batch(n):
        steps = buffer.batch(n, 0.0)[1].tolist()
        batches.append(steps)
        for step in steps:
            uses[step] = uses.get(step, 0) + 1
    return batches, uses


@pytest.mark.parametrize("policy", ["FIRO", "Reservoir", "BatchReservoir"])
def test_pseudo_epochs_bound_the_uses_of_a_sample(policy: str) -> None:
    buffer = _core.ReplayBuffer(policy, capacity=30, watermark=1, n_fields=1, seed=4,
                                pseudo_epochs=3)
    push_samples(buffer, 30)
    batches, uses = draw_all(buffer, 5)
    assert max(uses.values()) == 3 and sum(uses.values()) == buffer.stats()["drawn"]
    # A sample leaves at its third use, not before: what is held is what was used less.
    assert buffer.stats()["size"] == 30 - sum(1 for n in uses.values() if n == 3)
    assert set(buffer.stats()["uses"]) <= {0, 1, 2, 3}
    if policy == "FIRO":
        assert all(len(set(b)) == len(b) for b in batches), "distinct within a batch"
    push_samples(buffer, 20, simulation=1)
    assert buffer.stats()["evicted"] == 0, "used-up samples made room: nothing replaced"


def test_reservoir_without_pseudo_epochs_reuses_without_limit() -> None:
    buffer = _core.ReplayBuffer("Reservoir", capacity=10, watermark=10, n_fields=1, seed=4)
    push_samples(buffer, 10)
    for _ in range(50):
        buffer.batch(10, 0.0)
    assert buffer.stats()["size"] == 10 and max(buffer.stats()["uses"]) > 20


def test_fifo_takes_one_pseudo_epoch_only() -> None:
    with pytest.raises(ValueError, match="a FIFO buffer uses each sample once"):
        _core.ReplayBuffer("FIFO", capacity=5, watermark=1, n_fields=1, pseudo_epochs=2)


# -- the state, written and taken up ------------------------------------------------------------

def filled(policy: str, seed: int = 7) -> _core.ReplayBuffer:
    """A buffer with samples used, held-out samples and an incomplete sample."""
    buffer = _core.ReplayBuffer(policy, capacity=24, watermark=4, n_fields=2, validation=[9],
                                seed=seed, pseudo_epochs=2 if policy != "FIFO" else 0)
    for sim in (0, 1, 9):
        push_samples(buffer, 6, simulation=sim, fields=2)
    buffer.push(2, 0, 1, np.arange(3, dtype=np.float32))  # field 0 yet to come
    for _ in range(3):
        buffer.batch(4, 0.0)
    return buffer


def saved(buffer: _core.ReplayBuffer, path: Path, tag: int = 0) -> bytes:
    with open(path, "wb") as file:
        size, written = buffer.write_state(file.fileno(), tag)
    data = path.read_bytes()
    assert len(data) == size
    assert written == buffer.stats(), "nothing arrives meanwhile"
    return data


@pytest.mark.parametrize("policy", ["FIFO", "FIRO", "Reservoir", "BatchReservoir"])
def test_a_state_taken_up_draws_the_same_batches(tmp_path: Path, policy: str) -> None:
    original = filled(policy)
    data = saved(original, tmp_path / "state", tag=42)
    restored = _core.ReplayBuffer(policy, capacity=24, watermark=4, n_fields=2, validation=[9],
                                  seed=999, pseudo_epochs=2 if policy != "FIFO" else 0)
    assert restored.load_state(data, 42) == 42
    assert restored.stats() == original.stats()
    assert restored.sample_cells == original.sample_cells == 6
    for a, b in zip(original.validation_samples(), restored.validation_samples(), strict=True):
        np.testing.assert_array_equal(a, b)
    # The incomplete sample came along: its missing field completes it in both.
    for buffer in (original, restored):
        buffer.push(2, 0, 0, np.full(3, 5.0, np.float32))
    # The same samples with the same uses and the same random generator (seeded differently):
    # the same batches, down to the values, until both are empty.
    for buffer in (original, restored):
        buffer.drain()
    while not original.exhausted():
        for a, b in zip(original.batch(4, 0.0), restored.batch(4, 0.0), strict=True):
            np.testing.assert_array_equal(a, b)
    assert restored.exhausted()
    assert restored.stats() == original.stats()


def test_a_held_out_step_sent_again_replaces_its_copy(tmp_path: Path) -> None:
    restored = _core.ReplayBuffer("FIRO", capacity=24, watermark=4, n_fields=2, validation=[9])
    restored.load_state(saved(filled("FIRO"), tmp_path / "state"))
    push_samples(restored, 6, simulation=9, fields=2)  # a held-out simulation run again
    assert restored.stats()["validation_samples"] == 6


def test_state_written_to_a_file_that_does_not_take_it(tmp_path: Path) -> None:
    (tmp_path / "state").write_bytes(b"")
    fd = os.open(tmp_path / "state", os.O_RDONLY)
    try:
        with pytest.raises(OSError):
            filled("FIRO").write_state(fd)
    finally:
        os.close(fd)


def fnv1a(data: bytes) -> int:
    """The state's checksum, for states forged with a valid one."""
    h = 0xCBF29CE484222325
    for byte in data:
        h = ((h ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def forged(body: bytes) -> bytes:
    return body + fnv1a(body).to_bytes(8, "little")


@pytest.mark.parametrize(
    ("forge", "message"),
    [
        # The version, after the magic.
        (lambda body: body[:8] + (2).to_bytes(4, "little") + body[12:],
         "buffer state of format 2, this melissa reads 1"),
        (lambda body: body[:20], "buffer state malformed: it ends early"),
        (lambda body: body[:-6], "buffer state malformed: it counts more entries than it holds"),
        (lambda body: body + b"\0", "buffer state malformed: bytes beyond its contents"),
    ],
)
def test_a_state_whose_checksum_holds_but_contents_do_not_is_refused(
        tmp_path: Path, forge: Callable[[bytes], bytes], message: str) -> None:
    body = saved(filled("FIRO"), tmp_path / "state")[:-8]
    target = _core.ReplayBuffer("FIRO", capacity=24, watermark=1, n_fields=2)
    with pytest.raises(ValueError, match=message):
        target.load_state(forged(forge(body)))
    assert target.stats()["size"] == 0 and target.sample_cells == 0, "nothing changed"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"policy": "Reservoir"}, "buffer state of a 'FIRO' buffer, this one is 'Reservoir'"),
        ({"n_fields": 1}, "buffer state of samples of 2 fields, this buffer's have 1"),
        ({"capacity": 5}, "beyond this buffer's capacity of 5"),
        ({"tag": 3}, "buffer state tagged 0, not 3"),
        ({"damage": 40}, "its checksum does not match its contents"),
        ({"truncate": 30}, "its checksum does not match its contents"),
        ({"replace": b"garbage"}, "not a melissa replay buffer state"),
        ({"not_fresh": True}, "a state is taken up by a fresh buffer only"),
    ],
)
def test_a_state_that_does_not_fit_is_refused(tmp_path: Path, change: dict[str, object],
                                              message: str) -> None:
    data = bytearray(saved(filled("FIRO"), tmp_path / "state"))
    if "damage" in change:
        data[int(change["damage"])] ^= 0xFF  # type: ignore[call-overload]
    if "truncate" in change:
        data = data[:int(change["truncate"])]  # type: ignore[call-overload]
    if "replace" in change:
        data = bytearray(change["replace"])  # type: ignore[arg-type]
    target = _core.ReplayBuffer(str(change.get("policy", "FIRO")),
                                capacity=int(change.get("capacity", 24)),  # type: ignore[call-overload]
                                watermark=1, n_fields=int(change.get("n_fields", 2)))  # type: ignore[call-overload]
    if change.get("not_fresh"):
        target.push(0, 0, 0, np.zeros(3, np.float32))
    before = target.stats()
    with pytest.raises(ValueError, match=message):
        target.load_state(bytes(data), change.get("tag"))  # type: ignore[arg-type]
    assert target.stats() == before, "nothing changed"
