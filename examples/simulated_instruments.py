"""Produce data from the simulated instruments and look at it.

Run: python examples/simulated_instruments.py
"""

from __future__ import annotations

import zlib

from daq_storage.sim import SimulatedCamera, SimulatedDaqCard, SimulatedPowerMeter


def main() -> None:
    camera = SimulatedCamera(seed=0, fps=100.0)
    block = camera.frames(10)
    frame = block.frames[0]
    ratio = len(zlib.compress(frame.tobytes(), 6)) / frame.nbytes
    print(f"camera: {block.frames.shape} {block.frames.dtype}, gzip ratio {ratio:.2f}")
    print(f"  frame numbers {block.frame_numbers.tolist()}")

    meter = SimulatedPowerMeter(["power_meter_01", "power_meter_02"], rate_hz=10_000, seed=0)
    batch = meter.read_batch(1000)
    print(f"power meter: {batch.num_rows} rows, schema {batch.schema.names}")
    print(batch.slice(0, 4).to_pylist())

    card = SimulatedDaqCard(8, sample_rate=100_000, seed=0)
    samples = card.read_block(10_000)
    print(f"DAQ card: {samples.samples.shape} {samples.samples.dtype} at {samples.sample_rate} S/s")


if __name__ == "__main__":
    main()
