"""The actor's synchronous half: the writer and everything done with it, run by the
actor's one worker thread (a writer is used from one thread at a time)."""

from __future__ import annotations

import contextlib
import errno
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from daq_storage.actor._messages import (
    Flush,
    GetStats,
    Message,
    SetInstrumentMetadata,
    SetMetadata,
    StorageStats,
    WriteBatch,
)
from daq_storage.errors import (
    DaqStorageError,
    FormatError,
    StorageIOError,
    UnsupportedData,
    WriterClosedError,
)
from daq_storage.naming import claim_path, next_path
from daq_storage.writers import Writer

__all__ = ["Core", "Output", "decode_batch"]

log = logging.getLogger("daq_storage.actor")

_NAME_ATTEMPTS = 100
_FILE_MAGIC = b"ARROW1"


@dataclass(frozen=True, slots=True)
class Output:
    """Where and how the actor writes: the writer class, its options, the directory and
    the experiment name its files are named after."""

    writer_class: type[Writer]
    options: dict[str, Any]
    output_dir: Path
    experiment: str


def decode_batch(data: Any, stream: str) -> pa.RecordBatch | pa.Table:
    """A :class:`WriteBatch`'s ``batch`` as Arrow: bytes in the IPC file format (they
    start with ``ARROW1``) or stream format, read whole; an Arrow batch or table as it is.

    Raises:
        UnsupportedData: the bytes are not Arrow IPC data (truncated, not Arrow at all).
    """
    if isinstance(data, pa.RecordBatch | pa.Table):
        return data
    buffer = pa.py_buffer(data)
    try:
        if buffer.size >= len(_FILE_MAGIC) and buffer[: len(_FILE_MAGIC)] == _FILE_MAGIC:
            return pa.ipc.open_file(buffer).read_all()
        return pa.ipc.open_stream(buffer).read_all()
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise UnsupportedData(
            f"WriteBatch for {stream!r}: {buffer.size} bytes are not Arrow IPC data (stream "
            f"or file format): {exc}"
        ) from None


class Core:
    """The writer, opened at the first message that stores something, under the next
    free ``{experiment}_{date}_{time}_v{N}`` name in the output directory.

    A write that fails on the disk (:class:`StorageIOError`) or in the format library
    (:class:`FormatError`) may leave the writer unable to go on: it is closed (what was
    flushed stays readable) and the next message that stores opens a new file.
    """

    def __init__(self, output: Output) -> None:
        self.output = output
        self.writer: Writer | None = None
        self.path: Path | None = None
        self.dirty = False  # stored since the last flush
        self._earlier_batches = 0  # of files closed after a failure
        self._earlier_bytes = 0

    # ------------------------------------------------------------------ messages
    def handle(self, message: Message) -> StorageStats | None:
        """Do what ``message`` asks; the reply (a :class:`StorageStats` for GetStats)."""
        if isinstance(message, GetStats):
            return self.stats()
        if isinstance(message, Flush):
            self.flush(durable=message.durable)
            return None
        with self._failures():
            if isinstance(message, WriteBatch):
                table = decode_batch(message.batch, message.instrument_id)
                self._writer().write_batch(message.instrument_id, table)
            elif isinstance(message, SetMetadata):
                self._writer().set_metadata(message.key, message.value)
            else:
                assert isinstance(message, SetInstrumentMetadata)
                self._writer().set_metadata(
                    message.key, message.value, stream=message.instrument_id
                )
        self.dirty = True
        return None

    def flush(self, *, durable: bool = False) -> None:
        if self.writer is not None:
            with self._failures():
                self.writer.flush(durable=durable)
        self.dirty = False

    def close(self) -> None:
        """Flush and close the writer (if one is open); idempotent."""
        writer, self.writer = self.writer, None
        self.dirty = False
        if writer is not None:
            self._count_closed(writer)
            try:
                writer.close()
            except DaqStorageError:
                raise
            except Exception as exc:
                raise StorageIOError(
                    errno.EIO, f"cannot close {writer.name} output: {type(exc).__name__}: {exc}",
                    str(writer.path),
                ) from exc  # fmt: skip

    def stats(self) -> StorageStats:
        writer = self.writer
        if writer is None:
            return StorageStats(self._earlier_batches, self._earlier_bytes, 0, 0, self.path)
        counted = writer.stats
        columns = 0
        for stream in writer.streams:
            with contextlib.suppress(DaqStorageError):
                columns += len(writer.describe(stream).columns)
        return StorageStats(
            batches_written=self._earlier_batches + counted.batches,
            bytes_written=self._earlier_bytes + counted.bytes_written,
            file_size=counted.file_size,
            num_datasets=columns,
            file_path=self.path,
        )

    # ------------------------------------------------------------------ helpers
    @contextlib.contextmanager
    def _failures(self) -> Any:
        """A refusal (a bad name, type or schema) leaves the writer as it was; a failure
        on the disk or in the library closes it (the next write opens a new file);
        anything else is reported as a DaqStorageError naming the output."""
        try:
            yield
        except (StorageIOError, FormatError, WriterClosedError) as exc:
            log.warning("storage actor: %s; closing %s, a new file follows", exc, self.path)
            self._abandon()
            raise
        except DaqStorageError:
            raise
        except Exception as exc:
            log.exception("storage actor: unexpected failure writing %s", self.path)
            self._abandon()
            raise StorageIOError(errno.EIO, f"{type(exc).__name__}: {exc}", str(self.path)) from exc

    def _abandon(self) -> None:
        writer, self.writer = self.writer, None
        if writer is not None:
            self._count_closed(writer)
            with contextlib.suppress(Exception):  # the first error is the one reported
                writer.close()

    def _count_closed(self, writer: Writer) -> None:
        counted = writer.stats
        self._earlier_batches += counted.batches
        self._earlier_bytes += counted.bytes_written

    def _writer(self) -> Writer:
        if self.writer is None:
            self.writer, self.path = self._open()
            log.info("storage actor: writing %s", self.path)
            self.writer.set_metadata("experiment", self.output.experiment)
        return self.writer

    def _open(self) -> tuple[Writer, Path]:
        out = self.output
        cls = out.writer_class
        if not cls.path_suffix:  # a directory of per-stream files: claimed, then filled
            path = claim_path(out.output_dir, out.experiment, "", directory=True)
            try:
                return cls(path, **out.options), path
            except BaseException:
                with contextlib.suppress(OSError):
                    path.rmdir()
                raise
        # A file (.h5) or store (.zarr) made by its writer, exclusively, under the next
        # free name: no empty claimed name is left for a kill to find.
        for _ in range(_NAME_ATTEMPTS):
            path = next_path(out.output_dir, out.experiment, cls.path_suffix)
            try:
                return cls(path, **out.options), path
            except OSError as exc:
                if exc.errno != errno.EEXIST:
                    raise
        raise StorageIOError(
            errno.EEXIST, f"no free name for a new {cls.name} output after {_NAME_ATTEMPTS} "
            "attempts", str(out.output_dir),
        )  # fmt: skip
