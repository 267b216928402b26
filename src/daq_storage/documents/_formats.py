"""The seeds' one-format document writers: ``ArrowDocumentWriter(directory, batch_size)``
and the same for Parquet, HDF5, CSV, Zarr and TIFF."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, ClassVar

from daq_storage.documents._router import DocumentWriter

__all__ = [
    "ArrowDocumentWriter",
    "CsvDocumentWriter",
    "Hdf5DocumentWriter",
    "ParquetDocumentWriter",
    "TiffDocumentWriter",
    "ZarrDocumentWriter",
]


class _OneFormat(DocumentWriter):
    """A :class:`DocumentWriter` of one format; further keyword arguments are the
    format writer's options."""

    format: ClassVar[str]

    def __init__(
        self,
        directory: str | os.PathLike[str],
        batch_size: int = 1024,
        *,
        flush_interval: float = 1.0,
        file_template: str | None = None,
        copy_external: bool = True,
        root_map: Mapping[str, str] | None = None,
        **writer_options: Any,
    ) -> None:
        super().__init__(
            directory, (self.format,), batch_size=batch_size, flush_interval=flush_interval,
            file_template=file_template,
            copy_external=copy_external, root_map=root_map,
            writer_options={self.format: writer_options},
        )  # fmt: skip


class ArrowDocumentWriter(_OneFormat):
    """Runs as directories of Arrow IPC stream files; array keys as tensor columns."""

    format = "arrow"


class ParquetDocumentWriter(_OneFormat):
    """Runs as directories of Parquet files; array keys as tensor columns."""

    format = "parquet"


class Hdf5DocumentWriter(_OneFormat):
    """Runs as HDF5 files; array keys as N-d datasets (``<stream>.<key>``)."""

    format = "hdf5"


class CsvDocumentWriter(_OneFormat):
    """Runs as directories of CSV files: scalar keys only (a descriptor with array keys
    is refused: use :class:`DocumentWriter` with ``formats=("csv", "hdf5")``)."""

    format = "csv"


class ZarrDocumentWriter(_OneFormat):
    """Runs as Zarr v3 stores; array keys as frame arrays, and for a grid scan also one
    N-d array per key with the motors as dimension names."""

    format = "zarr"


class TiffDocumentWriter(_OneFormat):
    """Runs as directories of TIFF stacks: array (image) keys only; scalar keys and
    references are not stored (add a table format to keep them)."""

    format = "tiff"
