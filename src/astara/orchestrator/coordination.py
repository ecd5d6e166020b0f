"""Several orchestrators: who is a member (tooz), and which member each router belongs to.

Membership is a tooz group (``astara-orchestrators`` by default) on a
coordination backend named by URL: ``redis://127.0.0.1:6379`` (tested),
``etcd3+http://…`` or ``zookeeper://…`` (tooz drivers, untested here). Each
orchestrator joins with a member id (``hostname-pid`` by default); tooz's
heart (a thread) keeps it alive, and a member that stops beating is dropped
from the group after the backend's membership timeout (Redis:
``membership_timeout``, 3 s unless the URL says otherwise; etcd and
ZooKeeper: put ``?timeout=3`` in the URL).

The members make a ``HashRing``: consistent hashing of resource ids over
member ids (``REPLICAS`` points per member on a SHA-1 circle), the same in
every process, so that when a member joins or leaves only about 1/N of the
routers move. The ring only says who *should* own a router: ownership is
held, and fenced, by a lease in the database (``ownership.py``).

Invariants:

- ``HashRing.owner_of`` depends only on the set of member ids and the
  resource id (no process state, no ``hash()``).
- ``ToozMembership`` never blocks the event loop: every tooz call runs in
  a worker thread.
- ``members()`` always includes this member once it has joined; a member
  that was dropped by the others (it did not beat in time) joins again.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import hashlib
import logging
import os
import socket
import warnings
from collections.abc import Collection, Iterable
from typing import Any, Protocol
from urllib.parse import urlsplit

__all__ = [
    "DEFAULT_GROUP",
    "DEFAULT_MEMBERSHIP_TIMEOUT",
    "HashRing",
    "Membership",
    "StaticMembership",
    "ToozMembership",
    "default_member_id",
]

log = logging.getLogger(__name__)

DEFAULT_GROUP = "astara-orchestrators"
DEFAULT_MEMBERSHIP_TIMEOUT = 3.0
"""Seconds after its last heartbeat before a silent member is dropped (Redis)."""
REPLICAS = 128
"""Points per member on the ring: enough that 3 members share 300 routers within ~10 %."""


def default_member_id() -> str:
    """``<hostname>-<pid>``: unique on a host, new for each process."""
    return f"{socket.gethostname()}-{os.getpid()}"


def _point(text: str) -> int:
    return int.from_bytes(hashlib.sha1(text.encode(), usedforsecurity=False).digest()[:8], "big")


class HashRing:
    """A consistent hash ring of member ids; ``owner_of(resource id)`` is a member or None."""

    def __init__(self, members: Iterable[str] = (), *, replicas: int = REPLICAS) -> None:
        self.members = frozenset(members)
        points = sorted(
            (_point(f"{member}#{n}"), member) for member in self.members for n in range(replicas)
        )
        self._hashes = [p for p, _ in points]
        self._owners = [m for _, m in points]

    def owner_of(self, resource_id: str) -> str | None:
        """The member that owns ``resource_id``; None when there is no member."""
        if not self._hashes:
            return None
        at = bisect.bisect(self._hashes, _point(resource_id)) % len(self._hashes)
        return self._owners[at]

    def __repr__(self) -> str:
        return f"<HashRing {sorted(self.members)}>"


class Membership(Protocol):
    """The group of orchestrators, as this one sees it."""

    @property
    def member_id(self) -> str: ...

    @property
    def timeout(self) -> float:
        """Seconds after which a silent member is dropped (what detection takes, at most)."""
        ...

    async def start(self) -> None: ...

    async def members(self) -> frozenset[str]:
        """The live members now (this one included); raises when the backend cannot answer."""
        ...

    async def stop(self) -> None: ...


class StaticMembership:
    """A membership set by hand (tests, and one orchestrator alone): ``members`` is mutable."""

    def __init__(self, member_id: str, others: Collection[str] = (), timeout: float = 0.0) -> None:
        self._member_id = member_id
        self.others = set(others)
        self._timeout = timeout
        self.failing = False

    @property
    def member_id(self) -> str:
        return self._member_id

    @property
    def timeout(self) -> float:
        return self._timeout

    async def start(self) -> None:
        return None

    async def members(self) -> frozenset[str]:
        if self.failing:
            raise ConnectionError("the coordination backend does not answer")
        return frozenset({self._member_id, *self.others})

    async def stop(self) -> None:
        return None


def _import_tooz() -> Any:
    """``tooz.coordination``; tooz imports futurist, which imports eventlet when it is
    installed (only to look), and eventlet warns that it is deprecated: not our concern."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from tooz import coordination

    return coordination


