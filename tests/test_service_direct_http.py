"""POSTs answered from the protocol's callbacks (service.direct_http), beside uvicorn's own
path: the same bytes on the wire, no task per POST, and the cases that keep uvicorn's path.

Each module runs two real uvicorn servers in threads over one database: one with the service's
protocol, one with the same protocol minus the direct path (the ASGI path every server took
before). Requests go over real sockets.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from olv import request_id
from olv.config import Settings
from olv.serving import COMMON_OPTIONS, http_protocol
from service.asgi import AsgiSoap
from service.direct_http import direct_soap
from tests.helpers import data
from tests.helpers.soap import envelope, free_port, request_xml

KEY = "direct-http-key"
PATH = "/iicmva/00200809"


class TaskCount:
    """Counts the requests that started an ASGI task (uvicorn's path)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        original = HttpToolsProtocol._start_asgi_task

        def counted(protocol: HttpToolsProtocol, cycle: Any, app: Any) -> None:
            self.count += 1
            original(protocol, cycle, app)

        monkeypatch.setattr(HttpToolsProtocol, "_start_asgi_task", counted)


class ThreadServer:
    def __init__(self, settings: Settings, direct: bool) -> None:
        protocol = http_protocol(5.0, 5.0)
        self.app = AsgiSoap(settings)
        self.port = free_port()
        options = {**COMMON_OPTIONS, "factory": False, "date_header": False}
        options["http"] = direct_soap(protocol) if direct else protocol
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, **options)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(20)


@pytest.fixture(scope="module")
def servers(
    module_db_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ThreadServer, ThreadServer]]:
    data.load_policies(module_db_url, tmp_path_factory.mktemp("direct-http"))
    settings = Settings(
        database_url=module_db_url,
        requester_api_keys=[KEY],
        requester_networks=[],
        max_body_bytes=4096,
    )
    direct, plain = ThreadServer(settings, True), ThreadServer(settings, False)
    yield direct, plain
    direct.stop()
    plain.stop()


def raw_request(vin: str = data.VIN_OK, extra: str = "", body: bytes | None = None) -> bytes:
    payload = envelope(request_xml("00200809", naic=data.NAIC, vin=vin)) if body is None else body
    return (
        f"POST {PATH} HTTP/1.1\r\nHost: soap.test\r\nContent-Type: text/xml; charset=utf-8\r\n"
        f"X-API-Key: {KEY}\r\n{extra}Content-Length: {len(payload)}\r\n\r\n"
    ).encode() + payload


