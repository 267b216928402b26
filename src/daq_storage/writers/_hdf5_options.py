"""What the HDF5 writer takes: its options (the codecs HDF5 really has, checked once), the
filters and chunk encoder they make, and the Arrow types it can store."""

from __future__ import annotations

from concurrent.futures import Executor, ProcessPoolExecutor
from typing import Any, Literal, Self

import hdf5plugin
import numpy as np
import numpy.typing as npt
import pyarrow as pa
from pydantic import Field, model_validator

from daq_storage.errors import UnsupportedData
from daq_storage.schema import Column
from daq_storage.writers._chunks import (
    ChunkEncode,
    blosc_encoder,
    deflate_encoder,
    lz4_encoder,
    zstd_encoder,
)
from daq_storage.writers._contract import WriterOptions

__all__ = [
    "Hdf5Options",
    "Strings",
    "TableLayout",
    "check_frame_chunk",
    "check_storable",
    "chunk_encoder",
    "filters",
]

Compression = Literal["none", "gzip", "lzf", "lz4", "zstd", "blosc-lz4", "blosc-zstd"]
#: How text columns are stored (see :mod:`~daq_storage.writers._hdf5_strings`).
Strings = Literal["auto", "dictionary", "vlen"]
#: How table streams are stored: a dataset per column, or Arrow IPC files (see
#: :mod:`~daq_storage.writers._hdf5_arrow`).
TableLayout = Literal["columns", "arrow_ipc"]
#: Codecs without a level: a level given with one of them would do nothing.
_NO_LEVEL = ("none", "lzf", "lz4")
#: The largest chunk Blosc 1 compresses (2**31 - 1 less its 16-byte header).
_BLOSC_LIMIT = (1 << 31) - 1 - 16
_CHUNK_LIMIT = (1 << 32) - 1  # HDF5 stores a chunk's size in 32 bits
_TABLE_CHUNK_BYTES = 1 << 20  # the default chunk of a table's numeric column


