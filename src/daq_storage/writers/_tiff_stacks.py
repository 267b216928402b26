"""TIFF files of one stream each: our page writer (uncompressed stacks, ImageJ
hyperstacks) and tifffile's (compressed, RGB, boolean frames).

Our page writer puts each batch of frames on disk in one system call, followed by IFDs
built from a template, and only then links the batch into the file (one small write),
so a crash never leaves a page that points at missing bytes.

A TIFF file without a page is one no reader opens: every file is made under a hidden
temporary name (:func:`~daq_storage.writers._per_stream.create_hidden`) and takes its
name (a hard link, never replacing a file) only once its first page is whole on disk:
after our writer's first batch, at tifffile's first flush (or close). A stack that
stored nothing leaves nothing.
"""

from __future__ import annotations

import json
import os
import struct
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, ClassVar

import numpy as np
import numpy.typing as npt
import tifffile

from daq_storage.writers._base import pwrite_all
from daq_storage.writers._per_stream import create_hidden, publish

__all__ = [
    "IMAGEJ_DTYPES",
    "METADATA_SLACK",
    "PAGE_OVERHEAD",
    "ImageJStack",
    "PageStack",
    "Pages",
    "Stack",
    "TifffileStack",
    "metadata_json",
]

# TIFF field types and tags.
_BYTE, _ASCII, _SHORT, _LONG, _LONG8 = 1, 2, 3, 4, 16
_WIDTH, _HEIGHT, _BITS, _COMPRESSION, _PHOTOMETRIC = 256, 257, 258, 259, 262
_DESCRIPTION, _STRIP_OFFSETS, _SAMPLES, _ROWS_PER_STRIP, _STRIP_BYTES = 270, 273, 277, 278, 279
_SAMPLE_FORMAT, _IJ_BYTE_COUNTS, _IJ_METADATA = 339, 50838, 50839
_SAMPLE_FORMATS = {"u": 1, "i": 2, "f": 3}
IMAGEJ_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.float32))
_INLINE = {_SHORT: "<H", _LONG: "<I", _LONG8: "<Q"}

# A bound on what one page adds besides its pixels (IFD, description, alignment).
PAGE_OVERHEAD = 1024
METADATA_SLACK = 4096


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


def metadata_json(items: dict[str, str]) -> str:
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
class Pages:
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


def _unborn(fd: int, hidden: Path | None) -> None:
    """Close a file that never got its name, and remove it."""
    os.close(fd)
    if hidden is not None:
        hidden.unlink(missing_ok=True)


class Stack(ABC):
    """One TIFF file of a stream; the file is created by the first write, under a
    temporary name until its first page is whole (see the module notes)."""

    #: Each batch's first page can carry metadata set since the previous batch (ImageJ
    #: keeps it in the first page only, rewritten at close).
    takes_late_metadata: ClassVar[bool] = True

    def __init__(self, path: Path, bigtiff: bool, limit: int) -> None:
        self.path = path
        self.bigtiff = bigtiff
        self.limit = limit  # bytes the file may grow to
        self.pages = 0
        self.part = 0  # the stream's part this file is (0: its first file)
        self.metadata: str | None = None  # the stream's metadata as this file holds it
        self.last: Pages | None = None  # the last batch written, for late metadata

    @property
    def visible_pages(self) -> int:
        """Pages a reader opening the file now finds (linked, and on disk before the
        link): every page written, unless the stack buffers."""
        return self.pages

    def files(self) -> list[Path]:
        """The files this stack writes (a durable flush fsyncs them)."""
        return [self.path]

    @abstractmethod
    def frames_fitting(self, wanted: int, reserve: int) -> int:
        """How many of ``wanted`` frames fit below the limit, keeping ``reserve`` bytes."""

    @abstractmethod
    def write(self, pages: Pages) -> None: ...

    @abstractmethod
    def flush(self) -> None:
        """Hand everything written so far to the operating system."""

    @abstractmethod
    def fsync(self) -> None:
        """Put everything handed to the operating system on disk."""

    @abstractmethod
    def close(self, metadata: str | None) -> None:
        """Complete the file; ``metadata``: set since the last page, attach it."""


