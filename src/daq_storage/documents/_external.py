"""External data of a bluesky run: ``resource`` / ``datum`` / ``datum_page`` and
``stream_resource`` / ``stream_datum`` documents.

Every such document is recorded as a reference row (tables ``"resources"``,
``"datums"``, ``"stream_datums"``) through an :class:`ExternalSink`, the run's
writers. With ``copy=True``, the data the documents point at is also read and stored
in the run: a datum is resolved by :meth:`ExternalData.fill` (the router calls it for
an event value of an ``external`` data key), and the frames a ``stream_datum`` announces
are read at once and handed to :meth:`ExternalSink.write_external_frames`.

Readable references: the specs ``AD_HDF5`` / ``HDF5`` (h5py), ``AD_TIFF`` / ``TIFF``
(tifffile), ``NPY_SEQ`` (numpy), and the mimetypes ``application/x-hdf5`` and
``multipart/related;type=image/tiff``. Any other spec or mimetype: references
recorded, nothing copied, no error.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from daq_storage.documents._external_files import (
    DATUM_SPECS,
    STREAM_MIMETYPES,
    BadReference,
    ExternalFileError,
    map_path,
    open_rows,
    read_datum,
    rows_per_event,
    uri_to_path,
)
from daq_storage.errors import DocumentError

__all__ = ["DATUM_SPECS", "REFERENCE_TABLES", "STREAM_MIMETYPES", "ExternalData", "ExternalSink"]

#: The tables :meth:`ExternalSink.record_reference` receives rows for.
REFERENCE_TABLES = ("resources", "datums", "stream_datums")

_log = logging.getLogger("daq_storage.documents")


class ExternalSink(Protocol):
    """Where :class:`ExternalData` puts what it resolves (the run's writers)."""

    def record_reference(self, table: str, row: Mapping[str, Any]) -> None:
        """Store one reference row.

        Args:
            table: ``"resources"``, ``"datums"`` or ``"stream_datums"``.
            row: JSON-able scalars and text (nested values already JSON text).
        """
        ...

    def write_external_frames(
        self, descriptor_uid: str, data_key: str, seq_nums: tuple[int, int], frames: np.ndarray
    ) -> None:
        """Store the frames of one array data key for the events
        ``seq_nums[0] <= seq_num < seq_nums[1]`` of a descriptor (one frame per event,
        ``frames.shape[0] == seq_nums[1] - seq_nums[0]``)."""
        ...


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=_json_default)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (tuple, set, frozenset)):
        return list(value)
    return str(value)


def _uid_of(kind: str, doc: Mapping[str, Any]) -> str:
    key = "datum_id" if kind == "datum" else "uid"
    value = doc.get(key) if isinstance(doc, Mapping) else None
    return value if isinstance(value, str) else "?"


def _field(kind: str, doc: Mapping[str, Any], key: str, kind_of: type | tuple[type, ...]) -> Any:
    """``doc[key]``, checked to be of ``kind_of``, or a DocumentError naming the document."""
    if not isinstance(doc, Mapping):
        raise DocumentError(f"{kind} document is not a mapping: {type(doc).__name__}")
    value = doc.get(key)
    if isinstance(value, bool) or not isinstance(value, kind_of):
        raise DocumentError(
            f"{kind} document {_uid_of(kind, doc)!r}: field {key!r} missing or not "
            f"{getattr(kind_of, '__name__', kind_of)} (got {value!r})"
        )
    return value


def _range(kind: str, doc: Mapping[str, Any], key: str) -> tuple[int, int]:
    span = _field(kind, doc, key, Mapping)
    start, stop = span.get("start"), span.get("stop")
    if (
        not isinstance(start, int)
        or not isinstance(stop, int)
        or isinstance(start, bool)
        or isinstance(stop, bool)
        or not 0 <= start <= stop
    ):
        raise DocumentError(
            f"{kind} document {_uid_of(kind, doc)!r}: {key} must be integers "
            f"0 <= start <= stop, got {dict(span)!r}"
        )
    return start, stop


