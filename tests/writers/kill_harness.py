"""The kill harness ships in the package (:mod:`daq_storage.testing`): its names stay
importable here for the writer tests."""

from __future__ import annotations

from daq_storage.testing import Killed, kill_when, line_starting

__all__ = ["Killed", "kill_when", "line_starting"]
