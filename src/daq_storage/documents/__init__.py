"""Bluesky runs into every format: a document router for the RunEngine.

``RE.subscribe(DocumentWriter("data", formats=("hdf5", "parquet")))`` writes each run
(start, descriptors, events and event pages, external data, stop) to its own files,
named from the start document. The seeds' ``ArrowDocumentWriter(directory,
batch_size)`` and ``consume_document(doc)`` work as well. See ``docs/documents.md``.
"""

from daq_storage.documents._descriptor import TIMESTAMP_SUFFIX
from daq_storage.documents._external import ExternalData, ExternalSink
from daq_storage.documents._formats import (
    ArrowDocumentWriter,
    CsvDocumentWriter,
    Hdf5DocumentWriter,
    ParquetDocumentWriter,
    TiffDocumentWriter,
    ZarrDocumentWriter,
)
from daq_storage.documents._naming import DEFAULT_TEMPLATE
from daq_storage.documents._router import DocumentWriter, document_kind
from daq_storage.documents._run import RunWriter, reference_stream

__all__ = [
    "DEFAULT_TEMPLATE",
    "TIMESTAMP_SUFFIX",
    "ArrowDocumentWriter",
    "CsvDocumentWriter",
    "DocumentWriter",
    "ExternalData",
    "ExternalSink",
    "Hdf5DocumentWriter",
    "ParquetDocumentWriter",
    "RunWriter",
    "TiffDocumentWriter",
    "ZarrDocumentWriter",
    "document_kind",
    "reference_stream",
]
