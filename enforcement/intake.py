"""Enforcement transactions by SFTP: a file named ``IIES <NAIC> <YYYYMMDD>….csv`` in an
insurer's inbox of the BoB intake (``olv bob watch``) is loaded here instead of as a book of
business. The acknowledgement goes to the account's ``outbox/`` as ``<claim>.ack.json``, with a
returns CSV of the dispositions not yet sent (:func:`enforcement.returns.write_outbox`).

Repeatable after a crash: the same file loaded again gets its first acknowledgement back, and
the outbox only carries dispositions not yet returned.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path

from sqlalchemy import Engine

from bob_loader.intake_claims import SavedOutcome
from enforcement import mvf_outbox
from enforcement.load import FileRejected, load, reject
from enforcement.returns import write_outbox

NAME = re.compile(r"^IIES (\d{5}) (\d{8})[^/]*\.csv$", re.IGNORECASE)
# A file is this handler's when "IIES" is a word of its own at the start of the name: a
# misnamed transaction file ("IIES_12345.csv") still gets its F10, while a book of business
# whose name merely begins with those letters ("IIESCO 20261201.txt") goes to the BoB loader.
_OURS = re.compile(r"^IIES(?![A-Za-z0-9])", re.IGNORECASE)


class IiesIntake:
    """The :class:`bob_loader.intake.FileHandler` for enforcement transaction files."""

    def accepts(self, name: str) -> bool:
        return _OURS.match(name) is not None

    def handle(
        self,
        engine: Engine,
        file: Path,
        *,
        name: str,
        account: str,
        allowed_naics: set[str] | None,
        outbox: Path,
        claim_name: str,
    ) -> SavedOutcome:
        found = NAME.match(name)
        if found is None:
            ack = reject(
                engine,
                file,
                name,
                "sftp",
                None,
                FileRejected("F10", "the file name must be 'IIES <NAIC> <YYYYMMDD>....csv'"),
            )
        elif allowed_naics is not None and found.group(1) not in allowed_naics:
            ack = reject(
                engine,
                file,
                name,
                "sftp",
                None,
                FileRejected("F09", f"NAIC {found.group(1)} is not bound to this account"),
            )
        else:
            ack = load(engine, file, name=name, channel="sftp", sender_naic=found.group(1))
        _write_json(outbox / f"{claim_name}.ack.json", ack.as_dict())
        if ack.naic is not None and ack.accepted:
            write_outbox(engine, ack.naic, outbox)
            mvf_outbox.write_outbox(engine, ack.naic, outbox)
        return SavedOutcome(
            status=ack.status,
            naics=[ack.naic] if ack.naic else [],
            records=ack.rows,
            errors=ack.counts["E"],
            warnings=ack.counts["U"],
            reason=ack.error,
        )


def _write_json(path: Path, body: Mapping[str, object]) -> None:
    partial = path.with_name(f".{path.name}.part")
    partial.write_text(json.dumps(body, indent=1) + "\n", encoding="utf-8")
    os.replace(partial, path)
