"""astara-ctl's commands as ``astara`` subcommands, over the orchestrator's admin API.

``router list`` and ``router show`` join the network API's view (``resources``)
with the orchestrator's (lifecycle state, health, appliance, last event,
convergence time, history); ``router rebuild``, ``resource debug|manage``,
``tenant debug|manage``, ``global-debug enable|disable``, ``debug list``,
``poll`` and ``workers`` are the orchestrator's alone. Everything goes over
HTTP (``httpx``), never through the orchestrator's modules.

The admin API is found at ``--admin-url``, else ``$ASTARA_ADMIN_URL``, else
``DEFAULT_ADMIN_URL``; its token is ``--admin-token``, else
``$ASTARA_ADMIN_TOKEN``, else the content of ``--admin-token-file``. A router
is given by id or, when the argument is not a UUID, by its name in the
network API. Failures are one line on stderr and exit 1; ``router list`` and
``router show`` fall back to the network API's view with a note instead.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote

import httpx

from astara.cli.netclient import (
    CommandError,
    NetworkClient,
    Resource,
    UnreachableError,
    resolve_url,
)
from astara.cli.resources import ROUTER, Columns, Group, Record, Rows, render

DEFAULT_ADMIN_URL = "http://127.0.0.1:44250"
DEFAULT_TOKEN_FILE = "/var/lib/astara/admin-token"  # noqa: S105 (a path, not a token)

#: the clock ages are measured against (tests replace it)
_now: Callable[[], float] = time.time


# -- the admin API client ----------------------------------------------------------------
class AdminError(CommandError):
    """The admin API answered with an error: its status, code and message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class AdminUnreachableError(CommandError):
    """Nothing answered at the admin URL."""


@dataclass(frozen=True)
class Token:
    """The admin token, where it came from, and why there is none when there is none."""

    value: str | None
    source: str
    problem: str = ""


def resolve_admin_url(given: str | None) -> str:
    """``--admin-url``, else ``$ASTARA_ADMIN_URL``, else the default; without a trailing ``/``."""
    return (given or os.environ.get("ASTARA_ADMIN_URL") or DEFAULT_ADMIN_URL).rstrip("/")


def resolve_token(given: str | None, path: str | None) -> Token:
    """``--admin-token``, else ``$ASTARA_ADMIN_TOKEN``, else the token file's content."""
    if given:
        return Token(given, "--admin-token")
    if os.environ.get("ASTARA_ADMIN_TOKEN"):
        return Token(os.environ["ASTARA_ADMIN_TOKEN"], "$ASTARA_ADMIN_TOKEN")
    path = path or DEFAULT_TOKEN_FILE
    try:
        text = Path(path).read_text().strip()
    except OSError as exc:
        return Token(None, path, exc.strerror or str(exc))
    return Token(text, path) if text else Token(None, path, "it is empty")


