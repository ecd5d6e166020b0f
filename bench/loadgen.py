"""A lean HTTP/1.1 load generator: N keep-alive connections, one request in flight on each.

httpx's async client costs several milliseconds of CPU per request under
concurrency; on a 2-core machine it, not the server, set the pace (140
requests/s against a trivial endpoint that serves 1,250). Raw sockets in
threads (the GIL is released while waiting) measure the server instead.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Result:
    latencies_ms: list[float] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    bodies: list[Any] = field(default_factory=list)
    seconds: float = 0.0


def _read_response(sock: socket.socket, pending: bytes) -> tuple[int, bytes, bytes]:
    buf = pending
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        rest += chunk
    return status, rest[:length], rest[length:]


def run(
    port: int,
    *,
    method: str,
    path: str,
    body: Callable[[int], dict[str, Any]] | None,
    total: int,
    connections: int,
) -> Result:
    """Send ``total`` requests over ``connections`` keep-alive connections to 127.0.0.1:``port``."""
    result = Result()
    lock = threading.Lock()
    counter = iter(range(total))

    def worker() -> None:
        with socket.create_connection(("127.0.0.1", port)) as sock:
            pending = b""
            while True:
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                payload = b"" if body is None else json.dumps(body(i)).encode()
                request = (
                    f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                    f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
                ).encode() + payload
                start = time.perf_counter()
                sock.sendall(request)
                status, data, pending = _read_response(sock, pending)
                elapsed = (time.perf_counter() - start) * 1000
                with lock:
                    result.latencies_ms.append(elapsed)
                    result.statuses.append(status)
                    result.bodies.append(json.loads(data) if data else None)

    threads = [threading.Thread(target=worker) for _ in range(connections)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    result.seconds = time.perf_counter() - started
    return result
