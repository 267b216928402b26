"""An ``s3://bucket/key`` destination, and the stores that reach it: zarr-python's
``ObjectStore`` (over obstore), ``pyarrow.fs.S3FileSystem``, and the storage options
polars and fsspec (xarray) take."""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from daq_storage.errors import ConfigError, StorageIOError
from daq_storage.location._options import ResolvedS3, S3Options

if TYPE_CHECKING:
    import pyarrow.fs
    import zarr.storage
    from obstore.store import S3Store

__all__ = ["S3Location", "is_remote", "parse_location", "s3_errors"]

#: S3's bucket naming rules (lower case, digits, dots and hyphens, 3 to 63 characters).
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_SCHEME = re.compile(r"^(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*)://")


def is_remote(path: object) -> bool:
    """Whether ``path`` is a URL (``s3://...``) rather than a local path."""
    return isinstance(path, S3Location) or (
        isinstance(path, str) and _SCHEME.match(path) is not None
    )


@dataclass(frozen=True)
class S3Location:
    """Object ``key`` (or the prefix ``key/``) in ``bucket``, reached with ``options``."""

    bucket: str
    key: str
    options: ResolvedS3

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.key}" if self.key else f"s3://{self.bucket}"

    def __str__(self) -> str:
        return self.url

    @property
    def name(self) -> str:
        """The last part of the key (as ``Path.name``)."""
        return self.key.rpartition("/")[2]

    @property
    def parent(self) -> S3Location:
        return S3Location(self.bucket, self.key.rpartition("/")[0], self.options)

    def child(self, *parts: str) -> S3Location:
        """The location ``parts`` below this one (``/`` separated, no ``..``)."""
        key = "/".join(p.strip("/") for p in (self.key, *parts) if p.strip("/"))
        _check_key(key)
        return S3Location(self.bucket, key, self.options)

    # ------------------------------------------------------------------ stores
    @property
    def arrow_path(self) -> str:
        """This location as ``pyarrow.fs.S3FileSystem`` names it: ``bucket/key``."""
        return f"{self.bucket}/{self.key}" if self.key else self.bucket

    def arrow_filesystem(self) -> pyarrow.fs.S3FileSystem:
        """A ``pyarrow.fs.S3FileSystem`` for the bucket (shared per set of options)."""
        return _arrow_filesystem(self.options)

    def object_store(self) -> S3Store:
        """An obstore ``S3Store`` rooted at this location (keys are relative to it)."""
        return _object_store(self.options, self.bucket, self.key)

    def zarr_store(self, *, read_only: bool = False) -> zarr.storage.ObjectStore[Any]:
        """zarr-python's ``ObjectStore`` rooted at this location."""
        import zarr.storage

        return zarr.storage.ObjectStore(self.object_store(), read_only=read_only)

    def fsspec_options(self) -> dict[str, Any]:
        """``storage_options`` for fsspec / s3fs (``xarray.open_zarr(url, storage_options=...)``,
        ``pandas.read_parquet``)."""
        o = self.options
        found: dict[str, Any] = {"anon": o.anonymous}
        if o.endpoint_url:
            found["endpoint_url"] = o.endpoint_url
        if o.access_key_id:
            found["key"] = o.access_key_id
            found["secret"] = o.secret_access_key
        if o.session_token:
            found["token"] = o.session_token
        found["client_kwargs"] = {"region_name": o.region}
        return found

    def polars_options(self) -> dict[str, str]:
        """``storage_options`` for polars (``pl.scan_parquet(url, storage_options=...)``)."""
        o = self.options
        found = {"aws_region": o.region}
        if o.endpoint_url:
            found["aws_endpoint_url"] = o.endpoint_url
            found["aws_allow_http"] = "true" if o.allow_http else "false"
        if o.access_key_id and o.secret_access_key:
            found["aws_access_key_id"] = o.access_key_id
            found["aws_secret_access_key"] = o.secret_access_key
        if o.session_token:
            found["aws_session_token"] = o.session_token
        if o.anonymous:
            found["aws_skip_signature"] = "true"
        return found

    def claim(self, key: str, body: bytes, *, what: str) -> None:
        """Make this prefix ``what``'s own: the bucket checked, a prefix that holds any
        object refused, then object ``key`` created with a conditional create
        (``If-None-Match``), so of two writers racing for the prefix one is refused.
        There is no lock on S3: this is what protects an output.

        Raises:
            StorageIOError: no such bucket, access denied, the store cannot be reached,
                or the prefix is taken (``EEXIST``, naming an object found there).
        """
        import obstore
        import obstore.exceptions

        self.check_bucket()
        store = self.object_store()
        with s3_errors(self, f"create {what}"):
            listed = next(iter(obstore.list(store, chunk_size=1)), [])
            found = listed[0]["path"] if listed else None
            if found is None:
                try:
                    obstore.put(store, key, body, mode="create")
                except obstore.exceptions.AlreadyExistsError:
                    found = key  # another writer came first
        if found is not None:
            raise StorageIOError(
                errno.EEXIST,
                f"cannot create {what} at {self.url}: it already holds objects (such as "
                f"{self.child(found)}); an output is never overwritten: write to a new prefix",
                self.url,
            )

    def check_bucket(self) -> None:
        """Raise :class:`StorageIOError` unless the bucket exists and can be listed with
        these credentials (a destination checked before anything is written)."""
        import obstore

        with s3_errors(self, "open"):
            store = _object_store(self.options, self.bucket, "")
            next(iter(obstore.list(store, prefix=self.key or None, chunk_size=1)), None)


