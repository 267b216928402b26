"""``s3://`` destinations: parsing, where credentials come from, and errors that name the
cause, against a real S3-compatible server on loopback."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import obstore
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from daq_storage.errors import ConfigError, StorageIOError
from daq_storage.location import (
    S3Location,
    S3Options,
    describe_failure,
    parse_location,
    s3_errors,
)
from daq_storage.testing import S3Server

NO_AWS = {
    "HOME": "/nonexistent-home",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/credentials",
    "AWS_CONFIG_FILE": "/nonexistent/config",
}


def test_local_paths_stay_paths(tmp_path: Path) -> None:
    assert parse_location(tmp_path / "run.zarr") == tmp_path / "run.zarr"
    assert parse_location(str(tmp_path)) == tmp_path
    assert parse_location(f"file://{tmp_path}") == tmp_path


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("gs://bucket/run.zarr", "only s3://"),
        ("s3://Bad_Bucket/run", "not a valid S3 bucket name"),
        ("s3://ab/run", "not a valid S3 bucket name"),
        ("s3://bucket/a/../b", "'..'"),
        ("s3://bucket/a//b", "empty"),
    ],
)
def test_bad_urls_are_refused(url: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        parse_location(url)


def test_storage_options_are_refused_for_a_local_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="local path"):
        parse_location(str(tmp_path), {"region": "eu-west-1"})


def test_unknown_storage_option_is_named() -> None:
    with pytest.raises(ConfigError, match=r"endpoint.*known: endpoint_url"):
        S3Options.coerce({"endpoint": "http://127.0.0.1:9"})


def test_explicit_options_outrank_the_environment() -> None:
    env = {**NO_AWS, "AWS_ENDPOINT_URL": "http://127.0.0.1:1", "AWS_ACCESS_KEY_ID": "env",
           "AWS_SECRET_ACCESS_KEY": "envsecret", "AWS_REGION": "eu-west-1"}  # fmt: skip
    resolved = S3Options(endpoint_url="http://127.0.0.1:2", access_key_id="mine",
                         secret_access_key="minesecret").resolved(env)  # fmt: skip
    assert resolved.endpoint_url == "http://127.0.0.1:2"
    assert (resolved.access_key_id, resolved.secret_access_key) == ("mine", "minesecret")
    assert resolved.region == "eu-west-1"
    assert resolved.allow_http
    assert "minesecret" not in repr(resolved)


def test_environment_then_profile(tmp_path: Path) -> None:
    credentials = tmp_path / "credentials"
    credentials.write_text(
        "[default]\naws_access_key_id = filekey\naws_secret_access_key = filesecret\n"
        "[lab]\naws_access_key_id = labkey\naws_secret_access_key = labsecret\n"
    )
    config = tmp_path / "config"
    config.write_text("[profile lab]\nregion = eu-central-1\nendpoint_url = http://127.0.0.1:3\n")
    env = {"HOME": str(tmp_path), "AWS_SHARED_CREDENTIALS_FILE": str(credentials),
           "AWS_CONFIG_FILE": str(config)}  # fmt: skip
    assert S3Options().resolved(env).access_key_id == "filekey"
    assert S3Options().resolved(env).region == "us-east-1"
    lab = S3Options(profile="lab").resolved({**env, "AWS_ACCESS_KEY_ID": "envkey"})
    assert (lab.access_key_id, lab.region, lab.endpoint_url) == (
        "labkey",
        "eu-central-1",
        "http://127.0.0.1:3",
    )
    by_env = S3Options().resolved({**env, "AWS_PROFILE": "lab"})
    assert by_env.access_key_id == "labkey"
    with pytest.raises(ConfigError, match="profile 'nope'"):
        S3Options(profile="nope").resolved(env)


def test_the_stores_reach_the_same_objects(s3_server: S3Server, s3_bucket: str) -> None:
    location = parse_location(f"s3://{s3_bucket}/runs", s3_server.options())
    assert isinstance(location, S3Location)
    location.check_bucket()
    table = pa.table({"x": [1, 2, 3]})
    pq.write_table(table, location.child("a.parquet").arrow_path,
                   filesystem=location.arrow_filesystem())  # fmt: skip
    listed = [m["path"] for m in obstore.list(location.object_store()).collect()]
    assert listed == ["a.parquet"]
    assert pq.read_table(location.child("a.parquet").arrow_path,
                         filesystem=location.arrow_filesystem()).equals(table)  # fmt: skip


def test_the_environment_reaches_the_server(s3_server: S3Server, s3_bucket: str,
                                            monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    for key, value in {**NO_AWS, **s3_server.environ()}.items():
        monkeypatch.setenv(key, value)
    location = parse_location(f"s3://{s3_bucket}/x")
    assert isinstance(location, S3Location)
    assert location.options.endpoint_url == s3_server.endpoint_url
    location.check_bucket()


def test_a_missing_bucket_is_a_storage_error(s3_server: S3Server) -> None:
    location = parse_location("s3://no-such-bucket-here/x", s3_server.options())
    assert isinstance(location, S3Location)
    with pytest.raises(StorageIOError, match="no such bucket") as caught:
        location.check_bucket()
    assert caught.value.errno == errno.ENOENT
    assert "s3://no-such-bucket-here/x" in str(caught.value)


def test_an_unreachable_endpoint_is_a_storage_error() -> None:
    options = S3Options(endpoint_url="http://127.0.0.1:9", access_key_id="k",
                        secret_access_key="s", retry_timeout_s=1.0)  # fmt: skip
    location = parse_location("s3://some-bucket/x", options)
    assert isinstance(location, S3Location)
    with pytest.raises(StorageIOError, match="cannot reach") as caught:
        location.check_bucket()
    assert caught.value.errno == errno.EHOSTUNREACH
    with pytest.raises(StorageIOError, match="cannot write"), s3_errors(location, "write"):
        pq.write_table(pa.table({"x": [1]}), location.child("y.parquet").arrow_path,
                       filesystem=location.arrow_filesystem())  # fmt: skip


@pytest.mark.parametrize(
    ("text", "code"),
    [
        # A port that reads like a status code: the request never got an answer.
        ("Error performing PUT http://127.0.0.1:40369/b/k - HTTP error: error sending request",
         errno.EHOSTUNREACH),
        ("AWS Error NETWORK_CONNECTION during PutObject: Could not connect to server",
         errno.EHOSTUNREACH),
        ("Server returned non-2xx status code: 404 Not Found: <Code>NoSuchBucket</Code>",
         errno.ENOENT),
        ("Server returned non-2xx status code: 403 Forbidden: <Code>AccessDenied</Code>",
         errno.EACCES),
    ],
)  # fmt: skip
def test_failures_are_named_by_their_cause(text: str, code: int) -> None:
    assert describe_failure(OSError(text))[0] == code


def test_a_profile_names_the_server_and_the_keys(
    s3_server: S3Server, s3_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer reaches the store through a named profile alone (endpoint, region and
    keys in the profile files, as the AWS CLI keeps them), and a reader through
    ``AWS_PROFILE``."""
    from daq_storage import open_run, open_writer
    from daq_storage.testing._s3 import ACCESS_KEY, SECRET_KEY

    (tmp_path / "credentials").write_text(
        f"[lab]\naws_access_key_id = {ACCESS_KEY}\naws_secret_access_key = {SECRET_KEY}\n"
    )
    (tmp_path / "config").write_text(
        f"[profile lab]\nregion = us-east-1\nendpoint_url = {s3_server.endpoint_url}\n"
    )
    for key in [k for k in os.environ if k.startswith("AWS_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    url = f"s3://{s3_bucket}/profiled"
    with open_writer("parquet", url, storage_options={"profile": "lab"}) as writer:
        writer.write_batch("power", pa.table({"watts": [1.5, 2.5]}))
    monkeypatch.setenv("AWS_PROFILE", "lab")
    with open_run(url) as run:
        assert run.table("power")["watts"].to_pylist() == [1.5, 2.5]


def test_of_writers_racing_for_a_prefix_exactly_one_claims_it(
    s3_server: S3Server, s3_bucket: str
) -> None:
    import threading

    location = parse_location(f"s3://{s3_bucket}/raced", s3_server.options())
    assert isinstance(location, S3Location)
    start = threading.Barrier(6)
    outcomes: list[object] = []

    def claim(n: int) -> None:
        start.wait()
        try:
            location.claim("claim.json", str(n).encode(), what="a test output")
            outcomes.append(n)
        except StorageIOError as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=claim, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    (winner,) = [o for o in outcomes if isinstance(o, int)]
    refused = [o for o in outcomes if isinstance(o, StorageIOError)]
    assert len(refused) == 5
    assert all(e.errno == errno.EEXIST and "already holds objects" in str(e) for e in refused)
    body = obstore.get(location.object_store(), "claim.json").bytes()
    assert bytes(body) == str(winner).encode()
