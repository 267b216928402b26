"""Where S3 credentials, endpoint and region come from: explicit options, the standard
``AWS_*`` environment variables, then the shared credentials and config files (a profile),
in the order boto3 and the AWS CLI use."""

from __future__ import annotations

import configparser
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from daq_storage.errors import ConfigError

__all__ = ["ResolvedS3", "S3Options"]

DEFAULT_REGION = "us-east-1"


@dataclass(frozen=True)
class S3Options:
    """How to reach an S3-compatible object store; every field unset takes the standard
    source (``AWS_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL_S3``, ``AWS_REGION`` /
    ``AWS_DEFAULT_REGION``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
    ``AWS_SESSION_TOKEN``, ``AWS_PROFILE``, then the profile in ``~/.aws/credentials``
    and ``~/.aws/config``).

    A ``profile`` named here takes its keys from the profile files before the
    environment's, as boto3 does. ``retry_timeout_s`` bounds how long one request is
    retried before the store reports it failed (a network that is down mid-run)."""

    endpoint_url: str | None = None
    region: str | None = None
    profile: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = None
    session_token: str | None = None
    anonymous: bool = False
    retry_timeout_s: float = 20.0

    @classmethod
    def coerce(cls, value: S3Options | Mapping[str, Any] | None) -> S3Options:
        """``value`` as options: an instance, a mapping of its fields (a
        ``storage_options`` dict, a ``[storage.s3]`` table), or None for the defaults.

        Raises:
            ConfigError: an unknown key or a value of the wrong type.
        """
        if value is None:
            return cls()
        if isinstance(value, S3Options):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(
                f"storage_options must be S3Options or a mapping, got {type(value).__name__}"
            )
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(str(k) for k in value if k not in known)
        if unknown:
            raise ConfigError(
                f"unknown storage option(s) {', '.join(unknown)}; known: {', '.join(known)}"
            )
        for key, item in value.items():
            if key == "anonymous":
                ok = isinstance(item, bool)
            elif key == "retry_timeout_s":
                ok = isinstance(item, int | float) and not isinstance(item, bool) and item > 0
            else:
                ok = item is None or (isinstance(item, str) and item != "")
            if not ok:
                raise ConfigError(f"storage option {key}: {item!r} is not a valid value")
        return cls(**dict(value))

    def resolved(self, environ: Mapping[str, str] | None = None) -> ResolvedS3:
        """These options with every unset field taken from its standard source.

        Raises:
            ConfigError: a profile named here (or by ``AWS_PROFILE``) that the profile
                files do not hold, or an endpoint that is not an http(s) URL.
        """
        env = os.environ if environ is None else environ
        profile_name = self.profile or env.get("AWS_PROFILE") or env.get("AWS_DEFAULT_PROFILE")
        profile = _profile(profile_name or "default", env, required=profile_name is not None)
        if self.profile is not None:  # a profile named here outranks the environment's keys
            key_sources: list[Mapping[str, str]] = [profile, _keys_from_env(env)]
        else:
            key_sources = [_keys_from_env(env), profile]
        keys = next((s for s in key_sources if s.get("aws_access_key_id")), {})
        endpoint = (
            self.endpoint_url
            or env.get("AWS_ENDPOINT_URL_S3")
            or env.get("AWS_ENDPOINT_URL")
            or profile.get("endpoint_url")
        )
        if endpoint is not None and not endpoint.startswith(("http://", "https://")):
            raise ConfigError(f"S3 endpoint {endpoint!r} must be an http:// or https:// URL")
        region = (
            self.region
            or env.get("AWS_REGION")
            or env.get("AWS_DEFAULT_REGION")
            or profile.get("region")
            or DEFAULT_REGION
        )
        explicit = self.access_key_id is not None
        return ResolvedS3(
            endpoint_url=endpoint.rstrip("/") if endpoint else None,
            region=region,
            access_key_id=self.access_key_id if explicit else keys.get("aws_access_key_id"),
            secret_access_key=(
                self.secret_access_key if explicit else keys.get("aws_secret_access_key")
            ),
            session_token=self.session_token if explicit else keys.get("aws_session_token"),
            anonymous=self.anonymous,
            retry_timeout_s=float(self.retry_timeout_s),
        )


@dataclass(frozen=True)
class ResolvedS3:
    """:class:`S3Options` with every source applied: what the stores are built from."""

    endpoint_url: str | None
    region: str
    access_key_id: str | None
    secret_access_key: str | None
    session_token: str | None
    anonymous: bool
    retry_timeout_s: float

    @property
    def allow_http(self) -> bool:
        return self.endpoint_url is not None and self.endpoint_url.startswith("http://")

    def __repr__(self) -> str:  # never print a secret
        return (
            f"ResolvedS3(endpoint_url={self.endpoint_url!r}, region={self.region!r}, "
            f"access_key_id={self.access_key_id!r}, anonymous={self.anonymous})"
        )


def _keys_from_env(env: Mapping[str, str]) -> dict[str, str]:
    found = {
        "aws_access_key_id": env.get("AWS_ACCESS_KEY_ID"),
        "aws_secret_access_key": env.get("AWS_SECRET_ACCESS_KEY"),
        "aws_session_token": env.get("AWS_SESSION_TOKEN"),
    }
    return {k: v for k, v in found.items() if v}


def _read_ini(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read(path, encoding="utf-8")
    except (configparser.Error, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read AWS profile file {path}: {exc}") from None
    return parser


def _profile(name: str, env: Mapping[str, str], *, required: bool) -> dict[str, str]:
    """Profile ``name``'s keys from the credentials file, then its settings from the
    config file (``[profile name]``, or ``[default]``)."""
    home = Path(env.get("HOME", str(Path.home())))
    credentials = Path(env.get("AWS_SHARED_CREDENTIALS_FILE", home / ".aws" / "credentials"))
    config = Path(env.get("AWS_CONFIG_FILE", home / ".aws" / "config"))
    found: dict[str, str] = {}
    seen = False
    parser = _read_ini(credentials)
    if parser.has_section(name):
        seen = True
        found.update(parser.items(name))
    parser = _read_ini(config)
    section = name if name == "default" else f"profile {name}"
    if parser.has_section(section):
        seen = True
        for key, value in parser.items(section):
            found.setdefault(key, value)
    if required and not seen:
        raise ConfigError(f"AWS profile {name!r} is in neither {credentials} nor {config}")
    return found
