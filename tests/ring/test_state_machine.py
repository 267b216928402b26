"""Hypothesis state machine: random interleavings of writes and reads against a model."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from daq_storage.ring import RingBuffer, RingReader
from tests.conftest import SHM_DIR, SHM_TEST_PREFIX
from tests.ring.conftest import SMALL, payload_for

SIZES = st.integers(min_value=0, max_value=SMALL // 3) | st.integers(min_value=0, max_value=200)


class RingMachine(RuleBasedStateMachine):
    """One writer and two readers (one anonymous, one registered) over a 64 KiB ring."""

    @initialize()
    def create(self) -> None:
        base = SHM_DIR if SHM_DIR is not None else Path("/tmp")
        self.path = base / f"{SHM_TEST_PREFIX}sm_{uuid.uuid4().hex[:8]}"
        self.ring = RingBuffer.create(self.path, capacity_bytes=SMALL)
        self.readers = [RingReader.open(self.path), RingReader.open(self.path, consumer="model")]
        self.sizes: list[int] = []  # size of every record ever written, by seq
        self.seen: list[list[int]] = [[], []]

    @rule(size=SIZES)
    def write(self, size: int) -> None:
        seq = self.ring.write(payload_for(len(self.sizes), size), stream="s")
        assert seq == len(self.sizes)
        self.sizes.append(size)

    @rule(
        count=st.integers(min_value=1, max_value=40), size=st.integers(min_value=0, max_value=300)
    )
    def write_many(self, count: int, size: int) -> None:
        first = len(self.sizes)
        rows = [payload_for(first + i, size) for i in range(count)]
        assert self.ring.write_many(rows, stream="s") == range(first, first + count)
        self.sizes.extend([size] * count)

    @rule(shape=st.tuples(st.integers(1, 40), st.integers(1, 40)))
    def write_frame(self, shape: tuple[int, int]) -> None:
        seq = len(self.sizes)
        frame = np.full(shape, seq % 65_000, np.uint16)
        self.ring.write_frame(frame, stream=f"cam{shape}")
        self.sizes.append(-1)  # frames are checked by value

    @precondition(lambda self: self.sizes)
    @rule(which=st.integers(0, 1), many=st.booleans(), copy=st.booleans())
    def read(self, which: int, many: bool, copy: bool) -> None:
        reader = self.readers[which]
        records = reader.read_many(50) if many else [r for r in [reader.read_next(copy=copy)] if r]
        for record in records:
            assert not self.seen[which] or record.seq > self.seen[which][-1]
            self.seen[which].append(record.seq)
            expected = self.sizes[record.seq]
            if expected == -1:
                assert record.kind == "frame"
                assert (record.array() == record.seq % 65_000).all()
            else:
                assert record.tobytes() == payload_for(record.seq, expected)

    @invariant()
    def accounting_is_exact(self) -> None:
        for reader, seen in zip(self.readers, self.seen, strict=True):
            assert reader.delivered == len(seen)
            last = seen[-1] + 1 if seen else 0
            assert reader.delivered + reader.lost == last

    def teardown(self) -> None:
        for reader in self.readers:
            # Drain: at the end every record is delivered or counted lost, exactly.
            while reader.read_many(1000):
                pass
            assert reader.delivered + reader.lost == len(self.sizes)
            reader.close()
        self.ring.close()
        self.ring.unlink()


TestRingMachine = RingMachine.TestCase
# 50 runs of up to 60 steps wrap the ring and lap a reader in most of them; the stress
# run draws twenty times as many, longer.
TestRingMachine.settings = settings(max_examples=50, stateful_step_count=60, deadline=None)


@pytest.mark.stress
class TestRingMachineLong(RingMachine.TestCase):  # type: ignore[misc,valid-type]
    settings = settings(max_examples=1000, stateful_step_count=120, deadline=None)
