"""Simulated acquisition: the simulated instruments writing into a ring, as a lab's would.

:func:`run_instruments` runs them in this process (``daq-storage simulate``);
:class:`InstrumentProcess` runs the same in a spawned process of its own (the demo, the
tests, the benchmarks). Three instruments, each on its own stream:

- ``camera_1``: uint16 frames of ``camera_shape`` at ``camera_fps``, frame numbers 0.., the
  camera's timestamps (:class:`~daq_storage.sim.SimulatedCamera`);
- ``power_meter_01``: a table, 10 kS/s delivered in 100 ms batches;
- ``daq_card``: a table, 8 channels at 100 kS/s delivered in 100 ms blocks.

The instruments are the only writer of the ring, and they never wait on disk: in
``overflow="block"`` mode a write the ring refuses after ``block_timeout``
(:class:`~daq_storage.errors.RingFull`) is counted as dropped and the acquisition goes on,
as a real instrument's would. Every stream's result says what was produced, written and
dropped; with ``log_seqs`` also the ring sequence number of every record written, so a
consumer can prove ``written == stored + lost`` stream by stream.

This module imports the ring and the simulators only (no writer, no configuration
schema): an instrument process stays light.
"""

from daq_storage.acquisition._process import AcquisitionTimeout, InstrumentProcess
from daq_storage.acquisition._results import (
    CAMERA_STREAM,
    DAQ_STREAM,
    POWER_METER_STREAM,
    STREAMS,
    AcquisitionResult,
    InstrumentCount,
    format_counts,
)
from daq_storage.acquisition._run import StopSignal, run_instruments, stop_on_signals

__all__ = [
    "CAMERA_STREAM",
    "DAQ_STREAM",
    "POWER_METER_STREAM",
    "STREAMS",
    "AcquisitionResult",
    "AcquisitionTimeout",
    "InstrumentCount",
    "InstrumentProcess",
    "StopSignal",
    "format_counts",
    "run_instruments",
    "stop_on_signals",
]
