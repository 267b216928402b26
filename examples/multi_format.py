"""Multi-format safety: a DAQ card's 8 channels written to HDF5 and Arrow IPC at once
(``storage_format("both")``): the HDF5 file for the archive, the Arrow IPC stream as a
second, independent copy of the same samples, each readable without the other.

``data.h5`` holds ``/data/{timestamps, sample_index, AI0..AI7}`` (int16 counts, with
``scale_factor`` and ``add_offset`` beside them: volts = counts * scale_factor +
add_offset) and ``/channels/<name>`` attributes; ``data/data.arrows`` the same columns.

Run: python examples/multi_format.py [OUTPUT_DIR]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401  (registers the lz4 filter with h5py)
import numpy as np
import pyarrow.ipc as ipc

from daq_storage.read import open_run
from daq_storage.sim import SimulatedDaqCard
from daq_storage.streams import ChannelConfig, StreamWriter

RATE = 100_000.0
BLOCKS = 10
SAMPLES_PER_BLOCK = 10_000


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp())
    card = SimulatedDaqCard(8, sample_rate=RATE, range_v=10.0, seed=0)
    channels = [ChannelConfig(i, f"AI{i}", -10.0, 10.0) for i in range(8)]
    writer = (
        StreamWriter.builder()
        .output_path(out / "data.h5")
        .channels(channels)
        .sample_rate(RATE)
        .compression("lz4")  # Arrow IPC compresses with lz4 or zstd; HDF5 needs hdf5plugin
        .storage_format("both")  # write HDF5 AND Arrow IPC
        .build()
    )
    with writer:
        for _ in range(BLOCKS):
            writer.write(card.read_block(SAMPLES_PER_BLOCK).samples)  # int16 counts
    print(f"wrote {writer.stats.samples} samples x {len(channels)} channels to "
          f"{[p.name for p in writer.stats.files]}")  # fmt: skip

    with h5py.File(out / "data.h5", "r") as f:
        data = f["data"]
        counts_h5 = np.column_stack([data[f"AI{i}"][:] for i in range(8)])
        stamps_h5 = data["timestamps"][:]
        scale = data["AI0"].attrs["scale_factor"]
        print(f"h5py: /data/AI0..AI7 {counts_h5.shape} {counts_h5.dtype}, "
              f"scale_factor {scale:.3e} V per count")  # fmt: skip
    table = ipc.open_stream(out / "data" / "data.arrows").read_all()
    counts_arrow = np.column_stack([table[f"AI{i}"].to_numpy() for i in range(8)])
    print(f"pyarrow: {table.num_rows} rows, columns {table.column_names[:3]} ...")
    same = np.array_equal(counts_h5, counts_arrow) and np.array_equal(
        stamps_h5.astype(np.int64), table["timestamps"].cast("int64").to_numpy()
    )
    print(f"identical samples and timestamps in both: {same}")
    with open_run(out / "data.h5") as run:
        volts = run.table("data", ["AI0"])["AI0"].to_numpy()
    print(f"AI0 through open_run: {volts.dtype}, {volts.min():.2f} to {volts.max():.2f} V")


if __name__ == "__main__":
    main()
