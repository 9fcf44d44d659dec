"""Book of business per NAIC: files received, their outcome, error reports, and web upload.

Only accepted uploads stay in ``OLV_PORTAL_UPLOAD_DIR``; the file of a rejected or duplicate
upload is removed once its outcome is recorded (its error report stays beside where it was).

An upload goes through exactly what the SFTP intake uses: an insurer liaison's file is first
checked for NAICs other than theirs (``bob_loader.intake.unbound_naics``, the account binding
of the intake), then ``bob_loader.load.load_files`` validates, loads and swaps it in. Liaisons
see only files that carry their NAIC (or that they uploaded); administrators see every file.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import tempfile
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Annotated, Any

from fastapi import APIRouter, File, Query, Request, UploadFile
from fastapi.responses import Response, StreamingResponse
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from bob_loader import report as report_file
from bob_loader.intake_binding import unbound_naics
from bob_loader.intake_claims import safe_name
from bob_loader.intake_notify import notify_web_upload
from bob_loader.load import load_files
from bob_loader.lookup import naic_stats
from bob_loader.models import BobFile, BobIssue
from bob_loader.report import recorded_header, recorded_issue
from bob_loader.settings import get_bob_settings
from olv.db import as_utc
from portal import permissions, security_log
from portal.deps import BobViewer, DbSession, Principal, client_address
from portal.errors import ApiError
from portal.web import params
from portal.web.identity import now
from portal.web.render import flash, page, twin_get

router = APIRouter(include_in_schema=False)
NAIC = re.compile(r"^[0-9]{5}$")
CHUNK = 1 << 20


def _stamp(value: datetime | None) -> str | None:
    if value is None:
        return None
    return as_utc(value).isoformat(timespec="seconds")


def web_account(me: Principal) -> str:
    """The ``account`` recorded for a web upload (SFTP uploads carry the intake account)."""
    return f"web:{me.username}"


def _visible(me: Principal) -> Any:
    naics = permissions.visible_naics(me)
    if naics is None:
        return None
    return or_(
        *(BobFile.naics.contains(n) for n in sorted(naics)), BobFile.account == web_account(me)
    )


def _context(db: Session, me: Principal, filter_naic: str | None) -> dict[str, Any]:
    query = select(BobFile).order_by(BobFile.received_at.desc(), BobFile.id.desc()).limit(500)
    condition = _visible(me)
    if condition is not None:
        query = query.where(condition)
    elif filter_naic:
        query = query.where(BobFile.naics.contains(filter_naic))
    files = [
        {
            "id": f.id,
            "name": f.name,
            "naics": f.naics,
            "account": f.account,
            "status": f.status,
            "reason": f.reason,
            "records": f.records,
            "loaded": f.loaded,
            "errors": f.errors,
            "warnings": f.warnings,
            "received_at": _stamp(f.received_at),
            "processed_at": _stamp(f.processed_at),
        }
        for f in db.scalars(query)
    ]
    masters = list(naic_stats(db.connection()))
    naics = permissions.visible_naics(me)
    if naics is not None:
        masters = [m for m in masters if m["naic"] in naics]
    elif filter_naic:
        masters = [m for m in masters if m["naic"] == filter_naic]
    return {"naic": me.naic if naics is not None else None, "masters": masters, "files": files}


def _render(
    request: Request,
    db: Session,
    me: Principal,
    filter_naic: str | None = None,
    outcome: dict[str, Any] | None = None,
    status: int = 200,
) -> Response:
    with db.begin():
        data = _context(db, me, filter_naic)
    if outcome is not None:
        data["outcome"] = outcome
    view = {"filter_naic": filter_naic}
    return page(request, "bob.html", "Book of business", data, view, status=status)


@twin_get(router, "/bob")
def bob_page(
    request: Request,
    db: DbSession,
    me: BobViewer,
    naic: Annotated[str | None, Query(max_length=5)] = None,
) -> Response:
    if naic and not NAIC.match(naic):
        raise ApiError(422, "naic: five digits")
    return _render(request, db, me, naic or None)


@router.get("/bob/files/{file_id}/report.txt")
def report(request: Request, db: DbSession, me: BobViewer, file_id: params.RowNumber) -> Response:
    """The file's error report, rebuilt from what the loader recorded (header and problems)."""
    with db.begin():
        query = select(BobFile).where(BobFile.id == file_id)
        condition = _visible(me)
        if condition is not None:
            query = query.where(condition)
        row = db.scalar(query)
        if row is None:
            raise ApiError(404, "no such file")
        header = recorded_header(row, get_bob_settings().max_error_rate)
    lines = header.lines()
    # A liaison sees the problems on their own NAIC's records only, unless they sent the file:
    # one file may carry several insurers' records, and their VINs are not the liaison's.
    only = me.naic if me.role == "insurer" and row.account != web_account(me) else None
    if only is not None:
        lines.append(f"shown: the problems on records of NAIC {only} only")
    filename = re.sub(r"[^A-Za-z0-9._ -]", "_", row.name) + report_file.SUFFIX
    return StreamingResponse(
        _report_body(request, file_id, lines, row.errors + row.warnings, only),
        media_type="text/plain; charset=us-ascii",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


def _report_body(
    request: Request, file_id: int, head: list[str], problems: int, naic: str | None
) -> Iterator[str]:
    yield "\n".join(head) + "\n\n"
    shown = 0
    query = select(BobIssue).where(BobIssue.file_id == file_id).order_by(BobIssue.id)
    if naic is not None:
        query = query.where(BobIssue.naic == naic)
    with request.app.state.sessions() as db:
        rows = db.execute(query).scalars()
        for issue in rows.yield_per(1000):
            yield recorded_issue(issue).report_line() + "\n"
            shown += 1
    if naic is None and shown < problems:
        yield f"... and {problems - shown} more problems (the report sent with the file has all)\n"


@router.post("/bob/upload")
def upload(
    request: Request, db: DbSession, me: BobViewer, file: Annotated[UploadFile, File()]
) -> Response:
    settings = request.app.state.portal_settings
    # Whatever the browser claims: the last part of either kind of path, printable, bounded,
    # never hidden nor "." or "..".
    claimed = PurePosixPath((file.filename or "").replace("\\", "/")).name
    name = safe_name(claimed).strip().lstrip(".") or "upload.txt"
    settings.upload_dir.mkdir(parents=True, exist_ok=True)
    # A folder of its own even for two uploads in the same instant: removing a rejected one
    # must never touch another's file.
    stamp = f"{now(request):%Y%m%dT%H%M%S%fZ}-"
    folder = Path(tempfile.mkdtemp(prefix=stamp, dir=settings.upload_dir))
    target = folder / name
    size = 0
    with target.open("wb") as out:
        while chunk := file.file.read(CHUNK):
            size += len(chunk)
            if size > settings.max_upload_mb * CHUNK:
                out.close()
                shutil.rmtree(folder, ignore_errors=True)
                raise ApiError(413, f"the file is larger than {settings.max_upload_mb} MB")
            out.write(chunk)
    kept = False
    try:
        outcome = _load(request, db, me, target)
        kept = outcome["status"] == "accepted"
    finally:
        if not kept:  # nothing of it was loaded: its bytes have no reason to stay on disk
            target.unlink(missing_ok=True)
            with contextlib.suppress(OSError):  # its error report, if any, stays
                folder.rmdir()
    return _render(request, db, me, outcome=outcome, status=200)


def _load(request: Request, db: Session, me: Principal, path: Path) -> dict[str, Any]:
    if me.role == "insurer":
        found = unbound_naics(path, {me.naic or ""})
        if found:
            naics = sorted({n for _, n in found})
            reason = (
                f"the file carries NAIC(s) {', '.join(naics)}; you may upload only NAIC {me.naic} "
                f"(first at line {found[0][0]}); nothing was loaded"
            )
            _log(request, db, me, path.name, f"rejected: foreign NAICs {', '.join(naics)}")
            flash(request, "error", reason)
            return {"file": path.name, "status": "rejected", "reason": reason, "file_id": None}
    engine = request.app.state.engine
    (outcome,) = load_files(engine, [path], report_dir=path.parent, account=web_account(me))
    # The insurer's contacts hear of it as they would of an SFTP delivery.
    notify_web_upload(engine, request.app.state.intake_settings, outcome, web_account(me))
    with db.begin():
        file_id = db.scalar(
            select(BobFile.id)
            .where(BobFile.account == web_account(me), BobFile.name == path.name)
            .order_by(BobFile.id.desc())
        )
    _log(request, db, me, path.name, f"{outcome.status}: {outcome.records} records")
    return {
        "file": path.name,
        "status": outcome.status,
        "reason": outcome.reason,
        "records": outcome.records,
        "errors": outcome.errors,
        "warnings": outcome.warnings,
        "naics": outcome.naics,
        "file_id": file_id if outcome.status != "duplicate" else None,
    }


def _log(request: Request, db: Session, me: Principal, name: str, detail: str) -> None:
    with db.begin():
        security_log.record(
            db,
            security_log.BOB_UPLOADED,
            username=me.username,
            detail=f"{name}: {detail}"[:500],
            source=client_address(request),
            at=now(request),
        )