def parse_location(
    path: str | os.PathLike[str] | S3Location,
    storage_options: S3Options | Mapping[str, Any] | None = None,
) -> Path | S3Location:
    """``path`` as a local :class:`~pathlib.Path`, or an :class:`S3Location` for an
    ``s3://bucket/key`` URL (``storage_options`` then say how to reach it).

    Raises:
        ConfigError: another URL scheme, a bad bucket name or key, storage options given
            for a local path, or options that do not resolve (see :class:`S3Options`).
    """
    if isinstance(path, S3Location):
        if storage_options is not None:
            raise ConfigError("storage_options given with an S3Location that holds its own")
        return path
    if not isinstance(path, str):
        if storage_options is not None:
            raise ConfigError(f"storage_options are for s3:// URLs, not the local path {path}")
        return Path(path)
    found = _SCHEME.match(path)
    if found is None:
        if storage_options is not None:
            raise ConfigError(f"storage_options are for s3:// URLs, not the local path {path}")
        return Path(path)
    scheme = found["scheme"].lower()
    if scheme == "file":
        return Path(path[len("file://") :])
    if scheme not in ("s3", "s3a"):
        raise ConfigError(f"{path!r}: only s3:// URLs and local paths are destinations")
    bucket, _, key = path[found.end() :].partition("/")
    if not _BUCKET.match(bucket) or ".." in bucket:
        raise ConfigError(f"{path!r}: {bucket!r} is not a valid S3 bucket name")
    key = key.strip("/")
    _check_key(key, path)
    return S3Location(bucket, key, S3Options.coerce(storage_options).resolved())


def _check_key(key: str, url: str | None = None) -> None:
    where = repr(url) if url is not None else f"key {key!r}"
    parts = key.split("/") if key else []
    if any(p in ("", ".", "..") for p in parts):
        raise ConfigError(f"{where}: empty, '.' and '..' parts are not allowed in an S3 key")
    if "\x00" in key or len(key.encode("utf-8", "surrogatepass")) > 1024:
        raise ConfigError(f"{where}: an S3 key is at most 1024 bytes, without NUL")


