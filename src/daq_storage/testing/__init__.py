"""The writer conformance suite, for the built-in writers and for plug-ins (as
``zarr.testing`` is for stores).

Subclass :class:`WriterConformance` in your own tests, name the writer and say how a
scientist reads your output back::

    from daq_storage.testing import WriterConformance

    class TestMyWriter(WriterConformance):
        writer_name = "mine"        # its entry-point name
        target = "run.mine"         # the output, inside each test's tmp_path

        def read_table(self, path, stream): ...   # -> pyarrow.Table
        def read_frames(self, path, stream): ...  # -> (frames, timestamps_ns, frame_numbers)
        def read_metadata(self, path, stream): ...

For the built-in formats the readers default to :func:`daq_storage.read.open_run` (the
project's one reader, checked against each format's own library in its tests); a
plug-in's test class implements them with its format's reader.

Which tests apply is read from the writer class (``supports_tables``,
``supports_frames``, the ``on_*`` evolution policy, ``path_is_directory``): the others
are skipped, with the reason. :mod:`daq_storage.testing.strategies` holds the
Hypothesis strategies the suite draws batches and frame blocks from.

This package needs pytest and hypothesis (``pip install daq-storage[testing]``); the rest
of daq_storage never imports it.
"""

from __future__ import annotations

from daq_storage.testing._contract_tests import EVOLUTION_CASES, ContractTests
from daq_storage.testing._first_use import START_NS, FirstUseTests, users_table
from daq_storage.testing._hooks import (
    ConformanceBase,
    child_environment,
    fill_disk,
    null_to_none,
)
from daq_storage.testing._kill import Killed, kill_when, line_starting
from daq_storage.testing._memory import MemoryWriter, StrictMemoryWriter
from daq_storage.testing._roundtrip import RoundTripTests, write_in_odd_calls
from daq_storage.testing._s3 import S3Server, s3_server

__all__ = [
    # the suite
    "WriterConformance",
    "ConformanceBase",
    "ContractTests",
    "FirstUseTests",
    "RoundTripTests",
    "EVOLUTION_CASES",
    "START_NS",
    # helpers for a writer's own tests
    "Killed",
    "MemoryWriter",
    "StrictMemoryWriter",
    "child_environment",
    "fill_disk",
    "kill_when",
    "line_starting",
    "null_to_none",
    "S3Server",
    "s3_server",
    "users_table",
    "write_in_odd_calls",
]


class WriterConformance(ContractTests):
    """Every test of the suite: first use, round trips, refusals and the writer
    contract. Subclass it as ``Test...`` (see the module docstring)."""
