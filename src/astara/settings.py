"""Typed settings of each part, built once by the CLI and passed down. Nothing is read at import.

Every field has a documented default; the CLI maps flags onto these.
"""

from __future__ import annotations

from dataclasses import dataclass, field
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


DEFAULT_NETWORK_DB = "sqlite:////var/lib/astara/network.db"


@dataclass(frozen=True)
class NetworkSettings:
    """``astara network-api``."""

    host: str = "127.0.0.1"
    port: int = 9696
    #: SQLAlchemy URL: SQLite by default, ``postgresql+psycopg://…`` for a shared database
    db_url: str = DEFAULT_NETWORK_DB
    #: no-auth mode: the project of a request without ``X-Project-Id``
    default_project: str = "admin"
    #: no-auth mode: requests are admin unless ``X-Roles`` says otherwise
    admin_by_default: bool = True
    #: the MTU of the physical fabric; VXLAN networks get 50 bytes less
    physical_mtu: int = 1500
    #: VLAN ids and VXLAN VNIs tenant networks are given, as (first, last) ranges
    vlan_ranges: tuple[tuple[int, int], ...] = ((100, 4094),)
    vxlan_ranges: tuple[tuple[int, int], ...] = ((1, 65535),)
    #: the segmentation of a network whose request names none
    tenant_network_type: str = "vxlan"
    #: the physical network of flat and VLAN networks whose request names none
    default_physical_network: str = "physnet1"
    #: shown as ``publisher_id`` (``network.<host>``) in notifications
    host_name: str = "astara"
    #: where notifications go: ``embedded://`` (in-process) or ``rabbit://…`` (RabbitMQ)
    bus_url: str = "embedded://"
    #: who the caller is: ``noauth`` (headers, the embedded default) or ``keystone`` (tokens)
    auth_strategy: str = "noauth"
    #: keystone: the Identity endpoint, ``http://keystone:5000`` (``/v3`` may be given or not)
    keystone_url: str = ""
    #: keystone: the service user that validates callers' tokens, and its project
    keystone_username: str = "neutron"
    keystone_password: str = field(default="", repr=False)
    keystone_user_domain: str = "Default"
    keystone_project: str = "service"
    keystone_project_domain: str = "Default"
    #: keystone: seconds a validated token is trusted before asking again (never past its expiry)
    keystone_token_cache_ttl: float = 300.0
    #: keystone: validated tokens kept at most (least recently used leave first)
    keystone_token_cache_size: int = 10_000
    #: keystone: seconds to wait for Keystone before answering 503
    keystone_timeout: float = 10.0
