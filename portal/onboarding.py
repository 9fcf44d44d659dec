"""Placeholder for the onboarding scenario set (``olv insurers check``)."""

from __future__ import annotations

from dataclasses import dataclass

from olv.config import Settings


class OnboardingError(ValueError):
    pass


@dataclass(frozen=True)
class ScenarioResult:
    name: str
    passed: bool
    why: str

    def line(self) -> str:
        return f"{'pass' if self.passed else 'FAIL'}  {self.name}: {self.why}"


async def run_checks(
    settings: Settings, naic: str, *, vin: str | None, policy: str | None
) -> list[ScenarioResult]:
    raise OnboardingError("not built yet")
