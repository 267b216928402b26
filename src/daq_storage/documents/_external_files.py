"""Reading the files that external documents point at: HDF5 (h5py), TIFF (tifffile) and
NPY (numpy), as bluesky's handlers and consolidators read them.

Everything here raises :class:`ExternalFileError` naming the file (and dataset);
:mod:`daq_storage.documents._external` adds the document to the message.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import PurePosixPath
from typing import Any, Protocol
from urllib.parse import urlsplit
from urllib.request import url2pathname

import numpy as np

__all__ = [
    "DATUM_SPECS",
    "BadReference",
    "HDF5_MIMETYPE",
    "STREAM_MIMETYPES",
    "TIFF_FILE_MIMETYPE",
    "TIFF_MIMETYPE",
    "ExternalFileError",
    "Hdf5Rows",
    "RowSource",
    "PartedRows",
    "TiffPages",
    "TiffRows",
    "format_template",
    "map_path",
    "open_rows",
    "read_datum",
    "rows_per_event",
    "uri_to_path",
]

HDF5_MIMETYPE = "application/x-hdf5"
TIFF_MIMETYPE = "multipart/related;type=image/tiff"
#: One multi-page TIFF file, a page per row (daq-storage's TIFF writer).
TIFF_FILE_MIMETYPE = "image/tiff"
#: The ``stream_resource`` mimetypes whose frames can be copied.
STREAM_MIMETYPES = frozenset({HDF5_MIMETYPE, TIFF_MIMETYPE, TIFF_FILE_MIMETYPE})
#: The ``resource`` specs whose datums can be filled.
DATUM_SPECS = frozenset({"AD_HDF5", "AD_HDF5_SWMR", "HDF5", "AD_TIFF", "TIFF", "NPY_SEQ"})

#: Area detector HDF5 files keep their frames here (the ``AD_HDF5`` handler's fixed key).
AD_HDF5_DATASET = "/entry/data/data"

_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
#: Superblock (version >= 3) file consistency flag: a writer holds the file in SWMR mode.
_SWMR_WRITE_FLAG = 0x04
#: A printf integer conversion or ``%s`` in an area detector file template.
_PRINTF = re.compile(r"%[-+ #0]*\d*(?:\.\d+)?[sd]")


class ExternalFileError(Exception):
    """A referenced file cannot be read as announced; the message names the file."""


class BadReference(ExternalFileError):
    """The document itself is at fault (a keyword its spec needs is missing or wrong),
    not the file."""


def uri_to_path(uri: str) -> str | None:
    """The local path of a ``file:`` URI (host empty or ``localhost``) or of a plain
    path; ``None`` for anything else (another host, another scheme): not copied."""
    parts = urlsplit(uri)
    if not parts.scheme:
        return uri
    if parts.scheme != "file" or parts.netloc not in ("", "localhost"):
        return None
    return url2pathname(parts.path)


def map_path(path: str, root_map: Mapping[str, str]) -> str:
    """``path`` with the longest matching root of ``root_map`` replaced (a root matches
    whole path components only)."""
    pure = PurePosixPath(path)
    for old in sorted(root_map, key=len, reverse=True):
        try:
            rest = pure.relative_to(old)
        except ValueError:
            continue
        return str(PurePosixPath(root_map[old]) / rest)
    return path


def _swmr_writing(path: str) -> bool:
    """Whether the file's superblock says a writer holds it in SWMR mode (then it must be
    opened with ``swmr=True`` to see the frames flushed so far)."""
    try:
        with open(path, "rb") as file:
            head = file.read(12)
    except OSError:
        return False  # h5py's open reports it, with HDF5's reason
    return (
        head[:8] == _HDF5_SIGNATURE
        and len(head) == 12
        and head[8] >= 3
        and bool(head[11] & _SWMR_WRITE_FLAG)
    )


class RowSource(Protocol):
    """Rows (frames) of one referenced dataset, read on demand."""

    path: str

    def row_shape(self, first: int) -> tuple[int, ...]:
        """The shape of one row, looked up around row ``first``."""
        ...

    def read(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` as one array ``(stop - start, *row_shape)``."""
        ...

    def close(self) -> None:
        """Release the file."""
        ...


