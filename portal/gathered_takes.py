"""A loop turn's rate-limit takes, each with its VIN's records, in one statement.

Every verification by VIN takes from its token's bucket and reads the VIN's current book of
business in one round trip (:meth:`portal.ratelimit.SharedLimits.take`). At a few hundred
verifications a second, several of them reach that point in the same turn of the event loop,
and each paid for its own pool checkout, statement and result (bench/RESULTS.md). Here the
takes of one turn go together once the turn's other callbacks have run, as one statement per
bucket rule (:func:`portal.ratelimit.gathered_sql`).

What each request sees is unchanged: its own take (a key asked twice in one turn goes in two
statements, which the database orders on the key's row), its own records, and a 503 at its
own deadline, while the statement runs on for the others, bounded by the longest deadline
among them. On SQLite the turn's takes run one after the other in one transaction: on the
event loop when no lock stands in the way (:mod:`olv.sqlite_inline`), else on one hop to the
reader's thread for takes.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from portal.state_reads import Rows, StateReader

Rule = tuple[float, float, float]  # the bucket's rate and capacity, and the cost taken
Taken = tuple[Rows, list[dict[str, Any]]]  # (tokens, version) or nothing; the records


@dataclass
class _Turn:
    asked: list[tuple[Rule, str, str]] = field(default_factory=list)  # rule, key, VIN
    longest: float = 0.0


class GatheredTakes:
    def __init__(self, reads: StateReader, sql: str) -> None:
        self.reads = reads
        # PostgreSQL: portal.ratelimit.gathered_sql for the reader's records; SQLite: the
        # one-key take, run once per take.
        self.sql = sql
        self._turn: _Turn | None = None
        self._task: asyncio.Task[list[Taken | BaseException]] | None = None
        self._running: set[asyncio.Task[Any]] = set()

    async def take(self, rule: Rule, key: str, vin: str, seconds: float) -> Taken:
        """Take from ``key``'s bucket and read ``vin``'s records, within ``seconds``; raises
        :class:`portal.errors.ApiError` 503 as :meth:`StateReader.execute` does."""
        turn, task = self._turn, self._task
        if turn is None or task is None:
            turn = self._turn = _Turn()
            task = self._task = asyncio.get_running_loop().create_task(self._run(turn))
            self._running.add(task)
            task.add_done_callback(self._finished)
        index = len(turn.asked)
        turn.asked.append((rule, key, vin))
        turn.longest = max(turn.longest, seconds)
        outcome = (await self.reads.shared(task, seconds))[index]
        if isinstance(outcome, BaseException):
            answer = self.reads.failed(outcome)
            if answer is outcome:
                raise outcome
            raise answer from outcome
        return outcome

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._running.discard(task)
        if not task.cancelled():
            # Seen: every request was told already (its 503), or had left at its deadline;
            # unseen, asyncio would log the turn's timeout as an error of its own.
            task.exception()

    async def _run(self, turn: _Turn) -> list[Taken | BaseException]:
        """Runs once the turn's takes are in (a task starts at the next turn of the loop)."""
        self._turn = self._task = None  # a take from now on starts the next turn
        if self.reads.on_threads():
            async with asyncio.timeout(turn.longest):
                return list(await self._one_transaction(turn))
        statements = _statements(turn.asked)
        outcomes: list[Taken | BaseException] = [TimeoutError()] * len(turn.asked)
        async with asyncio.timeout(turn.longest):
            done: list[list[Taken] | BaseException]
            if len(statements) == 1:
                # The usual turn at a few hundred a second: one statement, awaited here rather
                # than wrapped in a task of its own by gather.
                ((rule, indexes),) = statements
                try:
                    done = [await self._statement(rule, turn.asked, indexes)]
                except Exception as exc:  # noqa: BLE001 - each take raises its own (take)
                    done = [exc]
            else:
                done = await asyncio.gather(
                    *(self._statement(rule, turn.asked, indexes) for rule, indexes in statements),
                    return_exceptions=True,
                )
        for (_, indexes), result in zip(statements, done, strict=True):
            for at, index in enumerate(indexes):
                outcomes[index] = result if isinstance(result, BaseException) else result[at]
        return outcomes

    async def _one_transaction(self, turn: _Turn) -> list[Taken]:
        """SQLite: every take of the turn, one after the other in one transaction (a key asked
        twice is simply taken twice)."""
        now = time.time()
        params = [{**_bucket(rule, now), "key": key} for rule, key, _ in turn.asked]
        vins = [vin for _, _, vin in turn.asked]
        return await self.reads.takes(self.sql, params, vins, turn.longest)

    async def _statement(
        self, rule: Rule, asked: list[tuple[Rule, str, str]], indexes: list[int]
    ) -> list[Taken]:
        params = {
            **_bucket(rule, time.time()),
            "keys": [asked[i][1] for i in indexes],
            "vins": [asked[i][2] for i in indexes],
        }
        rows = await self.reads.rows_on_primary(self.sql, params)
        own: list[Rows] = [[] for _ in indexes]
        found: list[Rows] = [[] for _ in indexes]
        for row in rows:
            at = row[0] - 1  # WITH ORDINALITY counts from 1
            if row[1] is not None and not own[at]:
                own[at] = [(row[1], row[2])]
            if row[3] is not None:
                found[at].append(row[3:])
        return [(own[at], self.reads.records(found[at])) for at in range(len(indexes))]


def _bucket(rule: Rule, now: float) -> dict[str, object]:
    """The take statement's parameters but its key (or keys)."""
    rate, capacity, cost = rule
    return {"cost": cost, "now": now, "rate": rate, "capacity": capacity}


def _statements(asked: list[tuple[Rule, str, str]]) -> list[tuple[Rule, list[int]]]:
    """The takes (by index) of each statement: one rule each, and a key at most once in each
    (its second take in a turn goes in the next statement of that rule)."""
    rounds: dict[Rule, list[tuple[set[str], list[int]]]] = defaultdict(list)
    for index, (rule, key, _) in enumerate(asked):
        for keys, indexes in rounds[rule]:
            if key not in keys:
                keys.add(key)
                indexes.append(index)
                break
        else:
            rounds[rule].append(({key}, [index]))
    return [(rule, indexes) for rule, each in rounds.items() for _, indexes in each]
