"""The multi-channel stream writer: a DAQ card's samples into HDF5 and / or Arrow IPC.

``StreamWriter.builder().output_path("run.h5").channels([ChannelConfig(0, "AI0", -10.0,
10.0), ...]).sample_rate(100_000.0).compression("lz4").build()``; ``writer.write(block)``
with ``(n_samples, n_channels)`` int16 counts or float values; ``open_run("run.h5")``
reads it back. Seed 001's ``ComediStreamWriter``; see docs/streams.md.
"""

from daq_storage.streams._builder import StreamWriterBuilder
from daq_storage.streams._channels import ChannelConfig
from daq_storage.streams._layout import LAYOUT, TIME_FORMULA, VOLTS_FORMULA
from daq_storage.streams._ring import channels_of, drain, writer_from_ring
from daq_storage.streams._timebase import Timebase
from daq_storage.streams._writer import Gap, StreamStats, StreamWriter

__all__ = [
    # writing
    "ChannelConfig",
    "StreamWriter",
    "StreamWriterBuilder",
    "StreamStats",
    "Gap",
    # from a ring
    "drain",
    "writer_from_ring",
    "channels_of",
    # layout
    "LAYOUT",
    "TIME_FORMULA",
    "VOLTS_FORMULA",
    "Timebase",
]
