"""``astara appliance serve|add|remove|list``: the agent and its control socket."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import sys
from pathlib import Path
from typing import Any

import httpx

from astara.settings import DEFAULT_CONTROL_SOCKET, DEFAULT_STATE_DIR, AgentSettings


def register(parts: Any) -> None:
    group = parts.add_parser("appliance", help="the appliance agent")
    verbs = group.add_subparsers(dest="verb", required=True, metavar="VERB")

    serve = verbs.add_parser("serve", help="serve the appliance API v1 for one or many namespaces")
    serve.add_argument(
        "--netns",
        action="append",
        default=[],
        metavar="NAME",
        help="serve this namespace (repeatable); none: serve our own namespace",
    )
    serve.add_argument(
        "--empty",
        action="store_true",
        help="start serving nothing; namespaces come through the control socket",
    )
    serve.add_argument(
        "--listen",
        metavar="ADDR",
        help="address to listen on in each namespace (default: first global address of ge0)",
    )
    serve.add_argument("--port", type=int, default=5000)
    serve.add_argument(
        "--token-file",
        type=Path,
        required=True,
        help="file holding the bearer token clients must send",
    )
    serve.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR)
    serve.add_argument(
        "--control-socket",
        type=Path,
        default=DEFAULT_CONTROL_SOCKET,
        help="Unix socket to add and drop namespaces ('none' disables it)",
    )
    serve.set_defaults(handler=_serve)

    for verb, help_text in (
        ("add", "serve one more namespace"),
        ("remove", "stop serving a namespace"),
    ):
        cmd = verbs.add_parser(verb, help=help_text)
        cmd.add_argument("netns")
        if verb == "add":
            cmd.add_argument("--listen", metavar="ADDR")
        cmd.add_argument("--control-socket", type=Path, default=DEFAULT_CONTROL_SOCKET)
        cmd.set_defaults(handler=_control)
    listing = verbs.add_parser("list", help="namespaces a running agent serves")
    listing.add_argument("--control-socket", type=Path, default=DEFAULT_CONTROL_SOCKET)
    listing.set_defaults(handler=_control)


def _read_token(path: Path) -> str:
    try:
        token = path.read_text().strip()
    except OSError as exc:
        raise SystemExit(f"astara: cannot read the token file {path}: {exc.strerror}") from None
    if not token:
        raise SystemExit(f"astara: the token file {path} is empty")
    return token


def _serve(args: argparse.Namespace) -> int:
    try:
        listen = ipaddress.ip_address(args.listen) if args.listen else None
    except ValueError:
        raise SystemExit(f"astara: --listen {args.listen!r} is not an IP address") from None
    control = None if str(args.control_socket) == "none" else args.control_socket
    settings = AgentSettings(
        token_file=args.token_file,
        namespaces=tuple(args.netns),
        serve_own_namespace=not args.netns and not args.empty,
        port=args.port,
        state_dir=args.state_dir,
        control_socket=control,
    )
    token = _read_token(settings.token_file)
    from astara.appliance.agent import run_agent  # the client verbs need none of the agent stack

    try:
        asyncio.run(run_agent(settings, token, listen))
    except Exception as exc:  # noqa: BLE001 - the CLI's last word: one line, no traceback
        print(f"astara: {exc}", file=sys.stderr)
        return 1
    return 0


def _control(args: argparse.Namespace) -> int:
    transport = httpx.HTTPTransport(uds=str(args.control_socket))
    with httpx.Client(transport=transport, base_url="http://agent", timeout=30) as client:
        try:
            if args.verb == "list":
                response = client.get("/appliances")
            elif args.verb == "add":
                body = {"listen": args.listen} if args.listen else {}
                response = client.put(f"/appliances/{args.netns}", json=body)
            else:
                response = client.delete(f"/appliances/{args.netns}")
        except httpx.TransportError as exc:
            print(f"astara: no agent at {args.control_socket}: {exc}", file=sys.stderr)
            return 1
    if response.is_error:
        print(
            f"astara: {response.json().get('error', {}).get('message', response.text)}",
            file=sys.stderr,
        )
        return 1
    if response.content:
        print(json.dumps(response.json(), indent=2))
    return 0