class Hdf5Rows:
    """Rows of one HDF5 dataset. Opened read-only, with ``swmr=True`` when the file says
    a SWMR writer holds it (or ``swmr`` says so), so frames a detector has flushed are
    seen while it still writes.

    Raises:
        ExternalFileError: the file cannot be opened or has no such dataset.
    """

    def __init__(self, path: str, dataset: str, *, swmr: bool | None = None) -> None:
        import h5py

        self.path = path
        use_swmr = _swmr_writing(path) if swmr is None else swmr
        try:
            self._file = h5py.File(path, "r", swmr=use_swmr)
        except OSError as exc:
            raise ExternalFileError(f"cannot open HDF5 file {path}: {exc}") from exc
        node = self._file.get(dataset)
        if not isinstance(node, h5py.Dataset) or node.ndim == 0:
            self._file.close()
            raise ExternalFileError(f"HDF5 file {path} has no dataset {dataset!r} of rows")
        self._dataset = node
        self._name = dataset

    def row_shape(self, first: int) -> tuple[int, ...]:
        return tuple(self._dataset.shape[1:])

    def read(self, start: int, stop: int) -> np.ndarray:
        have = self._dataset.shape[0]
        if have < stop:
            raise ExternalFileError(
                f"dataset {self._name!r} of {self.path} holds {have} rows, "
                f"rows {start}:{stop} were announced"
            )
        try:
            return np.asarray(self._dataset[start:stop])
        except OSError as exc:
            raise ExternalFileError(
                f"cannot read rows {start}:{stop} of {self._name!r} in {self.path}: {exc}"
            ) from exc

    def close(self) -> None:
        self._file.close()


def format_template(template: str, directory: str, filename: str, index: int) -> str:
    """A file path from an area detector template: new style (``"name_{:06d}.tiff"``,
    in ``directory``) or printf style (``"%s%s_%6.6d.tiff"`` = directory, filename,
    number; or ``"%s_%d.tiff"`` = filename, number; or ``"%d.tiff"``)."""
    if "%" not in template:
        return os.path.join(directory, template.format(index))
    conversions = len(_PRINTF.findall(template.replace("%%", "")))
    if conversions == 3:
        return template % (os.path.join(directory, ""), filename, index)
    if conversions == 2:
        return os.path.join(directory, template % (filename, index))
    return os.path.join(directory, template % index)


def _read_tiff(path: str) -> np.ndarray:
    import tifffile

    try:
        return np.asarray(tifffile.imread(path))
    except (OSError, ValueError, tifffile.TiffFileError) as exc:
        raise ExternalFileError(f"cannot read TIFF file {path}: {exc}") from exc


