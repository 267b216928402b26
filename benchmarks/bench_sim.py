"""Simulated instruments: are they fast enough to drive the other benchmarks?

Each rate is printed next to the memory-copy limit for the same bytes, measured in the
same run (one core).
"""

from __future__ import annotations

import numpy as np

from benchmarks._harness import Report, best_time
from daq_storage.sim import SimulatedCamera, SimulatedDaqCard, SimulatedPowerMeter


def main() -> None:
    report = Report("simulated instruments (one core)")

    camera = SimulatedCamera(seed=0, start_ns=0)
    n = 200
    out = np.empty((n, *camera.shape), np.uint16)
    frames_s = n / best_time(lambda: camera.frames(n, out=out), repeat=5)
    source = camera.frames(n).frames.copy()
    copy_s = n / best_time(lambda: np.copyto(out, source), repeat=5)
    report.add(
        "camera 640x480 uint16",
        frames_s,
        "frames/s",
        reference="memcpy of the frames",
        ratio=frames_s / copy_s,
    )

    meter = SimulatedPowerMeter(seed=0, start_ns=0)
    rows = 10_000
    meter_s = rows / best_time(lambda: meter.read_batch(rows), repeat=20)
    # The least a simulated sample costs: numpy drawing its noise (as many normal
    # values as the batch has rows), which the meter does before building the batch.
    rng = np.random.default_rng(0)
    draws = meter.read_batch(rows).num_rows
    draw_s = rows / best_time(lambda: rng.normal(0.0, 1.0, size=draws), repeat=20)
    report.add(
        "power meter, 10k-row batches",
        meter_s,
        "samples/s",
        reference="numpy drawing the noise alone",
        ratio=meter_s / draw_s,
    )

    card = SimulatedDaqCard(8, seed=0, start_ns=0)
    block = 65_536
    card_s = block * card.n_channels / best_time(lambda: card.read_block(block), repeat=20)
    raw = np.empty((block, 8), np.int16)
    src = card.read_block(block).samples
    copy_samples = block * 8 / best_time(lambda: np.copyto(raw, src), repeat=20)
    report.add(
        "DAQ card 8 ch int16, 64k-sample blocks",
        card_s,
        "samples/s",
        reference="memcpy of the samples",
        ratio=card_s / copy_samples,
    )

    # What a recorder does per DAQ block: the samples as an Arrow batch (the card's one
    # schema, with its metadata, is built once).
    small = SimulatedDaqCard(8, seed=0, start_ns=0)
    daq_block = small.read_block(10_000)
    batches_s = 1 / best_time(daq_block.to_record_batch, repeat=200)
    report.add(
        "DAQ block as Arrow batch, 8 ch x 10k samples",
        batches_s * 10_000 * 8,
        "samples/s",
        note=f"{batches_s:,.0f} batches/s",
    )
    report.print()


if __name__ == "__main__":
    main()
