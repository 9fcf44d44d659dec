"""The portal's secret key: configured, or made once in the working directory and reused."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from olv.errors import ConfigError
from portal import secret_key
from portal.settings import PortalSettings


def test_without_a_key_one_is_made_once_owner_only_and_reused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OLV_PORTAL_SECRET_KEY", raising=False)
    monkeypatch.chdir(tmp_path)
    first = secret_key.load(PortalSettings())
    made = tmp_path / secret_key.DEFAULT_KEY_FILE
    assert stat.S_IMODE(made.stat().st_mode) == 0o600
    assert len(made.read_text().strip()) >= secret_key.MIN_KEY_LENGTH
    again = secret_key.load(PortalSettings())
    assert again.tag("officer") == first.tag("officer")  # the same key, not a new one
    assert again.unseal(first.seal("JBSWY3DPEHPK3PXP")) == "JBSWY3DPEHPK3PXP"


def test_a_short_key_file_stops_the_portal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OLV_PORTAL_SECRET_KEY", raising=False)
    short = tmp_path / "short.key"
    short.write_text("too short\n")
    monkeypatch.setenv("OLV_PORTAL_SECRET_KEY_FILE", str(short))
    with pytest.raises(ConfigError, match="at least 32 characters"):
        secret_key.load(PortalSettings())


def test_a_missing_configured_key_file_is_not_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OLV_PORTAL_SECRET_KEY", raising=False)
    missing = tmp_path / "absent.key"
    monkeypatch.setenv("OLV_PORTAL_SECRET_KEY_FILE", str(missing))
    with pytest.raises(ConfigError, match="absent.key"):
        secret_key.load(PortalSettings())
    assert not missing.exists()
