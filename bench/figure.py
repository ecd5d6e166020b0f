"""One benchmark figure: what was measured, against which target."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Figure:
    """A measured ``value`` against ``target``: at most it, or at least it if ``higher_is_better``."""

    name: str
    value: float
    unit: str
    target: float
    notes: str = ""
    # keyword-only: subclasses (bench.orchestrator.SampledFigure) add positional fields
    higher_is_better: bool = field(default=False, kw_only=True)

    @property
    def passed(self) -> bool:
        if self.higher_is_better:
            return self.value >= self.target
        return self.value <= self.target

    @property
    def target_text(self) -> str:
        if self.target == float("inf"):
            return "none (reported)"
        return f"{'>=' if self.higher_is_better else '<='} {self.target:g} {self.unit}".rstrip()

    def as_dict(self) -> dict[str, Any]:
        out = {
            "name": self.name,
            "value": round(self.value, 3),
            "unit": self.unit,
            "target": self.target,
            "passed": self.passed,
            "notes": self.notes,
        }
        if self.higher_is_better:  # absent means "at most", as in results written before it
            out["higher_is_better"] = True
        return out
