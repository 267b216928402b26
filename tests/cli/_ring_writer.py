"""A real producer for the CLI tests: attaches to the ring at argv[1] as its writer and
writes simulated camera frames, power-meter batches and DAQ card blocks (raw counts
with a ``scale_factor``) until its stdin closes.

It prints ``ready`` once its first records are in the ring. Pacing (a frame every
``PERIOD_S``) is the instrument's rate, not a synchronisation.
"""

from __future__ import annotations

import select
import sys

from daq_storage import RingBuffer
from daq_storage.sim import SimulatedCamera, SimulatedDaqCard, SimulatedPowerMeter

PERIOD_S = 0.02


def main(path: str) -> None:
    camera = SimulatedCamera((60, 80), seed=0)
    meter = SimulatedPowerMeter(seed=0)
    card = SimulatedDaqCard(2, sample_rate=10_000.0, seed=0)
    with RingBuffer.open(path) as ring:
        ready = False
        while True:
            frame = camera.next_frame()
            ring.write_frame(frame.array, stream="camera_1", frame_number=frame.frame_number,
                             timestamp_ns=frame.timestamp_ns)  # fmt: skip
            ring.write_batch(meter.read_batch(50), stream="power_meter_01")
            ring.write_batch(card.read_block(200).to_record_batch(), stream="daq_card")
            if not ready:
                print("ready", flush=True)
                ready = True
            if select.select([sys.stdin], [], [], PERIOD_S)[0]:
                return  # stdin readable: closed by the test (EOF), time to stop


if __name__ == "__main__":
    main(sys.argv[1])