class TiffRows:
    """Rows of a TIFF file sequence (``multipart/related;type=image/tiff``): row ``i`` is
    page ``i % per_file`` of file number ``i // per_file``.

    Raises:
        ExternalFileError: a file is missing, unreadable or holds another page count.
    """

    def __init__(self, directory: str, template: str, filename: str, per_file: int) -> None:
        self.path = format_template(template, directory, filename, 0)
        self._directory = directory
        self._template = template
        self._filename = filename
        self._per_file = max(per_file, 1)
        self._cache: tuple[int, np.ndarray] | None = None

    def _file_pages(self, number: int) -> np.ndarray:
        if self._cache is not None and self._cache[0] == number:
            return self._cache[1]
        path = format_template(self._template, self._directory, self._filename, number)
        pages = _read_tiff(path)
        if self._per_file == 1:
            pages = pages[np.newaxis]
        elif pages.shape[0] != self._per_file:
            raise ExternalFileError(
                f"TIFF file {path} holds {pages.shape[0]} pages, {self._per_file} expected"
            )
        self._cache = (number, pages)
        return pages

    def row_shape(self, first: int) -> tuple[int, ...]:
        return tuple(self._file_pages(first // self._per_file).shape[1:])

    def read(self, start: int, stop: int) -> np.ndarray:
        rows = []
        for row in range(start, stop):
            number, page = divmod(row, self._per_file)
            rows.append(self._file_pages(number)[page])
        return np.stack(rows)

    def close(self) -> None:
        self._cache = None


class TiffPages:
    """Rows of one multi-page TIFF file (``image/tiff``): row ``i`` is page ``i``.

    Raises:
        ExternalFileError: the file cannot be read or holds fewer pages than announced.
    """

    def __init__(self, path: str) -> None:
        import tifffile

        self.path = path
        try:
            self._tif = tifffile.TiffFile(path)
        except (OSError, ValueError, tifffile.TiffFileError) as exc:
            raise ExternalFileError(f"cannot read TIFF file {path}: {exc}") from exc

    def row_shape(self, first: int) -> tuple[int, ...]:
        return tuple(self._tif.pages.first.shape)

    def read(self, start: int, stop: int) -> np.ndarray:
        have = len(self._tif.pages)
        if have < stop:
            raise ExternalFileError(
                f"TIFF file {self.path} holds {have} pages, pages {start}:{stop} were announced"
            )
        pages = np.asarray(self._tif.asarray(key=range(start, stop)))
        return pages.reshape(stop - start, *self.row_shape(start))

    def close(self) -> None:
        self._tif.close()


class PartedRows:
    """Rows of a stream continued over parts (daq-storage's ``parameters["parts"]``:
    ``uri``, ``key`` and ``first`` row of each), each part opened when first needed.

    Raises:
        ExternalFileError: a part cannot be read (see the part's reader).
    """

    def __init__(self, parts: Sequence[tuple[int, str, str]], opener: Any) -> None:
        self._parts = sorted(parts)  # (first, path, key)
        self._opener = opener
        self._open: dict[int, RowSource] = {}
        self.path = self._parts[0][1]

    def _source(self, index: int) -> RowSource:
        if index not in self._open:
            _, path, key = self._parts[index]
            self._open[index] = self._opener(path, key)
        return self._open[index]

    def _index(self, row: int) -> int:
        index = 0
        for i, (first, _, _) in enumerate(self._parts):
            if first <= row:
                index = i
        return index

    def row_shape(self, first: int) -> tuple[int, ...]:
        index = self._index(first)
        return self._source(index).row_shape(first - self._parts[index][0])

    def read(self, start: int, stop: int) -> np.ndarray:
        blocks = []
        row = start
        while row < stop:
            index = self._index(row)
            first = self._parts[index][0]
            end = self._parts[index + 1][0] if index + 1 < len(self._parts) else stop
            end = min(end, stop)
            blocks.append(self._source(index).read(row - first, end - first))
            row = end
        return np.concatenate(blocks)

    def close(self) -> None:
        for source in self._open.values():
            source.close()
        self._open.clear()


def _parts(
    parameters: Mapping[str, Any], root_map: Mapping[str, str]
) -> list[tuple[int, str, str]] | None:
    """``parameters["parts"]`` as sorted ``(first, local path, key)``, or ``None``."""
    parts = parameters.get("parts")
    if parts is None:
        return None
    found: list[tuple[int, str, str]] = []
    valid = isinstance(parts, Sequence) and not isinstance(parts, str)
    for part in parts if valid else ():
        fields = part if isinstance(part, Mapping) else {}
        uri, key, first = fields.get("uri"), fields.get("key", ""), fields.get("first")
        path = uri_to_path(uri) if isinstance(uri, str) else None
        if path is None or not isinstance(key, str) or not isinstance(first, int):
            valid = False
            break
        found.append((first, map_path(path, root_map), key))
    found.sort()
    if valid and found and found[0][0] == 0:
        return found
    raise BadReference(f"parameters 'parts' must list local parts from row 0, got {parts!r}")


def open_rows(
    mimetype: str, path: str, parameters: Mapping[str, Any], root_map: Mapping[str, str]
) -> RowSource:
    """The rows a ``stream_resource`` of ``mimetype`` (one of :data:`STREAM_MIMETYPES`)
    points at, ``path`` being its ``uri``'s local path (root-mapped).

    Raises:
        BadReference: the parameters lack what the mimetype needs.
        ExternalFileError: the file cannot be opened.
    """
    parts = _parts(parameters, root_map)
    if mimetype == HDF5_MIMETYPE:
        dataset = parameters.get("dataset")
        if not isinstance(dataset, str):
            raise BadReference("parameters name no 'dataset' to read")
        flag = parameters.get("swmr")
        swmr = flag if isinstance(flag, bool) else None
        if parts is not None:
            return PartedRows(parts, lambda p, key: Hdf5Rows(p, key or dataset, swmr=swmr))
        return Hdf5Rows(path, dataset, swmr=swmr)
    if mimetype == TIFF_FILE_MIMETYPE:
        if parts is not None:
            return PartedRows(parts, lambda p, key: TiffPages(p))
        return TiffPages(path)
    template = parameters.get("template")
    if not isinstance(template, str):
        raise BadReference("parameters name no file 'template' to read")
    filename = str(parameters.get("filename", ""))
    chunk_shape = parameters.get("chunk_shape") or [1]
    per_file = chunk_shape[0] if isinstance(chunk_shape, Sequence) else None
    if isinstance(per_file, bool) or not isinstance(per_file, int) or per_file < 1:
        raise BadReference(f"chunk_shape {chunk_shape!r} gives no pages per file")
    return TiffRows(path, template, filename, per_file)


def _int_kwarg(kwargs: Mapping[str, Any], name: str, default: int | None = None) -> int:
    value = kwargs.get(name, default)
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise BadReference(f"needs an integer {name!r}, got {value!r}")
    return int(value)


def _str_kwarg(kwargs: Mapping[str, Any], name: str) -> str:
    value = kwargs.get(name)
    if not isinstance(value, str):
        raise BadReference(f"needs a text {name!r}, got {value!r}")
    return value


def _hdf5_slice(
    path: str, dataset: str, point: int, per_point: int, *, swmr: bool | None
) -> np.ndarray:
    source = Hdf5Rows(path, dataset, swmr=swmr)
    try:
        return source.read(point * per_point, (point + 1) * per_point)
    finally:
        source.close()


def read_datum(
    spec: str, path: str, resource_kwargs: Mapping[str, Any], datum_kwargs: Mapping[str, Any]
) -> np.ndarray | None:
    """The array one datum points at, as the spec's databroker handler returns it, or
    ``None`` for a spec not in :data:`DATUM_SPECS`.

    ``path`` is the resource's ``root`` joined with its ``resource_path``.

    Raises:
        BadReference: a keyword the spec needs is missing or wrong.
        ExternalFileError: a file cannot be read.
    """
    if spec in ("AD_HDF5", "AD_HDF5_SWMR", "HDF5"):
        dataset = AD_HDF5_DATASET if spec != "HDF5" else _str_kwarg(resource_kwargs, "key")
        per_point = _int_kwarg(resource_kwargs, "frame_per_point", 1)
        point = _int_kwarg(datum_kwargs, "point_number")
        swmr = True if spec == "AD_HDF5_SWMR" else None
        return _hdf5_slice(path, dataset, point, per_point, swmr=swmr)
    if spec == "AD_TIFF":
        template = _str_kwarg(resource_kwargs, "template")
        filename = _str_kwarg(resource_kwargs, "filename")
        per_point = _int_kwarg(resource_kwargs, "frame_per_point", 1)
        point = _int_kwarg(datum_kwargs, "point_number")
        numbers = range(point * per_point, (point + 1) * per_point)
        frames = [_read_tiff(format_template(template, path, filename, j)) for j in numbers]
        return np.array(frames).squeeze()  # as area-detector-handlers' AD_TIFF handler
    if spec == "TIFF":
        return _read_tiff(path)
    if spec == "NPY_SEQ":
        index = _int_kwarg(datum_kwargs, "index")
        name = f"{path}_{index}.npy"
        try:
            return np.asarray(np.load(name, allow_pickle=False))
        except (OSError, ValueError) as exc:
            raise ExternalFileError(f"cannot read NPY file {name}: {exc}") from exc
    return None


def rows_per_event(
    shape: Sequence[int | None] | None, row_shape: tuple[int, ...], multiplier: int | None
) -> int:
    """How many rows of the file make one event: the stream resource's ``multiplier``
    (older event-model), else the data key's leading axis when the key's shape is
    ``(k, *row_shape)`` (ophyd-async: ``[1, 240, 320]`` over ``(N, 240, 320)``), else one.

    Raises:
        ExternalFileError: the data key's shape cannot be made of whole rows.
    """
    if multiplier:
        return multiplier
    if shape is None or None in shape:
        return 1
    dims = tuple(int(d) for d in shape if d is not None)
    if len(dims) == len(row_shape) + 1 and dims[1:] == row_shape and dims[0] >= 1:
        return dims[0]
    if int(np.prod(dims)) == int(np.prod(row_shape)):
        return 1
    raise ExternalFileError(
        f"rows of shape {list(row_shape)} do not make the data key's shape {list(dims)}"
    )
