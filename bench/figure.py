"""One benchmark figure: what was measured, against which target."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class Figure:
    name: str
    value: float
    unit: str
    target: float
    notes: str = ""

    @property
    def passed(self) -> bool:
        return self.value <= self.target

    @property
    def target_text(self) -> str:
        return f"<= {self.target:g} {self.unit}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "value": round(self.value, 3),
            "unit": self.unit,
            "target": self.target,
            "passed": self.passed,
            "notes": self.notes,
        }
