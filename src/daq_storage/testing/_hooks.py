"""What every test of the conformance suite needs: the writer under test, its class
(whose capabilities decide which tests apply), and how a scientist reads its output."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, ClassVar, NoReturn

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pytest

from daq_storage.read import FORMATS, Run, open_run
from daq_storage.writers import StreamPart, Writer, get_writer_class, open_writer

__all__ = [
    "ConformanceBase",
    "child_environment",
    "fill_disk",
    "null_to_none",
    "stats_without_walking",
    "tree_size",
]


def child_environment() -> dict[str, str]:
    """The environment of a child Python that must import what this process imports
    (a plug-in on a path added at run time included)."""
    path = os.pathsep.join(p for p in sys.path if p)
    return {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1"}


def null_to_none(values: list[Any]) -> list[Any]:
    """Values with every kind of null (``None``, NaN) as ``None``: a reader decodes a
    null as what its format has (a float column's NaN, an Arrow null)."""
    return [None if v is None or (isinstance(v, float) and v != v) else v for v in values]


class ConformanceBase:
    """The declarations a subclass fills in, and the readers it implements.

    Capabilities come from the writer class (``supports_tables``, ``supports_frames``,
    the ``on_*`` evolution policy, ``path_is_directory``): a test that does not apply to
    them is skipped, with the reason.
    """

    #: The registry name of the writer under test (:func:`daq_storage.open_writer`).
    writer_name: ClassVar[str]
    #: File or directory name of the output inside the test's ``tmp_path``.
    target: ClassVar[str]
    #: Keyword options every writer of the test class is opened with (they must be
    #: literals: process tests open the writer in a child by ``repr``).
    options: ClassVar[dict[str, Any]] = {}
    #: Prefix for generated text; CSV needs one so "1" or "nan" is not read back as a number.
    text_prefix: ClassVar[str] = ""
    #: Whether frames' ``timestamp_ns`` reads back as dates (TIFF pages hold integers).
    frame_times_are_dates: ClassVar[bool] = True
    #: Whether column attributes keep numbers as numbers (Arrow and Parquet metadata is
    #: text, and a number there is its JSON text).
    typed_attributes: ClassVar[bool] = True
    #: Whether the file-size limit can stand in for a full disk (not for stores made of
    #: many small files, such as Zarr).
    file_size_limit_applies: ClassVar[bool] = True

    # --- the writer and its capabilities ---
    @property
    def writer_class(self) -> type[Writer]:
        return get_writer_class(self.writer_name)

    @property
    def tables_supported(self) -> bool:
        return bool(self.writer_class.supports_tables)

    @property
    def frames_supported(self) -> bool:
        return bool(self.writer_class.supports_frames)

    def open(self, tmp_path: Path, **options: Any) -> Writer:
        """A new writer on ``tmp_path / target``."""
        return open_writer(self.writer_name, tmp_path / self.target, **{**self.options, **options})

    def requires_tables(self) -> None:
        if not self.tables_supported:
            self.skip(f"{self.writer_name} declares supports_tables = False")

    def requires_frames(self) -> None:
        if not self.frames_supported:
            self.skip(f"{self.writer_name} declares supports_frames = False")

    def skip(self, reason: str) -> NoReturn:
        pytest.skip(reason)

    def first_class_of_format(self) -> None:
        """Skip in a subclass of another test class of the same writer (a codec variant):
        process tests (kill, full disk) run once per format."""
        for base in type(self).__mro__[1:]:
            if base.__dict__.get("writer_name") == self.writer_name:
                self.skip(f"runs once per format, in {base.__name__}")

    # --- how a scientist reads the result ---
    # For the built-in formats, daq_storage.read.open_run reads it (the project's one
    # reader, checked against each format's own library in the project's tests); a
    # plug-in's test class implements these with its format's reader.
    def _open_run(self, path: Path) -> Run:
        if self.writer_name not in FORMATS:
            raise NotImplementedError(
                f"{type(self).__name__}: implement read_table / read_frames / read_metadata "
                f"with the reader of {self.writer_name!r} outputs"
            )
        return open_run(path, format=self.writer_name)

    def read_table(self, path: Path, stream: str) -> pa.Table:
        """The table ``stream`` as the format's usual reader gives it (its first part)."""
        with self._open_run(path) as run:
            return run.table(stream, part=0)

    def read_frames(
        self, path: Path, stream: str
    ) -> tuple[npt.NDArray[Any], npt.NDArray[Any], npt.NDArray[Any]]:
        """Frames, ``timestamp_ns`` and ``frame_number`` of ``stream``."""
        with self._open_run(path) as run:
            frames = run.frames(stream)
            return np.asarray(frames), frames.timestamps_ns, frames.frame_numbers

    def read_metadata(self, path: Path, stream: str | None) -> dict[str, Any]:
        """The file's metadata (``stream=None``) or a stream's."""
        with self._open_run(path) as run:
            return run.metadata if stream is None else run.stream(stream).metadata

    def read_column_attributes(self, path: Path, stream: str, column: str) -> dict[str, Any]:
        """What the format keeps about one column (units, long_name, ...)."""
        raise NotImplementedError

    def read_times(self, path: Path, stream: str, column: str) -> npt.NDArray[Any]:
        """A time column as the reader decodes it (``datetime64``)."""
        raise NotImplementedError

    def read_frame_times(self, path: Path, stream: str) -> npt.NDArray[Any]:
        """A frame stream's ``timestamp_ns`` as the reader decodes it (``datetime64``)."""
        raise NotImplementedError

    def read_part(self, part: StreamPart) -> pa.Table:
        """One part of a table stream (see :meth:`Writer.describe`), read as
        :meth:`read_table` reads a stream: a key inside a file (HDF5 group, Zarr group,
        ...) is read as the stream of that name; a file of its own (``s__part0002.arrows``)
        as the stream named by its stem."""
        if type(self).read_table is ConformanceBase.read_table and self.writer_name in FORMATS:
            return self._read_part_of_run(part)
        path = part.path
        assert isinstance(path, Path), "the conformance suite writes local outputs"
        if part.key:
            return self.read_table(path, part.key.strip("/"))
        name = path.name
        for suffix in self.writer_class.suffixes:
            if name.endswith(suffix):
                return self.read_table(path.parent, name[: -len(suffix)])
        return self.read_table(path.parent, path.stem)

    def _read_part_of_run(self, part: StreamPart) -> pa.Table:
        """``part`` through open_run: the part of whichever stream lists it."""
        path = part.path
        assert isinstance(path, Path), "the conformance suite writes local outputs"
        where = path if part.key else path.parent
        with self._open_run(where) as run:
            for name, info in run.streams.items():
                for index, held in enumerate(info.parts):
                    same_file = (
                        isinstance(held.path, Path) and held.path.resolve() == path.resolve()
                    )
                    if same_file and held.key.strip("/") == part.key.strip("/"):
                        return run.table(name, part=index)
        raise AssertionError(f"no stream of {where} lists the part {part}")

    # --- helpers of the tests ---
    def write_something(self, writer: Writer, stream: str) -> None:
        """Ten rows of ``v`` (a frames-only writer: one 4x4 frame)."""
        if self.tables_supported:
            writer.write_batch(stream, pa.record_batch({"v": np.arange(10, dtype=np.float64)}))
        else:
            writer.write_frames(stream, np.zeros((1, 4, 4), np.uint16))

    def count_stored(self, path: Path, stream: str) -> int:
        """Rows (frames) a reader finds in ``stream``'s first part."""
        if self.tables_supported:
            return int(self.read_table(path, stream).num_rows)
        return len(self.read_frames(path, stream)[0])

    def read_parts(self, writer: Writer, stream: str) -> list[pa.Table]:
        """Every part of a table stream, read back, in order."""
        return [self.read_part(part) for part in writer.describe(stream).parts]

    def read_values(self, path: Path, stream: str, *, frames: bool | None = None) -> list[Any]:
        """Column ``v`` of a table stream, or each frame's first value (``frames``: which
        the stream holds; by default tables where the writer takes them)."""
        if not self.frames_wanted(frames):
            return list(self.read_table(path, stream).column("v").to_pylist())
        stack = self.read_frames(path, stream)[0]
        return list(stack.reshape(len(stack), -1)[:, 0].tolist())

    def read_all_values(
        self, path: Path, stream: str = "s", *, frames: bool | None = None
    ) -> list[Any]:
        """Column ``v`` of a table stream, or every value of its frames, in order
        (``frames`` as for :meth:`read_values`)."""
        if not self.frames_wanted(frames):
            return list(self.read_table(path, stream).column("v").to_pylist())
        return list(self.read_frames(path, stream)[0].reshape(-1).tolist())

    def write_values(
        self, writer: Writer, stream: str, values: npt.NDArray[Any], *, frames: bool | None = None
    ) -> None:
        """``values`` as column ``v``, or (``frames``; by default for a frames-only writer)
        as 10x100 float32 frames, a thousand values each: a dtype every frame format
        holds, ImageJ's included."""
        if self.frames_wanted(frames):
            writer.write_frames(stream, values.astype(np.float32).reshape(-1, 10, 100))
        else:
            writer.write_batch(stream, pa.record_batch({"v": values}))

    def frames_wanted(self, frames: bool | None) -> bool:
        """``frames``, or by default whether the writer takes frames only."""
        return not self.tables_supported if frames is None else frames

    # --- a small real filesystem ---
    @pytest.fixture
    def small_disk(self, tmp_path: Path) -> Iterator[Path]:
        """A real 8 MiB filesystem (tmpfs) that fills up; skipped where mounting needs
        rights this process does not have. (Small: a test that fills it writes and reads
        back all of it.)"""
        if os.geteuid() != 0 or shutil.which("mount") is None:
            pytest.skip("mounting a tmpfs needs root")
        point = tmp_path / "small_disk"
        point.mkdir()
        command = ["mount", "-t", "tmpfs", "-o", "size=8m,mode=0700", "tmpfs", str(point)]
        result = subprocess.run(command, capture_output=True, check=False)
        if result.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {result.stderr.decode().strip()}")
        try:
            yield point
        finally:
            subprocess.run(["umount", "-l", str(point)], check=False)


def fill_disk(disk: Path, leave: int) -> Path:
    """Fill ``disk`` as another process would, leaving about ``leave`` bytes free; returns
    the filler file (unlink it to free the room)."""
    filler = disk / "filler"
    block = bytes(1 << 16)
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:  # unbuffered: nothing is left to fail at close
        while True:
            os.write(fd, block)
    except OSError:
        pass
    finally:
        os.close(fd)
    os.truncate(filler, max(0, filler.stat().st_size - leave))
    return filler


def stats_without_walking(writer: Writer, monkeypatch: pytest.MonkeyPatch) -> Any:
    """``writer.stats`` taken while every way of listing a directory raises."""

    def refuse(*args: Any, **kwargs: Any) -> NoReturn:
        raise AssertionError("stats walked a directory")

    with monkeypatch.context() as patch:
        for owner, name in [(os, "walk"), (os, "scandir"), (os, "listdir"), (Path, "rglob"),
                            (Path, "glob"), (Path, "iterdir"), (Path, "walk")]:  # fmt: skip
            if hasattr(owner, name):
                patch.setattr(owner, name, refuse)
        return writer.stats


def tree_size(paths: Iterable[Path]) -> int:
    """Bytes of the regular files at or under ``paths``, each file counted once."""
    files: set[Path] = set()
    for path in paths:
        if path.is_file():
            files.add(path.resolve())
        elif path.is_dir():
            files.update(p.resolve() for p in path.rglob("*") if p.is_file())
    return sum(file.stat().st_size for file in files)
