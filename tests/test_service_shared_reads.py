"""Requests that reach the database in the same turn of a worker's event loop share its reads
(service.coalesce, service.coverage.decide_each): each is still decided exactly as alone."""

from __future__ import annotations

import asyncio
import csv
import io
import os
import re
import signal
import socket
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from lxml import etree

from olv import db, normalize
from olv.iicmva import V0809, Code
from service.coalesce import MAX_BATCH, Coalescer
from service.coverage import BatchFound, BatchReads, Decision, Window, decide, decide_each
from service.db_deadline import DeadlineGate
from service.request import CoverageQuery
from service.store import SqlPolicyStore
from tests.helpers import data, loopback
from tests.helpers.soap import (
    codes_of,
    days_ago,
    envelope,
    request_xml,
    soap_server,
    today,
)

# Policy keys whose characters mean something in PostgreSQL's array text or in SQL (the
# many-key read sends keys as text[]): each must come back as its own key and no other.
ODD_KEYS = ["A,B", 'Q"1', "{X}", "B\\S", "NULL", "O'K", "SP ACE"]
ODD_VIN = "9BWZZZ377VT004251"


def _policies_csv() -> str:
    """The shared test policies plus one policy for each odd key."""
    out = io.StringIO()
    out.write(data.policy_csv())
    writer = csv.writer(out, lineterminator="\n")
    start = (today().date().replace(day=1)).isoformat()
    for n, key in enumerate(ODD_KEYS):
        writer.writerow([data.NAIC, key, "VS", f"{ODD_VIN[:-1]}{n}", start, "2099-12-31", "", ""])
    return out.getvalue()


@pytest.fixture
def store(db_url: str, tmp_path: Path) -> Iterator[SqlPolicyStore]:
    with data.policy_store(db_url, tmp_path, _policies_csv()) as policies:
        yield policies


def _query(key: str | None, vin: str | None, day: str | None = None) -> CoverageQuery:
    return CoverageQuery(
        V0809, naic=data.NAIC, policy_key=key, vin=vin, verification_date=day or days_ago(0)
    )


def _mixed_queries() -> list[tuple[CoverageQuery, bool]]:
    """Every branch of the table's lookups, some keys twice, one unauthorized."""
    cases: list[tuple[str, str] | tuple[str, str, str]] = [
        ("P-OK", data.VIN_OK),
        ("p ok", data.VIN_SHORT),
        ("P-CANCEL", data.VIN_CANCELLED),
        ("P-EXPIRED", data.VIN_EXPIRED),
        ("P-REVIEW", data.VIN_REVIEW),
        ("FLEET-1", data.VIN_NOWHERE),
        ("FLEET-OLD", data.VIN_OK),
        ("P-OK", data.VIN_CANCELLED),  # VIN not on the policy
        ("UNKNOWN", data.VIN_OK),
        ("unknown", data.VIN_EXPIRED),
        ("Unknown", data.VIN_NOWHERE),
        ("NOPE-1", data.VIN_OK),
        ("NOPE-1", data.VIN_EXPIRED),
        ("NOPE-2", data.VIN_NOWHERE),
        ("P-OK", data.VIN_OK, days_ago(400)),  # outside the window
        ("P-OK", data.VIN_OK),  # the same key again in one batch
    ]
    queries = [_query(*case) for case in cases]
    queries += [_query(key, f"{ODD_VIN[:-1]}{n}") for n, key in enumerate(ODD_KEYS)]
    pairs = [(q, True) for q in queries]
    pairs.append((_query("P-OK", data.VIN_OK), False))
    return pairs


