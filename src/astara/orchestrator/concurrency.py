"""``settled``: await several reads at once, and fail like the first of them that failed."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar, overload

__all__ = ["settled"]

A = TypeVar("A")
B = TypeVar("B")
C = TypeVar("C")
D = TypeVar("D")


@overload
async def settled(a: Awaitable[A], b: Awaitable[B], /) -> tuple[A, B]: ...


@overload
async def settled(
    a: Awaitable[A], b: Awaitable[B], c: Awaitable[C], d: Awaitable[D], /
) -> tuple[A, B, C, D]: ...


async def settled(*reads: Awaitable[Any]) -> tuple[Any, ...]:
    """The results of ``reads``, run concurrently; the first exception (in argument order)
    is raised once every read has ended, so none is left running or unobserved behind."""
    results = await asyncio.gather(*reads, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return tuple(results)
