"""The README documents every setting and every command (the docs are held by a test)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import typer
from pydantic_settings import BaseSettings

# Every settings class must be imported to be found.
import bob_loader.intake_settings  # noqa: F401
import bob_loader.settings  # noqa: F401
import enforcement.case_settings  # noqa: F401
import portal.settings  # noqa: F401
from olv.cli import app

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")


def _settings_classes() -> list[type[BaseSettings]]:
    """Every settings class of OLV, however many parts grow their own."""
    found: list[type[BaseSettings]] = []
    pending = list(BaseSettings.__subclasses__())
    while pending:
        cls = pending.pop()
        pending += cls.__subclasses__()
        if cls.__module__.split(".")[0] in (
            "olv",
            "service",
            "bob_loader",
            "portal",
            "enforcement",
        ):
            found.append(cls)
    return found


def test_every_part_of_olv_has_its_settings_scanned() -> None:
    names = {cls.__name__ for cls in _settings_classes()}
    assert {"Settings", "BobSettings", "IntakeSettings", "PortalSettings"} <= names


def settings_names() -> list[str]:
    names = []
    for model in _settings_classes():
        prefix = model.model_config.get("env_prefix", "")
        names += [f"{prefix}{field}".upper() for field in model.model_fields]
    return names


def command_paths() -> list[str]:
    paths: list[str] = []

    def walk(command: Any, path: str) -> None:
        # Typer carries its own copy of click: recognise groups by their sub-commands.
        subcommands = getattr(command, "commands", None)
        if subcommands:
            for name, sub in subcommands.items():
                walk(sub, f"{path} {name}")
        else:
            paths.append(path)

    walk(typer.main.get_command(app), "olv")
    return paths


def test_the_scan_finds_what_it_should() -> None:
    assert "OLV_DATABASE_URL" in settings_names()
    assert "OLV_PORTAL_BUDGET_SECONDS" in settings_names()
    assert {"olv insurers check", "olv tokens create", "olv db upgrade"} <= set(command_paths())


@pytest.mark.parametrize("name", settings_names())
def test_every_setting_is_in_the_readme(name: str) -> None:
    assert re.search(rf"\b{name}\b", README), f"{name} is not documented in README.md"


@pytest.mark.parametrize("command", command_paths())
def test_every_command_is_in_the_readme(command: str) -> None:
    assert command in README, f"`{command}` is not documented in README.md"