class Hdf5Options(WriterOptions):
    """The HDF5 writer's options (see :class:`~daq_storage.writers.Hdf5Writer`).

    ``compression`` is one of the filters this HDF5 build writes (gzip and lzf are
    h5py's, lz4, zstd and blosc come from hdf5plugin); a codec it lacks (``snappy``)
    is refused, never replaced. ``compression_level`` and ``shuffle`` left ``None``
    take the codec's defaults (level 4, shuffle on); a level given with a codec that
    has none (``none``, ``lzf``, ``lz4``) is refused, as ``shuffle=True`` given with
    ``none``: nothing is accepted that would do nothing.

    ``strings`` (``None``: ``auto``) chooses how text columns are stored; it applies to
    the column layout only, and is refused with ``table_layout="arrow_ipc"``, where
    every column is stored as Arrow has it.
    """

    compression: Compression = "gzip"
    compression_level: int | None = Field(None, ge=0, le=9)
    shuffle: bool | None = None
    chunk_size: int | None = Field(None, ge=1, le=(1 << 32) - 1)
    frames_per_chunk: int = Field(1, ge=1, le=(1 << 32) - 1)
    swmr: bool = False
    executor: Executor | None = None
    strings: Strings | None = None
    table_layout: TableLayout = "columns"

    @property
    def string_mode(self) -> Strings:
        """How text columns are stored: as given, else ``auto``."""
        return "auto" if self.strings is None else self.strings

    @property
    def level(self) -> int:
        """The codec's level: as given, else 4."""
        return 4 if self.compression_level is None else self.compression_level

    @property
    def shuffles(self) -> bool:
        """Whether chunks are byte-shuffled before compression: as given, else yes."""
        return self.shuffle is not False

    def chunk_rows(self, column: Column) -> int:
        """Rows per chunk of a table column: ``chunk_size``, else about 1 MiB of its
        values (1,024 to 1,048,576 rows), 4,096 rows of text or lists (in the Arrow IPC
        layout, ``chunk_size`` is the most rows one IPC file holds)."""
        if self.chunk_size is not None:
            return self.chunk_size
        if column.kind != "fixed":
            return 4096
        row_bytes = max(1, column.values[:1].nbytes or column.values.dtype.itemsize)
        return int(max(1024, min(1 << 20, _TABLE_CHUNK_BYTES // row_bytes)))

    @model_validator(mode="after")
    def _honoured(self) -> Self:
        if self.compression_level is not None and self.compression in _NO_LEVEL:
            raise ValueError(
                f"compression {self.compression!r} has no level; a level applies to gzip, "
                "zstd, blosc-lz4 and blosc-zstd"
            )
        if self.compression == "zstd" and self.compression_level == 0:
            raise ValueError("zstd levels are 1-9 (0 is no level of zstd's)")
        if self.shuffle and self.compression == "none":
            raise ValueError("shuffle=True needs a compression to help (compression is 'none')")
        if self.strings is not None and self.table_layout == "arrow_ipc":
            raise ValueError(
                f"strings={self.strings!r} applies to the column layout; with "
                "table_layout='arrow_ipc' every column is stored as Arrow has it"
            )
        if self.swmr and self.table_layout == "arrow_ipc":
            raise ValueError(
                "table_layout='arrow_ipc' makes a dataset at every flush, which SWMR mode "
                "(swmr=True) does not allow"
            )
        if isinstance(self.executor, ProcessPoolExecutor):  # pydantic reports ValueErrors
            raise ValueError(  # noqa: TRY004
                "executor must run threads (a ThreadPoolExecutor): the frame jobs write "
                "into the open file"
            )
        return self


def check_frame_chunk(options: Hdf5Options, stream: str, frames: npt.NDArray[Any]) -> None:
    """Refuse frames whose chunks HDF5 (4 GiB) or blosc (2 GiB) cannot hold.

    Raises:
        UnsupportedData: naming the stream, the chunk and the limit.
    """
    shape = frames.shape[1:]
    chunk = options.frames_per_chunk * int(np.prod(shape)) * frames.dtype.itemsize
    blosc = options.compression.startswith("blosc-")
    if chunk > (_BLOSC_LIMIT if blosc else _CHUNK_LIMIT):
        raise UnsupportedData(
            f"stream {stream!r}: {options.frames_per_chunk} frames of shape {shape} "
            f"{frames.dtype} exceed {'blosc' if blosc else 'HDF5'}'s "
            f"{'2' if blosc else '4'} GiB chunk limit; lower frames_per_chunk"
        )


def filters(options: Hdf5Options) -> dict[str, Any]:
    """``create_dataset`` keyword arguments for the chosen codec."""
    compression, level, shuffle = options.compression, options.level, options.shuffles
    if compression == "none":
        return {}
    if compression == "gzip":
        return {"compression": "gzip", "compression_opts": level, "shuffle": shuffle}
    if compression == "lzf":
        return {"compression": "lzf", "shuffle": shuffle}
    if compression == "lz4":
        return {**hdf5plugin.LZ4(), "shuffle": shuffle}
    if compression == "zstd":
        return {**hdf5plugin.Zstd(clevel=level), "shuffle": shuffle}
    cname: Any = compression.removeprefix("blosc-")
    mode = hdf5plugin.Blosc.SHUFFLE if shuffle else hdf5plugin.Blosc.NOSHUFFLE
    return dict(hdf5plugin.Blosc(cname=cname, clevel=level, shuffle=mode))


def chunk_encoder(options: Hdf5Options) -> ChunkEncode | None:
    """Our encoder for whole chunks of frames and table columns (``None``: none, or HDF5
    compresses them), giving the bytes the file's filter decodes."""
    compression, level, shuffle = options.compression, options.level, options.shuffles
    if compression == "gzip":
        return deflate_encoder(level, shuffle)
    if compression == "zstd":
        return zstd_encoder(level, shuffle)
    if compression == "lz4":
        return lz4_encoder(shuffle)
    if compression.startswith("blosc-"):
        return blosc_encoder(compression.removeprefix("blosc-"), level, shuffle)
    return None


def _numeric(kind: pa.DataType) -> bool:
    return bool(pa.types.is_integer(kind) or pa.types.is_floating(kind))


def _storable(kind: pa.DataType) -> bool:
    """Whether the writer has a dataset for a column of ``kind`` (as
    :func:`daq_storage.schema.flatten_batch` makes them)."""
    if isinstance(kind, pa.FixedShapeTensorType):
        return _numeric(kind.value_type)
    if isinstance(kind, pa.ExtensionType):
        return False
    if pa.types.is_dictionary(kind):
        return _storable(kind.value_type)
    if pa.types.is_struct(kind):
        return kind.num_fields > 0 and all(_storable(field.type) for field in kind)
    if pa.types.is_fixed_size_list(kind) or pa.types.is_list(kind) or pa.types.is_large_list(kind):
        return _numeric(kind.value_type) or pa.types.is_boolean(kind.value_type)
    return bool(
        _numeric(kind)
        or pa.types.is_boolean(kind)
        or pa.types.is_timestamp(kind)
        or pa.types.is_duration(kind)
        or pa.types.is_string(kind)
        or pa.types.is_large_string(kind)
        or pa.types.is_string_view(kind)
    )


def check_storable(stream: str, schema: pa.Schema) -> None:
    """Refuse a schema with a column HDF5 has no dataset for, naming it.

    Raises:
        UnsupportedData: the first such column, its type and what the writer takes.
    """
    for field in schema:
        if not _storable(field.type):
            raise UnsupportedData(
                f"stream {stream!r} column {field.name!r}: Arrow type {field.type} is not "
                "supported by the hdf5 writer (it takes integers, floats, booleans, "
                "timestamps, durations, text, dictionaries of these, structs of these, "
                "lists and fixed-size lists of numbers, fixed-shape tensors of numbers)"
            )
