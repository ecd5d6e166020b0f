"""The ``astara appliance serve`` process: appliances, control socket, signals.

Runs until SIGTERM or SIGINT, then closes listeners and the control socket and
exits 0, leaving the data plane of every appliance running.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from pathlib import Path

import uvicorn

from astara.appliance.api.control import create_control_app
from astara.appliance.plan import IPAddress
from astara.appliance.server import ApplianceServer
from astara.appliance.system.nftables import reserve_low_fds
from astara.appliance.system.process import install_child_watcher
from astara.settings import AgentSettings

log = logging.getLogger(__name__)


async def _start_control(server: ApplianceServer, path: Path) -> uvicorn.Server:
    # the directory is root-only, so the socket is never reachable by others, even
    # in the moment before its own mode is set
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    config = uvicorn.Config(
        create_control_app(server), uds=str(path), lifespan="off", log_config=None, access_log=False
    )
    config.load()
    control = uvicorn.Server(config)
    control.lifespan = config.lifespan_class(config)
    await control.startup()
    path.chmod(0o600)
    return control


async def run_agent(settings: AgentSettings, token: str, listen: IPAddress | None) -> None:
    """Serve until told to stop; raise if an initial namespace cannot be served."""
    install_child_watcher()
    reserve_low_fds()  # now, while the agent has few descriptors (system/nftables.py)
    server = ApplianceServer(token=token, state_root=settings.state_dir, port=settings.port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal(sig: signal.Signals) -> None:
        log.info("received %s; stopping (the data plane keeps running)", sig.name)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    control: uvicorn.Server | None = None
    try:
        for name in settings.namespaces:
            await server.add(name, listen)
        if settings.serve_own_namespace:
            await server.add(None, listen)
        if settings.control_socket is not None:
            control = await _start_control(server, settings.control_socket)
        served = ", ".join(
            f"{a['netns'] or '(own namespace)'} [{a['address']}]:{a['port']}"
            for a in server.listing()
        )
        log.info("astara appliance agent ready; serving: %s", served or "nothing yet")
        await stop.wait()
    finally:
        if control is not None:
            await control.shutdown()
            with contextlib.suppress(FileNotFoundError):
                settings.control_socket.unlink()  # type: ignore[union-attr]
        await server.close()
