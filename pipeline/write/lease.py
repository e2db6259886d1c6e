"""One driver per output at a time: the lease a driver holds while it runs.

Local paths: an exclusive `flock` on <output>/_lease.json, held open for the run. The kernel
drops it the moment the driver dies, so a rerun is never blocked (on NFS v4, when the server's
lease for the dead client runs out, 90 s by default).

S3: _lease.json created only if absent (`If-None-Match: *`: of two drivers, one wins), renewed
every `ttl_s / 4` with `If-Match` on its ETag, and taken over with `If-Match` once it has not
been renewed for `ttl_s` (output.lease_s), or at once when it names a process of this host that
no longer runs. The driver checks it still holds the lease before it writes the manifest.

Either way the file names its holder (host, pid, start, config), for the other driver's error.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import socket
import threading
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from pipeline.errors import OutputError
from pipeline.storage import is_local
from pipeline.write.layout import LEASE, OutputDir

log = logging.getLogger(__name__)


def holder_record(fingerprint: str, ttl_s: float) -> dict[str, Any]:
    now = time.time()
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "token": uuid.uuid4().hex,
        "fingerprint": fingerprint,
        "started": now,
        "renewed": now,
        "ttl_s": ttl_s,
    }


def describe_holder(uri: str, holder: dict | None, now: float | None = None) -> str:
    """The refusal: who holds `uri`, since when, and until when."""
    if not holder:
        return (
            f"output {uri} is in use by another dnaembed driver (its lease names no holder yet); "
            "wait for it to finish or stop it"
        )
    now = time.time() if now is None else now
    started = datetime.fromtimestamp(holder.get("started", 0), UTC).strftime("%Y-%m-%d %H:%M:%S")
    text = (
        f"output {uri} is in use by another dnaembed driver: pid {holder.get('pid')} on "
        f"{holder.get('host')}, started {started} UTC"
    )
    if "renewed" in holder and "ttl_s" in holder:
        left = holder["renewed"] + holder["ttl_s"] - now
        text += f", its lease expires in {max(left, 0):.0f} s unless renewed"
    else:
        text += ", holding the output's lock until it ends"
    return text + "; wait for it to finish or stop it"


def _pid_gone(holder: dict) -> bool:
    """A holder on this host whose process no longer runs."""
    if holder.get("host") != socket.gethostname():
        return False
    try:
        os.kill(int(holder["pid"]), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, KeyError, ValueError, TypeError):
        return False
    return False


class Lease:
    """Held from `acquire()` to `release()`; `check()` raises if it was lost."""

    def __init__(self, out: OutputDir, fingerprint: str, ttl_s: float = 60.0) -> None:
        self.out = out
        self.fingerprint = fingerprint
        self.ttl_s = ttl_s
        self.record = holder_record(fingerprint, ttl_s)
        self._fd: int | None = None
        self._etag: str | None = None
        self._lost: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    # -- public -------------------------------------------------------------------------

    def acquire(self) -> Lease:
        if is_local(self.out.fs):
            self._acquire_local()
        elif _is_s3(self.out.fs):
            self._acquire_s3()
            self._thread = threading.Thread(target=self._renew_loop, daemon=True, name="lease")
            self._thread.start()
        else:
            log.warning(
                "no lease on %s (%s): two drivers started on this output would not be stopped",
                self.out.uri,
                self.out.fs.protocol,
            )
        return self

    def check(self) -> None:
        """Raise OutputError if another driver took the lease (the manifest must not follow)."""
        if self._etag is not None:
            with self._lock:
                self._renew()
        if self._lost:
            raise OutputError(self._lost)

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._fd is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.out.file(LEASE))
            os.close(self._fd)  # closing drops the lock
            self._fd = None
        if self._etag is not None and not self._lost:
            try:
                current, _ = self._read_s3()
                if current and current.get("token") == self.record["token"]:
                    self.out.fs.rm(self.out.file(LEASE))
            except FileNotFoundError:
                pass
            except Exception as e:  # expiry frees it anyway
                log.warning("could not remove the lease of %s: %s", self.out.uri, e)
            self._etag = None

    def __enter__(self) -> Lease:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    # -- local: flock ----------------------------------------------------------------------

    def _acquire_local(self) -> None:
        import fcntl

        path = self.out.file(LEASE)
        if os.path.exists(self.out.path) and not os.path.isdir(self.out.path):
            raise OutputError(f"output {self.out.uri} is a file, not a directory")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = None
                for _ in range(20):  # the holder writes its name right after locking
                    holder = _json(os.pread(fd, 1 << 16, 0))
                    if holder:
                        break
                    time.sleep(0.05)
                os.close(fd)
                raise OutputError(describe_holder(self.out.uri, holder)) from None
            except OSError as e:
                os.close(fd)
                if e.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                    log.warning("no lease on %s: the filesystem has no locks (%s)", path, e)
                    return
                raise
            # The previous holder unlinks the file before it lets go: locked a stale inode?
            try:
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        # No expiry here: the lock lives exactly as long as this process.
        record = {k: v for k, v in self.record.items() if k not in ("renewed", "ttl_s")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        os.fsync(fd)
        self._fd = fd

    # -- S3: conditional writes -----------------------------------------------------------

    def _acquire_s3(self) -> None:
        bucket, key = self._where()
        fs = self.out.fs
        try:
            r = fs.call_s3("put_object", Bucket=bucket, Key=key, Body=self._body(), IfNoneMatch="*")
            self._etag = r["ETag"]
            return
        except FileNotFoundError as e:
            raise OutputError(
                f"output {self.out.uri}: bucket {bucket!r} does not exist, or these credentials "
                "cannot see it"
            ) from e
        except Exception as e:
            if not _precondition_failed(e):
                raise
        holder, etag = self._read_s3()
        now = time.time()
        expired = holder is None or holder.get("renewed", 0) + holder.get("ttl_s", 0) < now
        if not (expired or _pid_gone(holder)):
            raise OutputError(describe_holder(self.out.uri, holder, now))
        try:
            r = fs.call_s3("put_object", Bucket=bucket, Key=key, Body=self._body(), IfMatch=etag)
        except Exception as e:
            if not _precondition_failed(e):
                raise
            # Another driver took it over first.
            holder, _ = self._read_s3()
            raise OutputError(describe_holder(self.out.uri, holder)) from None
        log.info("took over the lease of %s from %s", self.out.uri, holder)
        self._etag = r["ETag"]

    def _read_s3(self) -> tuple[dict | None, str | None]:
        import fsspec.asyn

        bucket, key = self._where()
        fs = self.out.fs

        async def get() -> tuple[bytes, str]:
            resp = await fs._call_s3("get_object", Bucket=bucket, Key=key)
            async with resp["Body"] as body:
                return await body.read(), resp["ETag"]

        data, etag = fsspec.asyn.sync(fs.loop, get)
        return _json(data), etag

    def _where(self) -> tuple[str, str]:
        bucket, key, _ = self.out.fs.split_path(self.out.file(LEASE))
        return bucket, key

    def _body(self) -> bytes:
        self.record["renewed"] = time.time()
        return json.dumps(self.record).encode()

    def _renew(self) -> None:
        if self._lost or self._etag is None:
            return
        bucket, key = self._where()
        try:
            r = self.out.fs.call_s3(
                "put_object", Bucket=bucket, Key=key, Body=self._body(), IfMatch=self._etag
            )
            self._etag = r["ETag"]
        except Exception as e:
            if _precondition_failed(e) or isinstance(e, FileNotFoundError):
                holder = None
                with contextlib.suppress(Exception):  # the message says what we know
                    holder, _ = self._read_s3()
                self._lost = (
                    f"lost the lease on {self.out.uri} (not renewed for {self.ttl_s:g} s?); "
                    + (describe_holder(self.out.uri, holder) if holder else "")
                ).rstrip("; ")
            else:
                # Transient: the next renewal retries; expiry is ttl_s away.
                log.warning("could not renew the lease of %s: %s", self.out.uri, e)

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.ttl_s / 4):
            with self._lock:
                self._renew()


def _is_s3(fs: Any) -> bool:
    protocol = fs.protocol
    return "s3" in (protocol if isinstance(protocol, tuple) else (protocol,))


def _json(data: bytes) -> dict | None:
    try:
        value = json.loads(data or b"null")
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _precondition_failed(e: BaseException) -> bool:
    """S3 refused a conditional write (s3fs raises FileExistsError or OSError for it)."""
    for err in (e, e.__cause__, e.__context__):
        code = getattr(err, "response", {}).get("Error", {}).get("Code")
        if code in ("PreconditionFailed", "ConditionalRequestConflict"):
            return True
    return False