class PageStack(Stack):
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
        self.hidden: Path | None = None  # the file's name until its first batch is whole
        self.end = len(layout.header)  # where the next batch goes
        self.link = layout.first_link  # the zero link the next batch is hooked onto
        self.last_description_entry = 0

    def frames_fitting(self, wanted: int, reserve: int) -> int:
        if self.bigtiff:
            return wanted
        room = self.limit - self.end - reserve
        return max(0, min(wanted, room // (self.frame_bytes + PAGE_OVERHEAD)))

    def write(self, pages: Pages) -> None:
        # Nothing is counted until every write of the batch succeeded: a failed one is
        # written again, at the same place, by the next call.
        if self.fd < 0:
            self.hidden, self.fd = create_hidden(self.path)
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
        if self.hidden is not None:  # the first page is whole: the file takes its name
            hidden, self.hidden = self.hidden, None
            try:
                publish(hidden, self.path)
            except BaseException:
                os.close(self.fd)
                self.fd = -1
                raise
        self.link = next_link
        self.end = at
        self.pages += len(frames)
        self.last = pages

    def flush(self) -> None:
        """Nothing is buffered: every batch goes straight to the file."""

    def fsync(self) -> None:
        if self.fd >= 0:
            os.fsync(self.fd)

    def close(self, metadata: str | None) -> None:
        if self.fd < 0:
            return
        if self.hidden is not None:  # no batch was ever whole: nothing to keep
            _unborn(self.fd, self.hidden)
            self.fd, self.hidden = -1, None
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


class ImageJStack(Stack):
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
        self.hidden: tuple[Path, Path] | None = None  # temporary names (file, sidecar)
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

    def write(self, pages: Pages) -> None:
        # Nothing is counted until every write of the batch succeeded: a failed one is
        # written again, at the same place, by the next call.
        frames = pages.frames.reshape(-1).view(np.uint8)
        lines = "".join(f"{n},{t}\n" for n, t in zip(pages.numbers, pages.stamps, strict=True))
        images = self.pages + len(pages.numbers)
        description = self._description(images).ljust(self.description_size, b"\0")
        if self.fd < 0:
            hidden, self.fd = create_hidden(self.path)
            try:
                hidden_sidecar, self.sidecar_fd = create_hidden(self.sidecar)
            except BaseException:
                _unborn(self.fd, hidden)
                self.fd = -1
                raise
            self.hidden = (hidden, hidden_sidecar)
        if self.pages == 0:
            prefix = self._prefix(description, pages.metadata or "{}")
            pwrite_all(self.fd, [prefix, frames], 0)
            sidecar_end = self._write_sidecar("frame_number,timestamp_ns\n" + lines, 0)
            pwrite_all(self.fd, [self.layout.offset.pack(8)], self.layout.first_link)
            self._publish()
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

    def _publish(self) -> None:
        """Give the file and its sidecar (first, so the file never lacks it) their names."""
        assert self.hidden is not None
        (hidden, hidden_sidecar), self.hidden = self.hidden, None
        try:
            publish(hidden_sidecar, self.sidecar)
            try:
                publish(hidden, self.path)
            except BaseException:
                self.sidecar.unlink(missing_ok=True)  # ours: it was linked just now
                raise
        except BaseException:
            hidden.unlink(missing_ok=True)
            os.close(self.fd)
            os.close(self.sidecar_fd)
            self.fd = self.sidecar_fd = -1
            raise

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

    def fsync(self) -> None:
        for fd in (self.fd, self.sidecar_fd):
            if fd >= 0:
                os.fsync(fd)

    def files(self) -> list[Path]:
        return [self.path, self.sidecar]

    def close(self, metadata: str | None) -> None:
        try:
            if self.pages:
                self._complete(metadata)
        finally:
            for fd in (self.fd, self.sidecar_fd):
                if fd >= 0:
                    os.close(fd)
            for hidden in self.hidden or ():  # no batch was ever whole: nothing to keep
                hidden.unlink(missing_ok=True)
            self.fd = self.sidecar_fd = -1
            self.hidden = None

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


class TifffileStack(Stack):
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
        self.page_bound = frame.nbytes * 3 // 2 + PAGE_OVERHEAD
        self.handle: BinaryIO | None = None
        self.hidden: Path | None = None  # the file's name until a flush made a page whole
        self.writer: tifffile.TiffWriter | None = None
        self.flushed = 0  # pages handed to the operating system by the last flush

    @property
    def visible_pages(self) -> int:
        """tifffile links a page before writing it, through a buffer: the pages of the
        last :meth:`flush` are whole on disk."""
        return self.flushed

    def frames_fitting(self, wanted: int, reserve: int) -> int:
        if self.bigtiff:
            return wanted
        end = 16 if self.writer is None else int(self.writer.filehandle.tell())
        return max(0, min(wanted, (self.limit - end - reserve) // self.page_bound))

    def write(self, pages: Pages) -> None:
        if self.writer is None:
            if self.handle is None:
                self.hidden, fd = create_hidden(self.path)
                os.close(fd)  # tifffile wants a file object with a name
                self.handle = open(self.hidden, "r+b")  # noqa: SIM115 (closed in close())
            self.writer = tifffile.TiffWriter(self.handle, bigtiff=self.bigtiff)
        for frame, description in zip(pages.frames, pages.descriptions(), strict=True):
            self.writer.write(frame, contiguous=False, compression=self.compression,
                              predictor=self.predictor, photometric=self.photometric,
                              description=description, metadata=None)  # fmt: skip
            self.pages += 1
        self.last = pages

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.filehandle.flush()
            self._publish()
        self.flushed = self.pages

    def _publish(self) -> None:
        """Give the file its name once a page of it is on disk (see the module notes)."""
        if self.hidden is not None and self.pages:
            hidden, self.hidden = self.hidden, None
            publish(hidden, self.path)

    def fsync(self) -> None:
        if self.handle is not None:
            self.flush()
            os.fsync(self.handle.fileno())

    def close(self, metadata: str | None) -> None:
        try:
            if self.writer is not None:
                self.writer.close()
        finally:
            if self.handle is not None:
                self.handle.close()
            self._publish()  # what tifffile wrote, as a file left under its name would be
            if self.hidden is not None:  # no page was ever written: nothing to keep
                self.hidden.unlink(missing_ok=True)
                self.hidden = None
        self.flushed = self.pages
        if self.writer is None or metadata is None or self.last is None:
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