# ---------------------------------------------------------------------- store factories
@cache
def _arrow_filesystem(options: ResolvedS3) -> pyarrow.fs.S3FileSystem:
    import pyarrow.fs

    kwargs: dict[str, Any] = {
        "region": options.region,
        "anonymous": options.anonymous,
        "connect_timeout": min(options.retry_timeout_s, 10.0),
        "request_timeout": options.retry_timeout_s,
        "retry_strategy": pyarrow.fs.AwsStandardS3RetryStrategy(max_attempts=3),
    }
    if options.endpoint_url:
        scheme, _, host = options.endpoint_url.partition("://")
        kwargs.update(endpoint_override=host, scheme=scheme)
    if options.access_key_id and not options.anonymous:
        kwargs.update(
            access_key=options.access_key_id,
            secret_key=options.secret_access_key,
            session_token=options.session_token,
        )
    return pyarrow.fs.S3FileSystem(**kwargs)


@cache
def _object_store(options: ResolvedS3, bucket: str, prefix: str) -> S3Store:
    from obstore.store import S3Store

    config: dict[str, Any] = {"region": options.region}
    if options.endpoint_url:
        config["endpoint"] = options.endpoint_url
    if options.anonymous:
        config["skip_signature"] = True
    elif options.access_key_id:
        config["access_key_id"] = options.access_key_id
        config["secret_access_key"] = options.secret_access_key
        if options.session_token:
            config["session_token"] = options.session_token
    timeout = timedelta(seconds=options.retry_timeout_s)
    return S3Store(
        bucket,
        prefix=prefix or None,
        client_options={"allow_http": options.allow_http, "timeout": timeout},
        retry_config={
            "max_retries": 3,
            "retry_timeout": timeout,
            "backoff": {
                "init_backoff": timedelta(milliseconds=100),
                "max_backoff": timedelta(seconds=2),
                "base": 2.0,
            },
        },
        **config,
    )


# ---------------------------------------------------------------------- errors
#: Matched as words of the server's answer (a bare "403" would match a port in the URL).
_DENIED = ("AccessDenied", "ACCESS_DENIED", "403 Forbidden", "InvalidAccessKeyId")
_UNREACHABLE = (
    "NETWORK_CONNECTION",
    "Connection refused",
    "error sending request",
    "Could not connect",
    "timed out",
    "Timeout",
    "dns error",
)
#: In this order: a request that never reached the server says so before any word of an
#: answer it did not get.
_CAUSES: list[tuple[tuple[str, ...], int, str]] = [
    (_UNREACHABLE, errno.EHOSTUNREACH, "cannot reach the object store"),
    (("NoSuchBucket", "bucket does not exist"), errno.ENOENT, "no such bucket"),
    ((*_DENIED, "SignatureDoesNotMatch"), errno.EACCES, "access denied"),
]


def describe_failure(exc: BaseException) -> tuple[int, str]:
    """An S3 failure (obstore's or pyarrow's) as an errno and a cause a user reads."""
    import obstore.exceptions as obstore_errors

    text = str(exc)
    if isinstance(exc, obstore_errors.PermissionDeniedError | obstore_errors.UnauthenticatedError):
        return errno.EACCES, "access denied"
    for needles, code, cause in _CAUSES:
        if any(n in text for n in needles):
            return code, cause
    if isinstance(exc, FileNotFoundError | obstore_errors.NotFoundError):
        return errno.ENOENT, "not found"
    return errno.EIO, "object store request failed"


@contextmanager
def s3_errors(location: S3Location, action: str) -> Iterator[None]:
    """Turn an object store's failure (obstore's exceptions, pyarrow's ``OSError``) into
    :class:`StorageIOError` naming the location, the action and the cause."""
    import obstore.exceptions as obstore_errors

    try:
        yield
    except StorageIOError:
        raise
    except (OSError, obstore_errors.BaseError) as exc:
        code, cause = describe_failure(exc)
        first = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
        where = location.url
        endpoint = location.options.endpoint_url or "AWS"
        raise StorageIOError(
            code, f"cannot {action} {where} at {endpoint}: {cause} ({first})", where
        ) from exc
