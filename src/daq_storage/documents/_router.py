"""The document writer: bluesky's documents, run by run, into the format writers."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from event_model import DocumentNames, DocumentRouter, schema_validators
from event_model.documents import (
    Datum,
    DatumPage,
    Event,
    EventDescriptor,
    EventPage,
    Resource,
    RunStart,
    RunStop,
    StreamDatum,
    StreamResource,
)
from jsonschema.exceptions import ValidationError  # type: ignore[import-untyped]

from daq_storage.documents._descriptor import doc_name
from daq_storage.documents._naming import DEFAULT_TEMPLATE, check_template
from daq_storage.documents._run import FormatSpec, RunWriter
from daq_storage.errors import ConfigError, DocumentError, describe_value
from daq_storage.writers import get_writer_class

__all__ = ["DocumentWriter", "document_kind"]

#: Keys only one kind of document has, for :meth:`DocumentWriter.consume_document`'s
#: one-argument form (checked in this order; the schema then validates the guess).
_SIGNATURES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("descriptor", ("data_keys",)),
    ("stop", ("exit_status", "run_start")),
    ("stream_datum", ("stream_resource", "indices")),
    ("stream_resource", ("data_key", "uri", "mimetype")),
    ("resource", ("spec", "resource_path")),
    ("datum_page", ("datum_id", "resource", "datum_kwargs")),
    ("event_page", ("descriptor", "seq_num", "data")),
    ("start", ("uid", "time")),
)


def document_kind(doc: Mapping[str, Any]) -> str:
    """The kind of a document told by its keys alone (``"start"``, ``"event"``, ...).

    Raises:
        DocumentError: the keys fit no kind.
    """
    if not isinstance(doc, Mapping):
        raise DocumentError(f"a document must be a mapping, got {describe_value(doc)}")
    for kind, keys in _SIGNATURES:
        if all(k in doc for k in keys):
            if kind == "datum_page" and not isinstance(doc["datum_id"], list):
                return "datum"
            if kind == "event_page" and not isinstance(doc["seq_num"], list):
                return "event"
            return kind
    raise DocumentError(f"cannot tell the kind of a document with keys {sorted(doc)}; "
                        "pass it as consume_document(name, doc)")  # fmt: skip


class DocumentWriter(DocumentRouter):
    """Stores bluesky runs: subscribe it to a RunEngine (``RE.subscribe(writer)``) or
    call ``writer(name, doc)`` / ``writer.consume_document(name, doc)``.

    Each run (a ``start`` document) gets its own files, one per format, named
    ``{name}_{date}_{time}_v{N}`` where ``name`` is ``file_template`` filled from the
    start document; runs may follow each other or interleave (documents are routed by
    their run, descriptor and resource uids). See ``docs/documents.md`` for the layout.

    Args:
        directory: Where the runs' files go (created if missing).
        formats: Writer names (``"hdf5"``, ``"zarr"``, ``"arrow"``, ``"parquet"``,
            ``"csv"``, ``"tiff"`` or a plug-in), one output of each per run.
        batch_size: Rows of a stream gathered before they are handed to the writers.
        flush_interval: Seconds: at the first event (or page) once the last flush is
            this old, every row gathered is handed over and every writer of the run
            flushed (0: at every event), so a reader, or a run whose process is killed,
            has everything up to then. Also at ``stop``, :meth:`flush` and :meth:`close`.
        file_template: ``str.format`` template of start-document keys;
            default ``"{plan_name}_{scan_id}"``.
        copy_external: Copy the data of ``resource`` / ``stream_resource`` documents
            into the run where the referenced file can be read.
        root_map: ``{old_root: new_root}`` for resources whose files moved.
        writer_options: Per format name, the writer's options
            (``{"hdf5": {"compression": "gzip"}}``).

    Raises:
        ConfigError: an unknown format or option, a bad batch size or template.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        formats: str | Sequence[str] = ("hdf5",),
        *,
        batch_size: int = 1024,
        flush_interval: float = 1.0,
        file_template: str | None = None,
        copy_external: bool = True,
        root_map: Mapping[str, str] | None = None,
        writer_options: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(directory, str | os.PathLike):
            raise ConfigError(f"directory must be a path, got {describe_value(directory)}")
        self.directory = Path(directory)
        names = [formats] if isinstance(formats, str) else list(formats)
        if not names or len(set(names)) != len(names):
            raise ConfigError(f"formats must name each format once, got {describe_value(formats)}")
        options = dict(writer_options or {})
        unknown = sorted(set(options) - set(names))
        if unknown:
            raise ConfigError(f"writer_options for {unknown}, which are not in formats {names}")
        self.formats: tuple[FormatSpec, ...] = tuple(
            _format(name, options.get(name) or {}) for name in names
        )
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(
                f"batch_size must be an integer >= 1, got {describe_value(batch_size)}"
            )
        self.batch_size = batch_size
        if (
            isinstance(flush_interval, bool)
            or not isinstance(flush_interval, int | float)
            or not flush_interval >= 0
        ):
            raise ConfigError(
                f"flush_interval must be a number of seconds >= 0, got "
                f"{describe_value(flush_interval)}"
            )
        self.flush_interval = float(flush_interval)
        self.file_template = check_template(
            DEFAULT_TEMPLATE if file_template is None else file_template
        )
        if not isinstance(copy_external, bool):
            raise ConfigError(
                f"copy_external must be True or False, got {describe_value(copy_external)}"
            )
        self.copy_external = copy_external
        self.root_map = dict(root_map or {})
        self._runs: dict[str, RunWriter] = {}
        self._descriptors: dict[str, RunWriter] = {}
        self._resources: dict[str, RunWriter] = {}
        self._page_layouts: set[tuple[Any, ...]] = set()
        #: Every run's files, by the run's uid (runs still open and runs stopped).
        self.files: dict[str, tuple[Path, ...]] = {}

    # ------------------------------------------------------------ entry points
    def __call__(
        self, name: str, doc: dict[str, Any], validate: bool = False
    ) -> tuple[str, dict[str, Any]]:
        if not isinstance(name, str) or name not in DocumentNames.__members__:
            uid = doc.get("uid") if isinstance(doc, Mapping) else None
            raise DocumentError(f"unknown document name {describe_value(name)} (uid {uid!r})")
        result: tuple[str, dict[str, Any]] = super().__call__(name, doc, validate)
        return result

    def consume_document(
        self, name: str | Mapping[str, Any], doc: Mapping[str, Any] | None = None
    ) -> None:
        """Store one document: ``consume_document(name, doc)``, or the seeds' form
        ``consume_document(doc)`` where the kind is told by the document's keys.

        Raises:
            DocumentError: the document is malformed (event-model's schema), out of
                order, or its kind cannot be told; the message names it.
        """
        if doc is None:
            if isinstance(name, str):
                raise DocumentError(f"consume_document({name!r}) needs the document too")
            doc, name = name, document_kind(name)
        self(str(name), dict(doc))

    def flush(self) -> None:
        """Hand every row gathered so far to the writers and flush them, for every run
        still open: a reader (or a run whose process dies later) sees all of it."""
        for run in self._runs.values():
            run.flush()

    @property
    def open_runs(self) -> list[str]:
        """The uids of the runs started and not stopped."""
        return list(self._runs)

    def close(self) -> None:
        """Write what is buffered and close every run still open (no stop document:
        their ``exit_status`` stays unset)."""
        errors: list[Exception] = []
        for uid in list(self._runs):
            run = self._runs.pop(uid)
            try:
                run.flush()
            except Exception as exc:
                errors.append(exc)
            finally:
                run.abandon()
            self._forget(run)
        if errors:
            raise errors[0]

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:  # fmt: skip
        self.close()

    # ------------------------------------------------------------ documents
    def start(self, doc: RunStart) -> RunStart:
        _validate("start", doc)
        if doc["uid"] in self._runs or doc["uid"] in self.files:
            raise DocumentError(f"{doc_name('start', doc)}: a run of that uid was already started")
        run = self.new_run(doc)
        self._runs[run.uid] = run
        self.files[run.uid] = run.paths
        return doc

    def new_run(self, start: Mapping[str, Any]) -> RunWriter:
        """The writers of a new run (event-model's ``RunRouter`` factory); a subclass
        may return a :class:`RunWriter` made otherwise."""
        return RunWriter(
            start, directory=self.directory, formats=self.formats, batch_size=self.batch_size,
            flush_interval=self.flush_interval, template=self.file_template,
            copy_external=self.copy_external, root_map=self.root_map,
        )  # fmt: skip

    def descriptor(self, doc: EventDescriptor) -> EventDescriptor:
        _validate("descriptor", doc)
        run = self._run_of(doc.get("run_start"), "descriptor", doc)
        run.descriptor(doc)
        self._descriptors[doc["uid"]] = run
        return doc

    def event(self, doc: Event) -> Event:
        _validate("event", doc)
        self._by_descriptor("event", doc).event(doc)
        return doc

    def event_page(self, doc: EventPage) -> EventPage:
        # The page's fields through the schema once per layout (the rows: checked column
        # by column as they are converted; jsonschema on every value costs 100x writing).
        layout = _layout(doc)
        if layout not in self._page_layouts:
            _validate("event_page", _skeleton(doc))
            self._page_layouts.add(layout)
        self._by_descriptor("event_page", doc).event_page(doc)
        return doc

    def stop(self, doc: RunStop) -> RunStop:
        _validate("stop", doc)
        run = self._run_of(doc.get("run_start"), "stop", doc)
        del self._runs[run.uid]
        try:
            run.stop(doc)
        finally:
            run.abandon()
            self._forget(run)
        return doc

    def resource(self, doc: Resource) -> Resource:
        _validate("resource", doc)
        run = self._run_of(doc.get("run_start"), "resource", doc, guess=True)
        run.external.resource(doc)
        self._resources[doc["uid"]] = run
        return doc

    def stream_resource(self, doc: StreamResource) -> StreamResource:
        _validate("stream_resource", doc)
        run = self._run_of(doc.get("run_start"), "stream_resource", doc, guess=True)
        run.external.stream_resource(doc)
        self._resources[doc["uid"]] = run
        return doc

    def datum(self, doc: Datum) -> Datum:
        _validate("datum", doc)
        self._by_resource("datum", doc, doc["resource"]).external.datum(doc)
        return doc

    def datum_page(self, doc: DatumPage) -> DatumPage:
        _validate("datum_page", doc)
        self._by_resource("datum_page", doc, doc["resource"]).external.datum_page(doc)
        return doc

    def stream_datum(self, doc: StreamDatum) -> StreamDatum:
        _validate("stream_datum", doc)
        self._by_resource("stream_datum", doc, doc["stream_resource"]).external.stream_datum(doc)
        return doc

    # ------------------------------------------------------------ routing
    def _run_of(
        self, uid: Any, kind: str, doc: Mapping[str, Any], *, guess: bool = False
    ) -> RunWriter:
        run = self._runs.get(uid) if isinstance(uid, str) else None
        if run is None and uid is None and guess and len(self._runs) == 1:
            run = next(iter(self._runs.values()))  # an old resource without run_start
        if run is None:
            state = "already stopped" if uid in self.files else "not started"
            raise DocumentError(f"{doc_name(kind, doc)}: run {uid!r} is {state} (no open run "
                                "of that uid)")  # fmt: skip
        return run

    def _by_descriptor(self, kind: str, doc: Mapping[str, Any]) -> RunWriter:
        run = self._descriptors.get(doc["descriptor"])
        if run is None:
            raise DocumentError(
                f"{doc_name(kind, doc)}: unknown descriptor {doc['descriptor']!r} (its "
                "descriptor document was not received, or its run stopped)"
            )
        return run

    def _by_resource(self, kind: str, doc: Mapping[str, Any], uid: str) -> RunWriter:
        run = self._resources.get(uid)
        if run is None:
            raise DocumentError(f"{doc_name(kind, doc)}: unknown resource {uid!r} (its resource "
                                "document was not received, or its run stopped)")  # fmt: skip
        return run

    def _forget(self, run: RunWriter) -> None:
        for table in (self._descriptors, self._resources):
            for uid in [u for u, r in table.items() if r is run]:
                del table[uid]


