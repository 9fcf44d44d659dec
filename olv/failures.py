"""Library exceptions (settings, database, file system) explained as the ``OlvError`` a user
can act on: ``olv.cli`` calls :func:`from_exception` at the one place where a command fails.

Kept apart from :mod:`olv.errors` (the tree itself) so that the tree imports nothing of the core
and :mod:`olv.db` can raise its members without an import circle.
"""

from __future__ import annotations

from olv import db
from olv.errors import UPGRADE_HINT, ConfigError, OlvError, SchemaError, UnsupportedDatabaseURL


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
