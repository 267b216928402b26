"""ExternalData against a detector still writing its file: a real second process holding
it (SWMR or not), and the documented snippets of docs/documents.md's external-data
section run on their own."""

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from daq_storage.documents._external import ExternalData
from daq_storage.errors import DocumentError
from tests.doc_snippets import DOCS, blocks, check_each_asserts, run_in_order
from tests.documents.external import (
    RecordingSink,
    _descriptor,
    _seq,
    _stream,
)

# -- a detector still writing its file -------------------------------------------------

_WRITER = """
import sys, h5py, numpy as np
path, mode, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
frames = np.arange(count * 20, dtype="u2").reshape(count, 4, 5)
if mode == "swmr":
    f = h5py.File(path, "w", libver="latest")
    d = f.create_dataset("/entry/data/data", shape=(0, 4, 5), maxshape=(None, 4, 5),
                         dtype="u2", chunks=(1, 4, 5))
    f.swmr_mode = True
    for i in range(count):
        d.resize(i + 1, axis=0)
        d[i] = frames[i]
        d.flush()
else:
    f = h5py.File(path, "w")
    f["/entry/data/data"] = frames
    f.flush()
print("written", flush=True)
sys.stdin.readline()
f.close()
"""


@pytest.fixture
def writing_file(tmp_path: Path) -> Iterator[Any]:
    """Start a real process that writes frames and keeps its file open until told."""
    processes: list[subprocess.Popen[str]] = []

    def start(mode: str, count: int) -> Path:
        path = tmp_path / f"{mode}.h5"
        process = subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(path), mode, str(count)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        processes.append(process)
        assert process.stdout is not None
        assert process.stdout.readline() == "written\n"
        return path

    yield start
    for process in processes:
        process.communicate("\n", timeout=30)  # closes both pipes
        assert process.returncode == 0


def test_frames_read_while_a_swmr_writer_holds_the_file(
    run: Any, sink: RecordingSink, writing_file: Any
) -> None:
    path = writing_file("swmr", 3)
    descriptor = _descriptor(run, {"det": [1, 4, 5]})
    data = ExternalData(sink, copy=True)
    data.descriptor(descriptor)
    bundle = _stream(run, path, "det", {"dataset": "/entry/data/data"})
    data.stream_resource(bundle.stream_resource_doc)
    data.stream_datum(
        bundle.compose_stream_datum(indices=_seq(0, 3), seq_nums=_seq(1, 4), descriptor=descriptor)
    )
    np.testing.assert_array_equal(sink.frames[0][3], np.arange(60, dtype="u2").reshape(3, 1, 4, 5))
    # a frame the writer has not flushed yet: a clear error, nothing recorded
    ahead = bundle.compose_stream_datum(
        indices=_seq(3, 4), seq_nums=_seq(4, 5), descriptor=descriptor
    )
    with pytest.raises(DocumentError, match=f"{ahead['uid']}.*holds 3 rows"):
        data.stream_datum(ahead)
    assert len(sink.frames) == 1
    assert len(sink.rows["stream_datums"]) == 1


def test_swmr_parameter_decides_how_the_file_is_opened(
    run: Any, sink: RecordingSink, writing_file: Any
) -> None:
    path = writing_file("swmr", 2)
    data = ExternalData(sink, copy=True)
    bundle = _stream(run, path, "det", {"dataset": "/entry/data/data", "swmr": False})
    data.stream_resource(bundle.stream_resource_doc)
    doc = bundle.compose_stream_datum(indices=_seq(0, 2), seq_nums=_seq(1, 3))
    # told not to use SWMR, the reader cannot open a file a SWMR writer holds
    with pytest.raises(DocumentError, match=f"{doc['uid']}.*cannot open HDF5 file"):
        data.stream_datum(doc)
    assert sink.frames == []


def test_file_locked_by_a_writer_is_a_clear_error(
    run: Any, sink: RecordingSink, writing_file: Any
) -> None:
    path = writing_file("plain", 2)
    data = ExternalData(sink, copy=True)
    bundle = _stream(run, path, "det", {"dataset": "/entry/data/data"})
    data.stream_resource(bundle.stream_resource_doc)
    doc = bundle.compose_stream_datum(indices=_seq(0, 2), seq_nums=_seq(1, 3))
    with pytest.raises(DocumentError, match=f"{doc['uid']}.*cannot open HDF5 file .*plain.h5"):
        data.stream_datum(doc)
    assert sink.frames == []


# -- docs/documents.md, section "External data" ------------------------------------------

_SECTION = re.compile(r"^## External data.*?(?=^## |\Z)", re.MULTILINE | re.DOTALL)


def _external_blocks() -> list[str]:
    page = DOCS / "documents.md"
    section = _SECTION.search(page.read_text())
    assert section is not None, "docs/documents.md has no '## External data' section"
    return [snippet for snippet in blocks(page) if snippet in section.group(0)]


def test_docs_external_snippets_check_their_results() -> None:
    check_each_asserts(_external_blocks(), 2, "documents.md (External data)")


def test_docs_external_snippets_run_as_written(tmp_path: Path) -> None:
    run_in_order(_external_blocks(), tmp_path, "documents.md (External data)", timeout=120)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["detector.h5", "external_runs", "npy"]
