"""Network namespaces: run code, open sockets and start commands inside one.

One agent process serves many appliances, each a namespace. A socket keeps
the namespace it was created in, so listeners, netlink sockets and outbound
connections are created by a short-lived thread that has entered the target
namespace with ``setns(2)`` (which affects only the calling thread) and are
then used from the event loop like any other socket.

``Netns(None)`` is the namespace the process runs in (the VM case); every
method then works without switching.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import re
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from astara.appliance.errors import CommandError, NotFoundError

T = TypeVar("T")

NETNS_RUN_DIR = "/run/netns"
_CLONE_NEWNET = 0x40000000
_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, _CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


@dataclass(frozen=True)
class Netns:
    """A handle on a named namespace under /run/netns, or on our own (``name=None``)."""

    name: str | None = None

    def __post_init__(self) -> None:
        if self.name is not None and not _NAME.match(self.name):
            raise ValueError(f"invalid namespace name {self.name!r}")

    @property
    def label(self) -> str:
        """A name for logs and state directories."""
        return self.name or "_host"

    def exists(self) -> bool:
        return self.name is None or os.path.exists(os.path.join(NETNS_RUN_DIR, self.name))

    def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` with the calling thread inside this namespace; return its result.

        A fresh thread does the switch so that a failure to switch back can
        never leave a shared thread in the wrong namespace.
        """
        if self.name is None:
            return fn()
        path = os.path.join(NETNS_RUN_DIR, self.name)
        box: dict[str, Any] = {}

        def runner() -> None:
            try:
                target = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                box["error"] = NotFoundError(f"network namespace {self.name!r} does not exist")
                return
            try:
                _setns(target)
                box["result"] = fn()
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
                box["error"] = exc
            finally:
                os.close(target)

        thread = threading.Thread(target=runner, name=f"netns-{self.name}")
        thread.start()
        thread.join()
        if "error" in box:
            raise box["error"]
        return box["result"]  # type: ignore[no-any-return]

    def socket(self, family: int, kind: int = socket.SOCK_STREAM) -> socket.socket:
        """A new socket living in this namespace.

        An IP stream socket is made with protocol ``IPPROTO_TCP``: asyncio sets
        TCP_NODELAY only on sockets that say so (connections accepted from a
        listener inherit it), and without it an answer written in two parts
        (uvicorn's head, then its body) waits on the client's delayed ACK, ~40 ms.
        """
        proto = 0
        if kind == socket.SOCK_STREAM and family in (socket.AF_INET, socket.AF_INET6):
            proto = socket.IPPROTO_TCP
        return self.call(lambda: socket.socket(family, kind, proto))

    def command(self, argv: list[str]) -> list[str]:
        """``argv`` wrapped so that it runs inside this namespace."""
        if self.name is None:
            return list(argv)
        return ["ip", "netns", "exec", self.name, *argv]

    async def run(
        self, argv: list[str], *, stdin: bytes | None = None, timeout: float = 30.0
    ) -> str:
        """Run a command to completion inside the namespace; return stdout.

        Raises CommandError on a non-zero exit or a timeout.
        """
        full = self.command(argv)
        proc = await asyncio.create_subprocess_exec(
            *full,
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(stdin), timeout)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise CommandError(full, -1, f"timed out after {timeout}s") from None
        if proc.returncode != 0:
            raise CommandError(full, proc.returncode or -1, err.decode(errors="replace"))
        return out.decode(errors="replace")