class ExternalData:
    """The external data of one run: references recorded, data copied in on request.

    Args:
        sink: Receives the reference rows and the copied frames.
        copy: Read the referenced files and store their data in the run. Specs and
            mimetypes this module does not read are recorded only, without error.
        root_map: ``{old_root: new_root}`` for files moved since the run: a resource's
            ``root`` equal to ``old_root`` is replaced (as databroker's ``root_map``); a
            stream resource's file path under ``old_root`` is moved under ``new_root``.
    """

    def __init__(
        self, sink: ExternalSink, *, copy: bool, root_map: Mapping[str, str] | None = None
    ) -> None:
        self._sink = sink
        self._copy = copy
        self._root_map = dict(root_map or {})
        self._resources: dict[str, Mapping[str, Any]] = {}
        self._datums: dict[str, tuple[str, Mapping[str, Any]]] = {}
        self._stream_resources: dict[str, Mapping[str, Any]] = {}
        self._data_keys: dict[str, Mapping[str, Any]] = {}
        #: Datums whose file could not be read by :meth:`fill`: ``{datum_id: reason}``.
        self.unread: dict[str, str] = {}

    @property
    def copy(self) -> bool:
        """Whether referenced data is read and stored in the run."""
        return self._copy

    def descriptor(self, doc: Mapping[str, Any]) -> None:
        """Learn a descriptor's data keys: their ``shape`` tells how many rows of a
        stream resource's file make one event, and the shape frames are given in."""
        uid = _field("descriptor", doc, "uid", str)
        self._data_keys[uid] = _field("descriptor", doc, "data_keys", Mapping)

    # -- resource / datum ---------------------------------------------------------------

    def resource(self, doc: Mapping[str, Any]) -> None:
        """Record a ``resource`` document (a file of the run, with its handler spec)."""
        uid = _field("resource", doc, "uid", str)
        spec = _field("resource", doc, "spec", str)
        root = _field("resource", doc, "root", str)
        resource_path = _field("resource", doc, "resource_path", str)
        resource_kwargs = _field("resource", doc, "resource_kwargs", Mapping)
        if uid in self._resources:
            raise DocumentError(f"resource document {uid!r} arrived twice")
        self._resources[uid] = doc
        self._sink.record_reference(
            "resources",
            {
                "uid": uid,
                "kind": "resource",
                "spec": spec,
                "root": root,
                "resource_path": resource_path,
                "resource_kwargs": _json(resource_kwargs),
                "path_semantics": str(doc.get("path_semantics", "posix")),
                "uri": "",
                "mimetype": "",
                "data_key": "",
                "parameters": "",
                "run_start": str(doc.get("run_start", "")),
            },
        )

    def datum(self, doc: Mapping[str, Any]) -> None:
        """Record a ``datum`` document (one piece of a resource, named by ``datum_id``).

        Raises:
            DocumentError: its resource is unknown, or a field is missing.
        """
        datum_id = _field("datum", doc, "datum_id", str)
        resource = _field("datum", doc, "resource", str)
        kwargs = _field("datum", doc, "datum_kwargs", Mapping)
        self._add_datum(datum_id, resource, kwargs, "datum")

    def datum_page(self, doc: Mapping[str, Any]) -> None:
        """Record a ``datum_page`` document (its datums, column-wise).

        Raises:
            DocumentError: its resource is unknown, or its columns differ in length.
        """
        resource = _field("datum_page", doc, "resource", str)
        ids = _field("datum_page", doc, "datum_id", Sequence)
        columns = _field("datum_page", doc, "datum_kwargs", Mapping)
        if isinstance(ids, str) or any(
            isinstance(c, str) or not isinstance(c, Sequence) or len(c) != len(ids)
            for c in columns.values()
        ):
            raise DocumentError(
                f"datum_page document of resource {resource!r}: datum_id and every "
                f"datum_kwargs column must be lists of the same length"
            )
        for i, datum_id in enumerate(ids):
            kwargs = {name: column[i] for name, column in columns.items()}
            self._add_datum(str(datum_id), resource, kwargs, "datum_page")

    def _add_datum(
        self, datum_id: str, resource: str, kwargs: Mapping[str, Any], kind: str
    ) -> None:
        if resource not in self._resources:
            raise DocumentError(
                f"{kind} document {datum_id!r} refers to resource {resource!r}, "
                f"which this run has not announced"
            )
        self._datums[datum_id] = (resource, kwargs)
        self._sink.record_reference(
            "datums",
            {"datum_id": datum_id, "resource": resource, "datum_kwargs": _json(kwargs)},
        )

    def fill(self, datum_id: str, shape: Sequence[int | None] | None = None) -> np.ndarray | None:
        """The array a datum points at, or ``None`` when ``copy`` is off, its spec is not
        one this module reads, or its file cannot be read now (an area detector may
        close its file only after the event): then the datum id stays in the run, the
        reference rows say where the data is, a warning is logged and the datum is listed
        in :attr:`unread`.

        Args:
            datum_id: The datum's id (an event's value of an ``external`` data key).
            shape: The data key's ``shape``: the array is returned in it (the handlers'
                own results can carry extra length-1 axes, e.g. ``AD_HDF5``'s
                ``(frame_per_point, y, x)``). Without it: the handler's result.

        Raises:
            DocumentError: unknown datum, its resource lacks a keyword its spec needs, or
                the array's element count differs from ``shape``'s.
        """
        entry = self._datums.get(datum_id)
        if entry is None:
            raise DocumentError(f"datum {datum_id!r} was never announced in this run")
        if not self._copy:
            return None
        resource_uid, datum_kwargs = entry
        resource = self._resources[resource_uid]
        spec = str(resource["spec"])
        if spec not in DATUM_SPECS:
            return None
        root = str(resource["root"])
        root = self._root_map.get(root, root)
        path = str(resource["resource_path"])
        if root:
            path = os.path.join(root, path)
        where = f"datum {datum_id!r} (resource {resource_uid!r}, spec {spec}, {path})"
        try:
            array = read_datum(spec, path, resource["resource_kwargs"], datum_kwargs)
        except BadReference as exc:
            raise DocumentError(f"{where}: {exc}") from exc
        except ExternalFileError as exc:
            self.unread[datum_id] = str(exc)
            _log.warning("%s not copied: %s", where, exc)
            return None
        if array is None or shape is None or None in shape:
            return array
        dims = tuple(int(d) for d in shape if d is not None)
        if array.size != int(np.prod(dims)):
            raise DocumentError(
                f"datum {datum_id!r} ({path}): the file holds an array of shape "
                f"{list(array.shape)}, the data key's shape is {list(dims)}"
            )
        return array.reshape(dims)

    # -- stream_resource / stream_datum -------------------------------------------------

    def stream_resource(self, doc: Mapping[str, Any]) -> None:
        """Record a ``stream_resource`` document (a file of one data key, by mimetype)."""
        uid = _field("stream_resource", doc, "uid", str)
        uri = _field("stream_resource", doc, "uri", str)
        mimetype = _field("stream_resource", doc, "mimetype", str)
        data_key = _field("stream_resource", doc, "data_key", str)
        parameters = _field("stream_resource", doc, "parameters", Mapping)
        if uid in self._stream_resources:
            raise DocumentError(f"stream_resource document {uid!r} arrived twice")
        self._stream_resources[uid] = doc
        self._sink.record_reference(
            "resources",
            {
                "uid": uid,
                "kind": "stream_resource",
                "spec": "",
                "root": "",
                "resource_path": "",
                "resource_kwargs": "",
                "path_semantics": "",
                "uri": uri,
                "mimetype": mimetype,
                "data_key": data_key,
                "parameters": _json(parameters),
                "run_start": str(doc.get("run_start", "")),
            },
        )

    def stream_datum(self, doc: Mapping[str, Any]) -> None:
        """Record a ``stream_datum`` document; with ``copy`` and a readable mimetype,
        read its frames (``indices.start:indices.stop``) and write them for its events
        (``seq_nums.start:seq_nums.stop``). Frames are read before anything is recorded,
        so a failure leaves the run as it was.

        Raises:
            DocumentError: unknown stream resource, index and seq_num ranges of different
                lengths, or a file that cannot be opened or holds fewer frames than
                announced (the message names the document and the file).
        """
        uid = _field("stream_datum", doc, "uid", str)
        resource_uid = _field("stream_datum", doc, "stream_resource", str)
        descriptor = _field("stream_datum", doc, "descriptor", str)
        indices = _range("stream_datum", doc, "indices")
        seq_nums = _range("stream_datum", doc, "seq_nums")
        resource = self._stream_resources.get(resource_uid)
        if resource is None:
            raise DocumentError(
                f"stream_datum document {uid!r} refers to stream_resource "
                f"{resource_uid!r}, which this run has not announced"
            )
        data_key = str(resource["data_key"])
        frames = self._read_frames(uid, resource, descriptor, indices, seq_nums)
        self._sink.record_reference(
            "stream_datums",
            {
                "uid": uid,
                "stream_resource": resource_uid,
                "descriptor": descriptor,
                "data_key": data_key,
                "indices_start": indices[0],
                "indices_stop": indices[1],
                "seq_num_start": seq_nums[0],
                "seq_num_stop": seq_nums[1],
            },
        )
        if frames is not None:
            self._sink.write_external_frames(descriptor, data_key, seq_nums, frames)

    def _read_frames(
        self,
        uid: str,
        resource: Mapping[str, Any],
        descriptor: str,
        indices: tuple[int, int],
        seq_nums: tuple[int, int],
    ) -> np.ndarray | None:
        mimetype = str(resource["mimetype"])
        count = indices[1] - indices[0]
        if not self._copy or mimetype not in STREAM_MIMETYPES or count == 0:
            return None
        path = uri_to_path(str(resource["uri"]))
        if path is None:
            return None  # another host or scheme: recorded only (documented)
        path = map_path(path, self._root_map)
        where = f"stream_datum {uid!r} (stream_resource {resource['uid']!r}, {path})"
        if seq_nums[1] - seq_nums[0] != count:
            raise DocumentError(
                f"{where}: indices {indices[0]}:{indices[1]} and seq_nums "
                f"{seq_nums[0]}:{seq_nums[1]} differ in length"
            )
        data_key = str(resource["data_key"])
        keys = self._data_keys.get(descriptor)
        if keys is not None and data_key not in keys:
            raise DocumentError(f"{where}: descriptor {descriptor!r} has no data key {data_key!r}")
        shape = keys[data_key].get("shape") if keys is not None else None
        parameters: Mapping[str, Any] = resource["parameters"]
        try:
            source = open_rows(mimetype, path, parameters, self._root_map)
            try:
                multiplier = parameters.get("multiplier")
                per_event = rows_per_event(
                    shape,
                    source.row_shape(indices[0]),
                    multiplier if isinstance(multiplier, int) else None,
                )
                rows = source.read(indices[0] * per_event, indices[1] * per_event)
            finally:
                source.close()
        except ExternalFileError as exc:
            raise DocumentError(f"{where}: {exc}") from exc
        row_shape = rows.shape[1:]
        if shape is not None and None not in shape:
            dims = tuple(int(d) for d in shape)
            if int(np.prod(dims)) == per_event * int(np.prod(row_shape)):
                return rows.reshape(count, *dims)
        # no usable shape from a descriptor: the rows of one event as they are
        if per_event == 1:
            return rows
        return rows.reshape(count, per_event, *row_shape)
