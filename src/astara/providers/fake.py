"""A stateful, in-memory provider for unit tests: ``Provider``'s semantics without a kernel.

Instances live in a dict; names, management addresses and NIC numbering are
made the way ``NetnsProvider`` makes them, so tests of the orchestrator see
the same shapes. Failures are injected per operation::

    fake = FakeProvider()
    fake.fail("boot", ProviderTemporaryError("agent down"))         # the next boot fails
    fake.fail("plug", ProviderTemporaryError("busy"), times=2)      # the next two plugs fail

An injected failure changes nothing. ``calls`` records every call in order,
as ``(operation, router_id)``.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from ipaddress import IPv6Network

from astara.providers.base import (
    Instance,
    Nic,
    PortSpec,
    ProviderConflictError,
    ProviderError,
    ProviderNotFoundError,
)
from astara.providers.naming import management_address, name_candidates

OPERATIONS = ("boot", "get", "plug", "unplug", "destroy", "list")


@dataclass
class _Failure:
    error: ProviderError
    times: int


@dataclass
class _State:
    instance: Instance
    ports: dict[str, tuple[PortSpec, str]] = field(
        default_factory=dict
    )  # port id -> (spec, ifname)


class FakeProvider:
    """``Provider`` in memory; see the module docstring."""

    def __init__(
        self,
        *,
        prefix: str = "astara-",
        mgmt_prefix: str = "fdca:3ba5:a17a:acda::/64",
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.prefix = prefix
        self.mgmt_prefix = IPv6Network(mgmt_prefix)
        self.clock = clock
        self.calls: builtins.list[tuple[str, str | None]] = []
        self._instances: dict[str, _State] = {}
        self._failures: dict[str, _Failure] = {}

    # -- failure injection ----------------------------------------------------------
    def fail(self, operation: str, error: ProviderError, *, times: int = 1) -> None:
        """Make the next ``times`` calls of ``operation`` raise ``error`` (and change nothing)."""
        if operation not in OPERATIONS:
            raise ValueError(f"unknown operation {operation!r}; one of {', '.join(OPERATIONS)}")
        self._failures[operation] = _Failure(error, times)

    def _enter(self, operation: str, router_id: str | None) -> None:
        self.calls.append((operation, router_id))
        failure = self._failures.get(operation)
        if failure is not None:
            failure.times -= 1
            if failure.times <= 0:
                del self._failures[operation]
            raise failure.error

    # -- helpers --------------------------------------------------------------------
    def _refresh(self, state: _State) -> Instance:
        nics = tuple(
            sorted(
                (
                    Nic(ifname, spec.mac.lower(), port_id)
                    for port_id, (spec, ifname) in state.ports.items()
                ),
                key=lambda nic: int(nic.ifname[2:]),
            )
        )
        state.instance = replace(state.instance, nics=nics)
        return state.instance

    def _plug(self, state: _State, port: PortSpec) -> None:
        known = state.ports.get(port.port_id)
        if known is not None:
            state.ports[port.port_id] = (port, known[1])
            return
        used = {int(ifname[2:]) for _, ifname in state.ports.values()}
        number = next(n for n in range(1, len(used) + 2) if n not in used)
        state.ports[port.port_id] = (port, f"ge{number}")

    # -- Provider -------------------------------------------------------------------
    async def boot(self, *, router_id: str, ports: Sequence[PortSpec]) -> Instance:
        self._enter("boot", router_id)
        state = self._instances.get(router_id)
        if state is None:
            taken = {other.instance.name for other in self._instances.values()}
            names = [n for n in name_candidates(self.prefix, router_id) if n not in taken]
            if not names:
                raise ProviderConflictError(f"every namespace name of router {router_id} is taken")
            name = names[0]
            address = management_address(self.mgmt_prefix, router_id)
            for other in self._instances.values():
                if other.instance.management_address == address:
                    raise ProviderConflictError(
                        f"management address {address} is held by router {other.instance.router_id}"
                    )
            state = _State(Instance(router_id, name, address, self.clock()))
            self._instances[router_id] = state
        for port in ports:
            self._plug(state, port)
        return self._refresh(state)

    async def get(self, *, router_id: str) -> Instance | None:
        self._enter("get", router_id)
        state = self._instances.get(router_id)
        return None if state is None else state.instance

    async def plug(self, *, router_id: str, port: PortSpec) -> Instance:
        self._enter("plug", router_id)
        state = self._instances.get(router_id)
        if state is None:
            raise ProviderNotFoundError(f"router {router_id} has no instance: boot it first")
        self._plug(state, port)
        return self._refresh(state)

    async def unplug(self, *, router_id: str, port_id: str) -> None:
        self._enter("unplug", router_id)
        state = self._instances.get(router_id)
        if state is not None and state.ports.pop(port_id, None) is not None:
            self._refresh(state)

    async def destroy(self, *, router_id: str) -> None:
        self._enter("destroy", router_id)
        self._instances.pop(router_id, None)

    async def list(self) -> builtins.list[Instance]:
        self._enter("list", None)
        return [state.instance for state in self._instances.values()]
