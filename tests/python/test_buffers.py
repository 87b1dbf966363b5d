# SPDX-License-Identifier: BSD-3-Clause
"""The training server's replay buffers (melissa._core.ReplayBuffer): FIFO order, FIRO and
Reservoir statistics, the watermark, per-sample use counts, held-out samples, draining, and
back-pressure when a buffer that must not lose data is full."""

from __future__ import annotations

import threading
import time

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
    with pytest.raises(ValueError, match="buffer must be 'FIFO', 'FIRO' or 'Reservoir'"):
        _core.ReplayBuffer(policy, capacity=5, watermark=1, n_fields=1)


def test_a_buffer_of_no_sample_is_refused() -> None:
    with pytest.raises(ValueError, match="the capacity must be at least 1"):
        _core.ReplayBuffer("FIFO", capacity=0, watermark=1, n_fields=1)