class AdminClient:
    """The orchestrator's admin API (``/v1``) over one HTTP connection; a context manager."""

    def __init__(
        self,
        url: str,
        token: Token,
        *,
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = url
        self.token = token
        headers = {"Accept": "application/json"}
        if token.value is not None:
            headers["X-Auth-Token"] = token.value
        self._http = httpx.Client(
            base_url=url, headers=headers, timeout=timeout, transport=transport
        )

    def __enter__(self) -> AdminClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def request(self, method: str, path: str, body: Resource | None = None) -> Any:
        """One call to ``/v1/<path>``: the decoded JSON answer (None when empty)."""
        try:
            response = self._http.request(method, f"/v1/{path}", json=body)
        except httpx.TransportError:
            raise AdminUnreachableError(
                f"the orchestrator's admin API at {self.url} does not answer: "
                "is `astara up` running?"
            ) from None
        if response.status_code == 401:
            raise AdminError(401, "unauthorized", self._refused())
        if response.is_error:
            code, message = _error(response)
            raise AdminError(response.status_code, code, message)
        return response.json() if response.content else None

    def _refused(self) -> str:
        where = f"the orchestrator's admin API at {self.url}"
        if self.token.value is None:
            return (
                f"{where} needs a token: give --admin-token or $ASTARA_ADMIN_TOKEN "
                f"(no token in {self.token.source}: {self.token.problem})"
            )
        return (
            f"{where} refused the token from {self.token.source} (401): "
            "it is not the orchestrator's admin token"
        )

    # -- the calls ------------------------------------------------------------------
    def routers(self) -> list[Resource]:
        found: list[Resource] = self.request("GET", "routers")["routers"]
        return found

    def router(self, router_id: str) -> Resource:
        try:
            found: Resource = self.request("GET", f"routers/{_seg(router_id)}")
        except AdminError as exc:
            raise _unknown_router(exc, router_id) from None
        return found

    def rebuild(self, router_id: str) -> Resource:
        try:
            answer: Resource = self.request("POST", f"routers/{_seg(router_id)}/rebuild")
        except AdminError as exc:
            raise _unknown_router(exc, router_id) from None
        return answer

    def debug(self, scope: str, reason: str) -> Resource:
        """Put ``scope`` (``resources/ID``, ``tenants/ID`` or ``global``) in debug mode."""
        mode: Resource = self.request("PUT", f"debug/{scope}", {"reason": reason})
        return mode

    def manage(self, scope: str) -> Resource | None:
        """Take ``scope`` out of debug mode: the mode it was in."""
        mode: Resource | None = self.request("DELETE", f"debug/{scope}")["managed"]
        return mode

    def debug_modes(self) -> list[Resource]:
        modes: list[Resource] = self.request("GET", "debug")["modes"]
        return modes

    def poll(self) -> Resource:
        answer: Resource = self.request("POST", "poll")
        return answer

    def workers(self) -> list[Resource]:
        workers: list[Resource] = self.request("GET", "workers")["workers"]
        return workers


def _seg(text: str) -> str:
    return quote(text, safe="")


def _error(response: httpx.Response) -> tuple[str, str]:
    try:
        error = response.json()["error"]
        return str(error["code"]), str(error["message"])
    except (ValueError, KeyError, TypeError):
        text = response.text.strip() or response.reason_phrase
        return "http", f"the orchestrator's admin API: HTTP {response.status_code}: {text}"


def _unknown_router(exc: AdminError, router_id: str) -> AdminError:
    if exc.status != 404:
        return exc
    return AdminError(404, exc.code, f"router {router_id} is not known to the orchestrator")


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


# -- outputs ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Message:
    """One line for people; ``data`` for ``-f json``."""

    text: str
    data: Any


@dataclass(frozen=True)
class Report:
    """Tables one after another; ``data`` for ``-f json``; ``notes`` go to stderr."""

    parts: tuple[Record | Rows, ...]
    data: Any
    notes: tuple[str, ...] = ()


Shown = Message | Report | Record | Rows


def show(output: Shown, fmt: str) -> None:
    """Print ``output`` on stdout (notes on stderr): tables, or JSON with ``fmt == "json"``."""
    if isinstance(output, Record | Rows):
        render(output, fmt)
        return
    if isinstance(output, Report):
        for note in output.notes:
            print(f"astara: {note}", file=sys.stderr)
    if fmt == "json":
        print(json.dumps(output.data, indent=2, sort_keys=True))
    elif isinstance(output, Message):
        print(output.text)
    else:
        for part in output.parts:
            render(part, "table")


def _age(seconds: float) -> str:
    """``12s``, ``4m5s``, ``3h12m``, ``2d3h``."""
    whole = max(int(seconds), 0)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60}m"
    return f"{whole // 86400}d{whole % 86400 // 3600}h"


def _ago(at: float | None) -> str:
    return "-" if at is None else f"{_age(_now() - at)} ago"


def _when(at: float | None) -> str:
    """An epoch time as UTC."""
    if at is None:
        return ""
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S")


def health_text(health: Resource | None) -> str:
    """``ok``, ``3 misses``, ``not answering`` or ``-`` (never asked)."""
    if not health or health.get("answering") is None:
        return "-"
    misses = int(health.get("misses") or 0)
    if misses:
        return f"{misses} miss" if misses == 1 else f"{misses} misses"
    return "ok" if health["answering"] else "not answering"


def _last_event(router: Resource) -> str:
    event = router.get("last_event")
    if not event:
        return "-"
    return f"{event.get('type')} {_ago(event.get('at'))}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} ms"


