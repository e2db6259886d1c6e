"""Filesystem access through fsspec: local paths and URIs (s3://, gs://, ...) alike.

Credentials are never part of our config: s3fs takes them from the environment or the AWS
profile, so nothing we print or save can contain them.
"""

from __future__ import annotations

import os
import posixpath
import uuid
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem


def storage_options(uri: str, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Options for the filesystem of `uri`; only object-store URIs take any."""
    if not options or "://" not in uri or uri.startswith("file://"):
        return {}
    return {k: v for k, v in options.items() if v is not None}


def get_fs(
    uri: str, options: dict[str, Any] | None = None
) -> tuple[fsspec.AbstractFileSystem, str]:
    """(filesystem, path within it) for a local path or URI."""
    fs, path = fsspec.core.url_to_fs(uri, **storage_options(uri, options))
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


def write_atomic(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> None:
    """Make `data` visible at `path` only whole.

    Local disk: temp file in the same directory, fsync, os.replace. Object stores: one PUT
    (s3fs sends one request, or a multipart upload completed only at the end), never a
    copy-and-delete rename.
    """
    if is_local(fs):
        directory = os.path.dirname(path)
        os.makedirs(directory, exist_ok=True)
        tmp = os.path.join(directory, f".tmp-{uuid.uuid4().hex}-{os.path.basename(path)}")
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return
    fs.pipe_file(path, data)
