"""What the Zarr writer takes: its options, checked once, and the codecs they make."""

from __future__ import annotations

from concurrent.futures import Executor, ProcessPoolExecutor
from typing import Any, Literal, Self

import zarr.codecs
from pydantic import Field, model_validator

from daq_storage.location import S3Options
from daq_storage.writers._contract import WriterOptions

__all__ = ["COMPRESSIONS", "Compression", "ZarrOptions", "compressors"]

#: The codecs of the Zarr V3 specification (and zarr-python) the writer offers.
Compression = Literal["blosc-lz4", "blosc-zstd", "zstd", "gzip", "none"]
COMPRESSIONS: tuple[str, ...] = ("blosc-lz4", "blosc-zstd", "zstd", "gzip", "none")
#: Each codec's levels (blosc's ``clevel``, zlib's, zstd's; zstd's 0 would mean "its
#: default", given here as ``None``).
_LEVELS = {"blosc-lz4": (0, 9), "blosc-zstd": (0, 9), "gzip": (0, 9), "zstd": (1, 22)}
_DEFAULT_LEVEL = 5


class ZarrOptions(WriterOptions):
    """The Zarr writer's options (see :class:`~daq_storage.writers.ZarrWriter`).

    A level given with ``none``, or outside the codec's range, is refused; so is a shard
    that is not a whole number of chunks, and an executor of processes (the jobs write
    into the writer's buffers).
    """

    compression: Compression = "blosc-lz4"
    compression_level: int | None = None
    chunk_size: int | None = Field(None, ge=1)
    frames_per_chunk: int = Field(1, ge=1)
    shard_frames: int | None = Field(None, ge=1)
    executor: Executor | None = None
    storage_options: S3Options | dict[str, Any] | None = None

    @property
    def level(self) -> int:
        """The codec's level: as given, else 5."""
        return _DEFAULT_LEVEL if self.compression_level is None else self.compression_level

    @property
    def codec(self) -> str | None:
        """The compression as :class:`~daq_storage.writers.StreamDescription` names it."""
        return None if self.compression == "none" else self.compression

    @model_validator(mode="after")
    def _honoured(self) -> Self:
        level, codec = self.compression_level, self.compression
        if level is not None:
            if codec == "none":
                raise ValueError(
                    f"compression_level {level} needs a compression (one of "
                    f"{', '.join(_LEVELS)}); compression is 'none'"
                )
            low, high = _LEVELS[codec]
            if not low <= level <= high:
                raise ValueError(f"compression_level for {codec!r} is {low}..{high}, got {level}")
        if self.shard_frames is not None and self.shard_frames % self.frames_per_chunk:
            raise ValueError(
                f"shard_frames ({self.shard_frames}) must be a multiple of frames_per_chunk "
                f"({self.frames_per_chunk})"
            )
        if isinstance(self.executor, ProcessPoolExecutor):  # pydantic reports ValueErrors
            raise ValueError(  # noqa: TRY004
                "executor must run threads (a ThreadPoolExecutor): the jobs compress the "
                "writer's own buffers"
            )
        return self


def compressors(options: ZarrOptions) -> Any:
    """The codecs of ``options`` for zarr-python (``None``: uncompressed)."""
    compression, level = options.compression, options.level
    if compression == "none":
        return None
    if compression.startswith("blosc-"):
        cname: Any = compression.removeprefix("blosc-")
        return zarr.codecs.BloscCodec(cname=cname, clevel=level, shuffle="shuffle")
    if compression == "zstd":
        return zarr.codecs.ZstdCodec(level=level)
    return zarr.codecs.GzipCodec(level=level)