def _debug_text(mode: Resource | None) -> str:
    if not mode:
        return "-"
    since = _when(mode.get("since"))
    return f"{mode.get('scope')} debug since {since} UTC: {mode.get('reason')}"


def orchestrator_view(router: Resource) -> Resource:
    """The orchestrator's router as table cells (``router list``'s extra columns)."""
    appliance = router.get("appliance") or {}
    return {
        "state": router.get("state") or "-",
        "health": health_text(router.get("health")),
        "appliance": appliance.get("name") or "-",
        "last_event": _last_event(router),
        "converge": _ms(router.get("converge_ms")),
    }


JOINED_COLUMNS: Columns = (
    *ROUTER.columns,
    ("State", "_orchestrator.state"),
    ("Health", "_orchestrator.health"),
    ("Appliance", "_orchestrator.appliance"),
    ("Last event", "_orchestrator.last_event"),
    ("Converge", "_orchestrator.converge"),
)
FIELD_COLUMNS: Columns = (("Field", "field"), ("Value", "value"))
HISTORY_COLUMNS: Columns = (
    ("Time (UTC)", "time"),
    ("Kind", "kind"),
    ("Event/action", "what"),
    ("From→to", "change"),
    ("ms", "ms"),
    ("Reason", "reason"),
)
DEBUG_COLUMNS: Columns = (
    ("Scope", "scope"),
    ("ID", "id"),
    ("Reason", "reason"),
    ("Since (UTC)", "since_text"),
)
WORKER_COLUMNS: Columns = (
    ("PID", "pid"),
    ("Shard", "shard_text"),
    ("Concurrency", "concurrency"),
    ("Running", "running"),
    ("Queued", "queued"),
)


def _fields(router: Resource) -> Rows:
    """The orchestrator's view of one router, field by field."""
    appliance = router.get("appliance") or {}
    health = router.get("health") or {}
    pairs = (
        ("state", router.get("state")),
        ("status", router.get("status")),
        ("health", health_text(health)),
        ("last seen", _ago(health.get("last_seen"))),
        ("appliance", appliance.get("name") or "-"),
        ("management address", appliance.get("management_address") or "-"),
        ("last event", _last_event(router)),
        ("converge", _ms(router.get("converge_ms"))),
        ("failures", router.get("failures")),
        ("reason", router.get("reason") or ""),
        ("debug", _debug_text(router.get("debug"))),
        ("tenant", router.get("tenant_id") or "-"),
    )
    return Rows(FIELD_COLUMNS, [{"field": k, "value": v} for k, v in pairs], "orchestrator")


def _history_row(entry: Resource) -> Resource:
    what = [str(entry[k]) for k in ("event", "action") if entry.get(k)]
    before, after = entry.get("from"), entry.get("to")
    change = f"{before or ''}→{after or ''}" if before or after else ""
    ms = entry.get("ms")
    return {
        "time": _when(entry.get("at")),
        "kind": entry.get("kind") or "",
        "what": " / ".join(what),
        "change": change,
        "ms": "" if ms is None else f"{ms:.0f}",
        "reason": entry.get("reason") or "",
    }


# -- a command's connections ---------------------------------------------------------------
@dataclass
class Session:
    """The admin client, and the network API's, opened only when a name is to be found."""

    args: argparse.Namespace
    admin: AdminClient
    _network: NetworkClient | None = field(default=None, init=False)

    def network(self) -> NetworkClient:
        if self._network is None:
            self._network = NetworkClient(resolve_url(self.args.url), project=self.args.project)
        return self._network

    def router_id(self, ref: str) -> str:
        """``ref`` itself if it is a UUID, else the id of the router of that name."""
        if _is_uuid(ref):
            return ref
        found: str = self.network().find(ROUTER.collection, ref, label=ROUTER.label)["id"]
        return found

    def __enter__(self) -> Session:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.admin.close()
        if self._network is not None:
            self._network.close()


Run = Callable[[Session, argparse.Namespace], Shown]


def _invoke(args: argparse.Namespace) -> int:
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        logging.getLogger("httpx").setLevel(logging.WARNING)
    admin = AdminClient(
        resolve_admin_url(args.admin_url), resolve_token(args.admin_token, args.admin_token_file)
    )
    try:
        with Session(args, admin) as session:
            output = args.ctl(session, args)
    except CommandError as exc:
        for line in (str(exc), *getattr(exc, "__notes__", ())):
            print(f"astara: {line}", file=sys.stderr)
        return 1
    show(output, args.format)
    return 0


