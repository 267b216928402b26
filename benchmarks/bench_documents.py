"""The document writer: bluesky event pages through ``DocumentWriter`` into Parquet and HDF5.

``DAQ_BENCH_DOC_ROWS`` (200,000) rows as event pages of 1,000 rows x 10 scalar keys
(float64 values; each key's timestamps, ``seq_num`` and ``time`` as a RunEngine makes
them: Python lists, made by event-model's ``compose_event_page`` before the timing). Timed
from the start document until ``close()`` returned (every row stored, the file closed).
The document writer runs with ``batch_size=1000`` (one batch per page) and its default
``flush_interval`` (1 s); each page is checked (event-model's schema for the page's
fields, every value as its column is built).

Reference, run alternately with it, best of ``DAQ_BENCH_REPEATS`` (3): **the format writer
alone** (``open_writer``, same codec: each writer's defaults), given the same columns
(``seq_num``, ``time``, the 10 keys, their 10 ``<key>__timestamp``) as one
``RecordBatch`` per page built from the same lists, the start document's keys as file
metadata, no flush until close. Ratio = its time / the document writer's (target >= 0.8x).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import event_model
import numpy as np
import pyarrow as pa

from benchmarks._harness import Report, scratch_directory
from benchmarks._writers import Run, interleaved
from daq_storage.documents import DocumentWriter
from daq_storage.writers import open_writer

FORMATS = ("parquet", "hdf5")
KEYS = tuple(f"key{i}" for i in range(10))
PAGE_ROWS = 1000


@dataclass(frozen=True)
class Sizes:
    rows: int = int(os.environ.get("DAQ_BENCH_DOC_ROWS", "200000"))
    page_rows: int = PAGE_ROWS
    repeats: int = int(os.environ.get("DAQ_BENCH_REPEATS", "3"))


@dataclass
class Documents:
    start: dict[str, Any]
    descriptor: dict[str, Any]
    pages: list[dict[str, Any]]
    stop: dict[str, Any]


def documents(sizes: Sizes) -> Documents:
    """One run's documents: start, a descriptor of 10 float keys, the pages, stop."""
    bundle = event_model.compose_run(metadata={"plan_name": "bench", "scan_id": 1})
    keys = {k: {"dtype": "number", "shape": [], "source": f"sim:{k}", "units": "V"} for k in KEYS}
    descriptor = bundle.compose_descriptor(name="primary", data_keys=keys)
    rng = np.random.default_rng(0)
    pages = []
    t0 = bundle.start_doc["time"]
    for first in range(0, sizes.rows, sizes.page_rows):
        n = min(sizes.page_rows, sizes.rows - first)
        seq = list(range(first + 1, first + n + 1))
        times = [t0 + s * 1e-3 for s in seq]
        pages.append(dict(descriptor.compose_event_page(
            data={k: rng.random(n).tolist() for k in KEYS},
            timestamps={k: [t + 1e-4 for t in times] for k in KEYS},
            seq_num=seq, time=times, validate=False,
        )))  # fmt: skip
    stop = dict(bundle.compose_stop())
    return Documents(dict(bundle.start_doc), dict(descriptor.descriptor_doc), pages, stop)


def through_documents(fmt: str, docs: Documents, batch_size: int) -> Run:
    def run(path: Path) -> None:
        with DocumentWriter(path, fmt, batch_size=batch_size) as writer:
            writer("start", docs.start)
            writer("descriptor", docs.descriptor)
            for page in docs.pages:
                writer("event_page", page)
            writer("stop", docs.stop)

    return run


def writer_alone(fmt: str, docs: Documents) -> Run:
    def run(path: Path) -> None:
        path.mkdir()
        target = path / ("run.h5" if fmt == "hdf5" else "run")
        with open_writer(fmt, target) as writer:
            for key, value in docs.start.items():
                writer.set_metadata(key, value)
            for page in docs.pages:
                columns = {"seq_num": pa.array(page["seq_num"], pa.int64()),
                           "time": pa.array(page["time"], pa.float64())}  # fmt: skip
                for key in KEYS:
                    columns[key] = pa.array(page["data"][key], pa.float64())
                for key in KEYS:
                    columns[f"{key}__timestamp"] = pa.array(page["timestamps"][key], pa.float64())
                writer.write_batch("primary", pa.RecordBatch.from_pydict(columns))

    return run


def bench(report: Report, sizes: Sizes, tmp: Path) -> None:
    docs = documents(sizes)
    rows = sizes.rows
    runs: dict[str, Run] = {}
    for fmt in FORMATS:
        runs[f"documents {fmt}"] = through_documents(fmt, docs, sizes.page_rows)
        runs[f"alone {fmt}"] = writer_alone(fmt, docs)
    timings = interleaved(runs, tmp, sizes.repeats)
    for fmt in FORMATS:
        ours, alone = timings[f"documents {fmt}"], timings[f"alone {fmt}"]
        report.add(
            f"DocumentWriter -> {fmt}, event pages", rows / ours.seconds / 1e6, "M rows/s",
            reference=f"the {fmt} writer alone, same columns and batches",
            ratio=alone.seconds / ours.seconds,
            note=f"alone {rows / alone.seconds / 1e6:.3g} M rows/s; files "
            f"{ours.size / 1e6:.1f} MB vs {alone.size / 1e6:.1f} MB",
        )  # fmt: skip


def main(sizes: Sizes | None = None) -> None:
    sizes = sizes or Sizes()
    with scratch_directory() as tmp:
        report = Report(
            f"DocumentWriter: {sizes.rows:,} rows as event pages of {sizes.page_rows:,} rows x "
            f"{len(KEYS)} scalar keys, start document until close; best of {sizes.repeats} "
            "interleaved runs; ratio = the format writer's time alone / the document writer's"
        )
        bench(report, sizes, tmp)
        report.print()


if __name__ == "__main__":
    main()
