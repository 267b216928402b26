"""The Recorder: drains a ring into one or more formats, in the background.

``Recorder(ring, formats=["hdf5", "arrow"]).start()`` attaches to the ring as a named
consumer and records every stream in its own process; :func:`read_stats` reads its
stats from any process. See ``docs/recorder.md``.
"""

from daq_storage.recorder._recorder import Recorder, RecorderNotRunning, RecorderTimeout
from daq_storage.recorder._stats import (
    FormatStats,
    LossGap,
    RecorderFailed,
    RecorderNotFound,
    RecorderStats,
    RecorderStatsCorrupt,
    StreamStats,
    list_stats,
    read_stats,
    stats_path,
)

__all__ = [
    "FormatStats",
    "LossGap",
    "Recorder",
    "RecorderFailed",
    "RecorderNotFound",
    "RecorderNotRunning",
    "RecorderStats",
    "RecorderStatsCorrupt",
    "RecorderTimeout",
    "StreamStats",
    "list_stats",
    "read_stats",
    "stats_path",
]
