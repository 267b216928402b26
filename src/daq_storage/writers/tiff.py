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
import struct
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import tifffile

from daq_storage.errors import ConfigError, UnsupportedData
from daq_storage.writers._base import finish_all, pwrite_all, storage_errors
from daq_storage.writers._per_stream import PerStreamWriter

__all__ = ["TiffWriter"]

_CODECS = {"none": None, "zlib": "zlib", "zstd": "zstd", "lzw": "lzw"}

# TIFF field types and tags.
_BYTE, _ASCII, _SHORT, _LONG, _LONG8 = 1, 2, 3, 4, 16
_WIDTH, _HEIGHT, _BITS, _COMPRESSION, _PHOTOMETRIC = 256, 257, 258, 259, 262
_DESCRIPTION, _STRIP_OFFSETS, _SAMPLES, _ROWS_PER_STRIP, _STRIP_BYTES = 270, 273, 277, 278, 279
_SAMPLE_FORMAT, _IJ_BYTE_COUNTS, _IJ_METADATA = 339, 50838, 50839
_SAMPLE_FORMATS = {"u": 1, "i": 2, "f": 3}
_IMAGEJ_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.float32))
_INLINE = {_SHORT: "<H", _LONG: "<I", _LONG8: "<Q"}

# A bound on what one page adds besides its pixels (IFD, description, alignment).
_PAGE_OVERHEAD = 1024
_METADATA_SLACK = 4096
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC


def _align(position: int, to: int = 8) -> int:
    return (position + to - 1) // to * to


class _Layout:
    """Byte layout of a little-endian classic TIFF (32-bit offsets) or BigTIFF."""

    def __init__(self, bigtiff: bool) -> None:
        self.bigtiff = bigtiff
        self.offset = struct.Struct("<Q" if bigtiff else "<I")
        self.count_and_value = struct.Struct("<QQ" if bigtiff else "<II")
        self.entry_size = 20 if bigtiff else 12
        self.count_size = 8 if bigtiff else 2  # entries in an IFD
        self.value_shift = 8 if bigtiff else 4  # from an entry's count to its value
        self.first_link = 8 if bigtiff else 4  # where the header points at the first IFD
        self.header = b"II+\x00\x08\x00\x00\x00" + bytes(8) if bigtiff else b"II*\x00" + bytes(4)

    def ifd(self, entries: Sequence[tuple[int, int, int, int]]) -> tuple[bytes, dict[int, int]]:
        """An IFD of ``(tag, type, count, value)`` entries with a zero next-IFD link, and
        where each tag's count field is (its value follows at ``value_shift``).

        Values that do not fit an entry are offsets, to be patched in.
        """
        parts = [struct.pack("<Q" if self.bigtiff else "<H", len(entries))]
        where: dict[int, int] = {}
        for index, (tag, kind, count, value) in enumerate(sorted(entries)):
            where[tag] = self.count_size + index * self.entry_size + 4
            head = struct.pack("<HHQ" if self.bigtiff else "<HHI", tag, kind, count)
            form = _INLINE[kind] if count == 1 and kind in _INLINE else self.offset.format
            parts.append(head + struct.pack(form, value).ljust(self.offset.size, b"\0"))
        parts.append(bytes(self.offset.size))
        return b"".join(parts), where


def _image_entries(frame: npt.NDArray[Any], offset_type: int) -> list[tuple[int, int, int, int]]:
    """The IFD entries of an uncompressed one-strip grayscale page shaped like ``frame``."""
    height, width = frame.shape
    return [
        (_WIDTH, _LONG, 1, width),
        (_HEIGHT, _LONG, 1, height),
        (_BITS, _SHORT, 1, frame.dtype.itemsize * 8),
        (_COMPRESSION, _SHORT, 1, 1),
        (_PHOTOMETRIC, _SHORT, 1, 1),  # min-is-black
        (_STRIP_OFFSETS, offset_type, 1, 0),
        (_SAMPLES, _SHORT, 1, 1),
        (_ROWS_PER_STRIP, _LONG, 1, height),
        (_STRIP_BYTES, offset_type, 1, frame.nbytes),
        (_SAMPLE_FORMAT, _SHORT, 1, _SAMPLE_FORMATS[frame.dtype.kind]),
    ]