class _CountingStore(SqlPolicyStore):
    """The real store, its reads counted (the statements still go to the database)."""

    reads = 0

    def _query(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        self.reads += 1
        return super()._query(sql, params)


def test_a_batch_decides_each_request_as_it_would_be_decided_alone(
    store: SqlPolicyStore,
) -> None:
    window = Window(today().date(), 183, 0)
    requests = _mixed_queries()
    alone = [decide(q, store=store, authorized=a, window=window) for q, a in requests]
    together = decide_each(requests, store=store, window=window)
    assert together == alone
    # Not all the same answer: the batch covers the table's branches.
    assert alone[0] == Decision(())
    assert alone[5] == Decision(())  # fleet, any VIN
    assert alone[7] == Decision((Code.PKEY4,))
    assert alone[12] == Decision((Code.VIN2, Code.VIN3))
    assert alone[13] == Decision((Code.PKEY2, Code.VIN1))
    assert alone[-1] == Decision((Code.UREQ,))
    odd = together[16 : 16 + len(ODD_KEYS)]
    assert odd == [Decision(())] * len(ODD_KEYS), "each odd key finds its own policy"


def test_a_batch_is_decided_with_one_read_on_postgresql(store: SqlPolicyStore, db_url: str) -> None:
    counting = _CountingStore(store.engine)
    try:
        window = Window(today().date(), 183, 0)
        counting.serves(data.NAIC), counting.healthy()  # cached for the batch, as in service
        counting.reads = 0
        decisions = decide_each(_mixed_queries(), store=counting, window=window)
        assert decisions[11] == Decision((Code.VIN3,))
        if db.is_sqlite(db_url):
            # In-process reads: one per key, nothing to share.
            assert counting.reads > 10
        else:
            # Policies, the VINs of unknown keys and those of keys not found: one statement.
            assert counting.reads == 1
    finally:
        counting.close()


def test_the_batch_read_finds_keys_by_exact_text(store: SqlPolicyStore) -> None:
    stored = [(data.NAIC, normalize.policy_key(key)) for key in ODD_KEYS]  # as imported
    raw = [(data.NAIC, key) for key in ODD_KEYS if normalize.policy_key(key) != key]
    keys = [*stored, *raw, (data.NAIC, "A"), (data.NAIC, "NOPE")]
    vins = [
        (data.NAIC, data.VIN_OK, ""),  # no key: read
        (data.NAIC, data.VIN_EXPIRED, "NOPE"),  # a key that finds no policy: read
        (data.NAIC, data.VIN_CANCELLED, normalize.policy_key(ODD_KEYS[0])),  # found: not read
        (data.OTHER_NAIC, data.VIN_NOWHERE, ""),
        (data.NAIC, data.VIN_NOWHERE, ""),  # no periods
    ]
    found = store.read_batch(BatchReads(keys, vins))
    assert sorted(found.policies) == sorted(stored)  # "NULL" too: a key, not a missing value
    assert len({policy.id for policy in found.policies.values()}) == len(ODD_KEYS)
    assert set(found.periods) == {
        (data.NAIC, data.VIN_OK),
        (data.NAIC, data.VIN_EXPIRED),
        (data.OTHER_NAIC, data.VIN_NOWHERE),
    }
    assert [p.vin for p in found.periods[(data.NAIC, data.VIN_OK)]] == [data.VIN_OK]
    one_by_one = BatchReads(keys, vins).one_by_one(store)
    assert one_by_one == found


def test_a_key_asked_with_several_vins_reads_each_vin_only_where_the_key_finds_nothing(
    store: SqlPolicyStore,
) -> None:
    """One lookup per key carries one VIN to read; a key asked again with another VIN (two
    requests of one batch) or a VIN asked without a key gets its own, and each is read
    exactly where the one-by-one reads would read it."""
    keys = [(data.NAIC, "NOPE"), (data.NAIC, "POK")]
    vins = [
        (data.NAIC, data.VIN_OK, "NOPE"),
        (data.NAIC, data.VIN_EXPIRED, "NOPE"),  # the same missing key, another VIN: read too
        (data.NAIC, data.VIN_CANCELLED, "POK"),
        (data.NAIC, data.VIN_REVIEW, "POK"),  # the same key found: neither VIN read
        (data.NAIC, data.VIN_CANCELLED, ""),  # no key: read
        (data.OTHER_NAIC, data.VIN_OK, ""),
    ]
    found = store.read_batch(BatchReads(keys, vins))
    assert list(found.policies) == [(data.NAIC, "POK")]
    assert set(found.periods) == {
        (data.NAIC, data.VIN_OK),
        (data.NAIC, data.VIN_EXPIRED),
        (data.NAIC, data.VIN_CANCELLED),
    }
    assert found == BatchReads(keys, vins).one_by_one(store)


def test_the_batch_read_behind_a_transaction_pooler_answers_the_same(
    store: SqlPolicyStore, db_url: str
) -> None:
    """Behind a transaction pooler the store sends each read as one simple-protocol message
    with its own statement timeout (no prepared statements): the batch's arrays are bound
    client-side there, and must find what the prepared read finds."""
    if db.is_sqlite(db_url):
        pytest.skip("a transaction pooler stands in front of PostgreSQL only")
    engine = db.make_engine(f"{db_url}?{db.POOL_MODE}=transaction", wait_seconds=4.5)
    pooled = SqlPolicyStore(engine)
    try:
        keys = [(data.NAIC, "POK"), (data.NAIC, "NOPE"), (data.NAIC, normalize.policy_key('Q"1'))]
        vins = [
            (data.NAIC, data.VIN_EXPIRED, "NOPE"),
            (data.NAIC, data.VIN_OK, ""),
            (data.NAIC, data.VIN_NOWHERE, ""),
        ]
        through_pooler = pooled.read_batch(BatchReads(keys, vins))
        assert through_pooler == store.read_batch(BatchReads(keys, vins))
        assert sorted(through_pooler.policies) == [(data.NAIC, "POK"), (data.NAIC, "Q1")]
        assert set(through_pooler.periods) == {
            (data.NAIC, data.VIN_EXPIRED),
            (data.NAIC, data.VIN_OK),
        }
        assert pooled.read_batch(BatchReads([], [])) == BatchFound({}, {})
        assert not pooled._direct, "the reads went the prepared way, not the pooler's"
    finally:
        pooled.close()
        engine.dispose()


# --- the coalescer ------------------------------------------------------------------------


def _run_coalesced(
    store: SqlPolicyStore,
    run_many: Any,
    items: Sequence[int],
    failed: Any = lambda exc: -1,
) -> list[int]:
    async def main() -> list[int]:
        gate = DeadlineGate(store)
        try:
            coalescer: Coalescer[int, int] = Coalescer(gate, run_many, failed)
            due = time.monotonic() + 5.0
            return list(await asyncio.gather(*(coalescer(i, due) for i in items)))
        finally:
            gate.close()

    return asyncio.run(main())


def test_the_requests_of_one_turn_go_to_the_database_in_one_call(store: SqlPolicyStore) -> None:
    calls: list[list[int]] = []

    def run_many(batch: Sequence[int]) -> list[int]:
        calls.append(list(batch))
        return [i * 10 for i in batch]

    items = list(range(MAX_BATCH + 5))
    assert _run_coalesced(store, run_many, items) == [i * 10 for i in items]
    # One turn: one call, split only at the batch limit.
    assert calls == [items[:MAX_BATCH], items[MAX_BATCH:]]


def test_a_failed_call_answers_every_request_of_its_batch_once(store: SqlPolicyStore) -> None:
    failures: list[Exception] = []

    def run_many(batch: Sequence[int]) -> list[int]:
        raise RuntimeError("the store broke")

    def failed(exc: Exception) -> int:
        failures.append(exc)
        return -1

    assert _run_coalesced(store, run_many, range(20), failed) == [-1] * 20
    assert [str(e) for e in failures] == ["the store broke"]


def test_a_wrong_number_of_answers_fails_the_batch_rather_than_leave_a_request_waiting(
    store: SqlPolicyStore,
) -> None:
    failures: list[Exception] = []

    def run_many(batch: Sequence[int]) -> list[int]:
        return [1] * (len(batch) - 1)

    def failed(exc: Exception) -> int:
        failures.append(exc)
        return -1

    assert _run_coalesced(store, run_many, range(5), failed) == [-1] * 5
    assert [str(e) for e in failures] == ["4 answers for 5 requests"]


# --- through a server ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(module_db_url: str, tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("shared")
    path = folder / "policies.csv"
    path.write_text(_policies_csv())
    data.load_policy_file(module_db_url, path)
    env = {"OLV_DATABASE_URL": module_db_url}
    with soap_server(env, folder) as running:
        yield running


CONCURRENT: list[tuple[dict[str, object], list[str]]] = [
    ({}, []),
    ({"key": "P-EXPIRED", "vin": data.VIN_EXPIRED}, ["PKEY3"]),
    ({"vin": data.VIN_CANCELLED}, ["PKEY4"]),
    ({"key": "UNKNOWN", "vin": data.VIN_NOWHERE}, ["VIN1"]),
    ({"key": "NOPE-1", "vin": data.VIN_EXPIRED}, ["VIN2", "VIN3"]),
    ({"key": "NOPE-1", "vin": data.VIN_NOWHERE}, ["PKEY2", "VIN1"]),
    ({"key": "FLEET-1", "vin": data.VIN_NOWHERE}, []),
    ({"key": 'Q"1', "vin": f"{ODD_VIN[:-1]}1"}, []),
    ({"key": "B\\S", "vin": f"{ODD_VIN[:-1]}1"}, ["PKEY4"]),
]


def _batched_requests(url: str) -> tuple[float, float]:
    text = httpx.get(url, timeout=5).text
    count = re.search(r"^olv_soap_db_batch_requests_count (\S+)$", text, re.M)
    total = re.search(r"^olv_soap_db_batch_requests_sum (\S+)$", text, re.M)
    return (float(count.group(1)) if count else 0.0), (float(total.group(1)) if total else 0.0)


def test_concurrent_requests_are_answered_each_as_alone(server) -> None:
    """Requests that reach one worker together share reads (the batch metric shows calls
    that decided several), and each gets its own answer. The worker is stopped while they
    are written on its open connections, so that it finds them all ready when it goes on,
    however fast it or this machine is."""
    rounds = 12
    cases = CONCURRENT * rounds
    before = _batched_requests(server.url("/metrics"))
    socks = [loopback.connect(server.url("")) for _ in cases]
    try:
        messages = [_post_bytes(f"/iicmva/{V0809}", request_xml(V0809, **o)) for o, _ in cases]  # type: ignore[arg-type]
        _written_while_stopped(server.process.pid, socks, messages)
        answers = [_read_answer(sock) for sock in socks]
    finally:
        for sock in socks:
            sock.close()
    for (overrides, expected), (status, body) in zip(cases, answers, strict=True):
        assert status == 200, body
        assert codes_of(_answer_element(body))[1] == expected, overrides
    after = _batched_requests(server.url("/metrics"))
    calls, requests = after[0] - before[0], after[1] - before[1]
    assert requests == len(cases)
    assert calls < requests, "no call decided more than one request"


def _written_while_stopped(
    server_pid: int, socks: Sequence[socket.socket], messages: Sequence[bytes]
) -> None:
    """Each message written on its connection while the server's one worker is stopped, so
    that the worker finds them all ready when it goes on, however fast it or this machine is."""
    time.sleep(0.5)  # every connection accepted by the worker before it stops
    (worker,) = _children(server_pid)
    os.kill(worker, signal.SIGSTOP)
    try:
        for sock, message in zip(socks, messages, strict=True):
            sock.sendall(message)
    finally:
        os.kill(worker, signal.SIGCONT)


def _children(pid: int) -> list[int]:
    """The processes ``pid`` started (Linux): the supervisor's one worker."""
    tasks = Path(f"/proc/{pid}/task")
    return [int(c) for t in tasks.iterdir() for c in (t / "children").read_text().split()]


def _post_bytes(path: str, body_xml: str) -> bytes:
    body = envelope(body_xml)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: text/xml; charset=utf-8\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def _read_answer(sock: socket.socket) -> tuple[int, bytes]:
    sock.settimeout(10)
    reader = sock.makefile("rb")
    status = int(reader.readline().split()[1])
    length = 0
    while (line := reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
    return status, reader.read(length)


def _answer_element(body: bytes) -> etree._Element:
    root = etree.fromstring(body)
    return root[-1][0]  # Envelope / Body / the answer
