"""Fixtures for the writer tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest


@pytest.fixture
def small_disk(mount_tmpfs: Callable[[str], Path]) -> Path:
    """A real 24 MiB filesystem (tmpfs) that fills up; skipped where mounting needs rights
    this process does not have."""
    return mount_tmpfs("24m")
