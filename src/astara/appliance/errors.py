"""Errors of the appliance agent, and what the caller does next.

ApplianceError
 ├── ConfigError     the pushed config is wrong; fix it (HTTP 422). Nothing was touched.
 ├── ApplyError      a step failed while applying; the previous config was restored (500).
 ├── CommandError    an external command failed (nft, dnsmasq, bird, ip); wrapped by callers.
 └── NotFoundError       an unknown interface or appliance (404).
"""

from __future__ import annotations


class ApplianceError(Exception):
    """Base of every error the agent raises on purpose."""


class ConfigError(ApplianceError):
    """The configuration is invalid. ``field`` is a dotted path into the body."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class ApplyError(ApplianceError):
    """Applying failed at ``step``; the previous configuration was put back."""

    def __init__(self, step: str, reason: str) -> None:
        super().__init__(f"{step}: {reason}")
        self.step = step
        self.reason = reason


class CommandError(ApplianceError):
    """An external command exited non-zero; ``output`` is what it printed on stderr."""

    def __init__(self, argv: list[str], returncode: int, output: str) -> None:
        super().__init__(f"{' '.join(argv)} exited {returncode}: {output.strip()}")
        self.argv = argv
        self.returncode = returncode
        self.output = output


class NotFoundError(ApplianceError):
    """The named object does not exist."""
