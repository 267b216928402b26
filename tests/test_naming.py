"""File naming: the seeds' pattern, never overwriting, hostile names made safe."""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable
from datetime import date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from daq_storage.errors import (
    ConfigError,
    DaqStorageError,
    InvalidName,
    StorageIOError,
    describe_value,
)
from daq_storage.naming import (
    MAX_NAME_LENGTH,
    claim_path,
    format_filename,
    next_path,
    sanitize_name,
)

WHEN = datetime(2026, 1, 25, 14, 32, 45)


def test_pattern_matches_the_seeds():
    assert format_filename("wavelength_scan", WHEN, 1, "h5") == (
        "wavelength_scan_2026-01-25_14-32-45_v1.h5"
    )
    assert format_filename("polarization_analysis", WHEN, 2, ".parquet") == (
        "polarization_analysis_2026-01-25_14-32-45_v2.parquet"
    )


def test_claim_takes_the_next_free_version_and_never_overwrites(tmp_path: Path):
    first = claim_path(tmp_path, "scan", "h5", when=WHEN)
    first.write_bytes(b"precious")
    second = claim_path(tmp_path, "scan", "h5", when=WHEN)
    third = claim_path(tmp_path, "scan", "h5", when=WHEN)
    assert [p.name for p in (first, second, third)] == [
        "scan_2026-01-25_14-32-45_v1.h5",
        "scan_2026-01-25_14-32-45_v2.h5",
        "scan_2026-01-25_14-32-45_v3.h5",
    ]
    assert first.read_bytes() == b"precious"
    assert second.exists()
    assert third.exists()


def test_versions_are_per_extension(tmp_path: Path):
    h5 = claim_path(tmp_path, "scan", "h5", when=WHEN)
    parquet = claim_path(tmp_path, "scan", "parquet", when=WHEN)
    assert h5.name.endswith("_v1.h5")
    assert parquet.name.endswith("_v1.parquet")


def test_next_path_skips_existing_names_including_dangling_symlinks(tmp_path: Path):
    (tmp_path / "scan_2026-01-25_14-32-45_v1.h5").write_bytes(b"")
    (tmp_path / "scan_2026-01-25_14-32-45_v2.h5").symlink_to(tmp_path / "nowhere")
    path = next_path(tmp_path, "scan", "h5", when=WHEN)
    assert path.name == "scan_2026-01-25_14-32-45_v3.h5"
    assert not path.exists()


def test_claim_directory_for_zarr(tmp_path: Path):
    first = claim_path(tmp_path, "scan", "zarr", when=WHEN, directory=True)
    second = claim_path(tmp_path, "scan", "zarr", when=WHEN, directory=True)
    assert first.is_dir()
    assert second.name.endswith("_v2.zarr")