def _metadata_json(items: dict[str, str]) -> str:
    """Metadata (values already JSON) as one JSON object."""
    return "{" + ", ".join(f"{json.dumps(key)}: {value}" for key, value in items.items()) + "}"


def _page_safe(metadata: str) -> str:
    """``metadata`` for a page description that tifffile does not mistake for its own.

    tifffile takes a description containing ``"shape":`` for its shaped-array metadata
    and would then misread the stack; ``\\u0073`` is the same ``s`` to a JSON reader.
    That text can only sit inside a string (a key), where the escape is valid.
    """
    return metadata.replace('"shape":', '"\\u0073hape":')


@dataclass(frozen=True, slots=True)
class _Pages:
    """Frames for one file with their ids; ``metadata`` goes on the first page (None:
    the file already has the current metadata)."""

    frames: npt.NDArray[Any]
    numbers: list[int]
    stamps: list[int]
    stream_json: str
    metadata: str | None

    def descriptions(self) -> Iterator[str]:
        head = f'{{"stream": {self.stream_json}, "frame_number": '
        metadata = None if self.metadata is None else _page_safe(self.metadata)
        for index, (number, stamp) in enumerate(zip(self.numbers, self.stamps, strict=True)):
            if index == 0 and metadata is not None:
                yield f'{head}{number}, "timestamp_ns": {stamp}, "metadata": {metadata}}}'
            else:
                yield f'{head}{number}, "timestamp_ns": {stamp}}}'

    def last_description(self, metadata: str) -> str:
        return (
            f'{{"stream": {self.stream_json}, "frame_number": {self.numbers[-1]}, '
            f'"timestamp_ns": {self.stamps[-1]}, "metadata": {_page_safe(metadata)}}}'
        )


class _Stack(ABC):
    """One TIFF file of a stream; the file is created by the first write."""

    #: Each batch's first page can carry metadata set since the previous batch (ImageJ
    #: keeps it in the first page only, rewritten at close).
    takes_late_metadata: ClassVar[bool] = True

    def __init__(self, path: Path, bigtiff: bool, limit: int) -> None:
        self.path = path
        self.bigtiff = bigtiff
        self.limit = limit  # bytes the file may grow to
        self.pages = 0
        self.metadata: str | None = None  # the stream's metadata as this file holds it
        self.last: _Pages | None = None  # the last batch written, for late metadata

    @abstractmethod
    def frames_fitting(self, wanted: int, reserve: int) -> int:
        """How many of ``wanted`` frames fit below the limit, keeping ``reserve`` bytes."""

    @abstractmethod
    def write(self, pages: _Pages) -> None: ...

    @abstractmethod
    def flush(self) -> None:
        """Hand everything written so far to the operating system."""

    @abstractmethod
    def close(self, metadata: str | None) -> None:
        """Complete the file; ``metadata``: set since the last page, attach it."""