# -- the commands --------------------------------------------------------------------------
def router_list(session: Session, args: argparse.Namespace) -> Shown:
    listed = args.run(session.network(), args)
    assert isinstance(listed, Rows)
    try:
        known = {r["id"]: r for r in session.admin.routers()}
    except CommandError as exc:
        note = f"the orchestrator's view is unavailable: {exc}"
        return Report((listed,), [i | {"orchestrator": None} for i in listed.items], (note,))
    joined = [item | {"orchestrator": known.get(item.get("id"))} for item in listed.items]
    cells = [
        item
        | {
            "_orchestrator": orchestrator_view(item["orchestrator"])
            if item["orchestrator"]
            else dict.fromkeys(("state", "health", "appliance", "last_event", "converge"), "-")
        }
        for item in joined
    ]
    return Report((Rows(JOINED_COLUMNS, cells),), joined)


def router_show(session: Session, args: argparse.Namespace) -> Shown:
    try:
        record = args.run(session.network(), args)
    except UnreachableError:
        raise
    except CommandError:
        if not _is_uuid(args.ref):
            raise
        # a router the network API no longer has may still be the orchestrator's
        try:
            router = session.admin.router(args.ref)
        except CommandError:
            pass  # the network API's error is the one to show
        else:
            note = f"the network API does not know router {args.ref}: the orchestrator's view only"
            return Report(_orchestrator_parts(router), {"orchestrator": router}, (note,))
        raise
    assert isinstance(record, Record)
    try:
        router = session.admin.router(record.item["id"])
    except CommandError as exc:
        note = (
            str(exc)
            if isinstance(exc, AdminError) and exc.status == 404
            else f"the orchestrator's view is unavailable: {exc}"
        )
        return Report((record,), record.item | {"orchestrator": None}, (note,))
    return Report((record, *_orchestrator_parts(router)), record.item | {"orchestrator": router})


def _orchestrator_parts(router: Resource) -> tuple[Rows, Rows]:
    history = [_history_row(e) for e in router.get("history") or []]
    return _fields(router), Rows(HISTORY_COLUMNS, history, "history")


def router_rebuild(session: Session, args: argparse.Namespace) -> Shown:
    router_id = session.router_id(args.ref)
    answer = session.admin.rebuild(router_id)
    return Message(f"router {answer.get('router_id', router_id)}: rebuild queued", answer)


def _scope(kind: str, args: argparse.Namespace, session: Session) -> tuple[str, str]:
    """(the admin API's debug path, the words for it)."""
    if kind == "resources":
        router_id = session.router_id(args.ref)
        return f"resources/{_seg(router_id)}", f"resource {router_id}"
    if kind == "tenants":
        return f"tenants/{_seg(args.ref)}", f"tenant {args.ref}"
    return "global", "the orchestrator"


def debug_on(kind: str, session: Session, args: argparse.Namespace) -> Shown:
    path, what = _scope(kind, args, session)
    mode = session.admin.debug(path, args.reason)
    return Message(f"{what} is in debug mode (not managed): {mode.get('reason')}", mode)


def debug_off(kind: str, session: Session, args: argparse.Namespace) -> Shown:
    path, what = _scope(kind, args, session)
    mode = session.admin.manage(path)
    was = "" if not mode else f" (was in debug since {_when(mode.get('since'))} UTC)"
    return Message(f"{what} is managed again{was}", {"managed": mode})


def debug_list(session: Session, _args: argparse.Namespace) -> Shown:
    modes = session.admin.debug_modes()
    cells = [m | {"since_text": f"{_when(m.get('since'))} ({_ago(m.get('since'))})"} for m in modes]
    return Report((Rows(DEBUG_COLUMNS, cells),), modes)


def poll(session: Session, _args: argparse.Namespace) -> Shown:
    answer = session.admin.poll()
    queued = answer.get("queued")
    return Message(f"poll queued: {queued} router{'' if queued == 1 else 's'} to check", answer)


