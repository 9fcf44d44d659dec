"""Demo data for the state portal in ``olv demo``: insurers, book of business, plates, people.

Everything goes through the real paths: the insurers are registered like ``olv insurers add``
and point at the demo SOAP service; the book-of-business files (the insurer side writes them,
as ``olv bob export`` does) are loaded by the BoB loader; plates are imported like
``olv registrations import``. The demo people share one password and one TOTP secret, printed
in the banner — for the demo only; real people enrol their own secret at the first sign-in.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from bob_loader.load import load_files
from enforcement import registrations
from olv import db
from olv.iicmva import V0510, V0809
from portal import passwords, registry, users
from portal.models import User
from portal.secret_key import DEFAULT_KEY_FILE, KEY_FILE_SETTING, KEY_SETTING, make_key_file

PASSWORD = "olv-demo-pass-2026"
# A fixed, public base32 secret: anyone can compute the codes. Demo only.
TOTP_SECRET = "OLVDEMOSTATEPORTALOLVDEMOSTATE22"
PEOPLE = (
    ("admin", "admin", None),
    ("officer", "officer", None),
    ("dmv", "dmv", None),
    ("liaison", "insurer", "99999"),
)
OTHER_NAIC = "88888"  # registered on the 00200510 endpoint; holds no policies (broadcast only)


@dataclass(frozen=True)
class Plate:
    plate: str
    vin: str
    shows: str


PLATES = (
    Plate("DEMO1", "1HGCM82633A004352", "confirmed"),
    Plate("DEMO2", "2T1BURHE0JC014706", "unconfirmed (policy cancelled)"),
    Plate("DEMO3", "5YJSA1E26HF000337", "unconfirmed (policy under review)"),
    Plate("DEMO4", "1FTFW1ET5DFC10312", "unconfirmed (in no book of business: broadcast)"),
)
STATE = "ID"


def seed(engine: Engine, soap_base: str, naic: str, workdir: Path, bob_files: list[Path]) -> None:
    """(Re)create the portal's demo data; safe to run again (a file loaded before is reported
    as already loaded)."""
    with db.transaction(engine) as session:
        registry.upsert(
            session,
            registry.InsurerInput(
                naic=naic,
                name="Demo Insurance Company",
                url=f"{soap_base}/iicmva/{V0809}",
                version=V0809,
                accepts_unknown=True,
            ),
            actor="demo",
        )
        registry.upsert(
            session,
            registry.InsurerInput(
                naic=OTHER_NAIC,
                name="Demo Mutual (IICMVA 00200510)",
                url=f"{soap_base}/iicmva/{V0510}",
                version=V0510,
                accepts_unknown=True,
            ),
            actor="demo",
        )
        for username, role, person_naic in PEOPLE:
            _person(session, username, role, person_naic)
    plates = workdir / "olv-demo-registrations.csv"
    plates.write_text("plate,state,vin\n" + "".join(f"{p.plate},{STATE},{p.vin}\n" for p in PLATES))
    registrations.import_file(engine, plates)
    for outcome in load_files(engine, bob_files, account="demo"):
        if outcome.status == "rejected":
            raise RuntimeError(f"demo book of business rejected: {outcome.reason}")


def secret_key_env(workdir: Path) -> dict[str, str]:
    """The portal's secret key for the demo: the configured one, else a random key kept in
    ``workdir`` (made once, readable by its owner only, reused by later runs so that the
    secrets it encrypted stay readable)."""
    if os.environ.get(KEY_SETTING) or os.environ.get(KEY_FILE_SETTING):
        return {}
    path = workdir / DEFAULT_KEY_FILE
    make_key_file(path)
    return {KEY_FILE_SETTING: str(path.resolve())}


def _person(session: Session, username: str, role: str, naic: str | None) -> None:
    user = session.scalar(select(User).where(User.username == username))
    if user is None:
        user = users.add(session, username, role, PASSWORD, naic=naic, actor="demo")
    else:  # a rerun puts the demo person back as the banner describes them
        user.password_hash = passwords.hash_password(PASSWORD, username)
        user.role, user.naic, user.disabled = role, naic, False
        user.locked_at, user.failed_logins, user.first_failed_at = None, 0, None
    user.totp_secret = TOTP_SECRET
    user.totp_enrolled = True
    session.flush()


BANNER = """
State portal: {url}
  Sign in as admin, officer, dmv or liaison (insurer NAIC {naic}); password: {password}
  Second factor (TOTP, RFC 6238), the same for every demo person: demo secret {secret}
  Add it to an authenticator app, or print the current code with:
    {python} -c "import pyotp; print(pyotp.TOTP('{secret}').now())"
  Plates to try (state {state}):
{plates}

Press Ctrl+C to stop.
"""


def banner(url: str, naic: str) -> str:
    plates = "\n".join(f"    {p.plate:<6} {p.shows}" for p in PLATES)
    return BANNER.format(
        python=sys.executable,
        url=url,
        naic=naic,
        password=PASSWORD,
        secret=TOTP_SECRET,
        state=STATE,
        plates=plates,
    )