def test_concurrent_claims_get_distinct_paths(tmp_path: Path):
    claimed: list[Path] = []
    lock = threading.Lock()

    def claim() -> None:
        for _ in range(20):
            path = claim_path(tmp_path, "race", "arrows", when=WHEN)
            with lock:
                claimed.append(path)

    threads = [threading.Thread(target=claim) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(claimed) == 80
    assert len(set(claimed)) == 80


def test_claim_creates_missing_output_dir(tmp_path: Path):
    path = claim_path(tmp_path / "a" / "b", "scan", "csv", when=WHEN)
    assert path.parent == tmp_path / "a" / "b"


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_output_dir_raises_storage_io_error(tmp_path: Path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(StorageIOError, match="cannot create output file") as info:
        claim_path(locked, "scan", "h5", when=WHEN)
    assert info.value.filename is not None


@pytest.mark.skipif(not Path("/sys/kernel").is_dir(), reason="needs sysfs")
def test_directory_even_root_cannot_write_raises_storage_io_error():
    with pytest.raises(StorageIOError, match="cannot create output file") as info:
        claim_path("/sys/kernel", "scan", "h5", when=WHEN)
    assert info.value.errno is not None
    assert "/sys/kernel/scan_" in str(info.value.filename)


def test_output_dir_that_is_a_file_raises_storage_io_error(tmp_path: Path):
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("")
    with pytest.raises(StorageIOError, match="cannot create output directory"):
        claim_path(blocker / "sub", "scan", "h5", when=WHEN)


@pytest.mark.parametrize(
    ("hostile", "safe"),
    [
        ("../x", "x"),
        ("../../etc/passwd", "etc_passwd"),
        ("a/b", "a_b"),
        ("a\\b", "a_b"),
        ("..", None),
        ("...", None),
        (".hidden", "hidden"),
        ("a..b", "a.b"),
        ("wavelength scan #3", "wavelength_scan_3"),
        ("line\nbreak\ttab\x1b[31m", "line_break_tab_31m"),
        ("C:\\Users\\lab", "C_Users_lab"),
        ("CON", "CON_"),
        ("nul.txt", "nul.txt_"),
        ("Messung_Ä_µm", "Messung_Ä_μm"),
        ("", None),
        ("   ", None),
        ("///", None),
    ],
)
def test_hostile_names_are_sanitised(hostile: str, safe: str | None):
    if safe is None:
        with pytest.raises(InvalidName, match="no usable characters"):
            sanitize_name(hostile)
    else:
        assert sanitize_name(hostile) == safe


def test_nul_and_non_strings_are_rejected():
    with pytest.raises(InvalidName, match="NUL"):
        sanitize_name("a\x00b")
    with pytest.raises(InvalidName, match="must be a string"):
        sanitize_name(b"bytes")  # type: ignore[arg-type]


def test_long_names_are_cut():
    assert len(sanitize_name("x" * 1000)) == MAX_NAME_LENGTH


def test_hostile_experiment_stays_inside_output_dir(tmp_path: Path):
    path = claim_path(tmp_path / "out", "../../escape", "h5", when=WHEN)
    assert path.parent == tmp_path / "out"
    assert path.name.startswith("escape_")


@pytest.mark.parametrize("ext", ["../h5", "h5/x", ".", "h 5", "a" * 40, "h5."])
def test_bad_extensions_are_rejected(ext: str):
    with pytest.raises(InvalidName, match="extension"):
        format_filename("scan", WHEN, 1, ext)


@given(st.text(max_size=300))
def test_any_string_sanitises_to_one_safe_component_or_is_refused(name: str):
    try:
        safe = sanitize_name(name)
    except InvalidName:
        return
    assert safe
    assert len(safe) <= MAX_NAME_LENGTH + 1
    assert "/" not in safe
    assert "\\" not in safe
    assert ".." not in safe
    assert not safe.startswith(".")
    assert all(ch.isprintable() and not ch.isspace() for ch in safe)
    assert Path(safe).name == safe
    assert sanitize_name(safe) == safe  # idempotent


def test_a_run_directory_has_no_extension(tmp_path: Path):
    when = datetime(2026, 1, 25, 14, 32, 45)
    first = claim_path(tmp_path, "scan", "", when=when, directory=True)
    second = claim_path(tmp_path, "scan", "", when=when, directory=True)
    assert first.name == "scan_2026-01-25_14-32-45_v1"
    assert second.name == "scan_2026-01-25_14-32-45_v2"
    assert first.is_dir()
    assert second.is_dir()


# ----------------------------------------------------------------- hostile arguments
HOSTILE: list[Any] = [
    -1, 0, 1, 2**70, 10**5000, 1.5, math.nan, True, False, None, "", "x", "..", "a/b",
    "a\x00b", "\udc80", "CON", "é" * 300, "x" * 5000, b"x", [1], {}, object(),
    np.array([1, 2]), np.int64(2), date(2026, 1, 25), WHEN, ".h5", "a..b",
]  # fmt: skip


def _calls(folder: Path) -> dict[str, Callable[[Any], object]]:
    def inside(value: Any) -> Any:  # a str names a directory in the test's own folder
        return folder / value if isinstance(value, str) and "\x00" not in value else value

    return {
        "sanitize_name(name)": sanitize_name,
        "sanitize_name(what=)": lambda v: sanitize_name("", what=v),
        "sanitize_name(max_length=)": lambda v: sanitize_name("abc", max_length=v),
        "format_filename(experiment)": lambda v: format_filename(v, WHEN, 1, "h5"),
        "format_filename(when)": lambda v: format_filename("e", v, 1, "h5"),
        "format_filename(version)": lambda v: format_filename("e", WHEN, v, "h5"),
        "format_filename(ext)": lambda v: format_filename("e", WHEN, 1, v),
        "next_path(output_dir)": lambda v: next_path(inside(v), "e", "h5", when=WHEN),
        "next_path(experiment)": lambda v: next_path(folder, v, "h5", when=WHEN),
        "next_path(ext)": lambda v: next_path(folder, "e", v, when=WHEN),
        "next_path(when=)": lambda v: next_path(folder, "e", "h5", when=v),
        "claim_path(output_dir)": lambda v: claim_path(inside(v), "e", "h5", when=WHEN),
        "claim_path(experiment)": lambda v: claim_path(folder, v, "h5", when=WHEN),
        "claim_path(ext)": lambda v: claim_path(folder, "e", v, when=WHEN),
        "claim_path(when=)": lambda v: claim_path(folder, "e", "h5", when=v),
        "claim_path(directory=)": lambda v: claim_path(folder, "e", "", when=WHEN, directory=v),
    }


@pytest.mark.parametrize("call", list(_calls(Path())))
def test_only_daq_storage_errors_escape_from_hostile_arguments(tmp_path: Path, call: str):
    escaped = []
    for value in HOSTILE:
        try:
            _calls(tmp_path)[call](value)
        except DaqStorageError:
            pass
        except Exception as exc:
            escaped.append(f"{describe_value(value)}: {type(exc).__name__}: {exc}"[:200])
    assert escaped == []


def test_refusals_name_the_argument_the_value_and_what_is_accepted(tmp_path: Path):
    with pytest.raises(ConfigError, match=r"version must be an integer in 1\.\.99999, got True"):
        format_filename("scan", WHEN, True, "h5")  # once named the file "..._vTrue.h5"
    with pytest.raises(ConfigError, match=r"when must be a datetime or None, got '2026'"):
        format_filename("scan", "2026", 1, "h5")  # type: ignore[arg-type]
    with pytest.raises(InvalidName, match=r"extension must be a string, got 5"):
        claim_path(tmp_path / "out", "scan", 5)  # type: ignore[arg-type]
    assert not (tmp_path / "out").exists()  # refused before the directory was made
    with pytest.raises(InvalidName, match=r"output directory .* contains NUL"):
        claim_path(f"{tmp_path}/a\x00b", "scan", "h5")
    with pytest.raises(ConfigError, match="directory must be True or False"):
        claim_path(tmp_path, "scan", "", directory="yes")  # type: ignore[arg-type]
