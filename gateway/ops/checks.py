"""One line of `gateway doctor`: a named check, its status, what it found and the fix."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

PASS, WARN, FAIL, SKIP = "pass", "warn", "fail", "skip"


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    status: str
    detail: str
    fix: str = ""

    def line(self) -> str:
        text = f"{self.status.upper():<4}  {self.name:<12} {self.detail}"
        return text + (f"\n      {'':<12} fix: {self.fix}" if self.fix else "")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
