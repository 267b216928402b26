"""The kill harness itself (daq_storage.testing.kill_when): the kill lands where the
child said it was."""

from __future__ import annotations

import os
import signal

from daq_storage.testing import kill_when, line_starting

_SCRIPT = """
import sys
for i in range(1_000_000):
    print(f"flushing {i}", flush=True)
    print(f"flushed {i}", flush=True)
"""


def test_the_child_dies_by_sigkill_at_the_chosen_line():
    killed = kill_when(_SCRIPT, lambda line: line == "flushing 3")
    assert killed.returncode == -signal.SIGKILL
    assert killed.lines[-1] == "flushing 3"
    assert killed.flushed == ["flushed 0", "flushed 1", "flushed 2"]


def test_a_child_that_ends_first_is_reported_as_such():
    killed = kill_when("print('flushed 0', flush=True)", lambda line: False)
    assert killed.returncode == 0
    assert killed.flushed == ["flushed 0"]


def test_the_child_runs_in_the_environment_given():
    script = "import os, signal; print('ready', os.environ['MARK'], flush=True); signal.pause()"
    killed = kill_when(script, line_starting("ready"), env={**os.environ, "MARK": "here"})
    assert killed.returncode == -signal.SIGKILL
    assert killed.lines == ["ready here"]
