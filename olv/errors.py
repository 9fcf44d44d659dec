"""Failures a command reports as one ``error: …`` line on stderr, with its exit code.

Any ``olv`` command raises one of these (or lets a library exception through: ``olv.cli.main``
turns settings, database and file-system exceptions into these with :func:`from_exception`)::

    OlvError                    exit 1 unless a subclass says otherwise
    ├── UsageError              exit 2: a bad argument or path given on the command line
    ├── ConfigError             exit 2: a setting (``OLV_…``) has a value OLV cannot use
    │   └── UnsupportedDatabaseURL
    ├── SchemaError             exit 2: the database lacks the OLV schema or is behind the code
    ├── DatabaseUnreachable     exit 1: no connection to the configured database
    └── PortUnavailable         exit 1: a server cannot listen on its address

The message is the whole line after ``error: ``: it names what is wrong and what to do, and
never carries secrets (passwords, API keys) or insured data.
"""

from __future__ import annotations

import stat
from pathlib import Path

__all__ = [
    "ConfigError",
    "DatabaseUnreachable",
    "OlvError",
    "PortUnavailable",
    "SchemaError",
    "UnsupportedDatabaseURL",
    "UsageError",
    "from_exception",
    "require_files",
    "require_output_file",
]

DATABASE_SETTING = "OLV_DATABASE_URL"
UPGRADE_HINT = "run 'olv db upgrade' first"


class OlvError(Exception):
    """A failure the user can act on; ``str(exc)`` is the one-line message."""

    exit_code = 1


class UsageError(OlvError):
    """A command-line argument or path that cannot be used."""

    exit_code = 2


class ConfigError(OlvError):
    """A setting whose value OLV cannot use; the message names the variable."""

    exit_code = 2


class UnsupportedDatabaseURL(ConfigError):
    """``OLV_DATABASE_URL`` names a database OLV does not support."""


class SchemaError(OlvError):
    """The database has no OLV schema, or an older or newer one than this code's migrations."""

    exit_code = 2


class DatabaseUnreachable(OlvError):
    """The database could not be opened or connected to."""


class PortUnavailable(OlvError):
    """A server cannot listen where it was asked to (taken, not local, not permitted)."""


# --- paths ------------------------------------------------------------------------------------

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def require_files(paths: list[Path]) -> None:
    """Refuse, before anything is read, a path that is missing or is not a regular file.

    Checked up front so that a directory or a FIFO is named as such (opening a FIFO would
    block) and a command with several files does not half-run.
    """
    for path in paths:
        try:
            mode = path.stat().st_mode
        except FileNotFoundError:
            raise UsageError(f"{path}: no such file") from None
        except OSError as exc:
            raise UsageError(f"{path}: {exc.strerror.lower()}") from None
        if not stat.S_ISREG(mode):
            raise UsageError(f"{path}: is {_kind(mode)}, not a regular file")


def require_output_file(path: Path) -> None:
    """Refuse an output path that exists but is not a regular file, or whose folder is missing."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        if not path.parent.is_dir():
            raise UsageError(f"{path}: directory {path.parent} does not exist") from None
        return
    if not stat.S_ISREG(mode):
        raise UsageError(f"{path}: is {_kind(mode)}; give the name of a file to write")


# --- library exceptions -> OlvError ---------------------------------------------------------


def from_exception(exc: BaseException, database_url: str | None) -> OlvError | None:
    """The OlvError that explains ``exc`` to a user, or None when it is not a known failure.

    ``database_url`` is the configured database (None when the settings themselves failed).
    """
    from pydantic import ValidationError

    if isinstance(exc, OlvError):
        return exc
    if isinstance(exc, ValidationError):
        return _from_validation(exc)
    if database_url is not None:
        found = _from_database(exc, database_url)
        if found is not None:
            return found
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        return OlvError(f"{exc.filename}: {exc.strerror.lower()}")
    return None


def _from_validation(exc: object) -> ConfigError:
    from pydantic import ValidationError

    assert isinstance(exc, ValidationError)
    settings = _settings_classes(exc.title)
    parts = []
    for error in exc.errors(include_url=False):
        field = str(error["loc"][0]) if error["loc"] else ""
        message = str(error["msg"]).removeprefix("Value error, ").removeprefix("Input ")
        variable = _variable(settings, field)
        if variable:
            # The value is not echoed: it may hold a password (a URL, an API key).
            parts.append(f"{variable}: {message}")
        elif variable == "":  # a rule across several settings; its message names them
            parts.append(message)
        else:  # not a setting: a value given some other way
            parts.append(f"{field or exc.title}: {message}")
    return ConfigError("\n".join(parts))  # one line per setting


def _settings_classes(name: str) -> list[type]:
    """The pydantic-settings classes called ``name`` (several packages may use one name)."""
    from pydantic_settings import BaseSettings

    found, classes = [], list(BaseSettings.__subclasses__())
    while classes:
        cls = classes.pop()
        classes.extend(cls.__subclasses__())
        if cls.__name__ == name:
            found.append(cls)
    return found


def _variable(settings: list[type], field: str) -> str | None:
    """The environment variable of ``field`` ("" for a model-wide rule); None if not a setting."""
    for cls in settings:
        if not field:
            return ""
        for name, info in cls.model_fields.items():  # type: ignore[attr-defined]
            alias = info.validation_alias if isinstance(info.validation_alias, str) else None
            if field in (name, alias):
                prefix = cls.model_config.get("env_prefix", "")  # type: ignore[attr-defined]
                return (alias or f"{prefix}{name}").upper()
    return None


def _from_database(exc: BaseException, url: str) -> OlvError | None:
    from sqlalchemy import exc as sa

    from olv import db

    if isinstance(exc, ModuleNotFoundError | sa.ArgumentError):
        # e.g. mysql:// reaching SQLAlchemy without the URL check: explain the URL instead.
        try:
            db.check_url(url)
        except UnsupportedDatabaseURL as unsupported:
            return unsupported
        return None
    if not isinstance(exc, sa.DBAPIError):
        return None
    text = str(exc.orig) if exc.orig is not None else str(exc)
    sqlstate = getattr(exc.orig, "sqlstate", None)
    if sqlstate in ("42P01", "42703") or "no such table" in text or "no such column" in text:
        return SchemaError(f"{db.describe(url)} lacks tables or columns OLV uses; {UPGRADE_HINT}")
    if isinstance(exc, sa.OperationalError) and db.is_connection_failure(exc):
        return db.unreachable(url, exc)
    # Not the driver's message: it may quote row values (a VIN, a policy number).
    kind = type(exc.orig).__name__ if exc.orig is not None else type(exc).__name__
    code = f", SQLSTATE {sqlstate}" if sqlstate else ""
    return OlvError(
        f"{db.describe(url)} refused the operation ({kind}{code}); "
        "run again with OLV_DEBUG=1 to see the details"
    )