class _PageStack(_Stack):
    """Uncompressed 2-D pages, each with its own JSON description.

    A batch is laid out as all its frames, then one IFD plus description per frame
    (chained among themselves); the previous last IFD is pointed at the batch after
    all of it is on disk.
    """

    def __init__(self, path: Path, bigtiff: bool, limit: int, frame: npt.NDArray[Any]) -> None:
        super().__init__(path, bigtiff, limit)
        self.layout = layout = _Layout(bigtiff)
        self.frame_bytes = frame.nbytes
        offset_type = _LONG8 if bigtiff else _LONG
        entries = [*_image_entries(frame, offset_type), (_DESCRIPTION, _ASCII, 0, 0)]
        self.template, where = layout.ifd(entries)
        self.description_field = where[_DESCRIPTION]
        self.strip_field = where[_STRIP_OFFSETS] + layout.value_shift
        self.next_field = len(self.template) - layout.offset.size
        self.fd = -1
        self.end = len(layout.header)  # where the next batch goes
        self.link = layout.first_link  # the zero link the next batch is hooked onto
        self.last_description_entry = 0

    def frames_fitting(self, wanted: int, reserve: int) -> int:
        if self.bigtiff:
            return wanted
        room = self.limit - self.end - reserve
        return max(0, min(wanted, room // (self.frame_bytes + _PAGE_OVERHEAD)))

    def write(self, pages: _Pages) -> None:
        # Nothing is counted until every write of the batch succeeded: a failed one is
        # written again, at the same place, by the next call.
        if self.fd < 0:
            self.fd = os.open(self.path, _CREATE, 0o666)
        if self.pages == 0:
            pwrite_all(self.fd, [self.layout.header], 0)
        frames = pages.frames
        pack_offset = self.layout.offset.pack_into
        pack_description = self.layout.count_and_value.pack_into
        template, ifd_size = self.template, len(self.template)
        data_at = self.end
        first_ifd = at = _align(data_at + frames.nbytes)
        ifds = bytearray(first_ifd - data_at - frames.nbytes)
        last = len(pages.numbers) - 1
        for index, text in enumerate(pages.descriptions()):
            description = text.encode("ascii") + b"\0"
            base = len(ifds)
            following = _align(at + ifd_size + len(description))
            ifds += template
            pack_description(ifds, base + self.description_field, len(description), at + ifd_size)
            pack_offset(ifds, base + self.strip_field, data_at + index * self.frame_bytes)
            if index < last:
                pack_offset(ifds, base + self.next_field, following)
            ifds += description
            ifds += bytes(following - at - ifd_size - len(description))
            if index == last:
                self.last_description_entry = at + self.description_field
                next_link = at + self.next_field
            at = following
        pwrite_all(self.fd, [frames.reshape(-1).view(np.uint8), ifds], data_at)
        pwrite_all(self.fd, [self.layout.offset.pack(first_ifd)], self.link)  # publish
        self.link = next_link
        self.end = at
        self.pages += len(frames)
        self.last = pages

    def flush(self) -> None:
        """Nothing is buffered: every batch goes straight to the file."""

    def close(self, metadata: str | None) -> None:
        if self.fd < 0:
            return
        try:
            if metadata is not None and self.last is not None:
                description = self.last.last_description(metadata).encode("ascii") + b"\0"
                pwrite_all(self.fd, [description], self.end)
                pwrite_all(
                    self.fd,
                    [self.layout.count_and_value.pack(len(description), self.end)],
                    self.last_description_entry,
                )
        finally:
            os.close(self.fd)
            self.fd = -1


class _ImageJStack(_Stack):
    """An ImageJ hyperstack (axes TYX): one full IFD, then every frame contiguous.

    The first IFD's description carries the image count, rewritten in place after
    each batch; ImageJ's remaining IFDs go after the data at close. Per-frame ids go to
    ``<file>.frames.csv``, the stream's metadata to ImageJ's ``Info`` property.
    """

    takes_late_metadata: ClassVar[bool] = False

    def __init__(self, path: Path, limit: int, frame: npt.NDArray[Any], stream_json: str) -> None:
        super().__init__(path, False, limit)
        self.layout = layout = _Layout(bigtiff=False)
        self.shape = frame.shape
        self.frame_bytes = frame.nbytes
        self.stream_json = stream_json
        self.sidecar = path.with_suffix(".frames.csv")
        self.description_size = len(self._description(10**15)) + 1
        common = _image_entries(frame, _LONG)
        extra = [
            (_DESCRIPTION, _ASCII, self.description_size, 0),
            (_IJ_BYTE_COUNTS, _LONG, 2, 0),  # ImageJ's header and Info lengths
            (_IJ_METADATA, _BYTE, 0, 0),
        ]
        self.first_ifd, self.first_where = layout.ifd(common + extra)
        self.next_ifd, next_where = layout.ifd(common)
        self.next_strip_field = next_where[_STRIP_OFFSETS] + layout.value_shift
        self.fd = self.sidecar_fd = -1
        self.data_at = self.end = _align(8 + len(self.first_ifd) + self.description_size)
        self.sidecar_end = 0

    def _description(self, images: int) -> bytes:
        return tifffile.imagej_description((images, *self.shape), "TYX").encode("ascii")

    def _info(self, metadata: str) -> tuple[bytes, bytes]:
        """ImageJ's IJMetadataByteCounts and IJMetadata values for an ``Info`` text."""
        info = f'{{"stream": {self.stream_json}, "metadata": {metadata}}}'
        data_tag, counts_tag = tifffile.imagej_metadata_tag({"Info": info}, "<")
        return counts_tag[3], data_tag[3]

    def frames_fitting(self, wanted: int, reserve: int) -> int:
        trailing_ifd = len(self.next_ifd)
        room = self.limit - self.end - self.pages * trailing_ifd - reserve
        return max(0, min(wanted, room // (self.frame_bytes + trailing_ifd)))

    def write(self, pages: _Pages) -> None:
        # Nothing is counted until every write of the batch succeeded: a failed one is
        # written again, at the same place, by the next call.
        frames = pages.frames.reshape(-1).view(np.uint8)
        lines = "".join(f"{n},{t}\n" for n, t in zip(pages.numbers, pages.stamps, strict=True))
        images = self.pages + len(pages.numbers)
        description = self._description(images).ljust(self.description_size, b"\0")
        if self.fd < 0:
            self.fd = os.open(self.path, _CREATE, 0o666)
        if self.sidecar_fd < 0:
            self.sidecar_fd = os.open(self.sidecar, _CREATE, 0o666)
        if self.pages == 0:
            prefix = self._prefix(description, pages.metadata or "{}")
            pwrite_all(self.fd, [prefix, frames], 0)
            sidecar_end = self._write_sidecar("frame_number,timestamp_ns\n" + lines, 0)
            pwrite_all(self.fd, [self.layout.offset.pack(8)], self.layout.first_link)
            self.data_at = self.end = len(prefix)
        else:
            pwrite_all(self.fd, [frames], self.end)
            sidecar_end = self._write_sidecar(lines, self.sidecar_end)
            description_at = 8 + len(self.first_ifd)
            pwrite_all(self.fd, [description], description_at)  # publish
        self.end += frames.nbytes
        self.sidecar_end = sidecar_end
        self.pages = images
        self.last = pages

    def _prefix(self, description: bytes, metadata: str) -> bytes:
        """Header, first IFD, its description and ImageJ metadata, up to the first frame."""
        counts, info = self._info(metadata)
        ifd = bytearray(self.first_ifd)
        pack = self.layout.count_and_value.pack_into
        description_at = 8 + len(ifd)
        counts_at = _align(description_at + len(description))
        pack(ifd, self.first_where[_DESCRIPTION], len(description), description_at)
        pack(ifd, self.first_where[_IJ_BYTE_COUNTS], len(counts) // 4, counts_at)
        pack(ifd, self.first_where[_IJ_METADATA], len(info), counts_at + len(counts))
        data_at = _align(counts_at + len(counts) + len(info), 16)
        self.layout.offset.pack_into(
            ifd, self.first_where[_STRIP_OFFSETS] + self.layout.value_shift, data_at
        )
        prefix = bytearray(self.layout.header)
        prefix += ifd
        prefix += description
        prefix += bytes(counts_at - len(prefix))
        prefix += counts + info
        prefix += bytes(data_at - len(prefix))
        return bytes(prefix)

    def _write_sidecar(self, lines: str, at: int) -> int:
        """Write ``lines`` to the sidecar at ``at``; where they end."""
        data = lines.encode("ascii")
        pwrite_all(self.sidecar_fd, [data], at)
        return at + len(data)

    def flush(self) -> None:
        """Nothing is buffered: every batch goes straight to the file and the sidecar."""

    def close(self, metadata: str | None) -> None:
        try:
            if self.pages:
                self._complete(metadata)
        finally:
            for fd in (self.fd, self.sidecar_fd):
                if fd >= 0:
                    os.close(fd)
            self.fd = self.sidecar_fd = -1

    def _complete(self, metadata: str | None) -> None:
        """ImageJ's remaining IFDs, then (if it changed) the metadata, then the links."""
        tail = bytearray()
        first_trailing = at = _align(self.end)
        for index in range(1, self.pages):
            base = len(tail)
            tail += self.next_ifd
            self.layout.offset.pack_into(
                tail, base + self.next_strip_field, self.data_at + index * self.frame_bytes
            )
            at += len(self.next_ifd)
            if index < self.pages - 1:
                self.layout.offset.pack_into(tail, base + len(self.next_ifd) - 4, at)
        counts_at = at
        if metadata is not None:
            counts, info = self._info(metadata)
            tail += counts + info
        pwrite_all(self.fd, [bytes(first_trailing - self.end), tail], self.end)
        patch = self.layout.count_and_value.pack
        if self.pages > 1:
            next_link = 8 + len(self.first_ifd) - 4
            pwrite_all(self.fd, [self.layout.offset.pack(first_trailing)], next_link)
        if metadata is not None:
            pwrite_all(self.fd, [patch(len(counts) // 4, counts_at)],
                        8 + self.first_where[_IJ_BYTE_COUNTS])  # fmt: skip
            pwrite_all(self.fd, [patch(len(info), counts_at + len(counts))],
                        8 + self.first_where[_IJ_METADATA])  # fmt: skip


class _TifffileStack(_Stack):
    """Pages written by tifffile one by one: compressed, RGB(A) or boolean frames."""

    def __init__(
        self,
        path: Path,
        bigtiff: bool,
        limit: int,
        frame: npt.NDArray[Any],
        compression: str | None,
    ) -> None:
        super().__init__(path, bigtiff, limit)
        self.compression = compression
        # Horizontal differencing: 10-20 % smaller integer frames, read by every TIFF reader.
        self.predictor = compression is not None and frame.dtype.kind in "ui"
        self.photometric = (
            "rgb" if frame.ndim == 3 else None if frame.dtype.kind == "b" else "minisblack"
        )
        # LZW can grow noise by half; deflate and zstd by far less.
        self.page_bound = frame.nbytes * 3 // 2 + _PAGE_OVERHEAD
        self.writer: tifffile.TiffWriter | None = None

    def frames_fitting(self, wanted: int, reserve: int) -> int:
        if self.bigtiff:
            return wanted
        end = 16 if self.writer is None else int(self.writer.filehandle.tell())
        return max(0, min(wanted, (self.limit - end - reserve) // self.page_bound))

    def write(self, pages: _Pages) -> None:
        if self.writer is None:
            self.writer = tifffile.TiffWriter(self.path, bigtiff=self.bigtiff)
        for frame, description in zip(pages.frames, pages.descriptions(), strict=True):
            self.writer.write(frame, contiguous=False, compression=self.compression,
                              predictor=self.predictor, photometric=self.photometric,
                              description=description, metadata=None)  # fmt: skip
            self.pages += 1
        self.last = pages

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.filehandle.flush()

    def close(self, metadata: str | None) -> None:
        if self.writer is None:
            return
        self.writer.close()
        if metadata is None or self.last is None:
            return
        with tifffile.TiffFile(self.path) as tif:
            entry = tif.pages[-1].tags[_DESCRIPTION].offset  # type: ignore[union-attr]
        layout = _Layout(self.bigtiff)
        description = self.last.last_description(metadata).encode("ascii") + b"\0"
        fd = os.open(self.path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            end = _align(os.fstat(fd).st_size)
            pwrite_all(fd, [description], end)
            pwrite_all(fd, [layout.count_and_value.pack(len(description), end)], entry + 4)
        finally:
            os.close(fd)


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
    limit, continues in a BigTIFF part ``<stream>.part0001.tif`` that can grow without
    bound; readers of the stream concatenate the parts in part order (``<stream>.tif``,
    then ``<stream>.part0001.tif``, ...: a plain sorted glob puts the parts first). ``bigtiff=True``
    writes BigTIFF from the start (one file); ``bigtiff=False`` keeps every part
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
        self._stacks: dict[str, _Stack] = {}
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
        block = self._check_frames(stream, frames, timestamps_ns, frame_numbers)
        frames = block.frames
        count = len(frames)
        if count == 0:
            return
        little = frames.dtype.newbyteorder("<")
        if frames.dtype != little:
            frames = frames.astype(little)
        numbers, stamps = block.frame_numbers.tolist(), block.timestamps_ns.tolist()
        metadata = self._metadata_text(stream)
        reserve = 2 * len(metadata) + _METADATA_SLACK
        stream_json = json.dumps(stream)
        done = 0
        while done < count:
            stack = self._stacks.get(stream)
            fitting = 0 if stack is None else stack.frames_fitting(count - done, reserve)
            if stack is None or fitting == 0:
                stack = self._next_stack(stream, frames[0], reserve, previous=stack)
                fitting = stack.frames_fitting(count - done, reserve)
            part = slice(done, done + fitting)
            pages = _Pages(
                frames[part], numbers[part], stamps[part], stream_json,
                metadata if stack.metadata != metadata else None,
            )  # fmt: skip
            nbytes = pages.frames.nbytes
            self._ensure_room(nbytes + fitting * _PAGE_OVERHEAD + reserve,
                              f"frames of stream {stream!r}", stack.path)  # fmt: skip
            first = stack.pages == 0
            with storage_errors(stack.path, f"cannot write frames of stream {stream!r}"):
                stack.write(pages)
            if first or stack.takes_late_metadata:
                stack.metadata = metadata
            self._stats.frames += fitting
            self._stats.bytes_written += nbytes
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
        if 0 in shape:
            raise UnsupportedData(f"stream {stream!r}: frame shape {shape} is empty")
        if self.imagej and (len(shape) != 2 or frames.dtype not in _IMAGEJ_DTYPES):
            raise UnsupportedData(
                f"stream {stream!r}: an ImageJ hyperstack holds 2-D uint8, uint16 or float32 "
                f"frames; got dtype {frames.dtype} frame shape {shape}"
            )

    def _metadata_text(self, stream: str) -> str:
        cached = self._metadata_texts.get(stream)
        if cached is None or cached[0] != self._metadata_version:
            cached = (self._metadata_version, _metadata_json(self._metadata_for(stream)))
            self._metadata_texts[stream] = cached
        return cached[1]

    def _next_stack(
        self, stream: str, frame: npt.NDArray[Any], reserve: int, previous: _Stack | None
    ) -> _Stack:
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
        if isinstance(stack, _ImageJStack):
            self._add_file(stack.sidecar)
        return stack

    def _new_stack(self, path: Path, bigtiff: bool, frame: npt.NDArray[Any], stream: str) -> _Stack:
        limit = 2**63 if bigtiff else self.classic_limit
        if self.imagej:
            return _ImageJStack(path, limit, frame, json.dumps(stream))
        if self.compression is None and frame.ndim == 2 and frame.dtype.kind in "uif":
            return _PageStack(path, bigtiff, limit, frame)
        return _TifffileStack(path, bigtiff, limit, frame, self.compression)

    def flush(self) -> None:
        self._check_open()
        for stack in self._stacks.values():
            with storage_errors(stack.path, "cannot flush TIFF file"):
                stack.flush()

    def _finish(self, stream: str, stack: _Stack) -> None:
        metadata = self._metadata_text(stream)
        with storage_errors(stack.path, "cannot close TIFF file"):
            stack.close(metadata if stack.pages and stack.metadata != metadata else None)

    def _close(self) -> None:
        try:
            finish_all(functools.partial(self._finish, stream, stack)
                       for stream, stack in self._stacks.items())  # fmt: skip
        finally:
            self._stacks.clear()
