"""Account operations shared by ``olv users`` and the admin pages (disable, enable, reset the
second factor), the portal's secret key (configured, or made on first start), and the
token cache's guard against a re-check that began before a change."""

from __future__ import annotations

import io
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from olv import db
from olv.cli import run
from olv.errors import ConfigError
from portal import demo, secret_key, sessions
from portal.cache import TtlCache
from portal.models import SecurityLog, User
from portal.settings import PortalSettings
from tests.helpers.signin import TOTP_SECRET, add_person


def _olv(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = run(list(args))
    out = capsys.readouterr()
    return code, out.out + out.err


def _user(url: str, username: str) -> User:
    engine = db.make_engine(url)
    try:
        with db.transaction(engine) as session:
            user = session.scalar(select(User).where(User.username == username))
            assert user is not None
            session.expunge(user)
            return user
    finally:
        engine.dispose()


def test_olv_users_disable_enable_and_reset_totp(
    db_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    engine = db.make_engine(db_url)
    add_person(engine, "dora", "dmv")
    with db.transaction(engine) as session:
        user_id = session.scalar(select(User.id).where(User.username == "dora"))
        assert user_id is not None
        sessions.create(session, user_id, sessions.STAGE_FULL, sessions.utc_now())
    assert _olv(capsys, "users", "disable", "dora") == (0, "user dora disabled\n")
    assert _user(db_url, "dora").disabled
    with db.transaction(engine) as session:  # the disable ended the session
        assert session.scalar(select(sessions.WebSession.user_id)) is None
    assert _olv(capsys, "users", "enable", "dora")[0] == 0
    assert not _user(db_url, "dora").disabled
    assert _olv(capsys, "users", "reset-totp", "dora")[0] == 0
    reset = _user(db_url, "dora")
    assert reset.totp_secret is None and not reset.totp_enrolled
    code, said = _olv(capsys, "users", "disable", "nobody")
    assert code == 1 and "no user 'nobody'" in said
    with db.transaction(engine) as session:
        logged = list(
            session.scalars(select(SecurityLog.event).where(SecurityLog.username == "dora"))
        )
    engine.dispose()
    assert {"user_disabled", "user_enabled", "totp_reset"} <= set(logged)


def test_without_a_key_the_portal_makes_its_own_and_a_short_one_stops_it(
    sqlite_template: Path, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OLV_PORTAL_SECRET_KEY")}
    env["OLV_DATABASE_URL"] = f"sqlite:///{tmp_path / 'olv.db'}"
    # Port 0 is refused after the settings and the key are checked: a quick full start-up check.
    command = [sys.executable, "-m", "olv", "portal", "serve", "--port", "0"]
    made = subprocess.run(
        command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert made.returncode == 2 and "not a TCP port" in made.stderr, made.stderr
    key_file = tmp_path / secret_key.DEFAULT_KEY_FILE
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert (
        "made a new secret key" in made.stderr and key_file.read_text().strip() not in made.stderr
    )
    short = subprocess.run(
        command,
        env={**env, "OLV_PORTAL_SECRET_KEY": "too short"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert short.returncode == 2 and "at least 32 characters" in short.stderr
    assert "too short" not in short.stderr  # the key itself is never echoed


def test_the_key_file_setting_and_what_it_protects(tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_text("a key read from a file, 32 characters or more\n")
    key = secret_key.load(PortalSettings(secret_key=None, secret_key_file=path))
    sealed = key.seal(TOTP_SECRET)
    assert sealed.startswith(secret_key.SEALED_PREFIX) and TOTP_SECRET not in sealed
    assert key.unseal(sealed) == TOTP_SECRET
    assert key.unseal(TOTP_SECRET) == TOTP_SECRET  # stored before encryption
    assert key.tag("jdoe") == key.tag("jdoe") != key.tag("jdoe2")
    other = secret_key.SecretKey("another key entirely, 32 characters or more")
    assert other.tag("jdoe") != key.tag("jdoe")
    with pytest.raises(ConfigError, match="Reset that person's second factor"):
        other.unseal(sealed)
    with pytest.raises(ConfigError, match="OLV_PORTAL_SECRET_KEY_FILE"):
        secret_key.load(PortalSettings(secret_key=None, secret_key_file=tmp_path / "absent"))


def test_the_demo_makes_a_private_key_file_once_and_reuses_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OLV_PORTAL_SECRET_KEY")
    env = demo.secret_key_env(tmp_path)
    path = Path(env["OLV_PORTAL_SECRET_KEY_FILE"])
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    first = path.read_text()
    assert demo.secret_key_env(tmp_path) == env and path.read_text() == first
    secret_key.load(PortalSettings(secret_key=None, secret_key_file=path))  # usable
    monkeypatch.setenv("OLV_PORTAL_SECRET_KEY", "x" * 40)
    assert demo.secret_key_env(tmp_path) == {}  # a configured key wins


def test_a_cache_read_begun_before_a_clear_does_not_put_the_old_value_back() -> None:
    cache = TtlCache[str, str](ttl=1.0, refresh_after=0.5)
    cache.put("token", "owner")
    before = cache.mark()  # a background re-check starts reading
    cache.clear()  # meanwhile the token is revoked in this process
    assert cache.put("token", "owner", before) is False
    assert cache.get("token") is None
    fresh = cache.mark()
    assert cache.put("token", "new owner", fresh) and cache.get("token") == "new owner"


def test_a_cached_answer_ages_from_the_start_of_its_read() -> None:
    cache = TtlCache[str, str](ttl=0.3)
    started = cache.mark()
    time.sleep(0.35)  # the read took longer than the ttl: its answer is already too old
    cache.put("token", "owner", started)
    assert cache.get("token") is None


def test_security_log_event_names_are_written_only_in_the_security_log_module() -> None:
    """Every event the portal logs is named once, in portal/security_log.py: no other module
    spells one of those names as a string."""
    import ast

    import portal
    from portal import security_log

    events = {
        value
        for name, value in vars(security_log).items()
        if name.isupper() and isinstance(value, str) and name != "UNKNOWN_NAME_PREFIX"
    } - set(User.__table__.columns.keys())  # "totp_enrolled" is also a column
    root = Path(portal.__file__).parent
    spelled = [
        (str(path.relative_to(root)), node.value)
        for path in root.rglob("*.py")
        if path.name != "security_log.py"
        for node in ast.walk(ast.parse(path.read_text("utf-8")))
        if isinstance(node, ast.Constant) and node.value in events
    ]
    assert spelled == []
