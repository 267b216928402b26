"""Which formats each stream goes to, and what cannot be routed."""

from __future__ import annotations

from pathlib import Path

import pytest

from daq_storage.errors import ConfigError
from daq_storage.recorder import Recorder
from daq_storage.recorder._routing import Route, Routing
from daq_storage.ring import RingBuffer
from tests.recorder.conftest import outputs, read_frames, read_table, table, write_frames


def test_formats_routing_keeps_the_formats_that_can_hold_the_kind() -> None:
    routing = Routing(["HDF5", "csv", "tiff"])
    assert routing.formats == ("hdf5", "csv", "tiff")
    assert routing.route("cam", "frame") == Route("cam", "frames", ("hdf5", "tiff"))
    assert routing.route("meter", "arrow") == Route("meter", "table", ("hdf5", "csv"))


def test_a_stream_no_format_can_hold_is_unroutable() -> None:
    route = Routing(["csv"]).route("cam", "frame")
    assert route.formats == ()
    assert "can hold frames" in route.error
    raw = Routing(["hdf5"]).route("bytes", "raw")
    assert raw.kind == "raw"
    assert raw.formats == ()
    assert raw.error


def test_explicit_routing_overrides_formats_and_reports_a_format_that_cannot() -> None:
    routing = Routing(["hdf5"], {"cam": ["tiff", "zarr"], "meter": ["csv", "tiff"]})
    assert routing.all_formats == ("hdf5", "tiff", "zarr", "csv")
    assert routing.route("cam", "frame") == Route("cam", "frames", ("tiff", "zarr"))
    assert routing.route("other", "frame").formats == ("hdf5",)
    meter = routing.route("meter", "arrow")
    assert meter.formats == ("csv",)
    assert "tiff cannot hold tables" in meter.error


@pytest.mark.parametrize(
    ("formats", "streams", "message"),
    [
        (["hdf5"], {"cam": []}, "at least one"),
        (["hdf5"], {"cam": "tiff"}, "list"),
        (["hdf5"], {"cam": ["tif"]}, "unknown writer"),
        (["hdf5"], {"": ["tiff"]}, "stream name"),
        (["hdf5"], ["cam"], "map stream names"),
        ([1], None, "string"),
    ],
)
def test_bad_routing_is_a_config_error(formats: object, streams: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Routing(formats, streams)  # type: ignore[arg-type]


def test_records_go_where_routed_and_unroutable_ones_are_counted(
    ring: RingBuffer, tmp_path: Path
) -> None:
    write_frames(ring, "cam", 0, 4)
    write_frames(ring, "spectra", 0, 3, shape=(16,))
    ring.write_batch(table(0, 6), stream="meter")
    ring.write(b"opaque", stream="blob")
    recorder = Recorder(ring.path, formats=["csv"], streams={"cam": ["tiff", "csv"],
                        "spectra": ["hdf5"]}, output_dir=tmp_path, mode="thread")  # fmt: skip
    recorder.start()
    stats = recorder.stop()

    assert stats.streams["cam"].formats == ("tiff",)
    assert stats.streams["cam"].unroutable == 4  # they missed the csv they were meant for
    assert stats.streams["blob"].unroutable == 1
    assert stats.streams["meter"].unroutable == 0
    assert not stats.complete
    assert any("csv cannot hold frames" in e for e in stats.errors), stats.errors
    (tiff,) = outputs(stats, "tiff")
    assert len(read_frames("tiff", tiff, "cam")[0]) == 4
    (hdf5,) = outputs(stats, "hdf5")
    assert read_frames("hdf5", hdf5, "spectra")[0].shape == (3, 16)
    (csv,) = outputs(stats, "csv")
    assert read_table("csv", csv, "meter").num_rows == 6
