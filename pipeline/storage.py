"""Filesystem access through fsspec: local paths and URIs (s3://, gs://, ...) alike.

Credentials are never part of our config: s3fs takes them from the environment or the AWS
profile, so nothing we print or save can contain them.
"""

from __future__ import annotations

import contextlib
import gzip
import logging
import os
import posixpath
import time
import uuid
from collections.abc import Iterator
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

log = logging.getLogger(__name__)

_CHUNK = 8 << 20
# Errors worth another try: the network and the object store's throttling, not our bugs.
_TRANSIENT = (ConnectionError, TimeoutError)
_RETRIES = 4


def s3_options(
    endpoint_url: Any = None,
    region: Any = None,
    profile: Any = None,
    anon: bool = False,
    max_attempts: int = 10,
) -> dict[str, Any]:
    """s3fs keyword arguments from `storage.s3.*` (never credentials)."""
    # botocore's standard mode retries throttling (503 SlowDown), 5xx and dropped connections
    # with exponential backoff and jitter; s3fs adds a few tries of its own around it.
    opts: dict[str, Any] = {
        "config_kwargs": {"retries": {"mode": "standard", "total_max_attempts": int(max_attempts)}}
    }
    if endpoint_url:
        opts["endpoint_url"] = str(endpoint_url)
    if region:
        opts["client_kwargs"] = {"region_name": str(region)}
    if profile:
        opts["profile"] = str(profile)
    if anon:
        opts["anon"] = True
    return opts


def get_fs(
    uri: str, options: dict[str, Any] | None = None
) -> tuple[fsspec.AbstractFileSystem, str]:
    """(filesystem, path within it). `options` maps a protocol ("s3") to its fsspec kwargs."""
    protocol = uri.split("://", 1)[0] if "://" in uri else "file"
    kwargs = dict((options or {}).get(protocol, {}))
    fs, path = fsspec.core.url_to_fs(uri, **kwargs)
    if protocol in ("s3", "s3a"):
        _count_retries(fs)
    return fs, path


# Failed object-store requests in this process (each one retried, or the last of its request):
# stages report the growth over their call, so a run's manifest counts them.
_failed_requests = [0]


def failed_requests() -> int:
    return _failed_requests[0]


def _on_attempt(attempts: int = 0, response: Any = None, caught_exception: Any = None, **kw: Any):
    """botocore's needs-retry event, after every attempt: count and log the failed ones."""
    if caught_exception is not None:
        why = type(caught_exception).__name__
    elif response is not None and (
        response[0].status_code >= 500 or response[0].status_code == 429
    ):
        why = f"HTTP {response[0].status_code}"
    else:
        return None
    _failed_requests[0] += 1
    log.info("object store: %s attempt %d failed (%s)", kw.get("event_name", ""), attempts, why)
    return None  # botocore's own handler decides whether and when to retry


def _count_retries(fs: fsspec.AbstractFileSystem) -> None:
    client = fs.s3  # s3fs builds its client here (no request yet)
    if not getattr(client, "_dnaembed_counted", False):
        client.meta.events.register("needs-retry.s3", _on_attempt)
        client._dnaembed_counted = True


def store_name(fs: fsspec.AbstractFileSystem) -> str:
    """The object store, for an error: its endpoint."""
    endpoint = getattr(fs, "endpoint_url", None) or (getattr(fs, "client_kwargs", None) or {}).get(
        "endpoint_url"
    )
    protocol = fs.protocol[0] if isinstance(fs.protocol, tuple) else fs.protocol
    return f"{protocol} endpoint {endpoint}" if endpoint else f"{protocol} (default endpoint)"


def _is_store_error(e: BaseException) -> bool:
    if isinstance(e, gzip.BadGzipFile | FileNotFoundError):
        return False
    module = type(e).__module__.split(".")[0]
    return module in ("botocore", "aiobotocore", "aiohttp", "urllib3") or isinstance(e, OSError)


@contextlib.contextmanager
def store_errors(fs: fsspec.AbstractFileSystem, what: str) -> Iterator[None]:
    """An object store's failure (after its retries) as a StorageError naming the endpoint and
    `what` was being done; local files and our own errors pass through."""
    from pipeline.errors import DnaEmbedError, StorageError

    try:
        yield
    except DnaEmbedError:
        raise
    except Exception as e:
        if is_local(fs) or not _is_store_error(e):
            raise
        attempts = ((getattr(fs, "config_kwargs", None) or {}).get("retries") or {}).get(
            "total_max_attempts"
        )
        plural = "s" if attempts != 1 else ""
        tried = f" after {attempts} attempt{plural} (storage.s3.max_attempts)" if attempts else ""
        raise StorageError(
            f"{store_name(fs)}: {what} failed{tried}: {type(e).__name__}: {e}"
        ) from e


def require_file(
    uri: str, options: dict[str, Any] | None, what: str
) -> tuple[fsspec.AbstractFileSystem, str]:
    """(fs, path) of a file that must exist; `what` names it in the error."""
    from pipeline.errors import InputError

    fs, path = get_fs(uri, options)
    try:
        found = fs.isfile(path)
    except FileNotFoundError:
        found = False
    if not found:
        raise InputError(f"{what} not found: {uri}")
    return fs, path


def is_local(fs: fsspec.AbstractFileSystem) -> bool:
    return isinstance(fs, LocalFileSystem)


def canonical_uri(fs: fsspec.AbstractFileSystem, path: str) -> str:
    """The identity of a file: absolute path for local files, full URI otherwise."""
    if is_local(fs):
        return os.path.abspath(path)
    return fs.unstrip_protocol(path)


def join(base: str, *parts: str) -> str:
    """Join path parts under a local path or URI without touching the scheme."""
    return posixpath.join(base.rstrip("/"), *parts) if "://" in base else os.path.join(base, *parts)


def _pieces(data: bytes):
    """`data` in the chunks a write streams."""
    for lo in range(0, len(data), _CHUNK):
        yield data[lo : lo + _CHUNK]


def _write_once(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> None:
    if is_local(fs):
        directory = os.path.dirname(path)
        os.makedirs(directory, exist_ok=True)
        tmp = os.path.join(directory, f".tmp-{uuid.uuid4().hex}-{os.path.basename(path)}")
        try:
            with open(tmp, "wb") as f:
                for piece in _pieces(data):
                    f.write(piece)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return
    # fsspec's context manager commits on error too, leaving a partial object: so no `with`.
    # Small data goes in one PUT at close; large data as a multipart upload that becomes
    # visible only when completed, and is aborted on any error.
    f = fs.open(path, "wb", block_size=max(5 << 20, _CHUNK))
    try:
        for piece in _pieces(data):
            f.write(piece)
    except BaseException:
        f.discard()
        f.closed = True
        raise
    f.close()


def write_atomic(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> None:
    """Make `data` visible at `path` only whole; retry transient storage errors.

    Local disk: temp file in the same directory, fsync, os.replace. Object stores: one PUT, or
    a multipart upload completed only at the end; never a copy-and-delete rename.
    """
    for attempt in range(_RETRIES):
        try:
            with store_errors(fs, f"writing {canonical_uri(fs, path)}"):
                _write_once(fs, path, data)
            return
        except _TRANSIENT as e:
            if attempt == _RETRIES - 1:
                raise
            log.warning("retrying write of %s after %s", path, type(e).__name__)
            time.sleep(0.5 * 2**attempt)
