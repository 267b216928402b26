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

from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np

__all__ = ["ExternalData", "ExternalSink"]


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


class ExternalData:
    """The external data of one run: references recorded, data copied in on request.

    Args:
        sink: Receives the reference rows and the copied frames.
        copy: Read the referenced files and store their data in the run.
        root_map: ``{old_root: new_root}`` applied to a resource's ``root`` (as
            databroker's ``root_map``), for files moved since the run.
    """

    def __init__(
        self, sink: ExternalSink, *, copy: bool, root_map: Mapping[str, str] | None = None
    ) -> None:
        self._sink = sink
        self._copy = copy
        self._root_map = dict(root_map or {})

    def resource(self, doc: Mapping[str, Any]) -> None:
        """Record a ``resource`` document (a file of the run, with its handler spec)."""
        raise NotImplementedError

    def datum(self, doc: Mapping[str, Any]) -> None:
        """Record a ``datum`` document (one piece of a resource, named by ``datum_id``)."""
        raise NotImplementedError

    def datum_page(self, doc: Mapping[str, Any]) -> None:
        """Record a ``datum_page`` document (its datums, column-wise)."""
        raise NotImplementedError

    def stream_resource(self, doc: Mapping[str, Any]) -> None:
        """Record a ``stream_resource`` document (a file of one data key, by mimetype)."""
        raise NotImplementedError

    def stream_datum(self, doc: Mapping[str, Any]) -> None:
        """Record a ``stream_datum`` document; with ``copy``, read its frames
        (``indices.start:indices.stop``) and write them for its events.

        Raises:
            DocumentError: unknown stream resource, or its file cannot be opened or holds
                fewer frames than announced (names the document and the file).
        """
        raise NotImplementedError

    def fill(self, datum_id: str) -> np.ndarray | None:
        """The array a datum points at, or ``None`` when ``copy`` is off or its spec is
        not one this module reads.

        Raises:
            DocumentError: unknown datum, or its file cannot be read.
        """
        raise NotImplementedError
