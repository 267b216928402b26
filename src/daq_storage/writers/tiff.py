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
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal, NoReturn

import numpy.typing as npt
import pyarrow as pa
from pydantic import model_validator

from daq_storage.errors import UnsupportedData
from daq_storage.writers._base import (
    FrameBlock,
    StreamDescription,
    StreamPart,
    WriterOptions,
    finish_all,
    fsync_paths,
    storage_errors,
)
from daq_storage.writers._per_stream import FIRST_ROW, PART_OF, PerStreamWriter
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

#: ``compression`` -> tifffile's codec. ``gzip`` and ``zlib`` are both deflate (TIFF's
#: Adobe Deflate: the zlib stream HDF5's gzip filter writes too).
_CODECS: dict[str, str | None] = {
    "none": None, "zlib": "zlib", "gzip": "zlib", "zstd": "zstd", "lzw": "lzw"
}  # fmt: skip
Codec = Literal["none", "zlib", "gzip", "zstd", "lzw"]


class _Options(WriterOptions):
    compression: Codec = "none"
    bigtiff: bool | None = None
    imagej: bool = False

    @model_validator(mode="after")
    def _imagej_reads_it(self) -> _Options:
        if self.imagej and self.compression != "none":
            raise ValueError(
                f"imagej=True needs compression='none' (ImageJ hyperstacks are "
                f"uncompressed), got compression={self.compression!r}"
            )
        if self.imagej and self.bigtiff:
            raise ValueError("imagej=True cannot be BigTIFF (ImageJ reads classic TIFF)")
        return self


