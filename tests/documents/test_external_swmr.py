"""ExternalData against a detector still writing its file: a real second process holding
it (SWMR or not), and the documented snippets of docs/documents.md's external-data
section run on their own."""

import os
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

DOC = Path(__file__).resolve().parents[2] / "docs" / "documents.md"
_SECTION = re.compile(r"^## External data.*?(?=^## |\Z)", re.MULTILINE | re.DOTALL)
_BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)


def _external_blocks() -> list[str]:
    section = _SECTION.search(DOC.read_text())
    assert section is not None, "docs/documents.md has no '## External data' section"
    return _BLOCK.findall(section.group(0))


def test_docs_external_snippets_check_their_results() -> None:
    blocks = _external_blocks()
    assert len(blocks) == 2
    for block in blocks:
        assert "assert" in block, f"a block of the external data section checks nothing:\n{block}"


def test_docs_external_snippets_run_as_written(tmp_path: Path) -> None:
    # in order, in one fresh interpreter, in a scratch directory (as a reader would)
    program = "\n".join(
        f"print('--- block {i}', flush=True)\n{block}" for i, block in enumerate(_external_blocks())
    )
    environ = {k: v for k, v in os.environ.items() if not k.startswith("DAQ_STORAGE_")}
    result = subprocess.run(
        [sys.executable, "-c", program],
        cwd=tmp_path, env=environ, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    last = re.findall(r"--- block (\d+)", result.stdout)
    assert result.returncode == 0, (
        f"docs/documents.md external data block {last[-1] if last else '?'} failed:\n"
        f"{result.stderr}"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["detector.h5", "external_runs", "npy"]
