"""Failures a command reports as one ``error: …`` line on stderr, with its exit code.

Any ``olv`` command raises one of these (or lets a library exception through: ``olv.cli.main``
turns settings, database and file-system exceptions into these with
:func:`olv.failures.from_exception`)::

    OlvError                    exit 1 unless a subclass says otherwise
    ├── UsageError              exit 2: a bad argument or path given on the command line
    ├── ConfigError             exit 2: a setting (``OLV_…``) has a value OLV cannot use
    │   └── UnsupportedDatabaseURL
    ├── SchemaError             exit 2: the database lacks the OLV schema or is behind the code
    ├── DatabaseUnreachable     exit 1: no connection to the configured database
    ├── PortUnavailable         exit 1: a server cannot listen on its address
    │
    │   domain errors, each defined beside the rule it reports:
    ├── olv.bob.errors.BobFileError              a BoB file refused as a whole
    ├── olv.xmlsafe.UnsafeXMLError               XML not well-formed, or with a DTD or entities
    ├── service.policy_import.ImportFileError    exit 2: "…; nothing was imported"
    ├── service.bob_export.ExportError           "…; nothing was written"
    ├── service.coverage.StoreUnavailable        the policy store cannot answer (SOAP: SYSU)
    ├── bob_loader.contacts.ContactError         exit 2: a bad NAIC or e-mail address
    ├── bob_loader.intake_watch.WatcherBusy      another watcher holds the intake directory
    ├── bob_loader.sftp.FetchBusy                another fetch writes into the same directory
    ├── portal.registry.RegistryError            exit 2: the field at fault
    ├── enforcement.registrations.RegistrationFileError  exit 2: "…; nothing was imported"
    ├── portal.onboarding.OnboardingError        exit 2: the check cannot run
    ├── portal.users.UserError                   a user operation refused
    ├── portal.passwords.WeakPasswordError       the password rule broken
    ├── portal.tokens.TokenError                 unknown user or token
    └── portal.soap_wire.BadAnswer               an insurer's answer that cannot be used

A command fails by raising one of these; ``olv.cli`` (the one place) prints the line and exits
with the code. Commands never write an ``error:`` line themselves.

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
            raise UsageError(f"{path}: {(exc.strerror or str(exc)).lower()}") from None
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
