"""nftables in-process, through libnftables (the library the ``nft`` command is built on).

A push on a big router runs nft once or twice; as a process started through
``ip netns exec`` each run costs 10-25 ms, in-process about 1 ms. The library
works on the network namespace of the calling thread, so every command runs
in a thread that has entered the appliance's namespace (``Netns.call``), with
a context of its own that is freed before the thread ends.

libnftables waits for the kernel's answers with ``select()``, which cannot take a
descriptor of 1024 or more (glibc aborts the process: "bit out of range 0 -
FD_SETSIZE on fd_set"). An agent serving 1,000 appliances holds more descriptors
than that (listeners, netlink sockets, connections), and each run opens its netlink
socket on the lowest free one. So a few low descriptors are held in reserve
(``reserve_low_fds``, called when the agent starts, while it has few) and given
back for the length of each run, one run at a time: its socket lands below 1024.
The loop's thread accepts connections meanwhile and may take them first: when no
low one is left free, that run goes to the ``nft`` command instead (a process,
10-25 ms, in the thread's namespace), never to a descriptor ``select()`` refuses.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import os
import subprocess
import threading
from collections.abc import Iterator
from functools import cache

from astara.appliance.errors import CommandError
from astara.appliance.system.netns import Netns


@cache
def _library() -> ctypes.CDLL:
    name = ctypes.util.find_library("nftables") or "libnftables.so.1"
    lib = ctypes.CDLL(name, use_errno=True)
    lib.nft_ctx_new.restype = ctypes.c_void_p
    lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
    lib.nft_ctx_free.argtypes = [ctypes.c_void_p]
    lib.nft_ctx_buffer_output.argtypes = [ctypes.c_void_p]
    lib.nft_ctx_buffer_error.argtypes = [ctypes.c_void_p]
    lib.nft_ctx_set_dry_run.argtypes = [ctypes.c_void_p, ctypes.c_bool]
    lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    lib.nft_run_cmd_from_buffer.restype = ctypes.c_int
    lib.nft_ctx_get_output_buffer.argtypes = [ctypes.c_void_p]
    lib.nft_ctx_get_output_buffer.restype = ctypes.c_char_p
    lib.nft_ctx_get_error_buffer.argtypes = [ctypes.c_void_p]
    lib.nft_ctx_get_error_buffer.restype = ctypes.c_char_p
    return lib


FD_SETSIZE = 1024
"""What ``select()`` takes: a descriptor must be below it."""
RESERVED_FDS = 16
"""Low descriptors kept for libnftables' sockets (more than runs at once: one)."""
_MARGIN = 8
"""Descriptors other threads may open between the check and the library's socket."""
_reserve_lock = threading.Lock()
_reserved: list[int] = []


def _reserve(count: int) -> None:
    """Hold ``count`` descriptors below ``FD_SETSIZE`` (fewer if none is free there)."""
    while len(_reserved) < count:
        fd = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        if fd >= FD_SETSIZE:
            os.close(fd)
            return
        _reserved.append(fd)


def reserve_low_fds(count: int = RESERVED_FDS) -> int:
    """Hold low descriptors for libnftables (see the module); how many are held."""
    with _reserve_lock:
        _reserve(count)
        return len(_reserved)


@contextlib.contextmanager
def _low_fds() -> Iterator[None]:
    """The reserved descriptors free for the block (one block at a time), then held again."""
    with _reserve_lock:
        if not _reserved:
            _reserve(RESERVED_FDS)  # first use without an early reservation
        for fd in _reserved:
            os.close(fd)
        _reserved.clear()
        try:
            yield
        finally:
            _reserve(RESERVED_FDS)


def _run_here(commands: str, dry_run: bool) -> tuple[int, str, str]:
    with _low_fds():
        # the lowest free descriptor now is where the library's socket will go (give or take
        # the few other threads may open meanwhile: the margin)
        probe = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        os.close(probe)
        if probe < FD_SETSIZE - _MARGIN:
            return _run_low(commands, dry_run)
    return _run_process(commands, dry_run)


def _run_process(commands: str, dry_run: bool) -> tuple[int, str, str]:
    """The ``nft`` command, in this thread's namespace: when the reserve was taken (other
    threads opened descriptors meanwhile) and the library's socket would be too high."""
    argv = ["nft", *(["-c"] if dry_run else []), "-f", "-"]
    try:
        done = subprocess.run(
            argv, input=commands, capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return -1, "", f"nft: {exc}"
    return done.returncode, done.stdout, done.stderr


def _run_low(commands: str, dry_run: bool) -> tuple[int, str, str]:
    lib = _library()
    ctx = lib.nft_ctx_new(0)
    if not ctx:
        return -1, "", "libnftables: cannot create a context"
    try:
        lib.nft_ctx_buffer_output(ctx)
        lib.nft_ctx_buffer_error(ctx)
        lib.nft_ctx_set_dry_run(ctx, dry_run)
        code = lib.nft_run_cmd_from_buffer(ctx, commands.encode())
        output = (lib.nft_ctx_get_output_buffer(ctx) or b"").decode(errors="replace")
        error = (lib.nft_ctx_get_error_buffer(ctx) or b"").decode(errors="replace")
        return code, output, error
    finally:
        lib.nft_ctx_free(ctx)


async def run_nft(netns: Netns, commands: str, *, dry_run: bool = False) -> str:
    """Run nft ``commands`` (the text of an ``nft -f`` file) in ``netns``; return its output.

    ``dry_run`` is ``nft -c``: check without changing anything. The commands run
    as one transaction. Raises CommandError with nft's message on failure.
    """
    code, output, error = await asyncio.to_thread(netns.call, lambda: _run_here(commands, dry_run))
    if code != 0:
        raise CommandError(["nft", "-c" if dry_run else "-f", "-"], code, error)
    return output