def read_answers(sock: socket.socket, count: int, timeout: float = 10.0) -> list[bytes]:
    """``count`` whole answers (head and Content-Length body) from ``sock``."""
    sock.settimeout(timeout)
    received, answers = b"", []
    while len(answers) < count:
        if b"\r\n\r\n" in received:
            head, _, rest = received.partition(b"\r\n\r\n")
            if head.startswith(b"HTTP/1.1 100 "):
                received = rest
                continue
            length = next(
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            if len(rest) >= length:
                answers.append(head + b"\r\n\r\n" + rest[:length])
                received = rest[length:]
                continue
        chunk = sock.recv(65536)
        assert chunk, f"connection closed after {len(answers)} answers"
        received += chunk
    return answers


def exchange(server: ThreadServer, *requests: bytes) -> list[bytes]:
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(b"".join(requests))
        return read_answers(sock, len(requests))


def test_a_post_is_answered_without_a_task_and_byte_for_byte_as_before(
    servers: tuple[ThreadServer, ThreadServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    direct, plain = servers
    tasks = TaskCount(monkeypatch)
    for vin in (data.VIN_OK, data.VIN_CANCELLED, data.VIN_NOWHERE):
        ours = exchange(direct, raw_request(vin))[0]
        assert tasks.count == 0
        theirs = exchange(plain, raw_request(vin))[0]
        assert tasks.count == 1
        tasks.count = 0
        assert b"ResponseCode>" in ours
        assert ours == theirs


def test_answers_that_need_no_database_and_faults_are_the_same_bytes(
    servers: tuple[ThreadServer, ThreadServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    direct, plain = servers
    tasks = TaskCount(monkeypatch)
    cases = [
        raw_request(body=b"<not-soap/>"),  # a client fault, through Spyne's path
        raw_request(body=b"<a><b>"),  # not XML
        raw_request(body=envelope("")),  # an empty Body
        raw_request(body=b"x" * 5000),  # over the 4,096-byte cap: 413
        raw_request(extra="X-API-Key: wrong\r\n"),  # a second key: refused
    ]
    for request in cases:
        ours, theirs = exchange(direct, request)[0], exchange(plain, request)[0]
        assert ours == theirs
        assert not ours.endswith(b"\r\n\r\nInternal Server Error")  # SOAP faults are 500s too
    assert tasks.count == len(cases)  # the plain server's only


def test_pipelined_requests_are_answered_in_order(
    servers: tuple[ThreadServer, ThreadServer],
) -> None:
    direct, _ = servers
    vins = [data.VIN_OK, data.VIN_EXPIRED, data.VIN_NOWHERE, data.VIN_OK, data.VIN_CANCELLED]
    answers = exchange(direct, *(raw_request(vin) for vin in vins))
    for vin, answer in zip(vins, answers, strict=True):
        assert answer.startswith(b"HTTP/1.1 200 ")
        assert f":VIN>{vin}</".encode() in answer


def test_a_body_over_the_cap_sent_in_pieces_is_refused_before_it_ends(
    servers: tuple[ThreadServer, ThreadServer],
) -> None:
    direct, _ = servers
    head = (
        f"POST {PATH} HTTP/1.1\r\nHost: soap.test\r\nContent-Type: text/xml\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", direct.port)) as sock:
        sock.sendall(head)
        for _ in range(3):  # 6,000 bytes, the end of the body never sent
            sock.sendall(b"7d0\r\n" + b"y" * 2000 + b"\r\n")
        answer = read_answers(sock, 1)[0]
    assert answer.startswith(b"HTTP/1.1 413 ")


def test_expect_100_continue_and_get_keep_uvicorns_path(
    servers: tuple[ThreadServer, ThreadServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    direct, _ = servers
    tasks = TaskCount(monkeypatch)
    with socket.create_connection(("127.0.0.1", direct.port)) as sock:
        request = raw_request(extra="Expect: 100-continue\r\n")
        head, _, body = request.partition(b"\r\n\r\n")
        sock.sendall(head + b"\r\n\r\n")
        sock.settimeout(10)
        assert sock.recv(100).startswith(b"HTTP/1.1 100 Continue")
        sock.sendall(body)
        answer = read_answers(sock, 1)[0]
        sock.sendall(f"GET {PATH}?wsdl HTTP/1.1\r\nHost: soap.test\r\n\r\n".encode())
        wsdl = read_answers(sock, 1)[0]
    assert answer.startswith(b"HTTP/1.1 200 ") and b"ResponseCode>" in answer
    assert wsdl.startswith(b"HTTP/1.1 200 ") and b"definitions" in wsdl
    assert tasks.count == 2


def test_http_10_and_connection_close_end_the_connection_after_the_answer(
    servers: tuple[ThreadServer, ThreadServer],
) -> None:
    direct, plain = servers
    for request in (
        raw_request().replace(b"HTTP/1.1\r\n", b"HTTP/1.0\r\n", 1),
        raw_request(extra="Connection: close\r\n"),
    ):
        answers = []
        for server in (direct, plain):
            with socket.create_connection(("127.0.0.1", server.port)) as sock:
                sock.settimeout(10)
                sock.sendall(request)
                received = b""
                while chunk := sock.recv(65536):  # ends only when the server closes
                    received += chunk
                answers.append(received)
        assert answers[0] == answers[1]
        assert b"connection: close\r\n" in answers[0]


class IdsLogged(logging.Handler):
    """The request id in force when each answer's log line was written."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.ids: list[str | None] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage() == "SOAP request answered":
            self.ids.append(request_id.current.get())


def test_each_request_keeps_its_own_request_id(
    servers: tuple[ThreadServer, ThreadServer],
) -> None:
    direct, _ = servers
    logged = IdsLogged()
    logger = logging.getLogger("service.metrics")
    logger.addHandler(logged)
    logger.setLevel(logging.INFO)
    try:
        with socket.create_connection(("127.0.0.1", direct.port)) as sock:
            sock.sendall(raw_request(extra="X-Request-ID: first-id\r\n"))
            read_answers(sock, 1)
            sock.sendall(raw_request())  # untraced: no log line, and not the first one's id
            read_answers(sock, 1)
            sock.sendall(raw_request(extra="X-Request-ID: third-id\r\n"))
            read_answers(sock, 1)
    finally:
        logger.removeHandler(logged)
        logger.setLevel(logging.NOTSET)
    assert logged.ids == ["first-id", "third-id"]
    assert request_id.current.get() is None  # nothing leaked into this thread either


def test_a_client_gone_before_its_answer_leaves_the_server_serving(
    servers: tuple[ThreadServer, ThreadServer],
) -> None:
    direct, _ = servers
    for _ in range(20):
        with socket.create_connection(("127.0.0.1", direct.port)) as sock:
            sock.sendall(raw_request())
            sock.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
            )
    answer = exchange(direct, raw_request())[0]
    assert answer.startswith(b"HTTP/1.1 200 ") and b"Confirmed" in answer


def test_graceful_stop_answers_the_request_in_flight(module_db_url: str) -> None:
    settings = Settings(database_url=module_db_url, requester_api_keys=[KEY], requester_networks=[])
    server = ThreadServer(settings, True)
    request = raw_request()
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(request[:-10])  # in flight: its body not whole yet
        time.sleep(0.3)
        server.server.should_exit = True
        time.sleep(0.3)
        sock.sendall(request[-10:])
        answer = read_answers(sock, 1)[0]
        assert sock.recv(10) == b""  # then the server closes the connection
    server.thread.join(20)
    assert not server.thread.is_alive()
    assert answer.startswith(b"HTTP/1.1 200 ") and b"Confirmed" in answer
    assert b"connection: close\r\n" in answer