class TiffWriter(PerStreamWriter):
    """One multi-page TIFF per stream, in the directory ``path``: ``<stream>.tif``.

    ``tifffile.imread`` gives a stream's frames as one ``(n, y, x)`` stack (a sequence
    of equally shaped frames is taken as one). Every page carries a JSON description
    with its ``stream``, ``frame_number`` and ``timestamp_ns``; the first page of a file
    also holds the stream's metadata (file-level and stream-level, merged), and metadata
    set later is attached to the next page, or to the last page at close.

    With ``imagej=True`` the file is an ImageJ hyperstack (axes TYX, uint8, uint16 or
    float32 frames, uncompressed as ImageJ reads it natively): the metadata goes to
    ImageJ's ``Info`` property and the per-frame ids to ``<stream>.frames.csv``.

    Visibility: uncompressed stacks and ImageJ hyperstacks link each call's pages into
    the file once they are on disk, so a reader (and a killed writer's file) has every
    frame of the completed calls: :meth:`visible` equals :meth:`accepted`. Compressed,
    RGB and boolean stacks are written by tifffile through a buffer: their frames are
    visible after :meth:`flush`. ``flush(durable=True)`` fsyncs the files and the
    directory.

    Size: a classic TIFF addresses 4 GiB (:attr:`classic_limit`). With ``bigtiff=None``
    (default) a stack starts as classic TIFF and, when the next frames would pass the
    limit, continues in a BigTIFF part ``<stream>__part0002.tif`` that can grow without
    bound; readers of the stream concatenate the parts in part order (``<stream>.tif``,
    then ``<stream>__part0002.tif``, ...; sorted by name, they come in part order).
    Each later part's first page's metadata records ``daq_storage.part_of`` (the
    stream's name) and ``daq_storage.first_row`` (the stream's index of the part's
    first frame); :meth:`describe` lists the parts. ``bigtiff=True`` writes BigTIFF
    from the start (one file); ``bigtiff=False`` keeps every part classic (for old
    readers), starting a new part at each limit. ImageJ hyperstacks are always classic
    and continue in new parts the same way.

    Args:
        path: output directory.
        compression: ``none`` (default), ``zlib`` (or its other name ``gzip``: deflate),
            ``zstd`` or ``lzw`` (integer frames with the horizontal-differencing
            predictor); ``[storage] compression``. TIFF has no lz4, lzf, snappy or blosc.
        bigtiff: ``True``: BigTIFF; ``None``: classic, then a BigTIFF part past the
            limit; ``False``: classic parts only.
        imagej: write ImageJ hyperstacks.
    """

    name: ClassVar[str] = "tiff"
    suffixes: ClassVar[tuple[str, ...]] = (".tif", ".tiff")
    supports_frames: ClassVar[bool] = True
    supports_tables: ClassVar[bool] = False
    mimetype: ClassVar[str] = "image/tiff"
    Options: ClassVar[type[WriterOptions]] = _Options
    config_keys: ClassVar[dict[str, str]] = {"compression": "compression"}
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
        options = self.validate_options(compression=compression, bigtiff=bigtiff, imagej=imagej)
        assert isinstance(options, _Options)
        super().__init__(path)
        self.options = options
        self.compression = _CODECS[options.compression]
        self.bigtiff = options.bigtiff
        self.imagej = options.imagej
        self._stacks: dict[str, Stack] = {}
        self._metadata_texts: dict[str, tuple[tuple[int, int], str]] = {}
        self._unsynced: list[Path] = []  # files completed since the last durable flush
        self._names_changed = False  # files created since the last durable flush

    # ------------------------------------------------------------------ public API
    def write_batch(self, stream: str, batch: pa.RecordBatch) -> NoReturn:
        """TIFF holds frames only: refused (:class:`UnsupportedData`)."""
        self._check_batch(stream, batch)  # refuses, naming the stream
        raise UnsupportedData(f"tiff writer cannot store tables (stream {stream!r})")

    def write_frames(
        self,
        stream: str,
        frames: npt.NDArray[Any] | Sequence[npt.NDArray[Any]],
        *,
        timestamps_ns: npt.ArrayLike | None = None,
        frame_numbers: npt.ArrayLike | None = None,
    ) -> None:
        """Append frames (see :meth:`Writer.write_frames`). A call the disk has no room
        for is refused up front (:class:`StorageIOError`): nothing of it is stored and
        the default frame numbers go on from the frames stored before."""
        block = self._check_frames(stream, frames, timestamps_ns, frame_numbers)
        if len(block) == 0:
            self._record_frames(stream, block)
            return
        stack = self._stacks.get(stream)
        where = self.path if stack is None else stack.path
        self._ensure_room(self._room_for(stream, block), f"frames of stream {stream!r}", where)
        try:
            self._write_pages(stream, block)
        finally:
            if stream in self._stacks:  # a file holds the stream's frame shape: it is fixed
                self._record_frames(stream, block, count=0)

    def visible(self, stream: str) -> int:
        """Frames a reader finds: every frame of the stream's completed parts, and the
        pages of its current file that are linked into it and on disk (all of them for
        our page writer; for a stack tifffile writes, those of the last :meth:`flush`)."""
        self._known_stream(stream)
        stack = self._stacks.get(stream)
        unseen = 0 if stack is None else stack.pages - stack.visible_pages
        return self.accepted(stream) - unseen

    def describe(self, stream: str) -> StreamDescription:
        """The stream's first file (``key`` ``""``: the file is the part), its parts, one
        frame's dtype and shape, one frame per page (``chunk_shape`` ``(1, *shape)``),
        the codec; ``extra_keys`` says where the ids are: each page's JSON description
        (``ImageDescription``), or the ImageJ sidecar ``<stream>.frames.csv``."""
        self._known_stream(stream)
        first = self._part_path(stream, 0)
        dtype, shape = self._frame_specs[stream]
        sidecar = first.with_suffix(".frames.csv").name
        ids = f"{sidecar}:" if self.imagej else "ImageDescription:"
        where = {"timestamps_ns": f"{ids}timestamp_ns", "frame_numbers": f"{ids}frame_number"}
        return StreamDescription(
            stream=stream,
            kind="frames",
            format=self.name,
            mimetype=self.mimetype,
            path=first,
            key="",
            parts=self._stream_parts(stream, StreamPart(first, "", 0)),
            visible=self.visible(stream),
            accepted=self.accepted(stream),
            dtype=str(dtype),
            shape=tuple(shape),
            chunk_shape=(1, *shape),
            compression=self.compression,
            extra_keys=where,
        )

    def flush(self, *, durable: bool = False) -> None:
        """Hand every page to the operating system (the frames tifffile buffers become
        visible); ``durable=True`` also fsyncs the files, those completed since the
        last durable flush, and the directory."""
        self._check_open()
        steps: list[Callable[[], object]] = [
            functools.partial(self._flush_stack, stack) for stack in self._stacks.values()
        ]
        if durable:
            steps.append(self._sync)
        finish_all(steps)

    # ------------------------------------------------------------------ pages
    def _room_for(self, stream: str, block: FrameBlock) -> int:
        """Bytes a call may add: its pages (a compressed one up to half again as large:
        LZW on noise), their IFDs, and the metadata its first page may carry."""
        frame_bytes = int(block.frames[0].nbytes)
        if self.compression is not None:
            frame_bytes = frame_bytes * 3 // 2
        stack = self._stacks.get(stream)
        metadata = self._metadata_text(stream, 0 if stack is None else stack.part)
        return len(block) * (frame_bytes + PAGE_OVERHEAD) + 2 * len(metadata) + METADATA_SLACK

    def _write_pages(self, stream: str, block: FrameBlock) -> None:
        frames = block.frames
        count = len(frames)
        little = frames.dtype.newbyteorder("<")
        if frames.dtype != little:
            frames = frames.astype(little)
        numbers, stamps = block.frame_numbers.tolist(), block.timestamps_ns.tolist()
        stream_json = json.dumps(stream)
        done = 0
        while done < count:
            stack = self._stacks.get(stream)
            metadata = self._metadata_text(stream, 0 if stack is None else stack.part)
            reserve = 2 * len(metadata) + METADATA_SLACK
            fitting = 0 if stack is None else stack.frames_fitting(count - done, reserve)
            if stack is None or fitting == 0:
                stack = self._next_stack(stream, frames[0], reserve, previous=stack)
                metadata = self._metadata_text(stream, stack.part)  # the part's own keys
                fitting = stack.frames_fitting(count - done, reserve)
            part = slice(done, done + fitting)
            pages = Pages(
                frames[part], numbers[part], stamps[part], stream_json,
                metadata if stack.metadata != metadata else None,
            )  # fmt: skip
            first = stack.pages == 0
            with storage_errors(stack.path, f"cannot write frames of stream {stream!r}"):
                try:
                    stack.write(pages)
                except OSError:
                    self._recheck_room()
                    raise
            self._stored = True
            if first or stack.takes_late_metadata:
                stack.metadata = metadata
            self._stats.frames += fitting
            self._stats.bytes_written += pages.frames.nbytes
            self._record_frames(stream, block, count=fitting)  # stored: counted
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

    def _metadata_text(self, stream: str, part: int) -> str:
        """The metadata the first page of the stream's file ``part`` carries: the
        stream's (see the class docstring), and in a later part where it starts."""
        key = (self._metadata_version, part)
        cached = self._metadata_texts.get(stream)
        if cached is None or cached[0] != key:
            items = self._metadata_for(stream)
            if part:
                first = self._parts[stream][part].first
                items = {**items, PART_OF: json.dumps(stream), FIRST_ROW: json.dumps(first)}
            cached = (key, metadata_json(items))
            self._metadata_texts[stream] = cached
        return cached[1]

    def _next_stack(
        self, stream: str, frame: npt.NDArray[Any], reserve: int, previous: Stack | None
    ) -> Stack:
        """The stream's next file (the first, or a part once ``previous`` is full); the
        file itself is created by its first write."""
        part = 0 if previous is None else previous.part + 1
        path = self._part_path(stream, part)
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
        # Checked free and recorded (a part: from the frames stored so far) only now.
        self._stream_path(stream, new_part=previous is not None)
        stack.part = part
        self._names_changed = True
        self._stacks[stream] = stack  # (before completing the previous part, which may fail)
        if isinstance(stack, ImageJStack):
            self._add_file(stack.sidecar)
        if previous is not None:
            self._finish(stream, previous)
        return stack

    def _new_stack(self, path: Path, bigtiff: bool, frame: npt.NDArray[Any], stream: str) -> Stack:
        limit = 2**63 if bigtiff else self.classic_limit
        if self.imagej:
            return ImageJStack(path, limit, frame, json.dumps(stream))
        if self.compression is None and frame.ndim == 2 and frame.dtype.kind in "uif":
            return PageStack(path, bigtiff, limit, frame)
        return TifffileStack(path, bigtiff, limit, frame, self.compression)

    # ------------------------------------------------------------------ flush, close
    def _flush_stack(self, stack: Stack) -> None:
        with storage_errors(stack.path, "cannot flush TIFF file"):
            stack.flush()

    def _sync(self) -> None:
        """fsync the open files, the files completed since the last durable flush, and
        the directory when files were created in it."""
        with storage_errors(self.path, "cannot make the flushed TIFF files durable (fsync)"):
            for stack in self._stacks.values():
                stack.fsync()
            paths = [path for path in self._unsynced if path.exists()]
            if self._names_changed:
                paths.append(self.path)  # its entries (fsync_paths adds its parent's)
            fsync_paths(paths)
        self._unsynced.clear()
        self._names_changed = False

    def _finish(self, stream: str, stack: Stack) -> None:
        metadata = self._metadata_text(stream, stack.part)
        try:
            with storage_errors(stack.path, "cannot close TIFF file"):
                stack.close(metadata if stack.pages and stack.metadata != metadata else None)
        finally:
            self._unsynced += stack.files()

    def _close(self) -> None:
        try:
            finish_all(functools.partial(self._finish, stream, stack)
                       for stream, stack in self._stacks.items())  # fmt: skip
        finally:
            self._stacks.clear()
