"""TIFF (tifffile): frames appended to a multi-page stack per stream. Frames only."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, ClassVar

import numpy.typing as npt
import pyarrow as pa
import tifffile

from daq_storage.errors import ConfigError, UnsupportedData
from daq_storage.writers._base import storage_errors
from daq_storage.writers._per_stream import PerStreamWriter

__all__ = ["TiffWriter"]

_CODECS = {"none": None, "zlib": "zlib", "zstd": "zstd", "lzw": "lzw"}
# Classic TIFF addresses 4 GiB; leave room for the page directories.
_CLASSIC_LIMIT = (4 << 30) - (64 << 20)


class _Stack:
    def __init__(self, path: Path, writer: tifffile.TiffWriter, bigtiff: bool) -> None:
        self.path = path
        self.writer = writer
        self.bigtiff = bigtiff
        self.bytes = 0
        self.sidecar: Any = None


class TiffWriter(PerStreamWriter):
    """One multi-page TIFF per stream, in the directory ``path``.

    Every page carries a JSON description with its ``frame_number`` and
    ``timestamp_ns`` (and the stream's metadata on the first page). With
    ``imagej=True`` the stack is an ImageJ hyperstack (uncompressed, as ImageJ reads it
    natively); the per-frame ids then go to ``<stream>.frames.csv`` beside it.

    Args:
        path: output directory.
        compression: ``none`` (default), ``zlib``, ``zstd`` or ``lzw``.
        bigtiff: ``True``: BigTIFF from the start; ``None`` (default): classic TIFF,
            continuing in a BigTIFF part file when the stack would pass 4 GiB.
        imagej: write ImageJ hyperstack metadata (axes TYX).
    """

    name: ClassVar[str] = "tiff"
    suffixes: ClassVar[tuple[str, ...]] = (".tif", ".tiff")
    supports_frames: ClassVar[bool] = True
    supports_tables: ClassVar[bool] = False

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
        super().__init__(path)
        self.compression = _CODECS[compression]
        self.bigtiff = bigtiff
        self.imagej = imagej
        self._stacks: dict[str, _Stack] = {}

    def write_batch(self, stream: str, batch: pa.RecordBatch) -> None:
        self._check_open()
        raise UnsupportedData(
            f"TIFF cannot store tables (stream {stream!r}); use hdf5, parquet, arrow or csv"
        )

    def _stack(self, stream: str, incoming: int) -> _Stack:
        stack = self._stacks.get(stream)
        if stack is not None and not stack.bigtiff and stack.bytes + incoming > _CLASSIC_LIMIT:
            self._finish(stack)
            stack = None
            path = self._stream_path(stream, new_part=True)
            bigtiff = True
        elif stack is None:
            path = self._stream_path(stream)
            bigtiff = bool(self.bigtiff)
        else:
            return stack
        with storage_errors(path, "cannot create TIFF file"):
            writer = tifffile.TiffWriter(path, bigtiff=bigtiff, imagej=self.imagej)
        stack = self._stacks[stream] = _Stack(path, writer, bigtiff)
        if self.imagej:
            sidecar = path.with_suffix(".frames.csv")
            with storage_errors(sidecar, "cannot create frame-id file"):
                stack.sidecar = sidecar.open("w", encoding="utf-8")
                stack.sidecar.write("frame_number,timestamp_ns\n")
            self._add_file(sidecar)
        return stack

    def write_frames(
        self,
        stream: str,
        frames: npt.NDArray[Any],
        *,
        timestamps_ns: npt.ArrayLike | None = None,
        frame_numbers: npt.ArrayLike | None = None,
    ) -> None:
        block = self._check_frames(stream, frames, timestamps_ns, frame_numbers)
        stack = self._stack(stream, block.frames.nbytes)
        self._ensure_room(block.frames.nbytes, f"frames of stream {stream!r}", stack.path)
        with storage_errors(stack.path, f"cannot write frames of stream {stream!r}"):
            if self.imagej:
                # One contiguous series: ImageJ reads it as a T stack of the frame shape.
                first = stack.bytes == 0
                stack.writer.write(block.frames, contiguous=True,
                                   metadata={"axes": "TYX"} if first else None)  # fmt: skip
                stack.sidecar.writelines(
                    f"{int(n)},{int(t)}\n"
                    for n, t in zip(block.frame_numbers, block.timestamps_ns, strict=True)
                )
                stack.bytes += block.frames.nbytes
            else:
                for frame, stamp, number in zip(
                    block.frames, block.timestamps_ns, block.frame_numbers, strict=True
                ):
                    ids: dict[str, Any] = {"stream": stream, "frame_number": int(number),
                                           "timestamp_ns": int(stamp)}  # fmt: skip
                    if stack.bytes == 0:
                        ids["metadata"] = {
                            k: json.loads(v) for k, v in self._metadata_for(stream).items()
                        }
                    stack.writer.write(frame, contiguous=False, compression=self.compression,
                                       description=json.dumps(ids), metadata=None)  # fmt: skip
                    stack.bytes += frame.nbytes
        self._stats.frames += len(block.frames)
        self._stats.bytes_written += block.frames.nbytes

    def flush(self) -> None:
        self._check_open()
        for stack in self._stacks.values():
            with storage_errors(stack.path, "cannot flush TIFF file"):
                stack.writer.filehandle.flush()
                if stack.sidecar is not None:
                    stack.sidecar.flush()

    def _finish(self, stack: _Stack) -> None:
        with storage_errors(stack.path, "cannot close TIFF file"):
            try:
                stack.writer.close()
            finally:
                if stack.sidecar is not None:
                    stack.sidecar.close()

    def _close(self) -> None:
        for stack in self._stacks.values():
            self._finish(stack)
        self._stacks.clear()
