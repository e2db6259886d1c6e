"""A throttling object store for the tests: an HTTP proxy in front of a real S3 endpoint
(moto's server) that fails a share of the requests it forwards, as a busy S3 does.

Every `every`-th request fails, in turn with 503 SlowDown, 500 InternalError and a dropped
connection, until `max_faults` have been injected or `duration_s` has passed (bounded in count
and time). `down()` fails every request from then on (`down(after=PATTERN, nth=k)`: from the k-th
request whose method and path contain PATTERN, so a run goes down midway); `up()` ends that.
"""

from __future__ import annotations

import http.client
import socket
import struct
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

KINDS = ("slowdown", "internal", "reset")
_ERRORS = {
    "slowdown": (503, "SlowDown", "Please reduce your request rate."),
    "internal": (500, "InternalError", "We encountered an internal error. Please try again."),
}
_HOP = {"connection", "keep-alive", "transfer-encoding", "expect", "proxy-connection", "te"}


class FaultyS3Proxy:
    def __init__(
        self, upstream: str, every: int = 3, max_faults: int = 30, duration_s: float = 120.0
    ) -> None:
        self.upstream = urlsplit(upstream)
        self.every = every
        self.max_faults = max_faults
        self.duration_s = duration_s
        self.faults: Counter[str] = Counter()
        self.requests = 0
        self.log: list[tuple[str, str | None]] = []  # (method and path, fault or None)
        self._down = False
        self._down_after: str | None = None
        self._down_nth = 1
        self._lock = threading.Lock()
        self._t0 = time.monotonic()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _any(self) -> None:
                proxy._handle(self)

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _any

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FaultyS3Proxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    @property
    def injected(self) -> int:
        return sum(self.faults.values())

    def down(self, after: str | None = None, nth: int = 1) -> None:
        """Fail every request from now, or from the `nth` whose method and path hold `after`."""
        with self._lock:
            if after is None:
                self._down = True
            else:
                self._down_after, self._down_nth = after, nth

    def up(self) -> None:
        with self._lock:
            self._down, self._down_after = False, None

    def _decide(self, request: str) -> str | None:
        with self._lock:
            self.requests += 1
            if self._down_after and self._down_after in request:
                self._down_nth -= 1
                self._down = self._down_nth <= 0
            if self._down:
                kind = KINDS[self.requests % 2]  # SlowDown and 500: a store that stays down
            elif (
                self.injected < self.max_faults
                and time.monotonic() - self._t0 < self.duration_s
                and self.requests % self.every == 0
            ):
                kind = KINDS[self.injected % len(KINDS)]
            else:
                self.log.append((request, None))
                return None
            self.faults[kind] += 1
            self.log.append((request, kind))
            return kind

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        body = _read_body(h)
        kind = self._decide(f"{h.command} {h.path}")
        if kind == "reset":
            # Drop the connection without an answer, as an overloaded front end does.
            h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            h.close_connection = True
            return
        if kind is not None:
            status, code, message = _ERRORS[kind]
            xml = (
                '<?xml version="1.0" encoding="UTF-8"?><Error><Code>'
                f"{code}</Code><Message>{message}</Message><RequestId>proxy</RequestId></Error>"
            ).encode()
            h.send_response(status)
            h.send_header("Content-Type", "application/xml")
            h.send_header("Content-Length", str(len(xml)))
            h.end_headers()
            if h.command != "HEAD":
                h.wfile.write(xml)
            return
        conn = http.client.HTTPConnection(self.upstream.hostname, self.upstream.port, timeout=60)
        try:
            headers = {k: v for k, v in h.headers.items() if k.lower() not in _HOP}
            headers["Content-Length"] = str(len(body))
            conn.request(h.command, h.path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            h.send_response(resp.status, resp.reason)
            for k, v in resp.getheaders():
                if k.lower() in _HOP or (k.lower() == "content-length" and h.command != "HEAD"):
                    continue
                h.send_header(k, v)
            if h.command != "HEAD":
                h.send_header("Content-Length", str(len(data)))
            h.end_headers()
            if h.command != "HEAD":
                h.wfile.write(data)
        finally:
            conn.close()


def _read_body(h: BaseHTTPRequestHandler) -> bytes:
    if "chunked" in h.headers.get("Transfer-Encoding", "").lower():
        parts = []
        while True:
            size = int(h.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while h.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(parts)
            parts.append(h.rfile.read(size))
            h.rfile.readline()
    return h.rfile.read(int(h.headers.get("Content-Length") or 0))
