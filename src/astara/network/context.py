"""Who is asking: the request context every service call carries.

Built by the API layer from the request (no-auth headers, or a validated
Keystone token); services decide visibility and permissions from it alone.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Context:
    project_id: str
    is_admin: bool = False
    user_id: str | None = None
    roles: tuple[str, ...] = ("member", "reader")
    request_id: str = field(default_factory=lambda: f"req-{uuid.uuid4()}")

    def owns(self, project_id: str) -> bool:
        """May this caller see and change a resource of ``project_id``?"""
        return self.is_admin or project_id == self.project_id
