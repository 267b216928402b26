"""Seed 001's builder: ``StreamWriter.builder().output_path(p).channels([...])
.sample_rate(1e5).compression("lz4").storage_format("both").build()``."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any, Self

from daq_storage.errors import ConfigError
from daq_storage.streams._channels import ChannelConfig
from daq_storage.streams._writer import StreamWriter

__all__ = ["StreamWriterBuilder"]


class StreamWriterBuilder:
    """Collects a :class:`StreamWriter`'s arguments, one method each (named as the
    writer's keywords); :meth:`build` checks them all and opens the writer."""

    def __init__(self) -> None:
        self._path: str | os.PathLike[str] | None = None
        self._options: dict[str, Any] = {}

    def output_path(self, path: str | os.PathLike[str]) -> Self:
        """The HDF5 file (see :class:`StreamWriter`'s ``path``)."""
        self._path = path
        return self

    def channels(self, channels: Iterable[ChannelConfig]) -> Self:
        """The channels, in the order of a block's columns."""
        self._options["channels"] = channels
        return self

    def sample_rate(self, rate: float) -> Self:
        """Samples per second per channel."""
        self._options["sample_rate"] = rate
        return self

    def chunk_size(self, samples: int | None) -> Self:
        """Samples per HDF5 chunk."""
        self._options["chunk_size"] = samples
        return self

    def compression(self, codec: str | None, level: int | None = None) -> Self:
        """``"gzip"``, ``"lz4"``, ``"zstd"`` or ``None``, and the codec's level."""
        self._options["compression"] = codec
        self._options["compression_level"] = level
        return self

    def storage_format(self, storage_format: str) -> Self:
        """``"hdf5"``, ``"arrow"`` or ``"both"``."""
        self._options["storage_format"] = storage_format
        return self

    def store(self, store: str) -> Self:
        """``"counts"`` (int16 with scale and offset) or ``"volts"`` (float64)."""
        self._options["store"] = store
        return self

    def start_ns(self, start_ns: int) -> Self:
        """The time of sample 0 (ns since the epoch)."""
        self._options["start_ns"] = start_ns
        return self

    def build(self) -> StreamWriter:
        """The writer.

        Raises:
            ConfigError: no output path, channels or sample rate given; or what
                :class:`StreamWriter` refuses.
        """
        missing = [name for name, given in (("output_path", self._path is not None),
                                            ("channels", "channels" in self._options),
                                            ("sample_rate", "sample_rate" in self._options))
                   if not given]  # fmt: skip
        if missing or self._path is None:
            raise ConfigError(f"StreamWriter.builder(): call {', '.join(missing)} before "
                              "build()")  # fmt: skip
        return StreamWriter(self._path, **self._options)
