"""Everyday tools over what daq-storage wrote, whatever the format (``daq-storage
inspect`` and ``daq-storage convert`` are their command-line faces).

:func:`inspect_path` builds a tree of :class:`Node` (JSON-able) of an output, a run's
rotated versions or a directory of runs: the run as the reader sees it (streams, the
loss ledger, metadata) and each file as its format lays it out. :func:`convert_run`
copies a run into another format, stream by stream in bounded memory, metadata,
timestamps, frame numbers and the loss ledger included. See docs/tools.md.
"""

from __future__ import annotations

from daq_storage.tools._convert import ConvertResult, StreamCopy, convert_run, plan_conversion
from daq_storage.tools._inspect import inspect_path
from daq_storage.tools._node import Node

__all__ = ["ConvertResult", "Node", "StreamCopy", "convert_run", "inspect_path", "plan_conversion"]