class ToozMembership:
    """Membership in a tooz group; see the module docstring.

    ``url`` names the backend; for Redis, ``membership_timeout`` (``timeout``
    here, unless the URL has one) is how long a silent member stays listed.
    """

    def __init__(
        self,
        url: str,
        *,
        member_id: str | None = None,
        group: str = DEFAULT_GROUP,
        timeout: float = DEFAULT_MEMBERSHIP_TIMEOUT,
    ) -> None:
        self.url = url
        self._member_id = member_id or default_member_id()
        self.group = group
        query = urlsplit(url).query
        self._options: dict[str, Any] = {}
        self._timeout = timeout
        if urlsplit(url).scheme.startswith("redis") and "membership_timeout" not in query:
            self._options["membership_timeout"] = timeout
        self._coordination = _import_tooz()
        self._coordinator: Any = None

    @property
    def member_id(self) -> str:
        return self._member_id

    @property
    def timeout(self) -> float:
        return self._timeout

    async def start(self) -> None:
        """Connect, start the heart, create the group if needed and join it."""
        coordination = self._coordination
        self._coordinator = coordination.get_coordinator(
            self.url, self._member_id.encode(), **self._options
        )
        await asyncio.to_thread(self._coordinator.start, start_heart=True)
        await asyncio.to_thread(self._join)
        log.info("joined the group %s as %s (%s)", self.group, self._member_id, self._redacted())

    def _join(self) -> None:
        coordination = self._coordination
        group = self.group.encode()
        with contextlib.suppress(coordination.GroupAlreadyExist):
            self._coordinator.create_group(group).get()
        with contextlib.suppress(coordination.MemberAlreadyExist):
            self._coordinator.join_group(group).get()

    def _members(self) -> frozenset[str]:
        coordination = self._coordination
        try:
            found = self._coordinator.get_members(self.group.encode()).get()
        except coordination.GroupNotCreated:
            found = set()
        members = frozenset(m.decode() if isinstance(m, bytes) else str(m) for m in found)
        if self._member_id not in members:  # dropped by the others (a late beat): back in
            log.warning("member %s was dropped from %s; joining again", self._member_id, self.group)
            self._join()
            members = members | {self._member_id}
        return members

    async def members(self) -> frozenset[str]:
        if self._coordinator is None:
            raise RuntimeError("ToozMembership.members before start")
        return await asyncio.to_thread(self._members)

    async def stop(self) -> None:
        """Leave the group and stop the heart (the others see it at once); idempotent."""
        coordinator, self._coordinator = self._coordinator, None
        if coordinator is None:
            return

        def leave() -> None:
            try:
                coordinator.leave_group(self.group.encode()).get()
            except Exception as exc:  # noqa: BLE001 - the others drop us on the timeout anyway
                log.info("leaving %s: %s", self.group, exc)
            coordinator.stop()

        await asyncio.to_thread(leave)

    def _redacted(self) -> str:
        parts = urlsplit(self.url)
        if parts.password is None:
            return f"{parts.scheme}://{parts.hostname}:{parts.port}"
        return f"{parts.scheme}://***@{parts.hostname}:{parts.port}"
