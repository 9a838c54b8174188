"""A store in an S3 bucket and prefix (AWS, MinIO, moto), through boto3: the only module of
``tdds_core`` that imports boto3 or botocore, inside functions (``tests/test_layering.py``).

Endpoint, region and credentials come from the standard AWS environment and config files:

* endpoint: ``AWS_ENDPOINT_URL_S3``, then ``AWS_ENDPOINT_URL``, then ``MLFLOW_S3_ENDPOINT_URL``
  (none = AWS itself); a custom endpoint uses path-style addressing;
* region: ``AWS_REGION`` / ``AWS_DEFAULT_REGION`` / ``~/.aws/config`` (default ``us-east-1``);
* credentials: ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` / ``AWS_PROFILE`` / instance roles.
  Credential values are never logged nor written anywhere.

Tuning (environment, or keyword arguments of :class:`S3Store`): ``TDDS_S3_MULTIPART_THRESHOLD`` /
``TDDS_S3_MULTIPART_CHUNKSIZE`` (bytes; default 64 MiB / 16 MiB: files at least this large go as
multipart uploads); ``TDDS_S3_RETRIES`` (default 3: attempts by tdds, each with botocore's own
retries, ``AWS_MAX_ATTEMPTS``, default 2, and exponential backoff in between; after them a
StorageError names the endpoint and what to check); ``TDDS_S3_MAX_POOL`` (default 32: connections
one client keeps open; parallel downloads of a manifest dataset's images use up to this many).
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import random
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Optional, TypeVar

from ..errors import ArtifactError, StorageError
from ..io import sha256_bytes
from .base import DEFAULT_MAX_POOL, ObjectInfo, Store, atomic_write
from .uris import join_keys, redact_url, validate_key

__all__ = ["S3Store", "resolve_endpoint", "ENV_MULTIPART_THRESHOLD", "ENV_MULTIPART_CHUNKSIZE", "ENV_RETRIES",
           "ENV_MAX_POOL"]

log = logging.getLogger(__name__)

ENV_MULTIPART_THRESHOLD = "TDDS_S3_MULTIPART_THRESHOLD"
ENV_MULTIPART_CHUNKSIZE = "TDDS_S3_MULTIPART_CHUNKSIZE"
ENV_RETRIES = "TDDS_S3_RETRIES"
ENV_MAX_POOL = "TDDS_S3_MAX_POOL"
DEFAULT_MULTIPART_THRESHOLD = 64 << 20
DEFAULT_MULTIPART_CHUNKSIZE = 16 << 20
DEFAULT_RETRIES = 3
SHA_META = "sha256"  # S3 user metadata key (x-amz-meta-sha256) holding each object's SHA-256

T = TypeVar("T")


_RETRYABLE_CODES = {
    "500", "502", "503", "504", "InternalError", "ServiceUnavailable", "SlowDown", "RequestTimeout",
    "RequestTimeTooSkewed", "Throttling", "ThrottlingException", "RequestLimitExceeded",
}
_CREDENTIAL_CODES = {
    "InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "InvalidToken", "ExpiredToken",
    "TokenRefreshRequired", "InvalidClientTokenId", "UnrecognizedClientException", "403",
}
_CLIENTS: dict[tuple, Any] = {}


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw in (None, ""):
        return default
    try:
        return int(float(raw))
    except ValueError:
        raise StorageError(f"${name}={raw!r} is not a number; set it to an integer (bytes or a count)") from None


def resolve_endpoint(endpoint_url: Optional[str] = None) -> Optional[str]:
    """The S3 endpoint URL in force: argument, ``AWS_ENDPOINT_URL_S3``, ``AWS_ENDPOINT_URL``,
    ``MLFLOW_S3_ENDPOINT_URL``; None = AWS."""
    for v in (endpoint_url, os.environ.get("AWS_ENDPOINT_URL_S3"), os.environ.get("AWS_ENDPOINT_URL"),
              os.environ.get("MLFLOW_S3_ENDPOINT_URL")):
        if v:
            return v
    return None


def _error_chain(e: BaseException) -> list[BaseException]:
    out, seen = [], set()
    cur: Optional[BaseException] = e
    while cur is not None and id(cur) not in seen:
        out.append(cur)
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__ or getattr(cur, "last_exception", None)
    return out


class S3Store(Store):
    """An S3 bucket and prefix (AWS, MinIO, moto), through boto3.

    Each object carries its SHA-256 as user metadata (``x-amz-meta-sha256``), so an interrupted
    ``put_dir`` resumes without sending finished files again.
    """

    def __init__(self, bucket: str, prefix: str = "", *, endpoint_url: Optional[str] = None,
                 region: Optional[str] = None, multipart_threshold: Optional[int] = None,
                 multipart_chunksize: Optional[int] = None, retries: Optional[int] = None,
                 backoff_s: float = 0.5, connect_timeout_s: float = 5.0, read_timeout_s: float = 60.0):
        super().__init__()
        if not bucket or "/" in bucket:
            raise StorageError(f"invalid S3 bucket name {bucket!r}; use s3://bucket/prefix")
        self.bucket = bucket
        self.prefix = validate_key(prefix.strip("/"), allow_root=True) if prefix else ""
        self.uri = f"s3://{bucket}" + (f"/{self.prefix}" if self.prefix else "")
        self.endpoint_url = resolve_endpoint(endpoint_url)
        self.region = region
        self.multipart_threshold = int(multipart_threshold or _env_int(ENV_MULTIPART_THRESHOLD, DEFAULT_MULTIPART_THRESHOLD))
        chunk = int(multipart_chunksize or _env_int(ENV_MULTIPART_CHUNKSIZE, DEFAULT_MULTIPART_CHUNKSIZE))
        self.multipart_chunksize = max(chunk, 5 << 20)  # S3's smallest part
        self.retries = max(1, int(retries if retries is not None else _env_int(ENV_RETRIES, DEFAULT_RETRIES)))
        self.backoff_s = float(backoff_s)
        self.connect_timeout_s = connect_timeout_s
        self.read_timeout_s = read_timeout_s
        self.max_parallel = max(10, _env_int(ENV_MAX_POOL, DEFAULT_MAX_POOL))
        self._client = None
        self._transfer_config = None

    def __repr__(self) -> str:
        return f"S3Store({self.uri!r}, endpoint={self.endpoint_label!r})"

    @property
    def endpoint_label(self) -> str:
        return redact_url(self.endpoint_url) if self.endpoint_url else "AWS S3 (no AWS_ENDPOINT_URL set)"

    @property
    def identity(self) -> str:
        endpoint = redact_url(self.endpoint_url).rstrip("/") if self.endpoint_url else "aws"
        return f"s3:{endpoint}/{self.bucket}/{self.prefix}"

    # -- client --
    @property
    def client(self) -> Any:
        if self._client is None:
            try:
                import boto3
                from botocore.config import Config as BotoConfig
            except ImportError as e:  # pragma: no cover - boto3 is a dependency
                raise StorageError("S3 storage needs boto3: pip install boto3") from e
            session = boto3.session.Session()
            region = self.region or session.region_name or "us-east-1"
            max_attempts = _env_int("AWS_MAX_ATTEMPTS", 2)
            cache_key = (self.endpoint_url, region, max_attempts, self.connect_timeout_s, self.read_timeout_s,
                         self.max_parallel, os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_SECRET_ACCESS_KEY"),
                         os.environ.get("AWS_SESSION_TOKEN"), os.environ.get("AWS_PROFILE"))
            cache_key = tuple(hashlib.sha256(str(v).encode()).hexdigest() for v in cache_key)
            client = _CLIENTS.get(cache_key)
            if client is None:
                cfg = BotoConfig(
                    retries={"max_attempts": max_attempts, "mode": "standard"},
                    connect_timeout=self.connect_timeout_s, read_timeout=self.read_timeout_s,
                    max_pool_connections=self.max_parallel,
                    s3={"addressing_style": "path"} if self.endpoint_url else None,
                )
                client = session.client("s3", endpoint_url=self.endpoint_url, region_name=region, config=cfg)
                _CLIENTS[cache_key] = client
            self._client = client
        return self._client

    @property
    def transfer_config(self) -> Any:
        if self._transfer_config is None:
            from boto3.s3.transfer import TransferConfig

            self._transfer_config = TransferConfig(
                multipart_threshold=self.multipart_threshold, multipart_chunksize=self.multipart_chunksize,
                max_concurrency=4, use_threads=True,
            )
        return self._transfer_config

    def _full(self, key: str) -> str:
        return join_keys(self.prefix, key)

    def _rel(self, full_key: str) -> str:
        if self.prefix:
            return full_key[len(self.prefix) + 1:]
        return full_key

    # -- errors and retries --
    def _call(self, what: str, fn: Callable[[], T], *, missing_ok: bool = False) -> T:
        """Run ``fn`` (a boto3 call on :attr:`client`) with bounded retries and backoff; a failure
        becomes one StorageError naming ``what``, the endpoint and the fix. With ``missing_ok`` a
        missing object (or a 404 without a code, e.g. HEAD of a missing bucket) raises
        :class:`_ObjectMissing` instead."""
        last: Optional[BaseException] = None
        for attempt in range(1, self.retries + 1):
            try:
                return fn()
            except Exception as e:  # noqa: BLE001 - classified below
                kind, code = self._classify(e)
                if kind == "missing" and missing_ok:
                    raise _ObjectMissing() from None
                if kind != "retry":
                    raise self._fatal(what, kind, code, e) from None
                last = e
                if attempt < self.retries:
                    delay = self.backoff_s * (2 ** (attempt - 1)) * (1 + random.random() * 0.25)
                    log.warning("S3 %s failed (attempt %d/%d: %s); retrying in %.1fs",
                                what, attempt, self.retries, type(e).__name__, delay)
                    time.sleep(delay)
        detail = _short(last)
        raise StorageError(
            f"cannot reach S3 endpoint {self.endpoint_label} for {what} after {self.retries} attempts: {detail}; "
            "check AWS_ENDPOINT_URL (or MLFLOW_S3_ENDPOINT_URL), that the server is up and reachable, "
            f"and your network; raise {ENV_RETRIES} for a flaky link."
        ) from None

    @staticmethod
    def _classify(e: BaseException) -> tuple[str, str]:
        from botocore.exceptions import (ClientError, ConnectionError as BotoConnectionError, HTTPClientError,
                                         NoCredentialsError, PartialCredentialsError, NoRegionError)

        for x in _error_chain(e):
            if isinstance(x, (NoCredentialsError, PartialCredentialsError)):
                return "nocreds", type(x).__name__
            if isinstance(x, NoRegionError):
                return "noregion", "NoRegionError"
            if isinstance(x, ClientError):
                err = x.response.get("Error", {}) or {}
                code = str(err.get("Code", ""))
                status = str(x.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
                if code in ("NoSuchBucket",):
                    return "nobucket", code
                if code in ("NoSuchKey", "404", "NotFound") or status == "404":
                    return "missing", code or status
                if code in _CREDENTIAL_CODES or status == "403":
                    return "denied", code or status
                if code in _RETRYABLE_CODES or status.startswith("5"):
                    return "retry", code or status
                return "client", code or status
            if isinstance(x, (BotoConnectionError, HTTPClientError, ConnectionError, TimeoutError)):
                return "retry", type(x).__name__
        return ("retry" if "Could not connect" in str(e) or "Connection" in type(e).__name__ else "other"), type(e).__name__

    def _fatal(self, what: str, kind: str, code: str, e: BaseException) -> BaseException:
        ep = self.endpoint_label
        if kind == "nocreds":
            return StorageError(
                f"no AWS credentials for S3 endpoint {ep} ({what}); set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
                "(or AWS_PROFILE) in the environment of this process."
            )
        if kind == "noregion":
            return StorageError(f"no AWS region for S3 endpoint {ep}; set AWS_DEFAULT_REGION (e.g. us-east-1).")
        if kind == "denied":
            return StorageError(
                f"S3 endpoint {ep} refused the request for {what} ({code}): the credentials are wrong or lack "
                f"permission on bucket {self.bucket!r}; check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY "
                "(or AWS_PROFILE) and the bucket policy."
            )
        if kind == "nobucket":
            return StorageError(
                f"S3 bucket {self.bucket!r} does not exist at endpoint {ep} ({what}); create it "
                f"(aws s3 mb s3://{self.bucket}) or fix the output URI."
            )
        if kind == "missing":
            return ArtifactError(f"{what}: the object does not exist at {ep}; rerun the stage that writes it.")
        return StorageError(f"S3 {what} failed at endpoint {ep} ({code}): {_short(e)}")

    # -- primitives --
    def _exists(self, key: str) -> bool:
        return self._info(key) is not None

    @staticmethod
    def _object_info(key: str, r: dict, size: Optional[int] = None) -> ObjectInfo:
        """An ObjectInfo from a HEAD / GET response or a listing entry (``Size``, ``ETag``, ...)."""
        modified = r.get("LastModified")
        return ObjectInfo(
            key=key,
            size=int(size if size is not None else r.get("ContentLength", r.get("Size", 0)) or 0),
            etag=str(r.get("ETag") or "").strip('"'),
            sha256=(r.get("Metadata") or {}).get(SHA_META),
            last_modified=modified.timestamp() if hasattr(modified, "timestamp") else 0.0,
        )

    def _info(self, key: str) -> Optional[ObjectInfo]:
        full = self._full(key)
        try:
            head = self._call(f"HEAD s3://{self.bucket}/{full}",
                              lambda: self.client.head_object(Bucket=self.bucket, Key=full), missing_ok=True)
        except _ObjectMissing:
            return None
        return self._object_info(key, head)

    def _remote_sha256(self, key: str) -> Optional[str]:
        info = self._info(key)
        return info.sha256 if info is not None else None

    def _root_exists(self) -> bool:
        try:
            self._call(f"HEAD bucket s3://{self.bucket}", lambda: self.client.head_bucket(Bucket=self.bucket),
                       missing_ok=True)
        except _ObjectMissing:
            return False
        return True

    def _fetch(self, key: str, local: Path) -> Optional[ObjectInfo]:
        full = self._full(key)

        def run() -> tuple[bytes, dict]:
            r = self.client.get_object(Bucket=self.bucket, Key=full)
            return r["Body"].read(), r  # read inside the retried call: a cut body is fetched again

        try:
            body, r = self._call(f"download of s3://{self.bucket}/{full}", run, missing_ok=True)
        except _ObjectMissing:
            return None
        atomic_write(local, lambda f: f.write(body), fsync=False)
        return self._object_info(key, r, size=len(body))

    def _put_file(self, local: Path, key: str, sha256: str) -> None:
        full = self._full(key)
        extra = {"Metadata": {SHA_META: sha256}}
        self._call(f"upload of {local.name} to s3://{self.bucket}/{full}",
                   lambda: self.client.upload_file(str(local), self.bucket, full, ExtraArgs=extra,
                                                   Config=self.transfer_config))

    def _get_file(self, key: str, local: Path) -> None:
        full = self._full(key)
        fd, tmp = tempfile.mkstemp(prefix=f".{local.name}.", suffix=".part", dir=local.parent)
        os.close(fd)
        try:
            self._call(f"download of s3://{self.bucket}/{full}",
                       lambda: self.client.download_file(self.bucket, full, tmp, Config=self.transfer_config))
            os.replace(tmp, local)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    def _put_bytes(self, key: str, data: bytes) -> None:
        full = self._full(key)
        self._call(f"upload to s3://{self.bucket}/{full}",
                   lambda: self.client.put_object(Bucket=self.bucket, Key=full, Body=data,
                                                  Metadata={SHA_META: sha256_bytes(data)}))

    def _get_bytes(self, key: str) -> bytes:
        full = self._full(key)
        return self._call(f"download of s3://{self.bucket}/{full}",
                          lambda: self.client.get_object(Bucket=self.bucket, Key=full)["Body"].read())

    def _list(self, prefix: str) -> list[str]:
        return [info.key for info in self._list_info(prefix, True)]

    def _list_info(self, prefix: str, recursive: bool) -> list[ObjectInfo]:
        full = self._full(prefix)
        search = full + "/" if full else ""
        extra = {} if recursive else {"Delimiter": "/"}

        def run() -> list[dict]:
            objs = []
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=search,
                                                                              **extra):
                objs.extend(page.get("Contents", []) or [])
            return objs

        objs = self._call(f"listing of s3://{self.bucket}/{search}", run)
        return [self._object_info(self._rel(o["Key"]), o) for o in objs]

    def _delete(self, keys: list[str]) -> None:
        for i in range(0, len(keys), 1000):
            batch = [{"Key": self._full(k)} for k in keys[i:i + 1000]]
            # the manifest (first in ``keys``) goes in its own request so it is gone before any file
            if i == 0 and len(batch) > 1:
                first, rest = batch[:1], batch[1:]
                self._call("delete", lambda: self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": first}))
                batch = rest
            self._call("delete", lambda b=batch: self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": b}))


class _ObjectMissing(Exception):
    """Raised by :meth:`S3Store._call` with ``missing_ok=True`` when the object (or bucket) is not there."""


def _short(e: Optional[BaseException]) -> str:
    if e is None:
        return "unknown error"
    text = f"{type(e).__name__}: {e}"
    return text if len(text) < 300 else text[:297] + "..."