def _format(name: str, options: Mapping[str, Any]) -> FormatSpec:
    cls = get_writer_class(name)
    if not (cls.supports_tables or cls.supports_frames):
        raise ConfigError(f"the {name} writer stores neither tables nor frames")
    cls.validate_options(**options)
    return FormatSpec(cls.name, cls, dict(options))


def _validate(kind: str, doc: Mapping[str, Any]) -> None:
    """``doc`` checked by event-model's JSON schema for its kind."""
    try:
        schema_validators[DocumentNames[kind]].validate(doc)
    except ValidationError as exc:
        where = ".".join(str(p) for p in exc.absolute_path) or "the document"
        raise DocumentError(f"{doc_name(kind, doc)} fails event-model's schema at {where}: "
                            f"{exc.message}") from None  # fmt: skip


def _layout(doc: Mapping[str, Any]) -> tuple[Any, ...]:
    """What the schema check of an event page's fields depends on: its descriptor, its
    fields and their types, the keys of data / timestamps / filled and their types."""
    parts: list[Any] = [doc.get("descriptor")]
    for field, value in doc.items():
        parts.append((field, type(value)))
        if isinstance(value, Mapping):
            parts.append(tuple((k, type(v)) for k, v in value.items()))
    return tuple(parts)


def _skeleton(doc: Mapping[str, Any]) -> Mapping[str, Any]:
    """An event page without its rows, for the schema check of its fields."""
    skeleton = dict(doc)
    for field in ("uid", "seq_num", "time"):
        if isinstance(doc.get(field), list):
            skeleton[field] = []
    for field in ("data", "timestamps", "filled"):
        value = doc.get(field)
        if isinstance(value, Mapping):
            skeleton[field] = {k: [] if isinstance(v, list) else v for k, v in value.items()}
    return skeleton
