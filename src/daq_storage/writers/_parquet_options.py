"""The Parquet writer's options."""

from __future__ import annotations

from typing import Any, Literal

import pyarrow as pa
from pydantic import Field, StrictInt, model_validator

from daq_storage.location import S3Options
from daq_storage.writers._base import WriterOptions

__all__ = ["Codec", "ParquetOptions"]

Codec = Literal["none", "snappy", "gzip", "zstd", "lz4", "brotli"]
_CODECS_WITHOUT_LEVEL = ("none", "snappy")


class ParquetOptions(WriterOptions):
    compression: Codec = "snappy"
    compression_level: StrictInt | None = None
    row_group_size: StrictInt = Field(1_000_000, ge=1)
    row_group_bytes: StrictInt = Field(64 << 20, ge=1)
    max_footer_bytes: StrictInt = Field(1 << 20, ge=1)
    storage_options: S3Options | dict[str, Any] | None = None

    @model_validator(mode="after")
    def _level_fits_codec(self) -> ParquetOptions:
        level, codec = self.compression_level, self.compression
        if level is None:
            return self
        if codec in _CODECS_WITHOUT_LEVEL:
            raise ValueError(
                f"compression {codec!r} takes no compression_level (got {level}); levels "
                "apply to gzip, zstd, lz4 and brotli"
            )
        low = pa.Codec.minimum_compression_level(codec)
        high = pa.Codec.maximum_compression_level(codec)
        if not low <= level <= high:
            raise ValueError(f"compression_level for {codec!r} must be {low}..{high}, got {level}")
        return self
