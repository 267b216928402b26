"""The shared-memory ring buffer: one writer, many readers, in any process or language.

The byte layout is specified in ``docs/ring-format.md``.
"""

from daq_storage.ring._reader import Record, RingReader
from daq_storage.ring._space import max_ring_bytes
from daq_storage.ring._stats import ReaderStats, RingStats
from daq_storage.ring._writer import RingBuffer

__all__ = [
    "ReaderStats",
    "Record",
    "RingBuffer",
    "RingReader",
    "RingStats",
    "max_ring_bytes",
]
