"""Typed settings of each part, built once by the CLI and passed down. Nothing is read at import.

Every field has a documented default; the CLI maps flags onto these.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DEFAULT_STATE_DIR = Path("/run/astara/appliance")
DEFAULT_CONTROL_SOCKET = Path("/run/astara/appliance.sock")


@dataclass(frozen=True)
class AgentSettings:
    """``astara appliance serve``."""

    token_file: Path
    #: namespaces served from the start (more can be added through the control socket)
    namespaces: tuple[str, ...] = ()
    #: serve the namespace the agent runs in (the VM case): true when no namespace is named
    serve_own_namespace: bool = False
    #: TCP port of the appliance API in every namespace
    port: int = 5000
    #: per-appliance state: saved config, dnsmasq/bird files, pid files
    state_dir: Path = DEFAULT_STATE_DIR
    #: Unix socket of the control API; None disables it
    control_socket: Path | None = DEFAULT_CONTROL_SOCKET
    log_level: str = "INFO"
