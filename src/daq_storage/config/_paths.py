"""Where the rings go: the default directory, the daemon's ring named after the
experiment (the experiment name made safe as one file name)."""

from __future__ import annotations

import re
import tempfile
import unicodedata
from pathlib import Path
from typing import TYPE_CHECKING

from daq_storage.errors import ConfigError

if TYPE_CHECKING:
    from daq_storage.config import StorageConfig


def default_ring_dir() -> Path:
    """Where rings go when no path is configured: ``/dev/shm``, else the temp dir."""
    shm = Path("/dev/shm")
    return shm if shm.is_dir() else Path(tempfile.gettempdir())


# The rules of daq_storage.naming.sanitize_name, which this layer cannot import (a test
# checks that both agree): a name safe as one path component on any OS.
_UNSAFE = re.compile(r"[^\w.\-]+")
_RESERVED = {"CON", "PRN", "AUX", "NUL"} | {f"{p}{i}" for p in ("COM", "LPT") for i in range(1, 10)}


def _safe_name(name: str) -> str:
    if not isinstance(name, str) or "\x00" in name:
        raise ConfigError(f"storage.experiment = {name!r} cannot name a ring file")
    text = _UNSAFE.sub("_", unicodedata.normalize("NFKC", name))
    text = re.sub(r"_{2,}", "_", re.sub(r"\.{2,}", ".", text)).strip("._")
    text = text[:100].rstrip("._")
    if not text:
        raise ConfigError(
            f"storage.experiment = {name!r} has no usable characters (letters, digits, _ - .) "
            "to name the daemon's ring: set ring_buffer.path"
        )
    return text + "_" if text.split(".")[0].upper() in _RESERVED else text


def daemon_ring_path(config: StorageConfig) -> Path:
    """The daemon's ring for ``config``: :meth:`RingBufferConfig.daemon_path` of its
    experiment."""
    return config.ring_buffer.daemon_path(config.storage.experiment)