def workers(session: Session, _args: argparse.Namespace) -> Shown:
    found = session.admin.workers()
    cells = [
        w
        | {
            "shard_text": f"{w.get('shard')}/{w.get('shards')}",
            "running": w.get("running") or [],
        }
        for w in found
    ]
    return Report((Rows(WORKER_COLUMNS, cells),), found)


# -- wiring ---------------------------------------------------------------------------------
def _admin_options(cmd: argparse.ArgumentParser) -> None:
    admin = cmd.add_argument_group("orchestrator admin API")
    admin.add_argument(
        "--admin-url",
        metavar="URL",
        help=f"its base URL (default: $ASTARA_ADMIN_URL, else {DEFAULT_ADMIN_URL})",
    )
    admin.add_argument(
        "--admin-token",
        metavar="TOKEN",
        help="its token (default: $ASTARA_ADMIN_TOKEN, else the file)",
    )
    admin.add_argument(
        "--admin-token-file",
        metavar="FILE",
        default=DEFAULT_TOKEN_FILE,
        help=f"where the token is otherwise read (default {DEFAULT_TOKEN_FILE})",
    )


def _common() -> argparse.ArgumentParser:
    """Options of the commands that are the orchestrator's alone."""
    common = argparse.ArgumentParser(add_help=False)
    _admin_options(common)
    api = common.add_argument_group("network API (to find routers by name)")
    api.add_argument("--url", help="its base URL (default: $ASTARA_URL, else the local one)")
    api.add_argument("--project", help="act as this project (sent as X-Project-Id)")
    common.add_argument(
        "-f", "--format", choices=("table", "json"), default="table", help="output (default table)"
    )
    return common


def register(parts: Any, router: Group) -> None:
    """astara-ctl's commands; ``router`` is the network API's ``astara router`` group."""
    for verb, run in (("list", router_list), ("show", router_show)):
        cmd = router.commands[verb]
        _admin_options(cmd)
        cmd.set_defaults(handler=_invoke, ctl=run)
    cmd = router.verb("rebuild", "rebuild a router's appliance from scratch", _unused)
    cmd.add_argument("ref", metavar="ROUTER", help="id or name")
    _admin_options(cmd)
    cmd.set_defaults(handler=_invoke, ctl=router_rebuild)

    common = _common()

    def verbs(name: str, help: str) -> Any:
        return parts.add_parser(name, help=help, description=help).add_subparsers(
            dest="verb", required=True, metavar="VERB"
        )

    def command(under: Any, name: str, help: str, run: Run) -> argparse.ArgumentParser:
        cmd: argparse.ArgumentParser = under.add_parser(
            name, help=help, description=help, parents=[common]
        )
        cmd.set_defaults(handler=_invoke, ctl=run)
        return cmd

    for group, kind, label, ref_help in (
        ("resource", "resources", "a router", "the router's id or name"),
        ("tenant", "tenants", "a tenant's routers", "the tenant's (project's) id"),
    ):
        under = verbs(group, f"debug mode of {label}: the orchestrator leaves it alone")
        on = command(under, "debug", f"stop managing {label}", _bind(debug_on, kind))
        on.add_argument("ref", metavar=group.upper(), help=ref_help)
        on.add_argument("--reason", required=True, help="why: shown by `astara debug list`")
        off = command(under, "manage", f"manage {label} again", _bind(debug_off, kind))
        off.add_argument("ref", metavar=group.upper(), help=ref_help)

    under = verbs("global-debug", "debug mode of the whole orchestrator: it manages nothing")
    on = command(under, "enable", "stop managing every router", _bind(debug_on, "global"))
    on.add_argument("--reason", required=True, help="why: shown by `astara debug list`")
    command(under, "disable", "manage every router again", _bind(debug_off, "global"))

    command(verbs("debug", "the debug modes in force"), "list", "the debug modes", debug_list)
    command(parts, "poll", "check every router now", poll)
    command(parts, "workers", "the orchestrator's workers and what they hold", workers)


def _bind(run: Callable[[str, Session, argparse.Namespace], Shown], kind: str) -> Run:
    return lambda session, args: run(kind, session, args)


def _unused(_client: NetworkClient, _args: argparse.Namespace) -> None:
    """``router rebuild`` runs through ``ctl``, not the network API's handler."""
    raise CommandError("router rebuild goes through the orchestrator")  # pragma: no cover
