"""What the ExternalData tests share: a sink that records what it is handed, real files
written with h5py, and documents made with event-model's compose helpers."""

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import event_model
import h5py
import numpy as np

from daq_storage.documents._external import ExternalSink

HDF5 = "application/x-hdf5"
TIFF = "multipart/related;type=image/tiff"


class RecordingSink:
    """Keeps every reference row and every frame block it is given."""

    def __init__(self) -> None:
        self.rows: dict[str, list[dict[str, Any]]] = {}
        self.frames: list[tuple[str, str, tuple[int, int], np.ndarray]] = []

    def record_reference(self, table: str, row: Mapping[str, Any]) -> None:
        assert table in ("resources", "datums", "stream_datums")
        for value in row.values():
            assert isinstance(value, (str, int, float, bool)), row
        self.rows.setdefault(table, []).append(dict(row))

    def write_external_frames(
        self, descriptor_uid: str, data_key: str, seq_nums: tuple[int, int], frames: np.ndarray
    ) -> None:
        assert frames.shape[0] == seq_nums[1] - seq_nums[0]
        self.frames.append((descriptor_uid, data_key, seq_nums, frames.copy()))


def _sink_type_checks(sink: RecordingSink) -> ExternalSink:
    return sink  # mypy: RecordingSink satisfies the protocol


def _h5(path: Path, dataset: str, data: np.ndarray) -> Path:
    with h5py.File(path, "w") as file:
        file.create_dataset(dataset, data=data, chunks=(1, *data.shape[1:]))
    return path


def _frames(count: int, shape: tuple[int, ...] = (4, 5), dtype: str = "u2") -> np.ndarray:
    size = count * int(np.prod(shape))
    return np.arange(size, dtype=dtype).reshape(count, *shape)


def _descriptor(
    run: event_model.ComposeRunBundle, shapes: Mapping[str, list[int]]
) -> dict[str, Any]:
    data_keys = {
        key: {"source": "sim", "dtype": "array", "shape": shape, "external": "STREAM:"}
        for key, shape in shapes.items()
    }
    bundle = run.compose_descriptor(name="primary", data_keys=data_keys)
    return dict(bundle.descriptor_doc)


def _seq(start: int, stop: int) -> dict[str, int]:
    return {"start": start, "stop": stop}


def _stream(
    run: Any, path: Path, data_key: str, parameters: dict[str, Any], mimetype: str = HDF5
) -> Any:
    return run.compose_stream_resource(
        mimetype=mimetype, uri=path.absolute().as_uri(), data_key=data_key, parameters=parameters
    )
