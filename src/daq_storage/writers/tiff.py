"""TIFF: frames appended to one multi-page stack per stream. Frames only.

Uncompressed stacks and ImageJ hyperstacks are written by a small page writer of our
own: each batch of frames goes to disk in one system call, followed by IFDs built from
a template, and only then is the batch linked into the file (one small write), so a
crash never leaves a page that points at missing bytes. Compressed stacks, RGB and
boolean frames go through tifffile page by page. Every file is read back by tifffile.
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Any, ClassVar

import numpy.typing as npt
import pyarrow as pa

from daq_storage.errors import ConfigError, UnsupportedData
from daq_storage.writers._base import FrameBlock, finish_all, storage_errors
from daq_storage.writers._per_stream import PerStreamWriter
from daq_storage.writers._tiff_stacks import (
    IMAGEJ_DTYPES,
    METADATA_SLACK,
    PAGE_OVERHEAD,
    ImageJStack,
    Pages,
    PageStack,
    Stack,
    TifffileStack,
    metadata_json,
)

__all__ = ["TiffWriter"]

_CODECS = {"none": None, "zlib": "zlib", "zstd": "zstd", "lzw": "lzw"}


class TiffWriter(PerStreamWriter):
    """One multi-page TIFF per stream, in the directory ``path``: ``<stream>.tif``.

    ``tifffile.imread`` gives a stream's frames as one ``(n, y, x)`` stack. Every page
    carries a JSON description with its ``stream``, ``frame_number`` and
    ``timestamp_ns``; the first page of a file also holds the stream's metadata
    (file-level and stream-level, merged), and metadata set later is attached to the
    next page, or to the last page at close.

    With ``imagej=True`` the file is an ImageJ hyperstack (axes TYX, uint8, uint16 or
    float32 frames, uncompressed as ImageJ reads it natively): the metadata goes to
    ImageJ's ``Info`` property and the per-frame ids to ``<stream>.frames.csv``.

    Uncompressed stacks and ImageJ hyperstacks survive a crash: everything up to the
    last completed ``write_frames`` call stays readable.

    Size: a classic TIFF addresses 4 GiB (:attr:`classic_limit`). With ``bigtiff=None``
    (default) a stack starts as classic TIFF and, when the next frames would pass the
    limit, continues in a BigTIFF part ``<stream>__part0001.tif`` that can grow without
    bound; readers of the stream concatenate the parts in part order (``<stream>.tif``,
    then ``<stream>__part0001.tif``, ...; sorted by name, they come in part order).
    ``bigtiff=True`` writes BigTIFF from the start (one file); ``bigtiff=False`` keeps every part
    classic (for old readers), starting a new part at each limit. ImageJ hyperstacks
    are always classic and continue in new parts the same way.

    Args:
        path: output directory.
        compression: ``none`` (default), ``zlib``, ``zstd`` or ``lzw`` (integer frames
            with the horizontal-differencing predictor).
        bigtiff: ``True``: BigTIFF; ``None``: classic, then a BigTIFF part past the
            limit; ``False``: classic parts only.
        imagej: write ImageJ hyperstacks.
    """

    name: ClassVar[str] = "tiff"
    suffixes: ClassVar[tuple[str, ...]] = (".tif", ".tiff")
    supports_frames: ClassVar[bool] = True
    supports_tables: ClassVar[bool] = False
    #: Bytes a classic TIFF file may grow to (32-bit offsets; tifffile's own margin).
    classic_limit: ClassVar[int] = 2**32 - 2**25

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        compression: str = "none",
        bigtiff: bool | None = None,
        imagej: bool = False,
    ) -> None:
        if compression not in _CODECS:
            raise ConfigError(f"tiff compression {compression!r} is not one of {tuple(_CODECS)}")
        if imagej and compression != "none":
            raise ConfigError("tiff imagej=True needs compression='none' (ImageJ hyperstacks)")
        if imagej and bigtiff:
            raise ConfigError("tiff imagej=True cannot be BigTIFF (ImageJ reads classic TIFF)")
        super().__init__(path)
        self.compression = _CODECS[compression]
        self.bigtiff = bigtiff
        self.imagej = imagej
        self._stacks: dict[str, Stack] = {}
        self._metadata_texts: dict[str, tuple[int, str]] = {}

    def write_batch(self, stream: str, batch: pa.RecordBatch) -> None:
        self._check_open()
        raise UnsupportedData(
            f"TIFF cannot store tables (stream {stream!r}); use hdf5, parquet, arrow or csv"
        )

    def write_frames(
        self,
        stream: str,
        frames: npt.NDArray[Any],
        *,
        timestamps_ns: npt.ArrayLike | None = None,
        frame_numbers: npt.ArrayLike | None = None,
    ) -> None:
        block = self._check_frames(stream, frames, timestamps_ns, frame_numbers, record=False)
        frames = block.frames
        count = len(frames)
        if count == 0:
            self._record_frames(stream, block)
            return
        try:
            self._write_pages(stream, block)
        finally:
            if stream in self._stacks:  # a file holds the stream's frame shape: it is fixed
                self._record_frames(stream, block, count=0)

    def _write_pages(self, stream: str, block: FrameBlock) -> None:
        frames = block.frames
        count = len(frames)
        little = frames.dtype.newbyteorder("<")
        if frames.dtype != little:
            frames = frames.astype(little)
        numbers, stamps = block.frame_numbers.tolist(), block.timestamps_ns.tolist()
        metadata = self._metadata_text(stream)
        reserve = 2 * len(metadata) + METADATA_SLACK
        stream_json = json.dumps(stream)
        done = 0
        while done < count:
            stack = self._stacks.get(stream)
            fitting = 0 if stack is None else stack.frames_fitting(count - done, reserve)
            if stack is None or fitting == 0:
                stack = self._next_stack(stream, frames[0], reserve, previous=stack)
                fitting = stack.frames_fitting(count - done, reserve)
            part = slice(done, done + fitting)
            pages = Pages(
                frames[part], numbers[part], stamps[part], stream_json,
                metadata if stack.metadata != metadata else None,
            )  # fmt: skip
            nbytes = pages.frames.nbytes
            self._ensure_room(nbytes + fitting * PAGE_OVERHEAD + reserve,
                              f"frames of stream {stream!r}", stack.path)  # fmt: skip
            first = stack.pages == 0
            with storage_errors(stack.path, f"cannot write frames of stream {stream!r}"):
                stack.write(pages)
            self._stored = True
            if first or stack.takes_late_metadata:
                stack.metadata = metadata
            self._stats.frames += fitting
            self._stats.bytes_written += nbytes
            self._record_frames(stream, block, count=fitting)
            done += fitting

    def _check_frame_format(self, stream: str, frames: npt.NDArray[Any]) -> None:
        """Refuse frames a TIFF page (or an ImageJ hyperstack) cannot hold."""
        shape = frames.shape[1:]
        rgb = len(shape) == 3 and shape[2] in (3, 4) and frames.dtype.kind in "ui"
        if len(shape) != 2 and not rgb:
            raise UnsupportedData(
                f"stream {stream!r}: TIFF pages hold 2-D frames (or RGB/RGBA y, x, 3|4); "
                f"got frame shape {shape}; use hdf5 or zarr"
            )
        if self.imagej and (len(shape) != 2 or frames.dtype not in IMAGEJ_DTYPES):
            raise UnsupportedData(
                f"stream {stream!r}: an ImageJ hyperstack holds 2-D uint8, uint16 or float32 "
                f"frames; got dtype {frames.dtype} frame shape {shape}"
            )

    def _metadata_text(self, stream: str) -> str:
        cached = self._metadata_texts.get(stream)
        if cached is None or cached[0] != self._metadata_version:
            cached = (self._metadata_version, metadata_json(self._metadata_for(stream)))
            self._metadata_texts[stream] = cached
        return cached[1]

    def _next_stack(
        self, stream: str, frame: npt.NDArray[Any], reserve: int, previous: Stack | None
    ) -> Stack:
        """The stream's next file (the first, or a part once ``previous`` is full)."""
        path = self._stream_path(stream, new_part=previous is not None)
        # ImageJ reads classic TIFF only; otherwise a full classic file continues as BigTIFF.
        classic_only = self.imagej or self.bigtiff is False
        bigtiff = self.bigtiff is True or (not classic_only and previous is not None)
        stack = self._new_stack(path, bigtiff, frame, stream)
        if stack.frames_fitting(1, reserve) == 0 and not classic_only:
            stack = self._new_stack(path, True, frame, stream)
        if stack.frames_fitting(1, reserve) == 0:
            raise UnsupportedData(
                f"stream {stream!r}: a frame of {frame.nbytes} bytes does not fit a classic "
                f"TIFF ({self.classic_limit} bytes); use bigtiff=True"
            )
        if previous is not None:
            self._finish(stream, previous)
        self._stacks[stream] = stack
        if isinstance(stack, ImageJStack):
            self._add_file(stack.sidecar)
        return stack

    def _new_stack(self, path: Path, bigtiff: bool, frame: npt.NDArray[Any], stream: str) -> Stack:
        limit = 2**63 if bigtiff else self.classic_limit
        if self.imagej:
            return ImageJStack(path, limit, frame, json.dumps(stream))
        if self.compression is None and frame.ndim == 2 and frame.dtype.kind in "uif":
            return PageStack(path, bigtiff, limit, frame)
        return TifffileStack(path, bigtiff, limit, frame, self.compression)

    def flush(self) -> None:
        self._check_open()
        for stack in self._stacks.values():
            with storage_errors(stack.path, "cannot flush TIFF file"):
                stack.flush()

    def _finish(self, stream: str, stack: Stack) -> None:
        metadata = self._metadata_text(stream)
        with storage_errors(stack.path, "cannot close TIFF file"):
            stack.close(metadata if stack.pages and stack.metadata != metadata else None)

    def _close(self) -> None:
        try:
            finish_all(functools.partial(self._finish, stream, stack)
                       for stream, stack in self._stacks.items())  # fmt: skip
        finally:
            self._stacks.clear()
