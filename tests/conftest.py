"""Suite-wide fixtures: the leak check every test run is subject to, and the lab.

Every lab of a run is named ``test-<run>-<n>`` and its host links ``t<run><n>…``,
so the leak check looks only at what this run made, even when several runs
share the machine.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import resource
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from astara.lab import Lab

RUN = secrets.token_hex(2)
_labs = itertools.count()
_inodes: set[int] = set()


def run_prefix() -> str:
    """The prefix of every object this test run creates (namespaces, state dirs)."""
    return f"test-{RUN}"


def _namespaces() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
    names = {line.split()[0] for line in out.stdout.splitlines() if line.strip()}
    return {n for n in names if n.startswith(run_prefix())}


def _links() -> set[str]:
    return {n for n in os.listdir("/sys/class/net") if n.startswith(f"t{RUN}")}


def _processes() -> set[tuple[int, str]]:
    """Live processes inside a namespace of this run, or naming this run on their command line."""
    found: set[tuple[int, str]] = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            comm = Path(f"/proc/{entry}/comm").read_text().strip()
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
            inode = os.stat(f"/proc/{entry}/ns/net").st_ino
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if state != "Z" and (inode in _inodes or run_prefix() in cmdline):
            found.add((int(entry), comm))
    return found


def _netns_etc() -> set[str]:
    try:
        return {n for n in os.listdir("/etc/netns") if n.startswith(run_prefix())}
    except FileNotFoundError:
        return set()


def _files() -> set[str]:
    """Scratch directories of this run, and state the agent would keep by default."""
    found = {str(p) for p in Path(tempfile.gettempdir()).glob(f"{run_prefix()}-*")}
    found |= {str(p) for p in Path("/run/astara/appliance").glob(f"{run_prefix()}-*")}
    return found


@pytest.fixture(scope="session", autouse=True)
def no_leaks() -> Iterator[None]:
    """Fail the run if it leaves a namespace, link, process, file or /etc/netns entry behind."""
    yield
    leaked = {
        "namespaces": sorted(_namespaces()),
        "links": sorted(_links()),
        "processes": sorted(_processes()),
        "/etc/netns": sorted(_netns_etc()),
        "files": sorted(_files()),
    }
    leaked = {kind: items for kind, items in leaked.items() if items}
    assert not leaked, f"the test run leaked: {leaked}"


def new_lab() -> Lab:
    """A lab named for this run; register its namespaces with the leak check."""
    if os.geteuid() != 0:
        pytest.fail("dataplane tests need root (network namespaces); run the suite as root")
    n = next(_labs)
    return Lab(f"{run_prefix()}-{n}", link_tag=f"t{RUN}{n}x")


@pytest.fixture
def workdir() -> Iterator[Path]:
    """A scratch directory others may enter (dnsmasq reads its files after dropping root)."""
    path = Path(tempfile.mkdtemp(prefix=f"{run_prefix()}-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def lab() -> Iterator[Lab]:
    """A lab removed after the test."""
    made = new_lab()
    try:
        yield made
    finally:
        _inodes.update(made.netns_inodes)
        made.close()


PG_ADMIN = os.environ.get("ASTARA_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")

TEST_DB = os.environ.get("ASTARA_TEST_DB", "sqlite")
"""The database kind of the tests marked ``database`` (``sqlite``, the default, or
``postgresql``): ``scripts/test`` runs them once on each. Tests parametrized over both
kinds ignore it."""
if TEST_DB not in ("sqlite", "postgresql"):
    raise pytest.UsageError(f"ASTARA_TEST_DB must be sqlite or postgresql, not {TEST_DB!r}")


@contextlib.contextmanager
def scratch_database(kind: str, tmp_path: Path, stem: str) -> Iterator[str]:
    """The URL of an empty database of ``kind`` (``sqlite`` or ``postgresql``), dropped after.

    A PostgreSQL database is created on the server ``ASTARA_TEST_PG`` names; a
    test that needs it fails (never skips) when the server is not there.
    """
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path / f'{stem}.db'}"
        return
    import sqlalchemy

    name = f"astara_{stem}_{secrets.token_hex(4)}"
    admin = sqlalchemy.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sqlalchemy.text(f"CREATE DATABASE {name}"))
    except sqlalchemy.exc.OperationalError as exc:
        admin.dispose()
        pytest.fail(f"PostgreSQL is needed at {PG_ADMIN} (set ASTARA_TEST_PG): {exc}")
    try:
        yield PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(sqlalchemy.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()


#: descriptors ``many_fds`` lets a test hold (more than FD_SETSIZE, 1024)
MANY_FDS = 4096


@pytest.fixture
def many_fds() -> Iterator[list[int]]:
    """A list for the descriptors a test opens (closed after it), with RLIMIT_NOFILE raised
    to ``MANY_FDS`` for it (the hard limit too: the suite runs as root) and put back."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted_hard = hard if hard == resource.RLIM_INFINITY else max(hard, MANY_FDS)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, MANY_FDS), wanted_hard))
    except (ValueError, OSError) as exc:
        pytest.fail(f"cannot raise RLIMIT_NOFILE to {MANY_FDS} (hard {hard}): {exc}")
    opened: list[int] = []
    try:
        yield opened
    finally:
        for fd in opened:
            with contextlib.suppress(OSError):
                os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@contextlib.contextmanager
def chosen_database(directory: Path, stem: str) -> Iterator[str]:
    """The URL of an empty database of the kind ``ASTARA_TEST_DB`` names, dropped after.

    For the tests marked ``database``: where they would use SQLite in
    ``directory``, this gives PostgreSQL when the suite runs on it.
    """
    with scratch_database(TEST_DB, directory, stem) as url:
        yield url


@pytest.fixture
def network_db(tmp_path: Path) -> Iterator[str]:
    """The network API's database of a test marked ``database`` (``chosen_database``)."""
    with chosen_database(tmp_path, "network") as url:
        yield url


@pytest.fixture
def orchestrator_db(tmp_path: Path) -> Iterator[str]:
    """The orchestrator's database of a test marked ``database`` (``chosen_database``)."""
    with chosen_database(tmp_path, "orchestrator") as url:
        yield url
