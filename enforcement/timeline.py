"""A registration's coverage over time, from the insurer events posted to it (pure).

The rules are the IIES guide's: an ``NBS`` or ``REI`` starts an insurer's coverage on its
effective date, an ``XLC`` ends it on its effective date (that day is no longer covered), a
``REP`` takes back the NBS/REI of the same insurer and effective date, a ``REC`` the XLC. A
cancellation with no earlier start from that insurer ends coverage of unknown beginning (the
guide's "cancellation posted with no prior new business"). Paper proof confirmed by the insurer
(live, or by its NBS answer to an MVF) counts as that insurer's coverage from the proof date.
``NIS`` answers are no coverage at all; they move cases, not the timeline.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date

STARTS = frozenset({"NBS", "REI", "IPA"})  # IPA: paper proof the insurer confirmed
END = "XLC"
RESCINDS = {"REP": frozenset({"NBS", "REI"}), "REC": frozenset({END})}


@dataclass(frozen=True)
class Posting:
    """One event on the registration's record: a matched transaction or a confirmed proof."""

    type: str
    naic: str
    effective: date
    ref: str  # the transaction id or proof id, unique on the record
    seq: int = 0  # order of arrival, for events of one insurer on one day


@dataclass(frozen=True)
class Span:
    """Covered from ``start`` (None: before anything on file) up to, not including, ``end``."""

    naic: str
    start: date | None
    end: date | None
    ref: str  # the posting that started it (or, with no start on file, that ended it)
    code: str  # that posting's type

    def covers(self, day: date) -> bool:
        return (self.start is None or self.start <= day) and (self.end is None or day < self.end)


@dataclass(frozen=True)
class Timeline:
    spans: tuple[Span, ...]
    cancellations: tuple[Posting, ...]  # XLCs still in force (not rescinded)

    def covered(self, day: date) -> bool:
        return any(span.covers(day) for span in self.spans)

    def first_covered(self, since: date, until: date) -> tuple[date, Span] | None:
        """The first day in ``[since, until]`` with coverage, and the span that gives it."""
        best: tuple[date, Span] | None = None
        for span in self.spans:
            if span.end is not None and span.end <= since:
                continue
            start = since if span.start is None or span.start < since else span.start
            if start <= until and (best is None or start < best[0]):
                best = (start, span)
        return best

    def has_cancellation(self, ref: str) -> bool:
        return any(posting.ref == ref for posting in self.cancellations)


def build(postings: Iterable[Posting]) -> Timeline:
    """The timeline of these postings (any order; rescissions apply whatever their position)."""
    ordered = sorted(postings, key=lambda p: (p.effective, p.seq))
    live = _without_rescinded(ordered)
    spans: list[Span] = []
    open_start: dict[str, Posting] = {}
    for posting in live:
        if posting.type in STARTS:
            open_start.setdefault(posting.naic, posting)
        elif posting.type == END:
            begun = open_start.pop(posting.naic, None)
            if begun is None:
                spans.append(Span(posting.naic, None, posting.effective, posting.ref, END))
            elif begun.effective < posting.effective:
                spans.append(
                    Span(posting.naic, begun.effective, posting.effective, begun.ref, begun.type)
                )
    spans.extend(Span(p.naic, p.effective, None, p.ref, p.type) for p in open_start.values())
    return Timeline(tuple(spans), tuple(p for p in live if p.type == END))


def _without_rescinded(ordered: list[Posting]) -> list[Posting]:
    """Each REP/REC removes one posting of its insurer and date of the types it rescinds."""
    removed: set[str] = set()
    for rescission in (p for p in ordered if p.type in RESCINDS):
        for posting in ordered:
            if (
                posting.ref not in removed
                and posting.type in RESCINDS[rescission.type]
                and posting.naic == rescission.naic
                and posting.effective == rescission.effective
            ):
                removed.add(posting.ref)
                break
    return [p for p in ordered if p.ref not in removed and p.type not in RESCINDS]
