"""Atomic configuration files: write beside, then rename over the old one."""

from __future__ import annotations

import os
from pathlib import Path


def write_atomic(path: Path, text: str, mode: int = 0o644) -> bool:
    """Replace ``path`` with ``text`` atomically. Return False (and touch nothing) if unchanged."""
    try:
        if path.read_text() == text:
            return False
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fchmod(handle.fileno(), mode)
    os.replace(tmp, path)
    return True


def read_text(path: Path) -> str | None:
    """The file's text, or None if it does not exist."""
    try:
        return path.read_text()
    except FileNotFoundError:
        return None
